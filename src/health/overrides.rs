//! Operator overrides (drain, force-up), persisted in a small JSON file so
//! they survive restarts and reloads.
//!
//! The file is rewritten atomically on every change: the new text goes to
//! a fresh temporary file in the same directory, created with `O_EXCL`
//! under a random name (so nothing planted there in advance, such as a
//! symlink, is followed), synced, then renamed over the state file. A
//! failed save removes its temporary file. Entries for zones or
//! datacenters that no longer exist are kept: they apply again if the
//! datacenter comes back.
//!
//! The format, version 1:
//!
//! ```json
//! {
//!   "version": 1,
//!   "overrides": [
//!     { "zone": "gslb.example.com.", "datacenter": "eu-west", "override": "drain" }
//!   ]
//! }
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::Override;

/// `(zone origin, datacenter name)`.
pub type DcKey = (String, String);

/// The only state-file version this build reads and writes.
pub const STATE_VERSION: u32 = 1;

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    version: u32,
    overrides: Vec<Entry>,
}

/// Read first, alone, so a file of another version is refused for its
/// version rather than for whatever else changed in its layout.
#[derive(Deserialize)]
struct VersionOnly {
    version: Option<serde_json::Value>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    zone: String,
    datacenter: String,
    #[serde(rename = "override")]
    action: Override,
}

/// Why state-file text was refused (without the file name: [`Overrides::load`]
/// adds it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// Not JSON, or not the layout of a state file.
    Syntax(String),
    /// A `"version"` other than [`STATE_VERSION`], or none.
    Version(String),
    /// Two entries for one datacenter.
    Duplicate {
        /// Zone origin.
        zone: String,
        /// Datacenter name.
        datacenter: String,
        /// The two entries' positions in `overrides`, from 0.
        entries: (usize, usize),
    },
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Syntax(e) => write!(f, "not a Meridian state file: {e}"),
            Self::Version(found) => write!(
                f,
                "state file version {found} is not supported (this Meridian reads version \
                 {STATE_VERSION}); it was written by another release: move it aside to start \
                 without overrides"
            ),
            Self::Duplicate {
                zone,
                datacenter,
                entries: (a, b),
            } => write!(
                f,
                "datacenter {datacenter:?} of zone {zone:?} has two entries (overrides[{a}] and \
                 overrides[{b}]); delete the one that is wrong, or the file to clear every \
                 override"
            ),
        }
    }
}

impl std::error::Error for ParseError {}

/// Parses state-file text into the overrides it holds.
///
/// Duplicates are refused rather than resolved. Meridian writes the file
/// from a map, so two entries for one datacenter mean a hand edit or a
/// damaged file. Which one the operator meant is unknowable, and the two
/// can disagree (`drain` and `force-up`): picking one silently could put
/// traffic on a datacenter someone is draining. The error names the zone,
/// the datacenter and both entries, so the fix is a one-line edit.
pub fn parse(text: &str) -> Result<BTreeMap<DcKey, Override>, ParseError> {
    let head: VersionOnly =
        serde_json::from_str(text).map_err(|e| ParseError::Syntax(e.to_string()))?;
    match head.version {
        Some(serde_json::Value::Number(n)) if n.as_u64() == Some(u64::from(STATE_VERSION)) => {}
        Some(other) => return Err(ParseError::Version(other.to_string())),
        None => return Err(ParseError::Version("(missing)".to_string())),
    }
    let file: File = serde_json::from_str(text).map_err(|e| ParseError::Syntax(e.to_string()))?;
    let mut map = BTreeMap::new();
    let mut first_at: BTreeMap<DcKey, usize> = BTreeMap::new();
    for (i, e) in file.overrides.into_iter().enumerate() {
        let key = (e.zone, e.datacenter);
        if let Some(&first) = first_at.get(&key) {
            return Err(ParseError::Duplicate {
                zone: key.0,
                datacenter: key.1,
                entries: (first, i),
            });
        }
        first_at.insert(key.clone(), i);
        map.insert(key, e.action);
    }
    Ok(map)
}

/// The text [`Overrides`] saves for `map`: what [`parse`] reads back.
pub fn render(map: &BTreeMap<DcKey, Override>) -> String {
    let file = File {
        version: STATE_VERSION,
        overrides: map
            .iter()
            .map(|((zone, dc), action)| Entry {
                zone: zone.clone(),
                datacenter: dc.clone(),
                action: *action,
            })
            .collect(),
    };
    // Strings, a number and unit variants: serialising cannot fail.
    serde_json::to_string_pretty(&file).unwrap_or_default()
}

/// The overrides in force, backed by the state file.
#[derive(Debug)]
pub struct Overrides {
    path: PathBuf,
    map: BTreeMap<DcKey, Override>,
}

