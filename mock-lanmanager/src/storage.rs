//! Where the lan manager's durable state lives, behind one interface:
//! today's files under `.allexlanmanager` (the default) or etcd (`--store
//! etcd://HOST:PORT[,...]`), so several lan managers can share it.
//!
//! The core never sees which: it asks for writes (`Effect::Write`), and two
//! writer threads carry them out in order on a [`Storage`] each.

use crate::leadership::Fence;
use crate::needs_store::{journal_entries, RunningHint, Store, StoreError};
use allex_protocol::layers::{Layers, RuntimeEntry, Source};
use allex_protocol::InstanceName;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

/// Which store `run` uses.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum StoreKind {
    /// Files under `<dir>/.allexlanmanager`.
    #[default]
    Files,
    /// etcd v3 at these endpoints, every key under `prefix`.
    Etcd {
        /// `host:port` of each etcd member.
        endpoints: Vec<String>,
        /// The key prefix (`--store-prefix`, default `/allex`).
        prefix: String,
    },
}

impl StoreKind {
    /// Reads `--store`: `files`, or `etcd://HOST:PORT[,HOST:PORT...]`.
    pub fn parse(text: &str, prefix: &str) -> Result<StoreKind, String> {
        if text == "files" {
            return Ok(StoreKind::Files);
        }
        let Some(list) = text.strip_prefix("etcd://") else {
            return Err(format!(
                "--store {text:?}: expected `files` or `etcd://HOST:PORT[,HOST:PORT...]`"
            ));
        };
        let endpoints: Vec<String> = list
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(str::to_string)
            .collect();
        if endpoints.is_empty() {
            return Err(format!("--store {text:?} names no etcd endpoint"));
        }
        if let Some(bad) = endpoints.iter().find(|e| {
            e.rsplit_once(':')
                .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
        }) {
            return Err(format!("--store: {bad:?} is not HOST:PORT"));
        }
        if !prefix.starts_with('/') || prefix.len() < 2 || prefix.ends_with('/') {
            return Err(format!(
                "--store-prefix {prefix:?}: expected a key prefix such as /allex (a leading /, no trailing /)"
            ));
        }
        Ok(StoreKind::Etcd {
            endpoints,
            prefix: prefix.to_string(),
        })
    }
}

/// The lan manager's durable state: needs layers, generations, master
/// identities and the running records.
pub trait Storage: Send {
    /// Another handle on the same state, for the second writer thread.
    fn fork(&self) -> Box<dyn Storage>;
    /// Where it is, for logs.
    fn describe(&self) -> String;
    /// Reads and checks the three needs layers (`needs` is created as `[]` when missing).
    fn load_layers(&mut self) -> Result<Layers, StoreError>;
    /// Replaces `needs.runtime`; durable when this returns Ok.
    fn write_runtime(&mut self, runtime: &[RuntimeEntry]) -> Result<(), StoreError>;
    /// The highest generation bound reserved so far (0 when none).
    fn load_generation(&mut self) -> Result<u64, StoreError>;
    /// Reserves every generation below `bound`; durable when this returns Ok.
    fn write_generation(&mut self, bound: u64) -> Result<(), StoreError>;
    /// Master identities: name -> SHA-256 of the secret first seen for it.
    fn load_masters(&mut self) -> Result<BTreeMap<String, String>, StoreError>;
    /// Replaces the master identities; durable when this returns Ok.
    fn write_masters(&mut self, masters: &BTreeMap<String, String>) -> Result<(), StoreError>;
    /// Which need ran on which master; advisory, so faults only log.
    fn load_running(&mut self) -> HashMap<InstanceName, RunningHint>;
    /// Applies journal lines (each a need now running as a hint, or no longer).
    fn append_running(&mut self, lines: &[u8]) -> Result<(), String>;
    /// Replaces the running records with `hints`.
    fn compact_running(
        &mut self,
        hints: &HashMap<InstanceName, RunningHint>,
    ) -> Result<(), StoreError>;
}

/// The files under `.allexlanmanager`; the journal is opened by the writer
/// that first appends to it.
pub struct FileStorage {
    store: Store,
    journal: Option<std::fs::File>,
    opened: bool,
}

impl FileStorage {
    /// Wraps the files.
    pub fn new(store: Store) -> FileStorage {
        FileStorage {
            store,
            journal: None,
            opened: false,
        }
    }

