//! What the lan manager's tests share: the test kit's pieces (a real
//! `allexlanmanager` per test, fake masters speaking the real protocol over
//! real WebSockets, real listening ports), and needs written before a start.
#![allow(dead_code, unused_imports)]

pub use allex_testkit::fake_master::{hello, FakeMaster};
pub use allex_testkit::link::{next, raw, Next, Ws};
pub use allex_testkit::ports::{dead_ports, listening, Listening};
pub use allex_testkit::wait::{eventually, eventually_async, SOON};
pub use allex_testkit::{LanManager, LanOptions, Timings};
pub use std::time::Duration;

use allex_protocol::{InstanceName, Need};
use std::path::Path;

/// The binary under test, for tests of its command line itself.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_allexlanmanager")
}

/// `n` milliseconds, for the timers a test shortens.
pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Writes a needs file before the lan manager starts.
pub fn write_needs(dir: &Path, needs: &[Need]) {
    let d = dir.join(".allexlanmanager");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(
        d.join("needs"),
        serde_json::to_string_pretty(needs).unwrap(),
    )
    .unwrap();
}

/// `n` needs of module `m` named `<prefix>0..`.
pub fn needs(m: &str, prefix: &str, n: usize) -> Vec<Need> {
    (0..n)
        .map(|i| Need::new(m, InstanceName::new(format!("{prefix}{i}")).unwrap()))
        .collect()
}

/// A need of module `m` named `instance`.
pub fn need(m: &str, instance: &str) -> Need {
    Need::new(m, InstanceName::new(instance).unwrap())
}
