//! The state file (operator overrides): any text must parse or be refused
//! with an error, never panic; whatever parses must come back the same
//! through the format Meridian saves.

#![no_main]

use libfuzzer_sys::fuzz_target;
use meridian::health::overrides::{parse, render};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse(text) {
        Ok(map) => {
            let saved = render(&map);
            let again = parse(&saved)
                .unwrap_or_else(|e| panic!("the saved form does not parse: {e}\n{saved}"));
            assert_eq!(
                again, map,
                "the saved form reads back differently:\n{saved}"
            );
        }
        Err(e) => {
            // The message is shown to operators: it must render.
            assert!(!e.to_string().is_empty());
        }
    }
});
