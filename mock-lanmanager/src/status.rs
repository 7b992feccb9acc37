//! Human-readable `allexlanmanager status`.

use allex_protocol::{LanStatus, NeedState, Ports};
use std::fmt::Write;

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
    }
}

/// The status as tables of needs, running services and masters.
pub fn render(status: &LanStatus) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "NEEDS ({})", status.needs.len());
    let _ = writeln!(
        out,
        "{:<24} {:<24} {:<9} {:<8} {:<24}",
        "INSTANCE", "MODULE", "STATE", "FAILURES", "MASTER"
    );
    for n in &status.needs {
        let mut st = state(n.state).to_string();
        if let Some(ms) = n.retry_in_ms {
            st = format!("{st} (retry in {ms} ms)");
        }
        let _ = writeln!(
            out,
            "{:<24} {:<24} {:<9} {:<8} {:<24}",
            n.need.instancename,
            n.need.modulename,
            st,
            n.failures,
            n.master.as_deref().unwrap_or("-")
        );
    }
    let _ = writeln!(out, "\nRUNNING ({})", status.running.len());
    let _ = writeln!(
        out,
        "{:<24} {:<24} {:<24} {:<16} {:<28} {:<8} {:<14}",
        "INSTANCE", "MODULE", "MASTER", "ADDRESS", "PORTS", "PID", "SINCE_UNIX_MS"
    );
    for r in &status.running {
        let _ = writeln!(
            out,
            "{:<24} {:<24} {:<24} {:<16} {:<28} {:<8} {:<14}",
            r.instancename,
            r.modulename,
            r.master,
            r.address,
            ports(&r.ports),
            r.pid,
            r.since_unix_ms
        );
    }
    let _ = writeln!(out, "\nMASTERS ({})", status.masters.len());
    let _ = writeln!(
        out,
        "{:<32} {:<16} {:<10} {:<8} {:<20}",
        "NAME", "ADDRESS", "CONNECTED", "SERVICES", "FREE tcp/http/ws"
    );
    for m in &status.masters {
        let f = &m.capacity.free;
        let _ = writeln!(
            out,
            "{:<32} {:<16} {:<10} {:<8} {}/{}/{}",
            m.name,
            m.address,
            if m.connected { "yes" } else { "no (grace)" },
            m.services,
            f.tcp,
            f.http,
            f.ws
        );
    }
    out
}
