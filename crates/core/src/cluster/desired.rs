//! What is wanted of a cluster: its topology, its registry and what its driver can do, as the
//! settings and the recorded state decide it. Every area reads it through
//! [`Nodes::desired`](super::Nodes::desired); the planner compares it with what is observed.

use serde::Serialize;

use crate::driver::Capabilities;
use crate::state::{RegistryMode, RegistryTls};
use crate::topology::Topology;

/// What the user asked for the registry's reachability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ModeRequest {
    /// Detect: mesh where the nodes have IPVS, fallback where not.
    Auto,
    /// Force one mode.
    Force(RegistryMode),
}

/// The desired cluster.
#[derive(Debug, Clone)]
pub struct Desired {
    /// Nodes, roles and labels.
    pub topology: Topology,
    /// The registry image (also what the forwarders and probes run).
    pub registry_image: String,
    /// How the registry is to be reached.
    pub mode: ModeRequest,
    /// Who may talk to the registry.
    pub tls: RegistryTls,
    /// What the driver can do.
    pub capabilities: Capabilities,
    /// `--force`: go ahead with repairs that lose the registry's data (a broken registry
    /// node destroyed and made again, data on a node whose engine does not answer), and make
    /// nodes leave swarms that are not this cluster's.
    pub force: bool,
    /// `--renew-certs` (mutual TLS): a new CA, and every certificate issued again from it.
    /// Never remembered.
    pub renew_certs: bool,
}
