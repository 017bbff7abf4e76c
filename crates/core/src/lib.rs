//! lab's core: everything that is the same whichever driver made the machines.
//!
//! A [`Driver`] only makes machines and hands back a way to reach each machine's Docker engine
//! and to run a command on it. Everything else happens here, once, through bollard against
//! those engines: observing what exists ([`observe`]), planning the steps from that to the
//! desired topology ([`plan`], a pure function), executing them with independent steps running
//! concurrently ([`exec`]), forming the swarm ([`swarm`]), deploying the private registry and
//! making it answer at `127.0.0.1:5000` on every node ([`registry`]), and keeping per-cluster
//! state ([`state`]) so that an interrupted `up` resumes.
//!
//! Drivers register themselves with [`register_driver!`]; the CLI looks them up by name with
//! [`driver::lookup`].
#![warn(missing_docs)]

pub mod driver;
pub mod error;
pub mod exec;
pub mod external;
pub mod images;
pub mod observe;
pub mod plan;
pub mod probe;
pub mod progress;
pub mod registry;
pub mod state;
pub mod swarm;
pub mod teardown;
pub mod topology;

pub use driver::{Capabilities, Driver, DriverContext, ExecOutput, Machine, MachineState, NodeEngine};
pub use error::{Error, Result};
pub use topology::{ClusterName, NodeSpec, Role, Topology};

#[doc(hidden)]
pub mod __private {
    // Re-exported so that driver crates never name `inventory` themselves.
    pub use inventory;
}
