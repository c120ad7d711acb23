//! Protocol options of `meridian.toml`: NSID (RFC 5001) and DNS cookies
//! (RFC 7873, RFC 9018).

use std::path::Path;
use std::time::Duration;

use super::ConfigError;
use super::raw::RawCookies;
use crate::dns::cookie::{Cookies, DEFAULT_ROTATE, parse_secret};

/// Longest NSID accepted, in bytes.
pub(super) const MAX_NSID: usize = 128;
/// Shortest and longest rotation period of the cookie secret.
const MIN_ROTATE: Duration = Duration::from_secs(3600);
const MAX_ROTATE: Duration = Duration::from_secs(30 * 24 * 3600);

/// `nsid`: printable ASCII, 1 to [`MAX_NSID`] characters.
pub(super) fn validate_nsid(
    file: &Path,
    nsid: Option<String>,
) -> Result<Option<Vec<u8>>, ConfigError> {
    let Some(text) = nsid else { return Ok(None) };
    if text.is_empty()
        || text.len() > MAX_NSID
        || !text.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
    {
        return Err(ConfigError::new(
            file,
            "nsid",
            format!("use 1 to {MAX_NSID} printable ASCII characters, such as \"fra-1\""),
        ));
    }
    Ok(Some(text.into_bytes()))
}

/// `[cookies]`: on by default, with a random secret unless one is given.
pub(super) fn validate_cookies(
    file: &Path,
    base: &Path,
    raw: RawCookies,
) -> Result<Option<Cookies>, ConfigError> {
    let secret_text = match (raw.secret, raw.secret_file) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::new(
                file,
                "cookies.secret_file",
                "set `secret` or `secret_file`, not both",
            ));
        }
        (Some(s), None) => Some(("cookies.secret", s)),
        (None, Some(f)) => {
            let path = base.join(&f);
            let text = std::fs::read_to_string(&path).map_err(|e| {
                ConfigError::new(
                    file,
                    "cookies.secret_file",
                    format!("{}: {e}", path.display()),
                )
            })?;
            Some(("cookies.secret_file", text))
        }
        (None, None) => None,
    };
    let master = match secret_text {
        Some((key, text)) => Some(parse_secret(&text).ok_or_else(|| {
            ConfigError::new(
                file,
                key,
                "the secret is 32 hexadecimal digits (128 bits), e.g. from `openssl rand -hex 16`",
            )
        })?),
        None => None,
    };
    let rotate = super::probe::duration(
        file,
        "cookies.rotate".into(),
        raw.rotate.as_deref(),
        DEFAULT_ROTATE,
        MIN_ROTATE,
        MAX_ROTATE,
    )?;
    if raw.enabled == Some(false) {
        return Ok(None);
    }
    Ok(Some(Cookies::new(
        master,
        rotate,
        raw.require.unwrap_or(false),
    )))
}
