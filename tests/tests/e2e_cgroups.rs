//! Everything a service forked goes with it: each child of the master runs
//! in a cgroup of its own, so a daemon the service double-forked into its own
//! session is killed when the need is removed, and after a master SIGKILL
//! the master's next start kills what the last one left.

use allex_e2e::{need, ok, ppid, wait_dead, wait_listed, DEADLINE};
use allex_protocol::{MasterStatus, Protocol};
use allex_sim::harness::{LanManager, LanOptions, Master, MasterOptions};
use allex_sim::procscan::is_alive;
use allex_sim::wait::wait_until;
use serde_json::json;
use std::path::{Path, PathBuf};

/// The master's cgroup directory, or `None` (the test is skipped) where
/// the kernel offers no cgroup v2 the master can use.
fn cgroup_dir(test: &str, st: &MasterStatus) -> Option<PathBuf> {
    match &st.cgroup {
        Some(dir) => Some(PathBuf::from(dir)),
        None => {
            allex_testkit::skip::skip(
                test,
                "no usable cgroup v2 here (the master runs on process groups)",
            );
            None
        }
    }
}

/// A running `testsvc` need that double-forks a daemon: its pid and the daemon's.
fn forker(lm: &LanManager, m: &Master, name: &str) -> (u32, u32) {
    let mut n = need(name, json!({ "double_fork": true }));
    n.protocols = Some(vec![Protocol::Tcp]);
    ok(lm.need_add(&n));
    let rec = wait_listed(lm, name, None);
    let log = m.runtime_dir().join("logs").join(format!("{name}.log"));
    let daemon = wait_until("the service to say its daemon's pid", DEADLINE, || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.lines()
            .find_map(|l| l.strip_prefix("daemon ")?.trim().parse::<u32>().ok())
            .ok_or(text)
    })
    .unwrap_or_else(|e| panic!("{e}"));
    // The premise: a daemon out of the service's reach by process group.
    assert!(is_alive(daemon), "the daemon runs");
    assert_ne!(
        ppid(daemon),
        Some(rec.pid),
        "the daemon is no child of the service"
    );
    let sid = |pid: u32| nix::unistd::getsid(Some(nix::unistd::Pid::from_raw(pid as i32)));
    assert_ne!(
        sid(daemon),
        sid(rec.pid),
        "the daemon is in a session of its own"
    );
    (rec.pid, daemon)
}

/// The group directories under the master's cgroup directory.
fn groups(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn started() -> (LanManager, Master) {
    let lm = ok(LanManager::start(LanOptions::default()));
    let m = ok(Master::start(&MasterOptions::new(lm.addr())));
    (lm, m)
}

#[test]
fn a_double_forked_daemon_goes_with_need_remove() {
    let (lm, m) = started();
    let Some(dir) = cgroup_dir(
        "a_double_forked_daemon_goes_with_need_remove",
        &ok(m.status()),
    ) else {
        return;
    };
    let (pid, daemon) = forker(&lm, &m, "Forker");
    // The daemon is in the service's group, whatever its session.
    let own = std::fs::read_to_string(format!("/proc/{daemon}/cgroup")).unwrap_or_default();
    let group = groups(&dir)
        .into_iter()
        .find(|g| g.starts_with("Forker."))
        .unwrap_or_else(|| panic!("no group for Forker under {}", dir.display()));
    assert!(own.contains(&group), "the daemon's cgroup: {own}");
    ok(lm.need_remove("Forker"));
    wait_dead(pid, "the service");
    wait_dead(daemon, "the daemon it forked");
    wait_until("its group to be removed", DEADLINE, || {
        let left = groups(&dir);
        if left.is_empty() {
            Ok(())
        } else {
            Err(left)
        }
    })
    .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn after_a_master_sigkill_its_next_start_kills_what_the_last_one_left() {
    let (lm, mut m) = started();
    let test = "after_a_master_sigkill_its_next_start_kills_what_the_last_one_left";
    let Some(_) = cgroup_dir(test, &ok(m.status())) else {
        return;
    };
    let (pid, daemon) = forker(&lm, &m, "Orphan");
    ok(m.kill());
    // The service dies with its master (PR_SET_PDEATHSIG); its daemon does not.
    wait_dead(pid, "the service of the killed master");
    assert!(is_alive(daemon), "the daemon outlived the SIGKILLed master");
    ok(m.restart());
    wait_dead(daemon, "the daemon the last start left");
    let log = m.log();
    assert!(
        log.contains("killed 1 process left by an earlier start of this master"),
        "{log}"
    );
}

#[test]
fn limits_apply_where_the_kernel_offers_them_and_are_reported_where_not() {
    let test = "limits_apply_where_the_kernel_offers_them_and_are_reported_where_not";
    let lm = ok(LanManager::start(LanOptions::default()));
    let m = ok(Master::start_edited(
        &MasterOptions::new(lm.addr()),
        |cfg| {
            cfg["services"]["testsvc"]["limits"] =
                json!({ "memorymaxbytes": 67_108_864u64, "cpuweight": 50 });
        },
    ));
    let Some(dir) = cgroup_dir(test, &ok(m.status())) else {
        return;
    };
    let mut n = need("Limited", json!({}));
    n.protocols = Some(vec![Protocol::Tcp]);
    ok(lm.need_add(&n));
    wait_listed(&lm, "Limited", None);
    let group = groups(&dir)
        .into_iter()
        .find(|g| g.starts_with("Limited."))
        .map(|g| dir.join(g))
        .unwrap_or_else(|| panic!("no group for Limited under {}", dir.display()));
    let enabled = std::fs::read_to_string(dir.join("cgroup.subtree_control")).unwrap_or_default();
    let has = |c: &str| enabled.split_whitespace().any(|w| w == c);
    let log = m.log();
    for (controller, file, value) in [
        ("memory", "memory.max", "67108864"),
        ("cpu", "cpu.weight", "50"),
    ] {
        if has(controller) {
            let got = std::fs::read_to_string(group.join(file)).unwrap_or_default();
            assert_eq!(got.trim(), value, "{file}");
        } else {
            // The service runs all the same, and the master said why at start.
            assert!(
                log.contains("cannot apply limits") && log.contains(controller),
                "no word on the missing {controller} controller: {log}"
            );
        }
    }
}