    fn journal(&mut self) -> Option<&mut std::fs::File> {
        if !self.opened {
            self.opened = true;
            self.journal = match self.store.open_running_journal() {
                Ok(f) => Some(f),
                Err(e) => {
                    tracing::warn!(
                        "cannot open the running journal; restarts may move services: {e}"
                    );
                    None
                }
            };
        }
        self.journal.as_mut()
    }
}

impl Storage for FileStorage {
    fn fork(&self) -> Box<dyn Storage> {
        Box::new(FileStorage::new(self.store.clone()))
    }
    fn describe(&self) -> String {
        self.store.needs_path().display().to_string()
    }
    fn load_layers(&mut self) -> Result<Layers, StoreError> {
        self.store.load_layers()
    }
    fn write_runtime(&mut self, runtime: &[RuntimeEntry]) -> Result<(), StoreError> {
        self.store.write_runtime(runtime)
    }
    fn load_generation(&mut self) -> Result<u64, StoreError> {
        self.store.load_generation()
    }
    fn write_generation(&mut self, bound: u64) -> Result<(), StoreError> {
        self.store.write_generation(bound)
    }
    fn load_masters(&mut self) -> Result<BTreeMap<String, String>, StoreError> {
        self.store.load_masters()
    }
    fn write_masters(&mut self, masters: &BTreeMap<String, String>) -> Result<(), StoreError> {
        self.store.write_masters(masters)
    }
    fn load_running(&mut self) -> HashMap<InstanceName, RunningHint> {
        self.store.load_running()
    }
    fn append_running(&mut self, lines: &[u8]) -> Result<(), String> {
        use std::io::Write as _;
        match self.journal() {
            Some(j) => j.write_all(lines).map_err(|e| e.to_string()),
            None => Err("the running journal could not be opened".to_string()),
        }
    }
    fn compact_running(
        &mut self,
        hints: &HashMap<InstanceName, RunningHint>,
    ) -> Result<(), StoreError> {
        let _ = self.journal();
        match &self.journal {
            Some(j) => self.store.compact_running(hints, j),
            None => self.store.write_running(hints),
        }
    }
}

/// etcd v3: the three layers as texts at `<prefix>/needs`, `/needs.overlay`
/// and `/needs.runtime` (the AllexJS format, as in the files), the bound at
/// `/generation`, the identities at `/masters` (JSON) and one key per
/// running need at `/running/<instance>`. Every call waits for etcd's answer
/// on the writer's thread (never on the state owner).
pub struct EtcdStorage {
    client: etcd_client::Client,
    rt: tokio::runtime::Handle,
    endpoints: Vec<String>,
    prefix: String,
    /// The leader's election key: every write compares it, so a lan manager
    /// that lost the election changes nothing.
    fence: Fence,
}

/// The most operations etcd takes in one transaction (its `--max-txn-ops` default).
const MAX_TXN_OPS: usize = 128;

/// An etcd client error as a store error naming `what` was asked.
pub(crate) fn etcd_err(what: &str) -> impl FnOnce(etcd_client::Error) -> StoreError + '_ {
    move |e| StoreError::Etcd {
        what: what.to_string(),
        message: e.to_string(),
    }
}

impl EtcdStorage {
    /// Connects to `endpoints` for the leader that holds `fence`; call off
    /// the runtime's workers (a blocking thread).
    pub fn connect(
        rt: tokio::runtime::Handle,
        endpoints: &[String],
        prefix: &str,
        fence: Fence,
    ) -> Result<EtcdStorage, StoreError> {
        let opts = etcd_client::ConnectOptions::new()
            .with_connect_timeout(std::time::Duration::from_secs(3))
            .with_timeout(std::time::Duration::from_secs(5));
        let client = rt
            .block_on(etcd_client::Client::connect(endpoints, Some(opts)))
            .map_err(|e| StoreError::Etcd {
                what: format!("connect to {}", endpoints.join(",")),
                message: e.to_string(),
            })?;
        let mut s = EtcdStorage {
            client,
            rt,
            endpoints: endpoints.to_vec(),
            prefix: prefix.to_string(),
            fence,
        };
        // A first answer now, so an unreachable etcd stops the start here.
        s.get("generation")?;
        Ok(s)
    }

