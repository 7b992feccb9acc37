//! `allexmasterconfig.json`: the master's configuration file.

use crate::error::FileError;
use crate::located::{error_at, find_key, json_error};
use crate::names::validate_name;
use crate::types::Protocol;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// The file a master writes when none exists: exactly the AllexJS seed.
pub const DEFAULT_CONFIG_TEXT: &str = r#"{
  "lanmanageraddress": "127.0.0.1",
  "portrangestart": { "tcp": 15000, "http": 16000, "ws": 17000 }
}
"#;

/// The config file's name in the master's working directory.
pub const CONFIG_FILE_NAME: &str = "allexmasterconfig.json";

/// The lan manager's default WebSocket port.
pub const DEFAULT_LANMANAGER_PORT: u16 = 23552;

/// The master's configuration. Keys are lowercase, as in AllexJS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[serde(deny_unknown_fields)]
pub struct MasterConfig {
    /// Host name or address of the lan manager.
    pub lanmanageraddress: String,
    /// The lan manager's WebSocket port.
    #[serde(default = "default_lanmanagerport")]
    pub lanmanagerport: u16,
    /// AllexJS: added to `lanmanagerport` to get the port actually dialled
    /// (several LANs on one machine shift all their ports by one offset).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub lanmanagerportcorrection: i32,
    /// First port of each protocol's range.
    pub portrangestart: PortStarts,
    /// How many ports each protocol's range holds, from its start.
    #[serde(default = "default_portrangesize")]
    pub portrangesize: u16,
    /// The address other machines reach this one's services on; when absent,
    /// the local address of the connection to the lan manager.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advertiseaddress: Option<IpAddr>,
    /// Where the master's and children's sockets, logs and state live.
    #[serde(default = "default_runtimedirectory")]
    #[cfg_attr(
        test,
        proptest(
            strategy = "proptest::strategy::Strategy::prop_map(\"/[a-z]{1,10}\", PathBuf::from)"
        )
    )]
    pub runtimedirectory: PathBuf,
    /// The catalogue: module name -> how to run it.
    #[serde(default)]
    #[cfg_attr(
        test,
        proptest(
            strategy = "proptest::collection::btree_map(\"[a-z]{1,8}\", proptest::prelude::any::<ServiceSpec>(), 0..3)"
        )
    )]
    pub services: BTreeMap<String, ServiceSpec>,
    /// Shared secret presented to the lan manager.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// A file holding the token instead (its first line), relative to the
    /// config file's directory; keeps the secret out of a readable config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenfile: Option<PathBuf>,
    /// A CA certificate (PEM) to verify the lan manager's TLS certificate
    /// with; set, the master dials `wss://`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tlsca: Option<PathBuf>,
    /// The master's client certificate chain (PEM), for a lan manager that
    /// asks for one (`--tls-client-ca`); its name must be the master's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tlscert: Option<PathBuf>,
    /// The private key (PEM) of `tlscert`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tlskey: Option<PathBuf>,
    /// The name the lan manager knows this master by; default `<hostname>:<runtimedirectory>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Size at which a child's stdout/stderr log is rotated, in bytes.
    #[serde(default = "default_logmaxbytes")]
    pub logmaxbytes: u64,
    /// Cap of the reconnect backoff to the lan manager, in milliseconds.
    #[serde(default = "default_reconnectmaxms")]
    pub reconnectmaxms: u64,
    /// How long the logs of an instance that no longer runs here are kept, in milliseconds.
    #[serde(default = "default_logretentionms")]
    pub logretentionms: u64,
    /// Bytes the logs of all instances that no longer run here may take together;
    /// the oldest go first.
    #[serde(default = "default_logretentionbytes")]
    pub logretentionbytes: u64,
    /// Where to serve `GET /metrics` (Prometheus text); none when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    // Text keeps an address and a port, not an IPv6 flow label or scope.
    #[cfg_attr(
        test,
        proptest(
            strategy = "proptest::option::of(proptest::strategy::Strategy::prop_map(proptest::prelude::any::<(std::net::Ipv4Addr, u16)>(), std::net::SocketAddr::from))"
        )
    )]
    pub metricsaddress: Option<std::net::SocketAddr>,
}

