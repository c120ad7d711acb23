#!/usr/bin/env bash
# Bounded fuzzing for CI and quick local checks:
#
#     bash fuzz/run.sh [SECONDS_PER_TARGET]      (default 20)
#
# Installs cargo-fuzz if it is missing, builds every target once, then runs
# each one for SECONDS_PER_TARGET over a copy of its seed corpus in a
# temporary directory, so nothing is written into fuzz/corpus. Exits non-zero
# if any target crashes, times out or fails an assertion, after printing
# the crashing input in hex (the work directory with the artifacts is kept).
#
# Environment:
#   FUZZ_TOOLCHAIN  toolchain for cargo-fuzz (default: nightly)
#   FUZZ_SANITIZER  address, leak, memory, thread or none (default: none;
#                   the query path has no unsafe code, and without ASan the
#                   build is quicker and each run does more executions)
#   FUZZ_TARGETS    space-separated subset of the targets (default: all)
#   FUZZ_KEEP=1     keep the work directory even when every target passes
set -euo pipefail

secs="${1:-20}"
if ! [[ "$secs" =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: $0 [SECONDS_PER_TARGET]" >&2
    exit 2
fi

cd "$(dirname "$0")/.."
toolchain="${FUZZ_TOOLCHAIN:-nightly}"
sanitizer="${FUZZ_SANITIZER:-none}"
read -r -a targets <<<"${FUZZ_TARGETS:-packet fast_vs_general zone_config state_file admin_body opt_ecs tcp_stream latency_map}"

say() { printf 'fuzz: %s\n' "$*"; }
hex() { od -An -tx1 -v "$1" | tr -d ' \n'; }

if ! cargo "+$toolchain" --version >/dev/null 2>&1; then
    say "installing the $toolchain toolchain"
    rustup toolchain install "$toolchain" --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    say "installing cargo-fuzz"
    start=$SECONDS
    cargo install cargo-fuzz --locked
    say "cargo-fuzz installed in $((SECONDS - start))s"
fi

# cargo-fuzz has no --locked: check the committed lock file first, so a
# stale one fails here instead of being rewritten.
if ! cargo "+$toolchain" metadata --locked --format-version 1 \
    --manifest-path fuzz/Cargo.toml >/dev/null; then
    say "fuzz/Cargo.lock is out of date: run 'cargo update --manifest-path fuzz/Cargo.toml --workspace' and commit it"
    exit 1
fi

triple="$(rustc "+$toolchain" -vV | sed -n 's/^host: //p')"
start=$SECONDS
cargo "+$toolchain" fuzz build --sanitizer "$sanitizer" --target "$triple"
say "built in $((SECONDS - start))s"

work="$(mktemp -d "${TMPDIR:-/tmp}/meridian-fuzz.XXXXXX")"
failed=()
for t in "${targets[@]}"; do
    bin="fuzz/target/$triple/release/$t"
    if [[ ! -x "$bin" ]]; then
        say "no such target: $t"
        failed+=("$t")
        continue
    fi
    mkdir -p "$work/$t/corpus" "$work/$t/artifacts"
    cp fuzz/corpus/"$t"/* "$work/$t/corpus/"
    args=(
        -max_total_time="$secs"
        -timeout=10
        -rss_limit_mb=2048
        -artifact_prefix="$work/$t/artifacts/"
        -print_final_stats=1
    )
    if [[ -f "fuzz/dict/$t.dict" ]]; then
        args+=(-dict="fuzz/dict/$t.dict")
    fi
    say "running $t for ${secs}s"
    if "$bin" "${args[@]}" "$work/$t/corpus" >"$work/$t/log" 2>&1; then
        runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/$t/log")"
        corpus="$(find "$work/$t/corpus" -type f | wc -l)"
        say "$t: ok, ${runs:-?} runs, corpus $corpus files"
    else
        failed+=("$t")
        say "$t: FAILED; the end of its log:"
        tail -n 60 "$work/$t/log"
        for f in "$work/$t/artifacts"/*; do
            [[ -f "$f" ]] || continue
            say "$t: input $(basename "$f") ($(wc -c <"$f") bytes), hex:"
            hex "$f"
            echo
            say "reproduce: cargo +$toolchain fuzz run --sanitizer $sanitizer $t $f"
        done
    fi
done

if ((${#failed[@]})); then
    say "failed: ${failed[*]} (logs and inputs kept in $work)"
    exit 1
fi
if [[ "${FUZZ_KEEP:-}" == 1 ]]; then
    say "work directory kept: $work"
else
    rm -rf "$work"
fi
say "all targets passed (${secs}s each)"
