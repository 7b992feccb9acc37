//! Needs file and admin CLI over the real binary.

mod common;

use allex_protocol::InstanceName;
use allex_protocol::{LanToMaster, Need, NeedState, Protocol};
use common::*;

#[tokio::test]
async fn missing_needs_file_is_created_as_empty_list() {
    let dir = tempfile::tempdir().unwrap();
    let lm = LanManager::start(LanOptions::patient(dir.path())).unwrap();
    assert_eq!(
        std::fs::read_to_string(lm.needs_path()).unwrap().trim(),
        "[]"
    );
    assert!(lm.status().unwrap().needs.is_empty());
}

#[tokio::test]
async fn bad_needs_file_refuses_to_start_naming_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join(".allexlanmanager");
    std::fs::create_dir_all(&d).unwrap();
    let text = "[\n {\"modulename\":\"m\",\"instancename\":\"A\"},\n {\"modulename\":\"m\",\"instancename\":\"A\"}\n]";
    std::fs::write(d.join("needs"), text).unwrap();
    let err = match LanManager::start(LanOptions::patient(dir.path())) {
        Ok(_) => panic!("started on a bad needs file"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("needs:3:20"), "{err}");
    assert!(err.contains("duplicate instancename"), "{err}");
    // The operator's file is left as it was.
    assert_eq!(std::fs::read_to_string(d.join("needs")).unwrap(), text);
}

#[tokio::test]
async fn need_add_and_remove_are_on_disk_when_acknowledged_and_survive_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut lm = LanManager::start(LanOptions::patient(dir.path())).unwrap();
    lm.need_add(&Need {
        propertyhash: serde_json::json!({"k": "v"}).as_object().unwrap().clone(),
        protocols: Some(vec![Protocol::Tcp, Protocol::Ws]),
        ipaddress: Some("127.0.0.0/8".into()),
        ..need("svc", "A")
    })
    .unwrap();
    // The CLI exited 0: the need must already be on disk.
    let on_disk = lm.needs_on_disk();
    assert_eq!(on_disk.len(), 1);
    assert_eq!(on_disk[0].instancename, "A");
    assert_eq!(on_disk[0].propertyhash["k"], "v");
    assert_eq!(
        on_disk[0].protocols,
        Some(vec![Protocol::Tcp, Protocol::Ws])
    );
    lm.need_add(&need("svc", "B")).unwrap();
    lm.need_add(&need("svc", "C")).unwrap();

    let dup = lm
        .cli(&["need", "add", "--module", "svc", "--instance", "B"])
        .unwrap();
    assert!(!dup.status.success());
    assert!(dup.stderr.contains("duplicate"), "{dup:?}");
    let bad = lm
        .cli(&["need", "add", "--module", "svc", "--instance", "../x"])
        .unwrap();
    assert!(!bad.status.success());

    let out = lm.cli(&["need", "remove", "B"]).unwrap();
    assert!(out.status.success(), "{out:?}");
    let names: Vec<InstanceName> = lm
        .needs_on_disk()
        .into_iter()
        .map(|n| n.instancename)
        .collect();
    assert_eq!(names, vec!["A", "C"]);
    let missing = lm.cli(&["need", "remove", "B"]).unwrap();
    assert!(!missing.status.success());
    assert!(missing.stderr.contains("unknown"), "{missing:?}");

    lm.kill().unwrap();
    let lm = LanManager::start(LanOptions::patient(dir.path())).unwrap();
    let st = lm.status().unwrap();
    let names: Vec<&str> = st
        .needs
        .iter()
        .map(|n| n.need.instancename.as_str())
        .collect();
    assert_eq!(names, vec!["A", "C"]);
    assert!(st.needs.iter().all(|n| n.state == NeedState::Open));
    assert_eq!(st.needs[0].need.ipaddress.as_deref(), Some("127.0.0.0/8"));
    let table = lm.cli(&["status"]).unwrap();
    let table = table.stdout;
    assert!(
        table.contains("NEEDS (2)") && table.contains("RUNNING (0)"),
        "{table}"
    );
}

