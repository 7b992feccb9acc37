//! Transitions of the core, driven by hand: no runtime, no sockets, no clock.

use super::*;
use allex_protocol::frame::decode_text;
use allex_protocol::Generation;
use allex_protocol::{PortCounts, Protocol, ProtocolVersion};
use std::time::Instant;

fn t0() -> Now {
    Now {
        at: Instant::now(),
        unix_ms: 1_000_000,
    }
}

fn later(now: Now, ms: u64) -> Now {
    Now {
        at: now.at + Duration::from_millis(ms),
        unix_ms: now.unix_ms + ms,
    }
}

fn need(instance: &str) -> Need {
    Need {
        modulename: "m".into(),
        instancename: allex_protocol::InstanceName::new(instance).unwrap(),
        propertyhash: Default::default(),
        ipaddress: None,
        protocols: Some(vec![Protocol::Tcp]),
        extra: Default::default(),
    }
}

fn layers(needs: Vec<Need>) -> allex_protocol::layers::Layers {
    allex_protocol::layers::Layers {
        base: needs,
        ..Default::default()
    }
}

fn hello(master: &str, secret: &str) -> MasterHello {
    MasterHello {
        version: PROTOCOL_VERSION,
        token: None,
        master: master.into(),
        secret: secret.into(),
        pid: 1,
        advertiseaddress: "127.0.0.1".into(),
        capacity: Capacity {
            modules: vec!["m".into()],
            free: PortCounts {
                tcp: 10,
                http: 10,
                ws: 10,
            },
        },
        inventory: Vec::new(),
    }
}

/// The effects without the event stream's, for tests about the rest.
fn quiet(fx: &[Effect]) -> Vec<Effect> {
    fx.iter()
        .filter(|e| !matches!(e, Effect::Event { .. }))
        .cloned()
        .collect()
}

/// The events among the effects.
fn events_of(fx: &[Effect]) -> Vec<EventKind> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Event { kind, .. } => Some(kind.clone()),
            _ => None,
        })
        .collect()
}

fn peer() -> SocketAddr {
    "127.0.0.1:40000".parse().unwrap()
}

fn core(needs: &[&str]) -> State {
    core_of(needs.iter().map(|n| need(n)).collect())
}

/// A fresh core whose `needs` file holds `needs`.
fn core_of(needs: Vec<Need>) -> State {
    let startup = Startup {
        layers: layers(needs),
        hints: std::collections::HashMap::new(),
        next_generation: 1,
        generation_bound: 1 + crate::needs_store::GENERATION_BLOCK,
        identities: BTreeMap::new(),
    };
    State::new(Arc::new(Settings::default()), startup, t0()).0
}

/// Frames sent to `conn` among `fx`, decoded.
fn sent(fx: &[Effect], conn: ConnId) -> Vec<LanToMaster> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Send { conn: c, frame } if *c == conn => {
                Some(decode_text::<LanToMaster>(frame, usize::MAX).unwrap())
            }
            Effect::Taken { conn: c, instance } if *c == conn => Some(LanToMaster::NeedTaken {
                instancename: instance.clone(),
            }),
            _ => None,
        })
        .collect()
}

/// Connects `master` on `conn`, completing its identity write.
fn connect(st: &mut State, now: Now, master: &str, conn: ConnId) -> Vec<Effect> {
    let fx = st.handle(
        now,
        Input::MasterHello {
            certified: false,
            hello: hello(master, "s"),
            conn,
            peer: peer(),
        },
    );
    if fx
        .iter()
        .any(|e| matches!(e, Effect::Write(Write::Masters(_))))
    {
        return st.handle(now, Input::MastersWritten { result: Ok(()) });
    }
    fx
}

/// The number of the journal append among `fx`, if there is one.
fn journal_seq(fx: &[Effect]) -> Option<u64> {
    fx.iter().find_map(|e| match e {
        Effect::Write(Write::Journal { seq, .. }) => Some(*seq),
        _ => None,
    })
}

