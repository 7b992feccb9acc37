//! Transitions of the master's core, driven by hand: no runtime, no
//! processes, no clock. Pids are above the kernel's largest pid_max (2^22),
//! and no effect is executed, so nothing here can reach a real process.

use super::*;
use allex_protocol::lan::ErrorCode;
use allex_protocol::Generation;
use allex_protocol::{ExitInfo, LocalRequest};

fn config() -> MasterConfig {
    let text = r#"{
        "lanmanageraddress": "127.0.0.1",
        "portrangestart": { "tcp": 41000, "http": 41100, "ws": 41200 },
        "portrangesize": 4,
        "services": { "svc": { "command": "/nonexistent/allex-test" } }
    }"#;
    MasterConfig::parse(std::path::Path::new("t.json"), text).unwrap()
}

fn ms(t0: Instant, ms: u64) -> Instant {
    t0 + Duration::from_millis(ms)
}

/// A welcomed core at `t0`, and the effects of getting there.
fn state(t0: Instant) -> (State, Vec<Effect>) {
    state_with(config(), t0)
}

/// Like [`state`], with another config.
fn state_with(cfg: MasterConfig, t0: Instant) -> (State, Vec<Effect>) {
    let ports = PortOffice::new(
        allex_protocol::PerProtocol {
            tcp: 41000,
            http: 41100,
            ws: 41200,
        },
        4,
        Box::new(|_, _| true),
    );
    let mut st = State::new(
        cfg,
        "m1".into(),
        "0123456789abcdef0123".into(),
        PathBuf::from("/nonexistent/sock"),
        7,
        ports,
        t0,
    );
    let mut fx = st.handle(
        t0,
        Input::LinkUp {
            local: IpAddr::from([127, 0, 0, 1]),
        },
    );
    fx.extend(st.handle(
        t0,
        Input::LinkMessage(LanToMaster::Welcome {
            version: PROTOCOL_VERSION,
            grace_ms: 1000,
            heartbeat_ms: 1000,
            fence_ms: None,
        }),
    ));
    (st, fx)
}

/// When the fence check among `fx` is set for, if one is.
fn fence_check_at(fx: &[Effect]) -> Option<Instant> {
    fx.iter().find_map(|e| match e {
        Effect::Timer {
            at,
            timer: Timer::FenceCheck,
        } => Some(*at),
        _ => None,
    })
}

/// A welcome on the current link that asks for fencing after `fence_ms`.
fn welcome_fenced(st: &mut State, now: Instant, fence_ms: u64) -> Vec<Effect> {
    st.handle(
        now,
        Input::LinkMessage(LanToMaster::Welcome {
            version: PROTOCOL_VERSION,
            grace_ms: 1000,
            heartbeat_ms: 1000,
            fence_ms: Some(fence_ms),
        }),
    )
}

fn sent(fx: &[Effect]) -> Vec<&MasterToLan> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Send(m) => Some(m),
            _ => None,
        })
        .collect()
}

fn replies(fx: &[Effect], req: ReqId) -> Vec<&LocalReply> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Reply { req: r, reply } if *r == req => Some(reply),
            _ => None,
        })
        .collect()
}

fn grant(st: &mut State, now: Instant, instance: &str, generation: u64) -> Vec<Effect> {
    st.handle(
        now,
        Input::LinkMessage(LanToMaster::Grant {
            need: Need::new("svc", allex_protocol::InstanceName::new(instance).unwrap()),
            generation: Generation(generation),
            deadline_ms: 1000,
        }),
    )
}

fn spawned(st: &mut State, now: Instant, instance: &str, generation: u64, pid: u32) -> Vec<Effect> {
    st.handle(
        now,
        Input::Spawned {
            instance: allex_protocol::InstanceName::new(instance).unwrap(),
            generation: Generation(generation),
            result: Ok(pid),
        },
    )
}

fn ready(st: &mut State, now: Instant, req: ReqId, pid: u32) -> Vec<Effect> {
    st.handle(
        now,
        Input::Local {
            req,
            request: LocalRequest::Ready,
            peer_pid: Some(pid),
            peer_group: None,
        },
    )
}

