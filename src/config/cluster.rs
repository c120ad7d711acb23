//! `[cluster]`: several Meridian instances sharing operator overrides and
//! health votes through etcd (README, "Cluster"). Off unless the table is
//! present; without it no etcd code runs.
//!
//! The password is never written in the config: `password_file` names a
//! file read at load, so `meridian.toml` can stay world-readable.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;
use super::validate::check_range;

/// `[cluster] prefix`: every key Meridian writes starts with it.
pub const DEFAULT_CLUSTER_PREFIX: &str = "/meridian/";
/// `[cluster] lease_ttl`: how long a dead instance's votes keep counting.
pub const DEFAULT_CLUSTER_LEASE_TTL: Duration = Duration::from_secs(10);
/// Shortest `[cluster] lease_ttl`.
pub const MIN_CLUSTER_LEASE_TTL: Duration = Duration::from_secs(2);
/// Longest `[cluster] lease_ttl`.
pub const MAX_CLUSTER_LEASE_TTL: Duration = Duration::from_secs(300);
/// `[cluster] dial_timeout`: also the bound on every etcd call.
pub const DEFAULT_CLUSTER_DIAL_TIMEOUT: Duration = Duration::from_secs(2);
/// Shortest `[cluster] dial_timeout`.
pub const MIN_CLUSTER_DIAL_TIMEOUT: Duration = Duration::from_millis(100);
/// Longest `[cluster] dial_timeout`.
pub const MAX_CLUSTER_DIAL_TIMEOUT: Duration = Duration::from_secs(60);
/// Most etcd endpoints.
const MAX_ENDPOINTS: usize = 64;
/// Longest instance name, bytes.
const MAX_NAME: usize = 253;
/// Largest absolute `quorum` count.
pub const MAX_QUORUM_COUNT: u32 = 1000;

/// `[cluster]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCluster {
    endpoints: Option<Vec<String>>,
    prefix: Option<String>,
    name: Option<String>,
    quorum: Option<toml::Value>,
    lease_ttl: Option<String>,
    dial_timeout: Option<String>,
    ca_file: Option<String>,
    cert_file: Option<String>,
    key_file: Option<String>,
    username: Option<String>,
    password_file: Option<String>,
    /// Refused with a hint: the password goes in `password_file`.
    password: Option<toml::Value>,
}

/// How many live observers must see a datacenter down for it to be down
/// everywhere (`[cluster] quorum`); see [`crate::cluster::quorum`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quorum {
    /// One observer is enough.
    Any,
    /// More than half of the live observers (the default).
    Majority,
    /// Every live observer.
    All,
    /// At least this many observers.
    Count(u32),
}

impl Quorum {
    /// As the config and `/status` write it.
    pub fn name(self) -> String {
        match self {
            Self::Any => "any".into(),
            Self::Majority => "majority".into(),
            Self::All => "all".into(),
            Self::Count(n) => n.to_string(),
        }
    }
}

/// TLS towards etcd (`ca_file`, `cert_file`, `key_file`), as PEM read at
/// load.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterTls {
    /// The CA that signed the etcd servers' certificates.
    pub ca_pem: Vec<u8>,
    /// A client certificate and its key, when etcd asks for one.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for ClusterTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterTls")
            .field("client_certificate", &self.identity.is_some())
            .finish_non_exhaustive()
    }
}

/// etcd user and password (RBAC).
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterAuth {
    /// The etcd user.
    pub username: String,
    /// Its password, from `password_file`.
    pub password: String,
}

impl std::fmt::Debug for ClusterAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterAuth")
            .field("username", &self.username)
            .field("password", &"(redacted)")
            .finish()
    }
}

/// Validated `[cluster]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterConfig {
    /// etcd endpoints as URLs (`http://host:port`, or `https://` with
    /// TLS).
    pub endpoints: Vec<String>,
    /// Key prefix, ending in `/`.
    pub prefix: String,
    /// This instance's name (its key, and how peers list it).
    pub name: String,
    /// The vote rule.
    pub quorum: Quorum,
    /// The heartbeat lease: a dead instance's votes stop counting this
    /// long after its last keep-alive. Whole seconds.
    pub lease_ttl: Duration,
    /// Bound on connecting and on every etcd call.
    pub dial_timeout: Duration,
    /// TLS, when set.
    pub tls: Option<ClusterTls>,
    /// Authentication, when set.
    pub auth: Option<ClusterAuth>,
}

