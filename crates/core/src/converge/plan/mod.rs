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

mod nodes;
mod observed;
mod order;
mod registry;
mod swarm;
mod tls;

pub use observed::{effective_mode, CertsObs, Membership, NodeObs, Observed};
pub use order::{Plan, PlannedStep};

use crate::cluster::Desired;

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
    registry::move_data(desired, &data, &mut done, &mut p);
    swarm::configure(desired, observed, &mut done, &mut p);
    let prepared = registry::prepare(desired, observed, &done, &mut p);
    let issue = tls::issue(desired, observed, &mut p);
    let deploy = registry::deploy(desired, observed, &done, &prepared, issue, &mut p);
    let node_certs = tls::node_certs(desired, observed, &done, issue, &mut p);
    registry::forwarders(desired, observed, &done, &prepared, &node_certs, deploy, &mut p);
    p
}

#[cfg(test)]
pub(crate) mod tests;
