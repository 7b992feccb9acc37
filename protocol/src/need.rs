//! Needs: services that should run somewhere on the LAN, in the AllexJS format.

use crate::error::FileError;
use crate::located::{error_at, find_key, parse_array};
use crate::names::validate_name;
use crate::names::InstanceName;
use crate::types::Protocol;
use ipnet::IpNet;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use thiserror::Error;

/// A need: one named instance of a module that should run somewhere.
///
/// `instancename` is the key: at most one service runs per instance name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct Need {
    /// The module to run; a master only runs modules from its own catalogue.
    pub modulename: String,
    /// The unique name of this instance.
    pub instancename: InstanceName,
    /// Free-form properties handed to the service in `ALLEX_SPAWN`.
    #[serde(default)]
    #[cfg_attr(test, proptest(strategy = "arb::property_hash()"))]
    pub propertyhash: serde_json::Map<String, serde_json::Value>,
    /// An address or CIDR range; only a master advertising a matching address may take the need.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipaddress: Option<String>,
    /// The protocols the service listens on; all three when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocols: Option<Vec<Protocol>>,
    /// Every other field, in the order it was written: the AllexJS fields
    /// (`tcpport`, `httpport`, `wsport`, `strategies`, `closed`, `timeout`,
    /// `debug`, `debug_brk`, `prof`, `gate`) and any we do not know, kept
    /// verbatim so a need is written back exactly as it was read.
    #[serde(flatten)]
    #[cfg_attr(test, proptest(strategy = "arb::boxed_extra_fields()"))]
    /// Boxed: most needs have none, and a need travels inside many messages.
    pub extra: Box<serde_json::Map<String, serde_json::Value>>,
}

/// Why a need is refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NeedError {
    /// The instance or module name is not acceptable.
    #[error(transparent)]
    Name(#[from] crate::names::NameError),
    /// `ipaddress` is neither an address nor a CIDR range.
    #[error("ipaddress {0:?} is neither an IP address nor a CIDR range")]
    BadAddress(String),
    /// `protocols` is present but empty or repeats a protocol.
    #[error("protocols must list each of tcp, http, ws at most once, and at least one")]
    BadProtocols,
    /// An AllexJS field we act on holds a value we cannot act on.
    #[error("{field}: {why}")]
    BadField {
        /// The field, as written.
        field: &'static str,
        /// What it must be.
        why: &'static str,
    },
}

/// The pinned-port field of each protocol, as AllexJS names them.
const PORT_FIELDS: [(Protocol, &str); 3] = [
    (Protocol::Tcp, "tcpport"),
    (Protocol::Http, "httpport"),
    (Protocol::Ws, "wsport"),
];

impl Need {
    /// A need with no properties, no address restriction and all protocols.
    pub fn new(modulename: impl Into<String>, instancename: InstanceName) -> Self {
        Need {
            modulename: modulename.into(),
            instancename,
            propertyhash: serde_json::Map::new(),
            ipaddress: None,
            protocols: None,
            extra: Default::default(),
        }
    }

    /// Checks names, address and protocols; every need is checked before it is stored.
    pub fn validate(&self) -> Result<(), NeedError> {
        validate_name("modulename", &self.modulename)?;
        if let Some(a) = &self.ipaddress {
            parse_ipaddress(a)?;
        }
        if let Some(ps) = &self.protocols {
            let mut seen = ps.clone();
            seen.sort();
            seen.dedup();
            if ps.is_empty() || seen.len() != ps.len() {
                return Err(NeedError::BadProtocols);
            }
        }
        for (_, field) in PORT_FIELDS {
            match self.extra.get(field) {
                None | Some(serde_json::Value::Null) => {}
                Some(v) => match v.as_u64() {
                    Some(1..=65535) => {}
                    _ => {
                        return Err(NeedError::BadField {
                            field,
                            why: "a pinned port is a number from 1 to 65535",
                        })
                    }
                },
            }
        }
        match self.extra.get("closed") {
            None | Some(serde_json::Value::Null | serde_json::Value::Bool(_)) => {}
            Some(_) => {
                return Err(NeedError::BadField {
                    field: "closed",
                    why: "must be true or false",
                })
            }
        }
        match self.extra.get("timeout") {
            None | Some(serde_json::Value::Null) => {}
            Some(v) => match v.as_f64() {
                Some(t) if t > 0.0 && t <= 86_400.0 * 365.0 => {}
                _ => {
                    return Err(NeedError::BadField {
                        field: "timeout",
                        why: "seconds, a positive number",
                    })
                }
            },
        }
        match self.extra.get("check") {
            None | Some(serde_json::Value::Null) => {}
            Some(v) => match serde_json::from_value::<crate::health::HealthCheck>(v.clone()) {
                Err(_) => {
                    return Err(NeedError::BadField {
                        field: "check",
                        why: "a health check: {\"type\": \"tcp\"|\"http\"|\"exec\", ...}",
                    })
                }
                Ok(c) => {
                    if let Some((_, why)) = c.problem() {
                        return Err(NeedError::BadField {
                            field: "check",
                            why,
                        });
                    }
                }
            },
        }
        match self.extra.get("strategies") {
            None | Some(serde_json::Value::Null) => {}
            Some(serde_json::Value::Object(s)) => match s.get("ip") {
                None | Some(serde_json::Value::Null) => {}
                Some(serde_json::Value::String(ip)) => {
                    parse_ipaddress(ip).map_err(|_| NeedError::BadField {
                        field: "strategies",
                        why: "its ip is an IP address or a CIDR range",
                    })?;
                }
                Some(_) => {
                    return Err(NeedError::BadField {
                        field: "strategies",
                        why: "its ip is an IP address or a CIDR range",
                    })
                }
            },
            Some(_) => {
                return Err(NeedError::BadField {
                    field: "strategies",
                    why: "an object",
                })
            }
        }
        Ok(())
    }