/// First port of each protocol's range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[serde(deny_unknown_fields)]
pub struct PortStarts {
    /// TCP range start.
    pub tcp: u16,
    /// HTTP range start.
    pub http: u16,
    /// WebSocket range start.
    pub ws: u16,
}

impl PortStarts {
    /// The start of one protocol's range.
    pub fn get(&self, p: Protocol) -> u16 {
        crate::PerProtocol::from(*self)[p]
    }
}

/// How to run one module of the catalogue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    /// The program to execute (no shell is involved).
    pub command: String,
    /// Its arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Working directory; the master's when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        test,
        proptest(
            strategy = "proptest::option::of(proptest::strategy::Strategy::prop_map(\"/[a-z]{1,10}\", PathBuf::from))"
        )
    )]
    pub cwd: Option<PathBuf>,
    /// Extra environment variables.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Signal sent to the child's process group to stop it.
    #[serde(default)]
    pub stopsignal: StopSignal,
    /// Milliseconds between the stop signal and SIGKILL.
    #[serde(default = "default_stoptimeoutms")]
    pub stoptimeoutms: u64,
    /// A health check the master runs on each child of this entry (a need's
    /// own `check` overrides it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<crate::health::HealthCheck>,
    /// `inherit`: the master binds the service's ports, keeps them across
    /// its restarts and hands them over as `sd_listen_fds(3)` expects; the
    /// service is running once it said it is ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sockets: Option<SocketsMode>,
    /// Resource limits for the service's cgroup, applied where the kernel's
    /// cgroup v2 controllers allow (the master says at start when not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
}

/// What a service's cgroup may use (`"limits"` in a catalogue entry).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// `memory.max`: bytes of memory the whole cgroup may use before the
    /// kernel's OOM killer picks from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memorymaxbytes: Option<u64>,
    /// `cpu.weight`, 1 to 10000 (100 is the kernel's default share).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, proptest(strategy = "proptest::option::of(1u32..=10_000)"))]
    pub cpuweight: Option<u32>,
}

impl Limits {
    /// Why these limits cannot be applied by any kernel, if they cannot.
    pub fn problem(&self) -> Option<(&'static str, String)> {
        if let Some(w) = self.cpuweight {
            if !(1..=10_000).contains(&w) {
                return Some(("cpuweight", format!("is {w}; it must be 1 to 10000")));
            }
        }
        if self.memorymaxbytes == Some(0) {
            return Some(("memorymaxbytes", "is 0; the service could not start".into()));
        }
        None
    }

    /// Whether anything is asked for.
    pub fn is_empty(&self) -> bool {
        self.memorymaxbytes.is_none() && self.cpuweight.is_none()
    }
}

/// Who binds a service's listening sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[serde(rename_all = "snake_case")]
pub enum SocketsMode {
    /// The master binds them and passes them as fd 3 onwards.
    Inherit,
}

/// Signals a service may be stopped with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub enum StopSignal {
    /// SIGTERM, the default.
    #[default]
    #[serde(rename = "SIGTERM")]
    Term,
    /// SIGINT.
    #[serde(rename = "SIGINT")]
    Int,
    /// SIGHUP.
    #[serde(rename = "SIGHUP")]
    Hup,
    /// SIGQUIT.
    #[serde(rename = "SIGQUIT")]
    Quit,
    /// SIGUSR1.
    #[serde(rename = "SIGUSR1")]
    Usr1,
    /// SIGUSR2.
    #[serde(rename = "SIGUSR2")]
    Usr2,
    /// SIGKILL: no grace at all.
    #[serde(rename = "SIGKILL")]
    Kill,
}

impl StopSignal {
    /// The Linux signal number.
    pub fn number(self) -> i32 {
        match self {
            StopSignal::Term => 15,
            StopSignal::Int => 2,
            StopSignal::Hup => 1,
            StopSignal::Quit => 3,
            StopSignal::Usr1 => 10,
            StopSignal::Usr2 => 12,
            StopSignal::Kill => 9,
        }
    }
}