#[test]
fn the_hello_carries_the_secret_and_the_master_name() {
    let t0 = Instant::now();
    let (_, fx) = state(t0);
    match sent(&fx)[0] {
        MasterToLan::Hello(h) => {
            assert_eq!(h.master, "m1");
            assert_eq!(h.secret, "0123456789abcdef0123");
            assert_eq!(h.pid, 7);
            assert!(h.inventory.is_empty());
        }
        other => panic!("first frame is {other:?}"),
    }
}

#[test]
fn a_grant_becomes_one_spawn_with_the_reserved_ports() {
    let t0 = Instant::now();
    let (mut st, _) = state(t0);
    let fx = grant(&mut st, t0, "A", 3);
    let plans: Vec<&SpawnPlan> = fx
        .iter()
        .filter_map(|e| match e {
            Effect::Spawn(p) => Some(&**p),
            _ => None,
        })
        .collect();
    assert_eq!(plans.len(), 1);
    assert_eq!(plans[0].generation, Generation(3));
    assert_eq!(plans[0].info.tcpport, Some(41000));
    assert_eq!(plans[0].info.masterpid, 7);
    // The same grant again (a duplicate frame) spawns nothing more.
    let fx = grant(&mut st, t0, "A", 3);
    assert!(!fx.iter().any(|e| matches!(e, Effect::Spawn(_))));
}

#[test]
fn a_ready_that_outruns_the_spawn_report_is_answered_once_the_pid_is_known() {
    let t0 = Instant::now();
    let (mut st, _) = state(t0);
    grant(&mut st, t0, "Early", 5);
    let fx = ready(&mut st, t0, 1, 4_300_001);
    assert!(
        replies(&fx, 1).is_empty(),
        "answered before the pid was known"
    );
    let fx = spawned(&mut st, t0, "Early", 5, 4_300_001);
    assert_eq!(replies(&fx, 1), [&LocalReply::Ack]);
    let s = st.status();
    assert!(s.children[0].ready);
    assert_eq!(s.children[0].state, ChildState::Ready);
    // With nothing left spawning, a stranger is refused at once.
    let fx = ready(&mut st, t0, 2, 4_300_002);
    assert!(matches!(
        replies(&fx, 2)[..],
        [LocalReply::Error {
            code: ErrorCode::NotYours,
            ..
        }]
    ));
}

#[test]
fn a_ready_from_a_member_of_a_childs_group_counts_for_the_child() {
    let t0 = Instant::now();
    let (mut st, _) = state(t0);
    grant(&mut st, t0, "G", 1);
    spawned(&mut st, t0, "G", 1, 4_300_020);
    let fx = st.handle(
        t0,
        Input::Local {
            req: 4,
            request: LocalRequest::Ready,
            peer_pid: Some(4_300_021),
            peer_group: Some(4_300_020),
        },
    );
    assert_eq!(replies(&fx, 4), [&LocalReply::Ack]);
}

#[test]
fn a_stale_exit_report_changes_nothing() {
    let t0 = Instant::now();
    let (mut st, _) = state(t0);
    grant(&mut st, t0, "Solo", 2);
    spawned(&mut st, t0, "Solo", 2, 4_300_010);
    // An exit of another generation or pid is not this child's.
    for (generation, pid) in [(1, 4_300_010), (2, 4_300_011)] {
        let fx = st.handle(
            t0,
            Input::Exited {
                instance: allex_protocol::instance!("Solo"),
                generation: Generation(generation),
                pid,
                exit: ExitInfo::default(),
            },
        );
        assert!(fx.is_empty(), "{fx:?}");
    }
    assert_eq!(st.status().children.len(), 1);
    let fx = st.handle(
        ms(t0, 20),
        Input::Exited {
            instance: allex_protocol::instance!("Solo"),
            generation: Generation(2),
            pid: 4_300_010,
            exit: ExitInfo {
                code: Some(0),
                signal: None,
                reason: None,
            },
        },
    );
    assert!(st.status().children.is_empty());
    let msgs = sent(&fx);
    assert!(matches!(
        msgs[0],
        MasterToLan::Down {
            generation: Generation(2),
            ordered: false,
            uptime_ms: 20,
            ..
        }
    ));
    // Right behind the `down`, the master claims the need again: the child's
    // ports went back to the office and the claim holds one of them.
    assert!(
        matches!(
            msgs[1],
            MasterToLan::Claim { instancename, ports: Some(p) }
                if instancename == "Solo" && p.tcp.is_some_and(|t| (41000..41004).contains(&t))
        ),
        "{:?}",
        msgs[1]
    );
    assert_eq!(st.status().free.tcp, 3);
}

