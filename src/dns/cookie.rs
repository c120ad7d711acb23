//! DNS cookies (RFC 7873) with the interoperable server cookie of RFC
//! 9018: Version 1, three reserved bytes, a 32-bit timestamp and a 64-bit
//! SipHash-2-4 over the client cookie, those fields and the client's
//! address, keyed by a 128-bit server secret.
//!
//! The secret rotates without any timer or shared state: the secret of
//! rotation period `n` is SipHash-2-4-128 of `n` under the master secret,
//! and a cookie is checked against the secret of the period its own
//! timestamp falls in. Instances configured with the same master secret
//! therefore mint and accept the same cookies (anycast), and a cookie
//! minted just before a rollover stays valid for its hour. Without a
//! configured master the process draws one at random, once.

use std::net::IpAddr;
use std::sync::OnceLock;
use std::time::Duration;

use siphasher::sip::SipHasher24;
use siphasher::sip128::SipHasher24 as SipHasher24x128;

/// Length of a client cookie.
pub const CLIENT_COOKIE_LEN: usize = 8;
/// Length of the server cookies Meridian mints (RFC 9018 §4).
pub const SERVER_COOKIE_LEN: usize = 16;
/// A cookie older than this is not accepted (RFC 9018 §4.3).
const MAX_AGE_SECS: i64 = 3600;
/// A cookie from further in the future than this is not accepted.
const MAX_FUTURE_SECS: i64 = 300;
/// RFC 9018 server cookie version.
const VERSION: u8 = 1;

/// Default rotation period of the derived secret.
pub const DEFAULT_ROTATE: Duration = Duration::from_secs(24 * 3600);

/// Server cookie settings and secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Cookies {
    master: [u8; 16],
    rotate_secs: u64,
    /// Answer UDP queries that carry a client cookie but no valid server
    /// cookie with BADCOOKIE (and a fresh cookie) instead of an answer.
    pub require: bool,
}

impl std::fmt::Debug for Cookies {
    /// Never prints the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cookies")
            .field("rotate_secs", &self.rotate_secs)
            .field("require", &self.require)
            .finish_non_exhaustive()
    }
}

/// The master secret of this process when none is configured.
fn random_master() -> [u8; 16] {
    static MASTER: OnceLock<[u8; 16]> = OnceLock::new();
    *MASTER.get_or_init(|| {
        use std::hash::{BuildHasher, Hasher};
        // RandomState is seeded from the OS's random source.
        let mut out = [0u8; 16];
        for (i, chunk) in out.chunks_mut(8).enumerate() {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_usize(i);
            chunk.copy_from_slice(&h.finish().to_le_bytes());
        }
        out
    })
}

impl Cookies {
    /// Cookies under `master` (or this process's random secret), with the
    /// derived secret changing every `rotate`.
    pub fn new(master: Option<[u8; 16]>, rotate: Duration, require: bool) -> Self {
        Self {
            master: master.unwrap_or_else(random_master),
            rotate_secs: rotate.as_secs().max(1),
            require,
        }
    }

    /// The rotation period `timestamp` falls in.
    fn period(&self, timestamp: u32) -> u64 {
        u64::from(timestamp) / self.rotate_secs
    }

    /// The secret of the rotation period `timestamp` falls in.
    fn secret(&self, timestamp: u32) -> [u8; 16] {
        let period = self.period(timestamp);
        let h = SipHasher24x128::new_with_key(&self.master).hash(&period.to_le_bytes());
        h.as_bytes()
    }

    /// RFC 9018 §4.4's hash of a server cookie with `timestamp`, under
    /// `secret` (that of the timestamp's period).
    fn hash(
        secret: &[u8; 16],
        client: &[u8; CLIENT_COOKIE_LEN],
        ip: IpAddr,
        timestamp: u32,
    ) -> [u8; 8] {
        let mut input = [0u8; CLIENT_COOKIE_LEN + 8 + 16];
        input[..8].copy_from_slice(client);
        input[8] = VERSION;
        input[12..16].copy_from_slice(&timestamp.to_be_bytes());
        let len = match ip {
            IpAddr::V4(a) => {
                input[16..20].copy_from_slice(&a.octets());
                20
            }
            IpAddr::V6(a) => {
                input[16..32].copy_from_slice(&a.octets());
                32
            }
        };
        SipHasher24::new_with_key(secret)
            .hash(&input[..len])
            .to_le_bytes()
    }