/// Completes the journal append among `fx` (as the journal writer does),
/// returning `fx` with what the completion caused (the grants).
fn journaled(st: &mut State, now: Now, mut fx: Vec<Effect>) -> Vec<Effect> {
    if let Some(seq) = journal_seq(&fx) {
        let more = st.handle(
            now,
            Input::JournalWritten {
                seq,
                result: Ok(()),
            },
        );
        fx.extend(more);
    }
    fx
}

/// `conn`'s master claims `instance`; its journal line is written.
fn claim(st: &mut State, now: Now, conn: ConnId, instance: &str) -> Vec<Effect> {
    let fx = claim_unjournaled(st, now, conn, instance);
    journaled(st, now, fx)
}

fn claim_unjournaled(st: &mut State, now: Now, conn: ConnId, instance: &str) -> Vec<Effect> {
    st.handle(
        now,
        Input::FromMaster {
            conn,
            msg: MasterToLan::Claim {
                instancename: allex_protocol::InstanceName::new(instance).unwrap(),
                ports: None,
            },
        },
    )
}

fn grant_generation(fx: &[Effect], conn: ConnId) -> Option<Generation> {
    sent(fx, conn).into_iter().find_map(|m| match m {
        LanToMaster::Grant { generation, .. } => Some(generation),
        _ => None,
    })
}

fn spawned(st: &mut State, now: Now, conn: ConnId, instance: &str, g: Generation) -> Vec<Effect> {
    st.handle(
        now,
        Input::FromMaster {
            conn,
            msg: MasterToLan::Spawned {
                instancename: allex_protocol::InstanceName::new(instance).unwrap(),
                generation: g,
                pid: 42,
                ports: Ports {
                    tcp: Some(5000),
                    http: None,
                    ws: None,
                },
            },
        },
    )
}

#[test]
fn a_new_name_is_admitted_only_once_its_binding_is_written() {
    let mut st = core(&["a"]);
    let now = t0();
    let fx = st.handle(
        now,
        Input::MasterHello {
            certified: false,
            hello: hello("m1", "s"),
            conn: 1,
            peer: peer(),
        },
    );
    assert!(
        sent(&fx, 1).is_empty(),
        "no welcome before the binding is durable"
    );
    assert!(matches!(&fx[..], [Effect::Write(Write::Masters(ids))] if ids.contains_key("m1")));
    let fx = st.handle(now, Input::MastersWritten { result: Ok(()) });
    let msgs = sent(&fx, 1);
    assert!(matches!(msgs[0], LanToMaster::Welcome { .. }));
    assert!(matches!(&msgs[1], LanToMaster::Needs { needs } if needs.len() == 1));
}

#[test]
fn only_a_certified_hello_takes_a_bound_name_over_from_another_secret() {
    let mut st = core(&[]);
    let now = t0();
    let hello_as = |st: &mut State, secret: &str, certified: bool, conn| {
        st.handle(
            now,
            Input::MasterHello {
                certified,
                hello: hello("m1", secret),
                conn,
                peer: peer(),
            },
        )
    };
    hello_as(&mut st, "first", false, 1);
    st.handle(now, Input::MastersWritten { result: Ok(()) });
    let fx = hello_as(&mut st, "second", false, 2);
    assert!(
        matches!(
            &quiet(&fx)[..],
            [Effect::Refuse {
                conn: 2,
                code: ErrorCode::IdentityMismatch,
                ..
            }]
        ),
        "{fx:?}"
    );
    // Its client certificate is for m1: the new secret is bound.
    let fx = hello_as(&mut st, "second", true, 3);
    assert!(matches!(&fx[..], [Effect::Write(Write::Masters(ids))] if ids.contains_key("m1")));
}

#[test]
fn a_failed_binding_refuses_the_master_and_forgets_the_name() {
    let mut st = core(&[]);
    let now = t0();
    st.handle(
        now,
        Input::MasterHello {
            certified: false,
            hello: hello("m1", "s"),
            conn: 1,
            peer: peer(),
        },
    );
    let fx = st.handle(
        now,
        Input::MastersWritten {
            result: Err("disk full".into()),
        },
    );
    assert!(matches!(
        &quiet(&fx)[..],
        [Effect::Refuse {
            conn: 1,
            code: ErrorCode::Storage,
            ..
        }]
    ));
    assert!(matches!(
        &events_of(&fx)[..],
        [EventKind::MasterRefused {
            code: ErrorCode::Storage,
            ..
        }]
    ));
    // Another secret may now take the name: nothing was bound.
    let fx = st.handle(
        now,
        Input::MasterHello {
            certified: false,
            hello: hello("m1", "other"),
            conn: 2,
            peer: peer(),
        },
    );
    assert!(matches!(&fx[..], [Effect::Write(Write::Masters(_))]));
}

