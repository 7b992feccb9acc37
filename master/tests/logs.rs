//! `allexmaster logs`: a child's output from its log, the last lines, and
//! followed across rotations without a line lost or doubled.

mod common;

use allex_testkit::process::{run_with_deadline, Proc, Stderr};
use common::fake_lan::{FakeLan, Options};
use common::{master_bin, need, spawned, SOON};
use serde_json::json;
use std::process::Command;

/// The `tick N` numbers in `lines`, in order.
fn ticks<'a>(lines: impl IntoIterator<Item = &'a String>) -> Vec<u64> {
    lines
        .into_iter()
        .filter_map(|l| l.strip_prefix("tick ")?.parse().ok())
        .collect()
}

#[test]
fn logs_follows_a_service_across_rotations_and_prints_the_last_lines() {
    let lan = FakeLan::start(Options::default());
    // logmaxbytes is 4096 here: with a tick every 2 ms the log rotates
    // about every second.
    let m = common::start(lan.addr.port(), 2);
    lan.offer(vec![need("Ticker", json!({"tick_ms": 2}))]);
    spawned(&lan, "Ticker");

    let mut cmd = Command::new(master_bin());
    cmd.arg("logs")
        .arg("Ticker")
        .args(["--follow", "--lines", "5", "--config"])
        .arg(m.config_path());
    let follower = Proc::spawn("allexmaster logs --follow", cmd, Stderr::Null).unwrap();
    let first = follower
        .wait_for_line(|l| l.starts_with("tick "), SOON)
        .unwrap();
    let from: u64 = first["tick ".len()..].parse().unwrap();
    // Far enough for two rotations of a 4096-byte log.
    let until = from + 1200;
    follower
        .wait_for_line(|l| l == format!("tick {until}"), SOON.saturating_mul(3))
        .unwrap();
    let seen = ticks(&follower.lines());
    let upto: Vec<u64> = seen.iter().copied().take_while(|t| *t <= until).collect();
    assert_eq!(
        upto,
        (from..=until).collect::<Vec<_>>(),
        "lines lost or doubled while following"
    );
    assert!(
        m.runtime_dir().join("logs/Ticker.log.1").exists(),
        "the log never rotated, so nothing was shown"
    );

    // The last lines, and only them.
    let mut cmd = Command::new(master_bin());
    cmd.args(["logs", "Ticker", "--lines", "3", "--config"])
        .arg(m.config_path());
    let out = run_with_deadline("allexmaster logs", cmd, SOON).unwrap();
    assert!(out.status.success(), "{}", out.stderr);
    let lines: Vec<String> = out.stdout.lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 3, "{:?}", out.stdout);
    let t = ticks(&lines);
    assert_eq!(t.len(), 3, "{lines:?}");
    assert!(t[0] + 1 == t[1] && t[1] + 1 == t[2], "{lines:?}");
}

#[test]
fn logs_of_an_instance_that_never_ran_here_is_a_clear_error() {
    let lan = FakeLan::start(Options::default());
    let m = common::start(lan.addr.port(), 2);
    for (name, words) in [("Nobody", "no log of Nobody"), ("../etc", "instance")] {
        let mut cmd = Command::new(master_bin());
        cmd.args(["logs", name, "--config"]).arg(m.config_path());
        let out = run_with_deadline("allexmaster logs", cmd, SOON).unwrap();
        assert!(!out.status.success(), "{name}: {out:?}");
        assert!(out.stderr.contains(words), "{name}: {}", out.stderr);
    }
}
