//! Shared test pieces: the scriptable fake lan manager, and the test kit's
//! [`Master`] started the way these tests want it.
#![allow(dead_code)]

pub mod fake_lan;

pub use allex_testkit::wait::SOON;
pub use allex_testkit::{Inherited, Master, MasterOptions};

use allex_protocol::Need;
use allex_protocol::{Generation, InstanceName};
use serde_json::Value;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

/// The allexmaster binary cargo built for these tests.
pub fn master_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_allexmaster"))
}

/// A need for the `testsvc` module with knobs in its propertyhash.
pub fn need(instance: &str, knobs: Value) -> Need {
    let mut n = Need::new(
        "testsvc",
        allex_protocol::InstanceName::new(instance).unwrap(),
    );
    if let Value::Object(map) = knobs {
        n.propertyhash = map;
    }
    n
}

/// Whether a pid no longer runs (gone, or a zombie nobody reaped yet).
pub fn pid_gone(pid: u32) -> bool {
    !allex_testkit::procscan::is_alive(pid)
}

/// A master of the lan manager on `lan_port` with `size` ports per protocol,
/// quick to reconnect, with small log files and debug logs.
pub fn options(lan_port: u16, size: u16, stoptimeoutms: u64) -> MasterOptions {
    MasterOptions {
        portrangesize: size,
        stop_timeout_ms: stoptimeoutms,
        reconnectmaxms: 200,
        logmaxbytes: Some(4096),
        log_filter: Some("allex_master=debug".into()),
        ..MasterOptions::new(SocketAddr::from((Ipv4Addr::LOCALHOST, lan_port)))
    }
}

/// The config file of [`options`] for a master whose runtime directory is
/// `runtime`, as JSON for a test to edit and write itself.
pub fn config_json(runtime: &Path, lan_port: u16, size: u16, stoptimeoutms: u64) -> Value {
    let cfg = options(lan_port, size, stoptimeoutms)
        .config(runtime)
        .unwrap();
    serde_json::to_value(cfg).unwrap()
}

/// Starts a master on the fake lan manager's port with `size` ports per protocol.
pub fn start(lan_port: u16, size: u16) -> Master {
    start_with(lan_port, size, 3000, |_| {})
}

/// Like [`start`], with the stop timeout and an edit of the config's JSON.
pub fn start_with(
    lan_port: u16,
    size: u16,
    stoptimeoutms: u64,
    edit: impl FnOnce(&mut Value),
) -> Master {
    start_inheriting(lan_port, size, stoptimeoutms, edit, Inherited::default())
}

/// Like [`start_with`], started the way `inherited` says.
pub fn start_inheriting(
    lan_port: u16,
    size: u16,
    stoptimeoutms: u64,
    edit: impl FnOnce(&mut Value),
    inherited: Inherited,
) -> Master {
    let opts = MasterOptions {
        inherited,
        ..options(lan_port, size, stoptimeoutms)
    };
    Master::start_edited(&opts, edit).unwrap()
}

/// Waits until every instance in `names` was reported spawned, in any order.
/// Waits for the `spawned` report of `instance`: (generation, pid, ports).
pub fn spawned(
    lan: &fake_lan::FakeLan,
    instance: &str,
) -> (Generation, u32, allex_protocol::Ports) {
    lan.wait_msg(&format!("spawned {instance}"), SOON, |m| match m {
        allex_protocol::MasterToLan::Spawned {
            instancename,
            generation,
            pid,
            ports,
        } if instancename == instance => Some((*generation, *pid, *ports)),
        _ => None,
    })
}

pub fn spawned_all(
    lan: &fake_lan::FakeLan,
    names: &[&str],
) -> std::collections::HashMap<InstanceName, (Generation, u32, allex_protocol::Ports)> {
    let mut got = std::collections::HashMap::new();
    while got.len() < names.len() {
        let (name, v) = lan.wait_msg("the next spawned", SOON, |m| match m {
            allex_protocol::MasterToLan::Spawned {
                instancename,
                generation,
                pid,
                ports,
            } if names.contains(&instancename.as_str()) => {
                Some((instancename.clone(), (*generation, *pid, *ports)))
            }
            _ => None,
        });
        got.insert(name, v);
    }
    got
}
