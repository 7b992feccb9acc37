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
