//! The planner: a pure function from the desired topology and the observed state of a
//! cluster to an ordered list of steps, each with the steps it depends on.
//!
//! It reads nothing and changes nothing, which is what lets `lab plan` print exactly what
//! `lab up` will do, and lets the tests below check, over thousands of observed states, that
//! executing the plan reaches the desired state and that a converged cluster plans nothing.
//! The executor ([`crate::converge::exec`]) runs steps whose dependencies are done concurrently.
//!
//! [`plan`] is a composition, area by area, in the order the steps appear: where the registry's
//! data is ([`registry::locate_data`]), the machines ([`nodes`]), the swarm ([`swarm`]), the
//! registry ([`registry`]) and mutual TLS ([`tls`]). Each area adds its steps to the [`Plan`]
//! and records in [`Done`] which step each node's engine, image, membership and labels wait
//! for, so later areas can depend on them.

use std::collections::{BTreeMap, BTreeSet};

mod nodes;
mod registry;
mod swarm;
mod tls;

use serde::Serialize;

use crate::cluster::{Desired, ModeRequest, Step};
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
    /// What every node's engine is to have.
    pub nodes: String,
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
}

/// A step and the indices of the steps it waits for (always earlier in the plan).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedStep {
    /// The step.
    #[serde(flatten)]
    pub step: Step,
    /// Indices into [`Plan::steps`] of the steps that must finish first.
    pub after: Vec<usize>,
}

/// An ordered list of steps.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// Steps in an order that respects their dependencies.
    pub steps: Vec<PlannedStep>,
    /// Why the plan must not run without `--force`: each names what would be lost.
    pub blocked: Vec<String>,
}

impl Plan {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty() && self.blocked.is_empty()
    }

    pub(super) fn push(&mut self, step: Step, after: impl IntoIterator<Item = Option<usize>>) -> usize {
        let mut after: Vec<usize> = after.into_iter().flatten().collect();
        after.sort_unstable();
        after.dedup();
        self.steps.push(PlannedStep { step, after });
        self.steps.len() - 1
    }
}

/// The registry mode `up` will end with, if it can be known without looking at the nodes.
pub fn effective_mode(desired: &Desired, observed: &Observed) -> Option<RegistryMode> {
    match desired.mode {
        ModeRequest::Force(m) => Some(m),
        ModeRequest::Auto => observed.mode,
    }
}

/// Which step each node's readiness waits for, as the areas plan it: the index of the step
/// after which its engine answers, the registry image is on it, it is in the swarm, and its
/// role and labels are set (absent: nothing to wait for). `fresh` nodes are about to be made
/// (again), so nothing observed on them counts.
#[derive(Debug, Default)]
pub(super) struct Done<'a> {
    pub(super) fresh: BTreeSet<&'a str>,
    pub(super) engine: BTreeMap<&'a str, usize>,
    pub(super) image: BTreeMap<&'a str, usize>,
    pub(super) joined: BTreeMap<&'a str, usize>,
    pub(super) configured: BTreeMap<&'a str, usize>,
    /// The swarm's initialisation, if it is made anew.
    pub(super) init: Option<usize>,
    /// The last manager's join (managers join one after another), or the init.
    pub(super) last_manager: Option<usize>,
}

impl Done<'_> {
    pub(super) fn engine(&self, node: &str) -> Option<usize> {
        self.engine.get(node).copied()
    }
    pub(super) fn image(&self, node: &str) -> Option<usize> {
        self.image.get(node).copied()
    }
}

/// Plans the steps from `observed` to `desired`: each area in turn, in the order its steps
/// run first.
pub fn plan(desired: &Desired, observed: &Observed) -> Plan {
    let mut p = Plan::default();
    let data = registry::locate_data(desired, observed, &mut p);
    nodes::drop_strays(desired, observed, &data, &mut p);
    let mut done = nodes::machines(desired, observed, &mut p);
    let reg_node = desired.topology.registry_node().name.as_str();
    nodes::load_images(desired, observed, &mut done, &mut p, |n| n == reg_node);
    swarm::join(desired, observed, &mut done, &mut p);
    nodes::load_images(desired, observed, &mut done, &mut p, |n| n != reg_node);
    swarm::configure(desired, observed, &mut done, &mut p);
    let prepared = registry::prepare(desired, observed, &done, &data, &mut p);
    let issue = tls::issue(desired, observed, &mut p);
    let deploy = registry::deploy(desired, observed, &done, &prepared, issue, &mut p);
    let node_certs = tls::node_certs(desired, observed, &done, issue, &mut p);
    registry::forwarders(desired, observed, &done, &prepared, &node_certs, deploy, &mut p);
    p
}

#[cfg(test)]
pub(crate) mod tests;