#[test]
fn one_claim_is_granted_and_the_next_refused_and_the_grant_sets_its_deadline() {
    let mut st = core(&["a"]);
    let now = t0();
    connect(&mut st, now, "m1", 1);
    connect(&mut st, now, "m2", 2);
    let fx = claim(&mut st, now, 1, "a");
    let g = grant_generation(&fx, 1).expect("granted");
    assert!(fx.iter().any(|e| matches!(e,
        Effect::Timer { at, timer: Timer::ClaimDeadline { instance, generation } }
            if instance == "a" && *generation == g && *at == now.at + st.settings.claim_timeout)));
    assert!(sent(&fx, 2)
        .iter()
        .any(|m| matches!(m, LanToMaster::NeedTaken { instancename } if instancename == "a")));
    let fx = claim(&mut st, now, 2, "a");
    assert!(
        matches!(&sent(&fx, 2)[..], [LanToMaster::ClaimRefused { reason, .. }] if reason.contains("m1"))
    );
}

#[test]
fn a_service_is_listed_only_after_its_port_check_passes() {
    let mut st = core(&["a"]);
    let now = t0();
    connect(&mut st, now, "m1", 1);
    let fx = claim_unjournaled(&mut st, now, 1, "a");
    assert!(
        fx.iter()
            .any(|e| matches!(e, Effect::Write(Write::Journal { .. }))),
        "who is granted it is journaled"
    );
    assert_eq!(
        grant_generation(&fx, 1),
        None,
        "the grant waits for its journal line"
    );
    let g = grant_generation(&journaled(&mut st, now, fx), 1).unwrap();
    let fx = spawned(&mut st, now, 1, "a", g);
    assert!(fx.iter().any(|e| matches!(e,
        Effect::CheckPorts { instance, generation, address, .. }
            if instance == "a" && *generation == g && address == "127.0.0.1")));
    assert!(st.status().running.is_empty());
    let fx = st.handle(
        later(now, 3),
        Input::CheckDone {
            instance: allex_protocol::instance!("a"),
            generation: g,
            result: Ok(()),
        },
    );
    assert!(matches!(&sent(&fx, 1)[..], [LanToMaster::Running { .. }]));
    let running = st.status().running;
    assert_eq!(running.len(), 1);
    assert_eq!(running[0].since_unix_ms, now.unix_ms + 3);
}

/// Grants, spawns, checks and then kills `instance` on `conn` after `uptime_ms`.
fn run_and_crash(
    st: &mut State,
    now: Now,
    conn: ConnId,
    instance: &str,
    uptime_ms: u64,
) -> Vec<Effect> {
    let g = grant_generation(&claim(st, now, conn, instance), conn).unwrap();
    spawned(st, now, conn, instance, g);
    st.handle(
        now,
        Input::CheckDone {
            instance: allex_protocol::InstanceName::new(instance).unwrap(),
            generation: g,
            result: Ok(()),
        },
    );
    st.handle(
        later(now, uptime_ms),
        Input::FromMaster {
            conn,
            msg: MasterToLan::Down {
                instancename: allex_protocol::InstanceName::new(instance).unwrap(),
                generation: g,
                pid: 42,
                exit: allex_protocol::ExitInfo {
                    code: Some(1),
                    signal: None,
                    reason: None,
                },
                ordered: false,
                uptime_ms,
            },
        },
    )
}

