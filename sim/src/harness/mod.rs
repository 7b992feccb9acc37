//! A lan manager with its masters as one [`Cluster`], and the sampler that
//! watches a running system for phantoms and duplicates.
//!
//! The single components (lan manager, master, admin client) come from
//! `allex-testkit` and are re-exported here, so scenarios and tests name
//! them from one place.

mod cluster;
mod sampler;

pub use allex_testkit::{
    log_tail, testsvc_spec, AdminClient, HarnessError, LanManager, LanOptions, Master,
    MasterOptions, Timings, START_DEADLINE,
};
pub use cluster::{Cluster, ClusterOptions, LEAD_DEADLINE, LEASE_TTL_S};
pub use sampler::{
    sample as sampler_loop, Duplicate, Phantom, SampleLog, Sampler, Watched, PHANTOM_AFTER,
};
