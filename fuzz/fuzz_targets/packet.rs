//! Any bytes, as a UDP datagram and as a TCP message (without the length
//! prefix), through the handler the socket loops call. Every response must
//! decode, echo the ID, opcode and RD, have QR set, fit the transport's
//! size limit and follow the EDNS rules; see `meridian_fuzz::check_response`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use meridian::dns::{Transport, handle_into};
use meridian_fuzz::{check_response, snapshot_for, source};

fuzz_target!(|data: &[u8]| {
    let snap = snapshot_for(data);
    let src = source(data);
    let mut out = Vec::new();
    for transport in [Transport::Udp, Transport::Tcp] {
        let answered = handle_into(snap, data, src, transport, &mut out);
        check_response(snap, data, transport, answered, &out);
    }
});
