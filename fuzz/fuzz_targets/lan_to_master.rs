//! Lan manager -> master frames, as the master decodes them.
#![no_main]
use allex_protocol::frame::{decode_bytes, MAX_FROM_LAN_FRAME};
use allex_protocol::lan::LanToMaster;
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = decode_bytes::<LanToMaster>(data, MAX_FROM_LAN_FRAME);
});
