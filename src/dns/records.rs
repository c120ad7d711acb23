//! Text → wire-type conversions for the config loader.
//!
//! The config layer describes records as text (`type = "MX", value = "10
//! mail"`); this module is where that text meets hickory's record types, so
//! that nothing outside `src/dns/` needs to import hickory.

use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType, rdata};
use hickory_proto::serialize::txt::Parser;

/// A fully qualified domain name (case preserved; compares case-insensitively).
pub type DomainName = Name;

/// One static resource record from a zone file.
#[derive(Clone, Debug)]
pub struct StaticRecord(pub(crate) Record);

impl StaticRecord {
    /// Owner name.
    pub fn owner(&self) -> &DomainName {
        &self.0.name
    }

    /// Record type code, e.g. 1 for A (cheaper than [`Self::type_name`]
    /// when comparing).
    pub fn type_code(&self) -> u16 {
        u16::from(self.0.record_type())
    }

    /// Whether this is a DS record.
    pub fn is_ds(&self) -> bool {
        self.0.record_type() == RecordType::DS
    }

    /// Record type mnemonic, e.g. `"A"`.
    pub fn type_name(&self) -> String {
        self.0.record_type().to_string()
    }

    /// Whether this is a CNAME.
    pub fn is_cname(&self) -> bool {
        self.0.record_type() == RecordType::CNAME
    }

    /// Whether this is an NS record.
    pub fn is_ns(&self) -> bool {
        self.0.record_type() == RecordType::NS
    }

    /// Whether this is an address record (A or AAAA).
    pub fn is_address(&self) -> bool {
        matches!(self.0.record_type(), RecordType::A | RecordType::AAAA)
    }

    /// Whether this record's type may only be set by dedicated keys.
    pub fn is_apex_only(&self) -> bool {
        self.0.record_type() == RecordType::SOA
    }

    /// The target name of a CNAME, else `None`.
    pub fn cname_target(&self) -> Option<&DomainName> {
        match &self.0.data {
            RData::CNAME(c) => Some(&c.0),
            _ => None,
        }
    }

    /// The target name of an NS record, else `None`.
    pub fn ns_target(&self) -> Option<&DomainName> {
        match &self.0.data {
            RData::NS(n) => Some(&n.0),
            _ => None,
        }
    }

    /// Whether two records carry the same data.
    pub fn same_data(&self, other: &Self) -> bool {
        self.0.data == other.0.data
    }

    /// TTL in seconds.
    pub fn ttl(&self) -> u32 {
        self.0.ttl
    }

    /// Presentation form of the value, for messages and `explain`.
    pub fn value_text(&self) -> String {
        self.0.data.to_string()
    }
}

/// The numeric code of a record type mnemonic (`"A"`, `"SOA"`, `"TYPE65"`).
pub fn type_code(text: &str) -> Option<u16> {
    match text.trim().to_ascii_uppercase().parse::<RecordType>() {
        Ok(RecordType::Unknown(_)) | Err(_) => None,
        Ok(t) => Some(u16::from(t)),
    }
}

/// Parses a domain name. A name ending in `.` is absolute; `@` is the
/// origin; anything else is relative to `origin` (zone-file rules).
pub fn parse_name(text: &str, origin: Option<&DomainName>) -> Result<DomainName, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty name".into());
    }
    if text == "@" {
        return origin.cloned().ok_or_else(|| "`@` needs an origin".into());
    }
    let name = Name::parse(text, origin).map_err(|e| format!("bad domain name {text:?}: {e}"))?;
    if !name.is_fqdn() {
        return Err(format!(
            "name {text:?} must be absolute (end with a dot) here"
        ));
    }
    Ok(name)
}

/// Parses one record's value with the zone-file parser, so every type hickory
/// knows is accepted and names in values follow zone-file rules (relative to
/// `origin` unless they end in a dot).
pub fn parse_record(
    owner: &DomainName,
    type_text: &str,
    value: &str,
    ttl: u32,
    origin: &DomainName,
) -> Result<StaticRecord, String> {
    let rtype = record_type(type_text)?;
    if value.contains(['\n', '\r', ';', '(', ')']) && rtype != RecordType::TXT {
        return Err(format!(
            "value {value:?} may not contain newlines, `;` or parentheses"
        ));
    }
    if rtype == RecordType::TXT {
        // Plain text, split into 255-byte character-strings; never empty
        // (an empty value is one empty string).
        return Ok(StaticRecord(txt_record(owner, value, ttl)));
    }
    let value = value.trim();
    if value.is_empty() {
        return Err("empty value".into());
    }
    let record = match direct_record(owner, rtype, value, ttl, origin) {
        Some(record) => record,
        None => parser_record(owner, rtype, value, ttl, origin)?,
    };
    Ok(StaticRecord(record))
}

