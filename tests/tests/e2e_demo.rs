//! The README's "run the system" command, `allex-sim demo`, as a user runs it
//! (on its own port so it runs beside other tests).

use allex_e2e::DEADLINE;
use allex_protocol::spawn::ENV_RUNTIMEDIRECTORY;
use allex_sim::process::Stderr;
use allex_sim::wait::wait_port_closed;
use allex_sim::{binary, procscan, Proc};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::net::SocketAddr;
use std::process::Command;

/// The value after `key` in `line`, up to the next space, comma or parenthesis.
fn field<'a>(line: &'a str, key: &str) -> &'a str {
    let rest = &line[line
        .find(key)
        .unwrap_or_else(|| panic!("{key} in {line:?}"))
        + key.len()..];
    let end = rest.find([' ', ',', ')']).unwrap_or(rest.len());
    &rest[..end]
}

/// What the demo said about the processes it started.
struct Started {
    lan_addr: SocketAddr,
    lan_pid: u32,
    master_pid: u32,
    runtime: String,
    demo_pid: u32,
}

/// A running `allex-sim demo`. Killing the demo itself would orphan the lan
/// manager and master it started (they have their own process groups), so
/// on drop this also kills whatever the demo said it started.
struct Demo {
    proc: Proc,
    /// Held while the demo runs: every demo's master takes the seed's fixed
    /// port ranges, so two side by side could hand one port to both their
    /// services (one port check then passes on the other's listener).
    _one_at_a_time: std::sync::MutexGuard<'static, ()>,
}

static SEED_RANGES: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl Demo {
    fn start(args: &[&str]) -> Demo {
        // A test that failed while holding it poisons it; the ranges are free again.
        let guard = SEED_RANGES.lock().unwrap_or_else(|p| p.into_inner());
        let mut cmd = Command::new(binary("allex-sim").unwrap());
        // The binaries are built by `cargo test` already; the build step is
        // what `cargo run -p allex-sim -- demo` adds in front.
        cmd.arg("demo")
            .args(args)
            .args(["--port", "0", "--no-build"])
            .env_remove("CARGO");
        Demo {
            proc: Proc::spawn("allex-sim demo", cmd, Stderr::Inherit).unwrap(),
            _one_at_a_time: guard,
        }
    }

    fn text(&self) -> String {
        self.proc.lines().join("\n")
    }

    fn line(&self, prefix: &str) -> String {
        let line = self
            .proc
            .wait_for_line(|l| l.starts_with(prefix), DEADLINE * 2)
            .unwrap_or_else(|e| panic!("{e}\n{}", self.text()));
        line
    }

    fn started(&self) -> Started {
        let lan = self.line("lan manager  listening on ");
        let master = self.line("master       ");
        let running = self.line("Demo is running: pid ");
        Started {
            lan_addr: field(&lan, "listening on ").parse().unwrap(),
            lan_pid: field(&lan, "(pid ").parse().unwrap(),
            master_pid: field(&master, "(pid ").parse().unwrap(),
            runtime: field(&master, "runtime dir ").to_string(),
            demo_pid: field(&running, "pid ").parse().unwrap(),
        }
    }

    fn assert_all_gone(&self, s: &Started) {
        for (what, pid) in [
            ("lan manager", s.lan_pid),
            ("master", s.master_pid),
            ("Demo", s.demo_pid),
        ] {
            assert!(
                !procscan::is_alive(pid),
                "{what} (pid {pid}) outlived the demo"
            );
        }
        let left = procscan::pids_with_env(ENV_RUNTIMEDIRECTORY, &s.runtime);
        assert!(
            left.is_empty(),
            "children of the demo's master left: {left:?}"
        );
        wait_port_closed(s.lan_addr, DEADLINE).unwrap();
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let lines = self.proc.lines();
        let _ = self.proc.kill_now();
        let pid_after = |prefix: &str| {
            lines
                .iter()
                .find(|l| l.starts_with(prefix))
                .and_then(|l| l.split("(pid ").nth(1)?.split(')').next()?.parse().ok())
        };
        let mut pids: Vec<u32> = ["lan manager  ", "master       "]
            .iter()
            .filter_map(|p| pid_after(p))
            .collect();
        if let Some(m) = lines.iter().find(|l| l.starts_with("master       ")) {
            if let Some(dir) = m.split("runtime dir ").nth(1) {
                pids.extend(procscan::pids_with_env(ENV_RUNTIMEDIRECTORY, dir.trim()));
            }
        }
        procscan::kill_all(&pids);
    }
}

