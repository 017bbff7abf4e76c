//! The machines: strays destroyed, missing ones made, stopped ones started, broken ones made
//! again, each engine waited for, and the registry image loaded where it is missing.

use super::observed::{NodeObs, Observed};
use super::order::{Done, Plan};
use super::registry::DataPlace;
use crate::cluster::{Desired, Step};
use crate::driver::MachineState;

/// Machines that are not wanted any more go first, so their names and addresses are free;
/// the one holding the registry's data goes last, after the data has moved (planned with the
/// move). One that holds, or may hold, the only complete copy of it goes only once the
/// registry's node has one.
pub(super) fn drop_strays(desired: &Desired, observed: &Observed, data: &DataPlace<'_>, p: &mut Plan) {
    let topo = &desired.topology;
    let reg_node = topo.registry_node().name.as_str();
    for (name, o) in observed.nodes.iter().filter(|(n, _)| topo.node(n).is_none()) {
        if !desired.capabilities.destroy || Some(name.as_str()) == data.moving {
            continue;
        }
        // The holder of the data that cannot move is blocked for already.
        let why = if Some(name.as_str()) == data.holder { None } else { only_copy(observed, reg_node, o) };
        match why {
            Some(why) if !desired.force => p.blocked.push(format!(
                "{name} is not in the topology any more, but {why}: destroying it could lose every image pushed \
                 to the registry"
            )),
            _ => {
                p.push(Step::DestroyNode { node: name.clone(), reason: "not in the topology".into() }, []);
            }
        }
    }
}

/// Why a node observed as `o`, and leaving the topology, may hold the only complete copy of
/// the registry's data, if it may: it has a copy, or its engine does not answer, while the
/// registry's node is not known to hold one. `None` when nothing can be lost: the registry's
/// node has the data, no registry was ever deployed, or the node answers without a copy.
fn only_copy(observed: &Observed, reg_node: &str, o: &NodeObs) -> Option<String> {
    let reg_has = observed
        .nodes
        .get(reg_node)
        .is_some_and(|r| r.engine && r.registry_data && !matches!(r.machine, MachineState::Broken(_)));
    let never_deployed = observed.registry.is_none() && observed.mode.is_none();
    if reg_has || never_deployed || (o.engine && !o.registry_data) {
        return None;
    }
    let reg_state = match observed.nodes.get(reg_node) {
        Some(r) if r.engine => format!("{reg_node} has no complete copy of it"),
        Some(_) => format!("{reg_node}'s Docker engine does not answer, so lab cannot tell whether it has one"),
        None => format!("{reg_node} does not exist yet"),
    };
    Some(if o.engine {
        format!("it holds the registry's data and {reg_state}")
    } else {
        format!("its Docker engine does not answer, so it may hold the registry's data, and {reg_state}")
    })
}

/// Every node of the topology made, started or made again as its machine needs, and its
/// engine waited for where it did not answer.
pub(super) fn machines<'a>(desired: &'a Desired, observed: &Observed, p: &mut Plan) -> Done<'a> {
    let mut done = Done::default();
    for node in &desired.topology.nodes {
        let name = node.name.as_str();
        let obs = observed.nodes.get(name);
        let mut last = None;
        match obs.map(|o| &o.machine) {
            None => {
                last = Some(p.push(Step::CreateNode { node: name.into(), role: node.role }, []));
                done.fresh.insert(name);
            }
            Some(MachineState::Broken(why)) => {
                let d = p.push(Step::DestroyNode { node: name.into(), reason: format!("broken: {why}") }, []);
                last = Some(p.push(Step::CreateNode { node: name.into(), role: node.role }, [Some(d)]));
                done.fresh.insert(name);
            }
            Some(MachineState::Stopped) => {
                last = Some(p.push(Step::StartNode { node: name.into() }, []));
            }
            Some(MachineState::Running) => {}
        }
        if last.is_some() || !obs.is_some_and(|o| o.engine) {
            let w = p.push(Step::WaitEngine { node: name.into() }, [last]);
            done.engine.insert(name, w);
        }
    }
    done
}

/// The registry image (the registry itself, the forwarder and the reachability probe all run
/// it) loaded on the nodes `which` picks that lack it. The registry's node first: its image is
/// on the critical path (the registry task waits for it). The others only feed forwarders and
/// are loaded once that node has joined, so they do not compete with the joins for the
/// machine.
pub(super) fn load_images<'a>(
    desired: &'a Desired,
    observed: &Observed,
    done: &mut Done<'a>,
    p: &mut Plan,
    which: impl Fn(&str) -> bool,
) {
    let reg_node = desired.topology.registry_node().name.as_str();
    for node in desired.topology.nodes.iter().filter(|n| which(&n.name)) {
        let name = node.name.as_str();
        let has = observed.nodes.get(name).is_some_and(|o| o.engine && o.images.contains(&desired.registry_image));
        if done.fresh.contains(name) || !has {
            let after_reg = if name == reg_node { None } else { done.joined.get(reg_node).copied() };
            let i = p.push(
                Step::LoadImage { node: name.into(), image: desired.registry_image.clone() },
                [done.engine(name), after_reg],
            );
            done.image.insert(name, i);
        }
    }
}
