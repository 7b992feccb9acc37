//! Needs as AllexJS layers them (`needs`, `needs.overlay`, `needs.runtime`),
//! `need disable`/`enable`, and live reload, over the real binary with the
//! AllexJS-written files of `tests/fixtures/allexjs` and fake masters.

mod common;

use allex_protocol::events::LanEvent;
use allex_protocol::{LanToMaster, NeedState, NeedStatus};
use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/allexjs")
        .join(name)
}

/// Copies fixtures into `dir/.allexlanmanager` as `(fixture, file name)`.
fn install(dir: &Path, files: &[(&str, &str)]) {
    let d = dir.join(".allexlanmanager");
    std::fs::create_dir_all(&d).unwrap();
    for (from, to) in files {
        std::fs::copy(fixture(from), d.join(to)).unwrap();
    }
}

fn need_list(lm: &LanManager) -> Vec<NeedStatus> {
    let out = lm.cli(&["need", "list", "--json"]).unwrap();
    assert!(out.status.success(), "{}", out.stderr);
    serde_json::from_str(&out.stdout).unwrap()
}

fn find<'a>(list: &'a [NeedStatus], name: &str) -> &'a NeedStatus {
    list.iter()
        .find(|n| n.need.instancename == name)
        .unwrap_or_else(|| panic!("no need {name} in {list:?}"))
}

fn ok(lm: &LanManager, args: &[&str]) -> String {
    let out = lm.cli(args).unwrap();
    assert!(out.status.success(), "{args:?}: {}", out.stderr);
    out.stdout
}

