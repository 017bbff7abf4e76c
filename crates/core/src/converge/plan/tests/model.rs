//! A model of what each step does to the observed cluster, used to check that executing a
//! plan converges: one function per area, as the planner is split. Each asserts what the
//! real step needs before it can run (an engine, an image, a certificate), so a plan that
//! orders steps wrongly fails here.

use std::collections::BTreeMap;

use crate::cluster::{Desired, Step};
use crate::converge::plan::{effective_mode, CertsObs, Membership, NodeObs, Observed};
use crate::driver::MachineState;
use crate::registry::{is_relay, Forwarder, RegistryObs};
use crate::state::{RegistryMode, RegistryTls};
use crate::topology::Role;

/// The registry's image in the model.
pub(super) const IMAGE: &str = "registry:2";
/// The model's first swarm.
pub(super) const SWARM: &str = "swarm-a";

/// The address a node's engine answers on in the model.
pub(super) fn addr(name: &str) -> String {
    format!("10.0.0.{}", name.len() + name.bytes().last().unwrap_or(0) as usize % 100)
}

/// What `step` does to `o`.
pub(crate) fn apply(d: &Desired, o: &mut Observed, step: &Step) {
    match step {
        Step::DestroyNode { .. }
        | Step::CreateNode { .. }
        | Step::StartNode { .. }
        | Step::WaitEngine { .. }
        | Step::LoadImage { .. } => machines(o, step),
        Step::LeaveSwarm { .. } | Step::InitSwarm { .. } | Step::JoinSwarm { .. } | Step::ConfigureNode { .. } => {
            swarm(d, o, step)
        }
        Step::ChooseRegistryMode | Step::MoveRegistryData { .. } => registry(d, o, step),
        Step::DeployRegistry => deploy_registry(d, o),
        Step::Forwarder { node } => forwarder(d, o, node),
        Step::IssueRegistryCerts | Step::RenewRegistryCa { .. } | Step::NodeCerts { .. } | Step::RevokeNode { .. } => {
            tls(d, o, step)
        }
    }
}

/// Machines: made, started, destroyed; their engines answering; images loaded.
fn machines(o: &mut Observed, step: &Step) {
    match step {
        Step::DestroyNode { node, .. } => {
            o.nodes.remove(node);
            if o.registry.as_ref().is_some_and(|r| r.running_on.as_deref() == Some(node)) {
                o.registry.as_mut().unwrap().running_on = None;
            }
        }
        Step::CreateNode { node, role } => {
            assert!(!o.nodes.contains_key(node), "create of existing {node}");
            o.nodes.insert(node.clone(), NodeObs::new(*role, MachineState::Running));
        }
        Step::StartNode { node } => {
            let n = o.nodes.get_mut(node).unwrap();
            assert_eq!(n.machine, MachineState::Stopped);
            n.machine = MachineState::Running;
        }
        Step::WaitEngine { node } => {
            let n = o.nodes.get_mut(node).unwrap();
            assert_eq!(n.machine, MachineState::Running, "wait on a machine that is not running");
            n.engine = true;
            n.address = Some(addr(node));
            if n.swarm == Membership::Unknown {
                n.swarm = Membership::None;
            }
        }
        Step::LoadImage { node, image } => {
            let n = o.nodes.get_mut(node).unwrap();
            assert!(n.engine, "load on {node} before its engine");
            n.images.insert(image.clone());
        }
        _ => unreachable!("{step} is not a machine's step"),
    }
}

/// The swarm: leaving, initialising, joining, and each node's role and labels.
fn swarm(d: &Desired, o: &mut Observed, step: &Step) {
    let topo = &d.topology;
    match step {
        Step::LeaveSwarm { node } => {
            assert!(!o.managers_unchecked, "{node} made to leave while the managers were not checked");
            let n = o.nodes.get_mut(node).unwrap();
            assert!(n.engine);
            if matches!(n.swarm, Membership::Foreign { .. }) {
                assert!(d.force, "{node} made to leave a foreign swarm without --force");
            }
            n.swarm = Membership::None;
        }
        Step::InitSwarm { node } => {
            let n = o.nodes.get_mut(node).unwrap();
            assert!(n.engine);
            assert_eq!(n.swarm, Membership::None, "init on {node} in a swarm");
            // A new swarm: every old membership is void.
            let id = format!("{SWARM}-{}", o.swarm_id.as_deref().map_or(0, |s| s.len()));
            n.swarm = Membership::Member { swarm_id: id.clone(), manager: true };
            n.labels.clear();
            n.drained = false;
            o.swarm_id = Some(id);
            o.registry = None;
            // As the runtime does: the mode is chosen for a swarm, and this one is new.
            o.mode = None;
        }
        Step::JoinSwarm { node, role } => {
            let id = o.swarm_id.clone().expect("join before init");
            let n = o.nodes.get_mut(node).unwrap();
            assert!(n.engine);
            assert!(
                !matches!(n.swarm, Membership::Member { ref swarm_id, .. } if *swarm_id != id),
                "join while in another swarm"
            );
            assert!(!matches!(n.swarm, Membership::Foreign { .. }), "join while in a foreign swarm");
            n.swarm = Membership::Member { swarm_id: id, manager: *role == Role::Manager };
            n.labels.clear();
            n.drained = false;
        }
        Step::ConfigureNode { node } => {
            let spec = topo.node(node).unwrap();
            let id = o.swarm_id.clone().unwrap();
            let n = o.nodes.get_mut(node).unwrap();
            assert!(
                matches!(n.swarm, Membership::Member { ref swarm_id, .. } if *swarm_id == id),
                "configure non-member {node}"
            );
            n.swarm = Membership::Member { swarm_id: id, manager: spec.role == Role::Manager };
            n.labels = topo.swarm_labels(spec);
            n.drained = topo.drain_managers() && spec.role == Role::Manager;
        }
        _ => unreachable!("{step} is not a swarm step"),
    }
}

