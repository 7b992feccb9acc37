//! `allex-sim bench --quick` runs against the real binaries and prints every
//! figure of the issue beside the raw limit. Timings are not asserted: a
//! benchmark is not a timed test.

use allex_sim::process::run_with_deadline;
use allex_sim::procscan::{kill_all, pids_with_env};
use std::process::Command;
use std::time::Duration;

/// Kills whatever the bench left behind (found by an env var every
/// descendant inherits), also when the test fails.
struct Leftovers(String);

impl Drop for Leftovers {
    fn drop(&mut self) {
        kill_all(&pids_with_env("ALLEX_BENCH_TEST", &self.0));
    }
}

#[test]
fn quick_bench_prints_every_figure_with_its_raw_limit() {
    let tag = format!("quick-{}", std::process::id());
    let _guard = Leftovers(tag.clone());
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    let mut cmd = Command::new(allex_sim::binary("allex-sim").unwrap());
    cmd.args(["bench", "--quick", "--json"])
        .arg(&json)
        .env("ALLEX_BENCH_TEST", &tag)
        .env("RUST_LOG", "warn");
    let out = run_with_deadline("allex-sim bench", cmd, Duration::from_secs(600)).unwrap();
    assert!(
        out.status.success(),
        "bench failed ({}):\n{}\n{}",
        out.status,
        out.stdout,
        out.stderr
    );
    let table = &out.stdout;
    for figure in [
        "cold start N=5: all ports accept",
        "cold start N=10: all listed running",
        "kill 1 of 10 -> port accepts, median of 3",
        "kill 1 of 10 -> listed running, p99 of 3",
        "kill all 10 -> all listed running",
        "master PSS, idle, 10 children",
        "lan manager CPU per 30 s idle",
        "4 virtual masters, 100 needs (shared out): all running",
        "messages per second",
    ] {
        assert!(table.contains(figure), "no {figure:?} in:\n{table}");
    }
    assert!(
        table.contains("raw limit") && table.contains("x raw"),
        "{table}"
    );

    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let rows = report["rows"].as_array().unwrap();
    assert_eq!(report["quick"], true);
    for group in 1..=4 {
        assert!(
            rows.iter().any(|r| r["group"] == group),
            "no figure of group {group}: {report}"
        );
    }
    for r in rows {
        let v = r["value"].as_f64().unwrap();
        assert!(v.is_finite() && v >= 0.0, "{r}");
    }
    // Figures 1 and 2 are compared with fork/exec alone.
    let with_raw = rows.iter().filter(|r| r["raw"].as_f64().is_some()).count();
    assert!(with_raw >= 9, "{report}");
}