/// One token of a master-file entry's RDATA: the text as written, with a
/// quoted string's quotes removed but its escapes kept.
#[derive(Clone, Copy, Debug)]
pub struct RdataToken<'a> {
    /// The token's text (inside the quotes, for a quoted string).
    pub text: &'a str,
    /// Whether it was a quoted string.
    pub quoted: bool,
}

/// A TTL as a master file writes it: seconds, or with units (`1h30m`).
pub fn parse_ttl_text(text: &str) -> Option<u32> {
    if !text.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    hickory_proto::serialize::txt::parse_ttl(text).ok()
}

/// Whether `text` is a class mnemonic (`IN`, `CH`, `HS`, `NONE`, `ANY`).
pub fn is_class(text: &str) -> bool {
    ["IN", "CH", "HS", "NONE", "ANY"]
        .iter()
        .any(|c| c.eq_ignore_ascii_case(text))
}

/// Builds one record of a master file (`records_file`) from its type and
/// RDATA tokens. TXT strings are decoded here (`\X` and `\DDD`, RFC 1035
/// §5.1); the common types are built directly; anything else goes through
/// hickory's zone-file parser, as [`parse_record`] does.
pub fn parse_file_record(
    owner: &DomainName,
    type_text: &str,
    tokens: &[RdataToken<'_>],
    ttl: u32,
    origin: &DomainName,
) -> Result<StaticRecord, String> {
    let rtype = record_type(type_text)?;
    if tokens.is_empty() {
        return Err(format!("{rtype} record without data"));
    }
    if rtype == RecordType::TXT {
        let mut strings = Vec::with_capacity(tokens.len());
        for t in tokens {
            let bytes = unescape(t.text)?;
            if bytes.len() > 255 {
                return Err(format!(
                    "TXT string of {} bytes; split it into strings of at most 255 (\"...\" \"...\")",
                    bytes.len()
                ));
            }
            strings.push(bytes);
        }
        let record = Record::from_rdata(
            owner.clone(),
            ttl,
            RData::TXT(rdata::TXT::from_bytes(
                strings.iter().map(Vec::as_slice).collect(),
            )),
        );
        return Ok(StaticRecord(record));
    }
    let mut value = String::new();
    for t in tokens {
        if !value.is_empty() {
            value.push(' ');
        }
        if t.quoted {
            value.push('"');
            value.push_str(t.text);
            value.push('"');
        } else {
            value.push_str(t.text);
        }
    }
    let direct = if tokens.iter().any(|t| t.quoted) {
        None
    } else {
        direct_record(owner, rtype, &value, ttl, origin)
    };
    let record = match direct {
        Some(record) => record,
        None => parser_record(owner, rtype, &value, ttl, origin)?,
    };
    Ok(StaticRecord(record))
}

/// Undoes master-file escapes: `\DDD` is the octet DDD (decimal), `\X` is X.
fn unescape(text: &str) -> Result<Vec<u8>, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        match bytes.get(i + 1..i + 4) {
            Some(d) if d.iter().all(u8::is_ascii_digit) => {
                let v = d
                    .iter()
                    .fold(0u32, |acc, &c| acc * 10 + u32::from(c - b'0'));
                let v = u8::try_from(v).map_err(|_| format!("escape \\{v} is not an octet"))?;
                out.push(v);
                i += 4;
            }
            _ => match bytes.get(i + 1) {
                Some(&c) => {
                    out.push(c);
                    i += 2;
                }
                None => return Err("a lone `\\` ends the text".into()),
            },
        }
    }
    Ok(out)
}

/// The record type named by `type_text`, if it may appear in a zone.
fn record_type(type_text: &str) -> Result<RecordType, String> {
    let rtype: RecordType = type_text
        .trim()
        .to_ascii_uppercase()
        .parse()
        .map_err(|_| format!("unknown record type {type_text:?}"))?;
    match rtype {
        RecordType::SOA => Err("SOA is set by the [soa] table, not as a record".into()),
        RecordType::OPT
        | RecordType::ANY
        | RecordType::AXFR
        | RecordType::IXFR
        | RecordType::NULL
        | RecordType::TSIG => Err(format!("record type {rtype} cannot appear in a zone")),
        RecordType::Unknown(_) => Err(format!("unknown record type {type_text:?}")),
        _ => Ok(rtype),
    }
}