/// The registry's mode, and its data moving between nodes.
fn registry(d: &Desired, o: &mut Observed, step: &Step) {
    let topo = &d.topology;
    let mode = effective_mode(d, o);
    match step {
        Step::ChooseRegistryMode => {
            let first = &o.nodes[&topo.first_manager().name];
            assert!(first.engine, "probe needs the manager's engine");
            assert!(d.capabilities.exec || first.images.contains(IMAGE), "a probe container needs the image");
            o.mode = Some(mode.unwrap_or(RegistryMode::Fallback));
        }
        Step::MoveRegistryData { from, to } => {
            assert!(o.nodes[from].engine && o.nodes[from].registry_data, "move from {from} without data");
            let t = o.nodes.get_mut(to).unwrap();
            assert!(t.engine && t.images.contains(IMAGE), "move to {to} before its engine and image");
            t.registry_data = true;
            o.nodes.get_mut(from).unwrap().registry_data = false;
            if let Some(r) = o.registry.as_mut() {
                r.running_on = None;
                r.spec_matches = false;
            }
        }
        _ => unreachable!("{step} is not a registry step"),
    }
}

/// The registry deployed on its node, with its data there and, in mutual TLS, its certificates.
fn deploy_registry(d: &Desired, o: &mut Observed) {
    let topo = &d.topology;
    let reg = &o.nodes[&topo.registry_node().name];
    assert!(o.swarm_id.is_some());
    assert!(reg.images.contains(IMAGE), "deploy before the image is on the registry node");
    let mode = o.mode.expect("deploy before the mode is chosen");
    let reg = topo.registry_node().name.clone();
    if d.tls == RegistryTls::Open {
        // The open registry publishes port 5000 on its node, or on every node
        // through the mesh, where a relay must have gone first.
        assert!(o.nodes[&reg].forwarder.is_none(), "deploy while a forwarder holds the port on {reg}");
        if mode == RegistryMode::Mesh {
            for (name, n) in &o.nodes {
                assert!(!n.forwarder.as_deref().is_some_and(is_relay), "deploy while {name} has a relay");
            }
        }
    }
    o.nodes.get_mut(&reg).unwrap().registry_data = true;
    let tls = match d.tls {
        RegistryTls::Open => None,
        RegistryTls::Mutual => {
            let c = o.certs.as_ref().expect("deploy in mutual mode before the certificates");
            assert!(!c.due, "deploy with certificates due for renewal");
            Some(c.registry.clone())
        }
    };
    o.registry = Some(RegistryObs {
        image: IMAGE.into(),
        mode,
        spec_matches: true,
        running_on: Some(reg),
        tls,
        read_only: false,
    });
}

/// A node's forwarder or relay to the registry.
fn forwarder(d: &Desired, o: &mut Observed, node: &str) {
    let topo = &d.topology;
    let mode = o.mode.expect("forwarder before the mode is chosen");
    let reg = topo.registry_node().name.clone();
    let target = o.nodes[&reg].address.clone().expect("registry node address");
    let kind = Forwarder::wanted(d.tls, mode, *node == reg);
    if kind == Forwarder::Relay {
        let c = o.certs.as_ref().expect("a relay before the certificates");
        assert_eq!(
            o.nodes[node].registry_certs.as_ref(),
            c.nodes.get(node),
            "a relay on {node} before its certificates"
        );
        assert!(c.nodes.contains_key(node), "a relay on {node} before its certificates");
        assert!(
            o.registry.as_ref().is_some_and(|r| r.tls.as_ref() == Some(&c.registry)),
            "a relay on {node} before the registry serves TLS on its own port"
        );
    }
    let n = o.nodes.get_mut(node).unwrap();
    assert!(n.engine && (n.images.contains(IMAGE) || *node == reg || kind == Forwarder::None));
    n.forwarder = kind.label(&target);
}

/// Mutual TLS: the CA and the registry's certificates, each node's, and a departed node's revoked.
fn tls(d: &Desired, o: &mut Observed, step: &Step) {
    let topo = &d.topology;
    match step {
        Step::IssueRegistryCerts | Step::RenewRegistryCa { .. } => {
            // New certificates (and, for a renewal, a new CA): no node has been issued one
            // from them yet.
            let old = o.certs.as_ref().map_or("r".to_string(), |c| c.registry.clone());
            o.certs = Some(CertsObs { registry: format!("{old}+"), nodes: BTreeMap::new(), due: false });
        }
        Step::NodeCerts { node } => {
            assert!(topo.node(node).is_some(), "a certificate issued to {node}, which is not in the topology");
            let c = o.certs.as_mut().expect("node certificates before they are made");
            let fp = format!("{}-{node}", c.registry);
            c.nodes.insert(node.clone(), fp.clone());
            let n = o.nodes.get_mut(node).unwrap();
            assert!(n.engine && n.images.contains(IMAGE), "certificates onto {node} before its engine and image");
            n.registry_certs = Some(fp);
        }
        Step::RevokeNode { node } => {
            assert!(topo.node(node).is_none(), "{node} revoked while in the topology");
            let n = o.nodes.get_mut(node).unwrap();
            assert!(n.engine, "revoke on {node} whose engine does not answer");
            n.registry_certs = None;
            if n.forwarder.as_deref().is_some_and(is_relay) {
                n.forwarder = None;
            }
        }
        _ => unreachable!("{step} is not a TLS step"),
    }
}
