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
// The behaviour suite every driver must pass (`lab driver-test` runs it), and the adapter for
// drivers that are programs, whose API is the protocol (docs/driver-protocol.md), not this
// module: both live with the driver API, and are named here too for the `lab` binary.
#[doc(hidden)]
pub use driver::{conformance, external};
// The rest serves the `lab` binary (lab-cli) and the bundled drivers; it is not part of the
// plugin API, which is `driver` (and `error`, which it re-exports).
#[doc(hidden)]
pub mod cluster;
#[doc(hidden)]
pub mod converge;
#[doc(hidden)]
pub mod images;
#[doc(hidden)]
pub mod registry;
#[doc(hidden)]
pub mod state;
#[doc(hidden)]
pub mod swarm;
#[doc(hidden)]
pub mod tls;
#[doc(hidden)]
pub mod topology;
pub mod wait;

pub use driver::{
    Capabilities, Driver, DriverContext, DriverOption, ExecOutput, Machine, MachineState, MissingImage, NodeEngine,
    OptionKind,
};
pub use error::{Error, Result};
pub use topology::{ClusterName, NodeSpec, Role, Topology};

#[doc(hidden)]
pub mod __private {
    // Re-exported so that driver crates never name `inventory` themselves.
    pub use inventory;
}
