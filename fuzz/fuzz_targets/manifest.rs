//! The backup manifest reader on arbitrary text: it may refuse, never panic,
//! and what it accepts round-trips.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(manifest) = cryptus::backup::parse_manifest(text)
    {
        let again = serde_json::to_string(&manifest).expect("a manifest serializes");
        assert_eq!(cryptus::backup::parse_manifest(&again), Ok(manifest));
    }
});