impl ClusterConfig {
    /// Whether `other` differs in anything but what a reload applies
    /// live (`quorum`).
    pub fn needs_restart_for(&self, other: &Self) -> bool {
        let mut a = self.clone();
        a.quorum = other.quorum;
        a != *other
    }
}

/// This host's name: the kernel's, as `hostname` prints it.
fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// Checks that `pem` holds one or more PEM certificates, all readable:
/// a wrong file shows at load, not as a TLS failure at run time.
fn certificates(pem: &[u8]) -> Result<(), String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut n = 0;
    for cert in CertificateDer::pem_slice_iter(pem) {
        cert.map_err(|e| format!("not PEM: {e}"))?;
        n += 1;
    }
    if n == 0 {
        return Err("no PEM certificate (-----BEGIN CERTIFICATE-----) in it".into());
    }
    Ok(())
}

/// Checks that `pem` holds a PEM private key (PKCS#8, PKCS#1 or SEC1).
fn private_key(pem: &[u8]) -> Result<(), String> {
    use rustls::pki_types::PrivateKeyDer;
    use rustls::pki_types::pem::PemObject;
    PrivateKeyDer::from_pem_slice(pem)
        .map(drop)
        .map_err(|e| format!("no PEM private key in it ({e})"))
}

/// What every `[cluster]` check needs: the config file (for errors) and
/// its directory (for relative file paths).
struct Ctx<'a> {
    file: &'a Path,
    base: &'a Path,
}

impl Ctx<'_> {
    /// An error at `cluster.<key>`.
    fn err(&self, key: &str, reason: String) -> ConfigError {
        ConfigError::new(self.file, format!("cluster.{key}"), reason)
    }

    /// The contents of the file `name` given at `key`.
    fn read(&self, key: &str, name: &str) -> Result<Vec<u8>, ConfigError> {
        let path = self.base.join(name);
        std::fs::read(&path)
            .map_err(|e| self.err(key, format!("{}: cannot read: {e}", path.display())))
    }
}

/// Checks `[cluster]`; `base` is the config file's directory (relative
/// file paths).
pub(super) fn validate_cluster(
    file: &Path,
    base: &Path,
    raw: Option<RawCluster>,
) -> Result<Option<ClusterConfig>, ConfigError> {
    let Some(raw) = raw else { return Ok(None) };
    let cx = Ctx { file, base };
    if raw.password.is_some() {
        return Err(cx.err(
            "password",
            "not accepted in the config file: put the password in a file readable only by \
             Meridian and name it in `password_file`"
                .into(),
        ));
    }
    let tls = tls(&cx, raw.ca_file, raw.cert_file, raw.key_file)?;
    let endpoints = endpoints(&cx, raw.endpoints, tls.is_some())?;
    let prefix = raw
        .prefix
        .unwrap_or_else(|| DEFAULT_CLUSTER_PREFIX.to_string());
    if prefix.is_empty() || !prefix.ends_with('/') {
        return Err(cx.err(
            "prefix",
            format!("{prefix:?}: a non-empty key prefix ending in \"/\", e.g. \"/meridian/\""),
        ));
    }
    let name = name(&cx, raw.name)?;
    let quorum = quorum(&cx, raw.quorum)?;
    let lease_ttl = super::probe::duration(
        file,
        "cluster.lease_ttl".into(),
        raw.lease_ttl.as_deref(),
        DEFAULT_CLUSTER_LEASE_TTL,
        MIN_CLUSTER_LEASE_TTL,
        MAX_CLUSTER_LEASE_TTL,
    )?;
    if lease_ttl.subsec_nanos() != 0 {
        return Err(cx.err(
            "lease_ttl",
            format!("{lease_ttl:?}: etcd leases are whole seconds"),
        ));
    }
    let dial_timeout = super::probe::duration(
        file,
        "cluster.dial_timeout".into(),
        raw.dial_timeout.as_deref(),
        DEFAULT_CLUSTER_DIAL_TIMEOUT,
        MIN_CLUSTER_DIAL_TIMEOUT,
        MAX_CLUSTER_DIAL_TIMEOUT,
    )?;
    let auth = auth(&cx, raw.username, raw.password_file)?;
    Ok(Some(ClusterConfig {
        endpoints,
        prefix,
        name,
        quorum,
        lease_ttl,
        dial_timeout,
        tls,
        auth,
    }))
}

