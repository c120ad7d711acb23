//! Work in progress (issue 8): the ASN table.

use std::net::IpAddr;

/// Stand-in until the table lands.
#[derive(Debug, Default)]
pub struct AsnTable;

impl AsnTable {
    /// The AS number of `ip` and the block it holds over.
    pub fn lookup(&self, _ip: IpAddr) -> (Option<u32>, u8) {
        (None, 0)
    }
}
