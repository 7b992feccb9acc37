//! JSON Schemas of every link direction and of the files users write.

use schemars::{schema_for, Schema};

/// Every schema with its file name under `schemas/`.
pub fn all() -> Vec<(&'static str, Schema)> {
    vec![
        (
            "master-to-lanmanager.json",
            schema_for!(crate::lan::MasterToLan),
        ),
        (
            "lanmanager-to-master.json",
            schema_for!(crate::lan::LanToMaster),
        ),
        (
            "admin-to-lanmanager.json",
            schema_for!(crate::lan::AdminToLan),
        ),
        (
            "lanmanager-to-admin.json",
            schema_for!(crate::lan::LanToAdmin),
        ),
        (
            "child-to-master.json",
            schema_for!(crate::local::LocalRequest),
        ),
        (
            "master-to-child.json",
            schema_for!(crate::local::LocalReply),
        ),
        (
            "allexmasterconfig.json",
            schema_for!(crate::config::MasterConfig),
        ),
        ("needs.json", schema_for!(crate::need::NeedsFile)),
        ("allex-spawn.json", schema_for!(crate::spawn::SpawnInfo)),
        (
            "lanmanager-events.json",
            schema_for!(crate::events::LanEvent),
        ),
        (
            "http-monitor.json",
            schema_for!(Vec<crate::monitor::MonitorRecord>),
        ),
    ]
}

/// The text committed for a schema: pretty JSON with every object's keys in
/// name order and a trailing newline, so that a schema's text changes only
/// with its meaning, not with the order fields are declared in.
pub fn render(schema: &Schema) -> String {
    let mut s = serde_json::to_string_pretty(&sorted(schema.as_value())).unwrap_or_default();
    s.push('\n');
    s
}

/// `value` with every object's keys in name order.
fn sorted(value: &serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            keys.into_iter()
                .map(|k| (k.clone(), sorted(&m[k])))
                .collect::<serde_json::Map<_, _>>()
                .into()
        }
        serde_json::Value::Array(a) => a.iter().map(sorted).collect(),
        other => other.clone(),
    }
}