#[test]
fn demo_once_shows_a_running_service_and_cleans_up() {
    let demo = Demo::start(&["--once"]);
    let s = demo.started();
    let status = demo.proc.wait_exit(DEADLINE * 2).unwrap();
    let text = demo.text();
    assert!(status.success(), "demo failed ({status}):\n{text}");

    // It showed the service answering on its ports as the pid it runs
    // under, from the seed's default ranges.
    for (proto, range) in [
        ("tcp", 15000..16000),
        ("http", 16000..17000),
        ("ws", 17000..18000),
    ] {
        let answer = demo.line(&format!("  {proto:<4} 127.0.0.1:"));
        let port: u16 = field(&answer, "127.0.0.1:").parse().unwrap();
        assert!(
            range.contains(&port),
            "{proto} port {port} outside the seed's range"
        );
        assert!(
            answer.ends_with(&format!("answers: allex-testsvc Demo {}", s.demo_pid)),
            "{answer}"
        );
    }
    // Both status reports, and what to type next.
    assert!(text.contains("$ allexlanmanager status"), "{text}");
    let master_status = &text[text.find("$ allexmaster status").expect(&text)..];
    assert!(master_status.contains(&s.demo_pid.to_string()), "{text}");
    assert!(
        text.contains("need add --module allex_testsvc --instance Demo2"),
        "{text}"
    );
    assert!(text.contains(&format!("kill -9 {}", s.demo_pid)), "{text}");

    demo.assert_all_gone(&s);
}

#[test]
fn demo_follows_a_killed_service_and_stops_everything_on_ctrl_c() {
    let demo = Demo::start(&[]);
    let s = demo.started();
    demo.line("Following the running list");
    let first = demo.line("Demo: running, pid ");
    assert_eq!(field(&first, "pid ").parse::<u32>().unwrap(), s.demo_pid);

    // What the demo suggests: kill the service and watch it come back.
    kill(Pid::from_raw(s.demo_pid as i32), Signal::SIGKILL).unwrap();
    let back = demo.line("Demo: now pid ");
    assert!(back.ends_with(&format!("(was {})", s.demo_pid)), "{back}");

    // Ctrl-C reaches the demo (its lan manager and master have their own
    // process groups, so only the demo hears it) and it stops everything.
    kill(Pid::from_raw(demo.proc.pid() as i32), Signal::SIGINT).unwrap();
    let status = demo.proc.wait_exit(DEADLINE).unwrap();
    assert!(status.success(), "demo failed ({status}):\n{}", demo.text());
    demo.line("done: every process the demo started is gone");
    let new_pid: u32 = field(&back, "now pid ").parse().unwrap();
    assert!(
        !procscan::is_alive(new_pid),
        "the new Demo outlived the demo"
    );
    demo.assert_all_gone(&s);
}

#[test]
fn demo_refuses_a_taken_port_with_a_clear_message() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let mut cmd = Command::new(binary("allex-sim").unwrap());
    cmd.args(["demo", "--once", "--no-build", "--port", &port.to_string()])
        .env_remove("CARGO");
    let out = allex_sim::process::run_with_deadline("allex-sim demo", cmd, DEADLINE).unwrap();
    assert!(!out.status.success(), "{out:?}");
    assert!(
        out.stderr.contains(&format!("127.0.0.1:{port} is taken")) && out.stderr.contains("--port"),
        "{}",
        out.stderr
    );
}
