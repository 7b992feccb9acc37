//! Test helpers: the real `allexlanmanager` binary under a kill-on-drop guard,
//! fake masters speaking the real protocol over real WebSockets, and real
//! listening ports for the port check.
#![allow(dead_code)]

use allex_protocol::frame::{decode_text, encode, MAX_FROM_LAN_FRAME};
use allex_protocol::Generation;
use allex_protocol::{
    Capacity, ExitInfo, InventoryEntry, LanStatus, LanToMaster, MasterHello, MasterToLan, Need,
    PortCounts, Ports, PROTOCOL_VERSION,
};
use futures_util::{SinkExt, StreamExt};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc as std_mpsc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long any single expected event may take.
pub const WAIT: Duration = Duration::from_secs(10);

/// The binary under test.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_allexlanmanager")
}

/// Run flags with test defaults: long timers unless a test shortens one.
pub fn flags(overrides: &[(&str, &str)]) -> Vec<String> {
    let mut m: BTreeMap<&str, &str> = [
        ("--grace-ms", "60000"),
        ("--settle-ms", "60000"),
        ("--claim-timeout-ms", "60000"),
        ("--check-timeout-ms", "2000"),
        ("--backoff-base-ms", "100"),
        ("--backoff-cap-ms", "60000"),
        ("--stable-ms", "60000"),
        ("--heartbeat-ms", "60000"),
        ("--hello-timeout-ms", "60000"),
    ]
    .into_iter()
    .collect();
    for (k, v) in overrides {
        m.insert(k, v);
    }
    m.into_iter()
        .flat_map(|(k, v)| [k.to_string(), v.to_string()])
        .collect()
}

/// A running lan manager process, killed when dropped.
pub struct Lm {
    child: Child,
    /// `ip:port` it listens on.
    pub addr: String,
    /// Its working directory.
    pub dir: PathBuf,
    log: PathBuf,
}

impl Lm {
    /// Starts `allexlanmanager run` in `dir` and waits for its `listening on` line.
    pub fn start(dir: &Path, overrides: &[(&str, &str)]) -> Lm {
        match Lm::try_start(dir, overrides) {
            Ok(lm) => lm,
            Err(e) => panic!("lan manager did not start: {e}"),
        }
    }