    /// The port this need pins for `protocol` (`tcpport`, `httpport`, `wsport`).
    pub fn pinned_port(&self, protocol: Protocol) -> Option<u16> {
        let field = PORT_FIELDS.iter().find(|(p, _)| *p == protocol)?.1;
        self.extra
            .get(field)
            .and_then(|v| v.as_u64())
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p != 0)
    }

    /// Whether the need is `closed`: kept, but not run.
    pub fn closed(&self) -> bool {
        self.extra.get("closed").and_then(|v| v.as_bool()) == Some(true)
    }

    /// Sets or clears `closed`, keeping the field's place when it was written.
    pub fn set_closed(&mut self, closed: bool) {
        self.extra
            .insert("closed".to_string(), serde_json::Value::Bool(closed));
    }

    /// The need's own deadline to get running (`timeout`, in seconds).
    pub fn timeout(&self) -> Option<std::time::Duration> {
        self.extra
            .get("timeout")
            .and_then(|v| v.as_f64())
            .filter(|t| *t > 0.0 && t.is_finite())
            .and_then(|t| std::time::Duration::try_from_secs_f64(t).ok())
    }

    /// The need's own health check (`check`), overriding its catalogue
    /// entry's; `None` when it has none or it does not parse ([`Need::validate`]
    /// refuses that).
    pub fn check(&self) -> Option<crate::health::HealthCheck> {
        let v = self.extra.get("check").filter(|v| !v.is_null())?;
        serde_json::from_value(v.clone()).ok()
    }

    /// `strategies.ip`: an address or CIDR the master must advertise.
    pub fn strategy_ip(&self) -> Option<&str> {
        self.extra
            .get("strategies")
            .and_then(|s| s.get("ip"))
            .and_then(|ip| ip.as_str())
    }

    /// Whether the need restricts where it runs (`ipaddress` or `strategies.ip`).
    pub fn restricted(&self) -> bool {
        self.ipaddress.is_some() || self.strategy_ip().is_some()
    }

    /// The protocols the service listens on (all three when unspecified).
    pub fn protocols(&self) -> Vec<Protocol> {
        match &self.protocols {
            Some(ps) => Protocol::ALL
                .into_iter()
                .filter(|p| ps.contains(p))
                .collect(),
            None => Protocol::ALL.to_vec(),
        }
    }

    /// Whether a master advertising `addr` may take this need.
    pub fn allows(&self, addr: IpAddr) -> bool {
        [self.ipaddress.as_deref(), self.strategy_ip()]
            .into_iter()
            .flatten()
            .all(|a| match parse_ipaddress(a) {
                Ok(net) => net.contains(&addr),
                Err(_) => false,
            })
    }
}

/// Parses an `ipaddress` field: a bare address is a /32 (or /128) range.
pub fn parse_ipaddress(text: &str) -> Result<IpNet, NeedError> {
    if let Ok(net) = text.parse::<IpNet>() {
        return Ok(net);
    }
    text.parse::<IpAddr>()
        .map(IpNet::from)
        .map_err(|_| NeedError::BadAddress(text.to_string()))
}

