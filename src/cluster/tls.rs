//! Why etcd refused a TLS connection, in an operator's terms.
//!
//! tonic reports a handshake well when Meridian rejects etcd's
//! certificate ("invalid peer certificate: UnknownIssuer"), but not when
//! etcd rejects Meridian's. In TLS 1.3 the client sends its certificate
//! after it considers the handshake done, so etcd's refusal (an alert)
//! arrives as the first read of the HTTP/2 connection, and tonic reports
//! only "operation was canceled: connection closed". So when a session
//! fails before it is connected, [`diagnose`] repeats the handshake on a
//! connection of its own, with the same CA and client certificate, reads
//! etcd's first answer, and names what went wrong and which setting
//! fixes it. Without TLS, [`speaks_tls`] tells a TLS port apart (etcd
//! just closes a plain HTTP/2 connection: "broken pipe").

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{AlertDescription, CertificateError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::cluster::ClusterTls;

/// The HTTP/2 client connection preface (RFC 9113, section 3.4): what
/// etcd's gRPC server waits for before it answers.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The rustls client configuration for `tls`: its CA as the only root,
/// its client certificate when set, HTTP/2 by ALPN (as tonic offers).
fn client_config(tls: &ClusterTls) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&tls.ca_pem) {
        let cert = cert.map_err(|e| format!("ca_file: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("ca_file: a certificate rustls refuses: {e}"))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots);
    let mut config = match &tls.identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = CertificateDer::pem_slice_iter(cert)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("cert_file: {e}"))?;
            let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| format!("key_file: {e}"))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("cert_file/key_file: {e}"))?
        }
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// Connects to `endpoint` (`https://HOST:PORT`) as a session would, and
/// says why TLS fails there, or `None` when TLS works (or the endpoint
/// cannot be reached at all, which is no TLS matter). Every step is
/// bounded by `limit`.
pub(super) async fn diagnose(endpoint: &str, tls: &ClusterTls, limit: Duration) -> Option<String> {
    let (host, port, name) = host_port(endpoint)?;
    let config = match client_config(tls) {
        Ok(c) => c,
        Err(e) => return Some(e),
    };
    let tcp = tokio::time::timeout(limit, tokio::net::TcpStream::connect((host, port)))
        .await
        .ok()?
        .ok()?;
    let connect = tokio_rustls::TlsConnector::from(config).connect(name, tcp);
    let mut stream = match tokio::time::timeout(limit, connect).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Some(explain(&e, tls, host)),
        Err(_) => return None,
    };
    // Done on this side; etcd's verdict on the client certificate is the
    // first thing it sends back.
    let mut buf = [0u8; 64];
    let answer = async {
        stream.write_all(PREFACE).await?;
        stream.read(&mut buf).await
    };
    match tokio::time::timeout(limit, answer).await {
        Ok(Err(e)) => Some(explain(&e, tls, host)),
        Ok(Ok(0)) => Some(if tls.identity.is_some() {
            "etcd closed the connection right after the TLS handshake: it refused the client \
             certificate (cert_file); is it signed by a CA etcd trusts (--trusted-ca-file)?"
                .to_string()
        } else {
            "etcd closed the connection right after the TLS handshake: it asks for a client \
             certificate (--client-cert-auth); set cert_file and key_file"
                .to_string()
        }),
        Ok(Ok(_)) | Err(_) => None,
    }
}

/// Whether `endpoint` (`http://HOST:PORT`) answers a TLS handshake: a
/// certificate comes back (which no root is configured to accept).
/// `false` also when it cannot be reached within `limit`.
pub(super) async fn speaks_tls(endpoint: &str, limit: Duration) -> bool {
    let Some((host, port, name)) = host_port(endpoint) else {
        return false;
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let Ok(builder) =
        rustls::ClientConfig::builder_with_provider(provider).with_safe_default_protocol_versions()
    else {
        return false;
    };
    let config = builder
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let handshake = async {
        let tcp = tokio::net::TcpStream::connect((host, port)).await?;
        tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
    };
    match tokio::time::timeout(limit, handshake).await {
        Ok(Ok(_)) => true,
        Ok(Err(e)) => matches!(
            e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()),
            Some(rustls::Error::InvalidCertificate(_))
        ),
        Err(_) => false,
    }
}

/// `http(s)://HOST:PORT` as host (without IPv6 brackets), port and TLS
/// server name.
fn host_port(endpoint: &str) -> Option<(&str, u16, ServerName<'static>)> {
    let (_, authority) = endpoint.split_once("://")?;
    let (host, port) = authority.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let name = ServerName::try_from(host.to_string()).ok()?;
    Some((host, port, name))
}

/// A failed handshake or read, as what is wrong and which setting fixes
/// it; `host` is the endpoint's host.
fn explain(e: &std::io::Error, tls: &ClusterTls, host: &str) -> String {
    let Some(rustls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else {
        return format!("TLS: {e}");
    };
    let why = match rustls {
        rustls::Error::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer => {
                "etcd's certificate is not signed by the CA in ca_file".to_string()
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                format!(
                    "etcd's certificate is not valid for {host:?}: list etcd by a name (or \
                     address) its certificate carries"
                )
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "etcd's certificate has expired".to_string()
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "etcd's certificate is not valid yet (check this host's clock)".to_string()
            }
            _ => "etcd's certificate is refused".to_string(),
        },
        rustls::Error::AlertReceived(alert) => match (alert, &tls.identity) {
            (AlertDescription::CertificateRequired | AlertDescription::HandshakeFailure, None)
            | (AlertDescription::BadCertificate, None) => {
                "etcd asks for a client certificate (--client-cert-auth): set cert_file and \
                 key_file"
                    .to_string()
            }
            (
                AlertDescription::BadCertificate
                | AlertDescription::UnknownCA
                | AlertDescription::CertificateUnknown
                | AlertDescription::UnsupportedCertificate
                | AlertDescription::CertificateExpired
                | AlertDescription::CertificateRevoked,
                Some(_),
            ) => "etcd refused the client certificate (cert_file): is it signed by a CA etcd \
                  trusts (--trusted-ca-file), and still valid?"
                .to_string(),
            _ => "etcd ended the TLS handshake".to_string(),
        },
        _ => "the TLS handshake failed".to_string(),
    };
    format!("TLS: {why} ({rustls})")
}
