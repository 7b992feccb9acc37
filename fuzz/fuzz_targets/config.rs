//! `allexmasterconfig.json` parsing and validation.
#![no_main]
use allex_protocol::MasterConfig;
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = MasterConfig::parse(std::path::Path::new("allexmasterconfig.json"), text);
    }
});
