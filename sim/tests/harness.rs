//! The harness over the real allexlanmanager and allexmaster binaries.

use allex_protocol::{Need, NeedState, Protocol};
use allex_sim::harness::{
    AdminClient, Cluster, ClusterOptions, LanManager, LanOptions, Master, MasterOptions,
};
use allex_sim::wait::read_port_banner;
use allex_sim::wait_until;
use std::net::SocketAddr;
use std::time::Duration;

const T: Duration = Duration::from_secs(20);

#[test]
fn lan_manager_keeps_needs_across_a_restart() {
    let mut lan = LanManager::start(LanOptions::default()).unwrap();
    let mut need = Need::new("testsvc", allex_protocol::instance!("Keep"));
    need.propertyhash
        .insert("crash_after_ms".into(), 5000.into());
    need.protocols = Some(vec![Protocol::Tcp, Protocol::Ws]);
    lan.need_add(&need).unwrap();
    let st = lan.status().unwrap();
    assert_eq!(
        lan.status_direct().unwrap(),
        st,
        "the CLI and the admin client agree"
    );
    assert_eq!(st.needs.len(), 1);
    assert_eq!(st.needs[0].need, need);
    assert_eq!(st.needs[0].state, NeedState::Open);
    assert!(std::fs::read_to_string(lan.runtime_path())
        .unwrap()
        .contains("Keep"));

    let addr = lan.addr();
    lan.restart().unwrap();
    assert_eq!(lan.addr(), addr, "restart keeps the address");
    assert_eq!(lan.status().unwrap().needs[0].need, need);

    lan.need_remove("Keep").unwrap();
    assert!(lan.status().unwrap().needs.is_empty());
    let refused = lan.cli(&["need", "remove", "Keep"]).unwrap();
    assert!(
        !refused.status.success(),
        "removing an unknown need is refused"
    );
}

#[test]
fn a_master_starts_in_its_own_directory_and_reports_status() {
    let lan = LanManager::start(LanOptions::default()).unwrap();
    let mut opts = MasterOptions::new(lan.addr());
    opts.portrangesize = 7;
    let master = Master::start(&opts).unwrap();
    assert!(master.socket().starts_with(master.runtime_dir()));
    let st = master.status().unwrap();
    assert_eq!(st.master, master.name());
    assert_eq!(Some(st.pid), master.pid());
    assert!(st.children.is_empty());
    assert_eq!((st.free.tcp, st.free.http, st.free.ws), (7, 7, 7));
    assert_eq!(master.status_direct().unwrap().master, st.master);
}

#[test]
fn a_need_runs_on_testsvc_and_its_ports_name_the_pid() {
    let cluster = Cluster::start(ClusterOptions::default()).unwrap();
    cluster
        .need_add(&Need::new("testsvc", allex_protocol::instance!("Svc")))
        .unwrap();
    let run = cluster.wait_running("Svc", T).unwrap();
    assert_eq!(run.master, cluster.master(0).name());
    let ip: std::net::IpAddr = run.address.parse().unwrap();
    for (proto, port) in run.ports.iter() {
        let banner = read_port_banner(SocketAddr::new(ip, port));
        assert_eq!(
            banner.map(|b| (b.instance, b.pid)),
            Some(("Svc".into(), run.pid)),
            "{proto}"
        );
    }
    let st = cluster.master(0).status().unwrap();
    assert_eq!(st.children.len(), 1);
    assert_eq!(st.children[0].pid, run.pid);
    assert_eq!(cluster.master(0).children_alive(), vec![run.pid]);
}

#[test]
fn a_killed_master_leaves_no_child_and_drop_cleans_up() {
    let mut cluster = Cluster::start(ClusterOptions::default()).unwrap();
    cluster
        .need_add(&Need::new("testsvc", allex_protocol::instance!("Orphan")))
        .unwrap();
    let run = cluster.wait_running("Orphan", T).unwrap();
    cluster.master_mut(0).kill().unwrap();
    wait_until("the master's children to die", T, || {
        match cluster.master(0).children_alive() {
            v if v.is_empty() => Ok(()),
            v => Err(v),
        }
    })
    .unwrap();
    assert!(!allex_sim::procscan::is_alive(run.pid));
    // Dropping the cluster stops the lan manager and removes every directory.
    let lan_pid = cluster
        .lan()
        .proc()
        .map(|p| p.pid())
        .expect("lan manager runs");
    let dirs = [
        cluster.lan().dir().to_path_buf(),
        cluster.master(0).runtime_dir().to_path_buf(),
    ];
    assert!(dirs.iter().all(|d| d.exists()));
    drop(cluster);
    assert!(
        !allex_sim::procscan::is_alive(lan_pid),
        "the lan manager outlived the drop"
    );
    for d in &dirs {
        assert!(!d.exists(), "{} outlived the drop", d.display());
    }
}

#[test]
fn a_cut_link_is_noticed_and_restored() {
    let cluster = Cluster::start(ClusterOptions {
        proxies: true,
        ..ClusterOptions::default()
    })
    .unwrap();
    let name = cluster.master(0).name().to_string();
    let proxy = cluster.proxy(0).unwrap();
    proxy.cut();
    cluster
        .wait_lan("the link to drop", T, |st| {
            match st.masters.iter().find(|m| m.name == name) {
                Some(m) if m.connected => Err("still connected".to_string()),
                _ => Ok(()),
            }
        })
        .unwrap();
    wait_until("the master to notice", T, || {
        match cluster.master(0).status() {
            Ok(st) if !st.connected => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .unwrap();
    proxy.restore();
    cluster.wait_master_connected(0, T).unwrap();
}

#[test]
fn a_token_reaches_masters_and_cli_calls() {
    let mut opts = ClusterOptions::default();
    opts.lan.token = Some("s3cret-token".into());
    let cluster = Cluster::start(opts).unwrap();
    cluster
        .need_add(&Need::new("testsvc", allex_protocol::instance!("Tok")))
        .unwrap();
    cluster.wait_running("Tok", T).unwrap();

    let mut bare = std::process::Command::new(allex_sim::binary("allexlanmanager").unwrap());
    bare.args([
        "status",
        "--json",
        "--connect",
        &cluster.lan().addr().to_string(),
    ])
    .env_remove("ALLEX_TOKEN");
    let out = allex_sim::process::run_with_deadline("cli", bare, T).unwrap();
    assert!(
        !out.status.success(),
        "a CLI without the token is refused: {out:?}"
    );
    let addr = cluster.lan().addr();
    assert!(AdminClient::connect(addr, Some("wrong"), T).is_err());
    assert!(AdminClient::connect(addr, Some("s3cret-token"), T).is_ok());
}