/// `ca_file`, `cert_file`, `key_file`: TLS, read and checked as PEM.
fn tls(
    cx: &Ctx<'_>,
    ca: Option<String>,
    cert: Option<String>,
    key: Option<String>,
) -> Result<Option<ClusterTls>, ConfigError> {
    let ca = match (ca, &cert, &key) {
        (None, None, None) => return Ok(None),
        (None, _, _) => {
            return Err(cx.err(
                "ca_file",
                "missing: TLS (cert_file, key_file) needs the CA that signed the etcd servers' \
                 certificates"
                    .into(),
            ));
        }
        (Some(ca), _, _) => ca,
    };
    let identity = match (cert, key) {
        (None, None) => None,
        (Some(c), Some(k)) => {
            let (cert, key) = (cx.read("cert_file", &c)?, cx.read("key_file", &k)?);
            certificates(&cert).map_err(|e| cx.err("cert_file", format!("{c}: {e}")))?;
            private_key(&key).map_err(|e| cx.err("key_file", format!("{k}: {e}")))?;
            Some((cert, key))
        }
        (Some(_), None) => {
            return Err(cx.err("key_file", "missing: cert_file needs its key".into()));
        }
        (None, Some(_)) => {
            return Err(cx.err(
                "cert_file",
                "missing: key_file needs its certificate".into(),
            ));
        }
    };
    let ca_pem = cx.read("ca_file", &ca)?;
    certificates(&ca_pem).map_err(|e| cx.err("ca_file", format!("{ca}: {e}")))?;
    Ok(Some(ClusterTls { ca_pem, identity }))
}

/// `endpoints`, as URLs: https with TLS, http without.
fn endpoints(
    cx: &Ctx<'_>,
    list: Option<Vec<String>>,
    tls: bool,
) -> Result<Vec<String>, ConfigError> {
    let Some(list) = list else {
        return Err(cx.err(
            "endpoints",
            "missing: the etcd endpoints, e.g. [\"10.0.0.1:2379\", \"10.0.0.2:2379\"] (remove \
             [cluster] to run alone)"
                .into(),
        ));
    };
    if list.is_empty() || list.len() > MAX_ENDPOINTS {
        return Err(cx.err(
            "endpoints",
            format!("give 1 to {MAX_ENDPOINTS} etcd endpoints"),
        ));
    }
    let mut endpoints = Vec::with_capacity(list.len());
    for (i, text) in list.iter().enumerate() {
        let key = format!("endpoints[{i}]");
        let (scheme, rest) = match text.split_once("://") {
            Some((s, rest)) => (Some(s.to_ascii_lowercase()), rest),
            None => (None, text.as_str()),
        };
        let authority = rest.trim_end_matches('/');
        let port_ok = authority.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
        });
        if !port_ok || authority.contains('/') {
            return Err(cx.err(
                &key,
                format!("{text:?} is not HOST:PORT or http(s)://HOST:PORT"),
            ));
        }
        let scheme = match (scheme.as_deref(), tls) {
            (None, false) | (Some("http"), false) => "http",
            (None, true) | (Some("https"), true) => "https",
            (Some("https"), false) => {
                return Err(cx.err(
                    &key,
                    format!("{text:?} uses https: set ca_file (the CA of the etcd servers)"),
                ));
            }
            (Some("http"), true) => {
                return Err(cx.err(
                    &key,
                    format!(
                        "{text:?} is plain http while ca_file sets TLS: use https or HOST:PORT"
                    ),
                ));
            }
            (Some(other), _) => {
                return Err(cx.err(&key, format!("scheme {other:?}: use http or https")));
            }
        };
        let url = format!("{scheme}://{authority}");
        if endpoints.contains(&url) {
            return Err(cx.err(&key, format!("{text:?} is listed twice")));
        }
        endpoints.push(url);
    }
    Ok(endpoints)
}

