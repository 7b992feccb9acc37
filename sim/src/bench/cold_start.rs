//! Figure 1, cold start: N needs added to a lan manager with one master;
//! time until all their ports accept, and until all are listed as running.

use super::admin_link::add_all;
use super::probe::wait_all_accept;
use super::system::{System, SYSTEM_DEADLINE};
use super::{ms, BenchError};
use allex_protocol::Need;
use std::time::Instant;
use tokio::runtime::Runtime;

/// Parallel admin sessions the needs are added over.
const ADD_LINKS: usize = 32;

/// One cold start's times, from the first `need_add` sent.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct ColdStart {
    /// Needs added.
    pub n: usize,
    /// Until the lan manager acknowledged every addition (on disk).
    pub acked_ms: f64,
    /// Until every port of every child accepted.
    pub accept_ms: f64,
    /// Until the lan manager listed every one as running.
    pub running_ms: f64,
}

/// Adds `n` needs `<prefix>0..` and times them to accepting and to running.
pub fn run(
    rt: &Runtime,
    sys: &mut System,
    n: usize,
    prefix: &str,
) -> Result<ColdStart, BenchError> {
    let ports = sys.expected_ports(n);
    if ports.len() < 3 * n {
        return Err(BenchError::Other(format!(
            "the master's ranges hold only {} free ports for {n} children",
            ports.len()
        )));
    }
    let needs: Vec<Need> = (0..n)
        .map(|i| Need::new("testsvc", format!("{prefix}{i}")))
        .collect();
    let addr = sys.lan.addr();
    let t0 = Instant::now();
    let adding = rt.spawn(async move {
        add_all(addr, needs, ADD_LINKS).await?;
        Ok::<Instant, BenchError>(Instant::now())
    });
    let accepted = wait_all_accept(&ports, SYSTEM_DEADLINE)?;
    let (_, running) = sys.poll_status(rt, "all needs running", |st| {
        st.running
            .iter()
            .filter(|r| r.instancename.starts_with(prefix))
            .count()
            >= n
    })?;
    let acked = rt
        .block_on(adding)
        .map_err(|e| BenchError::Other(format!("adding needs: {e}")))??;
    Ok(ColdStart {
        n,
        acked_ms: ms(acked - t0),
        accept_ms: ms(accepted - t0),
        running_ms: ms(running - t0),
    })
}
