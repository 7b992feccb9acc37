//! AllexJS files as AllexJS writes them, over the real binaries and a real
//! service: the master's hidden config name and `lanmanagerportcorrection`,
//! both names refused, and pinned ports (`tcpport`) taken exactly or left
//! to others with why.

use allex_e2e::{ok, wait_listed, DEADLINE};
use allex_protocol::{NeedState, Protocol};
use allex_sim::harness::{LanManager, LanOptions, Master, MasterOptions};
use allex_sim::wait::wait_until;
use serde_json::json;

#[test]
fn a_master_finds_the_allexjs_config_name_and_takes_a_pinned_port_exactly() {
    let lm = ok(LanManager::start(LanOptions::default()));
    let lan = lm.addr();
    // The port in the file is off by the correction, as AllexJS LANs shift theirs.
    let opts = MasterOptions {
        config_file_name: Some(".allexmasterconfig.json"),
        ..MasterOptions::new(lan)
    };
    let m = ok(Master::start_edited(&opts, |cfg| {
        cfg["lanmanagerport"] = json!(lan.port() - 7);
        cfg["lanmanagerportcorrection"] = json!(7);
    }));
    assert!(
        !m.dir().join("allexmasterconfig.json").exists(),
        "no second config is written beside AllexJS's"
    );
    wait_until("the master connects", DEADLINE, || {
        let st = m.status().map_err(|e| e.to_string())?;
        if st.connected {
            Ok(())
        } else {
            Err(format!("{st:?}"))
        }
    })
    .unwrap();

    let range = m.port_range(Protocol::Tcp);
    let pinned = *range.start() + 5;
    let http = ok(lm.http());
    let add = |body: serde_json::Value| {
        let a = http.post("/v1/needs", &body.to_string()).unwrap();
        assert_eq!(a.status, 201, "{a:?}");
    };
    add(
        json!({"modulename": "testsvc", "instancename": "Pinned", "protocols": ["tcp"], "tcpport": pinned, "debug": false}),
    );
    add(
        json!({"modulename": "testsvc", "instancename": "Far", "protocols": ["tcp"], "tcpport": 1}),
    );
    let rec = wait_listed(&lm, "Pinned", None);
    assert_eq!(rec.ports.tcp, Some(u16::try_from(pinned).unwrap()));
    std::net::TcpStream::connect(("127.0.0.1", rec.ports.tcp.unwrap()))
        .expect("the pinned port accepts");
    // Outside its range: left to others, and the master says why.
    let st = wait_until("the master declines Far", DEADLINE, || {
        let st = m.status().map_err(|e| e.to_string())?;
        if st.declined.keys().any(|k| k == "Far") {
            Ok(st)
        } else {
            Err(format!("{st:?}"))
        }
    })
    .unwrap();
    assert!(st.declined["Far"].contains("outside"), "{st:?}");
    let text = ok(m.status_text());
    assert!(text.contains("left to other masters: Far"), "{text}");
    let far = ok(lm.status())
        .needs
        .into_iter()
        .find(|n| n.need.instancename == "Far")
        .unwrap();
    assert_eq!(far.state, NeedState::Open);
}

#[test]
fn both_config_names_are_refused_naming_both_and_neither_is_touched() {
    let dir = tempfile::tempdir().unwrap();
    let text = allex_protocol::DEFAULT_CONFIG_TEXT;
    for name in ["allexmasterconfig.json", ".allexmasterconfig.json"] {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let mut cmd = std::process::Command::new(allex_testkit::binary("allexmaster").unwrap());
    cmd.arg("run").current_dir(dir.path());
    let out = allex_testkit::process::run_with_deadline("allexmaster", cmd, DEADLINE).unwrap();
    assert!(!out.status.success(), "{out:?}");
    let err = &out.stderr;
    assert!(
        err.contains("allexmasterconfig.json") && err.contains(".allexmasterconfig.json"),
        "{err}"
    );
    for name in ["allexmasterconfig.json", ".allexmasterconfig.json"] {
        assert_eq!(
            std::fs::read_to_string(dir.path().join(name)).unwrap(),
            text
        );
    }
}

#[test]
fn sighup_restarts_only_the_children_whose_catalogue_entry_changed() {
    let lm = ok(LanManager::start(LanOptions::default()));
    let opts = MasterOptions {
        testsvc_modules: vec!["testsvc".into(), "othersvc".into()],
        ..MasterOptions::new(lm.addr())
    };
    let m = ok(Master::start(&opts));
    let name = |s: &str| allex_protocol::InstanceName::new(s).unwrap();
    ok(lm.need_add(&allex_protocol::Need::new("testsvc", name("Same"))));
    ok(lm.need_add(&allex_protocol::Need::new("othersvc", name("Changed"))));
    let running = |lm: &LanManager| -> Result<
        std::collections::BTreeMap<String, (u32, allex_protocol::Ports)>,
        String,
    > {
        let st = lm.status().map_err(|e| e.to_string())?;
        let map: std::collections::BTreeMap<_, _> = st
            .running
            .iter()
            .map(|r| (r.instancename.to_string(), (r.pid, r.ports)))
            .collect();
        if map.len() == 2 {
            Ok(map)
        } else {
            Err(format!("{st:?}"))
        }
    };
    let before = wait_until("both run", DEADLINE, || running(&lm)).unwrap();

    // A broken file changes nothing.
    let good = std::fs::read_to_string(m.config_path()).unwrap();
    std::fs::write(m.config_path(), "{ not json").unwrap();
    ok(m.signal(nix::sys::signal::Signal::SIGHUP));
    wait_until("the refusal is logged", DEADLINE, || {
        let log = m.log();
        if log.contains("config not reloaded") {
            Ok(())
        } else {
            Err(log)
        }
    })
    .unwrap();
    assert_eq!(running(&lm).unwrap(), before);

    // Only othersvc's entry changes.
    let mut cfg: serde_json::Value = serde_json::from_str(&good).unwrap();
    cfg["services"]["othersvc"]["stoptimeoutms"] = json!(1234);
    std::fs::write(m.config_path(), serde_json::to_string_pretty(&cfg).unwrap()).unwrap();
    ok(m.signal(nix::sys::signal::Signal::SIGHUP));
    let after = wait_until("Changed runs again under a new pid", DEADLINE, || {
        let now = running(&lm)?;
        if now["Changed"].0 != before["Changed"].0 {
            Ok(now)
        } else {
            Err(format!("{now:?}"))
        }
    })
    .unwrap();
    assert_eq!(after["Same"], before["Same"], "same pid, same ports");
    assert!(m.is_running());
}