    /// Checks the server cookie a query brought (`server`, maybe empty)
    /// and mints the one its response carries, deriving the period's
    /// secret once when both fall in the same period (nearly always).
    pub fn respond(
        &self,
        client: &[u8; CLIENT_COOKIE_LEN],
        server: &[u8],
        ip: IpAddr,
        now: u32,
    ) -> (bool, [u8; SERVER_COOKIE_LEN]) {
        let current = self.secret(now);
        let secret_of = |stamp: u32| {
            if self.period(stamp) == self.period(now) {
                current
            } else {
                self.secret(stamp)
            }
        };
        let valid = !server.is_empty() && Self::check(client, server, ip, now, secret_of);
        (valid, Self::stamp(&current, client, ip, now))
    }

    /// A server cookie stamped `now` under `secret`.
    fn stamp(
        secret: &[u8; 16],
        client: &[u8; CLIENT_COOKIE_LEN],
        ip: IpAddr,
        now: u32,
    ) -> [u8; SERVER_COOKIE_LEN] {
        let mut out = [0u8; SERVER_COOKIE_LEN];
        out[0] = VERSION;
        out[4..8].copy_from_slice(&now.to_be_bytes());
        out[8..].copy_from_slice(&Self::hash(secret, client, ip, now));
        out
    }

    /// A fresh server cookie for `client` at `ip` (the packet's source),
    /// stamped `now` (seconds since the epoch, modulo 2^32).
    pub fn mint(
        &self,
        client: &[u8; CLIENT_COOKIE_LEN],
        ip: IpAddr,
        now: u32,
    ) -> [u8; SERVER_COOKIE_LEN] {
        Self::stamp(&self.secret(now), client, ip, now)
    }

    /// Whether `server` is a cookie this server (or one sharing its
    /// master secret) minted for `client` at `ip` within the last hour.
    pub fn verify(
        &self,
        client: &[u8; CLIENT_COOKIE_LEN],
        server: &[u8],
        ip: IpAddr,
        now: u32,
    ) -> bool {
        Self::check(client, server, ip, now, |stamp| self.secret(stamp))
    }

    /// [`Self::verify`] with the secret of a timestamp's period from
    /// `secret_of`.
    fn check(
        client: &[u8; CLIENT_COOKIE_LEN],
        server: &[u8],
        ip: IpAddr,
        now: u32,
        secret_of: impl Fn(u32) -> [u8; 16],
    ) -> bool {
        let Ok(server) = <&[u8; SERVER_COOKIE_LEN]>::try_from(server) else {
            return false;
        };
        if server[0] != VERSION || server[1..4] != [0, 0, 0] {
            return false;
        }
        let stamp = u32::from_be_bytes([server[4], server[5], server[6], server[7]]);
        // Serial number arithmetic (RFC 1982): the age may be negative.
        let age = i64::from(now.wrapping_sub(stamp) as i32);
        if !(-MAX_FUTURE_SECS..=MAX_AGE_SECS).contains(&age) {
            return false;
        }
        // Equal-time comparison: the hash must not be guessable byte by
        // byte from response timing.
        let expected = Self::hash(&secret_of(stamp), client, ip, stamp);
        expected
            .iter()
            .zip(&server[8..])
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

/// Seconds since the Unix epoch, modulo 2^32 (the cookie timestamp).
pub fn now() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as u32)
}

