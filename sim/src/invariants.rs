//! The promises of the system as checks over one observation of a cluster.
//!
//! An observation is not atomic: the lan manager and each master are asked
//! one after the other, and reports travel between them. A violation that
//! can come from such a window (a pid that just died, a record not yet
//! removed) is only a fault if it persists, which is why
//! [`crate::harness::Cluster::check_invariants`] retries within a deadline.

use crate::wait::{read_port_banner, Banner};
use allex_protocol::{ChildState, LanStatus, MasterStatus, NeedState, Protocol};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

/// What one master looked like.
#[derive(Debug, Clone)]
pub struct MasterView {
    /// Its name.
    pub name: String,
    /// Its status, `None` when it is not running (killed or stopped).
    pub status: Option<MasterStatus>,
    /// Live processes it spawned, found by their environment.
    pub children_alive: Vec<u32>,
}

/// One observation of a cluster.
#[derive(Debug, Clone)]
pub struct Observation {
    /// The lan manager's status.
    pub lan: LanStatus,
    /// Every master, running or not.
    pub masters: Vec<MasterView>,
}

/// A broken promise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// The running list holds an instance more than once.
    ListedTwice {
        /// Instance name.
        instance: String,
        /// Masters of the records.
        masters: Vec<String>,
    },
    /// Two connected masters run (not stop) the same instance.
    RunsOnTwoMasters {
        /// Instance name.
        instance: String,
        /// The masters.
        masters: Vec<String>,
    },
    /// A running record's need is missing or not in state running on that master.
    RecordWithoutNeed {
        /// Instance name.
        instance: String,
        /// What the need looked like.
        need: String,
    },
    /// A running record names a pid that is not alive.
    DeadPid {
        /// Instance name.
        instance: String,
        /// The pid.
        pid: u32,
    },
    /// A running record's master does not list that child.
    UnknownToMaster {
        /// Instance name.
        instance: String,
        /// The master.
        master: String,
        /// The pid in the record.
        pid: u32,
    },
    /// A declared port does not accept connections.
    PortSilent {
        /// Instance name.
        instance: String,
        /// Protocol.
        protocol: Protocol,
        /// Where we connected.
        addr: SocketAddr,
    },
    /// A port answers with another process's banner.
    PortOwnedByOther {
        /// Instance name.
        instance: String,
        /// Protocol.
        protocol: Protocol,
        /// Where we connected.
        addr: SocketAddr,
        /// The pid the record names.
        pid: u32,
        /// What answered.
        banner: Banner,
    },
    /// One master gave the same port to two children.
    PortHeldTwice {
        /// The master.
        master: String,
        /// The port.
        port: u16,
        /// The children holding it.
        instances: Vec<String>,
    },
    /// A child's port lies outside its master's range.
    PortOutOfRange {
        /// The master.
        master: String,
        /// Instance name.
        instance: String,
        /// Protocol.
        protocol: Protocol,
        /// The port.
        port: u16,
    },
    /// A master that is not running left processes behind.
    LeftBehind {
        /// The master.
        master: String,
        /// The live pids.
        pids: Vec<u32>,
    },
}

/// Port ranges per master name, to check children's ports against.
pub type Ranges = BTreeMap<String, BTreeMap<Protocol, std::ops::RangeInclusive<u32>>>;

/// Checks every promise against `obs`; probes pids and ports live.
pub fn check(obs: &Observation, ranges: &Ranges) -> Vec<Violation> {
    let mut v = Vec::new();
    check_lan(obs, &mut v);
    for m in &obs.masters {
        check_master(m, ranges.get(&m.name), &mut v);
    }
    check_across_masters(obs, &mut v);
    v
}

