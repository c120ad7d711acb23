//! TLS for probes: the server certificate's expiry (https and grpc), and
//! the client configuration of grpc probes.
//!
//! The expiry is read from the end-entity certificate the probe's own
//! handshake received, so checking it costs no extra connection. Only the
//! `validity.notAfter` field is needed, so a few lines of DER walking
//! ([`not_after`]) replace an X.509 parser.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// Seconds in a day.
const DAY: i64 = 86_400;

/// Whole days from `now` until `not_after`, rounded down: 0 on the last
/// day, negative once it has expired.
pub fn days_left(not_after: SystemTime, now: SystemTime) -> i64 {
    let secs = match not_after.duration_since(now) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    };
    secs.div_euclid(DAY)
}

/// The probe error for a certificate `days` from expiry, under `min`.
pub fn expiry_error(days: i64, min: u32) -> String {
    let unit = |n: i64| if n == 1 { "day" } else { "days" };
    if days < 0 {
        let ago = -days;
        format!(
            "certificate expired {ago} {} ago (min_cert_days = {min})",
            unit(ago)
        )
    } else {
        format!(
            "certificate expires in {days} {} (min_cert_days = {min})",
            unit(days)
        )
    }
}

//------------ DER -----------------------------------------------------------

/// Splits one DER element off `input`: (tag, contents, rest).
fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        // Long form: the low bits count the length bytes that follow.
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let mut len = 0usize;
        for &b in &rest[..n] {
            len = (len << 8) | usize::from(b);
        }
        rest = &rest[n..];
        len
    };
    if rest.len() < len {
        return None;
    }
    let (contents, rest) = rest.split_at(len);
    Some((tag, contents, rest))
}

const SEQUENCE: u8 = 0x30;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;
/// `[0] EXPLICIT Version` at the start of a v2/v3 `TBSCertificate`.
const VERSION: u8 = 0xa0;

/// The `validity.notAfter` of a DER X.509 certificate (RFC 5280 4.1):
///
/// ```text
/// Certificate ::= SEQUENCE { tbsCertificate TBSCertificate, ... }
/// TBSCertificate ::= SEQUENCE { version [0] EXPLICIT OPTIONAL,
///     serialNumber, signature, issuer, validity, ... }
/// Validity ::= SEQUENCE { notBefore Time, notAfter Time }
/// ```
pub fn not_after(der: &[u8]) -> Option<SystemTime> {
    let (tag, cert, _) = element(der)?;
    if tag != SEQUENCE {
        return None;
    }
    let (tag, tbs, _) = element(cert)?;
    if tag != SEQUENCE {
        return None;
    }
    let mut rest = tbs;
    let (tag, _, after) = element(rest)?;
    if tag == VERSION {
        rest = after;
    }
    // serialNumber, signature, issuer.
    for _ in 0..3 {
        rest = element(rest)?.2;
    }
    let (tag, validity, _) = element(rest)?;
    if tag != SEQUENCE {
        return None;
    }
    let (_, _, rest) = element(validity)?;
    let (tag, time, _) = element(rest)?;
    parse_time(tag, time)
}

/// An RFC 5280 4.1.2.5 time: `YYMMDDHHMMSSZ` (UTCTime, years 1950 to
/// 2049) or `YYYYMMDDHHMMSSZ` (GeneralizedTime).
fn parse_time(tag: u8, text: &[u8]) -> Option<SystemTime> {
    let digits = |s: &[u8]| -> Option<i64> {
        s.iter().try_fold(0i64, |n, &b| {
            b.is_ascii_digit().then(|| n * 10 + i64::from(b - b'0'))
        })
    };
    let (year, rest) = match (tag, text.len()) {
        (UTC_TIME, 13) => {
            let yy = digits(&text[..2])?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &text[2..])
        }
        (GENERALIZED_TIME, 15) => (digits(&text[..4])?, &text[4..]),
        _ => return None,
    };
    if rest.last() != Some(&b'Z') {
        return None;
    }
    let field = |i: usize| digits(&rest[i..i + 2]);
    let (month, day) = (field(0)?, field(2)?);
    let (hour, minute, second) = (field(4)?, field(6)?, field(8)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let secs = days_from_civil(year, month, day) * DAY + hour * 3600 + minute * 60 + second;
    let secs = u64::try_from(secs).ok()?;
    SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(secs))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

