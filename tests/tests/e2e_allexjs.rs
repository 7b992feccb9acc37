//! AllexJS files as AllexJS writes them, over the real binaries and a real
//! service: the master's hidden config name and `lanmanagerportcorrection`,
//! both names refused, and pinned ports (`tcpport`) taken exactly or left
//! to others with why.

use allex_e2e::{ok, DEADLINE};
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
    let rec = wait_until("Pinned runs", DEADLINE, || {
        let st = lm.status().map_err(|e| e.to_string())?;
        st.running
            .iter()
            .find(|r| r.instancename == "Pinned")
            .cloned()
            .ok_or(format!("{st:?}"))
    })
    .unwrap();
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