/// Builds the record without the zone-file parser for the common types,
/// when `value` (already trimmed) holds nothing
/// the parser's lexer treats specially. `None` means "ask the parser":
/// anything unusual, and every error, so that messages stay the parser's.
///
/// The result is the one [`parser_record`] gives (a unit test compares
/// the two over many values); it avoids building a `Parser`, its lexer and
/// a `BTreeMap` of record sets per record, which dominated loading.
fn direct_record(
    owner: &DomainName,
    rtype: RecordType,
    value: &str,
    ttl: u32,
    origin: &DomainName,
) -> Option<Record> {
    let rdata = {
        // The lexer gives `@`, `$` and quotes a meaning at the start of a
        // token, unescapes nothing outside quotes, and rejects control
        // characters; such values go to the parser.
        if value.contains(['"', '\\', '(', ')', ';']) || value.chars().any(char::is_control) {
            return None;
        }
        let mut tokens = value.split_whitespace();
        if value.split_whitespace().any(|t| t.starts_with(['@', '$'])) {
            return None;
        }
        let name = |t: Option<&str>| Name::parse(t?, Some(origin)).ok();
        let num = |t: Option<&str>| t?.parse::<u16>().ok();
        match rtype {
            RecordType::A => RData::A(tokens.next()?.parse::<std::net::Ipv4Addr>().ok()?.into()),
            RecordType::AAAA => {
                RData::AAAA(tokens.next()?.parse::<std::net::Ipv6Addr>().ok()?.into())
            }
            RecordType::CNAME => RData::CNAME(rdata::CNAME(name(tokens.next())?)),
            RecordType::NS => RData::NS(rdata::NS(name(tokens.next())?)),
            RecordType::PTR => RData::PTR(rdata::PTR(name(tokens.next())?)),
            RecordType::MX => {
                let preference = num(tokens.next())?;
                RData::MX(rdata::MX::new(preference, name(tokens.next())?))
            }
            RecordType::SRV => {
                let priority = num(tokens.next())?;
                let weight = num(tokens.next())?;
                let port = num(tokens.next())?;
                RData::SRV(rdata::SRV::new(
                    priority,
                    weight,
                    port,
                    name(tokens.next())?,
                ))
            }
            _ => return None,
        }
    };
    Some(Record::from_rdata(owner.clone(), ttl, rdata))
}

/// A TXT record from plain text. Unlike the parser path, control
/// characters are kept as the bytes they are: the parser's lexer decodes
/// `\DDD` as `(D1 << 16) + (D2 << 8) + D3`, which turned a newline
/// (`\010`) into U+0100.
fn txt_record(owner: &DomainName, value: &str, ttl: u32) -> Record {
    // `from_rdata` makes class IN records.
    Record::from_rdata(
        owner.clone(),
        ttl,
        RData::TXT(rdata::TXT::new(txt_strings(value))),
    )
}

/// A TXT value's character-strings: the text split into pieces of at most
/// 255 bytes at character boundaries, as [`txt_to_zone_text`] splits it.
fn txt_strings(value: &str) -> Vec<String> {
    let mut out = Vec::with_capacity(value.len() / 255 + 1);
    let mut start = 0;
    loop {
        let mut end = (start + 255).min(value.len());
        while !value.is_char_boundary(end) {
            end -= 1;
        }
        out.push(value[start..end].to_string());
        start = end;
        if start >= value.len() {
            return out;
        }
    }
}

/// The reference path: one record through hickory's zone-file parser.
fn parser_record(
    owner: &DomainName,
    rtype: RecordType,
    value: &str,
    ttl: u32,
    origin: &DomainName,
) -> Result<Record, String> {
    let line = format!("@ {ttl} IN {rtype} {value}\n");
    let parsed = Parser::new(line, None, Some(origin.clone()))
        .parse()
        .map_err(|e| format!("bad {rtype} value: {e}"))?;
    let mut records = parsed
        .1
        .into_values()
        .flat_map(|set| set.records_without_rrsigs().cloned().collect::<Vec<_>>());
    let mut record = records
        .next()
        .ok_or_else(|| format!("bad {rtype} value: nothing parsed"))?;
    if records.next().is_some() {
        return Err(format!("value {value:?} holds more than one record"));
    }
    if record.record_type() != rtype {
        return Err(format!("bad {rtype} value {value:?}"));
    }
    record.name = owner.clone();
    record.dns_class = DNSClass::IN;
    Ok(record)
}