//------------ gRPC client configuration ------------------------------------

/// The rustls client configuration of a grpc probe: HTTP/2 by ALPN, and
/// the platform verifier (as reqwest's https probes use) or, with
/// `tls_verify = false`, none.
pub(super) fn client_config(verify: bool) -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier: Arc<dyn ServerCertVerifier> = if verify {
        Arc::new(
            rustls_platform_verifier::Verifier::new(provider.clone())
                .map_err(|e| format!("certificate verifier: {e}"))?,
        )
    } else {
        Arc::new(AcceptAny(provider.clone()))
    };
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// Accepts any server certificate (`tls_verify = false`), but still
/// checks that the server holds its key.
#[derive(Debug)]
struct AcceptAny(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unix(t: SystemTime) -> u64 {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs()
    }

    #[test]
    fn times_of_both_encodings() {
        let t = parse_time(UTC_TIME, b"491231235959Z").expect("utc");
        assert_eq!(unix(t), 2_524_607_999); // 2049-12-31T23:59:59Z
        let t = parse_time(UTC_TIME, b"700102000000Z").expect("utc 1970");
        assert_eq!(unix(t), 86_400);
        let t = parse_time(GENERALIZED_TIME, b"20240229120000Z").expect("gen");
        assert_eq!(unix(t), 1_709_208_000);
        assert_eq!(parse_time(UTC_TIME, b"241301000000Z"), None);
        assert_eq!(parse_time(UTC_TIME, b"2401010000Z"), None);
        assert_eq!(parse_time(GENERALIZED_TIME, b"20240101000000+"), None);
        assert_eq!(parse_time(SEQUENCE, b"240101000000Z"), None);
    }

    #[test]
    fn days_round_down_and_go_negative() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        let at = |secs: i64| {
            if secs >= 0 {
                now + Duration::from_secs(secs as u64)
            } else {
                now - Duration::from_secs((-secs) as u64)
            }
        };
        assert_eq!(days_left(at(2 * DAY - 1), now), 1);
        assert_eq!(days_left(at(2 * DAY), now), 2);
        assert_eq!(days_left(at(0), now), 0);
        assert_eq!(days_left(at(-1), now), -1);
        assert_eq!(days_left(at(-DAY - 1), now), -2);
        assert_eq!(
            expiry_error(1, 7),
            "certificate expires in 1 day (min_cert_days = 7)"
        );
        assert_eq!(
            expiry_error(-3, 7),
            "certificate expired 3 days ago (min_cert_days = 7)"
        );
    }

    #[test]
    fn not_after_of_generated_certificates() {
        for days in [2i64, 90, 4000] {
            let mut params =
                rcgen::CertificateParams::new(vec!["probe.test".to_string()]).expect("params");
            let now = rcgen::date_time_ymd(2030, 1, 1);
            params.not_before = now;
            params.not_after = now + time_days(days);
            let key = rcgen::KeyPair::generate().expect("key");
            let cert = params.self_signed(&key).expect("cert");
            let t = not_after(cert.der()).expect("notAfter");
            // 2030-01-01T00:00:00Z is 1_893_456_000.
            assert_eq!(unix(t), 1_893_456_000 + days as u64 * 86_400, "{days}");
        }
    }

    /// `days` as the duration type rcgen's dates use.
    fn time_days(days: i64) -> std::time::Duration {
        std::time::Duration::from_secs(days as u64 * 86_400)
    }

    #[test]
    fn garbage_is_none_not_a_panic() {
        assert_eq!(not_after(&[]), None);
        assert_eq!(not_after(&[0x30]), None);
        assert_eq!(not_after(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
        assert_eq!(not_after(&[0x30, 0x03, 0x30, 0x01, 0x02]), None);
        // Every prefix of a real certificate.
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["x.test".to_string()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        let der = cert.der();
        for n in 0..der.len() {
            let _ = not_after(&der[..n]);
        }
        assert!(not_after(der).is_some());
    }
}
