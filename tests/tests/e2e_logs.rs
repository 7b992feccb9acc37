//! `allexlanmanager logs NAME`: a service's output streamed from the master
//! that runs it, over its link, to a CLI anywhere; the stream ends on the
//! master's side when the reader goes.

use allex_e2e::{cluster, need, ok, DEADLINE};
use allex_sim::harness::Timings;
use allex_sim::process::{Proc, Stderr};
use allex_sim::wait::wait_until;
use serde_json::json;
use std::process::Command;

/// The `tick N` numbers in `lines`, in order.
fn ticks<'a>(lines: impl IntoIterator<Item = &'a String>) -> Vec<u64> {
    lines
        .into_iter()
        .filter_map(|l| l.strip_prefix("tick ")?.parse().ok())
        .collect()
}

/// Threads of the master answering log requests.
fn log_threads(master_pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{master_pid}/task"))
        .map(|tasks| {
            tasks
                .flatten()
                .filter(|t| {
                    std::fs::read_to_string(t.path().join("comm"))
                        .is_ok_and(|c| c.starts_with("allex-logs-"))
                })
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn a_services_output_streams_from_its_master_and_stops_when_the_reader_goes() {
    let c = cluster(1, false, 10, Timings::default());
    ok(c.need_add(&need("Ticker", json!({"tick_ms": 5}))));
    ok(c.wait_running("Ticker", DEADLINE));
    let lan = c.lan();
    let bin = allex_sim::binary("allexlanmanager").unwrap();

    // The last lines.
    let out = wait_until("three ticks in the log", DEADLINE, || {
        let out = lan.cli(&["logs", "Ticker", "--lines", "3"])?;
        let lines: Vec<String> = out.stdout.lines().map(str::to_string).collect();
        match ticks(&lines).len() {
            3 if out.status.success() => Ok(lines),
            _ => Err(allex_sim::harness::HarnessError::Expectation(format!(
                "{out:?}"
            ))),
        }
    })
    .unwrap();
    let t = ticks(&out);
    assert!(t[0] + 1 == t[1] && t[1] + 1 == t[2], "{out:?}");

    // Followed: every tick, in order, from another process anywhere.
    let mut cmd = Command::new(&bin);
    cmd.args(["logs", "Ticker", "--follow", "--lines", "1", "--connect"])
        .arg(lan.addr().to_string())
        .env_remove("ALLEX_TOKEN");
    let follower = Proc::spawn("allexlanmanager logs --follow", cmd, Stderr::Null).unwrap();
    let first = follower
        .wait_for_line(|l| l.starts_with("tick "), DEADLINE)
        .unwrap();
    let from: u64 = first["tick ".len()..].parse().unwrap();
    follower
        .wait_for_line(|l| l == format!("tick {}", from + 200), DEADLINE)
        .unwrap();
    let seen: Vec<u64> = ticks(&follower.lines())
        .into_iter()
        .take_while(|t| *t <= from + 200)
        .collect();
    assert_eq!(
        seen,
        (from..=from + 200).collect::<Vec<_>>(),
        "lines lost or doubled"
    );
    let master_pid = c.master(0).pid().unwrap();
    assert_eq!(log_threads(master_pid), 1, "one reader, one log thread");

    // The reader goes: the master stops reading for it.
    follower.kill_now().unwrap();
    wait_until(
        "the master's log thread to end",
        DEADLINE,
        || match log_threads(master_pid) {
            0 => Ok(()),
            n => Err(n),
        },
    )
    .unwrap();

    // A need that runs nowhere has no log to stream.
    let out = lan.cli(&["logs", "Nobody"]).unwrap();
    assert!(!out.status.success());
    assert!(
        out.stderr.contains("Nobody is not running"),
        "{}",
        out.stderr
    );
}