/// TXT values are written as plain text in the config; quote them for the
/// zone-file parser, splitting into 255-byte character-strings. Loading
/// builds TXT records directly; this is the reference the tests compare
/// against.
#[cfg(test)]
fn txt_to_zone_text(value: &str) -> String {
    let mut out = String::new();
    let bytes = value.as_bytes();
    let mut start = 0;
    loop {
        let mut end = (start + 255).min(bytes.len());
        while !value.is_char_boundary(end) {
            end -= 1;
        }
        out.push('"');
        for c in value[start..end].chars() {
            match c {
                '"' | '\\' => {
                    out.push('\\');
                    out.push(c);
                }
                c if c.is_ascii_control() => out.push_str(&format!("\\{:03}", c as u32)),
                c => out.push(c),
            }
        }
        out.push_str("\" ");
        start = end;
        if start >= bytes.len() {
            break;
        }
    }
    out
}

/// The records hickory's zone-file parser reads from a whole master file,
/// as sorted `(owner, type, ttl, value)`: the reference the config tests
/// compare `records_file` loading against.
#[cfg(test)]
pub(crate) fn parser_reference(
    text: &str,
    origin: &DomainName,
) -> Result<Vec<(String, String, u32, String)>, String> {
    let (_, sets) = Parser::new(text, None, Some(origin.clone()))
        .parse()
        .map_err(|e| e.to_string())?;
    let mut out: Vec<_> = sets
        .into_values()
        .flat_map(|set| set.records_without_rrsigs().cloned().collect::<Vec<_>>())
        .map(|r| {
            (
                r.name.to_lowercase().to_ascii(),
                r.record_type().to_string(),
                r.ttl,
                r.data.to_string(),
            )
        })
        .collect();
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin() -> Name {
        Name::from_ascii("example.com.").unwrap()
    }

    #[test]
    fn relative_names_in_values_follow_zone_file_rules() {
        let owner = parse_name("@", Some(&origin())).unwrap();
        let r = parse_record(&owner, "mx", "10 mail", 300, &origin()).unwrap();
        assert_eq!(r.value_text(), "10 mail.example.com.");
        let r = parse_record(&owner, "CNAME", "other.net.", 300, &origin()).unwrap();
        assert_eq!(r.cname_target().unwrap().to_ascii(), "other.net.");
    }

    #[test]
    fn txt_is_plain_text_and_long_values_split() {
        let owner = origin();
        let long = "x".repeat(300);
        let r = parse_record(&owner, "TXT", &long, 60, &origin()).unwrap();
        match &r.0.data {
            RData::TXT(t) => {
                assert_eq!(t.txt_data.len(), 2);
                assert_eq!(t.txt_data[0].len(), 255);
            }
            other => panic!("not TXT: {other:?}"),
        }
        let r = parse_record(&owner, "TXT", "v=spf1 \"quoted\" -all", 60, &origin()).unwrap();
        assert!(r.value_text().contains("quoted"));
    }

    #[test]
    fn bad_values_are_rejected_with_reason() {
        let owner = origin();
        assert!(parse_record(&owner, "A", "300.1.1.1", 60, &origin()).is_err());
        assert!(parse_record(&owner, "AAAA", "192.0.2.1", 60, &origin()).is_err());
        assert!(parse_record(&owner, "SOA", "x", 60, &origin()).is_err());
        assert!(parse_record(&owner, "BOGUS", "x", 60, &origin()).is_err());
        assert!(parse_record(&owner, "A", "192.0.2.1 ; x", 60, &origin()).is_err());
        let caa = parse_record(&owner, "CAA", "0 issue \"letsencrypt.org\"", 60, &origin());
        assert!(caa.is_ok(), "{caa:?}");
        let srv = parse_record(&owner, "SRV", "10 5 443 www", 60, &origin()).unwrap();
        assert_eq!(srv.value_text(), "10 5 443 www.example.com.");
    }

    /// The direct path gives exactly the parser's record, or defers to it.
    #[test]
    fn direct_records_match_the_parser() {
        let origin = origin();
        let owner = Name::from_ascii("www.example.com.").unwrap();
        let cases: &[(&str, &str)] = &[
            ("A", "192.0.2.1"),
            ("A", " 192.0.2.1 "),
            ("A", "192.0.2.1\t"),
            ("A", "192.0.2.1 192.0.2.2"),
            ("A", "0.0.0.0"),
            ("A", "255.255.255.255"),
            ("A", "192.0.2"),
            ("A", "192.0.2.256"),
            ("A", "01.2.3.4"),
            ("A", "@"),
            ("A", "x"),
            ("AAAA", "2001:db8::1"),
            ("AAAA", "::"),
            ("AAAA", "::ffff:192.0.2.1"),
            ("AAAA", "2001:DB8::A"),
            ("AAAA", "2001:db8::g"),
            ("CNAME", "other"),
            ("CNAME", "other.net."),
            ("CNAME", "Mixed.Case.Example.Com."),
            ("CNAME", "a.b.c"),
            ("CNAME", "x\\.y"),
            ("CNAME", "\"quoted\""),
            ("CNAME", "@"),
            ("CNAME", "."),
            ("CNAME", "a..b"),
            ("CNAME", "xn--bcher-kva.example."),
            ("CNAME", "bücher"),
            ("CNAME", "_sip._tcp"),
            ("CNAME", "a b"),
            ("NS", "ns1"),
            ("NS", "ns1.other.org."),
            ("PTR", "host.example.net."),
            ("PTR", "host"),
            ("MX", "10 mail"),
            ("MX", "0 ."),
            ("MX", "65535 mail.example.org."),
            ("MX", "65536 mail"),
            ("MX", "-1 mail"),
            ("MX", "10"),
            ("MX", "mail 10"),
            ("MX", "10   mail   extra"),
            ("SRV", "10 5 443 www"),
            ("SRV", "0 0 0 ."),
            ("SRV", "10 5 443"),
            ("SRV", "10 5 70000 www"),
            ("SRV", "10 5 443 sip.example.org."),
            ("CAA", "0 issue \"letsencrypt.org\""),
            ("SSHFP", "1 1 0123456789abcdef0123456789abcdef01234567"),
        ];
        let mut direct_hits = 0;
        for &(t, v) in cases {
            let rtype: RecordType = t.parse().unwrap();
            let v = v.trim();
            let via_parser = parser_record(&owner, rtype, v, 300, &origin);
            if let Some(direct) = direct_record(&owner, rtype, v, 300, &origin) {
                direct_hits += 1;
                assert_eq!(via_parser.as_ref(), Ok(&direct), "{t} {v:?}");
            }
            // parse_record as a whole agrees with the parser either way.
            let whole = parse_record(&owner, t, v, 300, &origin).map(|r| r.0);
            assert_eq!(whole, via_parser, "{t} {v:?}");
        }
        assert!(
            direct_hits >= 25,
            "the direct path took only {direct_hits} cases"
        );
    }

    /// TXT: plain text split at 255 bytes, the same as quoting it for the
    /// parser, for spaces, quotes, backslashes, non-ASCII and long values.
    #[test]
    fn direct_txt_matches_the_parser() {
        let origin = origin();
        let owner = origin.clone();
        let mut cases: Vec<String> = [
            "",
            " ",
            "v=spf1 -all",
            "  leading and trailing  ",
            "say \"hi\"",
            "back\\slash",
            "semi;colon (paren)",
            "tab\there",
            "日本語のテキスト",
            "emoji 🎉 and ümlauts",
            "@ $ORIGIN",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        cases.push("x".repeat(255));
        cases.push("x".repeat(256));
        cases.push("y".repeat(600));
        // Multi-byte characters across the 255-byte boundary.
        cases.push("é".repeat(200));
        cases.push(format!("{}🎉🎉", "a".repeat(253)));
        for v in &cases {
            let direct = txt_record(&owner, v, 60);
            let via_parser =
                parser_record(&owner, RecordType::TXT, &txt_to_zone_text(v), 60, &origin);
            assert_eq!(via_parser.as_ref(), Ok(&direct), "{v:?}");
            let RData::TXT(t) = &direct.data else {
                panic!("not TXT")
            };
            assert!(t.txt_data.iter().all(|s| s.len() <= 255), "{v:?}");
            assert_eq!(t.txt_data.concat(), v.as_bytes(), "{v:?}");
        }
    }

    /// The parser decodes `\DDD` wrongly (`\010` became U+0100); the
    /// direct path keeps a newline a newline.
    #[test]
    fn txt_control_characters_are_kept_as_bytes() {
        let r = parse_record(&origin(), "TXT", "a\nb\u{7f}", 60, &origin()).unwrap();
        let RData::TXT(t) = &r.0.data else {
            panic!("not TXT")
        };
        assert_eq!(&*t.txt_data[0], b"a\nb\x7f");
    }
}