#[test]
fn one_quick_crash_reopens_at_once_and_the_second_waits_out_the_backoff() {
    let mut st = core(&["a"]);
    let now = t0();
    connect(&mut st, now, "m1", 1);
    let fx = run_and_crash(&mut st, now, 1, "a", 10);
    assert!(matches!(&sent(&fx, 1)[..], [LanToMaster::NeedOpen { .. }]));
    let now = later(now, 10);
    let fx = run_and_crash(&mut st, now, 1, "a", 10);
    assert!(sent(&fx, 1).is_empty(), "not offered during the backoff");
    let base = st.settings.backoff_base;
    let epoch = fx.iter().find_map(|e| match e {
        Effect::Timer {
            at,
            timer: Timer::BackoffOver { epoch, .. },
        } if *at == later(now, 10).at + base => Some(*epoch),
        _ => None,
    });
    let epoch = epoch.expect("a backoff timer at the base delay");
    assert_eq!(st.status().needs[0].state, NeedState::Backoff);
    assert_eq!(st.status().needs[0].failures, 2);
    let fx = st.handle(
        later(now, 10 + base.as_millis() as u64),
        Input::Timer(Timer::BackoffOver {
            instance: allex_protocol::instance!("a"),
            epoch,
        }),
    );
    assert!(matches!(&sent(&fx, 1)[..], [LanToMaster::NeedOpen { .. }]));
}

#[test]
fn a_stable_service_that_dies_reopens_at_once_with_no_failure_counted() {
    let mut st = core(&["a"]);
    let now = t0();
    connect(&mut st, now, "m1", 1);
    run_and_crash(&mut st, now, 1, "a", 10);
    let stable = st.settings.stable.as_millis() as u64;
    let fx = run_and_crash(&mut st, later(now, 10), 1, "a", stable);
    assert!(matches!(&sent(&fx, 1)[..], [LanToMaster::NeedOpen { .. }]));
    assert_eq!(st.status().needs[0].failures, 0);
}

#[test]
fn a_timer_for_an_older_grant_changes_nothing() {
    let mut st = core(&["a"]);
    let now = t0();
    connect(&mut st, now, "m1", 1);
    let g = grant_generation(&claim(&mut st, now, 1, "a"), 1).unwrap();
    let fx = st.handle(
        now,
        Input::Timer(Timer::ClaimDeadline {
            instance: allex_protocol::instance!("a"),
            generation: Generation(g.0 + 7),
        }),
    );
    assert!(fx.is_empty());
    assert_eq!(st.status().needs[0].state, NeedState::Claimed);
}

#[test]
fn a_need_is_acknowledged_only_after_the_needs_file_is_written() {
    let mut st = core(&[]);
    let now = t0();
    let fx = st.handle(
        now,
        Input::Admin {
            req: 9,
            request: AdminToLan::NeedAdd { need: need("b") },
        },
    );
    assert!(matches!(&fx[..], [Effect::Write(Write::Runtime(list))] if list.len() == 1));
    assert!(st.status().needs.is_empty());
    let fx = st.handle(now, Input::NeedsWritten { result: Ok(()) });
    assert!(matches!(
        &quiet(&fx)[..],
        [Effect::Reply {
            req: 9,
            answer: LanToAdmin::Done { .. }
        }]
    ));
    assert!(matches!(
        &events_of(&fx)[..],
        [EventKind::NeedAdded { instancename, .. }] if instancename == "b"
    ));
    assert_eq!(st.status().needs.len(), 1);
}

#[test]
fn a_failed_needs_write_changes_nothing_and_says_so() {
    let mut st = core(&[]);
    let now = t0();
    st.handle(
        now,
        Input::Admin {
            req: 3,
            request: AdminToLan::NeedAdd { need: need("b") },
        },
    );
    let fx = st.handle(
        now,
        Input::NeedsWritten {
            result: Err("read-only".into()),
        },
    );
    assert!(matches!(
        &fx[..],
        [Effect::Reply {
            req: 3,
            answer: LanToAdmin::Error {
                code: ErrorCode::Storage,
                ..
            }
        }]
    ));
    assert!(st.status().needs.is_empty());
}

#[test]
fn generations_are_reserved_ahead_and_never_handed_out_past_the_durable_bound() {
    let mut g = generations::Generations::new(1, 3);
    assert_eq!(g.take(), Some(Generation(1)));
    assert_eq!(g.take(), Some(Generation(2)));
    let bound = g.wants_reservation().expect("due");
    assert_eq!(g.wants_reservation(), None, "one reservation at a time");
    assert_eq!(g.take(), None, "3 is not durable yet");
    g.written(bound, Ok(()));
    assert_eq!(g.take(), Some(Generation(3)));
}

