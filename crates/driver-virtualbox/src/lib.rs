//! The virtualbox driver: each swarm node is a VirtualBox VM made with docker-machine, as in
//! the seed procedure, in one command.
//!
//! Node `<node>` of cluster `<cluster>` is the machine `<cluster>-<node>`, created with the
//! seed's flags (`create -d virtualbox --engine-storage-driver overlay2 --virtualbox-memory
//! 1024|6144 --virtualbox-nat-nictype Am79C973 --virtualbox-cpu-count 1`), configurable per
//! role ([`VirtualBoxConfig`]). The first machine of a run is created alone, because
//! VirtualBox fails when several VMs make the host-only network at once (docker-machine issue
//! 479); the rest run a few at a time. lab reaches each engine as `docker-machine env`
//! describes it: TCP with TLS on port 2376, with the client certificates docker-machine keeps
//! for the machine, and advertises the machine's host-only address (`docker-machine ip`),
//! never its NAT address.
//!
//! docker-machine is run as a program (argv, no shell, bounded): lab reads `ls`, `env`, `ip`,
//! `inspect` and `status`, and calls `create`, `start` and `rm -y`. Commands on a machine and
//! `lab ssh` go over SSH with the machine's host key checked against the one lab recorded when
//! it made the machine ([`ssh`]), never through `docker-machine ssh`, which checks none.
#![deny(missing_docs)]

mod client;
mod config;
mod driver;
mod error;
mod ssh;

pub use config::{CreateOptions, MachineOptions, RoleConfig, VirtualBoxConfig};
pub use driver::VirtualBoxDriver;

use lab_core::driver::{DriverOption, OptionKind};

/// The `[drivers.virtualbox]` settings, for `lab drivers --long` (per-role machine settings
/// sit in `[drivers.virtualbox.manager]` and `.worker`: `--driver-opt worker.memory=8192`).
const OPTIONS: &[DriverOption] = &[
    DriverOption::new("docker_machine", OptionKind::Path, "the docker-machine program (default: found on PATH)"),
    DriverOption::new("concurrency", OptionKind::Integer, "creates at once after the first (2)"),
];

lab_core::register_driver!(
    "virtualbox",
    "VirtualBox machines made with docker-machine, as in the seed procedure",
    VirtualBoxDriver::boxed,
    options = OPTIONS
);
