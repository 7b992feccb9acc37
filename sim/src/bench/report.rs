//! The bench's result: one row per figure, printed as a table or written as JSON.

use serde::Serialize;

/// One measured figure.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Which figure of the issue (1 to 4).
    pub group: u8,
    /// What was measured.
    pub figure: String,
    /// The value, in `unit`.
    pub value: f64,
    /// `ms`, `MiB`, `msg/s` ...
    pub unit: &'static str,
    /// The value must stay below this to meet the target, when one applies.
    pub target: Option<f64>,
    /// The same work done by fork/exec alone, in `unit`, when comparable.
    pub raw: Option<f64>,
}

impl Row {
    /// A row without target or raw limit.
    pub fn new(group: u8, figure: impl Into<String>, value: f64, unit: &'static str) -> Row {
        Row {
            group,
            figure: figure.into(),
            value,
            unit,
            target: None,
            raw: None,
        }
    }

    /// Sets the target, when `applies`.
    pub fn target(mut self, applies: bool, below: f64) -> Row {
        self.target = applies.then_some(below);
        self
    }

    /// Sets the raw limit.
    pub fn raw(mut self, raw: f64) -> Row {
        self.raw = Some(raw);
        self
    }

    /// The value divided by the raw limit.
    pub fn ratio(&self) -> Option<f64> {
        self.raw.filter(|r| *r > 0.0).map(|r| self.value / r)
    }

    /// Whether the target is met; `None` when no target applies.
    pub fn met(&self) -> Option<bool> {
        self.target.map(|t| self.value < t)
    }
}

/// Where the figures were taken.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// CPUs available to this process.
    pub cpus: usize,
    /// CPU model from /proc/cpuinfo.
    pub cpu_model: String,
    /// Kernel release.
    pub kernel: String,
    /// Whether the binaries under test are release builds (a guess from the path).
    pub release_build: bool,
}

impl Machine {
    /// Describes this machine.
    pub fn this() -> Machine {
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix("model name"))
                    .map(|r| r.trim_start_matches([' ', '\t', ':']).trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".into());
        let release_build = crate::bins::binary("allexmaster")
            .map(|p| p.components().any(|c| c.as_os_str() == "release"))
            .unwrap_or(false);
        Machine {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model,
            kernel,
            release_build,
        }
    }
}

/// Everything one bench run produced.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The command line that produced it.
    pub command: String,
    /// The machine.
    pub machine: Machine,
    /// Whether this was a `--quick` run (small sizes, no targets).
    pub quick: bool,
    /// The figures.
    pub rows: Vec<Row>,
    /// How each kind of figure was taken.
    pub method: Vec<String>,
}

fn num(v: f64) -> String {
    if v >= 100_000.0 {
        format!("{v:.0}")
    } else if v >= 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = &self.machine;
        writeln!(
            f,
            "allex-sim bench on {} CPU(s), {}, Linux {}{}{}",
            m.cpus,
            m.cpu_model,
            m.kernel,
            if m.release_build { "" } else { ", DEBUG build" },
            if self.quick {
                ", --quick (no targets)"
            } else {
                ""
            }
        )?;
        writeln!(f, "command: {}", self.command)?;
        writeln!(
            f,
            "{:<3} {:<48} {:>12} {:>10} {:>12} {:>8}  verdict",
            "#", "figure", "value", "target", "raw limit", "x raw"
        )?;
        for r in &self.rows {
            let unit = |v: f64| format!("{} {}", num(v), r.unit);
            writeln!(
                f,
                "{:<3} {:<48} {:>12} {:>10} {:>12} {:>8}  {}",
                r.group,
                r.figure,
                unit(r.value),
                r.target
                    .map(|t| format!("< {}", num(t)))
                    .unwrap_or_else(|| "-".into()),
                r.raw.map(unit).unwrap_or_else(|| "-".into()),
                r.ratio()
                    .map(|x| format!("{x:.1}x"))
                    .unwrap_or_else(|| "-".into()),
                match r.met() {
                    Some(true) => "ok",
                    Some(false) => "MISS",
                    None => "-",
                }
            )?;
        }
        for line in &self.method {
            writeln!(f, "note: {line}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_compare_with_target_and_raw_limit() {
        let r = Row::new(1, "x", 300.0, "ms").target(true, 200.0).raw(100.0);
        assert_eq!(r.met(), Some(false));
        assert_eq!(r.ratio(), Some(3.0));
        let r = Row::new(1, "x", 150.0, "ms").target(false, 200.0);
        assert_eq!(r.met(), None);
        assert_eq!(r.ratio(), None);
        let r = Row::new(1, "x", 150.0, "ms").target(true, 200.0);
        assert_eq!(r.met(), Some(true));
    }
}