#[test]
fn a_dead_old_link_is_replaced_and_a_live_one_keeps_its_name() {
    let mut st = core(&[]);
    let now = t0();
    connect(&mut st, now, "m1", 1);
    let fx = connect(&mut st, now, "m1", 2);
    assert!(matches!(
        &fx[..],
        [Effect::ProbeLink {
            old: 1,
            conn: 2,
            ..
        }]
    ));
    let fx = st.handle(
        now,
        Input::ProbeDone {
            master: "m1".into(),
            conn: 2,
            answered: true,
        },
    );
    assert!(matches!(
        &quiet(&fx)[..],
        [Effect::Refuse {
            conn: 2,
            code: ErrorCode::NameInUse,
            ..
        }]
    ));
    connect(&mut st, now, "m1", 3);
    let fx = st.handle(
        now,
        Input::ProbeDone {
            master: "m1".into(),
            conn: 3,
            answered: false,
        },
    );
    assert!(matches!(fx[0], Effect::Close { conn: 1, .. }));
    assert!(matches!(sent(&fx, 3)[0], LanToMaster::Welcome { .. }));
}

#[test]
fn a_disconnected_master_gets_a_grace_timer_and_liveness_rounds() {
    let mut st = core(&["a"]);
    let now = t0();
    connect(&mut st, now, "m1", 1);
    let g = grant_generation(&claim(&mut st, now, 1, "a"), 1).unwrap();
    spawned(&mut st, now, 1, "a", g);
    st.handle(
        now,
        Input::CheckDone {
            instance: allex_protocol::instance!("a"),
            generation: g,
            result: Ok(()),
        },
    );
    let fx = st.handle(now, Input::MasterGone { conn: 1 });
    assert!(fx.iter().any(
        |e| matches!(e, Effect::ProbeLiveness { master, targets, .. }
        if master == "m1" && targets.len() == 1)
    ));
    let epoch = fx
        .iter()
        .find_map(|e| match e {
            Effect::Timer {
                timer: Timer::GraceOver { epoch, .. },
                ..
            } => Some(*epoch),
            _ => None,
        })
        .expect("grace timer");
    // Every port of a service that listened refuses: it is gone, the need
    // reopens at once.
    st.handle(
        now,
        Input::Liveness {
            master: "m1".into(),
            epoch,
            results: vec![(allex_protocol::instance!("a"), g, Liveness::Refused)],
        },
    );
    assert_eq!(st.status().needs[0].state, NeedState::Open);
    let _ = ProtocolVersion { major: 0, minor: 0 };
}

#[test]
fn a_grant_whose_journal_line_cannot_be_written_is_refused_and_counts_as_a_failure() {
    let mut st = core(&["a"]);
    let now = t0();
    connect(&mut st, now, "m1", 1);
    let fx = claim_unjournaled(&mut st, now, 1, "a");
    let seq = journal_seq(&fx).expect("the claim is journaled");
    let fx = st.handle(
        now,
        Input::JournalWritten {
            seq,
            result: Err("No space left on device".into()),
        },
    );
    let to_master = sent(&fx, 1);
    assert!(
        !to_master
            .iter()
            .any(|m| matches!(m, LanToMaster::Grant { .. })),
        "no grant leaves without its journal line: {to_master:?}"
    );
    assert!(to_master.iter().any(|m| matches!(m,
        LanToMaster::ClaimRefused { reason, .. } if reason.contains("storage"))));
    // Counted as a failure: the first reopens at once, the next ones wait
    // out a growing delay (so a full disk cannot spin claims).
    assert_eq!(st.status().needs[0].state, NeedState::Open);
    let fx = claim_unjournaled(&mut st, now, 1, "a");
    let seq = journal_seq(&fx).expect("the second claim is journaled");
    st.handle(
        now,
        Input::JournalWritten {
            seq,
            result: Err("No space left on device".into()),
        },
    );
    assert_eq!(st.status().needs[0].state, NeedState::Backoff);
}

