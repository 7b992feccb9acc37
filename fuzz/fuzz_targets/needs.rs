//! The needs file's parsing and validation, including located errors.
#![no_main]
use allex_protocol::NeedsFile;
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = NeedsFile::parse(std::path::Path::new("needs"), text);
    }
});
