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

/// The text committed for a schema: pretty JSON with a trailing newline.
pub fn render(schema: &Schema) -> String {
    let mut s = serde_json::to_string_pretty(schema).unwrap_or_default();
    s.push('\n');
    s
}
