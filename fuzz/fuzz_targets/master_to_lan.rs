//! Master -> lan manager frames, and the opening frame, as the lan manager decodes them.
#![no_main]
use allex_protocol::frame::{decode_bytes, MAX_TO_LAN_FRAME};
use allex_protocol::lan::{MasterToLan, Opening};
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = decode_bytes::<Opening>(data, MAX_TO_LAN_FRAME);
    let _ = decode_bytes::<MasterToLan>(data, MAX_TO_LAN_FRAME);
});
