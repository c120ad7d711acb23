//! `type = "grpc"`: the standard gRPC health checking protocol
//! (`grpc.health.v1.Health/Check`, see
//! <https://github.com/grpc/grpc/blob/master/doc/health-checking.md>).
//! Only `SERVING` passes.
//!
//! Each probe makes a fresh connection, like the http probes, so a dead
//! server is seen at once. The TCP connect and the TLS handshake are made
//! here rather than inside tonic: the connect's errors are then classified
//! like the tcp probe's, the handshake uses the https probe's verifier
//! (or none, with `tls_verify = false`), and the server certificate's
//! expiry is read from the same handshake. The connected stream is handed
//! to tonic through a connector that yields it once.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tonic::transport::{Endpoint, Uri};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use super::{Failure, Seen};
use crate::model::{GrpcProbe, ProbeTls};

/// A prepared gRPC health probe of one target.
#[derive(Debug)]
pub struct Grpc {
    service: String,
    /// `scheme://authority` of the requests.
    origin: Uri,
    tls: Option<Tls>,
}

/// TLS of a gRPC probe.
struct Tls {
    connector: tokio_rustls::TlsConnector,
    server_name: ServerName<'static>,
    settings: ProbeTls,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("server_name", &self.server_name)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// A connected stream, plain or TLS.
trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

impl Grpc {
    /// Prepares the probe: origin, TLS configuration and server name.
    pub(super) fn new(spec: &GrpcProbe, target: SocketAddr) -> Result<Self, String> {
        let scheme = if spec.tls.is_some() { "https" } else { "http" };
        let authority = match &spec.host {
            Some(host) => format!("{host}:{}", target.port()),
            None => target.to_string(),
        };
        let origin: Uri = format!("{scheme}://{authority}")
            .parse()
            .map_err(|e| format!("gRPC origin {authority:?}: {e}"))?;
        let tls = match &spec.tls {
            None => None,
            Some(settings) => {
                super::install_crypto_provider();
                let config = super::tls::client_config(settings.verify)?;
                let server_name = match &spec.host {
                    Some(host) => ServerName::try_from(host.clone())
                        .map_err(|e| format!("TLS server name {host:?}: {e}"))?,
                    None => ServerName::IpAddress(target.ip().into()),
                };
                Some(Tls {
                    connector: tokio_rustls::TlsConnector::from(config),
                    server_name,
                    settings: settings.clone(),
                })
            }
        };
        Ok(Self {
            service: spec.service.clone(),
            origin,
            tls,
        })
    }

    /// Connects, handshakes and asks once.
    pub(super) async fn check(&self, target: SocketAddr, seen: &mut Seen) -> Result<(), Failure> {
        let tcp = super::tcp::connect(target).await?;
        let stream: Box<dyn Io> = match &self.tls {
            None => Box::new(tcp),
            Some(tls) => {
                let stream = tls
                    .connector
                    .connect(tls.server_name.clone(), tcp)
                    .await
                    .map_err(|e| Failure::target(format!("TLS: {e}")))?;
                seen.certificate(
                    stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .map(|c| c.as_ref()),
                );
                seen.check_cert_days(tls.settings.min_cert_days)?;
                Box::new(stream)
            }
        };

        // tonic connects through this, once: the stream is already made.
        let slot = Arc::new(Mutex::new(Some(TokioIo::new(stream))));
        let connector = tower::service_fn(move |_: Uri| {
            let stream = slot.lock().ok().and_then(|mut s| s.take());
            async move { stream.ok_or_else(|| std::io::Error::other("the probe's connection was used")) }
        });
        // The endpoint URI is only a key for the connector, which tonic
        // checks for "https" without TLS of its own; the origin gives the
        // requests their scheme and authority.
        let channel = Endpoint::from_static("http://probe.invalid")
            .origin(self.origin.clone())
            .connect_with_connector(connector)
            .await
            .map_err(|e| Failure::target(format!("HTTP/2: {}", chain(&e))))?;
        let request = HealthCheckRequest {
            service: self.service.clone(),
        };
        let response = HealthClient::new(channel)
            .check(request)
            .await
            .map_err(|s| Failure::target(status_error(&s)))?;
        let status = response.into_inner().status;
        match ServingStatus::try_from(status) {
            Ok(ServingStatus::Serving) => Ok(()),
            Ok(other) => Err(Failure::target(format!(
                "health status {}",
                other.as_str_name()
            ))),
            Err(_) => Err(Failure::target(format!("health status {status} (unknown)"))),
        }
    }
}

/// A gRPC error status in one line: "NOT_FOUND: unknown service".
fn status_error(s: &tonic::Status) -> String {
    let code = format!("{:?}", s.code());
    if s.message().is_empty() {
        format!("gRPC status {code}")
    } else {
        format!("gRPC status {code}: {}", s.message())
    }
}

/// An error and its sources in one line.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    crate::error_chain(e.to_string(), e.source())
}
