//! One canonical example of every message, snapshotted so that any wire change
//! shows as a diff, and the typed errors of malformed input.

use allex_protocol::events::{EventKind, LanEvent};
use allex_protocol::frame::{decode_text, encode, MAX_TO_LAN_FRAME};
use allex_protocol::lan::{
    AdminToLan, ErrorCode, LanToAdmin, LanToMaster, MasterHello, MasterToLan, Opening,
};
use allex_protocol::local::{LocalReply, LocalRequest};
use allex_protocol::Generation;
use allex_protocol::*;

fn ports() -> Ports {
    Ports {
        tcp: Some(15000),
        http: Some(16000),
        ws: Some(17000),
    }
}

fn need() -> Need {
    let mut n = Need::new("allex_timeservice", allex_protocol::instance!("Time"));
    n.propertyhash
        .insert("tick".into(), serde_json::json!(1000));
    n
}

fn hello() -> MasterHello {
    MasterHello {
        version: PROTOCOL_VERSION,
        token: Some("secret".into()),
        master: "host1:/tmp".into(),
        secret: "9f86d081884c7d659a2feaa0c55ad015".into(),
        pid: 4242,
        advertiseaddress: "192.168.1.10".into(),
        capacity: Capacity {
            modules: vec!["allex_timeservice".into()],
            free: PortCounts {
                tcp: 999,
                http: 999,
                ws: 999,
            },
        },
        inventory: vec![InventoryEntry {
            instancename: allex_protocol::instance!("Time"),
            modulename: "allex_timeservice".into(),
            generation: Generation(7),
            pid: 4343,
            ports: ports(),
        }],
    }
}

fn snapshot<T: serde::Serialize>(items: &[T]) -> serde_json::Value {
    serde_json::Value::Array(
        items
            .iter()
            .map(|m| serde_json::from_str(&encode(m)).unwrap())
            .collect(),
    )
}

#[test]
fn master_to_lan_examples() {
    let msgs = vec![
        MasterToLan::Hello(hello()),
        MasterToLan::Claim {
            instancename: allex_protocol::instance!("Time"),
            ports: Some(ports()),
        },
        MasterToLan::Spawned {
            instancename: allex_protocol::instance!("Time"),
            generation: Generation(7),
            pid: 4343,
            ports: ports(),
        },
        MasterToLan::SpawnFailed {
            instancename: allex_protocol::instance!("Time"),
            generation: Generation(7),
            reason: "tcp range exhausted".into(),
        },
        MasterToLan::Down {
            instancename: allex_protocol::instance!("Time"),
            generation: Generation(7),
            pid: 4343,
            exit: ExitInfo {
                code: None,
                signal: Some(9),
                reason: None,
            },
            ordered: false,
            uptime_ms: 1500,
        },
        MasterToLan::Health {
            instancename: allex_protocol::instance!("Time"),
            generation: Generation(7),
            health: allex_protocol::types::HealthStatus {
                passing: true,
                failures: 0,
                last: "ok".into(),
            },
        },
        MasterToLan::Capacity(Capacity {
            modules: vec!["allex_timeservice".into()],
            free: PortCounts {
                tcp: 1,
                http: 2,
                ws: 3,
            },
        }),
        MasterToLan::Lookup {
            id: 1,
            instancename: allex_protocol::instance!("Time"),
        },
        MasterToLan::Heartbeat { seq: 3 },
        MasterToLan::Leaving,
        MasterToLan::LogChunk {
            id: 1,
            data: "tick 41\ntick 42\n".into(),
        },
        MasterToLan::LogsEnd {
            id: 1,
            error: Some("no log of Time on this master".into()),
        },
    ];
    insta::assert_json_snapshot!(snapshot(&msgs));
}

