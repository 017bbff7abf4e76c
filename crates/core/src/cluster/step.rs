//! One thing `lab up` does to a cluster. The planner ([`crate::converge::plan`]) orders them, the
//! executor ([`crate::converge::exec`]) runs them, and progress ([`super::Progress`]) reports them.

use std::fmt;

use serde::Serialize;

use crate::topology::Role;

/// One step of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Step {
    /// Destroy a machine that is broken or not in the topology any more.
    DestroyNode {
        /// Node.
        node: String,
        /// Why: `not in the topology`, or `broken: <what the driver said>`.
        reason: String,
    },
    /// Create (and start) a machine.
    CreateNode {
        /// Node.
        node: String,
        /// Role.
        role: Role,
    },
    /// Start a stopped machine.
    StartNode {
        /// Node.
        node: String,
    },
    /// Wait until the node's engine answers.
    WaitEngine {
        /// Node.
        node: String,
    },
    /// Make an image present on the node (pull there, or copy from the local engine).
    LoadImage {
        /// Node.
        node: String,
        /// Image reference.
        image: String,
    },
    /// Force a node out of a swarm that is not this cluster's.
    LeaveSwarm {
        /// Node.
        node: String,
    },
    /// Initialise the swarm on the first manager.
    InitSwarm {
        /// Node.
        node: String,
    },
    /// Join a node to the swarm.
    JoinSwarm {
        /// Node.
        node: String,
        /// As manager or worker.
        role: Role,
    },
    /// Set a node's role, availability and labels.
    ConfigureNode {
        /// Node.
        node: String,
    },
    /// Decide how the registry is reached (detect IPVS, or take the forced mode).
    ChooseRegistryMode,
    /// Create or update the registry stack.
    DeployRegistry,
    /// Carry the registry's data volume from the node that has it to the registry's node.
    MoveRegistryData {
        /// The node that holds the data now.
        from: String,
        /// The registry's node.
        to: String,
    },
    /// Start, replace or remove the registry forwarder on a node, as the mode requires.
    Forwarder {
        /// Node.
        node: String,
    },
    /// Make the cluster's CA and the registry's server and client certificates (mutual TLS),
    /// or renew the certificates.
    IssueRegistryCerts,
    /// Put the CA and the client certificate where Docker looks for a registry's certificates
    /// (`/etc/docker/certs.d/localhost:5000/`, `.../127.0.0.1:5000/`).
    NodeCerts {
        /// Node.
        node: String,
    },
    /// Make a new CA and, from it, new server and lab client certificates: the nodes' are
    /// issued again by [`Step::NodeCerts`]. Distribution has no revocation list, so this is how
    /// a key lab gave out stops working.
    RenewRegistryCa {
        /// Why: a node left the cluster, or `--renew-certs`.
        reason: String,
    },
    /// Take the relay and the registry's client certificate off a node that left the cluster
    /// and stays (its machine is not lab's to destroy).
    RevokeNode {
        /// Node.
        node: String,
    },
}

impl Step {
    /// The node the step is about, if any.
    pub fn node(&self) -> Option<&str> {
        match self {
            Step::DestroyNode { node, .. }
            | Step::CreateNode { node, .. }
            | Step::StartNode { node }
            | Step::WaitEngine { node }
            | Step::LoadImage { node, .. }
            | Step::LeaveSwarm { node }
            | Step::InitSwarm { node }
            | Step::JoinSwarm { node, .. }
            | Step::ConfigureNode { node }
            | Step::Forwarder { node }
            | Step::NodeCerts { node }
            | Step::RevokeNode { node }
            | Step::MoveRegistryData { to: node, .. } => Some(node),
            Step::ChooseRegistryMode
            | Step::DeployRegistry
            | Step::IssueRegistryCerts
            | Step::RenewRegistryCa { .. } => None,
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::DestroyNode { node, reason } => write!(f, "destroy node {node} ({reason})"),
            Step::CreateNode { node, role } => write!(f, "create node {node} ({role})"),
            Step::StartNode { node } => write!(f, "start node {node}"),
            Step::WaitEngine { node } => write!(f, "wait for the Docker engine on {node}"),
            Step::LoadImage { node, image } => write!(f, "load image {image} onto {node}"),
            Step::LeaveSwarm { node } => write!(f, "make {node} leave the swarm it is in"),
            Step::InitSwarm { node } => write!(f, "initialise the swarm on {node}"),
            Step::JoinSwarm { node, role } => write!(f, "join {node} to the swarm as {role}"),
            Step::ConfigureNode { node } => write!(f, "set role, availability and labels of {node}"),
            Step::ChooseRegistryMode => write!(f, "choose how the registry is reached (mesh or fallback)"),
            Step::DeployRegistry => write!(f, "deploy stack registry (service registry_registry)"),
            Step::Forwarder { node } => write!(f, "point localhost:5000 on {node} at the registry"),
            Step::MoveRegistryData { from, to } => write!(f, "move registry data from {from} to {to}"),
            Step::IssueRegistryCerts => write!(f, "make the registry's CA and certificates (mutual TLS)"),
            Step::NodeCerts { node } => write!(f, "give {node}'s engine the registry's client certificate"),
            Step::RenewRegistryCa { reason } => {
                write!(f, "make a new CA for the registry and issue every certificate again from it ({reason})")
            }
            Step::RevokeNode { node } => {
                write!(f, "remove the relay and the registry's client certificate from {node} (it left the cluster)")
            }
        }
    }
}