/// `name`, or the host name.
fn name(cx: &Ctx<'_>, name: Option<String>) -> Result<String, ConfigError> {
    let name = match name {
        Some(n) => n,
        None => hostname().ok_or_else(|| {
            cx.err(
                "name",
                "not set, and this host's name cannot be read: set a name for this instance".into(),
            )
        })?,
    };
    if name.is_empty()
        || name.len() > MAX_NAME
        || name.contains('/')
        || name.chars().any(char::is_control)
    {
        return Err(cx.err(
            "name",
            format!("{name:?}: 1 to {MAX_NAME} bytes, no \"/\" and no control characters"),
        ));
    }
    Ok(name)
}

/// `quorum`: a rule's name or a count.
fn quorum(cx: &Ctx<'_>, value: Option<toml::Value>) -> Result<Quorum, ConfigError> {
    let wrong = |shown: String| {
        cx.err(
            "quorum",
            format!("{shown}: \"any\", \"majority\", \"all\" or a count such as 2"),
        )
    };
    Ok(match value {
        None => Quorum::Majority,
        Some(toml::Value::String(s)) => match s.as_str() {
            "any" => Quorum::Any,
            "majority" => Quorum::Majority,
            "all" => Quorum::All,
            other => return Err(wrong(format!("{other:?}"))),
        },
        Some(toml::Value::Integer(n)) => {
            let max = i64::from(MAX_QUORUM_COUNT);
            Quorum::Count(check_range(cx.file, "cluster.quorum", n, 1, max)? as u32)
        }
        Some(other) => return Err(wrong(other.to_string())),
    })
}

