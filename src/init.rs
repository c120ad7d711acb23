//! `meridian init DIR`: a starter configuration that `meridian check`
//! accepts and `meridian run` serves as it is, with the GeoIP database
//! compiled into the binary.
//!
//! The files are the repository's own examples (`meridian.toml` and
//! `zones/gslb.example.com.toml`), compiled in, so what `init` writes is
//! what the test suite loads.

use std::io::Write;
use std::path::{Path, PathBuf};

/// The starter server config: the repository's `meridian.toml`.
pub const SERVER_TOML: &str = include_str!("../meridian.toml");

/// The starter zone: the repository's `zones/gslb.example.com.toml`.
pub const ZONE_TOML: &str = include_str!("../zones/gslb.example.com.toml");

/// The files `init` writes, relative to its directory.
pub const FILES: [(&str, &str); 2] = [
    ("meridian.toml", SERVER_TOML),
    ("zones/gslb.example.com.toml", ZONE_TOML),
];

/// Why `init` wrote nothing (or, for a write error, not everything).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InitError {
    /// A file it would write exists already; nothing was written.
    #[error("{0}: already exists; init never overwrites (remove it or choose another directory)")]
    Exists(PathBuf),
    /// A directory or file could not be created.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Writes [`FILES`] under `dir` (created if missing) and returns their
/// paths. Checks every file first, so either all are written or, when one
/// exists, none; each is also created with `O_EXCL`, so a file that
/// appears in between is not overwritten either.
pub fn init(dir: &Path) -> Result<Vec<PathBuf>, InitError> {
    let paths: Vec<PathBuf> = FILES.iter().map(|(name, _)| dir.join(name)).collect();
    if let Some(p) = paths.iter().find(|p| p.symlink_metadata().is_ok()) {
        return Err(InitError::Exists(p.clone()));
    }
    for ((_, text), path) in FILES.iter().zip(&paths) {
        let io = |source| InitError::Io {
            path: path.clone(),
            source,
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|source| InitError::Io {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    InitError::Exists(path.clone())
                } else {
                    io(e)
                }
            })?;
        f.write_all(text.as_bytes()).map_err(io)?;
    }
    Ok(paths)
}