fn default_lanmanagerport() -> u16 {
    DEFAULT_LANMANAGER_PORT
}
fn default_portrangesize() -> u16 {
    1000
}
fn default_runtimedirectory() -> PathBuf {
    PathBuf::from("/tmp")
}
fn default_logmaxbytes() -> u64 {
    1 << 20
}
fn default_reconnectmaxms() -> u64 {
    5000
}
fn default_logretentionms() -> u64 {
    24 * 60 * 60 * 1000
}
fn default_logretentionbytes() -> u64 {
    64 << 20
}
fn default_stoptimeoutms() -> u64 {
    5000
}

fn is_zero(n: &i32) -> bool {
    *n == 0
}

/// The hidden name AllexJS's own code reads the master's config under.
pub const ALLEXJS_CONFIG_FILE_NAME: &str = ".allexmasterconfig.json";

/// Reads a token file: its first line, without surrounding whitespace.
/// An empty or unreadable file is an error, not "no token".
pub fn read_token_file(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: cannot read the token file: {e}", path.display()))?;
    let token = text.lines().next().unwrap_or("").trim();
    if token.is_empty() {
        return Err(format!("{}: the token file is empty", path.display()));
    }
    Ok(token.to_string())
}

/// Whether users other than the owner may read `path` (mode `o+r` or `g+r`):
/// a token file that should be `chmod 600`.
pub fn readable_by_others(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o044 != 0)
}

/// Splits a list of lan manager addresses (`host[:port]`, `[ipv6]:port` or
/// a bare IPv6, separated by commas) into `(host, port)` pairs; a missing
/// port is `default_port`. Several lan managers on etcd lead one at a time,
/// and masters and CLIs follow the one that leads.
pub fn lan_addresses(list: &str, default_port: u16) -> Result<Vec<(String, u16)>, String> {
    let mut out = Vec::new();
    for entry in list.split(',').map(str::trim) {
        if entry.is_empty() {
            return Err(format!("{list:?} holds an empty address"));
        }
        out.push(lan_address(entry, default_port)?);
    }
    Ok(out)
}

/// One `host[:port]` of [`lan_addresses`].
pub fn lan_address(entry: &str, default_port: u16) -> Result<(String, u16), String> {
    let entry = entry
        .strip_prefix("wss://")
        .or_else(|| entry.strip_prefix("ws://"))
        .map_or(entry, |rest| rest.trim_end_matches('/'));
    let bad = || format!("{entry}: expected HOST or HOST:PORT with a port from 1 to 65535");
    let port = |p: &str| p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(bad);
    if let Some(rest) = entry.strip_prefix('[') {
        let (host, tail) = rest.split_once(']').ok_or_else(bad)?;
        return match tail {
            "" => Ok((host.to_string(), default_port)),
            t => Ok((
                host.to_string(),
                port(t.strip_prefix(':').ok_or_else(bad)?)?,
            )),
        };
    }
    if entry.parse::<std::net::Ipv6Addr>().is_ok() {
        return Ok((entry.to_string(), default_port));
    }
    match entry.rsplit_once(':') {
        None => Ok((entry.to_string(), default_port)),
        Some((host, p)) if !host.is_empty() && !host.contains(':') => {
            Ok((host.to_string(), port(p)?))
        }
        Some(_) => Err(bad()),
    }
}

impl MasterConfig {
    /// The lan managers to dial, in order: `lanmanageraddress` as a list,
    /// each without a port on [`MasterConfig::lanmanager_port`].
    pub fn lanmanager_addresses(&self) -> Vec<(String, u16)> {
        lan_addresses(&self.lanmanageraddress, self.lanmanager_port())
            .unwrap_or_else(|_| vec![(self.lanmanageraddress.clone(), self.lanmanager_port())])
    }

    /// Whether the master dials its lan managers over TLS: a CA to verify
    /// them with (`tlsca`) or a `wss://` address.
    pub fn lan_tls(&self) -> bool {
        self.tlsca.is_some() || self.lanmanageraddress.contains("wss://")
    }