/// The needs file, `.allexlanmanager/needs`: a JSON array of needs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct NeedsFile(pub Vec<Need>);

impl NeedsFile {
    /// Parses and checks a needs file's text; `path` only names it in errors.
    ///
    /// Every need is validated and instance names must be unique; the first
    /// fault is reported with its line and column.
    pub fn parse(path: &Path, text: &str) -> Result<NeedsFile, FileError> {
        let items: Vec<(usize, Need)> = parse_array(path, text)?;
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (offset, need) in &items {
            if let Err(e) = need.validate() {
                let key = match e {
                    NeedError::Name(crate::names::NameError::Empty { kind })
                    | NeedError::Name(crate::names::NameError::TooLong { kind, .. })
                    | NeedError::Name(crate::names::NameError::BadChar { kind, .. })
                    | NeedError::Name(crate::names::NameError::LeadingDot { kind, .. }) => kind,
                    NeedError::BadAddress(_) => "ipaddress",
                    NeedError::BadProtocols => "protocols",
                    NeedError::BadField { field, .. } => field,
                };
                let at = find_key(text, *offset, key);
                return Err(error_at(path, text, at, e.to_string()));
            }
            if let Some(first) = seen.insert(need.instancename.as_str(), *offset) {
                let (line, _) = crate::located::line_col(text, first);
                let at = find_key(text, *offset, "instancename");
                return Err(error_at(
                    path,
                    text,
                    at,
                    format!(
                        "duplicate instancename {:?} (first defined on line {line})",
                        need.instancename.as_str()
                    ),
                ));
            }
        }
        Ok(NeedsFile(items.into_iter().map(|(_, n)| n).collect()))
    }

    /// Reads and parses a needs file from disk.
    pub fn load(path: &Path) -> Result<NeedsFile, FileError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| FileError::unlocated(path, format!("cannot read: {e}")))?;
        Self::parse(path, &text)
    }

    /// The file's text: pretty JSON with a trailing newline.
    pub fn to_text(&self) -> String {
        let mut s = serde_json::to_string_pretty(&self.0).unwrap_or_else(|_| "[]".into());
        s.push('\n');
        s
    }
}

/// proptest strategies for types whose fields need a hand-written one.
#[cfg(test)]
pub(crate) mod arb {
    use super::InstanceName;
    use proptest::prelude::*;
    use serde_json::{Map, Value};

