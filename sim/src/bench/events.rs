//! Figure 5, the event stream: `followers` admin sessions follow the events
//! while `needs` needs are added; how fast each follower gets them, and
//! what following costs the lan manager in CPU and memory.

use super::footprint::{cpu_ns, memory};
use super::{ms, BenchError};
use crate::harness::{AdminClient, LanManager, LanOptions, Timings};
use allex_protocol::frame::{decode_text, encode, MAX_FROM_LAN_FRAME};
use allex_protocol::{AdminToLan, InstanceName, LanToAdmin, Need, PROTOCOL_VERSION};
use futures_util::{SinkExt, StreamExt};
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;
use tokio_tungstenite::tungstenite::Message;

/// How long one run may take.
const DEADLINE: Duration = Duration::from_secs(300);

/// One run's figures.
#[derive(Debug, Clone, Copy)]
pub struct EventsRun {
    /// Followers.
    pub followers: usize,
    /// Needs added (one `need_added` event each).
    pub needs: usize,
    /// From the first addition to the last follower's last event.
    pub delivered_ms: f64,
    /// Events each follower got per second, over that time.
    pub per_follower_per_s: f64,
    /// The lan manager's CPU time over the run.
    pub lan_cpu_ms: f64,
    /// The lan manager's resident memory after the run.
    pub lan_rss_kib: u64,
}

/// Adds `needs` needs with `followers` sessions following the stream.
pub fn run(rt: &Runtime, followers: usize, needs: usize) -> Result<EventsRun, BenchError> {
    let lan = LanManager::start(LanOptions {
        timings: Timings::production(),
        ..LanOptions::default()
    })?;
    let addr = lan.addr();
    let pid = lan
        .pid()
        .ok_or_else(|| BenchError::Other("the lan manager is not running".into()))?;
    // Every follower is subscribed before the first addition.
    let mut ready = Vec::new();
    let mut tasks = Vec::new();
    for _ in 0..followers {
        let (tx, rx) = tokio::sync::oneshot::channel();
        ready.push(rx);
        tasks.push(rt.spawn(follow(addr, needs, tx)));
    }
    for r in ready {
        rt.block_on(r)
            .map_err(|_| BenchError::Other("a follower did not subscribe".into()))??;
    }
    let list = (0..needs)
        .map(|i| Ok(Need::new("testsvc", InstanceName::new(format!("e{i}"))?)))
        .collect::<Result<Vec<Need>, BenchError>>()?;
    let cpu0 = cpu_ns(pid)?;
    let t0 = Instant::now();
    AdminClient::add_all(addr, None, list, 32)?;
    let mut last = t0;
    for t in tasks {
        let done = rt
            .block_on(t)
            .map_err(|e| BenchError::Other(format!("follower task: {e}")))??;
        last = last.max(done);
    }
    let cpu1 = cpu_ns(pid)?;
    let delivered = if followers == 0 {
        Instant::now() - t0
    } else {
        last - t0
    };
    Ok(EventsRun {
        followers,
        needs,
        delivered_ms: ms(delivered),
        per_follower_per_s: needs as f64 / delivered.as_secs_f64().max(1e-9),
        lan_cpu_ms: (cpu1.saturating_sub(cpu0)) as f64 / 1e6,
        lan_rss_kib: memory(pid)?.rss_kib,
    })
}

/// One follower: subscribes, says so, and counts `need_added` events until
/// it has `needs`; returns when it got the last one.
async fn follow(
    addr: std::net::SocketAddr,
    needs: usize,
    subscribed: tokio::sync::oneshot::Sender<Result<(), BenchError>>,
) -> Result<Instant, BenchError> {
    let link = |e: tokio_tungstenite::tungstenite::Error| BenchError::Admin(e.to_string());
    let mut ws = allex_testkit::link::connect_lan(addr).await.map_err(link)?;
    let hello = AdminToLan::AdminHello {
        version: PROTOCOL_VERSION,
        token: None,
    };
    ws.send(Message::text(encode(&hello))).await.map_err(link)?;
    let req = AdminToLan::Events {
        since: None,
        follow: true,
    };
    ws.send(Message::text(encode(&req))).await.map_err(link)?;
    let mut told = Some(subscribed);
    let mut got = 0;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while got < needs {
        let frame = tokio::time::timeout_at(deadline, ws.next())
            .await
            .map_err(|_| BenchError::Timeout(format!("{got} of {needs} events")))?;
        let Some(frame) = frame else {
            return Err(BenchError::Admin("the event stream ended".into()));
        };
        let Message::Text(t) = frame.map_err(link)? else {
            continue;
        };
        match decode_text::<LanToAdmin>(&t, MAX_FROM_LAN_FRAME)
            .map_err(|e| BenchError::Admin(e.to_string()))?
        {
            LanToAdmin::AdminWelcome { .. } => {
                // The events request is read right after the welcome.
                if let Some(tx) = told.take() {
                    let _ = tx.send(Ok(()));
                }
            }
            LanToAdmin::Event { event } if event.kind.name() == "need_added" => got += 1,
            _ => {}
        }
    }
    Ok(Instant::now())
}
