//! The docker driver: each swarm node is a Docker-in-Docker container on the local Docker
//! engine. It runs anywhere Docker runs, starts in seconds, and is lab's test bed.
//!
//! Node `<node>` of cluster `<cluster>` is the container `<cluster>-<node>` (hostname
//! `<node>`) on the network `<cluster>-net`, with a volume `<cluster>-<node>-docker` on
//! `/var/lib/docker`; all are labelled `lab.cluster=<cluster>`. The node's dockerd listens on
//! a unix socket in a host directory under lab's state, bind-mounted into the container, so
//! no Docker API is ever exposed on a TCP port.
//!
//! A cluster lives on the engine it was made on, recorded in its state directory
//! (`engine.json`, see `engine.rs`), not on whatever `DOCKER_HOST` names later: `lab env`
//! points `DOCKER_HOST` at a node. Each node's dockerd carries the labels `lab.cluster` and
//! `lab.node`, so a new cluster aimed at a node of another is recognised and refused.
#![deny(missing_docs)]

mod config;
mod driver;
mod engine;
mod error;
mod node;

pub use config::{DockerConfig, PrivilegedMode};
pub use driver::DockerDriver;
pub use node::CAPS;

use lab_core::driver::{DriverOption, OptionKind};

/// The `[drivers.docker]` settings, for `lab up --help` and `lab drivers --long`.
const OPTIONS: &[DriverOption] = &[
    DriverOption::new("node_image", OptionKind::String, "image the node containers run (default docker:dind)")
        .flag("node-image"),
    DriverOption::new("privileged", OptionKind::Choice(&["auto", "always", "never"]), "run node containers privileged"),
    DriverOption::new("host", OptionKind::String, "the Docker engine the nodes run on (default: DOCKER_HOST's)"),
    DriverOption::new("allow_nested", OptionKind::Bool, "allow a cluster inside a node of another lab cluster"),
];

lab_core::register_driver!(
    "docker",
    "nodes as Docker-in-Docker containers on the local Docker engine (default)",
    DockerDriver::boxed,
    options = OPTIONS
);