    fn key(&self, name: &str) -> String {
        format!("{}/{name}", self.prefix)
    }

    fn get(&mut self, name: &str) -> Result<Option<String>, StoreError> {
        let key = self.key(name);
        let resp = self
            .rt
            .block_on(self.client.get(key.clone(), None))
            .map_err(etcd_err(&key))?;
        Ok(resp
            .kvs()
            .first()
            .map(|kv| String::from_utf8_lossy(kv.value()).into_owned()))
    }

    fn put(&mut self, name: &str, value: String) -> Result<(), StoreError> {
        let key = self.key(name);
        self.fenced(
            vec![etcd_client::TxnOp::put(key.clone(), value, None)],
            &key,
        )
    }

    /// The running records as etcd holds them: instance -> hint.
    fn running_keys(&mut self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let prefix = self.key("running/");
        let resp = self
            .rt
            .block_on(self.client.get(
                prefix.clone(),
                Some(etcd_client::GetOptions::new().with_prefix()),
            ))
            .map_err(etcd_err(&prefix))?;
        Ok(resp
            .kvs()
            .iter()
            .map(|kv| {
                (
                    String::from_utf8_lossy(kv.key()).into_owned(),
                    kv.value().to_vec(),
                )
            })
            .collect())
    }

    /// Carries out `ops` in one transaction, only while this lan manager's
    /// election key stands; finding it gone deposes this lan manager.
    ///
    /// etcd refuses a transaction of more than 128 operations (its default
    /// `--max-txn-ops`), so a long list goes as several, each fenced; every
    /// key stands alone, so they need not land together.
    fn fenced(&mut self, mut ops: Vec<etcd_client::TxnOp>, what: &str) -> Result<(), StoreError> {
        while !ops.is_empty() {
            let rest = ops.split_off(ops.len().min(MAX_TXN_OPS));
            self.fenced_txn(ops, what)?;
            ops = rest;
        }
        Ok(())
    }

    fn fenced_txn(&mut self, ops: Vec<etcd_client::TxnOp>, what: &str) -> Result<(), StoreError> {
        if self.fence.deposition.is_deposed() {
            return Err(StoreError::NotLeader);
        }
        let txn = etcd_client::Txn::new()
            .when([self.fence.compare()])
            .and_then(ops);
        let resp = self
            .rt
            .block_on(self.client.txn(txn))
            .map_err(etcd_err(what))?;
        if resp.succeeded() {
            Ok(())
        } else {
            self.fence
                .deposition
                .depose("a write found this lan manager's election key gone: another leads");
            Err(StoreError::NotLeader)
        }
    }
}

