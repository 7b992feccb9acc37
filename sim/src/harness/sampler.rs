//! Watching the lan manager's running list continuously, so "never listed
//! twice" is checked at every moment an operation passes through, not only
//! before and after it.

use super::AdminClient;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often the sampler asks.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(10);

/// One sample in which an instance was listed running more than once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Duplicate {
    /// When, since the sampler started.
    pub at: Duration,
    /// The instance.
    pub instance: String,
    /// The masters of its records.
    pub masters: Vec<String>,
}

/// What a sampler saw.
#[derive(Debug, Clone, Default)]
pub struct SampleLog {
    /// Status answers received.
    pub samples: usize,
    /// Requests that failed (e.g. while the lan manager restarts).
    pub failures: usize,
    /// Every sample that listed an instance twice.
    pub duplicates: Vec<Duplicate>,
}

/// A thread polling the lan manager's status until [`Sampler::finish`].
pub struct Sampler {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<SampleLog>>,
}

impl Sampler {
    /// Starts sampling the lan manager at `addr` over the admin protocol.
    pub fn start(addr: SocketAddr, token: Option<String>) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || sample(addr, token, &flag));
        Sampler {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops sampling and returns what was seen.
    pub fn finish(mut self) -> SampleLog {
        self.stop.store(true, Ordering::SeqCst);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn sample(addr: SocketAddr, token: Option<String>, stop: &AtomicBool) -> SampleLog {
    let started = Instant::now();
    let mut log = SampleLog::default();
    let mut client: Option<AdminClient> = None;
    while !stop.load(Ordering::SeqCst) {
        // One session for many samples; a new one after any failure
        // (the lan manager may be restarting).
        if client.is_none() {
            client = AdminClient::connect(addr, token.as_deref(), Duration::from_secs(2)).ok();
        }
        match client.as_mut().map(AdminClient::status) {
            Some(Ok(st)) => {
                log.samples += 1;
                let mut by: BTreeMap<&str, Vec<String>> = BTreeMap::new();
                for r in &st.running {
                    by.entry(&r.instancename)
                        .or_default()
                        .push(r.master.clone());
                }
                for (instance, masters) in by {
                    if masters.len() > 1 {
                        log.duplicates.push(Duplicate {
                            at: started.elapsed(),
                            instance: instance.to_string(),
                            masters,
                        });
                    }
                }
            }
            _ => {
                log.failures += 1;
                client = None;
            }
        }
        std::thread::sleep(SAMPLE_EVERY);
    }
    log
}