fn check_lan(obs: &Observation, v: &mut Vec<Violation>) {
    let mut by_instance: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for r in &obs.lan.running {
        by_instance
            .entry(&r.instancename)
            .or_default()
            .push(r.master.clone());
    }
    for (instance, masters) in by_instance {
        if masters.len() > 1 {
            v.push(Violation::ListedTwice {
                instance: instance.to_string(),
                masters,
            });
        }
    }
    for r in &obs.lan.running {
        let need = obs
            .lan
            .needs
            .iter()
            .find(|n| n.need.instancename == r.instancename);
        match need {
            Some(n) if n.state == NeedState::Running && n.master.as_deref() == Some(&r.master) => {}
            other => v.push(Violation::RecordWithoutNeed {
                instance: r.instancename.to_string(),
                need: format!("{:?}", other.map(|n| (n.state, &n.master))),
            }),
        }
        // Within its grace a disconnected master's records stay listed though
        // nobody can vouch for them (its children may have died with it).
        let connected = obs
            .lan
            .masters
            .iter()
            .any(|m| m.name == r.master && m.connected);
        if !connected {
            continue;
        }
        if !crate::procscan::is_alive(r.pid) {
            v.push(Violation::DeadPid {
                instance: r.instancename.to_string(),
                pid: r.pid,
            });
            continue;
        }
        if let Some(m) = obs.masters.iter().find(|m| m.name == r.master) {
            if let Some(st) = &m.status {
                if !st.children.iter().any(|c| c.pid == r.pid) {
                    v.push(Violation::UnknownToMaster {
                        instance: r.instancename.to_string(),
                        master: r.master.clone(),
                        pid: r.pid,
                    });
                }
            }
        }
        let Ok(ip) = r.address.parse::<IpAddr>() else {
            continue;
        };
        for (protocol, port) in r.ports.iter() {
            let addr = SocketAddr::new(ip, port);
            match read_port_banner(addr) {
                Some(b) if b.pid == r.pid && b.instance == r.instancename => {}
                Some(banner) => v.push(Violation::PortOwnedByOther {
                    instance: r.instancename.to_string(),
                    protocol,
                    addr,
                    pid: r.pid,
                    banner,
                }),
                None => {
                    // Not a testsvc, or nobody there: tell them apart by connecting.
                    if std::net::TcpStream::connect_timeout(
                        &addr,
                        std::time::Duration::from_secs(1),
                    )
                    .is_err()
                    {
                        v.push(Violation::PortSilent {
                            instance: r.instancename.to_string(),
                            protocol,
                            addr,
                        });
                    }
                }
            }
        }
    }
}

fn check_master(
    m: &MasterView,
    ranges: Option<&BTreeMap<Protocol, std::ops::RangeInclusive<u32>>>,
    v: &mut Vec<Violation>,
) {
    let Some(st) = &m.status else {
        if !m.children_alive.is_empty() {
            v.push(Violation::LeftBehind {
                master: m.name.clone(),
                pids: m.children_alive.clone(),
            });
        }
        return;
    };
    let mut holders: BTreeMap<u16, Vec<String>> = BTreeMap::new();
    for c in &st.children {
        for (protocol, port) in c.ports.iter() {
            holders
                .entry(port)
                .or_default()
                .push(c.instancename.to_string());
            if let Some(r) = ranges.and_then(|r| r.get(&protocol)) {
                if !r.contains(&u32::from(port)) {
                    v.push(Violation::PortOutOfRange {
                        master: m.name.clone(),
                        instance: c.instancename.to_string(),
                        protocol,
                        port,
                    });
                }
            }
        }
    }
    for (port, instances) in holders {
        if instances.len() > 1 {
            v.push(Violation::PortHeldTwice {
                master: m.name.clone(),
                port,
                instances,
            });
        }
    }
}

fn check_across_masters(obs: &Observation, v: &mut Vec<Violation>) {
    let mut by_instance: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for m in &obs.masters {
        let Some(st) = &m.status else { continue };
        // A master cut off from the lan manager may still run what was
        // handed to another; that is resolved when it reconnects.
        if !st.connected {
            continue;
        }
        for c in &st.children {
            if c.state != ChildState::Stopping {
                by_instance
                    .entry(&c.instancename)
                    .or_default()
                    .insert(&m.name);
            }
        }
    }
    for (instance, masters) in by_instance {
        if masters.len() > 1 {
            v.push(Violation::RunsOnTwoMasters {
                instance: instance.to_string(),
                masters: masters.into_iter().map(str::to_string).collect(),
            });
        }
    }
}
