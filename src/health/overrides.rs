//! Operator overrides (drain, force-up), persisted in a small JSON file so
//! they survive restarts and reloads.
//!
//! The file is rewritten atomically (write a temporary file, then rename)
//! on every change. Entries for zones or datacenters that no longer exist
//! are kept: they apply again if the datacenter comes back.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::Override;

/// `(zone origin, datacenter name)`.
pub type DcKey = (String, String);

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    version: u32,
    overrides: Vec<Entry>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    zone: String,
    datacenter: String,
    #[serde(rename = "override")]
    action: Override,
}

/// The overrides in force, backed by the state file.
#[derive(Debug)]
pub struct Overrides {
    path: PathBuf,
    map: BTreeMap<DcKey, Override>,
}

impl Overrides {
    /// Reads `path`; a missing file means no overrides.
    pub fn load(path: &Path) -> Result<Self, String> {
        let map = match std::fs::read_to_string(path) {
            Ok(text) => {
                let file: File = serde_json::from_str(&text)
                    .map_err(|e| format!("{}: not a Meridian state file: {e}", path.display()))?;
                file.overrides
                    .into_iter()
                    .map(|e| ((e.zone, e.datacenter), e.action))
                    .collect()
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(format!("{}: cannot read: {e}", path.display())),
        };
        Ok(Self {
            path: path.to_path_buf(),
            map,
        })
    }

    /// The override of a datacenter.
    pub fn get(&self, zone: &str, dc: &str) -> Option<Override> {
        self.map.get(&(zone.to_string(), dc.to_string())).copied()
    }

    /// Every override.
    pub fn all(&self) -> &BTreeMap<DcKey, Override> {
        &self.map
    }

    /// Sets or clears an override and saves the file. The change holds in
    /// memory even when saving fails; the error says it was not saved.
    pub fn set(&mut self, zone: &str, dc: &str, value: Option<Override>) -> Result<(), String> {
        let key = (zone.to_string(), dc.to_string());
        match value {
            Some(v) => self.map.insert(key, v),
            None => self.map.remove(&key),
        };
        self.save()
    }

    fn save(&self) -> Result<(), String> {
        let file = File {
            version: 1,
            overrides: self
                .map
                .iter()
                .map(|((zone, dc), action)| Entry {
                    zone: zone.clone(),
                    datacenter: dc.clone(),
                    action: *action,
                })
                .collect(),
        };
        let text = serde_json::to_string_pretty(&file).map_err(|e| e.to_string())?;
        let tmp = self.path.with_extension("json.tmp");
        // Write, sync, rename, sync the directory: after a crash the file
        // is either the old one or the new one, never empty.
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            let dir = self
                .path
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            std::fs::create_dir_all(dir)?;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.path)?;
            std::fs::File::open(dir)?.sync_all()
        };
        write().map_err(|e| format!("{}: cannot save overrides: {e}", self.path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let mut o = Overrides::load(&path).unwrap();
        assert!(o.all().is_empty());
        o.set("z.", "a", Some(Override::Drain)).unwrap();
        o.set("z.", "b", Some(Override::ForceUp)).unwrap();
        o.set("z.", "b", None).unwrap();
        let again = Overrides::load(&path).unwrap();
        assert_eq!(again.get("z.", "a"), Some(Override::Drain));
        assert_eq!(again.get("z.", "b"), None);
        std::fs::write(&path, "{ nonsense").unwrap();
        assert!(Overrides::load(&path).unwrap_err().contains("state.json"));
        // A file that cannot be written: the override holds in memory and
        // the error says it was not saved.
        let mut o = Overrides::load(&dir.path().join("missing-dir/x/state.json")).unwrap();
        std::fs::write(dir.path().join("missing-dir"), "a file, not a directory").unwrap();
        assert!(o.set("z.", "a", Some(Override::Drain)).is_err());
        assert_eq!(o.get("z.", "a"), Some(Override::Drain));
    }
}
