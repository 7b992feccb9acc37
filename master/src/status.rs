//! `allexmaster status`: asks the running master over its socket and prints.

use crate::config::load_or_default;
use crate::socket::socket_path;
use allex_protocol::client::MasterClient;
use allex_protocol::{ChildState, MasterStatus, Ports};
use anyhow::Context;
use std::fmt::Write;
use std::path::{Path, PathBuf};

/// Fetches the status from the master at `socket` (or the config's runtime directory).
pub fn fetch(config: Option<&Path>, socket: Option<PathBuf>) -> anyhow::Result<MasterStatus> {
    let socket = match socket {
        Some(s) => s,
        None => {
            let cfg = load_or_default(config)?;
            socket_path(&cfg.runtimedirectory)
        }
    };
    let mut client = MasterClient::connect(&socket)
        .with_context(|| format!("is allexmaster running? cannot reach {}", socket.display()))?;
    client
        .status()
        .with_context(|| format!("status from {}", socket.display()))
}

fn ports_text(p: &Ports) -> String {
    let parts: Vec<String> = p
        .iter()
        .map(|(proto, port)| format!("{proto}={port}"))
        .collect();
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(",")
    }
}

fn state_text(s: ChildState) -> &'static str {
    match s {
        ChildState::Starting => "starting",
        ChildState::Ready => "ready",
        ChildState::Running => "running",
        ChildState::Stopping => "stopping",
    }
}

fn uptime_text(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=59 => format!("{}.{}s", s, (ms % 1000) / 100),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// The human table of a status.
pub fn render(st: &MasterStatus) -> String {
    let mut out = String::new();
    let link = match (&st.refused, st.connected) {
        (_, true) => "connected".to_string(),
        (Some(why), false) => format!("refused ({why})"),
        (None, false) => "disconnected".to_string(),
    };
    let _ = writeln!(
        out,
        "master {} (pid {}), lan manager {link}, advertise {}",
        st.master,
        st.pid,
        st.advertiseaddress.as_deref().unwrap_or("-")
    );
    if st.fd_exhausted {
        let _ = writeln!(
            out,
            "descriptors: limit {} reached; claiming no more needs until a child ends",
            st.fdlimit
        );
    }
    if st.fenced {
        let _ = writeln!(
            out,
            "fenced: no word from the lan manager for the fence time; children stopped"
        );
    }
    let _ = writeln!(
        out,
        "free ports: tcp {} http {} ws {}{}",
        st.free.tcp,
        st.free.http,
        st.free.ws,
        if st.exhausted.is_empty() {
            String::new()
        } else {
            let names: Vec<&str> = st.exhausted.iter().map(|p| p.as_str()).collect();
            format!(" (exhausted: {})", names.join(","))
        }
    );
    let _ = writeln!(
        out,
        "children: {}",
        match &st.cgroup {
            Some(dir) => format!("a cgroup each, under {dir}"),
            None => "process groups only (no cgroup v2)".to_string(),
        }
    );
    for (instance, why) in &st.declined {
        let _ = writeln!(out, "left to other masters: {instance}: {why}");
    }
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::NOTHING)
        .set_header(vec![
            "INSTANCE", "MODULE", "PID", "PORTS", "STATE", "UPTIME",
        ]);
    for c in &st.children {
        t.add_row(vec![
            c.instancename.to_string(),
            c.modulename.clone(),
            c.pid.to_string(),
            ports_text(&c.ports),
            state_text(c.state).to_string(),
            uptime_text(c.uptime_ms),
        ]);
    }
    if let Some(col) = t.column_mut(2) {
        col.set_cell_alignment(comfy_table::CellAlignment::Right);
    }
    // The cell padding at the line ends is noise on a terminal and in a diff.
    for line in t.to_string().lines() {
        let line = line.strip_prefix(' ').unwrap_or(line);
        let _ = writeln!(out, "{}", line.trim_end());
    }
    out
}