    /// A small JSON object without floats (floats need not round-trip exactly).
    pub fn property_hash() -> impl Strategy<Value = Map<String, Value>> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            ".{0,12}".prop_map(Value::String),
        ];
        // Nested objects and arrays, as AllexJS propertyhashes carry them.
        let value = leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map("[a-z]{1,8}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        });
        proptest::collection::btree_map("[a-z]{1,8}", value, 0..4)
            .prop_map(|m| m.into_iter().collect())
    }

    /// AllexJS fields we keep but do not act on, and one we do not know.
    pub fn extra_fields() -> impl Strategy<Value = Map<String, Value>> {
        let key = prop_oneof![
            Just("debug".to_string()),
            Just("debug_brk".to_string()),
            Just("prof".to_string()),
            Just("gate".to_string()),
            Just("x_custom".to_string()),
        ];
        let value = prop_oneof![
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            "[a-z]{0,8}".prop_map(Value::String),
        ];
        proptest::collection::vec((key, value), 0..3).prop_map(|kv| kv.into_iter().collect())
    }

    /// [`extra_fields`], boxed as the field is.
    pub fn boxed_extra_fields() -> impl Strategy<Value = Box<Map<String, Value>>> {
        extra_fields().prop_map(Box::new)
    }

    /// Needs the needs-file reader accepts: valid names, an address or a
    /// CIDR or none, a non-empty protocol list or none.
    pub fn valid_need() -> impl Strategy<Value = super::Need> {
        (
            "[a-z][a-z0-9_]{0,10}",
            any::<InstanceName>(),
            property_hash(),
            prop::option::of(prop_oneof![
                Just("10.1.2.3".to_string()),
                Just("192.168.0.0/16".to_string()),
                Just("::1".to_string()),
            ]),
            prop::option::of(proptest::sample::subsequence(
                super::Protocol::ALL.to_vec(),
                1..=3,
            )),
        )
            .prop_map(
                |(modulename, instancename, propertyhash, ipaddress, protocols)| super::Need {
                    modulename,
                    instancename,
                    propertyhash,
                    ipaddress,
                    protocols,
                    extra: Default::default(),
                },
            )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allexjs_needs_file_parses() {
        let text =
            r#"[{"modulename":"allex_timeservice","instancename":"Time","propertyhash":{}}]"#;
        let f = NeedsFile::parse(Path::new("needs"), text).unwrap();
        assert_eq!(
            f.0,
            vec![Need::new("allex_timeservice", crate::instance!("Time"))]
        );
        assert_eq!(f.0[0].protocols(), Protocol::ALL.to_vec());
    }

    #[test]
    fn duplicate_instance_is_located() {
        let text = "[\n {\"modulename\":\"m\",\"instancename\":\"A\"},\n {\"modulename\":\"m\",\"instancename\":\"A\"}\n]";
        let e = NeedsFile::parse(Path::new("needs"), text).unwrap_err();
        assert_eq!((e.line, e.column), (3, 20));
        assert!(e.message.contains("duplicate instancename \"A\""), "{e}");
        assert!(e.to_string().starts_with("needs:3:20: "), "{e}");
    }

    #[test]
    fn hostile_instance_name_is_located() {
        let text = "[{\"modulename\":\"m\",\n \"instancename\":\"../x\"}]";
        let e = NeedsFile::parse(Path::new("needs"), text).unwrap_err();
        assert_eq!((e.line, e.column), (2, 2));
        assert!(e.message.contains("instancename"), "{e}");
    }

    #[test]
    fn wrong_type_is_located() {
        let text = "[\n{\"modulename\": 5, \"instancename\":\"A\"}]";
        let e = NeedsFile::parse(Path::new("needs"), text).unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.message.contains("invalid type"), "{e}");
    }

    #[test]
    fn cidr_and_address_restrict() {
        let mut n = Need::new("m", crate::instance!("A"));
        n.ipaddress = Some("10.1.0.0/16".into());
        assert!(n.allows("10.1.2.3".parse().unwrap()));
        assert!(!n.allows("10.2.0.1".parse().unwrap()));
        n.ipaddress = Some("10.1.2.3".into());
        assert!(n.allows("10.1.2.3".parse().unwrap()));
        assert!(!n.allows("10.1.2.4".parse().unwrap()));
        n.ipaddress = Some("nope".into());
        assert!(n.validate().is_err());
    }

    #[test]
    fn protocols_subset_in_canonical_order() {
        let mut n = Need::new("m", crate::instance!("A"));
        n.protocols = Some(vec![Protocol::Ws, Protocol::Tcp]);
        assert_eq!(n.protocols(), vec![Protocol::Tcp, Protocol::Ws]);
        n.protocols = Some(vec![]);
        assert_eq!(n.validate(), Err(NeedError::BadProtocols));
    }

    #[test]
    fn every_allexjs_field_is_kept_verbatim_in_order() {
        let text = r#"[{"modulename":"m","instancename":"A","propertyhash":{"z":1,"a":2},"tcpport":15000,"httpport":null,"strategies":{"ip":"10.0.0.0/8"},"closed":false,"timeout":30.5,"debug":true,"debug_brk":false,"prof":"x","gate":{"g":1},"zzz_unknown":[1,2]}]"#;
        let f = NeedsFile::parse(Path::new("needs"), text).unwrap();
        let n = &f.0[0];
        assert_eq!(n.pinned_port(Protocol::Tcp), Some(15000));
        assert_eq!(n.pinned_port(Protocol::Http), None);
        assert!(!n.closed());
        assert_eq!(n.timeout(), Some(std::time::Duration::from_millis(30_500)));
        assert_eq!(n.strategy_ip(), Some("10.0.0.0/8"));
        assert!(n.allows("10.1.2.3".parse().unwrap()));
        assert!(!n.allows("192.168.1.1".parse().unwrap()));
        let back = serde_json::to_string(&f.0).unwrap();
        assert_eq!(back, text);
    }

    #[test]
    fn fields_we_act_on_are_checked_and_located() {
        for (field, value) in [
            ("tcpport", "0"),
            ("wsport", "70000"),
            ("httpport", "\"80\""),
            ("closed", "\"yes\""),
            ("timeout", "-1"),
            ("strategies", "{\"ip\":\"nowhere\"}"),
            ("strategies", "3"),
        ] {
            let text = format!(
                "[{{\"modulename\":\"m\",\n\"instancename\":\"A\",\n\"{field}\":{value}}}]"
            );
            let e = NeedsFile::parse(Path::new("needs"), &text).unwrap_err();
            assert_eq!((e.line, e.column), (3, 1), "{field}: {e}");
            assert!(e.message.starts_with(field), "{e}");
        }
    }
}
