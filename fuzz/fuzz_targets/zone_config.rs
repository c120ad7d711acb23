//! Config text: a zone file and a server file must parse or be rejected
//! with an error, never panic.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = meridian::config::parse_zone(Path::new("fuzz.toml"), text);
    // `admin.token_file` makes the server parser read a file: a fuzzer
    // could name /dev/zero or a FIFO and hang. Keep the key out (TOML can
    // only spell it with escapes if there is a backslash).
    if !text.contains("token_file") && !text.contains('\\') {
        let _ = meridian::config::parse_server(Path::new("fuzz.toml"), text);
    }
});
