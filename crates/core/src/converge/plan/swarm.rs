//! The swarm: nodes of other swarms refused or made to leave, the swarm initialised on the
//! first manager when there is none, every node that is not a member joined (managers one
//! after another, workers at once), and every node's role, availability and labels set.

use std::collections::BTreeMap;

use super::observed::{Membership, Observed};
use super::order::{Done, Plan};
use crate::cluster::{Desired, Step};
use crate::topology::Role;

/// What observation says of the nodes' membership, with the nodes about to be made counted
/// as nothing yet.
struct Members<'a> {
    observed: &'a Observed,
    fresh: &'a std::collections::BTreeSet<&'a str>,
}

impl Members<'_> {
    /// Whether `name` is a member of the cluster's swarm, and as a manager.
    fn member(&self, name: &str) -> Option<bool> {
        if self.fresh.contains(name) {
            return None;
        }
        match (&self.observed.nodes.get(name)?.swarm, self.observed.swarm_id.as_deref()) {
            (Membership::Member { swarm_id: s, manager }, Some(id)) if s == id => Some(*manager),
            _ => None,
        }
    }

    /// In another of this cluster's swarms: left without asking.
    fn stale(&self, name: &str) -> bool {
        !self.fresh.contains(name)
            && matches!(
                (self.observed.nodes.get(name).map(|o| &o.swarm), self.observed.swarm_id.as_deref()),
                (Some(Membership::Member { swarm_id: s, .. }), id) if Some(s.as_str()) != id
            )
    }

    /// In a foreign swarm: left only with --force, and never while this cluster's managers
    /// could not say which nodes are theirs.
    fn foreign(&self, name: &str) -> Option<&str> {
        match self.observed.nodes.get(name).map(|o| &o.swarm) {
            Some(Membership::Foreign { swarm }) if !self.fresh.contains(name) => Some(swarm.as_str()),
            _ => None,
        }
    }

    /// The step that makes `name` leave the swarm it must not stay in, if any.
    fn leave(&self, p: &mut Plan, name: &str, engine: Option<usize>) -> Option<usize> {
        let go = !self.observed.managers_unchecked && (self.stale(name) || self.foreign(name).is_some());
        go.then(|| p.push(Step::LeaveSwarm { node: name.into() }, [engine]))
    }
}

/// Refuses foreign nodes (without --force, or with it while the managers are unchecked),
/// initialises the swarm if it must be made anew, and joins every node that is not a member.
///
/// Managers join one after another: each join is a Raft membership change, and a change must
/// be committed by a quorum of the managers so far, the new one included once it is added;
/// workers are not in Raft and join at once.
pub(super) fn join<'a>(desired: &'a Desired, observed: &Observed, done: &mut Done<'a>, p: &mut Plan) {
    let topo = &desired.topology;
    let fresh = done.fresh.clone();
    let m = Members { observed, fresh: &fresh };
    for node in &topo.nodes {
        let name = node.name.as_str();
        let Some(swarm) = m.foreign(name) else { continue };
        if !desired.force {
            p.blocked.push(format!(
                "{name} is already in another swarm ({swarm}); lab will not take it over: make it leave that swarm \
                 (`docker swarm leave --force` on {name})"
            ));
        } else if observed.managers_unchecked {
            p.blocked.push(format!(
                "{name} is already in another swarm ({swarm}); lab could not check this cluster's managers, so \
                 --force does not make it leave: bring them back, or make it leave that swarm (`docker swarm \
                 leave --force` on {name})"
            ));
        }
    }
    let first = topo.first_manager().name.as_str();
    // Without a swarm, the first manager initialises one; `member` is false for everyone.
    let no_swarm = observed.swarm_id.is_none()
        || m.member(first).is_none() && !topo.nodes.iter().any(|n| m.member(&n.name) == Some(true));
    if no_swarm {
        let l = m.leave(p, first, done.engine(first));
        let i = p.push(Step::InitSwarm { node: first.into() }, [done.engine(first), l]);
        done.init = Some(i);
        done.joined.insert(first, i);
    }
    let swarm_fresh = done.init.is_some();
    done.last_manager = done.init;
    for node in topo.nodes.iter().filter(|n| n.name != first || done.init.is_none()) {
        let name = node.name.as_str();
        if !swarm_fresh && m.member(name).is_some() {
            continue;
        }
        let engine = done.engine(name);
        let l = m.leave(p, name, engine);
        let chain = if node.role == Role::Manager { done.last_manager } else { None };
        let j = p.push(Step::JoinSwarm { node: name.into(), role: node.role }, [engine, done.init, chain, l]);
        if node.role == Role::Manager {
            done.last_manager = Some(j);
        }
        done.joined.insert(name, j);
    }
}

/// Every node whose role, availability or labels are not what the topology wants (or that
/// just joined) is configured, through a manager, once the managers have joined.
pub(super) fn configure<'a>(desired: &'a Desired, observed: &Observed, done: &mut Done<'a>, p: &mut Plan) {
    let topo = &desired.topology;
    let fresh = done.fresh.clone();
    let m = Members { observed, fresh: &fresh };
    let drain = topo.drain_managers();
    let mut configured: BTreeMap<&'a str, usize> = BTreeMap::new();
    for node in &topo.nodes {
        let name = node.name.as_str();
        let ok = !done.joined.contains_key(name)
            && observed.nodes.get(name).is_some_and(|o| {
                m.member(name) == Some(node.role == Role::Manager)
                    && o.labels == topo.swarm_labels(node)
                    && o.drained == (drain && node.role == Role::Manager)
            });
        if !ok {
            // The registry's pinning label moves its task: on the registry's node and on the
            // node its data leaves, only once the data has moved, or the swarm would start
            // the task on a volume the engine makes empty.
            let moving = name == topo.registry_node().name || done.moved_from.as_deref() == Some(name);
            let moved = done.moved.filter(|_| moving);
            let c = p.push(
                Step::ConfigureNode { node: name.into() },
                [done.joined.get(name).copied(), done.last_manager, moved],
            );
            configured.insert(name, c);
        }
    }
    done.configured = configured;
}
