//! Unix-socket frames between a child or CLI and the master, both directions.
#![no_main]
use allex_protocol::frame::{decode_bytes, MAX_LOCAL_FRAME};
use allex_protocol::local::{LocalReply, LocalRequest};
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = decode_bytes::<LocalRequest>(data, MAX_LOCAL_FRAME);
    let _ = decode_bytes::<LocalReply>(data, MAX_LOCAL_FRAME);
});
