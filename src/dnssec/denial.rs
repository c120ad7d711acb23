//! Compact denial of existence (RFC 9824): one NSEC record, owned by the
//! name asked about, whose next name is the name's immediate successor
//! `\000.<name>`, so it covers nothing but the name itself.
//!
//! - NODATA: the types that exist at the name, plus RRSIG and NSEC, minus
//!   the type asked for.
//! - NXDOMAIN: answered NOERROR ("NXDOMAIN ... is instead answered with a
//!   NODATA response", RFC 9824 §3.2) with the bitmap RRSIG NSEC NXNAME;
//!   NXNAME (type 128) tells a consumer the name does not exist.
//! - An empty non-terminal: RRSIG NSEC.
//! - An insecure delegation: NS RRSIG NSEC at the cut (no DS bit).
//!
//! The NSEC's TTL is the negative TTL, min(SOA TTL, SOA MINIMUM), as RFC
//! 9077 asks.

use hickory_proto::dnssec::rdata::{DNSSECRData, NSEC};
use hickory_proto::rr::{Name, RData, Record, RecordType};

/// NXNAME, the pseudo-type of RFC 9824 §2.
pub const NXNAME: u16 = 128;

/// `\000.<name>`: the name right after `name` in canonical order.
pub fn successor(name: &Name) -> Option<Name> {
    Name::from_labels([&[0u8][..]])
        .ok()?
        .append_domain(name)
        .ok()
}

/// The compact NSEC owned by `name` listing `types` (RRSIG and NSEC are
/// added; `types` may be unsorted).
pub fn nsec(name: &Name, types: &[RecordType], ttl: u32) -> Option<Record> {
    let next = successor(name)?;
    let mut all: Vec<RecordType> = types.to_vec();
    all.extend([RecordType::RRSIG, RecordType::NSEC]);
    all.sort_unstable_by_key(|t| u16::from(*t));
    all.dedup();
    Some(Record::from_rdata(
        name.clone(),
        ttl,
        RData::DNSSEC(DNSSECRData::NSEC(NSEC::new(next, all))),
    ))
}

/// The NSEC that says `name` does not exist (NXNAME set).
pub fn nxname(name: &Name, ttl: u32) -> Option<Record> {
    nsec(name, &[RecordType::from(NXNAME)], ttl)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::serialize::binary::BinEncodable;

    #[test]
    fn nxname_nsec_has_the_compact_form() {
        let name = Name::from_ascii("nope.example.com.").unwrap();
        let r = nxname(&name, 60).unwrap();
        let RData::DNSSEC(DNSSECRData::NSEC(n)) = &r.data else {
            panic!("not NSEC")
        };
        assert_eq!(n.next_domain_name().to_ascii(), "\\000.nope.example.com.");
        let types: Vec<u16> = n.type_bit_maps().map(u16::from).collect();
        assert_eq!(types, vec![46, 47, 128]);
        // The wire form carries window 0 with bits 46, 47 and 128.
        let wire = r.data.to_bytes().unwrap();
        let mut bitmap = vec![0u8, 17, 0, 0, 0, 0, 0, 0x03];
        bitmap.extend([0; 10]);
        bitmap.push(0x80);
        assert!(wire.ends_with(&bitmap), "{wire:?}");
    }
}
