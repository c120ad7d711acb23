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
//!
//! Version 2 adds to each entry, optionally, where a cluster's shared
//! override came from (`[cluster]`: the file is then the local cache of
//! etcd's overrides): `by`, `at` and `instance`, all three or none, as
//! [`OverrideSource`] has them. So a start with etcd unreachable still
//! shows in `/status` who set each override, when and through which
//! instance.
//!
//! ```json
//! { "zone": "gslb.example.com.", "datacenter": "eu-west", "override": "drain",
//!   "by": "alice", "at": "2026-11-25T20:19:27.123Z", "instance": "ns2-iad" }
//! ```
//!
//! Why a new version rather than optional fields in version 1: releases
//! that read only version 1 refuse unknown fields, so they would refuse a
//! file with sources anyway, and "not a Meridian state file: unknown field
//! `by`" is a worse message than "state file version 2 is not supported
//! … written by another release". This release reads both, and writes
//! version 1 whenever no entry has a source: without `[cluster]` the file
//! stays exactly as older releases write it, so going back to one still
//! works. Only a cluster member's cache becomes version 2.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::Override;

/// `(zone origin, datacenter name)`.
pub type DcKey = (String, String);

/// The newest state-file version, which this build reads and writes
/// when an override has a source. It also reads and writes version
/// [`STATE_VERSION_PLAIN`].
pub const STATE_VERSION: u32 = 2;
/// The version without override sources: what this build writes when no
/// override has one, and all that older releases read.
pub const STATE_VERSION_PLAIN: u32 = 1;

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    version: u32,
    overrides: Vec<Entry>,
}

/// Who set a shared override (`[cluster]`), when, and through which
/// instance: in etcd, in `/status`, and in the state file (version 2).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverrideSource {
    /// The operator (the request's `by`, `X-Meridian-Operator`, or the
    /// client's address).
    pub by: String,
    /// When, RFC 3339 UTC.
    pub at: String,
    /// The instance whose API took the request.
    pub instance: String,
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
    /// Version 2: the source, all three fields or none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    instance: Option<String>,
}

/// What a state file holds: the overrides, and where the shared ones came
/// from (version 2; a datacenter without a source is not in `sources`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stored {
    /// The override of each datacenter.
    pub overrides: BTreeMap<DcKey, Override>,
    /// The source of each shared override.
    pub sources: BTreeMap<DcKey, OverrideSource>,
}

/// Why state-file text was refused (without the file name: [`Overrides::load`]
/// adds it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// Not JSON, or not the layout of a state file.
    Syntax(String),
    /// A `"version"` this build does not read, or none.
    Version(String),
    /// An entry with some of `by`, `at`, `instance` but not all, or with
    /// any of them in a version 1 file.
    Source {
        /// The entry's position in `overrides`, from 0.
        entry: usize,
    },
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
                "state file version {found} is not supported (this Meridian reads versions \
                 {STATE_VERSION_PLAIN} and {STATE_VERSION}); it was written by another release: \
                 move it aside to start without overrides"
            ),
            Self::Source { entry } => write!(
                f,
                "overrides[{entry}]: \"by\", \"at\" and \"instance\" go together, and only \
                 in version {STATE_VERSION}; delete them to keep the override without its source"
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
pub fn parse(text: &str) -> Result<Stored, ParseError> {
    let head: VersionOnly =
        serde_json::from_str(text).map_err(|e| ParseError::Syntax(e.to_string()))?;
    let known = [STATE_VERSION_PLAIN, STATE_VERSION].map(u64::from);
    let version = match &head.version {
        Some(serde_json::Value::Number(n)) => n.as_u64().filter(|v| known.contains(v)),
        _ => None,
    };
    let Some(version) = version else {
        let found = head
            .version
            .map_or("(missing)".to_string(), |v| v.to_string());
        return Err(ParseError::Version(found));
    };
    let file: File = serde_json::from_str(text).map_err(|e| ParseError::Syntax(e.to_string()))?;
    let mut stored = Stored::default();
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
        match (e.by, e.at, e.instance) {
            (None, None, None) => {}
            (Some(by), Some(at), Some(instance)) if version == u64::from(STATE_VERSION) => {
                let source = OverrideSource { by, at, instance };
                stored.sources.insert(key.clone(), source);
            }
            _ => return Err(ParseError::Source { entry: i }),
        }
        stored.overrides.insert(key, e.action);
    }
    Ok(stored)
}

