//! Convergence: from what exists to what is wanted. [`observe`] looks at the machines, the
//! engines and the swarm; [`plan`] (a pure function) turns that and [`Desired`](crate::cluster::Desired)
//! into ordered steps; [`exec`] runs them, independent ones concurrently, recording each so an
//! interrupted run resumes; [`teardown`] undoes `up` on machines lab may not destroy.
//!
//! Neighbours: it is the top of the core. It implements the [`Nodes`](crate::cluster::Nodes)
//! seam over a driver ([`runtime::Runtime`]) and calls into every area (swarm, tls, registry,
//! images); no area calls into it.

pub mod exec;
pub mod observe;
pub mod plan;
pub mod runtime;
pub mod teardown;