/// `username` and `password_file`: both or neither.
fn auth(
    cx: &Ctx<'_>,
    username: Option<String>,
    password_file: Option<String>,
) -> Result<Option<ClusterAuth>, ConfigError> {
    match (username, password_file) {
        (None, None) => Ok(None),
        (Some(_), None) => Err(cx.err(
            "password_file",
            "missing: username needs the file holding its password".into(),
        )),
        (None, Some(_)) => Err(cx.err(
            "username",
            "missing: password_file needs the etcd user it is for".into(),
        )),
        (Some(username), Some(f)) => {
            if username.is_empty() {
                return Err(cx.err("username", "empty".into()));
            }
            let bytes = cx.read("password_file", &f)?;
            // Errors name the file, never its contents.
            let password = String::from_utf8(bytes)
                .map_err(|_| cx.err("password_file", format!("{f}: not UTF-8 text")))?
                .trim_end_matches(['\n', '\r'])
                .to_string();
            if password.is_empty() {
                return Err(cx.err("password_file", format!("{f}: empty")));
            }
            Ok(Some(ClusterAuth { username, password }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml: &str) -> Result<Option<ClusterConfig>, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pw"), "s3cret\n").unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["etcd".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        std::fs::write(dir.path().join("ca.pem"), cert.pem()).unwrap();
        std::fs::write(dir.path().join("key.pem"), key.serialize_pem()).unwrap();
        std::fs::write(dir.path().join("junk.pem"), "CA").unwrap();
        let file = dir.path().join("meridian.toml");
        let text = format!("[cluster]\n{toml}");
        super::super::parse_server(&file, &text).map(|s| s.cluster)
    }

    fn error(toml: &str) -> (String, String) {
        let e = parse(toml).unwrap_err();
        assert!(e.file.ends_with("meridian.toml"), "{e}");
        (e.key, e.reason)
    }

    #[test]
    fn defaults_and_urls() {
        let c = parse(r#"endpoints = ["127.0.0.1:2379", "http://[::1]:2379/"]"#)
            .unwrap()
            .unwrap();
        assert_eq!(c.endpoints, ["http://127.0.0.1:2379", "http://[::1]:2379"]);
        assert_eq!(c.prefix, "/meridian/");
        assert_eq!(c.quorum, Quorum::Majority);
        assert_eq!(c.lease_ttl, DEFAULT_CLUSTER_LEASE_TTL);
        assert_eq!(c.dial_timeout, DEFAULT_CLUSTER_DIAL_TIMEOUT);
        assert!(!c.name.is_empty(), "the hostname");
        assert!(c.tls.is_none() && c.auth.is_none());
        let c = parse(
            "endpoints = [\"e1:2379\"]\nca_file = \"ca.pem\"\nname = \"a\"\nquorum = 2\n\
             username = \"meridian\"\npassword_file = \"pw\"\nlease_ttl = \"3s\"",
        )
        .unwrap()
        .unwrap();
        assert_eq!(c.endpoints, ["https://e1:2379"]);
        assert_eq!(c.quorum, Quorum::Count(2));
        assert_eq!(c.auth.as_ref().unwrap().password, "s3cret");
        assert!(
            !format!("{c:?}").contains("s3cret"),
            "the password is not logged"
        );
        assert_eq!(parse("").unwrap_err().key, "cluster.endpoints");
    }

    #[test]
    fn errors_name_the_key_and_reason() {
        let cases: &[(&str, &str, &str)] = &[
            ("endpoints = []", "cluster.endpoints", "1 to"),
            (
                "endpoints = [\"nohost\"]",
                "cluster.endpoints[0]",
                "HOST:PORT",
            ),
            (
                "endpoints = [\"a:1\", \"a:1\"]",
                "cluster.endpoints[1]",
                "twice",
            ),
            (
                "endpoints = [\"https://a:1\"]",
                "cluster.endpoints[0]",
                "ca_file",
            ),
            (
                "endpoints = [\"a:1\"]\nprefix = \"m\"",
                "cluster.prefix",
                "ending",
            ),
            (
                "endpoints = [\"a:1\"]\nname = \"a/b\"",
                "cluster.name",
                "no \"/\"",
            ),
            ("endpoints = [\"a:1\"]\nname = \"\"", "cluster.name", "1 to"),
            (
                "endpoints = [\"a:1\"]\nquorum = \"most\"",
                "cluster.quorum",
                "majority",
            ),
            (
                "endpoints = [\"a:1\"]\nquorum = 0",
                "cluster.quorum",
                "out of range",
            ),
            (
                "endpoints = [\"a:1\"]\nlease_ttl = \"1s\"",
                "cluster.lease_ttl",
                "out of range",
            ),
            (
                "endpoints = [\"a:1\"]\nlease_ttl = \"2500ms\"",
                "cluster.lease_ttl",
                "whole seconds",
            ),
            (
                "endpoints = [\"a:1\"]\npassword = \"x\"",
                "cluster.password",
                "password_file",
            ),
            (
                "endpoints = [\"a:1\"]\nusername = \"u\"",
                "cluster.password_file",
                "missing",
            ),
            (
                "endpoints = [\"a:1\"]\nusername = \"u\"\npassword_file = \"nope\"",
                "cluster.password_file",
                "cannot read",
            ),
            (
                "endpoints = [\"a:1\"]\ncert_file = \"ca.pem\"",
                "cluster.ca_file",
                "missing",
            ),
            (
                "endpoints = [\"a:1\"]\nca_file = \"junk.pem\"",
                "cluster.ca_file",
                "no PEM certificate",
            ),
            (
                "endpoints = [\"a:1\"]\nca_file = \"ca.pem\"\ncert_file = \"key.pem\"\n\
                 key_file = \"key.pem\"",
                "cluster.cert_file",
                "no PEM certificate",
            ),
            (
                "endpoints = [\"a:1\"]\nca_file = \"ca.pem\"\ncert_file = \"ca.pem\"\n\
                 key_file = \"ca.pem\"",
                "cluster.key_file",
                "no PEM private key",
            ),
            (
                "endpoints = [\"a:1\"]\nendpoint = \"a:1\"",
                "cluster.endpoint",
                "unknown field",
            ),
        ];
        for (toml, key, reason) in cases {
            let (k, r) = error(toml);
            assert_eq!(&k, key, "{toml}: {r}");
            assert!(r.contains(reason), "{toml}: {r}");
        }
    }

    #[test]
    fn only_quorum_reloads_live() {
        let a = parse("endpoints = [\"a:1\"]\nname = \"x\"")
            .unwrap()
            .unwrap();
        let mut b = a.clone();
        b.quorum = Quorum::All;
        assert!(!a.needs_restart_for(&b));
        b.lease_ttl = Duration::from_secs(3);
        assert!(a.needs_restart_for(&b));
    }
}
