//! Static records: from `[records]` and from `records_file`, checked
//! together in time linear in the number of records.
//!
//! Every record remembers where it came from ([`Loc`]), so that an error
//! names the TOML key (`records.www[1]`) or the zone file and line
//! (`static.zone: line 12`). Records of one owner are chained in a list
//! (`next`) and looked up through one hash map, so the checks that relate
//! records (CNAME exclusivity, RRsets, delegations, CNAME loops, glue,
//! services against static names) cost a hash lookup each, not a scan.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use super::ConfigError;
use super::validate::key_part;
use crate::dns::records::{DomainName, StaticRecord};

/// Where one record came from.
#[derive(Clone, Copy, Debug)]
pub(super) enum Loc {
    /// `[records]` list `list` (an index into `toml_keys`), item `item`.
    Toml { list: u32, item: u32 },
    /// `records_file`, line `line` (1-based).
    File { line: u32 },
}

const NONE: u32 = u32::MAX;

/// The records of one owner name.
struct Group {
    /// First and last record (indices into `records`), chained by `next`.
    head: u32,
    tail: u32,
    /// First CNAME, NS, and address record, if any.
    cname: u32,
    ns: u32,
    address: u32,
    /// First record that keeps a service off this name (CNAME, A/AAAA, NS).
    conflict: u32,
    /// Where the name was first given.
    loc: Loc,
}

/// Static records being collected and checked.
pub(super) struct Records {
    toml: PathBuf,
    zone_file: Option<PathBuf>,
    origin: DomainName,
    pub(super) records: Vec<StaticRecord>,
    locs: Vec<Loc>,
    next: Vec<u32>,
    groups: Vec<Group>,
    by_owner: HashMap<DomainName, u32>,
    /// `records.<owner>` for each TOML list.
    toml_keys: Vec<String>,
    any_cut: bool,
}

impl Records {
    pub(super) fn new(toml: &Path, origin: &DomainName) -> Self {
        Self {
            toml: toml.to_path_buf(),
            zone_file: None,
            origin: origin.clone(),
            records: Vec::new(),
            locs: Vec::new(),
            next: Vec::new(),
            groups: Vec::new(),
            by_owner: HashMap::new(),
            toml_keys: Vec::new(),
            any_cut: false,
        }
    }

    pub(super) fn set_zone_file(&mut self, path: &Path) {
        self.zone_file = Some(path.to_path_buf());
    }

    pub(super) fn reserve(&mut self, n: usize) {
        self.records.reserve(n);
        self.locs.reserve(n);
        self.next.reserve(n);
    }

    /// Registers a TOML list key and returns its number.
    pub(super) fn toml_list(&mut self, okey: String) -> u32 {
        self.toml_keys.push(okey);
        (self.toml_keys.len() - 1) as u32
    }

    /// The file and key naming `loc`; `item` selects `records.x[i]` over
    /// `records.x` for TOML records.
    pub(super) fn place(&self, loc: Loc, item: bool) -> (PathBuf, String) {
        match loc {
            Loc::Toml { list, item: i } => {
                let okey = self
                    .toml_keys
                    .get(list as usize)
                    .map_or("records", String::as_str);
                let key = if item {
                    format!("{okey}[{i}]")
                } else {
                    okey.to_string()
                };
                (self.toml.clone(), key)
            }
            Loc::File { line } => (
                self.zone_file.clone().unwrap_or_else(|| self.toml.clone()),
                format!("line {line}"),
            ),
        }
    }

    /// How another message refers to `loc`.
    fn describe(&self, loc: Loc, item: bool) -> String {
        let (file, key) = self.place(loc, item);
        match loc {
            Loc::Toml { .. } if file == self.toml => key,
            Loc::Toml { .. } => format!("{key} in {}", file.display()),
            Loc::File { .. } => format!("{} {key}", file.display()),
        }
    }

