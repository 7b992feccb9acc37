//! Which lan manager leads when several share one etcd (`--store etcd://`).
//!
//! Each one holds a lease and campaigns on `<prefix>/leader` with its
//! advertised address as the value. The winner keeps the state; the others
//! refuse masters and admin clients with `not_leader`, naming the winner.
//!
//! Safety rests on two rules, the way Kubernetes' controllers use leases:
//! every write of the leader is a transaction that compares the creation
//! revision of its election key (a deposed leader's write changes nothing),
//! and a leader that cannot renew its lease within the TTL stops leading on
//! its own clock, before etcd can have expired the lease and elected another.
//! Stopping means the process ends: its supervisor starts it again as a
//! follower, which is simpler to trust than tearing a live core down.

use crate::needs_store::StoreError;
use crate::storage::etcd_err;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// What this lan manager is, as its connections see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// It keeps the state: the file store, or elected on etcd.
    Leader,
    /// Another leads (by its advertised `host:port`), or none is known yet.
    Follower {
        /// The leader's advertised address.
        leader: Option<String>,
    },
}

/// Why a lan manager stopped leading (or could not go on campaigning);
/// once said, the process ends.
#[derive(Debug, Clone, Default)]
pub struct Deposition {
    said: Arc<watch::Sender<Option<String>>>,
}

impl Deposition {
    /// Says why; the first reason is the one kept.
    pub fn depose(&self, why: impl Into<String>) {
        let why = why.into();
        self.said.send_if_modified(|slot| {
            if slot.is_some() {
                return false;
            }
            tracing::error!(reason = %why, "this lan manager no longer leads");
            *slot = Some(why);
            true
        });
    }

    /// Whether it was said.
    pub fn is_deposed(&self) -> bool {
        self.said.borrow().is_some()
    }

    /// Waits until it is said and returns the reason.
    pub async fn wait(&self) -> String {
        let mut rx = self.said.subscribe();
        let why = match rx.wait_for(Option::is_some).await {
            Ok(why) => why.clone().unwrap_or_default(),
            // The sender lives in `self`, so this cannot close while waited on.
            Err(_) => String::from("the deposition channel closed"),
        };
        why
    }
}

/// The leader's proof of office, compared by every write.
#[derive(Debug, Clone)]
pub struct Fence {
    /// The election key etcd created for this lan manager's campaign.
    pub key: Vec<u8>,
    /// That key's creation revision.
    pub rev: i64,
    /// Told when a write finds the key gone.
    pub deposition: Deposition,
}

impl Fence {
    /// The comparison every write carries.
    pub fn compare(&self) -> etcd_client::Compare {
        etcd_client::Compare::create_revision(
            self.key.clone(),
            etcd_client::CompareOp::Equal,
            self.rev,
        )
    }
}

/// A lan manager with a lease on etcd, campaigning or leading.
pub struct Candidate {
    // No per-request timeout: a campaign waits as long as another leads.
    client: etcd_client::Client,
    lease: i64,
    name: String,
    advertise: String,
    role: watch::Sender<Role>,
    deposition: Deposition,
}

impl Candidate {
    /// Connects, takes a lease of `ttl` and keeps it alive; a lease that
    /// lapses deposes this lan manager.
    pub async fn enter(
        endpoints: &[String],
        prefix: &str,
        advertise: String,
        ttl: Duration,
    ) -> Result<Candidate, StoreError> {
        let opts = etcd_client::ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(3))
            .with_keep_alive(ttl / 4, ttl / 2);
        let mut client = tokio::time::timeout(
            Duration::from_secs(5),
            etcd_client::Client::connect(endpoints, Some(opts)),
        )
        .await
        .map_err(|_| StoreError::Etcd {
            what: format!("connect to {}", endpoints.join(",")),
            message: "no answer within 5 s".into(),
        })?
        .map_err(etcd_err(&endpoints.join(",")))?;
        let ttl_s = i64::try_from(ttl.as_secs().max(1)).unwrap_or(i64::MAX);
        let asked = Instant::now();
        let lease = tokio::time::timeout(Duration::from_secs(5), client.lease_grant(ttl_s, None))
            .await
            .map_err(|_| StoreError::Etcd {
                what: "lease grant".into(),
                message: "no answer within 5 s".into(),
            })?
            .map_err(etcd_err("lease grant"))?
            .id();
        let (keeper, stream) = client
            .lease_keep_alive(lease)
            .await
            .map_err(etcd_err("lease keep-alive"))?;
        let deposition = Deposition::default();
        tokio::spawn(keep_alive(
            keeper,
            stream,
            Duration::from_secs(ttl_s.unsigned_abs()),
            asked,
            deposition.clone(),
        ));
        let (role, _) = watch::channel(Role::Follower { leader: None });
        Ok(Candidate {
            client,
            lease,
            name: format!("{prefix}/leader"),
            advertise,
            role,
            deposition,
        })
    }

    /// The role, for connections to check.
    pub fn role(&self) -> watch::Receiver<Role> {
        self.role.subscribe()
    }

    /// Told when this lan manager stops leading.
    pub fn deposition(&self) -> Deposition {
        self.deposition.clone()
    }

    /// Campaigns until elected, naming the leader to refused peers meanwhile;
    /// returns the fence the leader's writes carry. The role turns to
    /// `Leader` only when the caller says the core runs ([`Candidate::lead`]).
    pub async fn campaign(&self) -> Result<Fence, StoreError> {
        let observer = tokio::spawn(observe(
            self.client.clone(),
            self.name.clone(),
            self.role.clone(),
        ));
        let mut client = self.client.clone();
        let won = client
            .campaign(self.name.clone(), self.advertise.clone(), self.lease)
            .await;
        observer.abort();
        let leader = won
            .map_err(etcd_err("campaign"))?
            .take_leader()
            .ok_or_else(|| StoreError::Etcd {
                what: "campaign".into(),
                message: "etcd answered without a leader key".into(),
            })?;
        tracing::info!(advertise = %self.advertise, "elected: this lan manager leads");
        Ok(Fence {
            key: leader.key().to_vec(),
            rev: leader.rev(),
            deposition: self.deposition.clone(),
        })
    }

    /// From now on, connections are served.
    pub fn lead(&self) {
        self.role.send_replace(Role::Leader);
    }

    /// Gives the lease back, so a follower leads at once instead of after
    /// the TTL; for a clean stop, after the last write.
    pub async fn resign(&self) {
        let mut client = self.client.clone();
        match tokio::time::timeout(Duration::from_secs(2), client.lease_revoke(self.lease)).await {
            Ok(Ok(_)) => tracing::info!("leadership handed back (lease revoked)"),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot revoke the lease; a follower leads after its TTL")
            }
            Err(_) => tracing::warn!(
                "etcd did not answer the lease revoke; a follower leads after its TTL"
            ),
        }
    }
}

