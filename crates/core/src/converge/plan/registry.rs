//! The registry: where its data is and whether it must move, how it is reached (the mode),
//! its deployment, and what serves `localhost:5000` on every node (forwarders and relays).

use std::collections::BTreeMap;

use super::observed::{effective_mode, Observed};
use super::order::{Done, Plan};
use crate::cluster::{Desired, Step};
use crate::driver::MachineState;
use crate::registry::{is_relay, Forwarder, RegistryObs};
use crate::state::{RegistryMode, RegistryTls};

/// Where the registry's data is, if not on the registry's node.
#[derive(Debug, Default)]
pub(super) struct DataPlace<'a> {
    /// The node that has it: the node its task runs on, or, with no task running and none of
    /// it on the registry's node, any node with a complete copy.
    pub(super) holder: Option<&'a str>,
    /// The holder, when its data can move now (its engine answers, and it is not about to be
    /// made again). It moves before that node may be destroyed.
    pub(super) moving: Option<&'a str>,
}

/// Finds the registry's data, and blocks the plan (without --force) where a repair would lose
/// it: the data on a node whose engine does not answer, or a broken registry node that holds
/// it.
pub(super) fn locate_data<'a>(desired: &'a Desired, observed: &'a Observed, p: &mut Plan) -> DataPlace<'a> {
    let reg_node = desired.topology.registry_node().name.as_str();
    let running_on = observed.registry.as_ref().and_then(|r| r.running_on.as_deref());
    // Whether the registry's node is known to lack the data: it is missing or about to be
    // made again, or its engine answers without the volume. A node that is stopped or not
    // answering may well have it, and then nothing moves.
    let reg_known_empty = match observed.nodes.get(reg_node) {
        None => true,
        Some(o) => matches!(o.machine, MachineState::Broken(_)) || (o.engine && !o.registry_data),
    };
    // Where the data was when an `up` last ended, if that node keeps a whole copy and is not
    // the registry's node.
    let last_copy = observed
        .data_last_on
        .as_deref()
        .filter(|n| *n != reg_node)
        .filter(|n| observed.nodes.get(*n).is_some_and(|o| o.registry_data && o.engine));
    let holder: Option<&str> = match running_on {
        Some(n) if n != reg_node => Some(n),
        // The task runs on the registry's node, yet the data the registry last served is whole
        // on another node: the swarm started the task there, on a volume its engine made,
        // before lab moved the data (an `up` of an older lab, stopped after the labels moved
        // and before the data did). That copy is added to the node's: a union of two
        // registries' storage serves both.
        Some(_) => last_copy,
        None if reg_known_empty => observed
            .nodes
            .iter()
            .find(|(n, o)| n.as_str() != reg_node && o.registry_data && o.engine)
            .map(|(n, _)| n.as_str()),
        None => None,
    };
    let holder_usable = holder.is_some_and(|h| {
        observed.nodes.get(h).is_some_and(|o| o.engine && !matches!(o.machine, MachineState::Broken(_)))
    });
    if let Some(h) = holder.filter(|_| !holder_usable) {
        if !desired.force {
            p.blocked.push(format!(
                "the registry's data is on {h}, whose Docker engine does not answer: moving the registry to \
                 {reg_node} now would lose every image pushed to it"
            ));
        }
    }
    if let Some(MachineState::Broken(why)) = observed.nodes.get(reg_node).map(|o| &o.machine) {
        let holds = running_on == Some(reg_node) || (running_on.is_none() && observed.registry.is_some());
        if holds && !desired.force {
            p.blocked.push(format!(
                "{reg_node} holds the registry's data and is broken ({why}): repairing it means destroying it \
                 and every image pushed to the registry"
            ));
        }
    }
    DataPlace { holder, moving: holder.filter(|_| holder_usable) }
}

/// What the registry's deployment and the forwarders wait for, planned before them.
#[derive(Debug, Default)]
pub(super) struct Prepared<'a> {
    /// The mode `up` ends with, if known now.
    mode: Option<RegistryMode>,
    /// The step that chooses it.
    choose: Option<usize>,
    /// The steps that take a forwarder or relay off a node where it would hold the port the
    /// registry publishes.
    freed: BTreeMap<&'a str, usize>,
    /// The data's move to the registry's node.
    moved: Option<usize>,
}

/// The forwarder the running container on `name` is, unless the node is about to be made.
fn current(observed: &Observed, done: &Done<'_>, name: &str) -> Option<String> {
    if done.fresh.contains(name) {
        None
    } else {
        observed.nodes.get(name).and_then(|o| o.forwarder.clone())
    }
}

