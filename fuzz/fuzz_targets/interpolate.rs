//! `${VAR}` interpolation on arbitrary text: it may refuse, never panic, and
//! text without a `$` comes back unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let vars = cryptus::compose::Vars::from_env_file_and_process(
            [("SET".to_owned(), "value".to_owned()), ("EMPTY".to_owned(), String::new())].into(),
        );
        let result = cryptus::compose::interpolate::interpolate(text, &vars);
        if !text.contains('$') {
            assert_eq!(result.as_deref(), Ok(text));
        }
        let _ = cryptus::compose::interpolate::parse_env_file(text);
    }
});
