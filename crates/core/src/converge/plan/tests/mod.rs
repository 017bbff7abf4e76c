//! The planner against a model of what each step does ([`model`]): for any observed state the
//! plan converges, and a converged cluster plans nothing ([`converge`]). The other files hold
//! the cases of one area each: mutual TLS ([`mutual_tls`]), the registry's node and data
//! ([`registry_data`]), and nodes in another swarm ([`foreign`]). Here: the desired clusters and
//! converged observations they start from.

use std::collections::BTreeMap;

use super::*;
use crate::cluster::{ModeRequest, Step};
use crate::driver::Capabilities;
use crate::driver::MachineState;
use crate::registry::Forwarder;
use crate::registry::RegistryObs;
use crate::state::{RegistryMode, RegistryTls};
use crate::topology::Role;
use crate::topology::{ClusterName, Topology, REGISTRY_NODE_LABEL};

mod converge;
mod foreign;
mod model;
mod mutual_tls;
mod registry_data;

pub(crate) use model::apply;
use model::{addr, IMAGE, SWARM};

/// The desired cluster of `managers` and `workers`, its registry open, its driver able to do
/// everything.
pub(crate) fn desired(managers: u32, workers: u32, mode: ModeRequest) -> Desired {
    let (topology, _) = Topology::new(ClusterName::parse("t", "t").unwrap(), managers, workers).unwrap();
    Desired {
        topology,
        registry_image: IMAGE.into(),
        mode,
        tls: RegistryTls::Open,
        capabilities: Capabilities::all(),
        force: false,
        renew_certs: false,
    }
}

/// Plans from `o` to `d` and applies the plan to `o` in its order, checking first that no step
/// depends on a later one; returns the plan.
fn execute(d: &Desired, o: &mut Observed) -> Plan {
    let p = plan(d, o);
    for (i, s) in p.steps.iter().enumerate() {
        assert!(s.after.iter().all(|&a| a < i), "step {i} depends on a later step: {p:#?}");
    }
    // Execute in plan order; any order consistent with `after` gives the same result
    // because steps on different nodes touch different parts of the state.
    for s in &p.steps {
        apply(d, o, &s.step);
    }
    p
}

/// A converged 1+2 cluster whose registry runs on worker1, as `up` leaves it.
fn converged(d: &Desired) -> Observed {
    let mut o = Observed::default();
    execute(d, &mut o);
    assert!(plan(d, &o).is_empty());
    o
}
