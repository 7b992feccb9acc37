//! Human-readable `allexlanmanager status`, `need list` and `master list`:
//! tables sized to their content (comfy-table), durations instead of epoch
//! milliseconds.

use crate::event_text::clock;
use allex_protocol::{LanStatus, MasterSummary, NeedState, NeedStatus, Ports, RunningService};
use comfy_table::presets::NOTHING;
use comfy_table::{CellAlignment, Table};

/// Ports as `tcp:1,http:2`, or `-` when there are none.
pub fn ports(p: &Ports) -> String {
    let s: Vec<String> = p
        .iter()
        .map(|(proto, port)| format!("{proto}:{port}"))
        .collect();
    if s.is_empty() {
        "-".into()
    } else {
        s.join(",")
    }
}

fn state(s: NeedState) -> &'static str {
    match s {
        NeedState::Open => "open",
        NeedState::Claimed => "claimed",
        NeedState::Running => "running",
        NeedState::Backoff => "backoff",
        NeedState::Settling => "settling",
        NeedState::Closed => "closed",
    }
}

/// A duration as an operator reads it: `850ms`, `42s`, `3m12s`, `5h03m`, `2d04h`.
pub fn duration(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0 => format!("{ms}ms"),
        1..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600),
    }
}

fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(NOTHING).set_header(header.to_vec());
    t
}

/// The table's text without the cell padding at the line ends.
fn text(t: &Table) -> String {
    t.to_string()
        .lines()
        .map(|l| l.strip_prefix(' ').unwrap_or(l).trim_end())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Right-aligns the numeric columns `cols`.
fn numeric(t: &mut Table, cols: &[usize]) {
    for &c in cols {
        if let Some(col) = t.column_mut(c) {
            col.set_cell_alignment(CellAlignment::Right);
        }
    }
}

/// The needs, one row each.
pub fn needs_table(needs: &[NeedStatus]) -> String {
    let mut t = table(&["INSTANCE", "MODULE", "STATE", "FAILURES", "MASTER", "FROM"]);
    for n in needs {
        let st = match n.retry_in_ms {
            Some(ms) => format!("{} (retry in {})", state(n.state), duration(ms)),
            None => state(n.state).to_string(),
        };
        t.add_row(vec![
            n.need.instancename.to_string(),
            n.need.modulename.clone(),
            st,
            n.failures.to_string(),
            n.master.clone().unwrap_or_else(|| "-".into()),
            if n.layer.is_empty() {
                "-".into()
            } else {
                n.layer.clone()
            },
        ]);
    }
    numeric(&mut t, &[3]);
    text(&t)
}

/// The running services, with their uptime as of `now_unix_ms`.
pub fn running_table(running: &[RunningService], now_unix_ms: u64) -> String {
    let mut t = table(&[
        "INSTANCE", "MODULE", "MASTER", "ADDRESS", "PORTS", "PID", "UP",
    ]);
    for r in running {
        let up = now_unix_ms.saturating_sub(r.since_unix_ms);
        t.add_row(vec![
            r.instancename.to_string(),
            r.modulename.clone(),
            r.master.clone(),
            r.address.clone(),
            ports(&r.ports),
            r.pid.to_string(),
            format!(
                "{} (since {} UTC)",
                duration(up),
                &clock(r.since_unix_ms)[..8]
            ),
        ]);
    }
    numeric(&mut t, &[5]);
    text(&t)
}

/// The masters, with their free ports.
pub fn masters_table(masters: &[MasterSummary]) -> String {
    let mut t = table(&[
        "NAME",
        "ADDRESS",
        "CONNECTED",
        "FROM",
        "SERVICES",
        "FREE tcp/http/ws",
    ]);
    for m in masters {
        let f = &m.capacity.free;
        t.add_row(vec![
            m.name.clone(),
            m.address.clone(),
            match (m.connected, m.draining) {
                (true, false) => "yes",
                (true, true) => "yes (draining)",
                (false, false) => "no (grace)",
                (false, true) => "no (grace, draining)",
            }
            .to_string(),
            m.peer.clone().unwrap_or_else(|| "-".into()),
            m.services.to_string(),
            format!("{}/{}/{}", f.tcp, f.http, f.ws),
        ]);
    }
    numeric(&mut t, &[4]);
    text(&t)
}

/// The status as tables of needs, running services and masters.
pub fn render(status: &LanStatus, now_unix_ms: u64) -> String {
    format!(
        "NEEDS ({})\n{}\n\nRUNNING ({})\n{}\n\nMASTERS ({})\n{}\n",
        status.needs.len(),
        needs_table(&status.needs),
        status.running.len(),
        running_table(&status.running, now_unix_ms),
        status.masters.len(),
        masters_table(&status.masters),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_an_operator_would_say_them() {
        assert_eq!(duration(850), "850ms");
        assert_eq!(duration(42_000), "42s");
        assert_eq!(duration(192_000), "3m12s");
        assert_eq!(duration(5 * 3_600_000 + 180_000), "5h03m");
        assert_eq!(duration(2 * 86_400_000 + 4 * 3_600_000), "2d04h");
    }

    #[test]
    fn columns_fit_their_longest_cell() {
        let mut n = NeedStatus {
            need: allex_protocol::Need::new("svc", allex_protocol::instance!("A")),
            state: NeedState::Backoff,
            master: None,
            retry_in_ms: Some(1500),
            failures: 3,
            layer: String::new(),
        };
        let short = needs_table(std::slice::from_ref(&n));
        n.need.instancename = allex_protocol::instance!("a-much-longer-instance-name");
        let long = needs_table(&[n]);
        let width = |t: &str| t.lines().map(str::len).max().unwrap_or(0);
        assert!(width(&long) > width(&short), "{short}\n{long}");
        assert!(short.contains("backoff (retry in 1s)"), "{short}");
    }
}
