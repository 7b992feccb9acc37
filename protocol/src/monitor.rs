//! The AllexJS lan manager's HTTP monitor (`/running`, `/pending`,
//! `/servicestatus`): one flat record per need, as AllexJS tools read it.

use crate::types::{LanStatus, NeedState, Protocol};
use crate::InstanceName;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Whether a monitor record's need runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MonitorStatus {
    /// Port-checked and listed as running.
    Running,
    /// Not running yet: open, claimed, checking, backing off or settling.
    Pending,
}

/// One need as the AllexJS monitor lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MonitorRecord {
    /// Instance name.
    pub instancename: InstanceName,
    /// Module name.
    pub modulename: String,
    /// The need's propertyhash, as stored.
    pub propertyhash: serde_json::Map<String, serde_json::Value>,
    /// Where it runs (the master's advertise address) when running; the
    /// need's address constraint, if any, when pending.
    pub ipaddress: Option<String>,
    /// Its tcp port, when running with one.
    pub tcpport: Option<u16>,
    /// Its http port, when running with one.
    pub httpport: Option<u16>,
    /// Its ws port, when running with one.
    pub wsport: Option<u16>,
    /// Running or pending.
    pub status: MonitorStatus,
}

/// Which records a monitor endpoint lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MonitorView {
    /// `/running`.
    Running,
    /// `/pending`.
    Pending,
    /// `/servicestatus`: both, in the needs' order.
    All,
}

/// The monitor records of `status`, in the needs' order.
pub fn records(status: &LanStatus, view: MonitorView) -> Vec<MonitorRecord> {
    status
        .needs
        .iter()
        .filter_map(|n| {
            let running = (n.state == NeedState::Running)
                .then(|| {
                    status
                        .running
                        .iter()
                        .find(|r| r.instancename == n.need.instancename)
                })
                .flatten();
            if n.state == NeedState::Closed {
                return None;
            }
            let wanted = match view {
                MonitorView::Running => running.is_some(),
                MonitorView::Pending => running.is_none(),
                MonitorView::All => true,
            };
            if !wanted {
                return None;
            }
            // A pending need shows the ports it pins, as AllexJS lists them.
            let port = |p: Protocol| match running {
                Some(r) => r.ports.get(p),
                None => n.need.pinned_port(p),
            };
            Some(MonitorRecord {
                instancename: n.need.instancename.clone(),
                modulename: n.need.modulename.clone(),
                propertyhash: n.need.propertyhash.clone(),
                ipaddress: match running {
                    Some(r) => Some(r.address.clone()),
                    None => n.need.ipaddress.clone(),
                },
                tcpport: port(Protocol::Tcp),
                httpport: port(Protocol::Http),
                wsport: port(Protocol::Ws),
                status: if running.is_some() {
                    MonitorStatus::Running
                } else {
                    MonitorStatus::Pending
                },
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{NeedStatus, Ports, RunningService};
    use crate::{instance, Generation, Need};

    fn status() -> LanStatus {
        let mut far = Need::new("svc", instance!("Far"));
        far.ipaddress = Some("10.0.0.0/8".into());
        let need = |n: Need, state| NeedStatus {
            need: n,
            state,
            master: None,
            retry_in_ms: None,
            failures: 0,
            layer: String::new(),
        };
        LanStatus {
            needs: vec![
                need(Need::new("svc", instance!("Up")), NeedState::Running),
                need(far, NeedState::Open),
            ],
            running: vec![RunningService {
                instancename: instance!("Up"),
                modulename: "svc".into(),
                master: "m1".into(),
                address: "192.168.1.5".into(),
                ports: Ports {
                    tcp: Some(20001),
                    http: None,
                    ws: Some(20003),
                },
                pid: 77,
                generation: Generation(3),
                since_unix_ms: 0,
                health: None,
            }],
            masters: Vec::new(),
        }
    }

    #[test]
    fn running_records_carry_the_address_and_ports_pending_ones_the_constraint() {
        let st = status();
        let all = records(&st, MonitorView::All);
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].status, MonitorStatus::Running);
        assert_eq!(all[0].ipaddress.as_deref(), Some("192.168.1.5"));
        assert_eq!(
            (all[0].tcpport, all[0].httpport, all[0].wsport),
            (Some(20001), None, Some(20003))
        );
        assert_eq!(all[1].status, MonitorStatus::Pending);
        assert_eq!(all[1].ipaddress.as_deref(), Some("10.0.0.0/8"));
        assert_eq!(all[1].tcpport, None);
        assert_eq!(records(&st, MonitorView::Running), all[..1].to_vec());
        assert_eq!(records(&st, MonitorView::Pending), all[1..].to_vec());
    }

    #[test]
    fn a_record_has_exactly_the_allexjs_fields() {
        let v = serde_json::to_value(&records(&status(), MonitorView::All)[1]).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        let mut want = [
            "instancename",
            "modulename",
            "propertyhash",
            "ipaddress",
            "tcpport",
            "httpport",
            "wsport",
            "status",
        ];
        want.sort_unstable();
        let mut keys = keys;
        keys.sort_unstable();
        assert_eq!(keys, want);
        assert_eq!(v["status"], "pending");
        assert!(v["tcpport"].is_null());
    }
}