    /// `loc` with its file always named.
    fn describe_in_file(&self, loc: Loc) -> String {
        let (file, key) = self.place(loc, false);
        match loc {
            Loc::Toml { .. } => format!("{key} in {}", file.display()),
            Loc::File { .. } => format!("{} {key}", file.display()),
        }
    }

    pub(super) fn error(&self, loc: Loc, item: bool, reason: impl Into<String>) -> ConfigError {
        let (file, key) = self.place(loc, item);
        ConfigError::new(&file, key, reason)
    }

    /// The group of `owner`, creating it at `loc`. TOML lists may not
    /// share a name, nor may a TOML list and the records file; lines of
    /// the records file may.
    pub(super) fn group_for(&mut self, owner: &DomainName, loc: Loc) -> Result<u32, ConfigError> {
        if let Some(&g) = self.by_owner.get(owner) {
            let prev = self.groups[g as usize].loc;
            return match (prev, loc) {
                (Loc::File { .. }, Loc::File { .. }) => Ok(g),
                (Loc::Toml { .. }, Loc::Toml { .. }) => Err(self.error(
                    loc,
                    false,
                    format!(
                        "same name as {}; put all records of a name in one list",
                        self.describe(prev, false)
                    ),
                )),
                _ => Err(self.error(
                    loc,
                    false,
                    format!(
                        "{owner} is also given at {}; give a name's records in [records] or in \
                         records_file, not both",
                        self.describe_in_file(prev)
                    ),
                )),
            };
        }
        let g = self.groups.len() as u32;
        self.groups.push(Group {
            head: NONE,
            tail: NONE,
            cname: NONE,
            ns: NONE,
            address: NONE,
            conflict: NONE,
            loc,
        });
        self.by_owner.insert(owner.clone(), g);
        Ok(g)
    }

    /// Appends a record to group `g`.
    pub(super) fn push(&mut self, g: u32, record: StaticRecord, loc: Loc) {
        let i = self.records.len() as u32;
        let group = &mut self.groups[g as usize];
        if record.is_cname() && group.cname == NONE {
            group.cname = i;
        }
        if record.is_ns() && group.ns == NONE {
            group.ns = i;
            self.any_cut = true;
        }
        if record.is_address() && group.address == NONE {
            group.address = i;
        }
        if (record.is_cname() || record.is_address() || record.is_ns()) && group.conflict == NONE {
            group.conflict = i;
        }
        if group.tail == NONE {
            group.head = i;
        } else {
            self.next[group.tail as usize] = i;
        }
        group.tail = i;
        self.records.push(record);
        self.locs.push(loc);
        self.next.push(NONE);
    }

