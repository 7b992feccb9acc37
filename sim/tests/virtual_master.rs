//! Virtual masters against the real lan manager: every need they can serve
//! ends up running exactly once, on the ports one of them really listens on.

use allex_protocol::{Need, NeedState};
use allex_sim::harness::{AdminClient, LanManager, LanOptions};
use allex_sim::virtual_master::{hello, serve, AcceptingPorts, FakeMaster, Progress};
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

#[test]
fn racing_virtual_masters_run_each_need_once_on_their_real_ports() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let lan = LanManager::start(LanOptions::default()).unwrap();
    let addr = lan.addr();
    let k = 30;
    let mut needs: Vec<Need> = (0..k)
        .map(|i| {
            Need::new(
                "svc",
                allex_protocol::InstanceName::new(format!("n{i}")).unwrap(),
            )
        })
        .collect();
    // Nobody serves this module: it must stay open.
    needs.push(Need::new("elsewhere", allex_protocol::instance!("orphan")));
    AdminClient::add_all(addr, None, needs, 4).unwrap();

    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let (ports, stats) = rt.block_on(async {
        let progress = Progress::new(k);
        let mut ports = Vec::new();
        let mut tasks = Vec::new();
        for i in 0..3 {
            let p = AcceptingPorts::bind(ip).await.unwrap();
            let served = p.ports;
            ports.push(p);
            let mut h = hello(&format!("vm{i}"), &["svc"], Vec::new());
            h.advertiseaddress = ip.to_string();
            let vm = FakeMaster::try_connect(addr, h).await.unwrap();
            let progress = progress.clone();
            tasks.push(tokio::spawn(serve(vm, served, |_| true, progress)));
        }
        let mut stats = Vec::new();
        for t in tasks {
            let s = tokio::time::timeout(Duration::from_secs(30), t)
                .await
                .expect("every need running within 30 s")
                .unwrap()
                .unwrap();
            stats.push(s);
        }
        assert_eq!(progress.running(), k);
        assert!(progress.finished_at().is_some());
        (ports, stats)
    });
    assert_eq!(stats.iter().map(|s| s.granted).sum::<u64>(), k as u64);
    assert_eq!(stats.iter().map(|s| s.running).sum::<u64>(), k as u64);
    assert!(stats.iter().all(|s| s.sent >= s.claimed && s.received > 0));

    let st = lan.status().unwrap();
    assert_eq!(st.running.len(), k, "{st:?}");
    let names: BTreeSet<&str> = st.running.iter().map(|r| r.instancename.as_str()).collect();
    assert_eq!(names.len(), k, "an instance listed twice: {st:?}");
    for r in &st.running {
        let i: usize = r.master.trim_start_matches("vm").parse().unwrap();
        assert_eq!(r.ports, ports[i].ports, "{r:?}");
        assert_eq!(r.address, "127.0.0.1");
    }
    let orphan = st
        .needs
        .iter()
        .find(|n| n.need.instancename == "orphan")
        .unwrap();
    assert_eq!(orphan.state, NeedState::Open, "{orphan:?}");
}