#[test]
fn lan_to_master_examples() {
    let msgs = vec![
        LanToMaster::Welcome {
            version: PROTOCOL_VERSION,
            grace_ms: 10000,
            fence_ms: None,
            heartbeat_ms: 2000,
        },
        LanToMaster::Needs {
            needs: vec![need()],
        },
        LanToMaster::NeedOpen { need: need() },
        LanToMaster::NeedTaken {
            instancename: allex_protocol::instance!("Time"),
        },
        LanToMaster::NeedsTaken {
            instancenames: vec![
                allex_protocol::instance!("Time"),
                allex_protocol::instance!("Clock"),
            ],
        },
        LanToMaster::Grant {
            need: need(),
            generation: Generation(7),
            deadline_ms: 5000,
        },
        LanToMaster::ClaimRefused {
            instancename: allex_protocol::instance!("Time"),
            reason: "held by host2:/tmp".into(),
        },
        LanToMaster::Running {
            instancename: allex_protocol::instance!("Time"),
            generation: Generation(7),
        },
        LanToMaster::Rejected {
            instancename: allex_protocol::instance!("Time"),
            generation: Generation(7),
            reason: "tcp port 15000 refused".into(),
        },
        LanToMaster::Stop {
            instancename: allex_protocol::instance!("Time"),
            generation: Generation(7),
            reason: "need removed".into(),
        },
        LanToMaster::LookupResult {
            id: 1,
            location: Some(ServiceLocation {
                instancename: allex_protocol::instance!("Time"),
                modulename: "allex_timeservice".into(),
                address: "192.168.1.10".into(),
                ports: ports(),
            }),
        },
        LanToMaster::Heartbeat { seq: 3 },
        LanToMaster::Logs {
            id: 1,
            instancename: allex_protocol::instance!("Time"),
            lines: 10,
            follow: true,
        },
        LanToMaster::LogsCancel { id: 1 },
        LanToMaster::Error {
            code: ErrorCode::Stale,
            message: "generation 6 is not current (7)".into(),
            leader: None,
        },
        LanToMaster::Error {
            code: ErrorCode::NotLeader,
            message: "this lan manager follows; the leader is at 10.0.0.2:23552".into(),
            leader: Some("10.0.0.2:23552".into()),
        },
    ];
    insta::assert_json_snapshot!(snapshot(&msgs));
}

/// One event of every kind.
fn event_examples() -> Vec<EventKind> {
    let time = || allex_protocol::instance!("Time");
    let m = || "host1:/tmp".to_string();
    vec![
        EventKind::NeedAdded {
            instancename: time(),
            modulename: "allex_timeservice".into(),
        },
        EventKind::NeedRemoved {
            instancename: time(),
        },
        EventKind::NeedDisabled {
            instancename: time(),
        },
        EventKind::NeedEnabled {
            instancename: time(),
        },
        EventKind::NeedChanged {
            instancename: time(),
        },
        EventKind::NeedsReloaded {
            added: 1,
            removed: 0,
            changed: 2,
        },
        EventKind::ReloadRefused {
            message: ".allexlanmanager/needs.overlay:3:2: tcpport: a pinned port is a number from 1 to 65535".into(),
        },
        EventKind::Opened {
            instancename: time(),
        },
        EventKind::Claimed {
            instancename: time(),
            master: m(),
            generation: Generation(7),
        },
        EventKind::ClaimRefused {
            instancename: time(),
            master: "host2:/tmp".into(),
            reason: "held by host1:/tmp".into(),
        },
        EventKind::Spawned {
            instancename: time(),
            master: m(),
            generation: Generation(7),
            pid: 4343,
            ports: ports(),
        },
        EventKind::Running {
            instancename: time(),
            master: m(),
            generation: Generation(7),
            pid: 4343,
            address: "192.168.1.10".into(),
            ports: ports(),
        },
        EventKind::Rejected {
            instancename: time(),
            master: m(),
            generation: Generation(7),
            reason: "tcp port 20001 refused".into(),
        },
        EventKind::Stopping {
            instancename: time(),
            master: m(),
            generation: Generation(7),
            reason: "the need was removed".into(),
        },
        EventKind::Down {
            instancename: time(),
            master: m(),
            generation: Generation(7),
            pid: 4343,
            exit: ExitInfo {
                code: None,
                signal: Some(9),
                reason: None,
            },
            ordered: false,
            uptime_ms: 5000,
        },
        EventKind::Backoff {
            instancename: time(),
            failures: 2,
            delay_ms: 400,
        },
        EventKind::MasterConnected {
            master: m(),
            address: "192.168.1.10".into(),
            peer: "192.168.1.10:40112".into(),
        },
        EventKind::MasterRefused {
            master: m(),
            code: ErrorCode::IdentityMismatch,
            reason: "bound to another secret".into(),
        },
        EventKind::FrameRefused {
            master: m(),
            code: ErrorCode::Unknown,
            message: "no need Nobody".into(),
        },
        EventKind::MasterDraining {
            master: m(),
            services: 3,
        },
        EventKind::MasterDrained { master: m() },
        EventKind::Health {
            instancename: time(),
            master: m(),
            passing: false,
            failures: 1,
            last: "GET / on port 15001: no answer within 2000 ms".into(),
        },
        EventKind::MasterUndrained { master: m() },
        EventKind::MasterDisconnected {
            master: m(),
            grace_ms: 30_000,
        },
        EventKind::MasterExpired {
            master: m(),
            moved: 2,
            kept: 1,
        },
    ]
}

