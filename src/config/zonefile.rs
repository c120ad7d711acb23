//! `records_file`: a zone's static records from an RFC 1035 master file.
//!
//! The file is split into entries here, so that every record keeps the
//! line it starts on for messages; each entry's RDATA is then built by
//! [`parse_file_record`] (directly for the common types, through hickory's
//! zone-file parser for the rest). hickory's `Parser` reads a whole file
//! into record sets, which loses the lines, merges duplicates silently and
//! costs about 750 MB per million records.
//!
//! Rules (README, "Importing a zone file"):
//! - `$ORIGIN` starts as the zone's origin; `$TTL` starts as its `ttl`.
//!   A record without a TTL gets the current `$TTL`.
//! - `$INCLUDE` (and any other `$` directive) is an error.
//! - Only class IN.
//! - Owners must be inside the zone; `*` owners are rejected (as in
//!   `[records]`).
//! - The apex SOA is skipped: the TOML's `[soa]` is served. The apex NS
//!   records must name the same servers as the TOML's `ns` (which are
//!   served, with `ns_ttl`), so the two cannot silently disagree.

use std::collections::HashSet;
use std::path::Path;

use super::records::{Loc, Records};
use super::validate::check_range;
use super::{ConfigError, MAX_TTL};
use crate::dns::records::{
    DomainName, RdataToken, is_class, parse_file_record, parse_name, parse_ttl_text, type_code,
};

/// SOA and NS type codes.
const SOA: u16 = 6;
const NS: u16 = 2;

/// One entry of a master file: its tokens, the line it starts on, and
/// whether it starts with blank space (no owner: the previous one).
struct Entry<'a> {
    line: u32,
    blank_owner: bool,
    tokens: Vec<RdataToken<'a>>,
}

