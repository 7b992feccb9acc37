//! Figure 3, footprint: memory (RSS and PSS from /proc/PID/smaps_rollup) and
//! CPU time (from /proc/PID/task/*/schedstat) of a process left idle.

use super::BenchError;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

/// Memory of one process, in KiB.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Memory {
    /// Resident set size.
    pub rss_kib: u64,
    /// Proportional set size: shared pages divided among their sharers.
    pub pss_kib: u64,
}

/// Reads RSS and PSS of `pid`.
pub fn memory(pid: u32) -> Result<Memory, BenchError> {
    let path = format!("/proc/{pid}/smaps_rollup");
    let text = std::fs::read_to_string(&path).map_err(|source| BenchError::Io {
        what: format!("reading {path}"),
        source,
    })?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
    };
    match (field("Rss:"), field("Pss:")) {
        (Some(rss_kib), Some(pss_kib)) => Ok(Memory { rss_kib, pss_kib }),
        _ => Err(BenchError::Other(format!("{path} has no Rss/Pss lines"))),
    }
}

/// Nanoseconds each live thread of `pid` has run on a CPU, by thread id:
/// schedstat counts exact run time, unlike the tick-sampled utime/stime of
/// /proc/PID/stat.
pub fn thread_cpu_ns(pid: u32) -> Result<BTreeMap<u32, u64>, BenchError> {
    let dir = format!("/proc/{pid}/task");
    let entries = std::fs::read_dir(&dir).map_err(|source| BenchError::Io {
        what: format!("listing {dir}"),
        source,
    })?;
    let mut out = BTreeMap::new();
    for e in entries.flatten() {
        let Some(tid) = e.file_name().to_str().and_then(|t| t.parse().ok()) else {
            continue;
        };
        if let Some(ns) = read_schedstat(&e.path().join("schedstat")) {
            out.insert(tid, ns);
        }
    }
    Ok(out)
}

/// Nanoseconds `pid`'s live threads have run on a CPU, summed.
pub fn cpu_ns(pid: u32) -> Result<u64, BenchError> {
    Ok(thread_cpu_ns(pid)?.values().sum())
}

fn read_schedstat(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path)
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// How often the idle window looks at the threads: a thread that exits
/// (tokio's idle blocking threads do) loses at most its last interval.
const SAMPLE: Duration = Duration::from_millis(50);

/// CPU time of each of `pids` over `window` of doing nothing, in ms.
///
/// Threads come and go, and a summed snapshot at each end would lose the
/// run time of threads that exited in between (or count it negative), so
/// each thread's run time is followed from its first to its last sighting.
/// Reading /proc does not wake the processes.
pub fn idle_cpu_ms(pids: &[u32], window: Duration) -> Result<Vec<f64>, BenchError> {
    let start = Instant::now();
    let mut first: Vec<BTreeMap<u32, u64>> = pids
        .iter()
        .map(|p| thread_cpu_ns(*p))
        .collect::<Result<_, _>>()?;
    let mut last = first.clone();
    loop {
        let left = window.saturating_sub(start.elapsed());
        if left.is_zero() {
            break;
        }
        std::thread::sleep(left.min(SAMPLE));
        for (i, pid) in pids.iter().enumerate() {
            for (tid, ns) in thread_cpu_ns(*pid)? {
                // A thread born in the window ran all its time in it.
                first[i].entry(tid).or_insert(0);
                last[i].insert(tid, ns);
            }
        }
    }
    Ok(first
        .iter()
        .zip(&last)
        .map(|(f, l)| {
            let ns: u64 = l
                .iter()
                .map(|(tid, ns)| ns.saturating_sub(f.get(tid).copied().unwrap_or(0)))
                .sum();
            ns as f64 / 1e6
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_memory_and_cpu() {
        let pid = std::process::id();
        let m = memory(pid).unwrap();
        assert!(
            m.rss_kib > 0 && m.pss_kib > 0 && m.pss_kib <= m.rss_kib,
            "{m:?}"
        );
        let a = cpu_ns(pid).unwrap();
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_add(std::hint::black_box(i));
        }
        std::hint::black_box(x);
        assert!(cpu_ns(pid).unwrap() > a);
    }
}