impl Storage for EtcdStorage {
    fn fork(&self) -> Box<dyn Storage> {
        Box::new(EtcdStorage {
            client: self.client.clone(),
            rt: self.rt.clone(),
            endpoints: self.endpoints.clone(),
            prefix: self.prefix.clone(),
            fence: self.fence.clone(),
        })
    }
    fn describe(&self) -> String {
        format!("etcd://{}{}", self.endpoints.join(","), self.prefix)
    }
    fn load_layers(&mut self) -> Result<Layers, StoreError> {
        let needs = match self.get("needs")? {
            Some(t) => t,
            None => {
                self.put("needs", "[]\n".into())?;
                "[]\n".into()
            }
        };
        let overlay = self.get("needs.overlay")?;
        let runtime = self.get("needs.runtime")?;
        let (np, op, rp) = (
            PathBuf::from(self.key("needs")),
            PathBuf::from(self.key("needs.overlay")),
            PathBuf::from(self.key("needs.runtime")),
        );
        Ok(Layers::parse(
            Source {
                path: &np,
                text: &needs,
            },
            overlay.as_deref().map(|text| Source { path: &op, text }),
            runtime.as_deref().map(|text| Source { path: &rp, text }),
        )?)
    }
    fn write_runtime(&mut self, runtime: &[RuntimeEntry]) -> Result<(), StoreError> {
        let text = Layers {
            runtime: runtime.to_vec(),
            ..Layers::default()
        }
        .runtime_text();
        self.put("needs.runtime", text)
    }
    fn load_generation(&mut self) -> Result<u64, StoreError> {
        match self.get("generation")? {
            None => Ok(0),
            Some(text) => text
                .trim()
                .parse::<u64>()
                .map_err(|_| StoreError::BadGeneration {
                    path: PathBuf::from(self.key("generation")),
                    text: text.chars().take(64).collect(),
                }),
        }
    }
    fn write_generation(&mut self, bound: u64) -> Result<(), StoreError> {
        self.put("generation", format!("{bound}\n"))
    }
    fn load_masters(&mut self) -> Result<BTreeMap<String, String>, StoreError> {
        match self.get("masters")? {
            None => Ok(BTreeMap::new()),
            Some(text) => serde_json::from_str(&text).map_err(|e| StoreError::BadMasters {
                path: PathBuf::from(self.key("masters")),
                message: e.to_string(),
            }),
        }
    }
    fn write_masters(&mut self, masters: &BTreeMap<String, String>) -> Result<(), StoreError> {
        let text = serde_json::to_string_pretty(masters).unwrap_or_else(|_| "{}".into());
        self.put("masters", text)
    }
    fn load_running(&mut self) -> HashMap<InstanceName, RunningHint> {
        let prefix = self.key("running/");
        match self.running_keys() {
            Ok(kvs) => kvs
                .into_iter()
                .filter_map(|(k, v)| {
                    let name = InstanceName::new(k.strip_prefix(&prefix)?).ok()?;
                    let hint = serde_json::from_slice(&v)
                        .map_err(|e| tracing::warn!(key = %k, "ignoring an unreadable running record: {e}"))
                        .ok()?;
                    Some((name, hint))
                })
                .collect(),
            Err(e) => {
                tracing::warn!("cannot read the running records: {e}");
                HashMap::new()
            }
        }
    }
    fn append_running(&mut self, lines: &[u8]) -> Result<(), String> {
        let text = String::from_utf8_lossy(lines);
        let entries = journal_entries(&text).map_err(|e| e.to_string())?;
        // One operation per key in a transaction: the last word on each wins.
        let mut last: BTreeMap<InstanceName, Option<RunningHint>> = BTreeMap::new();
        for (instance, hint) in entries {
            last.insert(instance, hint);
        }
        let ops = last
            .into_iter()
            .map(|(instance, hint)| {
                let key = self.key(&format!("running/{instance}"));
                match hint {
                    Some(h) => etcd_client::TxnOp::put(
                        key,
                        serde_json::to_vec(&h).unwrap_or_default(),
                        None,
                    ),
                    None => etcd_client::TxnOp::delete(key, None),
                }
            })
            .collect();
        self.fenced(ops, "running records")
            .map_err(|e| e.to_string())
    }
    fn compact_running(
        &mut self,
        hints: &HashMap<InstanceName, RunningHint>,
    ) -> Result<(), StoreError> {
        let keep: std::collections::BTreeSet<String> = hints
            .keys()
            .map(|i| self.key(&format!("running/{i}")))
            .collect();
        let mut ops: Vec<etcd_client::TxnOp> = self
            .running_keys()?
            .into_iter()
            .filter(|(k, _)| !keep.contains(k))
            .map(|(k, _)| etcd_client::TxnOp::delete(k, None))
            .collect();
        ops.extend(hints.iter().map(|(i, h)| {
            etcd_client::TxnOp::put(
                self.key(&format!("running/{i}")),
                serde_json::to_vec(h).unwrap_or_default(),
                None,
            )
        }));
        self.fenced(ops, "running records")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_addresses_are_read_and_bad_ones_refused() {
        assert_eq!(StoreKind::parse("files", "/allex"), Ok(StoreKind::Files));
        assert_eq!(
            StoreKind::parse("etcd://10.0.0.1:2379, 10.0.0.2:2379", "/allex"),
            Ok(StoreKind::Etcd {
                endpoints: vec!["10.0.0.1:2379".into(), "10.0.0.2:2379".into()],
                prefix: "/allex".into()
            })
        );
        for bad in [
            "etcd://",
            "etcd://host",
            "etcd://:2379",
            "etcd://h:99999",
            "redis://h:1",
        ] {
            assert!(StoreKind::parse(bad, "/allex").is_err(), "{bad}");
        }
        for bad in ["allex", "/", "/allex/"] {
            assert!(StoreKind::parse("etcd://h:2379", bad).is_err(), "{bad}");
        }
    }
}
