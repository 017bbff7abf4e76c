//! The ssh driver. Registered so that `lab drivers` lists it and `--driver ssh` is not
//! "unknown"; until its own issue lands it says so and exits 1 before anything is created.
#![deny(missing_docs)]

use async_trait::async_trait;
use lab_core::{Capabilities, Driver, DriverContext, Error, ExecOutput, Machine, NodeEngine, NodeSpec, Result};

const NAME: &str = "ssh";

/// Placeholder until the driver is implemented.
pub struct Pending;

impl Pending {
    fn boxed(_ctx: DriverContext) -> Result<Box<dyn Driver>> {
        Ok(Box::new(Pending))
    }
}

fn pending() -> Error {
    Error::Unsupported { driver: NAME.into(), message: "not yet implemented".into() }
}

#[async_trait]
impl Driver for Pending {
    fn capabilities(&self) -> Capabilities {
        Capabilities { create: false, destroy: false, start: false, shell: false }
    }
    async fn preflight(&self, _nodes: &[NodeSpec]) -> Result<()> {
        Err(pending())
    }
    async fn observe(&self) -> Result<Vec<Machine>> {
        Err(pending())
    }
    async fn create(&self, _node: &NodeSpec) -> Result<Machine> {
        Err(pending())
    }
    async fn start(&self, _node: &str) -> Result<Machine> {
        Err(pending())
    }
    async fn destroy(&self, _node: &str) -> Result<()> {
        Err(pending())
    }
    async fn engine(&self, _machine: &Machine) -> Result<NodeEngine> {
        Err(pending())
    }
    async fn exec(&self, _node: &str, _argv: &[String]) -> Result<ExecOutput> {
        Err(pending())
    }
}

lab_core::register_driver!(
    NAME,
    "existing hosts that run Docker, reached over SSH (--hosts hosts.toml; not yet implemented)",
    Pending::boxed
);
