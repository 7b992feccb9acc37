//! Admin CLI <-> lan manager frames, both directions.
#![no_main]
use allex_protocol::frame::{decode_bytes, MAX_FROM_LAN_FRAME, MAX_TO_LAN_FRAME};
use allex_protocol::lan::{AdminToLan, LanToAdmin};
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = decode_bytes::<AdminToLan>(data, MAX_TO_LAN_FRAME);
    let _ = decode_bytes::<LanToAdmin>(data, MAX_FROM_LAN_FRAME);
});