/// Renews the lease every quarter TTL. The lease is counted lost from the
/// moment the last answered renewal was *sent*, plus the TTL: etcd cannot
/// expire it before then, so this side always stops first.
async fn keep_alive(
    mut keeper: etcd_client::LeaseKeeper,
    mut stream: etcd_client::LeaseKeepAliveStream,
    ttl: Duration,
    granted: Instant,
    deposition: Deposition,
) {
    let every = ttl / 4;
    let mut valid_until = granted + ttl;
    let mut sent: VecDeque<Instant> = VecDeque::new();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let at = Instant::now();
                match tokio::time::timeout(every, keeper.keep_alive()).await {
                    Ok(Ok(())) => sent.push_back(at),
                    Ok(Err(e)) => {
                        return deposition.depose(format!("cannot renew the etcd lease: {e}"));
                    }
                    // Sending itself is stuck; the deadline below decides.
                    Err(_) => {}
                }
            }
            answer = stream.message() => match answer {
                Ok(Some(r)) if r.ttl() > 0 => {
                    if let Some(at) = sent.pop_front() {
                        valid_until = at + ttl;
                    }
                }
                Ok(Some(_)) => return deposition.depose("the etcd lease expired"),
                Ok(None) => return deposition.depose("etcd closed the lease's keep-alive stream"),
                Err(e) => return deposition.depose(format!("the lease's keep-alive stream failed: {e}")),
            },
            () = tokio::time::sleep_until(valid_until) => {
                return deposition.depose(format!(
                    "the etcd lease was not renewed within its {}s TTL",
                    ttl.as_secs()
                ));
            }
        }
    }
}

/// Keeps `role` naming the current leader while this one campaigns.
async fn observe(mut client: etcd_client::Client, name: String, role: watch::Sender<Role>) {
    let named = |kv: Option<&etcd_client::KeyValue>| {
        kv.map(|kv| String::from_utf8_lossy(kv.value()).into_owned())
    };
    if let Ok(r) = client.leader(name.clone()).await {
        role.send_replace(Role::Follower {
            leader: named(r.kv()),
        });
    }
    loop {
        let Ok(mut stream) = client.observe(name.clone()).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        while let Ok(Some(r)) = stream.message().await {
            let leader = named(r.kv());
            tracing::info!(leader = leader.as_deref().unwrap_or("none"), "following");
            role.send_replace(Role::Follower { leader });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The address to advertise when `--advertise` is not given: the bound one,
/// or, when it is a wildcard, the local address that routes to etcd (the
/// one masters on the same network most likely reach).
pub fn default_advertise(bound: std::net::SocketAddr, etcd: &[String]) -> String {
    if !bound.ip().is_unspecified() {
        return bound.to_string();
    }
    let routed = etcd.first().and_then(|e| {
        let sock = std::net::UdpSocket::bind(("0.0.0.0", 0)).ok()?;
        sock.connect(e.as_str()).ok()?;
        sock.local_addr().ok()
    });
    match routed {
        Some(local) => std::net::SocketAddr::new(local.ip(), bound.port()).to_string(),
        None => {
            tracing::warn!(
                "cannot tell which address masters reach this lan manager on; pass --advertise HOST:PORT"
            );
            std::net::SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), bound.port())
                .to_string()
        }
    }
}
