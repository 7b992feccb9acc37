//! A real master over TLS: `tlsca` verifies the lan manager, and with
//! `--tls-client-ca` its `tlscert` for its name is its identity; the token
//! comes from `tokenfile`. A need placed through the TLS CLI runs.

use allex_e2e::{ok, wait_listed, DEADLINE};
use allex_sim::harness::{LanManager, LanOptions, Master, MasterOptions};
use allex_sim::wait::wait_until;
use allex_testkit::pki::Pki;
use serde_json::json;

#[test]
fn a_master_serves_over_mutual_tls_with_its_token_from_a_file() {
    let pki = Pki::new("allex e2e CA");
    let server = pki.issue("server", &["127.0.0.1"], false);
    let client = pki.issue("m1", &["m1.lan"], false);
    let ca = pki.ca_path().display().to_string();
    let tokens = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let token_file = tokens.path().join("token");
    std::fs::write(&token_file, "tls-e2e-token-0123456789\n").unwrap_or_else(|e| panic!("{e}"));
    let lm = ok(LanManager::start(LanOptions {
        extra_args: vec![
            "--tls-cert".into(),
            server.cert.display().to_string(),
            "--tls-key".into(),
            server.key.display().to_string(),
            "--tls-client-ca".into(),
            ca.clone(),
            "--token-file".into(),
            token_file.display().to_string(),
        ],
        cli_args: vec![
            "--tls-ca".into(),
            ca.clone(),
            "--token-file".into(),
            token_file.display().to_string(),
        ],
        ..LanOptions::default()
    }));
    let m = ok(Master::start_edited(
        &MasterOptions {
            name: Some("m1.lan".into()),
            ..MasterOptions::new(lm.addr())
        },
        |cfg| {
            cfg["tlsca"] = json!(ca);
            cfg["tlscert"] = json!(client.cert);
            cfg["tlskey"] = json!(client.key);
            cfg["tokenfile"] = json!(token_file);
        },
    ));
    wait_until("the master to connect over TLS", DEADLINE, || {
        let st = lm.status().map_err(|e| e.to_string())?;
        match st.masters.iter().find(|x| x.name == m.name()) {
            Some(x) if x.connected => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", m.log()));
    let name = allex_protocol::InstanceName::new("Secure").unwrap_or_else(|e| panic!("{e}"));
    ok(lm.need_add(&allex_protocol::Need::new("testsvc", name)));
    let rec = wait_listed(&lm, "Secure", None);
    assert_eq!(rec.master, "m1.lan");
    // The token is in neither command line.
    for pid in [lm.pid(), m.pid()].into_iter().flatten() {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        assert!(!String::from_utf8_lossy(&cmdline).contains("tls-e2e-token"));
    }
}
