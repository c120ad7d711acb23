//! `type = "http"` and `"https"`: a request, an expected status (and
//! body), the target's reported capacity, and for https the server
//! certificate's expiry.

use std::io;
use std::net::SocketAddr;

use super::{
    BODY_LIMIT, CAPACITY_HEADER, Failure, Fault, Seen, Step, classify, has_route, os_error,
    parse_capacity,
};
use crate::model::{HttpMethod, HttpProbe};

/// Builds the client for probes of `target` and the URL they request.
pub(super) fn client(
    spec: &HttpProbe,
    target: SocketAddr,
    timeout: std::time::Duration,
) -> Result<(reqwest::Client, String), String> {
    super::install_crypto_provider();
    let scheme = if spec.tls.is_some() { "https" } else { "http" };
    let mut builder = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        // A fresh connection per probe: a dead server is seen at once,
        // not when a pooled connection times out.
        .pool_max_idle_per_host(0)
        // The peer certificate, for its expiry: read from the handshake
        // the probe makes anyway, so no second connection.
        .tls_info(spec.tls.is_some())
        .user_agent(concat!("meridian-probe/", env!("CARGO_PKG_VERSION")));
    if spec.tls.as_ref().is_some_and(|t| !t.verify) {
        builder = builder.tls_danger_accept_invalid_certs(true);
    }
    let url = match &spec.host {
        Some(host) => {
            builder = builder.resolve(host, target);
            format!("{scheme}://{host}:{}{}", target.port(), spec.path)
        }
        None => format!("{scheme}://{target}{}", spec.path),
    };
    let client = builder.build().map_err(|e| format!("HTTP client: {e}"))?;
    Ok((client, url))
}

pub(super) async fn http(
    client: &reqwest::Client,
    url: &str,
    spec: &HttpProbe,
    target: SocketAddr,
    seen: &mut Seen,
) -> Result<Option<u8>, Failure> {
    let request = match spec.method {
        HttpMethod::Get => client.get(url),
        HttpMethod::Head => client.head(url),
    };
    let mut response = request.send().await.map_err(|e| http_failure(&e, target))?;
    if let Some(info) = response.extensions().get::<reqwest::tls::TlsInfo>() {
        seen.certificate(info.peer_certificate());
    }
    seen.check_cert_days(spec.tls.as_ref().and_then(|t| t.min_cert_days))?;
    let status = response.status().as_u16();
    if !spec
        .expect_status
        .iter()
        .any(|&(lo, hi)| (lo..=hi).contains(&status))
    {
        return Err(Failure::target(format!("status {status}")));
    }
    let capacity = match response.headers().get(CAPACITY_HEADER) {
        Some(v) => parse_capacity(v.to_str().unwrap_or("")).map_err(Failure::target)?,
        None => None,
    };
    let Some(needle) = &spec.expect_body else {
        return Ok(capacity);
    };
    let mut body = Vec::new();
    while body.len() < BODY_LIMIT {
        match response
            .chunk()
            .await
            .map_err(|e| http_failure(&e, target))?
        {
            Some(chunk) => body.extend_from_slice(&chunk),
            None => break,
        }
    }
    body.truncate(BODY_LIMIT);
    let found = body
        .windows(needle.len().max(1))
        .any(|w| w == needle.as_bytes());
    if found {
        Ok(capacity)
    } else {
        Err(Failure::target(format!(
            "body does not contain {needle:?} (first {} bytes read)",
            body.len()
        )))
    }
}

/// An HTTP client error, classified by the OS error inside it. The client
/// does not say which socket call failed, so this is [`Step::Exchange`]:
/// creating the socket fails with resource errors, which are local there
/// too.
fn http_failure(e: &reqwest::Error, target: SocketAddr) -> Failure {
    match os_error(e) {
        // The OS error alone: the client's wrapping ("error sending
        // request for url ...: client error (Connect): tcp open error")
        // adds nothing an operator needs.
        Some(errno) if classify(errno, Step::Exchange, || has_route(target)) == Fault::Local => {
            Failure::local(io::Error::from_raw_os_error(errno).to_string())
        }
        _ => Failure::target(describe(e)),
    }
}

/// reqwest's error chain in one line.
pub(super) fn describe(e: &reqwest::Error) -> String {
    crate::error_chain(e.to_string(), std::error::Error::source(e))
}

#[cfg(test)]
mod tests {
    use super::super::tests::closed_port;
    use super::*;

    #[tokio::test]
    async fn a_refused_http_connection_is_found_in_the_client_error_and_counts() {
        super::super::install_crypto_provider();
        let target = closed_port();
        let client = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client");
        let e = client
            .get(format!("http://{target}/"))
            .send()
            .await
            .expect_err("nothing listens");
        assert_eq!(os_error(&e), Some(libc::ECONNREFUSED), "{}", describe(&e));
        let f = http_failure(&e, target);
        assert_eq!(f.fault, Fault::Target);
        assert!(f.reason.contains("refused"), "{}", f.reason);
    }
}