#[test]
fn a_rejected_service_holds_its_need_until_its_master_confirms_the_stop() {
    let mut st = core(&["a"]);
    let now = t0();
    connect(&mut st, now, "m1", 1);
    connect(&mut st, now, "m2", 2);
    let g = grant_generation(&claim(&mut st, now, 1, "a"), 1).unwrap();
    spawned(&mut st, now, 1, "a", g);
    let fx = st.handle(
        now,
        Input::CheckDone {
            instance: allex_protocol::instance!("a"),
            generation: g,
            result: Err("tcp port 5000 did not accept".into()),
        },
    );
    assert!(sent(&fx, 1)
        .iter()
        .any(|m| matches!(m, LanToMaster::Rejected { generation, .. } if *generation == g)));
    assert!(
        !sent(&fx, 2)
            .iter()
            .any(|m| matches!(m, LanToMaster::NeedOpen { .. })),
        "not offered while the rejected process may still run"
    );
    let fx = claim(&mut st, now, 2, "a");
    assert!(matches!(
        &sent(&fx, 2)[..],
        [LanToMaster::ClaimRefused { .. }]
    ));
    st.handle(
        later(now, 5),
        Input::FromMaster {
            conn: 1,
            msg: MasterToLan::Down {
                instancename: allex_protocol::instance!("a"),
                generation: g,
                pid: 42,
                exit: Default::default(),
                ordered: true,
                uptime_ms: 5,
            },
        },
    );
    // A failed check counts as a failure: the first retry is at once or
    // after the backoff, but the need is free of m1 either way.
    assert!(matches!(
        st.status().needs[0].state,
        NeedState::Open | NeedState::Backoff
    ));
}

#[test]
fn after_a_restart_a_need_held_for_one_master_is_not_adopted_from_another() {
    let mut hints = std::collections::HashMap::new();
    hints.insert(
        allex_protocol::instance!("a"),
        RunningHint {
            master: "m1".into(),
            generation: Generation(7),
            seen: None,
        },
    );
    let startup = Startup {
        layers: layers(vec![need("a")]),
        hints,
        next_generation: 100,
        generation_bound: 100 + crate::needs_store::GENERATION_BLOCK,
        identities: BTreeMap::new(),
    };
    let (mut st, _) = State::new(Arc::new(Settings::default()), startup, t0());
    let now = t0();
    // m2 comes first, still running an older copy (found by `allex-sim dst`,
    // seed 1250: it was adopted and ran beside m1's).
    let mut h = hello("m2", "s");
    h.inventory = vec![InventoryEntry {
        instancename: allex_protocol::instance!("a"),
        modulename: "m".into(),
        generation: Generation(3),
        pid: 33,
        ports: Ports {
            tcp: Some(5000),
            http: None,
            ws: None,
        },
    }];
    st.handle(
        now,
        Input::MasterHello {
            certified: false,
            hello: h,
            conn: 2,
            peer: peer(),
        },
    );
    let fx = st.handle(now, Input::MastersWritten { result: Ok(()) });
    assert!(sent(&fx, 2).iter().any(|m| matches!(m,
        LanToMaster::Stop { instancename, generation: Generation(3), .. } if instancename == "a")));
    assert!(!fx.iter().any(|e| matches!(e, Effect::CheckPorts { .. })));
    let status = st.status();
    assert_eq!(status.needs[0].state, NeedState::Settling);
    assert_eq!(status.needs[0].master.as_deref(), Some("m1"));
}

#[test]
fn a_need_with_its_own_timeout_must_be_running_by_then() {
    let mut n = need("a");
    n.extra.insert("timeout".into(), serde_json::json!(2.5));
    let mut st = core_of(vec![n]);
    let now = t0();
    connect(&mut st, now, "m1", 1);
    let fx = claim(&mut st, now, 1, "a");
    let g = grant_generation(&fx, 1).expect("granted");
    let deadline = now.at + Duration::from_millis(2500);
    assert!(fx.iter().any(|e| matches!(e,
        Effect::Timer { at, timer: Timer::ClaimDeadline { generation, .. } }
            if *generation == g && *at == deadline)));
    // Spawned, but its port check has not passed when the timeout comes.
    spawned(&mut st, now, 1, "a", g);
    let fx = st.handle(
        later(now, 2500),
        Input::Timer(Timer::ClaimDeadline {
            instance: allex_protocol::instance!("a"),
            generation: g,
        }),
    );
    assert!(sent(&fx, 1).iter().any(|m| matches!(m,
        LanToMaster::Stop { generation, reason, .. } if *generation == g && reason.contains("timeout"))));
}