#[test]
fn admin_commands_without_a_running_lan_manager_fail_clearly() {
    let port = dead_ports().tcp.unwrap();
    let addr = format!("127.0.0.1:{port}");
    let out = std::process::Command::new(binary())
        .args(["need", "remove", "A", "--connect", &addr])
        .env_remove("ALLEX_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("cannot reach the lan manager at {addr}")),
        "{err}"
    );
}

#[tokio::test]
async fn unwritable_needs_file_refuses_the_change_and_keeps_memory() {
    let dir = tempfile::tempdir().unwrap();
    let lm = LanManager::start(LanOptions::patient(dir.path())).unwrap();
    lm.need_add(&need("svc", "A")).unwrap();
    // A non-empty directory where the file is makes the rename fail, even for root.
    let saved = std::fs::read_to_string(lm.runtime_path()).unwrap();
    std::fs::remove_file(lm.runtime_path()).unwrap();
    std::fs::create_dir_all(lm.runtime_path().join("block")).unwrap();
    let out = lm
        .cli(&["need", "add", "--module", "svc", "--instance", "B"])
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stderr.contains("storage"), "{out:?}");
    let st = lm.status().unwrap();
    assert_eq!(st.needs.len(), 1, "{st:?}");
    std::fs::remove_dir_all(lm.runtime_path()).unwrap();
    std::fs::write(lm.runtime_path(), saved).unwrap();
    lm.need_add(&need("svc", "B")).unwrap();
    assert_eq!(lm.status().unwrap().needs.len(), 2);
    assert_eq!(lm.needs_on_disk().len(), 2);
}

#[tokio::test]
async fn added_need_is_offered_to_masters_that_serve_it_and_address_is_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let lm = LanManager::start(LanOptions::patient(dir.path())).unwrap();
    let mut m = FakeMaster::connect(lm.addr(), "m1", &["svc"]).await;
    let mut other = FakeMaster::connect(lm.addr(), "m2", &["othermodule"]).await;
    lm.need_add(&need("svc", "A")).unwrap();
    for (name, ip) in [("Far", "10.0.0.0/8"), ("Near", "127.0.0.1")] {
        lm.need_add(&Need {
            ipaddress: Some(ip.into()),
            ..need("svc", name)
        })
        .unwrap();
    }
    let seen = m.drain().await;
    let opened: Vec<InstanceName> = seen
        .iter()
        .filter_map(|x| match x {
            LanToMaster::NeedOpen { need } => Some(need.instancename.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(opened, vec!["A", "Near"]);
    assert!(other
        .drain()
        .await
        .iter()
        .all(|x| !matches!(x, LanToMaster::NeedOpen { .. })));
    match m.claim("Far").await {
        LanToMaster::ClaimRefused { reason, .. } => {
            assert!(reason.contains("ipaddress"), "{reason}")
        }
        x => panic!("{x:?}"),
    }
    m.grant("Near").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_admin_changes_all_land_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let lm = LanManager::start(LanOptions::patient(dir.path())).unwrap();
    let addr = lm.addr();
    let adds: Vec<_> = (0..20)
        .map(|i| {
            let addr = addr.to_string();
            std::thread::spawn(move || {
                std::process::Command::new(binary())
                    .args([
                        "need",
                        "add",
                        "--module",
                        "svc",
                        "--instance",
                        &format!("C{i}"),
                    ])
                    .args(["--connect", &addr])
                    .env_remove("ALLEX_TOKEN")
                    .output()
                    .unwrap()
            })
        })
        .collect();
    for a in adds {
        let out = a.join().unwrap();
        assert!(out.status.success(), "{out:?}");
    }
    let mut on_disk: Vec<InstanceName> = lm
        .needs_on_disk()
        .into_iter()
        .map(|n| n.instancename)
        .collect();
    on_disk.sort();
    let mut want: Vec<String> = (0..20).map(|i| format!("C{i}")).collect();
    want.sort();
    assert_eq!(on_disk, want);
    assert_eq!(lm.status().unwrap().needs.len(), 20);
}