    fn members(&self, g: u32) -> impl Iterator<Item = u32> + '_ {
        let mut at = self.groups[g as usize].head;
        std::iter::from_fn(move || {
            (at != NONE).then(|| {
                let i = at;
                at = self.next[i as usize];
                i
            })
        })
    }

    /// The per-name rules for group `g`: CNAME alone and not at the apex,
    /// one TTL and no duplicates per RRset (RFC 2181 §5).
    pub(super) fn check_group(&self, g: u32) -> Result<(), ConfigError> {
        let group = &self.groups[g as usize];
        if group.cname != NONE {
            let owner = self.records[group.cname as usize].owner();
            let other = self.members(g).find(|&i| i != group.cname);
            if let Some(other) = other {
                let at = match group.loc {
                    Loc::Toml { .. } => group.loc,
                    Loc::File { .. } => self.locs[group.cname.max(other) as usize],
                };
                return Err(self.error(
                    at,
                    false,
                    "a CNAME cannot coexist with other records at the same name (RFC 1034 §3.6.2)",
                ));
            }
            if *owner == self.origin {
                return Err(self.error(
                    self.locs[group.cname as usize],
                    false,
                    "a CNAME cannot sit at the zone apex (it would hide SOA and NS)",
                ));
            }
        }
        if group.ns != NONE {
            let owner = self.records[group.ns as usize].owner();
            if owner.is_wildcard() {
                return Err(self.error(
                    self.locs[group.ns as usize],
                    false,
                    "a wildcard cannot own NS records (RFC 4592 §4.2): delegate the names explicitly",
                ));
            }
        }
        self.check_rrsets(g)
    }

    /// RFC 2181 §5: an RRset has no duplicate records and one TTL. Each
    /// record is compared with the first of its type (all earlier ones
    /// share that TTL, or an error was raised), and looked up among the
    /// earlier data of its type.
    fn check_rrsets(&self, g: u32) -> Result<(), ConfigError> {
        let mut first_of_type: Vec<(u16, u32)> = Vec::new();
        let mut seen_at: HashMap<(u16, String), u32> = HashMap::new();
        let many = self.members(g).nth(8).is_some();
        for i in self.members(g) {
            let r = &self.records[i as usize];
            let code = r.type_code();
            let Some(&(_, j)) = first_of_type.iter().find(|(c, _)| *c == code) else {
                first_of_type.push((code, i));
                if many {
                    seen_at.insert((code, r.value_text()), i);
                }
                continue;
            };
            let first = &self.records[j as usize];
            let dup = if r.same_data(first) {
                Some(j)
            } else if r.ttl() != first.ttl() {
                return Err(self.error(
                    self.locs[i as usize],
                    true,
                    format!(
                        "TTL {} differs from {} ({}); records of one type at one \
                         name form an RRset and share a TTL (RFC 2181 §5.2)",
                        r.ttl(),
                        self.describe(self.locs[j as usize], true),
                        first.ttl()
                    ),
                ));
            } else if many {
                let key = (code, r.value_text());
                match seen_at.get(&key) {
                    Some(&k) if self.records[k as usize].same_data(r) => Some(k),
                    Some(_) => None,
                    None => {
                        seen_at.insert(key, i);
                        None
                    }
                }
            } else {
                self.members(g).take_while(|&k| k != i).find(|&k| {
                    self.records[k as usize].type_code() == code
                        && self.records[k as usize].same_data(r)
                })
            };
            if let Some(k) = dup {
                return Err(self.error(
                    self.locs[i as usize],
                    true,
                    format!("duplicates {}", self.describe(self.locs[k as usize], true)),
                ));
            }
        }
        Ok(())
    }

    /// Checks every group (for the records file, after all its lines).
    pub(super) fn check_groups_from(&self, first_group: usize) -> Result<(), ConfigError> {
        (first_group..self.groups.len()).try_for_each(|g| self.check_group(g as u32))
    }

    pub(super) fn group_count(&self) -> usize {
        self.groups.len()
    }

    /// The nearest enclosing delegation of `name` (at `name` itself too
    /// when `inclusive`), as the first NS record of the cut. Of several,
    /// the one given first, as the old linear scan found it.
    fn cut_above(&self, name: &DomainName, inclusive: bool) -> Option<u32> {
        if !self.any_cut {
            return None;
        }
        let mut best: Option<u32> = None;
        let mut at = if inclusive {
            name.clone()
        } else {
            name.base_name()
        };
        while self.origin.zone_of(&at) && at != self.origin {
            if let Some(&g) = self.by_owner.get(&at) {
                let ns = self.groups[g as usize].ns;
                if ns != NONE && best.is_none_or(|b| ns < b) {
                    best = Some(ns);
                }
            }
            at = at.base_name();
        }
        best
    }

    /// Delegations hide everything below them; at a cut only NS, DS and
    /// glue belong.
    pub(super) fn check_delegations(&self) -> Result<(), ConfigError> {
        if !self.any_cut {
            return Ok(());
        }
        for (i, r) in self.records.iter().enumerate() {
            let owner = r.owner();
            if !r.is_address()
                && let Some(cut) = self.cut_above(owner, false)
            {
                return Err(self.error(
                    self.locs[i],
                    false,
                    format!(
                        "below the delegation at {}; only glue (A/AAAA) may be here",
                        self.records[cut as usize].owner()
                    ),
                ));
            }
            let at_cut = self
                .by_owner
                .get(owner)
                .is_some_and(|&g| self.groups[g as usize].ns != NONE);
            if at_cut && !r.is_ns() && !r.is_address() && !r.is_ds() {
                return Err(self.error(
                    self.locs[i],
                    false,
                    format!(
                        "{} at a delegation point; only NS, DS and glue belong here",
                        r.type_name()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// In-zone CNAME chains must end: a loop would be served as a chain of
    /// repeated records until the length cap. Each name is walked once:
    /// chains known to end are remembered.
    pub(super) fn check_cname_cycles(&self) -> Result<(), ConfigError> {
        let target_of = |name: &DomainName| {
            let g = *self.by_owner.get(name)?;
            let c = self.groups[g as usize].cname;
            (c != NONE)
                .then(|| self.records[c as usize].cname_target())
                .flatten()
        };
        let mut ends: HashSet<&DomainName> = HashSet::new();
        for (i, start) in self.records.iter().enumerate() {
            if !start.is_cname() || ends.contains(start.owner()) {
                continue;
            }
            let mut seen: Vec<&DomainName> = vec![start.owner()];
            let mut seen_set: HashSet<&DomainName> = HashSet::from([start.owner()]);
            let mut at = start.owner();
            while let Some(next) = target_of(at) {
                if !self.origin.zone_of(next) || ends.contains(next) {
                    break;
                }
                if seen_set.contains(next) {
                    let chain: Vec<String> = seen.iter().map(ToString::to_string).collect();
                    return Err(self.error(
                        self.locs[i],
                        false,
                        format!("CNAME loop: {} -> {next}", chain.join(" -> ")),
                    ));
                }
                seen.push(next);
                seen_set.insert(next);
                at = next;
            }
            ends.extend(seen);
        }
        Ok(())
    }

    /// Whether `name` has an A or AAAA record here.
    pub(super) fn has_address(&self, name: &DomainName) -> bool {
        self.by_owner
            .get(name)
            .is_some_and(|&g| self.groups[g as usize].address != NONE)
    }

    /// Name servers of delegations inside the zone need glue here.
    pub(super) fn check_delegation_glue(&self) -> Result<(), ConfigError> {
        if !self.any_cut {
            return Ok(());
        }
        for (i, r) in self.records.iter().enumerate() {
            let Some(target) = r.ns_target() else {
                continue;
            };
            if self.origin.zone_of(target) && !self.has_address(target) {
                return Err(self.error(
                    self.locs[i],
                    false,
                    format!(
                        "the delegation's name server {target} is inside this zone but has no glue (A/AAAA) here"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The reason a service may not own `fqdn`, if any: a static CNAME,
    /// address or NS record there, or a delegation at or above it.
    pub(super) fn service_conflict(&self, fqdn: &DomainName) -> Option<String> {
        if let Some(&g) = self.by_owner.get(fqdn) {
            let c = self.groups[g as usize].conflict;
            if c != NONE {
                let r = &self.records[c as usize];
                let mut reason = format!(
                    "the name {fqdn} also has a static {} record; a service owns its A/AAAA answers",
                    r.type_name()
                );
                if let Loc::File { .. } = self.locs[c as usize] {
                    reason.push_str(&format!(
                        " (at {})",
                        self.describe(self.locs[c as usize], false)
                    ));
                }
                return Some(reason);
            }
        }
        self.cut_above(fqdn, true).map(|cut| {
            format!(
                "{fqdn} is at or below the delegation at {}",
                self.records[cut as usize].owner()
            )
        })
    }

    /// Gives up the records, dropping the index.
    pub(super) fn into_records(self) -> Vec<StaticRecord> {
        self.records
    }
}

/// Renders `records.<owner>` for a TOML key.
pub(super) fn toml_key(owner_text: &str) -> String {
    format!("records.{}", key_part(owner_text))
}
