#!/usr/bin/env bash
# The full test suite (README "Quick start"): installs the system packages
# that some tests drive when they are missing, then runs `cargo test` with
# any arguments given (CI passes --locked).
#
#   chromium   tests/chromium_rum.rs: the RUM snippet in a real browser
#   chromium-driver  tests/chromium_status.rs: the status page, driven
#              through chromedriver (WebDriver)
#   iproute2   tests/netns_latency.rs: network namespaces with delayed links;
#              tests/probe_netns.rs: ICMP probes over a link taken down
#   dig, curl, jq (bind9-dnsutils, curl, jq)
#              tests/readme.rs: every console example in README.md
#   delv (bind9-dnsutils), dnssec-keygen, dnssec-dsfromkey (bind9-utils)
#              tests/integration/dnssec.rs: signed answers validated by
#              BIND's validator; BIND-made keys; DS records cross-checked
#   systemd    tests/integration/packaging.rs: systemd-analyze verify on the unit
#   unbound, delv, dnsviz, nsd, dnssec-keygen/-signzone (unbound, bind9-dnsutils,
#              dnsviz, nsd, bind9-utils)
#              tests/dnssec_validators.rs: third-party DNSSEC validators against a
#              signed zone; the packages' own services are kept from starting
#              (a temporary /usr/sbin/policy-rc.d), so nothing binds port 53
#   etcd-server  tests/cluster.rs: a three-member etcd cluster on loopback, and
#              one-member ones with TLS, client certificates and RBAC (set up
#              through the etcd-client crate, so no etcdctl)
#   cargo-deb  tests/integration/packaging.rs: builds the .deb (cargo install,
#              once: about 1.5 min of CPU, 4.5 min wall on a busy 2-core box)
#
# Those tests fail, rather than pass, when their tool is absent; this
# script is what keeps them from being absent.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
{ command -v ip && command -v tc; } >/dev/null 2>&1 || need+=(iproute2)
{ command -v dig && command -v delv; } >/dev/null 2>&1 || need+=(bind9-dnsutils)
{ command -v dnssec-keygen && command -v dnssec-dsfromkey && command -v dnssec-signzone; } >/dev/null 2>&1 || need+=(bind9-utils)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v jq >/dev/null 2>&1 || need+=(jq)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
command -v dpkg-deb >/dev/null 2>&1 || need+=(dpkg)
# (unbound and nsd live in /usr/sbin, which a non-root PATH may lack)
{ command -v unbound || [ -x /usr/sbin/unbound ]; } >/dev/null 2>&1 || need+=(unbound)
command -v dnsviz >/dev/null 2>&1 || need+=(dnsviz)
{ command -v nsd || [ -x /usr/sbin/nsd ]; } >/dev/null 2>&1 || need+=(nsd)
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "scripts/test.sh: installing ${need[*]}" >&2
    # unbound and nsd would start their system service on port 53 at install
    # time; the tests run their own instances on free loopback ports instead.
    made_policy=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && made_policy=1
    fi
    rc=0
    apt-get update -qq &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null || rc=$?
    [ -z "$made_policy" ] || rm -f /usr/sbin/policy-rc.d
    [ "$rc" = 0 ] || exit "$rc"
  else
    echo "scripts/test.sh: missing ${need[*]}; install them (Debian: sudo apt-get install ${need[*]}) and run again" >&2
    exit 1
  fi
fi

if ! cargo deb --version >/dev/null 2>&1; then
  echo "scripts/test.sh: installing cargo-deb 3.8.0 (cargo install --locked)" >&2
  cargo install cargo-deb --version 3.8.0 --locked
fi

exec cargo test "$@"