#[test]
fn strategies_ip_places_a_need_like_ipaddress() {
    let mut far = need("far");
    far.extra
        .insert("strategies".into(), serde_json::json!({"ip": "10.0.0.0/8"}));
    let mut near = need("near");
    near.extra.insert(
        "strategies".into(),
        serde_json::json!({"ip": "127.0.0.0/8"}),
    );
    let mut st = core_of(vec![far, near]);
    let now = t0();
    let fx = connect(&mut st, now, "m1", 1);
    // Only the need it may take is in its snapshot.
    assert!(sent(&fx, 1).iter().any(|m| matches!(m,
        LanToMaster::Needs { needs } if needs.len() == 1 && needs[0].instancename == "near")));
    let fx = claim(&mut st, now, 1, "far");
    assert!(sent(&fx, 1).iter().any(|m| matches!(m,
        LanToMaster::ClaimRefused { reason, .. } if reason.contains("strategies.ip 10.0.0.0/8"))));
    let fx = claim(&mut st, now, 1, "near");
    assert!(grant_generation(&fx, 1).is_some());
}

/// A grant whose `spawned` never arrived (lost with the link): its claimed
/// ports are probed while the master is away, and a service answering on
/// them keeps the need where it is past the grace; only one that does not
/// answer is handed to another master.
#[test]
fn a_granted_need_whose_spawned_was_lost_stays_while_its_claimed_ports_answer() {
    let mut st = core(&["kept", "gone"]);
    let now = t0();
    connect(&mut st, now, "m1", 1);
    let ports = Ports {
        tcp: Some(5001),
        http: None,
        ws: None,
    };
    for name in ["kept", "gone"] {
        let fx = st.handle(
            now,
            Input::FromMaster {
                conn: 1,
                msg: MasterToLan::Claim {
                    instancename: allex_protocol::InstanceName::new(name).unwrap(),
                    ports: Some(ports),
                },
            },
        );
        journaled(&mut st, now, fx);
    }
    let gen_of = |st: &State, name: &str| {
        st.needs
            .get(name)
            .and_then(|e| e.slot.holder())
            .map(|(_, g)| g)
            .unwrap()
    };
    let (gk, gg) = (gen_of(&st, "kept"), gen_of(&st, "gone"));
    let fx = st.handle(now, Input::MasterGone { conn: 1 });
    let (targets, epoch) = fx
        .iter()
        .find_map(|e| match e {
            Effect::ProbeLiveness { targets, epoch, .. } => Some((targets.clone(), *epoch)),
            _ => None,
        })
        .expect("the claimed ports are probed");
    assert_eq!(targets.len(), 2, "{targets:?}");
    assert!(targets
        .iter()
        .all(|t| t.ports == vec![(Protocol::Tcp, 5001)]));
    // Not yet listening says nothing: nothing is released before the grace.
    st.handle(
        now,
        Input::Liveness {
            master: "m1".into(),
            epoch,
            results: vec![
                (allex_protocol::instance!("kept"), gk, Liveness::Answers),
                (allex_protocol::instance!("gone"), gg, Liveness::Refused),
            ],
        },
    );
    assert!(st
        .status()
        .needs
        .iter()
        .all(|n| n.state == NeedState::Claimed));
    st.handle(
        later(now, 2000),
        Input::Timer(Timer::GraceOver {
            master: "m1".into(),
            epoch,
        }),
    );
    let state = |name: &str| {
        st.status()
            .needs
            .iter()
            .find(|n| n.need.instancename == name)
            .map(|n| n.state)
    };
    assert_eq!(
        state("kept"),
        Some(NeedState::Claimed),
        "kept where it answers"
    );
    assert_eq!(state("gone"), Some(NeedState::Open), "handed to others");
}
