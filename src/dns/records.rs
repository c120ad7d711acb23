//! Text → wire-type conversions for the config loader.
//!
//! The config layer describes records as text (`type = "MX", value = "10
//! mail"`); this module is where that text meets hickory's record types, so
//! that nothing outside `src/dns/` needs to import hickory.

use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
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
    let rtype: RecordType = type_text
        .trim()
        .to_ascii_uppercase()
        .parse()
        .map_err(|_| format!("unknown record type {type_text:?}"))?;
    match rtype {
        RecordType::SOA => {
            return Err("SOA is set by the [soa] table, not as a record".into());
        }
        RecordType::OPT
        | RecordType::ANY
        | RecordType::AXFR
        | RecordType::IXFR
        | RecordType::NULL
        | RecordType::TSIG => {
            return Err(format!("record type {rtype} cannot appear in a zone"));
        }
        RecordType::Unknown(_) => {
            return Err(format!("unknown record type {type_text:?}"));
        }
        _ => {}
    }
    if value.contains(['\n', '\r', ';', '(', ')']) && rtype != RecordType::TXT {
        return Err(format!(
            "value {value:?} may not contain newlines, `;` or parentheses"
        ));
    }
    let value = if rtype == RecordType::TXT {
        txt_to_zone_text(value)
    } else {
        value.trim().to_string()
    };
    if value.is_empty() {
        return Err("empty value".into());
    }
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
    Ok(StaticRecord(record))
}

/// TXT values are written as plain text in the config; quote them for the
/// zone-file parser, splitting into 255-byte character-strings.
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
}
