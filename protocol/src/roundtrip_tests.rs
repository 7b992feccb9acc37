//! Every wire and file type survives value -> JSON -> value unchanged.

use crate::config::MasterConfig;
use crate::frame::{decode_text, encode, MAX_FROM_LAN_FRAME};
use crate::lan::{AdminToLan, LanToAdmin, LanToMaster, MasterToLan};
use crate::local::{LocalReply, LocalRequest};
use crate::need::Need;
use crate::spawn::SpawnInfo;
use crate::types::{LanStatus, MasterStatus};
use proptest::prelude::*;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt::Debug;

fn roundtrip<T: Serialize + DeserializeOwned + PartialEq + Debug>(value: &T) {
    let text = encode(value);
    let back: T = decode_text(&text, MAX_FROM_LAN_FRAME).expect("decodes what it encoded");
    assert_eq!(&back, value, "{text}");
}

/// Each seed frame, edited, through every decoder and reader: none panics,
/// and what a reader accepts reads back unchanged.
fn mutated_seeds_never_panic(
    seeds: Vec<String>,
    edits: &[(usize, u8, u8)],
) -> Result<(), proptest::test_runner::TestCaseError> {
    for frame in seeds {
        let mut bytes = frame.into_bytes();
        for (at, byte, op) in edits {
            bytes = mutate(bytes, *at, *byte, *op);
        }
        decodes_or_refuses::<MasterToLan>(&bytes);
        decodes_or_refuses::<LanToMaster>(&bytes);
        decodes_or_refuses::<crate::lan::Opening>(&bytes);
        decodes_or_refuses::<AdminToLan>(&bytes);
        decodes_or_refuses::<LanToAdmin>(&bytes);
        decodes_or_refuses::<LocalRequest>(&bytes);
        decodes_or_refuses::<LocalReply>(&bytes);
        if let Ok(text) = std::str::from_utf8(&bytes) {
            // Through the real readers, validation included: a value
            // they accept is written back and read again unchanged.
            let path = std::path::Path::new("n");
            if let Ok(file) = crate::need::NeedsFile::parse(path, text) {
                let again = crate::need::NeedsFile::parse(path, &file.to_text());
                prop_assert_eq!(again.map(|f| f.0).ok(), Some(file.0));
            }
            let path = std::path::Path::new("c");
            if let Ok(cfg) = MasterConfig::parse(path, text) {
                let text = serde_json::to_string(&cfg).unwrap_or_default();
                prop_assert_eq!(MasterConfig::parse(path, &text).ok(), Some(cfg));
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn master_to_lan(m in any::<MasterToLan>()) { roundtrip(&m) }
    #[test]
    fn lan_to_master(m in any::<LanToMaster>()) { roundtrip(&m) }
    #[test]
    fn admin_to_lan(m in any::<AdminToLan>()) { roundtrip(&m) }
    #[test]
    fn lan_to_admin(m in any::<LanToAdmin>()) { roundtrip(&m) }
    #[test]
    fn local_request(m in any::<LocalRequest>()) { roundtrip(&m) }
    #[test]
    fn local_reply(m in any::<LocalReply>()) { roundtrip(&m) }
    #[test]
    fn master_config(m in any::<MasterConfig>()) { roundtrip(&m) }
    #[test]
    fn need(m in any::<Need>()) { roundtrip(&m) }
    #[test]
    fn needs_file(m in proptest::collection::vec(any::<Need>(), 0..5)) {
        roundtrip(&crate::need::NeedsFile(m))
    }
    #[test]
    fn spawn_info(m in any::<SpawnInfo>()) { roundtrip(&m) }

    /// Through the real reader, validation included: a needs file with
    /// nested propertyhashes reads back exactly as written.
    #[test]
    fn needs_file_through_its_reader(
        needs in proptest::collection::btree_map(
            any::<crate::InstanceName>(),
            crate::need::arb::valid_need(),
            0..5,
        )
    ) {
        let needs: Vec<Need> = needs
            .into_iter()
            .map(|(name, mut n)| {
                n.instancename = name;
                n
            })
            .collect();
        let file = crate::need::NeedsFile(needs.clone());
        let text = file.to_text();
        let back = crate::need::NeedsFile::parse(std::path::Path::new("needs"), &text);
        prop_assert_eq!(back.map(|f| f.0).map_err(|e| e.to_string()), Ok(needs), "{}", text);
    }

    /// Through the real reader: a config it accepts is exactly the one written.
    #[test]
    fn master_config_through_its_reader(c in any::<MasterConfig>()) {
        let text = serde_json::to_string_pretty(&c).unwrap_or_default();
        if let Ok(back) = MasterConfig::parse(std::path::Path::new("c.json"), &text) {
            prop_assert_eq!(back, c);
        }
    }
    #[test]
    fn statuses(a in any::<MasterStatus>(), b in any::<LanStatus>()) {
        roundtrip(&a);
        roundtrip(&b);
    }

    /// Arbitrary bytes never panic the decoders; they yield a typed error or a value.
    #[test]
    fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = crate::frame::decode_bytes::<MasterToLan>(&bytes, 1 << 20);
        let _ = crate::frame::decode_bytes::<LanToMaster>(&bytes, 1 << 20);
        let _ = crate::frame::decode_bytes::<LocalRequest>(&bytes, 1 << 20);
        if let Ok(text) = std::str::from_utf8(&bytes) {
            let _ = MasterConfig::parse(std::path::Path::new("c"), text);
            let _ = crate::need::NeedsFile::parse(std::path::Path::new("n"), text);
        }
    }
}

/// A decoder given any bytes yields a typed error, or a value that encodes
/// and decodes back to itself: never a panic, never a value it cannot say.
fn decodes_or_refuses<T: Serialize + DeserializeOwned + PartialEq + Debug>(bytes: &[u8]) {
    if let Ok(v) = crate::frame::decode_bytes::<T>(bytes, 1 << 20) {
        let text = encode(&v);
        let back: T = decode_text(&text, 1 << 20).expect("a decoded value re-encodes");
        assert_eq!(back, v, "{text}");
    }
}

/// One random edit (replace, insert or delete a byte) of a valid frame.
fn mutate(mut bytes: Vec<u8>, at: usize, byte: u8, op: u8) -> Vec<u8> {
    if bytes.is_empty() {
        return vec![byte];
    }
    let at = at % bytes.len();
    match op % 3 {
        0 => bytes[at] = byte,
        1 => bytes.insert(at, byte),
        _ => {
            bytes.remove(at);
        }
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("ALLEX_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(512)
    ))]

    /// The CI-sized fuzz pass: valid frames with edits hit the decoders' deep
    /// paths (wrong types, broken strings, cut objects) far more often than
    /// random bytes do. Raise ALLEX_FUZZ_CASES for a longer run; the
    /// coverage-guided targets live in fuzz/. Seeded from the master's
    /// messages here, from the admin's and the needs file's below (the
    /// strategies of every type at once overflow a test thread's stack).
    #[test]
    fn mutated_frames_never_panic(
        m in any::<MasterToLan>(),
        r in any::<LanToMaster>(),
        q in any::<LocalRequest>(),
        rq in any::<LocalReply>(),
        edits in proptest::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..4),
    ) {
        // A master's `hello`, the opening frame, is among them.
        mutated_seeds_never_panic(vec![encode(&m), encode(&r), encode(&q), encode(&rq)], &edits)?;
    }

    /// As above, seeded from the admin's messages and the needs file's entries.
    #[test]
    fn mutated_admin_frames_never_panic(
        a in any::<AdminToLan>(),
        ra in any::<LanToAdmin>(),
        n in any::<Need>(),
        edits in proptest::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..4),
    ) {
        mutated_seeds_never_panic(vec![encode(&a), encode(&ra), format!("[{}]", encode(&n))], &edits)?;
    }

    /// Config texts with edits never panic the located-error code.
    #[test]
    fn mutated_configs_never_panic(
        c in any::<MasterConfig>(),
        edits in proptest::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..4),
    ) {
        let mut bytes = serde_json::to_string_pretty(&c).unwrap_or_default().into_bytes();
        for (at, byte, op) in &edits {
            bytes = mutate(bytes, *at, *byte, *op);
        }
        if let Ok(text) = std::str::from_utf8(&bytes) {
            let _ = MasterConfig::parse(std::path::Path::new("c"), text);
        }
    }
}