#[test]
fn a_stop_signals_the_group_and_sigkills_it_after_the_stop_timeout() {
    let t0 = Instant::now();
    let (mut st, _) = state(t0);
    grant(&mut st, t0, "S", 1);
    spawned(&mut st, t0, "S", 1, 4_300_030);
    let fx = st.handle(
        t0,
        Input::LinkMessage(LanToMaster::Stop {
            instancename: allex_protocol::instance!("S"),
            generation: Generation(1),
            reason: "test".into(),
        }),
    );
    assert!(fx.iter().any(|e| matches!(
        e,
        Effect::Signal {
            pid: 4_300_030,
            signal: libc::SIGTERM
        }
    )));
    let (at, timer) = fx
        .iter()
        .find_map(|e| match e {
            Effect::Timer {
                at,
                timer: t @ Timer::StopTimeout { .. },
            } => Some((*at, t.clone())),
            _ => None,
        })
        .expect("stop timeout");
    let fx = st.handle(at, Input::Timer(timer));
    assert!(matches!(
        fx[..],
        [Effect::Signal {
            pid: 4_300_030,
            signal: libc::SIGKILL
        }]
    ));
}

#[test]
fn a_stop_decided_while_spawning_waits_for_the_pid() {
    let t0 = Instant::now();
    let (mut st, _) = state(t0);
    grant(&mut st, t0, "W", 1);
    let fx = st.handle(t0, Input::Shutdown);
    assert!(
        !fx.iter().any(|e| matches!(e, Effect::Signal { .. })),
        "nothing to signal yet"
    );
    let fx = spawned(&mut st, t0, "W", 1, 4_300_040);
    assert!(fx
        .iter()
        .any(|e| matches!(e, Effect::Signal { pid: 4_300_040, .. })));
    assert!(!st.finished());
    st.handle(
        t0,
        Input::Exited {
            instance: allex_protocol::instance!("W"),
            generation: Generation(1),
            pid: 4_300_040,
            exit: ExitInfo::default(),
        },
    );
    assert!(st.finished());
}

#[test]
fn reports_made_while_the_link_is_down_go_out_right_after_the_next_welcome() {
    let t0 = Instant::now();
    let (mut st, _) = state(t0);
    grant(&mut st, t0, "R", 1);
    st.handle(t0, Input::LinkDown { unsent: Vec::new() });
    let fx = spawned(&mut st, t0, "R", 1, 4_300_050);
    assert!(sent(&fx).is_empty(), "no link");
    st.handle(
        t0,
        Input::Exited {
            instance: allex_protocol::instance!("R"),
            generation: Generation(1),
            pid: 4_300_050,
            exit: ExitInfo::default(),
        },
    );
    let fx = st.handle(
        t0,
        Input::LinkUp {
            local: IpAddr::from([127, 0, 0, 1]),
        },
    );
    assert!(matches!(sent(&fx)[..], [MasterToLan::Hello(_)]));
    let fx = st.handle(
        t0,
        Input::LinkMessage(LanToMaster::Welcome {
            version: PROTOCOL_VERSION,
            grace_ms: 1000,
            heartbeat_ms: 1000,
            fence_ms: None,
        }),
    );
    let msgs = sent(&fx);
    assert!(matches!(
        msgs[0],
        MasterToLan::Spawned {
            generation: Generation(1),
            ..
        }
    ));
    assert!(matches!(
        msgs[1],
        MasterToLan::Down {
            generation: Generation(1),
            ..
        }
    ));
}