/// Splits `text` into entries: tokens separated by blanks, `;` comments,
/// `( )` continuing an entry over lines, and quoted strings (which may hold
/// blanks, `;` and escaped quotes).
fn entries(text: &str) -> impl Iterator<Item = Result<Entry<'_>, (u32, String)>> + '_ {
    let bytes = text.as_bytes();
    let mut pos = 0usize;
    let mut line = 1u32;
    std::iter::from_fn(move || {
        loop {
            if pos >= bytes.len() {
                return None;
            }
            let start_line = line;
            let blank_owner = matches!(bytes[pos], b' ' | b'\t');
            let mut tokens: Vec<RdataToken<'_>> = Vec::new();
            let mut depth = 0u32;
            let mut open_line = line;
            // One entry: until a newline outside parentheses.
            while pos < bytes.len() {
                match bytes[pos] {
                    b'\n' => {
                        line += 1;
                        pos += 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    b' ' | b'\t' | b'\r' => pos += 1,
                    b';' => {
                        while pos < bytes.len() && bytes[pos] != b'\n' {
                            pos += 1;
                        }
                    }
                    b'(' => {
                        if depth == 0 {
                            open_line = line;
                        }
                        depth += 1;
                        pos += 1;
                    }
                    b')' => {
                        if depth == 0 {
                            return Some(Err((line, "`)` without `(`".into())));
                        }
                        depth -= 1;
                        pos += 1;
                    }
                    b'"' => {
                        let from = pos + 1;
                        let mut at = from;
                        while at < bytes.len() && bytes[at] != b'"' {
                            // An escaped newline is still a line.
                            if bytes[at] == b'\\' {
                                at += 1;
                            }
                            if bytes.get(at) == Some(&b'\n') {
                                line += 1;
                            }
                            at += 1;
                        }
                        let Some(inner) = text.get(from..at.min(bytes.len())) else {
                            return Some(Err((line, "malformed quoted string".into())));
                        };
                        if at >= bytes.len() {
                            return Some(Err((start_line, "unterminated quoted string".into())));
                        }
                        tokens.push(RdataToken {
                            text: inner,
                            quoted: true,
                        });
                        pos = at + 1;
                    }
                    _ => {
                        let from = pos;
                        while pos < bytes.len()
                            && !matches!(
                                bytes[pos],
                                b' ' | b'\t' | b'\r' | b'\n' | b';' | b'(' | b')' | b'"'
                            )
                        {
                            if bytes[pos] == b'\\' && bytes.get(pos + 1) == Some(&b'\n') {
                                line += 1;
                            }
                            pos += if bytes[pos] == b'\\' { 2 } else { 1 };
                        }
                        pos = pos.min(bytes.len());
                        let Some(t) = text.get(from..pos) else {
                            return Some(Err((line, "malformed escape".into())));
                        };
                        tokens.push(RdataToken {
                            text: t,
                            quoted: false,
                        });
                    }
                }
            }
            if depth > 0 {
                return Some(Err((open_line, "`(` is never closed".into())));
            }
            if !tokens.is_empty() {
                return Some(Ok(Entry {
                    line: start_line,
                    blank_owner,
                    tokens,
                }));
            }
        }
    })
}

/// Reads the master file `text` (at `path`) into `records`.
pub(super) fn read(
    records: &mut Records,
    path: &Path,
    text: &str,
    origin: &DomainName,
    default_ttl: u32,
    ns: &[DomainName],
) -> Result<(), ConfigError> {
    let at = |line: u32, reason: String| ConfigError::new(path, format!("line {line}"), reason);
    records.set_zone_file(path);
    let first_group = records.group_count();
    let mut current_origin = origin.clone();
    let mut ttl_default = default_ttl;
    let mut owner: Option<(DomainName, u32)> = None;
    let mut apex_ns: Vec<(DomainName, u32)> = Vec::new();
    for entry in entries(text) {
        let entry = entry.map_err(|(line, reason)| at(line, reason))?;
        let line = entry.line;
        let mut tokens = entry.tokens.iter();
        if !entry.blank_owner {
            let Some(first) = tokens.next() else {
                continue;
            };
            if !first.quoted && first.text.starts_with('$') {
                let arg = tokens.next();
                match first.text.to_ascii_uppercase().as_str() {
                    "$ORIGIN" => {
                        let name = arg.ok_or_else(|| at(line, "$ORIGIN needs a name".into()))?;
                        current_origin = parse_name(name.text, Some(&current_origin))
                            .map_err(|e| at(line, e))?;
                    }
                    "$TTL" => {
                        let value = arg.and_then(|t| parse_ttl_text(t.text)).ok_or_else(|| {
                            at(line, "$TTL needs a TTL such as 3600 or 1h".into())
                        })?;
                        ttl_default =
                            check_range(path, &format!("line {line}"), value, 0, MAX_TTL)?;
                    }
                    "$INCLUDE" => {
                        return Err(at(
                            line,
                            "$INCLUDE is not supported; put the records in this one file".into(),
                        ));
                    }
                    other => return Err(at(line, format!("unknown directive {other}"))),
                }
                if tokens.next().is_some() {
                    return Err(at(line, format!("unexpected text after {}", first.text)));
                }
                continue;
            }
            let name = if first.text == "@" && !first.quoted {
                current_origin.clone()
            } else {
                parse_name(first.text, Some(&current_origin)).map_err(|e| at(line, e))?
            };
            if !origin.zone_of(&name) {
                return Err(at(line, format!("{name} is not inside the zone {origin}")));
            }
            owner = Some((name, line));
        }
        let Some((name, _)) = &owner else {
            return Err(at(line, "the first record needs an owner name".into()));
        };
        // [TTL] [class] type, TTL and class in either order.
        let mut ttl = None;
        let type_text = loop {
            let t = tokens
                .next()
                .ok_or_else(|| at(line, "record without a type".into()))?;
            if ttl.is_none() && t.text.starts_with(|c: char| c.is_ascii_digit()) {
                let v = parse_ttl_text(t.text).ok_or_else(|| {
                    at(
                        line,
                        format!(
                            "TTL {} is not seconds (or 1h30m style) up to {MAX_TTL}",
                            t.text
                        ),
                    )
                })?;
                ttl = Some(check_range(path, &format!("line {line}"), v, 0, MAX_TTL)?);
            } else if is_class(t.text) {
                if !t.text.eq_ignore_ascii_case("IN") {
                    return Err(at(line, format!("class {}: only IN is served", t.text)));
                }
            } else {
                break t.text;
            }
        };
        let ttl = ttl.unwrap_or(ttl_default);
        let rdata: Vec<RdataToken<'_>> = tokens.copied().collect();
        let code = type_code(type_text);
        if code == Some(SOA) {
            if name == origin {
                // The TOML's [soa] is served; a migrated file's SOA is skipped.
                continue;
            }
            return Err(at(line, "SOA belongs at the zone apex only".into()));
        }
        let record = parse_file_record(name, type_text, &rdata, ttl, &current_origin)
            .map_err(|e| at(line, e))?;
        if code == Some(NS) && name == origin {
            if let Some(target) = record.ns_target() {
                apex_ns.push((target.clone(), line));
            }
            continue;
        }
        let loc = Loc::File { line };
        let g = records.group_for(name, loc)?;
        records.push(g, record, loc);
    }
    check_apex_ns(path, &apex_ns, ns)?;
    records.check_groups_from(first_group)
}

/// The file's apex NS records, if any, must name exactly the TOML's `ns`.
fn check_apex_ns(
    path: &Path,
    file_ns: &[(DomainName, u32)],
    ns: &[DomainName],
) -> Result<(), ConfigError> {
    let Some((_, first_line)) = file_ns.first() else {
        return Ok(());
    };
    let listed: HashSet<&DomainName> = ns.iter().collect();
    for (name, line) in file_ns {
        if !listed.contains(name) {
            return Err(ConfigError::new(
                path,
                format!("line {line}"),
                format!(
                    "apex NS {name} is not in the zone's `ns` list; the apex NS records are \
                     served from `ns`, so list the same servers in both (or drop them here)"
                ),
            ));
        }
    }
    let in_file: HashSet<&DomainName> = file_ns.iter().map(|(n, _)| n).collect();
    if let Some(missing) = ns.iter().find(|n| !in_file.contains(n)) {
        return Err(ConfigError::new(
            path,
            format!("line {first_line}"),
            format!(
                "the apex NS records here do not include {missing}, which the zone's `ns` \
                 lists; list the same servers in both (or drop them here)"
            ),
        ));
    }
    Ok(())
}