#[test]
fn admin_examples() {
    let reqs = vec![
        AdminToLan::AdminHello {
            version: PROTOCOL_VERSION,
            token: None,
        },
        AdminToLan::NeedAdd { need: need() },
        AdminToLan::NeedRemove {
            instancename: allex_protocol::instance!("Time"),
        },
        AdminToLan::Logs {
            instancename: allex_protocol::instance!("Time"),
            lines: 10,
            follow: false,
        },
        AdminToLan::NeedRestart {
            instancename: allex_protocol::instance!("Time"),
        },
        AdminToLan::NeedDisable {
            instancename: allex_protocol::instance!("Time"),
        },
        AdminToLan::NeedEnable {
            instancename: allex_protocol::instance!("Time"),
        },
        AdminToLan::NeedReload,
        AdminToLan::Status,
        AdminToLan::MasterForget {
            name: "host1:/tmp".into(),
        },
        AdminToLan::MasterDrain {
            name: "host1:/tmp".into(),
        },
        AdminToLan::MasterUndrain {
            name: "host1:/tmp".into(),
        },
        AdminToLan::Events {
            since: Some(41),
            follow: true,
        },
    ];
    let replies = vec![
        LanToAdmin::AdminWelcome {
            version: PROTOCOL_VERSION,
        },
        LanToAdmin::Done {
            message: "need Time added".into(),
        },
        LanToAdmin::Status {
            status: LanStatus {
                needs: vec![NeedStatus {
                    need: need(),
                    state: NeedState::Running,
                    master: Some("host1:/tmp".into()),
                    retry_in_ms: None,
                    failures: 0,
                    layer: String::new(),
                }],
                running: vec![RunningService {
                    instancename: allex_protocol::instance!("Time"),
                    modulename: "allex_timeservice".into(),
                    master: "host1:/tmp".into(),
                    address: "192.168.1.10".into(),
                    ports: ports(),
                    pid: 4343,
                    generation: Generation(7),
                    since_unix_ms: 1_764_000_000_000,
                    health: None,
                }],
                masters: vec![MasterSummary {
                    name: "host1:/tmp".into(),
                    address: "192.168.1.10".into(),
                    connected: true,
                    peer: Some("192.168.1.10:40112".into()),
                    capacity: Capacity::default(),
                    services: 1,
                    draining: false,
                }],
            },
        },
        LanToAdmin::Log {
            data: "tick 42\n".into(),
        },
        LanToAdmin::Error {
            code: ErrorCode::Duplicate,
            message: "need Time exists".into(),
            leader: None,
        },
        LanToAdmin::Error {
            code: ErrorCode::NotLeader,
            message: "this lan manager follows; the leader is at 10.0.0.2:23552".into(),
            leader: Some("10.0.0.2:23552".into()),
        },
    ];
    let replies: Vec<LanToAdmin> = replies
        .into_iter()
        .chain(
            event_examples()
                .into_iter()
                .zip(41..)
                .map(|(kind, seq)| LanToAdmin::Event {
                    event: LanEvent {
                        seq,
                        unix_ms: 1_764_000_000_000 + seq,
                        kind,
                    },
                }),
        )
        .collect();
    insta::assert_json_snapshot!((snapshot(&reqs), snapshot(&replies)));
}

