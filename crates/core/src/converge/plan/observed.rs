//! The planner's input: the cluster as observed (machines, engines, swarm membership, the
//! registry, the certificates), as [`crate::converge::observe`] finds it.

use std::collections::{BTreeMap, BTreeSet};

use crate::cluster::{Desired, ModeRequest};
use crate::driver::MachineState;
use crate::registry::RegistryObs;
use crate::state::RegistryMode;
use crate::topology::Role;

/// A node's swarm membership as its own engine reports it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Membership {
    /// The engine did not answer, so lab cannot tell.
    #[default]
    Unknown,
    /// Not in any swarm.
    None,
    /// In a swarm of this cluster's: the one in [`Observed::swarm_id`], or, when the ID differs,
    /// one the cluster was in before (left behind when its managers made a new one), which the
    /// node leaves to join the current one.
    Member {
        /// Swarm (cluster) ID.
        swarm_id: String,
        /// Whether it is a manager.
        manager: bool,
    },
    /// In a swarm that is not this cluster's: neither the one lab recorded nor one whose nodes
    /// carry this cluster's `lab.cluster` label. Lab makes it leave only with `--force`.
    Foreign {
        /// The swarm, as lab can name it: `swarm ID`, or `the swarm managed at ADDRESS`.
        swarm: String,
    },
}

/// One machine as observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeObs {
    /// The role it was made for.
    pub role: Role,
    /// The machine's state.
    pub machine: MachineState,
    /// Its advertise address, when known.
    pub address: Option<String>,
    /// Whether its engine answered.
    pub engine: bool,
    /// Swarm membership.
    pub swarm: Membership,
    /// Images present on its engine (by the reference lab asked for).
    pub images: BTreeSet<String>,
    /// Its swarm node labels, as a manager sees them.
    pub labels: BTreeMap<String, String>,
    /// Whether its swarm availability is `drain`.
    pub drained: bool,
    /// The address the registry forwarder on it points at, if one is running.
    pub forwarder: Option<String>,
    /// Whether its engine has a complete copy of the registry's data: the volume, not under
    /// the marker of a move that never finished ([`crate::registry::Data`]).
    pub registry_data: bool,
    /// The fingerprint of lab's registry certificates in its engine's `/etc/docker/certs.d`
    /// ([`crate::tls::Material::node_fingerprint`]), if it has a complete set. Looked at only
    /// in mutual mode.
    pub registry_certs: Option<String>,
}

impl NodeObs {
    /// A machine that was just found with nothing known about its engine.
    pub fn new(role: Role, machine: MachineState) -> Self {
        NodeObs {
            role,
            machine,
            address: None,
            engine: false,
            swarm: Membership::Unknown,
            images: BTreeSet::new(),
            labels: BTreeMap::new(),
            drained: false,
            forwarder: None,
            registry_data: false,
            registry_certs: None,
        }
    }
}

/// The cluster's certificates in lab's state directory, as observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertsObs {
    /// What the registry is to be deployed with.
    pub registry: String,
    /// What each node's engine is to have, by node: the fingerprint of the client certificate
    /// lab issued it with the current certificates. A node named here that is not in the
    /// topology any more holds a key the registry still trusts, so the CA is made anew.
    pub nodes: BTreeMap<String, String>,
    /// Whether they are due for renewal.
    pub due: bool,
}

/// The cluster as observed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Observed {
    /// Every machine the driver reports, by node name.
    pub nodes: BTreeMap<String, NodeObs>,
    /// The cluster's swarm ID, as a member manager reports it.
    pub swarm_id: Option<String>,
    /// The registry service, if deployed.
    pub registry: Option<RegistryObs>,
    /// The registry mode recorded in state.
    pub mode: Option<RegistryMode>,
    /// Some manager of this cluster exists but could not say which nodes are in its swarm
    /// (its engine did not answer, or its node list could not be read). Then no node is made
    /// to leave a swarm, whatever `--force` says: it may be this cluster's own.
    pub managers_unchecked: bool,
    /// The registry's certificates lab keeps, if it made them.
    pub certs: Option<CertsObs>,
    /// The node whose volume held the registry's data when an `up` last ended with the
    /// registry answering, as recorded in state.
    pub data_last_on: Option<String>,
}

/// The registry mode `up` will end with, if it can be known without looking at the nodes.
pub fn effective_mode(desired: &Desired, observed: &Observed) -> Option<RegistryMode> {
    match desired.mode {
        ModeRequest::Force(m) => Some(m),
        ModeRequest::Auto => observed.mode,
    }
}
