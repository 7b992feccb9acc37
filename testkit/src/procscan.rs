//! Finding processes through /proc: liveness that ignores zombies, and
//! processes by environment variable (how the harness finds a master's
//! children even after the master is gone).

use std::path::Path;

/// Whether `pid` is a live process: present and not a zombie (an orphaned
/// zombie may linger when pid 1 does not reap, but it runs nothing).
pub fn is_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name, which may hold spaces.
        Ok(stat) => match stat.rfind(')') {
            Some(i) => !matches!(stat[i + 1..].trim_start().chars().next(), Some('Z' | 'X')),
            None => true,
        },
        Err(_) => false,
    }
}

/// The process group of `pid`, when it is alive.
pub fn pgid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    // Fields after the name: state, ppid, pgrp.
    rest.split_whitespace().nth(2)?.parse().ok()
}

/// CPU time `pid` has used, user and system, in milliseconds; 0 when it is
/// gone. Tick-sampled (100 Hz), good for a report, not for a benchmark.
pub fn cpu_ms(pid: u32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    // After the name: state is field 3 of the line, utime 14 and stime 15.
    let mut fields = rest.split_whitespace().skip(11);
    let mut tick = || {
        fields
            .next()
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (tick() + tick()) * 10
}

/// Every process (readable by us, but ourselves) with its environment block.
fn environments() -> impl Iterator<Item = (u32, Vec<u8>)> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_str()?.parse::<u32>().ok()?;
            if pid == std::process::id() {
                return None;
            }
            let env =
                std::fs::read(Path::new("/proc").join(pid.to_string()).join("environ")).ok()?;
            Some((pid, env))
        })
}

/// Live processes (readable by us) whose environment has `key=value`.
pub fn pids_with_env(key: &str, value: &str) -> Vec<u32> {
    let needle = format!("{key}={value}");
    let mut out: Vec<u32> = environments()
        .filter(|(_, env)| env.split(|b| *b == 0).any(|kv| kv == needle.as_bytes()))
        .map(|(pid, _)| pid)
        .filter(|pid| is_alive(*pid))
        .collect();
    out.sort_unstable();
    out
}

/// Live processes whose `key` variable is one of `values`, with the value
/// of their `ALLEX_INSTANCE`: which instances run, as processes, for the
/// masters whose runtime directories (or sockets) are given.
pub fn instances_with_env(key: &str, values: &[String]) -> Vec<(u32, String)> {
    let needles: Vec<Vec<u8>> = values
        .iter()
        .map(|v| format!("{key}={v}").into_bytes())
        .collect();
    let mut out: Vec<(u32, String)> = environments()
        .filter_map(|(pid, env)| {
            let mut ours = false;
            let mut instance = None;
            for kv in env.split(|b| *b == 0) {
                if needles.iter().any(|n| n.as_slice() == kv) {
                    ours = true;
                } else if let Some(v) = kv.strip_prefix(b"ALLEX_INSTANCE=") {
                    instance = Some(String::from_utf8_lossy(v).into_owned());
                }
            }
            instance.filter(|_| ours && is_alive(pid)).map(|i| (pid, i))
        })
        .collect();
    out.sort_unstable();
    out
}

/// SIGKILLs each pid's process group (and the pid itself, in case it has left the group).
pub fn kill_all(pids: &[u32]) {
    use nix::sys::signal::{kill, killpg, Signal};
    use nix::unistd::Pid;
    for &pid in pids {
        if let Some(g) = pgid(pid) {
            // Never our own group: that would kill the test runner.
            if g != std::process::id() && g > 1 && Some(g) != pgid(std::process::id()) {
                let _ = killpg(Pid::from_raw(g as i32), Signal::SIGKILL);
            }
        }
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_child_by_env_and_sees_it_die() {
        let mut child = std::process::Command::new("/bin/sleep")
            .arg("30")
            .env("ALLEX_PROCSCAN_TEST", format!("{}", std::process::id()))
            .spawn()
            .unwrap();
        let pid = child.id();
        // Until exec the child still shows our environment.
        crate::wait::wait_until(
            "the child to show its env",
            std::time::Duration::from_secs(10),
            || match pids_with_env("ALLEX_PROCSCAN_TEST", &std::process::id().to_string()) {
                found if found == vec![pid] => Ok(()),
                found => Err(found),
            },
        )
        .unwrap();
        assert!(is_alive(pid));
        assert!(pgid(pid).is_some());
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(!is_alive(pid));
    }
}