fn events(lm: &LanManager) -> Vec<LanEvent> {
    ok(lm, &["events", "--json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
async fn allexjs_files_are_merged_by_layer_and_the_operators_files_are_never_written() {
    let dir = tempfile::tempdir().unwrap();
    install(
        dir.path(),
        &[
            ("needs.every-field", "needs"),
            ("needs.overlay", "needs.overlay"),
            ("needs.runtime", "needs.runtime"),
        ],
    );
    let mut lm = LanManager::start(LanOptions::patient(dir.path())).unwrap();
    let list = need_list(&lm);
    let names: Vec<(String, String, NeedState)> = list
        .iter()
        .map(|n| (n.need.instancename.to_string(), n.layer.clone(), n.state))
        .collect();
    assert_eq!(
        names,
        [
            ("Data".into(), "needs+overlay".into(), NeedState::Open),
            ("Spare".into(), "needs".into(), NeedState::Closed),
            ("Extra".into(), "runtime".into(), NeedState::Open),
        ],
        "Time is removed by the runtime layer; the overlay's stranger is ignored"
    );
    // Every field kept as written, in its order; the overlay's keys replace
    // the need's at the top level only.
    let data = serde_json::to_string(&find(&list, "Data").need).unwrap();
    assert_eq!(
        data,
        r#"{"modulename":"allex_dataservice","instancename":"Data","propertyhash":{"storage":{"path":"/srv/data"}},"tcpport":null,"httpport":null,"wsport":null,"strategies":{"ip":"127.0.0.0/8"},"closed":false,"timeout":60,"debug":true,"debug_brk":false,"prof":false,"gate":{"allow":["*"]},"x_site_note":"kept as written"}"#
    );
    let table = ok(&lm, &["need", "list"]);
    assert!(table.lines().next().unwrap().contains("FROM"), "{table}");
    assert!(table.contains("needs+overlay"), "{table}");

    // Every change goes to needs.runtime only.
    let http = lm.http().unwrap();
    let added = http
        .post(
            "/v1/needs",
            r#"{"modulename":"allex_timeservice","instancename":"X","debug_brk":true}"#,
        )
        .unwrap();
    assert_eq!(added.status, 201, "{added:?}");
    ok(&lm, &["need", "remove", "Data"]);
    ok(&lm, &["need", "disable", "Extra"]);
    ok(&lm, &["need", "enable", "Spare"]);
    let want = |l: &[NeedStatus]| {
        let mut v: Vec<(String, NeedState)> = l
            .iter()
            .map(|n| (n.need.instancename.to_string(), n.state))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    let expected = vec![
        ("Extra".to_string(), NeedState::Closed),
        ("Spare".to_string(), NeedState::Open),
        ("X".to_string(), NeedState::Open),
    ];
    assert_eq!(want(&need_list(&lm)), expected);
    for (from, to) in [
        ("needs.every-field", lm.needs_path()),
        ("needs.overlay", lm.overlay_path()),
    ] {
        assert_eq!(
            std::fs::read(to).unwrap(),
            std::fs::read(fixture(from)).unwrap(),
            "{from} is the operator's"
        );
    }
    let runtime = std::fs::read_to_string(lm.runtime_path()).unwrap();
    assert!(
        runtime.contains(
            r#""instancename": "Data",
    "removed": true"#
        ),
        "{runtime}"
    );
    assert!(runtime.contains(r#""debug_brk": true"#), "{runtime}");

    // A restart starts from the same merge.
    lm.stop(nix::sys::signal::Signal::SIGTERM, SOON).unwrap();
    let lm = LanManager::start(LanOptions::patient(dir.path())).unwrap();
    assert_eq!(want(&need_list(&lm)), expected);
    assert_eq!(find(&need_list(&lm), "Spare").layer, "needs+runtime");
}

#[tokio::test]
async fn a_disabled_need_is_stopped_and_withheld_until_it_is_enabled() {
    let dir = tempfile::tempdir().unwrap();
    write_needs(dir.path(), &needs("svc", "A", 2));
    let lm = LanManager::start(LanOptions::patient(dir.path())).unwrap();
    let mut m = FakeMaster::connect(lm.addr(), "m1", &["svc"]).await;
    let svc = listening();
    let g = m.run_service("A0", 700, svc.ports).await;

    let out = ok(&lm, &["need", "disable", "A0"]);
    assert!(out.contains("disabled"), "{out}");
    let stop = m
        .expect("stop A0", |msg| matches!(msg, LanToMaster::Stop { .. }))
        .await;
    assert!(
        matches!(&stop, LanToMaster::Stop { instancename, generation, reason }
            if instancename == "A0" && *generation == g && reason.contains("disabled")),
        "{stop:?}"
    );
    m.down("A0", g, 700, 50, true).await;
    eventually("A0 closed", || {
        (find(&lm.status().unwrap().needs, "A0").state == NeedState::Closed).then_some(())
    })
    .await;
    // Over HTTP: an open need is withdrawn from the masters.
    let http = lm.http().unwrap();
    let a = http.post("/v1/needs/A1/disable", "").unwrap();
    assert_eq!(a.status, 200, "{a:?}");
    m.expect(
        "need_taken A1",
        |msg| matches!(msg, LanToMaster::NeedTaken { instancename } if instancename == "A1"),
    )
    .await;
    // A closed need cannot be claimed.
    let refused = m.claim("A1").await;
    assert!(
        matches!(&refused, LanToMaster::ClaimRefused { reason, .. } if reason.contains("disabled")),
        "{refused:?}"
    );
    let st = lm.status().unwrap();
    assert!(st.running.is_empty(), "{st:?}");

    ok(&lm, &["need", "enable", "A0"]);
    m.expect(
        "need_open A0",
        |msg| matches!(msg, LanToMaster::NeedOpen { need } if need.instancename == "A0"),
    )
    .await;
    let a0 = find(&lm.status().unwrap().needs, "A0").clone();
    assert_eq!((a0.state, a0.failures), (NeedState::Open, 0), "{a0:?}");
    assert!(http.post("/v1/needs/A1/enable", "").unwrap().status == 200);
    let kinds: Vec<&'static str> = events(&lm).iter().map(|e| e.kind.name()).collect();
    for k in ["need_disabled", "need_enabled"] {
        assert!(kinds.contains(&k), "{k} in {kinds:?}");
    }
    // The operator's file was not touched.
    assert_eq!(
        serde_json::from_str::<Value>(&std::fs::read_to_string(lm.needs_path()).unwrap()).unwrap(),
        serde_json::to_value(needs("svc", "A", 2)).unwrap()
    );
    for bad in [["need", "disable", "Nobody"], ["need", "enable", "../x"]] {
        let out = lm.cli(&bad).unwrap();
        assert!(!out.status.success(), "{bad:?}: {out:?}");
    }
}

#[tokio::test]
async fn reload_applies_only_the_difference_and_a_bad_file_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    write_needs(dir.path(), &needs("svc", "A", 3));
    let lm = LanManager::start(LanOptions {
        extra_args: vec!["--no-watch".into()],
        ..LanOptions::patient(dir.path())
    })
    .unwrap();
    let mut m = FakeMaster::connect(lm.addr(), "m1", &["svc"]).await;
    let (s0, s1) = (listening(), listening());
    let g0 = m.run_service("A0", 700, s0.ports).await;
    let g1 = m.run_service("A1", 701, s1.ports).await;
    m.drain().await;

    // A0 unchanged, A1 changed, A2 gone, B new.
    let mut next = needs("svc", "A", 2);
    next[1].propertyhash.insert("tick".into(), Value::from(250));
    next.push(need("svc", "B"));
    write_needs(dir.path(), &next);
    let out = ok(&lm, &["need", "reload"]);
    assert!(out.contains("1 added, 1 removed, 1 changed"), "{out}");
    // Everything the reload sent was queued before its answer.
    let mut stopped = Vec::new();
    let mut opened = Vec::new();
    let mut taken = Vec::new();
    for msg in m.drain().await {
        match msg {
            LanToMaster::Stop {
                instancename,
                generation,
                ..
            } => stopped.push((instancename.to_string(), generation)),
            LanToMaster::NeedOpen { need } => opened.push(need.instancename.to_string()),
            LanToMaster::NeedTaken { instancename } => taken.push(instancename.to_string()),
            _ => {}
        }
    }
    assert_eq!(opened, ["B"]);
    assert_eq!(taken, ["A2"]);
    assert_eq!(
        stopped,
        [("A1".to_string(), g1)],
        "only the changed need restarts"
    );
    let st = lm.status().unwrap();
    let a0 = st.running.iter().find(|r| r.instancename == "A0").unwrap();
    assert_eq!(
        (a0.pid, a0.generation, a0.ports),
        (700, g0, s0.ports),
        "A0 untouched"
    );
    // The changed need is offered with its new definition once it stopped.
    m.down("A1", g1, 701, 5000, true).await;
    let reopened = m
        .expect(
            "need_open A1",
            |msg| matches!(msg, LanToMaster::NeedOpen { need } if need.instancename == "A1"),
        )
        .await;
    assert!(
        matches!(&reopened, LanToMaster::NeedOpen { need } if need.propertyhash["tick"] == 250),
        "{reopened:?}"
    );

    // A bad file: refused with its location, nothing changes.
    let before = lm.status().unwrap();
    let d = dir.path().join(".allexlanmanager");
    std::fs::write(
        d.join("needs.overlay"),
        "[\n{\"instancename\":\"A0\",\n \"wsport\": 99999}]",
    )
    .unwrap();
    let out = lm.cli(&["need", "reload"]).unwrap();
    assert!(!out.status.success(), "{out:?}");
    assert!(out.stderr.contains("needs.overlay:3:2"), "{}", out.stderr);
    assert!(out.stderr.contains("wsport"), "{}", out.stderr);
    assert_eq!(lm.status().unwrap(), before);
    let kinds: Vec<&'static str> = events(&lm).iter().map(|e| e.kind.name()).collect();
    for k in [
        "needs_reloaded",
        "need_changed",
        "need_added",
        "need_removed",
        "reload_refused",
    ] {
        assert!(kinds.contains(&k), "{k} in {kinds:?}");
    }

    // SIGHUP re-reads the files (the watcher is off here).
    std::fs::remove_file(d.join("needs.overlay")).unwrap();
    let mut more = next.clone();
    more.push(need("svc", "C"));
    write_needs(dir.path(), &more);
    lm.signal(nix::sys::signal::Signal::SIGHUP).unwrap();
    eventually("C added on SIGHUP", || {
        (lm.status()
            .unwrap()
            .needs
            .iter()
            .any(|n| n.need.instancename == "C"))
        .then_some(())
    })
    .await;
}

#[tokio::test]
async fn an_edited_needs_file_is_picked_up_without_a_signal() {
    let dir = tempfile::tempdir().unwrap();
    install(dir.path(), &[("needs.default", "needs")]);
    let lm = LanManager::start(LanOptions::patient(dir.path())).unwrap();
    assert_eq!(need_list(&lm).len(), 1);
    // As an editor saves: write in place, in two pieces.
    let d = dir.path().join(".allexlanmanager");
    std::fs::write(
        d.join("needs.overlay"),
        r#"[{"instancename":"Time","closed":true}]"#,
    )
    .unwrap();
    eventually("Time closed by the overlay", || {
        (find(&lm.status().unwrap().needs, "Time").state == NeedState::Closed).then_some(())
    })
    .await;
    assert_eq!(find(&need_list(&lm), "Time").layer, "needs+overlay");
    std::fs::remove_file(d.join("needs.overlay")).unwrap();
    eventually("Time open again", || {
        (find(&lm.status().unwrap().needs, "Time").state == NeedState::Open).then_some(())
    })
    .await;
}
