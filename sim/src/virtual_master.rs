//! Virtual masters: the kit's [`FakeMaster`] playing a whole machine over a
//! real WebSocket, with real listening ports, but without spawning processes.
//!
//! They let one process stand in for a hundred machines when measuring the
//! lan manager alone (`allex-sim bench`, figure 4). A virtual master answers
//! every grant with a `spawned` report naming ports it really listens on, so
//! the lan manager's port check does its real work; only the child is missing.

pub use allex_testkit::fake_master::{
    hello, impostor_hello, impostor_hello_blocking, FakeMaster, FakeMasterError, ImpostorOutcome,
};
pub use allex_testkit::AcceptingPorts;

use allex_protocol::{LanToMaster, MasterToLan, Need, Ports};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;
use tokio::sync::watch;

/// Plays `master` until `progress` reaches its target: claims every open
/// need `wants` accepts, answers each grant with `spawned` on `ports`,
/// counts `running` orders into `progress`, and keeps the heartbeat going.
pub async fn serve(
    mut master: FakeMaster,
    ports: Ports,
    wants: impl Fn(&Need) -> bool,
    progress: Arc<Progress>,
) -> Result<ServeStats, FakeMasterError> {
    let mut stats = ServeStats::default();
    let mut beat = tokio::time::interval(master.heartbeat());
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stop = progress.stop.subscribe();
    let mut seq = 0;
    // Fake pids, far from real ones.
    let mut pid = 1_000_000;
    while !*stop.borrow() {
        let msg = tokio::select! {
            m = master.try_recv() => m?,
            _ = beat.tick() => {
                seq += 1;
                master.try_send(&MasterToLan::Heartbeat { seq }).await?;
                continue;
            }
            _ = stop.changed() => continue,
        };
        let Some(msg) = msg else {
            return Err(FakeMasterError::Link {
                name: master.name.clone(),
                message: "closed by the lan manager".into(),
            });
        };
        match msg {
            LanToMaster::Needs { needs } => {
                for n in needs.iter().filter(|n| wants(n)) {
                    claim(&mut master, &n.instancename, &mut stats).await?;
                }
            }
            LanToMaster::NeedOpen { need } if wants(&need) => {
                claim(&mut master, &need.instancename, &mut stats).await?;
            }
            LanToMaster::Grant {
                need, generation, ..
            } => {
                stats.granted += 1;
                pid += 1;
                master
                    .try_send(&MasterToLan::Spawned {
                        instancename: need.instancename,
                        generation,
                        pid,
                        ports,
                    })
                    .await?;
            }
            LanToMaster::ClaimRefused { .. } => stats.refused += 1,
            LanToMaster::Running { .. } => {
                stats.running += 1;
                progress.one_running();
            }
            LanToMaster::Rejected {
                instancename,
                reason,
                ..
            } => {
                return Err(FakeMasterError::Unexpected {
                    name: master.name.clone(),
                    message: format!("{instancename} rejected: {reason}"),
                })
            }
            LanToMaster::Error { code, message, .. } => {
                return Err(FakeMasterError::Unexpected {
                    name: master.name.clone(),
                    message: format!("error {code}: {message}"),
                })
            }
            _ => {}
        }
    }
    (stats.sent, stats.received) = master.frames();
    master.close().await;
    Ok(stats)
}

async fn claim(
    master: &mut FakeMaster,
    instancename: &allex_protocol::InstanceName,
    stats: &mut ServeStats,
) -> Result<(), FakeMasterError> {
    stats.claimed += 1;
    master
        .try_send(&MasterToLan::Claim {
            instancename: instancename.clone(),
            ports: None,
        })
        .await
}

/// How many services the virtual masters got listed as running, and when
/// the last one of the target was.
#[derive(Debug)]
pub struct Progress {
    running: AtomicUsize,
    target: usize,
    finished_at: OnceLock<Instant>,
    stop: watch::Sender<bool>,
}

impl Progress {
    /// Progress towards `target` services running.
    pub fn new(target: usize) -> Arc<Progress> {
        Arc::new(Progress {
            running: AtomicUsize::new(0),
            target,
            finished_at: OnceLock::new(),
            stop: watch::Sender::new(target == 0),
        })
    }

    fn one_running(&self) {
        if self.running.fetch_add(1, Ordering::AcqRel) + 1 >= self.target {
            let _ = self.finished_at.set(Instant::now());
            self.stop.send_replace(true);
        }
    }

    /// Services listed as running so far.
    pub fn running(&self) -> usize {
        self.running.load(Ordering::Acquire)
    }

    /// When the target was reached.
    pub fn finished_at(&self) -> Option<Instant> {
        self.finished_at.get().copied()
    }

    /// Tells every virtual master to stop serving (when the run is abandoned).
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }
}

/// What one virtual master did in [`serve`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ServeStats {
    /// Claims sent.
    pub claimed: u64,
    /// Grants received.
    pub granted: u64,
    /// Claims refused.
    pub refused: u64,
    /// Services listed as running.
    pub running: u64,
    /// Frames sent in all.
    pub sent: u64,
    /// Frames received in all.
    pub received: u64,
}
