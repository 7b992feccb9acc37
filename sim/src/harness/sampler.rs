//! Watching the real processes and the lan manager's running list for the
//! whole of a test or scenario, so the safety promises are checked at every
//! sample, not only before and after an operation:
//!
//! - no need has two live processes, listed or not (strict: one scan of
//!   /proc that finds two is a failure);
//! - no running record without a live process of that master behind it.
//!   A death takes a moment to be reported, so a record counts as a
//!   phantom only when it stays without its process for [`PHANTOM_AFTER`].

use super::AdminClient;
use crate::procscan::instances_with_env;
use allex_protocol::spawn::ENV_RUNTIMEDIRECTORY;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often the sampler looks.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(10);

/// How long a record may stay listed after its process died: far below
/// any grace, far above the time a `down` takes to arrive.
pub const PHANTOM_AFTER: Duration = Duration::from_secs(2);

/// The masters a sampler watches: name and runtime directory each;
/// [`Cluster`](super::Cluster) adds every master it starts.
pub type Watched = Arc<Mutex<Vec<(String, String)>>>;

/// One sample in which an instance ran as more than one live process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Duplicate {
    /// When, since the sampler started.
    pub at: Duration,
    /// The instance.
    pub instance: String,
    /// (master, pid) of each live process.
    pub processes: Vec<(String, u32)>,
}

/// A running record that stayed listed without its process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Phantom {
    /// When it was first seen without its process, since the sampler started.
    pub at: Duration,
    /// The instance.
    pub instance: String,
    /// The master the record names.
    pub master: String,
    /// The pid the record names.
    pub pid: u32,
}

/// What a sampler saw.
#[derive(Debug, Clone, Default)]
pub struct SampleLog {
    /// Samples taken (a /proc scan and, when it answered, a status).
    pub samples: usize,
    /// Status requests that failed (e.g. while the lan manager restarts).
    pub failures: usize,
    /// Every sample with an instance running twice.
    pub duplicates: Vec<Duplicate>,
    /// Records that outlived their process.
    pub phantoms: Vec<Phantom>,
}

impl SampleLog {
    /// Whether every safety invariant held at every sample.
    pub fn clean(&self) -> bool {
        self.duplicates.is_empty() && self.phantoms.is_empty()
    }
}

/// A thread sampling processes and status until [`Sampler::finish`].
pub struct Sampler {
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<SampleLog>>,
    thread: Option<JoinHandle<()>>,
}

impl Sampler {
    /// Starts sampling the lan manager at `addrs` (whichever answers: one
    /// leads when there are several) and the processes of `watched`.
    pub fn start(addrs: Vec<SocketAddr>, token: Option<String>, watched: Watched) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(SampleLog::default()));
        let (flag, into) = (stop.clone(), log.clone());
        let thread = std::thread::spawn(move || sample_into(&addrs, token, &watched, &flag, &into));
        Sampler {
            stop,
            log,
            thread: Some(thread),
        }
    }

    /// What was seen so far; sampling goes on.
    pub fn so_far(&self) -> SampleLog {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Stops sampling and returns what was seen.
    pub fn finish(mut self) -> SampleLog {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.so_far()
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

/// Live processes by instance: (master, pid) each.
fn scan(watched: &Watched) -> BTreeMap<String, Vec<(String, u32)>> {
    let masters = watched.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut by: BTreeMap<String, Vec<(String, u32)>> = BTreeMap::new();
    for (name, dir) in masters {
        for (pid, instance) in instances_with_env(ENV_RUNTIMEDIRECTORY, &[dir]) {
            by.entry(instance).or_default().push((name.clone(), pid));
        }
    }
    by
}

/// The sampling loop itself, on the caller's thread until `stop` is set;
/// for callers that must sample from another network namespace.
pub fn sample(
    addr: SocketAddr,
    token: Option<String>,
    watched: &Watched,
    stop: &AtomicBool,
) -> SampleLog {
    let log = Mutex::new(SampleLog::default());
    sample_into(&[addr], token, watched, stop, &log);
    log.into_inner().unwrap_or_else(|p| p.into_inner())
}

fn sample_into(
    addrs: &[SocketAddr],
    token: Option<String>,
    watched: &Watched,
    stop: &AtomicBool,
    shared: &Mutex<SampleLog>,
) {
    let started = Instant::now();
    let mut log = SampleLog::default();
    let mut client: Option<AdminClient> = None;
    let mut next_addr = 0usize;
    // Records seen without their process: since when.
    let mut missing: HashMap<(String, String, u32), Instant> = HashMap::new();
    while !stop.load(Ordering::SeqCst) {
        // Processes first, then the list: a record listed after a scan that
        // did not find its process was listed while the process was gone.
        let live = scan(watched);
        log.samples += 1;
        for (instance, processes) in &live {
            if processes.len() > 1 {
                log.duplicates.push(Duplicate {
                    at: started.elapsed(),
                    instance: instance.clone(),
                    processes: processes.clone(),
                });
            }
        }
        if client.is_none() && !addrs.is_empty() {
            let addr = addrs[next_addr % addrs.len()];
            client = AdminClient::connect(addr, token.as_deref(), Duration::from_secs(2)).ok();
            if client.is_none() {
                next_addr += 1;
            }
        }
        match client.as_mut().map(AdminClient::status) {
            Some(Ok(st)) => {
                // Records of masters this sampler does not watch are not judged.
                let judged: Vec<String> = watched
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .iter()
                    .map(|(m, _)| m.clone())
                    .collect();
                let mut still = HashMap::new();
                for r in &st.running {
                    let backed = live
                        .get(r.instancename.as_str())
                        .is_some_and(|ps| ps.iter().any(|(m, p)| *m == r.master && *p == r.pid));
                    if backed || !judged.contains(&r.master) {
                        continue;
                    }
                    let key = (r.instancename.to_string(), r.master.clone(), r.pid);
                    let since = missing.get(&key).copied().unwrap_or_else(Instant::now);
                    if since.elapsed() >= PHANTOM_AFTER
                        && !log
                            .phantoms
                            .iter()
                            .any(|p| p.instance == key.0 && p.pid == key.2)
                    {
                        log.phantoms.push(Phantom {
                            at: since.duration_since(started),
                            instance: key.0.clone(),
                            master: key.1.clone(),
                            pid: key.2,
                        });
                    }
                    still.insert(key, since);
                }
                missing = still;
            }
            _ => {
                log.failures += 1;
                client = None;
            }
        }
        *shared.lock().unwrap_or_else(|p| p.into_inner()) = log.clone();
        std::thread::sleep(SAMPLE_EVERY);
    }
    *shared.lock().unwrap_or_else(|p| p.into_inner()) = log;
}