    /// The lan manager port to dial: `lanmanagerport` plus `lanmanagerportcorrection`.
    pub fn lanmanager_port(&self) -> u16 {
        u16::try_from(i64::from(self.lanmanagerport) + i64::from(self.lanmanagerportcorrection))
            .unwrap_or(self.lanmanagerport)
    }

    /// Parses and validates a config file's text; `path` only names it in errors.
    pub fn parse(path: &Path, text: &str) -> Result<MasterConfig, FileError> {
        let cfg: MasterConfig =
            serde_json::from_str(text).map_err(|e| json_error(path, text, 0, &e))?;
        cfg.check(path, text)?;
        Ok(cfg)
    }

    /// Reads and parses a config file from disk.
    ///
    /// Paths in it (`tokenfile`, `tlsca`, `tlscert`, `tlskey`) are taken
    /// relative to the file's directory, and `tokenfile` is read into `token`.
    pub fn load(path: &Path) -> Result<MasterConfig, FileError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| FileError::unlocated(path, format!("cannot read: {e}")))?;
        let mut cfg = Self::parse(path, &text)?;
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [
            &mut cfg.tokenfile,
            &mut cfg.tlsca,
            &mut cfg.tlscert,
            &mut cfg.tlskey,
        ]
        .into_iter()
        .flatten()
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        if let Some(file) = &cfg.tokenfile {
            let token = read_token_file(file)
                .map_err(|m| error_at(path, &text, find_key(&text, 0, "tokenfile"), m))?;
            cfg.token = Some(token);
        }
        Ok(cfg)
    }

    /// The range of one protocol, inclusive.
    pub fn port_range(&self, p: Protocol) -> std::ops::RangeInclusive<u32> {
        let start = u32::from(self.portrangestart.get(p));
        start..=start + u32::from(self.portrangesize) - 1
    }

    fn check(&self, path: &Path, text: &str) -> Result<(), FileError> {
        let at = |key: &str, from: usize| find_key(text, from, key);
        let fail = |offset: usize, msg: String| Err(error_at(path, text, offset, msg));
        if self.lanmanageraddress.trim().is_empty() {
            return fail(
                at("lanmanageraddress", 0),
                "lanmanageraddress is empty".into(),
            );
        }
        if let Err(why) = lan_addresses(&self.lanmanageraddress, self.lanmanagerport) {
            return fail(
                at("lanmanageraddress", 0),
                format!("lanmanageraddress: {why}"),
            );
        }
        if self.lanmanagerport == 0 {
            return fail(
                at("lanmanagerport", 0),
                "lanmanagerport must be in 1..=65535".into(),
            );
        }
        let corrected = i64::from(self.lanmanagerport) + i64::from(self.lanmanagerportcorrection);
        if !(1..=65535).contains(&corrected) {
            return fail(
                at("lanmanagerportcorrection", 0),
                format!(
                    "lanmanagerport {} with lanmanagerportcorrection {} is port {corrected}, outside 1..=65535",
                    self.lanmanagerport, self.lanmanagerportcorrection
                ),
            );
        }
        if self.portrangesize == 0 {
            return fail(
                at("portrangesize", 0),
                "portrangesize must be at least 1".into(),
            );
        }
        let starts = at("portrangestart", 0);
        for p in Protocol::ALL {
            let r = self.port_range(p);
            if *r.start() == 0 || *r.end() > 65535 {
                return fail(
                    at(p.as_str(), starts),
                    format!(
                        "the {p} port range {}..={} leaves 1..=65535 (portrangestart.{p} with portrangesize {})",
                        r.start(),
                        r.end(),
                        self.portrangesize
                    ),
                );
            }
        }
        for (i, a) in Protocol::ALL.iter().enumerate() {
            for b in &Protocol::ALL[i + 1..] {
                let (ra, rb) = (self.port_range(*a), self.port_range(*b));
                if ra.start() <= rb.end() && rb.start() <= ra.end() {
                    return fail(
                        at(b.as_str(), starts),
                        format!(
                            "the {a} port range {}..={} overlaps the {b} port range {}..={}",
                            ra.start(),
                            ra.end(),
                            rb.start(),
                            rb.end()
                        ),
                    );
                }
            }
        }
        if let Some(name) = &self.name {
            if let Err(e) = validate_name("name", name) {
                return fail(at("name", 0), e.to_string());
            }
        }
        let services = at("services", 0);
        for (module, spec) in &self.services {
            let here = find_key(text, services, module);
            if let Err(e) = validate_name("module name", module) {
                return fail(here, e.to_string());
            }
            if spec.command.trim().is_empty() {
                return fail(
                    at("command", here),
                    format!("services.{module}.command is empty"),
                );
            }
            if spec.command.contains('\0') || spec.args.iter().any(|a| a.contains('\0')) {
                return fail(
                    at("command", here),
                    format!("services.{module} holds a NUL character in its command or args"),
                );
            }
            if let Some((field, why)) = spec.check.as_ref().and_then(|c| c.problem()) {
                return fail(
                    at(field, at("check", here)),
                    format!("services.{module}.check.{field} {why}"),
                );
            }
            if let Some((field, why)) = spec.limits.as_ref().and_then(|l| l.problem()) {
                return fail(
                    at(field, at("limits", here)),
                    format!("services.{module}.limits.{field} {why}"),
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_of_lan_managers_is_read_and_a_bad_entry_refused_at_its_key() {
        let pairs = |l| lan_addresses(l, 23552).unwrap();
        assert_eq!(pairs("10.0.0.1"), vec![("10.0.0.1".to_string(), 23552)]);
        assert_eq!(
            pairs("a, wss://b:7100/,[::1]:9,::1,[fe80::1]"),
            vec![
                ("a".to_string(), 23552),
                ("b".to_string(), 7100),
                ("::1".to_string(), 9),
                ("::1".to_string(), 23552),
                ("fe80::1".to_string(), 23552),
            ]
        );
        for bad in [
            "a,,b", "a,", "h:0", "h:99999", "h:x", ":7", "[::1", "[::1]x",
        ] {
            assert!(lan_addresses(bad, 23552).is_err(), "{bad}");
        }
        let text = "{\n  \"lanmanageraddress\": \"10.0.0.1, 10.0.0.2:abc\",\n  \"portrangestart\": { \"tcp\": 1, \"http\": 2, \"ws\": 3 }\n}\n";
        let e = MasterConfig::parse(Path::new("c.json"), text).unwrap_err();
        assert_eq!((e.line, e.column), (2, 3), "{e}");
        assert!(e.message.contains("10.0.0.2:abc: expected HOST"), "{e}");
    }

    #[test]
    fn default_text_is_the_seed() {
        let cfg = MasterConfig::parse(Path::new(CONFIG_FILE_NAME), DEFAULT_CONFIG_TEXT).unwrap();
        assert_eq!(cfg.lanmanageraddress, "127.0.0.1");
        assert_eq!(
            cfg.portrangestart,
            PortStarts {
                tcp: 15000,
                http: 16000,
                ws: 17000
            }
        );
        assert_eq!(cfg.lanmanagerport, 23552);
        assert_eq!(cfg.portrangesize, 1000);
        assert_eq!(cfg.advertiseaddress, None);
        assert_eq!(cfg.runtimedirectory, PathBuf::from("/tmp"));
        assert!(cfg.services.is_empty());
        assert_eq!(cfg.token, None);
        let seed: serde_json::Value = serde_json::from_str(DEFAULT_CONFIG_TEXT).unwrap();
        assert_eq!(
            seed,
            serde_json::json!({
                "lanmanageraddress": "127.0.0.1",
                "portrangestart": { "tcp": 15000, "http": 16000, "ws": 17000 }
            })
        );
    }

    fn err(text: &str) -> FileError {
        MasterConfig::parse(Path::new("c.json"), text).unwrap_err()
    }

    #[test]
    fn overlapping_ranges_are_refused_at_their_key() {
        let e = err("{\"lanmanageraddress\":\"x\",\n\"portrangestart\":{\"tcp\":1000,\n\"http\":1500,\"ws\":3000}}");
        assert_eq!((e.line, e.column), (3, 1));
        assert!(e.message.contains("overlaps"), "{e}");
    }

    #[test]
    fn out_of_range_ports_are_refused() {
        let e = err("{\"lanmanageraddress\":\"x\",\"portrangestart\":{\"tcp\":65000,\"http\":1,\"ws\":2000}}");
        assert!(e.message.contains("leaves 1..=65535"), "{e}");
        let e = err("{\"lanmanageraddress\":\"x\",\"portrangestart\":{\"tcp\":0,\"http\":1000,\"ws\":2000}}");
        assert!(e.message.contains("leaves 1..=65535"), "{e}");
        let e = err("{\"lanmanageraddress\":\"x\",\"portrangestart\":{\"tcp\":70000,\"http\":1,\"ws\":2000}}");
        assert_eq!(e.line, 1);
        assert!(e.message.contains("70000"), "{e}");
    }

    #[test]
    fn syntax_and_type_errors_are_located() {
        let e = err("{\n  \"lanmanageraddress\": 5\n}");
        assert_eq!(e.line, 2);
        assert!(e.message.contains("invalid type"), "{e}");
        let e = err("{\n  \"lanmanageraddress\": \"x\",,\n}");
        assert_eq!(e.line, 2);
        let e = err("{\"lanmanageraddress\":\"x\",\"portrangestart\":{\"tcp\":1,\"http\":2000,\"ws\":3000},\"portrangesise\":4}");
        assert!(e.message.contains("unknown field `portrangesise`"), "{e}");
    }

    #[test]
    fn limits_no_kernel_could_apply_are_refused_at_their_key() {
        let cfg = |limits: &str| {
            format!("{{\"lanmanageraddress\":\"x\",\"portrangestart\":{{\"tcp\":1,\"http\":2000,\"ws\":3000}},\n\"services\":{{\"m\":{{\"command\":\"x\",\n\"limits\":{limits}}}}}}}")
        };
        let e = err(&cfg("{\"cpuweight\": 0}"));
        assert_eq!(e.line, 3, "{e}");
        assert!(
            e.message
                .contains("services.m.limits.cpuweight is 0; it must be 1 to 10000"),
            "{e}"
        );
        let e = err(&cfg("{\"cpuweight\": 10001}"));
        assert!(e.message.contains("10001"), "{e}");
        let e = err(&cfg("{\"memorymaxbytes\": 0}"));
        assert!(e.message.contains("limits.memorymaxbytes is 0"), "{e}");
        let e = err(&cfg("{\"memorymaxbytes\": -1}"));
        assert!(e.message.contains("invalid value"), "{e}");
        let e = err(&cfg("{\"memory\": 5}"));
        assert!(e.message.contains("unknown field `memory`"), "{e}");
        let ok = MasterConfig::parse(
            Path::new("c.json"),
            &cfg("{\"memorymaxbytes\": 67108864, \"cpuweight\": 50}"),
        )
        .unwrap();
        assert_eq!(
            ok.services["m"].limits,
            Some(Limits {
                memorymaxbytes: Some(67_108_864),
                cpuweight: Some(50)
            })
        );
    }

    #[test]
    fn hostile_module_names_are_refused() {
        let e = err("{\"lanmanageraddress\":\"x\",\"portrangestart\":{\"tcp\":1,\"http\":2000,\"ws\":3000},\n\"services\":{\"../x\":{\"command\":\"/bin/true\"}}}");
        assert_eq!(e.line, 2);
        assert!(e.message.contains("module name"), "{e}");
        let e = err("{\"lanmanageraddress\":\"x\",\"portrangestart\":{\"tcp\":1,\"http\":2000,\"ws\":3000},\"services\":{\"m\":{\"command\":\"\"}}}");
        assert!(e.message.contains("command is empty"), "{e}");
        let e = err("{\"lanmanageraddress\":\"x\",\"portrangestart\":{\"tcp\":1,\"http\":2000,\"ws\":3000},\"services\":{\"m\":{\"command\":\"x\",\"stopsignal\":\"SIGFOO\"}}}");
        assert!(e.message.contains("SIGFOO"), "{e}");
    }
}
