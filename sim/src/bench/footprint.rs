//! Figure 3, footprint: memory (RSS and PSS from /proc/PID/smaps_rollup) and
//! CPU time (from /proc/PID/task/*/schedstat) of a process left idle.

use super::BenchError;
use std::path::Path;
use std::time::Duration;

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

/// Nanoseconds `pid` has run on a CPU, summed over its threads: schedstat
/// counts exact run time, unlike the tick-sampled utime/stime of stat.
pub fn cpu_ns(pid: u32) -> Result<u64, BenchError> {
    let dir = format!("/proc/{pid}/task");
    let entries = std::fs::read_dir(&dir).map_err(|source| BenchError::Io {
        what: format!("listing {dir}"),
        source,
    })?;
    let mut total = 0;
    for e in entries.flatten() {
        total += read_schedstat(&e.path().join("schedstat")).unwrap_or(0);
    }
    Ok(total)
}

fn read_schedstat(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path)
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// CPU time of each of `pids` over `window` of doing nothing, in ms.
pub fn idle_cpu_ms(pids: &[u32], window: Duration) -> Result<Vec<f64>, BenchError> {
    let before: Vec<u64> = pids.iter().map(|p| cpu_ns(*p)).collect::<Result<_, _>>()?;
    // The measurement is of idleness: this process must not poke them meanwhile.
    std::thread::sleep(window);
    let after: Vec<u64> = pids.iter().map(|p| cpu_ns(*p)).collect::<Result<_, _>>()?;
    Ok(before
        .iter()
        .zip(&after)
        .map(|(b, a)| a.saturating_sub(*b) as f64 / 1e6)
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