#[test]
fn a_report_the_link_could_not_take_is_kept_for_the_next_welcome() {
    let t0 = Instant::now();
    let (mut st, _) = state(t0);
    let down = MasterToLan::Down {
        instancename: allex_protocol::instance!("X"),
        generation: Generation(9),
        pid: 4_300_060,
        exit: ExitInfo::default(),
        ordered: false,
        uptime_ms: 1,
    };
    st.handle(t0, Input::Unsent(down.clone()));
    st.handle(t0, Input::Unsent(MasterToLan::Leaving));
    st.handle(t0, Input::LinkDown { unsent: Vec::new() });
    st.handle(
        t0,
        Input::LinkUp {
            local: IpAddr::from([127, 0, 0, 1]),
        },
    );
    let fx = st.handle(
        t0,
        Input::LinkMessage(LanToMaster::Welcome {
            version: PROTOCOL_VERSION,
            grace_ms: 1000,
            heartbeat_ms: 1000,
            fence_ms: None,
        }),
    );
    assert_eq!(sent(&fx), [&down]);
}

#[test]
fn fencing_stops_every_child_after_the_fence_time_of_silence() {
    let t0 = Instant::now();
    let (mut st, _) = state(t0);
    let fx = welcome_fenced(&mut st, t0, 300);
    let at = fence_check_at(&fx).expect("fence timer");
    assert_eq!(at, ms(t0, 300));
    grant(&mut st, t0, "F", 1);
    spawned(&mut st, t0, "F", 1, 4_300_070);
    // Heard from at 100 ms: the check at 300 ms sets another for 400 ms.
    st.handle(
        ms(t0, 100),
        Input::LinkMessage(LanToMaster::Heartbeat { seq: 1 }),
    );
    let fx = st.handle(ms(t0, 300), Input::Timer(Timer::FenceCheck));
    assert!(
        matches!(fx[..], [Effect::Timer { timer: Timer::FenceCheck, at }] if at == ms(t0, 400))
    );
    assert!(!st.status().fenced);
    let fx = st.handle(ms(t0, 400), Input::Timer(Timer::FenceCheck));
    assert!(fx
        .iter()
        .any(|e| matches!(e, Effect::Signal { pid: 4_300_070, .. })));
    assert!(st.status().fenced);
}

#[test]
fn a_word_on_the_same_link_ends_fencing_and_the_next_silence_fences_again() {
    let t0 = Instant::now();
    let (mut st, _) = state(t0);
    welcome_fenced(&mut st, t0, 300);
    st.handle(ms(t0, 300), Input::Timer(Timer::FenceCheck));
    assert!(st.status().fenced);
    // The link lived through the silence: no welcome comes, a heartbeat does.
    let fx = st.handle(
        ms(t0, 350),
        Input::LinkMessage(LanToMaster::Heartbeat { seq: 2 }),
    );
    assert!(!st.status().fenced, "the lan manager answers again");
    let at = fence_check_at(&fx).expect("the fence is armed again");
    assert_eq!(at, ms(t0, 650));
    // A child granted meanwhile is fenced by the next silence: found by
    // `allex-sim dst` (seed 137), where it ran beside its replacement.
    grant(&mut st, ms(t0, 360), "G", 2);
    spawned(&mut st, ms(t0, 360), "G", 2, 4_300_071);
    // The grant was the last word (at 360): the check at 650 waits on to 660.
    st.handle(at, Input::Timer(Timer::FenceCheck));
    assert!(!st.status().fenced);
    let fx = st.handle(ms(t0, 660), Input::Timer(Timer::FenceCheck));
    assert!(fx
        .iter()
        .any(|e| matches!(e, Effect::Signal { pid: 4_300_071, .. })));
    assert!(st.status().fenced);
}

/// The health ticks armed among `fx`.
fn health_ticks(fx: &[Effect]) -> Vec<Instant> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Timer {
                at,
                timer: Timer::HealthTick,
            } => Some(*at),
            _ => None,
        })
        .collect()
}

/// The instances of the probe batch among `fx`, sorted.
fn batch(fx: &[Effect]) -> Vec<String> {
    let mut names: Vec<String> = fx
        .iter()
        .filter_map(|e| match e {
            Effect::Probes(jobs) => Some(jobs.iter().map(|j| j.instance.to_string())),
            _ => None,
        })
        .flatten()
        .collect();
    names.sort();
    names
}