/// The text [`Overrides`] saves: what [`parse`] reads back. Version 1
/// when no override has a source, else version 2 (see the module docs).
pub fn render(stored: &Stored) -> String {
    let file = File {
        version: if stored.sources.is_empty() {
            STATE_VERSION_PLAIN
        } else {
            STATE_VERSION
        },
        overrides: stored
            .overrides
            .iter()
            .map(|(key, action)| {
                let source = stored.sources.get(key);
                Entry {
                    zone: key.0.clone(),
                    datacenter: key.1.clone(),
                    action: *action,
                    by: source.map(|s| s.by.clone()),
                    at: source.map(|s| s.at.clone()),
                    instance: source.map(|s| s.instance.clone()),
                }
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
    stored: Stored,
}

impl Overrides {
    /// Reads `path`; a missing file means no overrides. First removes
    /// temporary files a crash left behind: this release's
    /// (`.<name>.XXXXXX.tmp`) and the one older releases wrote through
    /// (`<stem>.json.tmp`, also left by a full disk).
    pub fn load(path: &Path) -> Result<Self, String> {
        // Also the fixed-name temporary older versions wrote.
        crate::persist::remove_stale_temporaries(path, &[path.with_extension("json.tmp")]);
        let stored = match std::fs::read_to_string(path) {
            Ok(text) => parse(&text).map_err(|e| format!("{}: {e}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Stored::default(),
            Err(e) => return Err(format!("{}: cannot read: {e}", path.display())),
        };
        Ok(Self {
            path: path.to_path_buf(),
            stored,
        })
    }

    /// The override of a datacenter.
    pub fn get(&self, zone: &str, dc: &str) -> Option<Override> {
        let key = (zone.to_string(), dc.to_string());
        self.stored.overrides.get(&key).copied()
    }

    /// Who set a datacenter's shared override (`[cluster]`), when and
    /// through which instance; `None` alone, or for an override set
    /// without `[cluster]`.
    pub fn source(&self, zone: &str, dc: &str) -> Option<&OverrideSource> {
        let key = (zone.to_string(), dc.to_string());
        self.stored.sources.get(&key)
    }

    /// Every override.
    pub fn all(&self) -> &BTreeMap<DcKey, Override> {
        &self.stored.overrides
    }

    /// Every override with its source, as saved.
    pub fn stored(&self) -> &Stored {
        &self.stored
    }

    /// Sets or clears an override (set here, alone: it has no source) and
    /// saves the file. The change holds in memory even when saving fails;
    /// the error says it was not saved.
    pub fn set(&mut self, zone: &str, dc: &str, value: Option<Override>) -> Result<(), String> {
        let key = (zone.to_string(), dc.to_string());
        self.stored.sources.remove(&key);
        match value {
            Some(v) => self.stored.overrides.insert(key, v),
            None => self.stored.overrides.remove(&key),
        };
        self.save()
    }

    /// Replaces every override with `stored` (the cluster's shared ones
    /// and their sources, `[cluster]`): the state file is then the local
    /// cache read at start-up when etcd cannot be reached. Saves only on
    /// a change; returns whether the overrides themselves changed (a new
    /// source alone changes no answer). Like [`Self::set`], the change
    /// holds in memory even when saving fails.
    pub fn replace(&mut self, stored: Stored) -> (bool, Result<(), String>) {
        if stored == self.stored {
            return (false, Ok(()));
        }
        let changed = stored.overrides != self.stored.overrides;
        self.stored = stored;
        (changed, self.save())
    }

    fn save(&self) -> Result<(), String> {
        let text = render(&self.stored);
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
            stored: Stored::default(),
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
        std::fs::write(&path, r#"{"version": 3, "overrides": [], "new": true}"#).unwrap();
        let err = Overrides::load(&path).unwrap_err();
        assert!(err.contains("state.json"), "{err}");
        assert!(err.contains("version 3"), "{err}");
        assert!(err.contains("reads versions 1 and 2"), "{err}");
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
        assert_eq!(parse(two_zones).unwrap().overrides.len(), 2);
    }

    #[test]
    fn replace_saves_only_a_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let mut o = Overrides::load(&path).unwrap();
        let key = ("z.".to_string(), "a".to_string());
        let mut stored = Stored::default();
        stored.overrides.insert(key.clone(), Override::Drain);
        assert_eq!(o.replace(stored.clone()), (true, Ok(())));
        assert_eq!(Overrides::load(&path).unwrap().stored(), &stored);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(o.replace(stored.clone()), (false, Ok(())));
        assert!(!path.exists(), "nothing changed: nothing written");
        // A source alone changes no answer, but is saved.
        stored.sources.insert(key, source("alice"));
        assert_eq!(o.replace(stored.clone()), (false, Ok(())));
        assert_eq!(Overrides::load(&path).unwrap().stored(), &stored);
        assert_eq!(o.replace(Stored::default()), (true, Ok(())));
        assert!(Overrides::load(&path).unwrap().all().is_empty());
    }

    fn source(by: &str) -> OverrideSource {
        OverrideSource {
            by: by.to_string(),
            at: "2026-11-25T20:19:27.123Z".to_string(),
            instance: "ns2-iad".to_string(),
        }
    }

    #[test]
    fn render_is_what_parse_reads() {
        let mut stored = Stored::default();
        let odd = ("z.".to_string(), "a\"\n".to_string());
        stored.overrides.insert(odd.clone(), Override::Drain);
        stored
            .overrides
            .insert(("é.".to_string(), String::new()), Override::ForceUp);
        assert_eq!(parse(&render(&stored)).unwrap(), stored);
        stored.sources.insert(odd, source("bob \"the\" operator"));
        assert_eq!(parse(&render(&stored)).unwrap(), stored);
    }

    /// Without sources the file is version 1, as older releases write and
    /// read it; a version 1 file from them reads as before.
    #[test]
    fn version_1_without_sources_both_ways() {
        let old = r#"{
  "version": 1,
  "overrides": [
    {
      "zone": "z.",
      "datacenter": "a",
      "override": "drain"
    }
  ]
}"#;
        let stored = parse(old).unwrap();
        assert_eq!(stored.overrides.len(), 1);
        assert!(stored.sources.is_empty());
        assert_eq!(
            render(&stored),
            old,
            "byte for byte what older releases wrote"
        );
    }

    #[test]
    fn version_2_keeps_sources() {
        let mut stored = Stored::default();
        let (a, b) = (
            ("z.".to_string(), "a".to_string()),
            ("z.".to_string(), "b".to_string()),
        );
        stored.overrides.insert(a.clone(), Override::Drain);
        stored.overrides.insert(b.clone(), Override::ForceUp);
        stored.sources.insert(a.clone(), source("alice"));
        let text = render(&stored);
        assert!(text.contains("\"version\": 2"), "{text}");
        assert!(text.contains("\"by\": \"alice\"") && text.contains("\"instance\": \"ns2-iad\""));
        let back = parse(&text).unwrap();
        assert_eq!(back.sources.get(&a), Some(&source("alice")));
        assert_eq!(back.sources.get(&b), None, "an entry without a source");
        // Through Overrides: saved, loaded, shown.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let mut o = Overrides::load(&path).unwrap();
        let _ = o.replace(stored);
        let again = Overrides::load(&path).unwrap();
        assert_eq!(again.source("z.", "a"), Some(&source("alice")));
        // A local set has no source: the file goes back to version 1.
        let mut again = again;
        again.set("z.", "a", Some(Override::Drain)).unwrap();
        assert_eq!(again.source("z.", "a"), None);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"version\": 1"), "{text}");
    }

    #[test]
    fn partial_or_misplaced_sources_are_refused() {
        let partial = r#"{"version": 2, "overrides": [
            {"zone": "z.", "datacenter": "a", "override": "drain", "by": "alice", "at": "x", "instance": "i"},
            {"zone": "z.", "datacenter": "b", "override": "drain", "by": "alice"}
        ]}"#;
        assert_eq!(parse(partial), Err(ParseError::Source { entry: 1 }));
        let in_v1 = r#"{"version": 1, "overrides": [
            {"zone": "z.", "datacenter": "a", "override": "drain", "by": "alice", "at": "x", "instance": "i"}
        ]}"#;
        let err = parse(in_v1).unwrap_err();
        assert_eq!(err, ParseError::Source { entry: 0 });
        assert!(err.to_string().contains("overrides[0]"), "{err}");
    }
}
