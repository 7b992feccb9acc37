//! How an event reads on an operator's terminal (`allexlanmanager events`):
//! one line, its number, its UTC time, its type and what it is about.

use crate::status::ports;
use allex_protocol::events::{EventKind, LanEvent};

/// `HH:MM:SS.mmm` (UTC) of a Unix time in milliseconds.
pub fn clock(unix_ms: u64) -> String {
    let ms = unix_ms % 1000;
    let s = unix_ms / 1000;
    format!(
        "{:02}:{:02}:{:02}.{ms:03}",
        (s / 3600) % 24,
        (s / 60) % 60,
        s % 60
    )
}

/// One event as a line, without its newline.
pub fn line(e: &LanEvent) -> String {
    let what = match &e.kind {
        EventKind::NeedAdded {
            instancename,
            modulename,
        } => format!("{instancename} (module {modulename})"),
        EventKind::NeedRemoved { instancename }
        | EventKind::Opened { instancename }
        | EventKind::NeedDisabled { instancename }
        | EventKind::NeedEnabled { instancename }
        | EventKind::NeedChanged { instancename } => instancename.to_string(),
        EventKind::NeedsReloaded {
            added,
            removed,
            changed,
        } => format!("{added} added, {removed} removed, {changed} changed"),
        EventKind::ReloadRefused { message } => format!("nothing changed: {message}"),
        EventKind::Health {
            instancename,
            master,
            passing,
            failures,
            last,
        } => {
            let state = if *passing { "passing" } else { "failing" };
            format!("{instancename} on {master}: {state} ({failures} in a row): {last}")
        }
        EventKind::Claimed {
            instancename,
            master,
            generation,
        } => format!("{instancename} by {master} (generation {generation})"),
        EventKind::ClaimRefused {
            instancename,
            master,
            reason,
        } => format!("{instancename} for {master}: {reason}"),
        EventKind::FrameRefused {
            master,
            code,
            message,
        } => format!("from {master} ({code}): {message}"),
        EventKind::Spawned {
            instancename,
            master,
            pid,
            ports: p,
            ..
        } => format!("{instancename} on {master} pid {pid} {}", ports(p)),
        EventKind::Running {
            instancename,
            master,
            pid,
            address,
            ports: p,
            ..
        } => format!(
            "{instancename} on {master} at {address} pid {pid} {}",
            ports(p)
        ),
        EventKind::Rejected {
            instancename,
            master,
            reason,
            ..
        }
        | EventKind::Stopping {
            instancename,
            master,
            reason,
            ..
        } => format!("{instancename} on {master}: {reason}"),
        EventKind::Down {
            instancename,
            master,
            pid,
            exit,
            ordered,
            uptime_ms,
            ..
        } => format!(
            "{instancename} on {master} pid {pid} {exit} after {uptime_ms} ms{}",
            if *ordered { " (asked to stop)" } else { "" }
        ),
        EventKind::Backoff {
            instancename,
            failures,
            delay_ms,
        } => format!("{instancename} retried in {delay_ms} ms ({failures} quick deaths)"),
        EventKind::MasterConnected {
            master,
            address,
            peer,
        } => format!("{master} at {address} from {peer}"),
        EventKind::MasterRefused {
            master,
            code,
            reason,
        } => format!("{master} ({code}): {reason}"),
        EventKind::MasterDraining { master, services } => {
            format!("{master}: {services} services to move")
        }
        EventKind::MasterDrained { master } | EventKind::MasterUndrained { master } => {
            master.clone()
        }
        EventKind::MasterDisconnected { master, grace_ms } => {
            format!("{master}, services kept for {grace_ms} ms")
        }
        EventKind::MasterExpired {
            master,
            moved,
            kept,
        } => format!("{master}: {moved} services moved, {kept} still answering kept"),
    };
    format!(
        "#{} {} {:<19} {what}",
        e.seq,
        clock(e.unix_ms),
        e.kind.name()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_has_number_time_type_and_subject() {
        let e = LanEvent {
            seq: 3,
            unix_ms: 1_764_000_123_456,
            kind: EventKind::NeedAdded {
                instancename: allex_protocol::instance!("Time"),
                modulename: "allex_timeservice".into(),
            },
        };
        assert_eq!(
            line(&e),
            "#3 16:02:03.456 need_added          Time (module allex_timeservice)"
        );
    }
}