#[test]
fn local_examples() {
    let reqs = vec![
        LocalRequest::Ready,
        LocalRequest::Lookup {
            instancename: allex_protocol::instance!("Time"),
        },
        LocalRequest::Status,
    ];
    let replies = vec![
        LocalReply::Ack,
        LocalReply::Location { location: None },
        LocalReply::Status {
            status: MasterStatus {
                master: "host1:/tmp".into(),
                pid: 4242,
                advertiseaddress: Some("192.168.1.10".into()),
                connected: true,
                refused: None,
                fenced: false,
                fdlimit: 1024,
                fd_exhausted: false,
                children: vec![ChildStatus {
                    instancename: allex_protocol::instance!("Time"),
                    modulename: "allex_timeservice".into(),
                    pid: 4343,
                    ports: ports(),
                    state: ChildState::Running,
                    ready: true,
                    uptime_ms: 1500,
                    generation: Generation(7),
                    health: Some(allex_protocol::types::HealthStatus {
                        passing: false,
                        failures: 1,
                        last: "GET /health on port 15001 answered 503".into(),
                    }),
                }],
                free: PortCounts {
                    tcp: 999,
                    http: 999,
                    ws: 999,
                },
                exhausted: vec![],
                declined: [(
                    allex_protocol::instance!("Pinned"),
                    "the need pins tcp port 80, outside this master's tcp range 15000..=15999"
                        .into(),
                )]
                .into(),
                cgroup: Some("/sys/fs/cgroup/unified/allexmaster-1f2e3d4c5b6a7988".into()),
            },
        },
        LocalReply::Error {
            code: ErrorCode::Malformed,
            message: "expected value".into(),
        },
    ];
    insta::assert_json_snapshot!((snapshot(&reqs), snapshot(&replies)));
}

#[test]
fn opening_is_hello_or_admin_hello() {
    let m: Opening = decode_text(&encode(&MasterToLan::Hello(hello())), MAX_TO_LAN_FRAME).unwrap();
    assert_eq!(m, Opening::Hello(hello()));
    let a: Opening = decode_text(
        r#"{"type":"admin_hello","version":{"major":2,"minor":0}}"#,
        MAX_TO_LAN_FRAME,
    )
    .unwrap();
    assert_eq!(
        a,
        Opening::AdminHello {
            version: PROTOCOL_VERSION,
            token: None
        }
    );
    let other = ProtocolVersion { major: 3, minor: 0 };
    assert!(!PROTOCOL_VERSION.compatible_with(&other));
    assert!(PROTOCOL_VERSION.compatible_with(&ProtocolVersion { major: 2, minor: 9 }));
}

#[test]
fn malformed_input_gets_typed_errors() {
    let d = |t: &str| decode_text::<MasterToLan>(t, 64).unwrap_err();
    assert!(matches!(
        d("{not json"),
        DecodeError::Malformed { line: 1, .. }
    ));
    assert_eq!(
        d(r#"{"type":"launch_missiles"}"#),
        DecodeError::UnknownType("launch_missiles".into())
    );
    assert_eq!(
        d(r#"{"type":"claim"}"#),
        DecodeError::MissingField("instancename".into())
    );
    assert_eq!(
        d(r#"{"instancename":"x"}"#),
        DecodeError::MissingField("type".into())
    );
    assert!(matches!(
        d(r#"{"type":"claim","instancename":5}"#),
        DecodeError::Invalid(_)
    ));
    assert!(matches!(
        d(r#"{"type":"heartbeat","seq":-1}"#),
        DecodeError::Invalid(_)
    ));
    let big = format!(r#"{{"type":"claim","instancename":"{}"}}"#, "x".repeat(100));
    assert_eq!(
        d(&big),
        DecodeError::FrameTooLarge {
            size: big.len(),
            max: 64
        }
    );
    assert_eq!(d(r#"{"type":"claim"}"#).code(), ErrorCode::MissingField);
    assert_eq!(DecodeError::Binary.code(), ErrorCode::BinaryFrame);
}

#[test]
fn allexjs_needs_file_parses() {
    let text = r#"[{"modulename":"allex_timeservice","instancename":"Time","propertyhash":{}}]"#;
    let f = NeedsFile::parse(std::path::Path::new(".allexlanmanager/needs"), text).unwrap();
    assert_eq!(
        f.0,
        vec![Need::new(
            "allex_timeservice",
            allex_protocol::instance!("Time")
        )]
    );
}