impl Overrides {
    /// Reads `path`; a missing file means no overrides. First removes
    /// temporary files a crash left behind: this release's
    /// (`.<name>.XXXXXX.tmp`) and the one older releases wrote through
    /// (`<stem>.json.tmp`, also left by a full disk).
    pub fn load(path: &Path) -> Result<Self, String> {
        // Also the fixed-name temporary older versions wrote.
        crate::persist::remove_stale_temporaries(path, &[path.with_extension("json.tmp")]);
        let map = match std::fs::read_to_string(path) {
            Ok(text) => parse(&text).map_err(|e| format!("{}: {e}", path.display()))?,
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

    /// Replaces every override with `map` (the cluster's shared ones,
    /// `[cluster]`): the state file is then the local cache read at
    /// start-up when etcd cannot be reached. Saves only on a change;
    /// returns whether anything changed. Like [`Self::set`], the change
    /// holds in memory even when saving fails.
    pub fn replace(&mut self, map: BTreeMap<DcKey, Override>) -> (bool, Result<(), String>) {
        if map == self.map {
            return (false, Ok(()));
        }
        self.map = map;
        (true, self.save())
    }

    fn save(&self) -> Result<(), String> {
        let text = render(&self.map);
        // Write a fresh temporary file, sync, rename, sync the directory:
        // after a crash the file is either the old one or the new one,
        // never empty. `tempfile` opens it with O_CREAT|O_EXCL under a
        // random name, so a symlink or file planted in the directory is
        // never followed or reused, and deletes it if any step fails.
        let write = || {
            crate::persist::save(&self.path, world_readable(), |f| {
                use std::io::Write;
                f.write_all(text.as_bytes())
            })
        };
        write().map_err(|e| format!("{}: cannot save overrides: {e}", self.path.display()))
    }
}

/// Mode 0644 before the umask, as the file had when it was created
/// directly (tempfile's default is 0600).
fn world_readable() -> std::fs::Permissions {
    use std::os::unix::fs::PermissionsExt;
    std::fs::Permissions::from_mode(0o644)
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

    /// Older releases wrote through `state.json.tmp`, following a symlink
    /// planted there: its target was overwritten with the state.
    #[test]
    fn a_symlink_at_the_old_temporary_path_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let mut o = Overrides::load(&path).unwrap();
        // Planted after load (which clears a stale one), before the save.
        std::os::unix::fs::symlink(&victim, dir.path().join("state.json.tmp")).unwrap();
        o.set("z.", "a", Some(Override::Drain)).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert_eq!(
            Overrides::load(&path).unwrap().get("z.", "a"),
            Some(Override::Drain)
        );
        // load removed the link, not the victim.
        assert!(
            std::fs::symlink_metadata(dir.path().join("state.json.tmp")).is_err(),
            "the stale link is removed at load"
        );
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    }

    #[test]
    fn stale_temporary_files_are_removed_at_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meridian-state.json");
        let legacy = dir.path().join("meridian-state.json.tmp");
        let crashed = dir.path().join(".meridian-state.json.a1B2c3.tmp");
        let other = dir.path().join(".other-state.json.a1B2c3.tmp");
        for f in [&legacy, &crashed, &other] {
            std::fs::write(f, "{\"version\": 1, \"overr").unwrap();
        }
        Overrides::load(&path).unwrap();
        assert!(!legacy.exists());
        assert!(!crashed.exists());
        assert!(
            other.exists(),
            "another state file's temporary is left alone"
        );
    }

    #[test]
    fn a_failed_save_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        // The rename fails: the state file's path is a non-empty directory.
        let path = dir.path().join("state.json");
        std::fs::create_dir(&path).unwrap();
        std::fs::write(path.join("keep"), "").unwrap();
        // (load refuses a directory: build the value directly.)
        let mut o = Overrides {
            path: path.clone(),
            map: BTreeMap::new(),
        };
        let err = o.set("z.", "a", Some(Override::Drain)).unwrap_err();
        assert!(
            err.contains("state.json") && err.contains("cannot save"),
            "{err}"
        );
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left, ["state.json"], "only the directory itself is left");
    }

    #[test]
    fn another_version_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        std::fs::write(&path, r#"{"version": 2, "overrides": [], "new": true}"#).unwrap();
        let err = Overrides::load(&path).unwrap_err();
        assert!(err.contains("state.json"), "{err}");
        assert!(err.contains("version 2"), "{err}");
        assert!(err.contains("reads version 1"), "{err}");
        let missing = parse(r#"{"overrides": []}"#).unwrap_err();
        assert_eq!(missing, ParseError::Version("(missing)".into()));
        assert!(matches!(
            parse(r#"{"version": "1", "overrides": []}"#),
            Err(ParseError::Version(_))
        ));
    }

    #[test]
    fn duplicate_entries_are_refused_with_zone_and_datacenter() {
        let text = r#"{"version": 1, "overrides": [
            {"zone": "z.", "datacenter": "a", "override": "drain"},
            {"zone": "z.", "datacenter": "b", "override": "drain"},
            {"zone": "z.", "datacenter": "a", "override": "force-up"}
        ]}"#;
        let err = parse(text).unwrap_err();
        assert_eq!(
            err,
            ParseError::Duplicate {
                zone: "z.".into(),
                datacenter: "a".into(),
                entries: (0, 2)
            }
        );
        let shown = err.to_string();
        assert!(shown.contains("\"a\"") && shown.contains("\"z.\"") && shown.contains("delete"));
        // The same name in two zones is two datacenters.
        let two_zones = r#"{"version": 1, "overrides": [
            {"zone": "y.", "datacenter": "a", "override": "drain"},
            {"zone": "z.", "datacenter": "a", "override": "drain"}
        ]}"#;
        assert_eq!(parse(two_zones).unwrap().len(), 2);
    }

    #[test]
    fn replace_saves_only_a_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let mut o = Overrides::load(&path).unwrap();
        let mut map = BTreeMap::new();
        map.insert(("z.".to_string(), "a".to_string()), Override::Drain);
        assert_eq!(o.replace(map.clone()), (true, Ok(())));
        assert_eq!(Overrides::load(&path).unwrap().all(), &map);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(o.replace(map), (false, Ok(())));
        assert!(!path.exists(), "nothing changed: nothing written");
        assert_eq!(o.replace(BTreeMap::new()), (true, Ok(())));
        assert!(Overrides::load(&path).unwrap().all().is_empty());
    }

    #[test]
    fn render_is_what_parse_reads() {
        let mut map = BTreeMap::new();
        map.insert(("z.".to_string(), "a\"\n".to_string()), Override::Drain);
        map.insert(("é.".to_string(), String::new()), Override::ForceUp);
        assert_eq!(parse(&render(&map)).unwrap(), map);
    }
}
