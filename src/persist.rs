//! Atomic saves of the state files (operator overrides, latency
//! aggregates): written to a temporary file beside the target, synced,
//! renamed over it, and the directory synced, so after a crash the file is
//! either the old one or the new one, never empty or half written.
//!
//! `tempfile` opens the temporary with O_CREAT|O_EXCL under a random name,
//! so a symlink or file planted in the directory is never followed or
//! reused, and deletes it if any step fails. Temporaries are named
//! `.NAME.<random>.tmp` after the target, so cleaning up after a crash
//! ([`remove_stale_temporaries`]) never touches another file's.

use std::fs::{File, Permissions};
use std::io;
use std::path::{Path, PathBuf};

/// The directory holding `path` (`.` for a bare file name).
fn directory(path: &Path) -> &Path {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// `.meridian-state.json.` for `meridian-state.json`.
fn temporary_prefix(path: &Path) -> String {
    let name = path.file_name().map(|n| n.to_string_lossy());
    format!(".{}.", name.as_deref().unwrap_or("state"))
}

/// Replaces `path` with what `write` writes, atomically (see the module
/// docs), creating the directory if needed. The file gets `permissions`
/// (before the umask).
pub(crate) fn save(
    path: &Path,
    permissions: Permissions,
    write: impl FnOnce(&mut File) -> io::Result<()>,
) -> io::Result<()> {
    let dir = directory(path);
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(&temporary_prefix(path))
        .suffix(".tmp")
        .permissions(permissions)
        .tempfile_in(dir)?;
    write(tmp.as_file_mut())?;
    tmp.as_file().sync_all()?;
    // On failure the error carries the file, whose drop deletes it.
    tmp.persist(path).map_err(|e| e.error)?;
    File::open(dir)?.sync_all()
}

/// Removes the temporaries of `path` that an interrupted save left, and
/// the files in `also`; logs each. `remove_file` on a symlink removes the
/// link, never its target.
pub(crate) fn remove_stale_temporaries(path: &Path, also: &[PathBuf]) {
    let prefix = temporary_prefix(path);
    let mut stale = also.to_vec();
    if let Ok(entries) = std::fs::read_dir(directory(path)) {
        stale.extend(entries.filter_map(Result::ok).filter_map(|e| {
            let name = e.file_name();
            let name = name.to_str()?;
            let ours = name.starts_with(&prefix) && name.ends_with(".tmp");
            let file = e.file_type().is_ok_and(|t| !t.is_dir());
            (ours && file).then(|| e.path())
        }));
    }
    for tmp in stale {
        match std::fs::remove_file(&tmp) {
            Ok(()) => {
                tracing::info!(path = %tmp.display(), "removed a stale temporary state file");
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(
                path = %tmp.display(),
                error = %e,
                "cannot remove a stale temporary state file"
            ),
        }
    }
}