    /// Like `start`, but returns its stderr when it exits instead of listening.
    pub fn try_start(dir: &Path, overrides: &[(&str, &str)]) -> Result<Lm, String> {
        let log = dir.join(format!("lm-{}.log", std::process::id()));
        let logfile = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let mut child = Command::new(binary())
            .arg("run")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--dir")
            .arg(dir)
            .args(flags(overrides))
            .env_remove("ALLEX_TOKEN")
            .env(
                "RUST_LOG",
                std::env::var("LM_TEST_LOG").unwrap_or("info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(logfile)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std_mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut guard = Lm {
            child,
            addr: String::new(),
            dir: dir.to_path_buf(),
            log,
        };
        match rx.recv_timeout(WAIT) {
            Ok(line) => {
                let addr = line
                    .strip_prefix("allexlanmanager listening on ")
                    .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
                guard.addr = addr.to_string();
                Ok(guard)
            }
            Err(_) => {
                let status = guard.wait_exit(WAIT);
                Err(format!("exit {status:?}; stderr:\n{}", guard.log()))
            }
        }
    }

    /// Waits for the process to exit (it is killed at the deadline).
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let end = std::time::Instant::now() + within;
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            if std::time::Instant::now() > end {
                let _ = self.child.kill();
                return self.child.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// CPU time the process used so far, in milliseconds (Linux only; 0 elsewhere).
    pub fn cpu_ms(&self) -> u64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        // Fields after the command name (which may hold spaces) start after ')'.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let f: Vec<u64> = rest
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        // utime and stime are fields 14 and 15 of the full line, in clock ticks (100 Hz).
        f.get(10)
            .zip(f.get(11))
            .map(|(u, s)| (u + s) * 10)
            .unwrap_or(0)
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills it (as a crash would) and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Runs the admin CLI against it.
    pub fn cli(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(binary());
        cmd.args(args)
            .arg("--connect")
            .arg(&self.addr)
            .env_remove("ALLEX_TOKEN")
            .env("RUST_LOG", "warn");
        cmd.output().unwrap()
    }

    /// `need add --module M --instance I` plus extra flags; asserts success.
    pub fn need_add(&self, module: &str, instance: &str, extra: &[&str]) {
        let mut args = vec!["need", "add", "--module", module, "--instance", instance];
        args.extend_from_slice(extra);
        let out = self.cli(&args);
        assert!(
            out.status.success(),
            "need add failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `status --json`, parsed.
    pub fn status(&self) -> LanStatus {
        let out = self.cli(&["status", "--json"]);
        assert!(
            out.status.success(),
            "status failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// The needs file's path.
    pub fn needs_path(&self) -> PathBuf {
        self.dir.join(".allexlanmanager/needs")
    }
}

impl Drop for Lm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- lan manager log ---\n{}", self.log());
        }
    }
}

/// Writes a needs file before the lan manager starts.
pub fn write_needs(dir: &Path, needs: &[Need]) {
    let d = dir.join(".allexlanmanager");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(
        d.join("needs"),
        serde_json::to_string_pretty(needs).unwrap(),
    )
    .unwrap();
}

/// `n` needs of module `m` named `<prefix>0..`.
pub fn needs(m: &str, prefix: &str, n: usize) -> Vec<Need> {
    (0..n)
        .map(|i| {
            Need::new(
                m,
                allex_protocol::InstanceName::new(format!("{prefix}{i}")).unwrap(),
            )
        })
        .collect()
}

/// Three real listening ports on 127.0.0.1 (the kernel accepts into the backlog).
pub struct Listening {
    _listeners: Vec<TcpListener>,
    /// The ports, one per protocol.
    pub ports: Ports,
}

/// Binds a listening port for each protocol.
pub fn listening() -> Listening {
    let ls: Vec<TcpListener> = (0..3)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let p: Vec<u16> = ls.iter().map(|l| l.local_addr().unwrap().port()).collect();
    Listening {
        _listeners: ls,
        ports: Ports {
            tcp: Some(p[0]),
            http: Some(p[1]),
            ws: Some(p[2]),
        },
    }
}

/// Ports nobody listens on (bound, then released).
pub fn dead_ports() -> Ports {
    let ls: Vec<TcpListener> = (0..3)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let p: Vec<u16> = ls.iter().map(|l| l.local_addr().unwrap().port()).collect();
    Ports {
        tcp: Some(p[0]),
        http: Some(p[1]),
        ws: Some(p[2]),
    }
}

/// A WebSocket client to the lan manager.
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Opens a raw WebSocket to the lan manager.
pub async fn raw(addr: &str) -> Ws {
    tokio_tungstenite::connect_async(format!("ws://{addr}/"))
        .await
        .unwrap()
        .0
}

/// What the peer did next on a raw socket.
#[derive(Debug)]
pub enum Next {
    /// A text frame.
    Text(String),
    /// The peer closed, with the close reason.
    Closed(String),
}

/// The next text frame or the close, within `WAIT`.
pub async fn next(ws: &mut Ws) -> Next {
    loop {
        let m = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("nothing from the lan manager in time");
        match m {
            Some(Ok(Message::Text(t))) => return Next::Text(t.to_string()),
            Some(Ok(Message::Close(f))) => {
                return Next::Closed(f.map(|f| f.reason.to_string()).unwrap_or_default())
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Next::Closed(format!("error: {e}")),
            None => return Next::Closed(String::new()),
        }
    }
}

/// A master hello with the given inventory, serving module `m`.
pub fn hello(name: &str, modules: &[&str], inventory: Vec<InventoryEntry>) -> MasterHello {
    MasterHello {
        version: PROTOCOL_VERSION,
        token: None,
        master: name.to_string(),
        // One stable secret per name, so a reconnect is the same master.
        secret: format!("test-secret-of-{name}"),
        pid: 4242,
        advertiseaddress: "127.0.0.1".into(),
        capacity: Capacity {
            modules: modules.iter().map(|m| m.to_string()).collect(),
            free: PortCounts {
                tcp: 100,
                http: 100,
                ws: 100,
            },
        },
        inventory,
    }
}

/// A fake master: the real protocol over a real WebSocket, driven by the test.
pub struct FakeMaster {
    /// Its name.
    pub name: String,
    ws: Ws,
    next_lookup: u64,
}

impl FakeMaster {
    /// Connects, says hello and waits for the welcome.
    pub async fn connect(addr: &str, name: &str, modules: &[&str]) -> FakeMaster {
        FakeMaster::connect_with(addr, hello(name, modules, Vec::new())).await
    }

    /// Connects with a prepared hello and waits for the welcome.
    pub async fn connect_with(addr: &str, h: MasterHello) -> FakeMaster {
        let mut ws = raw(addr).await;
        ws.send(Message::text(encode(&MasterToLan::Hello(h.clone()))))
            .await
            .unwrap();
        let mut m = FakeMaster {
            name: h.master,
            ws,
            next_lookup: 1,
        };
        m.expect("welcome", |m| matches!(m, LanToMaster::Welcome { .. }))
            .await;
        m
    }

    /// Sends one message.
    pub async fn send(&mut self, msg: &MasterToLan) {
        self.ws.send(Message::text(encode(msg))).await.unwrap();
    }

    /// Sends a raw frame.
    pub async fn send_raw(&mut self, msg: Message) {
        self.ws.send(msg).await.unwrap();
    }

    /// Sends a raw frame the peer may refuse by cutting the link mid-frame.
    pub async fn try_send_raw(&mut self, msg: Message) -> bool {
        self.ws.send(msg).await.is_ok()
    }

    /// The next message, or None when the link closed.
    pub async fn recv_opt(&mut self) -> Option<LanToMaster> {
        match next(&mut self.ws).await {
            Next::Text(t) => Some(decode_text(&t, MAX_FROM_LAN_FRAME).unwrap()),
            Next::Closed(_) => None,
        }
    }

    /// The next message.
    pub async fn recv(&mut self) -> LanToMaster {
        self.recv_opt()
            .await
            .unwrap_or_else(|| panic!("{}: link closed", self.name))
    }

    /// Skips messages until one matches; returns it.
    pub async fn expect(&mut self, what: &str, f: impl Fn(&LanToMaster) -> bool) -> LanToMaster {
        let end = tokio::time::Instant::now() + WAIT;
        loop {
            let m = tokio::time::timeout_at(end, self.recv())
                .await
                .unwrap_or_else(|_| panic!("{}: no {what} in time", self.name));
            if f(&m) {
                return m;
            }
        }
    }

    /// Collects every message until a round trip through the state owner
    /// completes, so everything it sent before is in the returned list.
    pub async fn drain(&mut self) -> Vec<LanToMaster> {
        let id = self.next_lookup;
        self.next_lookup += 1;
        self.send(&MasterToLan::Lookup {
            id,
            instancename: allex_protocol::instance!("barrier"),
        })
        .await;
        let mut seen = Vec::new();
        loop {
            let m = self.recv().await;
            if matches!(m, LanToMaster::LookupResult { id: i, .. } if i == id) {
                return seen;
            }
            seen.push(m);
        }
    }

    /// Claims a need and returns the answer (grant or claim_refused).
    pub async fn claim(&mut self, instance: &str) -> LanToMaster {
        self.send(&MasterToLan::Claim {
            instancename: allex_protocol::InstanceName::new(instance).unwrap(),
        })
        .await;
        let inst = instance.to_string();
        self.expect("grant or refusal", move |m| match m {
            LanToMaster::Grant { need, .. } => need.instancename == inst,
            LanToMaster::ClaimRefused { instancename, .. } => *instancename == inst,
            _ => false,
        })
        .await
    }

    /// Claims a need and returns the generation; panics on refusal.
    pub async fn grant(&mut self, instance: &str) -> Generation {
        match self.claim(instance).await {
            LanToMaster::Grant { generation, .. } => generation,
            other => panic!("{}: claim of {instance} refused: {other:?}", self.name),
        }
    }

    /// Reports `spawned` for a grant.
    pub async fn spawned(
        &mut self,
        instance: &str,
        generation: Generation,
        pid: u32,
        ports: Ports,
    ) {
        self.send(&MasterToLan::Spawned {
            instancename: allex_protocol::InstanceName::new(instance).unwrap(),
            generation,
            pid,
            ports,
        })
        .await;
    }

    /// Claims, reports spawned with `ports` and waits for `running`; returns the generation.
    pub async fn run_service(&mut self, instance: &str, pid: u32, ports: Ports) -> Generation {
        let g = self.grant(instance).await;
        self.spawned(instance, g, pid, ports).await;
        let inst = instance.to_string();
        self.expect("running", move |m| {
            matches!(m, LanToMaster::Running { instancename, generation } if *instancename == inst && *generation == g)
        })
        .await;
        g
    }

    /// Reports `down` for a service.
    pub async fn down(
        &mut self,
        instance: &str,
        generation: Generation,
        pid: u32,
        uptime_ms: u64,
        ordered: bool,
    ) {
        self.send(&MasterToLan::Down {
            instancename: allex_protocol::InstanceName::new(instance).unwrap(),
            generation,
            pid,
            exit: ExitInfo {
                code: Some(1),
                signal: None,
            },
            ordered,
            uptime_ms,
        })
        .await;
    }

    /// Closes the link cleanly.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
        while let Ok(Some(_)) = tokio::time::timeout(WAIT, self.ws.next()).await {}
    }
}

/// Retries `check` until it returns Some or `WAIT` passes.
pub async fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let end = std::time::Instant::now() + WAIT;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(std::time::Instant::now() < end, "not in time: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Like `eventually`, with an async check.
pub async fn eventually_async<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let end = std::time::Instant::now() + WAIT;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(std::time::Instant::now() < end, "not in time: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