/// Parses a 128-bit secret written as 32 hexadecimal digits.
pub fn parse_secret(text: &str) -> Option<[u8; 16]> {
    let text = text.trim();
    if text.len() != 32 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::envelope::hex;

    /// A cookie under a fixed secret: the RFC 9018 hash is checked
    /// against the RFC's test vector by [`rfc9018_vector`], with the
    /// period derivation bypassed.
    fn hash_with_secret(secret: [u8; 16], client: [u8; 8], ip: IpAddr, ts: u32) -> [u8; 8] {
        let mut input = Vec::new();
        input.extend_from_slice(&client);
        input.extend_from_slice(&[VERSION, 0, 0, 0]);
        input.extend_from_slice(&ts.to_be_bytes());
        match ip {
            IpAddr::V4(a) => input.extend_from_slice(&a.octets()),
            IpAddr::V6(a) => input.extend_from_slice(&a.octets()),
        }
        SipHasher24::new_with_key(&secret)
            .hash(&input)
            .to_le_bytes()
    }

    #[test]
    fn rfc9018_vector() {
        // RFC 9018 Appendix A.1: learning a new server cookie.
        let secret = parse_secret("e5e973e5a6b2a43f48e7dc849e37bfcf").expect("secret");
        let client: [u8; 8] = hex("2464c4abcf10c957").try_into().expect("8 bytes");
        let ip: IpAddr = "198.51.100.100".parse().expect("ip");
        let hash = hash_with_secret(secret, client, ip, 1_559_731_985);
        assert_eq!(hash.to_vec(), hex("1f8130c3eee29480"));
    }

    #[test]
    fn mint_verify_and_expiry() {
        let c = Cookies::new(Some([7; 16]), Duration::from_secs(3600), false);
        let client = [1, 2, 3, 4, 5, 6, 7, 8];
        let ip: IpAddr = "192.0.2.1".parse().expect("ip");
        let now = 1_700_000_000;
        let sc = c.mint(&client, ip, now);
        assert_eq!(sc[0], 1);
        assert!(c.verify(&client, &sc, ip, now));
        assert!(c.verify(&client, &sc, ip, now + 3600), "valid for an hour");
        assert!(!c.verify(&client, &sc, ip, now + 3601), "then stale");
        assert!(c.verify(&client, &sc, ip, now - 300), "a little clock skew");
        assert!(!c.verify(&client, &sc, ip, now - 301));
        // Another client cookie, address or secret: invalid.
        assert!(!c.verify(&[0; 8], &sc, ip, now));
        assert!(!c.verify(&client, &sc, "192.0.2.2".parse().expect("ip"), now));
        let other = Cookies::new(Some([8; 16]), Duration::from_secs(3600), false);
        assert!(!other.verify(&client, &sc, ip, now));
        // A second instance with the same master accepts it (anycast).
        let twin = Cookies::new(Some([7; 16]), Duration::from_secs(3600), true);
        assert!(twin.verify(&client, &sc, ip, now + 10));
        // Any flipped bit, or a wrong length, is refused.
        for i in 0..SERVER_COOKIE_LEN {
            let mut bad = sc;
            bad[i] ^= 1;
            assert!(!c.verify(&client, &bad, ip, now), "byte {i}");
        }
        assert!(!c.verify(&client, &sc[..8], ip, now));
    }

    #[test]
    fn rotation_keeps_cookies_valid_across_a_rollover() {
        let c = Cookies::new(Some([9; 16]), Duration::from_secs(3600), false);
        let client = [9; 8];
        let ip: IpAddr = "2001:db8::1".parse().expect("ip");
        // Minted one second before a period boundary, checked after it.
        let before = 3600 * 1000 - 1;
        let sc = c.mint(&client, ip, before);
        assert!(c.verify(&client, &sc, ip, before + 600));
        // respond() derives the current secret once and agrees with
        // verify() and mint(), across the rollover too.
        let (valid, fresh) = c.respond(&client, &sc, ip, before + 600);
        assert!(valid);
        assert_eq!(fresh, c.mint(&client, ip, before + 600));
        assert!(c.respond(&client, &sc, ip, before).0);
        assert!(!c.respond(&client, &[], ip, before).0);
        let mut bad = sc;
        bad[15] ^= 1;
        assert!(!c.respond(&client, &bad, ip, before + 600).0);
        // The derived secrets of two periods differ.
        assert_ne!(c.secret(before), c.secret(before + 1));
    }

    #[test]
    fn secrets_parse_as_32_hex_digits() {
        assert!(parse_secret("00112233445566778899aabbccddeeff").is_some());
        assert!(parse_secret("0011").is_none());
        assert!(parse_secret("zz112233445566778899aabbccddeeff").is_none());
        assert!(parse_secret("é0112233445566778899aabbccddee").is_none());
    }
}
