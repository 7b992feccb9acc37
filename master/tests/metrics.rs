//! `metricsaddress`: the master's Prometheus figures move as its children do.

mod common;

use allex_testkit::{wait_until, HttpClient};
use common::fake_lan::{FakeLan, Options};
use common::{need, spawned, SOON};
use serde_json::json;

/// The value of the sample `name` (labels as written) in `text`.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (key, value) = l.rsplit_once(' ')?;
        (key == name).then(|| value.parse().ok()).flatten()
    })
}

#[test]
fn children_free_ports_spawns_deaths_and_log_bytes_are_counted() {
    let lan = FakeLan::start(Options::default());
    let m = common::start_with(lan.addr.port(), 4, 1000, |cfg| {
        cfg["metricsaddress"] = json!("127.0.0.1:0");
    });
    const PREFIX: &str = "allexmaster metrics on http://";
    let line = m
        .proc()
        .unwrap()
        .wait_for_line(|l| l.starts_with(PREFIX), SOON)
        .unwrap();
    let addr = line[PREFIX.len()..]
        .trim_end_matches("/metrics")
        .parse()
        .unwrap();
    let http = HttpClient::new(addr, None);
    let scrape = || {
        let a = http.get("/metrics").unwrap();
        assert_eq!(a.status, 200, "{a:?}");
        a.body
    };
    let t = scrape();
    assert_eq!(sample(&t, "allex_master_children"), Some(0.0), "{t}");
    assert_eq!(
        sample(&t, r#"allex_master_free_ports{protocol="tcp"}"#),
        Some(4.0),
        "{t}"
    );

    lan.offer(vec![need("Counted", json!({}))]);
    let (_, pid, _) = spawned(&lan, "Counted");
    let t = wait_until("the child's output in its log", SOON, || {
        let t = scrape();
        match sample(&t, "allex_master_log_bytes_written_total") {
            Some(b) if b > 0.0 => Ok(t),
            _ => Err(t),
        }
    })
    .unwrap();
    assert_eq!(sample(&t, "allex_master_children"), Some(1.0), "{t}");
    assert_eq!(
        sample(&t, r#"allex_master_free_ports{protocol="tcp"}"#),
        Some(3.0),
        "{t}"
    );
    assert_eq!(
        sample(&t, "allex_master_spawn_seconds_count"),
        Some(1.0),
        "{t}"
    );

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let t = wait_until("the death counted", SOON, || {
        let t = scrape();
        match sample(&t, r#"allex_master_deaths_total{cause="signal"}"#) {
            Some(1.0) => Ok(t),
            _ => Err(t),
        }
    })
    .unwrap();
    assert!(sample(&t, "allex_master_children").is_some(), "{t}");
}

#[test]
fn a_metrics_address_that_cannot_be_bound_stops_the_start() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let opts = common::options(1, 2, 1000);
    let err = common::Master::start_edited(&opts, |cfg| {
        cfg["metricsaddress"] = json!(addr.to_string());
    })
    .err()
    .expect("started with a taken metricsaddress")
    .to_string();
    assert!(
        err.contains(&format!("cannot serve metrics on {addr} (metricsaddress)")),
        "{err}"
    );
}
