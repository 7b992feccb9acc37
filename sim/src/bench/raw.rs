//! The raw limit: the same test service started directly with fork/exec and
//! waited on until its ports accept, with no master and no lan manager.
//! Every system figure is divided by its raw counterpart.

use super::probe::{first_free, wait_all_accept, wait_dead};
use super::{ms, BenchError};
use crate::bins::binary;
use crate::ports::port_block;
use allex_protocol::spawn::{
    SpawnInfo, ENV_HTTP_PORT, ENV_INSTANCE, ENV_MASTER_SOCKET, ENV_MODULE, ENV_SPAWN, ENV_TCP_PORT,
    ENV_WS_PORT,
};
use allex_protocol::InstanceName;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long any raw step may take before the bench gives up.
const RAW_DEADLINE: Duration = Duration::from_secs(60);

/// Test services started directly, each in its own process group; all are
/// killed and reaped on drop.
pub struct RawServices {
    testsvc: PathBuf,
    fork: bool,
    children: Vec<(Child, [u16; 3])>,
}

impl RawServices {
    fn new(fork: bool) -> Result<RawServices, BenchError> {
        Ok(RawServices {
            testsvc: binary("allex-testsvc")?,
            fork,
            children: Vec::new(),
        })
    }

    fn spawn(&mut self, i: usize, ports: [u16; 3]) -> Result<(), BenchError> {
        let child = spawn_testsvc(
            &self.testsvc,
            &InstanceName::new(format!("raw{i}"))?,
            ports,
            self.fork,
        )?;
        self.children.push((child, ports));
        Ok(())
    }

    /// Kills child `i` with SIGKILL and starts it again on the same ports.
    fn respawn(&mut self, i: usize) -> Result<u32, BenchError> {
        let (child, ports) = &mut self.children[i];
        let old = child.id();
        let _ = kill(Pid::from_raw(old as i32), Signal::SIGKILL);
        let _ = child.wait();
        wait_dead(old, RAW_DEADLINE)?;
        *child = spawn_testsvc(
            &self.testsvc,
            &InstanceName::new(format!("raw{i}"))?,
            *ports,
            self.fork,
        )?;
        Ok(old)
    }
}

impl Drop for RawServices {
    fn drop(&mut self) {
        for (c, _) in &mut self.children {
            let _ = nix::sys::signal::killpg(Pid::from_raw(c.id() as i32), Signal::SIGKILL);
            let _ = c.wait();
        }
    }
}

/// Starts one service; `fork` forces std's fork+exec path (as any
/// `pre_exec` hook does, e.g. the master's PR_SET_PDEATHSIG) instead of
/// posix_spawn, which clones without copying the parent's page tables.
fn spawn_testsvc(
    testsvc: &Path,
    instance: &InstanceName,
    ports: [u16; 3],
    fork: bool,
) -> Result<Child, BenchError> {
    let info = SpawnInfo {
        modulename: "testsvc".into(),
        instancename: instance.clone(),
        propertyhash: serde_json::Map::new(),
        tcpport: Some(ports[0]),
        httpport: Some(ports[1]),
        wsport: Some(ports[2]),
        masterpid: std::process::id(),
    };
    let spawn = serde_json::to_string(&info).map_err(|e| BenchError::Other(e.to_string()))?;
    let mut cmd = Command::new(testsvc);
    if fork {
        // SAFETY: the hook does nothing, so it is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| Ok(()));
        }
    }
    cmd.env(ENV_SPAWN, spawn)
        .env(ENV_MODULE, "testsvc")
        .env(ENV_INSTANCE, instance.as_str())
        .env(ENV_TCP_PORT, ports[0].to_string())
        .env(ENV_HTTP_PORT, ports[1].to_string())
        .env(ENV_WS_PORT, ports[2].to_string())
        .env_remove(ENV_MASTER_SOCKET)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|source| BenchError::Io {
            what: format!("starting {}", testsvc.display()),
            source,
        })
}

/// Free ports for `n` services, three each, from a fresh block.
fn ports_for(n: usize) -> Result<Vec<[u16; 3]>, BenchError> {
    let want = 3 * n;
    let size = u16::try_from(want + want / 4 + 64)
        .map_err(|_| BenchError::Other(format!("{n} raw services need too many ports")))?;
    let start = u32::from(port_block(size));
    let free = first_free(start..=start + u32::from(size) - 1, want);
    if free.len() < want {
        return Err(BenchError::Other(format!(
            "only {} of {want} ports free in {start}..{}",
            free.len(),
            start + u32::from(size)
        )));
    }
    Ok(free.chunks(3).map(|c| [c[0], c[1], c[2]]).collect())
}

/// Starts `n` services back to back from one thread (through fork+exec
/// when `fork`, else posix_spawn) and returns the milliseconds until every
/// port of every one accepts.
pub fn cold_start(n: usize, fork: bool) -> Result<f64, BenchError> {
    let ports = ports_for(n)?;
    let all: Vec<u16> = ports.iter().flatten().copied().collect();
    let mut raw = RawServices::new(fork)?;
    let t0 = Instant::now();
    for (i, p) in ports.into_iter().enumerate() {
        raw.spawn(i, p)?;
    }
    let done = wait_all_accept(&all, RAW_DEADLINE)?;
    Ok(ms(done - t0))
}

/// Kills one running service `kills` times and restarts it directly; returns
/// each time from the kill until its tcp port accepts again.
pub fn recovery(kills: usize) -> Result<Vec<f64>, BenchError> {
    let ports = ports_for(1)?;
    let mut raw = RawServices::new(false)?;
    raw.spawn(0, ports[0])?;
    wait_all_accept(&ports[0], RAW_DEADLINE)?;
    let mut samples = Vec::with_capacity(kills);
    for _ in 0..kills {
        let t0 = Instant::now();
        raw.respawn(0)?;
        let done = wait_all_accept(&ports[0][..1], RAW_DEADLINE)?;
        samples.push(ms(done - t0));
    }
    Ok(samples)
}