/// The mode's choice and the ports freed for the registry, with the data's move planned
/// before ([`move_data`]).
pub(super) fn prepare<'a>(desired: &'a Desired, observed: &Observed, done: &Done<'a>, p: &mut Plan) -> Prepared<'a> {
    let topo = &desired.topology;
    let reg_node = topo.registry_node().name.as_str();
    let first = topo.first_manager().name.as_str();
    let mode = effective_mode(desired, observed);
    // Detection looks inside the first manager: with a command where the driver can run one,
    // else in a container of the registry image, which must be there first.
    let probe_image = if desired.capabilities.exec { None } else { done.image(first) };
    // A swarm made anew has no mode yet (init forgets the recorded one: it was chosen for the
    // swarm that was), so one is chosen after it.
    let choose = (observed.mode.is_none() || mode != observed.mode || done.init.is_some())
        .then(|| p.push(Step::ChooseRegistryMode, [done.engine(first), probe_image, done.init]));
    // In open mode the registry's own node must not keep a forwarder or relay: it would hold
    // the port the registry publishes there ("address already in use"); nor may any node keep
    // a mutual-TLS relay when the open registry publishes through the mesh.
    let holds_port = |name: &str| {
        let cur = current(observed, done, name);
        desired.tls == RegistryTls::Open
            && cur.is_some()
            && (name == reg_node || mode == Some(RegistryMode::Mesh) && cur.is_some_and(|c| is_relay(&c)))
    };
    let freed: BTreeMap<&str, usize> = topo
        .nodes
        .iter()
        .map(|n| n.name.as_str())
        .filter(|name| holds_port(name))
        .map(|name| (name, p.push(Step::Forwarder { node: name.into() }, [done.engine(name)])))
        .collect();
    Prepared { mode, choose, freed, moved: done.moved }
}

/// The data's move to the registry's node, if it must move (with the destruction of its old
/// node if that leaves the topology). Planned before the nodes' labels are set, which wait
/// for it ([`super::swarm::configure`]).
pub(super) fn move_data(desired: &Desired, data: &DataPlace<'_>, done: &mut Done<'_>, p: &mut Plan) {
    let topo = &desired.topology;
    let reg_node = topo.registry_node().name.as_str();
    done.moved = data.moving.map(|from| {
        let m = p.push(
            Step::MoveRegistryData { from: from.into(), to: reg_node.into() },
            [done.engine(reg_node), done.image(reg_node), done.last_manager],
        );
        if topo.node(from).is_none() && desired.capabilities.destroy {
            p.push(Step::DestroyNode { node: from.into(), reason: "not in the topology".into() }, [Some(m)]);
        }
        m
    });
    done.moved_from = data.moving.map(str::to_string);
}

/// The registry deployed, unless it runs as wanted already. A registry counts as deployed
/// only when its task runs on the registry's node: one that does not answer is never
/// "nothing to do".
pub(super) fn deploy(
    desired: &Desired,
    observed: &Observed,
    done: &Done<'_>,
    prepared: &Prepared<'_>,
    issue: Option<usize>,
    p: &mut Plan,
) -> Option<usize> {
    let reg_node = desired.topology.registry_node().name.as_str();
    let certs = super::tls::current(desired, observed);
    let tls_ok = |r: &RegistryObs| match desired.tls {
        RegistryTls::Open => r.tls.is_none(),
        RegistryTls::Mutual => r.tls.is_some() && r.tls.as_deref() == certs.map(|c| c.registry.as_str()),
    };
    let registry_ok = done.init.is_none()
        && prepared.moved.is_none()
        && observed.registry.as_ref().is_some_and(|r| {
            r.image == desired.registry_image
                && Some(r.mode) == prepared.mode
                && r.spec_matches
                && tls_ok(r)
                && r.running_on.as_deref() == Some(reg_node)
        });
    if registry_ok {
        return None;
    }
    // Not after the pinning label: the task waits for it in the swarm's scheduler, which
    // starts it the moment the registry's node is labelled. The image must be there first, or
    // the node would try to pull it and back off. When the data moved, though, the old node
    // may still carry the label: wait until it has lost it.
    let mut after = vec![prepared.choose, done.init, done.image(reg_node), done.last_manager, prepared.moved, issue];
    after.extend(prepared.freed.values().map(|&f| Some(f)));
    if prepared.moved.is_some() {
        after.extend(done.configured.values().map(|&c| Some(c)));
    }
    Some(p.push(Step::DeployRegistry, after))
}

/// Every node given the forwarder (or relay, or nothing) the mode wants, relaying to the
/// registry's node at its address (unknown while that node is being made).
pub(super) fn forwarders(
    desired: &Desired,
    observed: &Observed,
    done: &Done<'_>,
    prepared: &Prepared<'_>,
    node_certs: &BTreeMap<&str, usize>,
    deploy: Option<usize>,
    p: &mut Plan,
) {
    let reg_node = desired.topology.registry_node().name.as_str();
    let target =
        if done.fresh.contains(reg_node) { None } else { observed.nodes.get(reg_node).and_then(|o| o.address.clone()) };
    for node in &desired.topology.nodes {
        let name = node.name.as_str();
        let want = prepared.mode.map(|m| Forwarder::wanted(desired.tls, m, name == reg_node));
        let cur = current(observed, done, name);
        let ok = match want {
            None => false,
            Some(Forwarder::None) => cur.is_none(),
            Some(kind) => target.as_deref().is_some_and(|t| cur == kind.label(t)),
        };
        if ok || prepared.freed.contains_key(name) {
            continue;
        }
        // Known before the mode is: mutual TLS means a relay on every node.
        let relay = desired.tls == RegistryTls::Mutual;
        p.push(
            Step::Forwarder { node: name.into() },
            [
                done.engine(name),
                done.image(name),
                done.engine(reg_node),
                prepared.choose,
                // The registry may still publish the port on this node until it moves.
                prepared.moved,
                // A relay presents the node's certificates, and takes port 5000 on the
                // node's loopback, which a registry deployed before in open mode holds.
                if relay { node_certs.get(name).copied() } else { None },
                if relay { deploy } else { None },
            ],
        );
    }
}
