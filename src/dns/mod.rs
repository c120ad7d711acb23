//! Everything that touches the DNS wire format (hickory-proto) lives here:
//! record parsing for the config loader (`records`), the zone store
//! (`zone`), query handling (`handler`) and the socket loops (`server`).
//!
//! Meridian does not use hickory-server's `Catalog`: it builds the response
//! EDNS itself and cannot echo EDNS Client Subnet with a scope (RFC 7871),
//! and its stock UDP path spawns a task per packet. `handler` is our own
//! request handler; hickory-proto stays the parser and encoder of record.

#[cfg(target_os = "linux")]
#[allow(unsafe_code)] // recvmmsg and sendmmsg
pub mod batch;
pub mod cookie;
pub mod counters;
pub(crate) mod envelope;
pub mod fast;
pub mod handler;
pub mod records;
pub mod rrl;
pub mod server;
pub mod zone;

pub use handler::{Handled, Seen, Transport, handle, handle_into, handle_observed, handle_query};

use std::net::{IpAddr, SocketAddr};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
use hickory_proto::rr::{Name, RecordType};

/// Builds a query packet, optionally with EDNS and an ECS option. Used by
/// `explain` (so it exercises the real handler) and by tests.
pub fn build_query(
    name: &str,
    qtype: &str,
    ecs: Option<(IpAddr, u8)>,
    id: u16,
) -> Result<Vec<u8>, String> {
    let name = Name::from_utf8(name).map_err(|e| format!("bad name {name:?}: {e}"))?;
    let qtype: RecordType = qtype
        .to_ascii_uppercase()
        .parse()
        .map_err(|_| format!("unknown record type {qtype:?}"))?;
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = false;
    m.queries.push(Query::query(name, qtype));
    let mut edns = Edns::new();
    edns.set_max_payload(1232);
    if let Some((addr, prefix)) = ecs {
        let net = ipnet::IpNet::new(addr, prefix).map_err(|e| e.to_string())?;
        edns.options_mut()
            .insert(EdnsOption::Subnet(ClientSubnet::new(
                net.network(),
                prefix,
                0,
            )));
    }
    m.edns = Some(edns);
    m.to_vec().map_err(|e| e.to_string())
}

/// A decoded response, summarised for people (`explain`, `GET /explain`)
/// and tests.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    /// Response code mnemonic, e.g. `NOERROR`.
    pub rcode: String,
    /// AA flag.
    pub authoritative: bool,
    /// TC flag.
    pub truncated: bool,
    /// Answer records in presentation form.
    pub answers: Vec<String>,
    /// Authority records in presentation form.
    pub authorities: Vec<String>,
    /// Targets of the CNAMEs in the answer, lower case, fully qualified.
    pub cname_targets: Vec<String>,
    /// ECS in the response: (source prefix, scope prefix).
    pub ecs: Option<(u8, u8)>,
}

/// Decodes a response packet into a [`Summary`].
pub fn summarize(packet: &[u8]) -> Result<Summary, String> {
    let m = Message::from_vec(packet).map_err(|e| e.to_string())?;
    let ecs = m.edns.as_ref().and_then(|e| {
        e.options().options.iter().find_map(|(_, o)| match o {
            EdnsOption::Subnet(cs) => Some((cs.source_prefix(), cs.scope_prefix())),
            _ => None,
        })
    });
    Ok(Summary {
        rcode: format!("{:?}", m.metadata.response_code).to_uppercase(),
        authoritative: m.metadata.authoritative,
        truncated: m.metadata.truncation,
        answers: m.answers.iter().map(ToString::to_string).collect(),
        authorities: m.authorities.iter().map(ToString::to_string).collect(),
        cname_targets: m
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                hickory_proto::rr::RData::CNAME(c) => Some(c.0.to_ascii().to_ascii_lowercase()),
                _ => None,
            })
            .collect(),
        ecs,
    })
}

/// The source address used for `explain` queries without `--client`.
pub const EXPLAIN_SOURCE: SocketAddr =
    SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 53);

/// A probe query for `name`/`qtype` (no EDNS, RD clear), for DNS health
/// probes.
pub fn probe_query(name: &Name, qtype: u16, id: u16) -> Result<Vec<u8>, String> {
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.queries
        .push(Query::query(name.clone(), RecordType::from(qtype)));
    m.to_vec().map_err(|e| e.to_string())
}

/// The response code of `packet` if it is a response to query `id`
/// (low four bits; EDNS extended codes are not needed by probes).
pub fn response_rcode(packet: &[u8], id: u16) -> Option<u8> {
    if packet.len() < 12
        || u16::from_be_bytes([packet[0], packet[1]]) != id
        || packet[2] & 0x80 == 0
    {
        return None;
    }
    Some(packet[3] & 0x0f)
}