fn probes_done(st: &mut State, now: Instant, results: &[(&str, u32, bool)]) -> Vec<Effect> {
    let results = results
        .iter()
        .map(|(name, pid, ok)| ProbeResult {
            instance: allex_protocol::InstanceName::new(*name).unwrap(),
            pid: *pid,
            result: if *ok { Ok(()) } else { Err("refused".into()) },
        })
        .collect();
    st.handle(now, Input::ProbesDone(results))
}

#[test]
fn children_of_one_interval_share_one_timer_and_one_batch_per_tick() {
    let t0 = Instant::now();
    let mut cfg = config();
    cfg.services.get_mut("svc").unwrap().check = serde_json::from_value(serde_json::json!({
        "type": "tcp", "intervalms": 1000, "timeoutms": 100, "failures": 2
    }))
    .unwrap();
    let (mut st, _) = state_with(cfg, t0);
    let mut ticks = Vec::new();
    for (i, (name, at)) in [("A", 10), ("B", 300), ("C", 700)].into_iter().enumerate() {
        let g = i as u64 + 1;
        grant(&mut st, ms(t0, at), name, g);
        ticks.extend(health_ticks(&spawned(
            &mut st,
            ms(t0, at),
            name,
            g,
            5_000_001 + i as u32,
        )));
    }
    // A and B are probed first at 1 s, C (half an interval later than B) at 2 s.
    assert_eq!(ticks, vec![ms(t0, 1000), ms(t0, 2000)]);
    let fx = st.handle(ms(t0, 1000), Input::Timer(Timer::HealthTick));
    assert_eq!(batch(&fx), vec!["A", "B"]);
    let fx = probes_done(
        &mut st,
        ms(t0, 1003),
        &[("A", 5_000_001, true), ("B", 5_000_002, false)],
    );
    assert!(health_ticks(&fx).is_empty(), "2 s is armed already: {fx:?}");
    let fx = st.handle(ms(t0, 2000), Input::Timer(Timer::HealthTick));
    assert_eq!(batch(&fx), vec!["A", "B", "C"]);
    // B's second failure in a row reaches the threshold: it is stopped.
    let fx = probes_done(
        &mut st,
        ms(t0, 2002),
        &[
            ("A", 5_000_001, true),
            ("B", 5_000_002, false),
            ("C", 5_000_003, true),
        ],
    );
    assert!(
        fx.iter()
            .any(|e| matches!(e, Effect::Signal { pid: 5_000_002, .. })),
        "{fx:?}"
    );
    assert_eq!(health_ticks(&fx), vec![ms(t0, 3000)]);
    let fx = st.handle(ms(t0, 3000), Input::Timer(Timer::HealthTick));
    assert_eq!(
        batch(&fx),
        vec!["A", "C"],
        "the stopping child is not probed"
    );
}

/// The instances claimed among `fx`.
fn claimed(fx: &[Effect]) -> Vec<String> {
    sent(fx)
        .into_iter()
        .filter_map(|m| match m {
            MasterToLan::Claim { instancename, .. } => Some(instancename.to_string()),
            _ => None,
        })
        .collect()
}

#[test]
fn needs_taken_in_one_frame_drops_each_claim_as_need_taken_does() {
    let t0 = Instant::now();
    let (mut st, _) = state(t0);
    let offer = |names: &[&str]| LanToMaster::Needs {
        needs: names
            .iter()
            .map(|n| Need::new("svc", InstanceName::new(*n).unwrap()))
            .collect(),
    };
    // Four ports of each protocol: four claims, the fifth need waits.
    let fx = st.handle(t0, Input::LinkMessage(offer(&["A", "B", "C", "D", "E"])));
    assert_eq!(claimed(&fx), ["A", "B", "C", "D"]);
    // A and B go to others: their ports come back, and E is claimed.
    let fx = st.handle(
        t0,
        Input::LinkMessage(LanToMaster::NeedsTaken {
            instancenames: vec![
                allex_protocol::instance!("A"),
                allex_protocol::instance!("B"),
            ],
        }),
    );
    assert_eq!(claimed(&fx), ["E"]);
}
