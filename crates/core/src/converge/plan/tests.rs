//! The planner against a model of what each step does: for any observed state the plan
//! converges, and a converged cluster plans nothing.

use std::collections::BTreeMap;

use super::*;
use crate::cluster::{ModeRequest, Step};
use crate::driver::Capabilities;
use crate::driver::MachineState;
use crate::registry::RegistryObs;
use crate::registry::{is_relay, Forwarder};
use crate::state::{RegistryMode, RegistryTls};
use crate::topology::Role;
use crate::topology::{ClusterName, Topology, REGISTRY_NODE_LABEL};

const IMAGE: &str = "registry:2";
const SWARM: &str = "swarm-a";

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

fn addr(name: &str) -> String {
    format!("10.0.0.{}", name.len() + name.bytes().last().unwrap_or(0) as usize % 100)
}

/// A model of what each step does, used to check that executing a plan converges.
pub(crate) fn apply(d: &Desired, o: &mut Observed, step: &Step) {
    let topo = &d.topology;
    let mode = effective_mode(d, o);
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
        Step::ChooseRegistryMode => {
            let first = &o.nodes[&topo.first_manager().name];
            assert!(first.engine, "probe needs the manager's engine");
            assert!(d.capabilities.exec || first.images.contains(IMAGE), "a probe container needs the image");
            o.mode = Some(mode.unwrap_or(RegistryMode::Fallback));
        }
        Step::DeployRegistry => {
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
        Step::Forwarder { node } => {
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
    }
}

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

fn node_states(role: Role) -> Vec<NodeObs> {
    let running = |engine: bool| {
        let mut n = NodeObs::new(role, MachineState::Running);
        n.engine = engine;
        if engine {
            n.swarm = Membership::None;
        }
        n
    };
    let mut out = vec![
        NodeObs::new(role, MachineState::Stopped),
        NodeObs::new(role, MachineState::Broken("half made".into())),
        running(false),
        running(true),
    ];
    let mut with_image = running(true);
    with_image.images.insert(IMAGE.into());
    out.push(with_image.clone());
    let mut member = with_image.clone();
    member.swarm = Membership::Member { swarm_id: SWARM.into(), manager: role == Role::Manager };
    out.push(member.clone());
    let mut former = with_image.clone();
    former.swarm = Membership::Member { swarm_id: "other".into(), manager: true };
    out.push(former);
    let mut foreign = with_image;
    foreign.swarm = Membership::Foreign { swarm: "swarm elsewhere".into() };
    out.push(foreign);
    let mut wrong_role = member.clone();
    wrong_role.swarm = Membership::Member { swarm_id: SWARM.into(), manager: role != Role::Manager };
    out.push(wrong_role);
    out
}

fn configured(d: &Desired, name: &str, mut n: NodeObs) -> NodeObs {
    let spec = d.topology.node(name).unwrap();
    n.labels = d.topology.swarm_labels(spec);
    n.drained = d.topology.drain_managers() && spec.role == Role::Manager;
    n.address = Some(addr(name));
    n
}

/// Every combination of per-node states (plus missing), registry and mode: one plan
/// reaches the desired state, and the plan after it is empty.
#[test]
fn every_observed_state_converges_in_one_plan() {
    let cases = [
        (ModeRequest::Auto, true, RegistryTls::Open),
        (ModeRequest::Auto, false, RegistryTls::Open),
        (ModeRequest::Force(RegistryMode::Mesh), true, RegistryTls::Open),
        (ModeRequest::Auto, true, RegistryTls::Mutual),
        // Machines lab may not destroy (ssh hosts): a node that left stays, and answers.
        (ModeRequest::Auto, true, RegistryTls::Mutual),
    ];
    for (i, (mode, exec, tls)) in cases.into_iter().enumerate() {
        let mut d = desired(1, 2, mode);
        d.capabilities.exec = exec;
        d.capabilities.destroy = i != 4;
        d.tls = tls;
        // In mutual mode, the certificates lab keeps: none, good, or due; and what the
        // registry and the nodes have (the good ones, or older ones).
        let cert_cases: Vec<Option<CertsObs>> = match tls {
            RegistryTls::Open => vec![None],
            RegistryTls::Mutual => {
                let issued = |names: &[&str]| -> BTreeMap<String, String> {
                    names.iter().map(|n| (n.to_string(), format!("n-good-{n}"))).collect()
                };
                let all = issued(&["manager", "worker1", "worker2"]);
                vec![
                    None,
                    Some(CertsObs { registry: "good".into(), nodes: all.clone(), due: false }),
                    Some(CertsObs { registry: "good".into(), nodes: all, due: true }),
                    // worker9 was issued one and has left the topology.
                    Some(CertsObs {
                        registry: "good".into(),
                        nodes: issued(&["manager", "worker1", "worker9"]),
                        due: false,
                    }),
                ]
            }
        };
        // Without it, a broken registry node is (rightly) not repaired: see below.
        d.force = true;
        let names: Vec<String> = d.topology.nodes.iter().map(|n| n.name.clone()).collect();
        let per_node: Vec<Vec<Option<NodeObs>>> = d
            .topology
            .nodes
            .iter()
            .map(|n| {
                let mut v: Vec<Option<NodeObs>> = vec![None];
                for s in node_states(n.role) {
                    v.push(Some(s.clone()));
                    if matches!(s.swarm, Membership::Member { .. }) {
                        v.push(Some(configured(&d, &n.name, s)));
                    }
                }
                v
            })
            .collect();
        let mut count = 0;
        for a in &per_node[0] {
            for b in &per_node[1] {
                for c in &per_node[2] {
                    for reg in 0..5 {
                        for (recorded, certs) in [None, Some(RegistryMode::Fallback)]
                            .into_iter()
                            .flat_map(|r| cert_cases.iter().map(move |c| (r, c.clone())))
                        {
                            let mut o = Observed { mode: recorded, certs: certs.clone(), ..Default::default() };
                            for (name, n) in names.iter().zip([a, b, c]) {
                                if let Some(n) = n {
                                    let mut n = n.clone();
                                    if n.machine == MachineState::Running {
                                        n.address = Some(addr(name));
                                    }
                                    // Some nodes with the current certificates, some with
                                    // another set.
                                    if n.engine {
                                        n.registry_certs = certs.as_ref().map(|c| {
                                            if name == "worker2" {
                                                "n-old".into()
                                            } else {
                                                c.nodes[name.as_str()].clone()
                                            }
                                        });
                                    }
                                    o.nodes.insert(name.clone(), n);
                                }
                            }
                            let manager_member = o.nodes.values().any(|n| {
                                matches!(&n.swarm, Membership::Member { swarm_id, manager: true } if swarm_id == SWARM)
                            });
                            // Where the registry runs and keeps its data: 0 nowhere, 1 on its
                            // node (worker1), 2 on worker2, 3 data on worker2 with no task
                            // (and a forwarder on worker1), 4 on a stray node.
                            let answering = |o: &Observed, n: &str| o.nodes.get(n).is_some_and(|n| n.engine);
                            let running_on = match reg {
                                1 if answering(&o, "worker1") => Some("worker1"),
                                2 if answering(&o, "worker2") => Some("worker2"),
                                4 => Some("worker9"),
                                _ => None,
                            };
                            if let Some(n) = running_on.filter(|n| *n != "worker9") {
                                o.nodes.get_mut(n).unwrap().registry_data = true;
                            }
                            if reg == 3 && answering(&o, "worker2") {
                                o.nodes.get_mut("worker2").unwrap().registry_data = true;
                                if answering(&o, "worker1") {
                                    o.nodes.get_mut("worker1").unwrap().forwarder = Some("10.9.9.9".into());
                                }
                            }
                            if manager_member {
                                o.swarm_id = Some(SWARM.into());
                                if reg > 0 {
                                    o.registry = Some(RegistryObs {
                                        image: IMAGE.into(),
                                        mode: recorded.unwrap_or(RegistryMode::Fallback),
                                        spec_matches: true,
                                        running_on: running_on.map(str::to_string),
                                        tls: certs.as_ref().map(|c| c.registry.clone()),
                                        read_only: false,
                                    });
                                }
                            }
                            // A stray node that is not in the topology, holding the
                            // registry's data in case 4.
                            if reg == 4 || (reg == 1 && recorded.is_none()) {
                                let mut stray = NodeObs::new(Role::Worker, MachineState::Running);
                                if reg == 4 {
                                    stray.engine = true;
                                    stray.swarm = Membership::None;
                                    stray.images.insert(IMAGE.into());
                                    stray.registry_data = true;
                                    if tls == RegistryTls::Mutual {
                                        stray.registry_certs = Some("n-good-worker9".into());
                                        stray.forwarder = Some(Forwarder::Relay.label("10.0.0.9").unwrap());
                                    }
                                }
                                o.nodes.insert("worker9".into(), stray);
                            }
                            let start = o.clone();
                            execute(&d, &mut o);
                            let again = plan(&d, &o);
                            assert!(again.is_empty(), "from {start:#?}\nnot converged, still: {again:#?}");
                            count += 1;
                        }
                    }
                }
            }
        }
        assert!(count > 1000, "explored {count} states");
    }
}

#[test]
fn fresh_cluster_plan_is_ordered_and_concurrent() {
    let d = desired(1, 2, ModeRequest::Auto);
    let p = plan(&d, &Observed::default());
    let text: Vec<String> = p.steps.iter().map(|s| s.step.to_string()).collect();
    let pos = |s: &str| text.iter().position(|t| t == s).unwrap_or_else(|| panic!("{s} not in {text:#?}"));
    assert!(pos("create node manager (manager)") < pos("initialise the swarm on manager"));
    assert!(pos("initialise the swarm on manager") < pos("join worker1 to the swarm as worker"));
    // The three creations depend on nothing, so they run together.
    for n in ["manager", "worker1", "worker2"] {
        let i = p.steps.iter().position(|s| matches!(&s.step, Step::CreateNode { node, .. } if node == n)).unwrap();
        assert!(p.steps[i].after.is_empty());
    }
    // Worker joins depend on init and their own engine, not on each other.
    let j1 = pos("join worker1 to the swarm as worker");
    let j2 = pos("join worker2 to the swarm as worker");
    assert!(!p.steps[j2].after.contains(&j1));
}

#[test]
fn managers_join_one_at_a_time() {
    let d = desired(3, 1, ModeRequest::Auto);
    let p = plan(&d, &Observed::default());
    let j2 =
        p.steps.iter().position(|s| matches!(&s.step, Step::JoinSwarm { node, .. } if node == "manager2")).unwrap();
    let j3 =
        p.steps.iter().position(|s| matches!(&s.step, Step::JoinSwarm { node, .. } if node == "manager3")).unwrap();
    assert!(p.steps[j3].after.contains(&j2), "{p:#?}");
}

#[test]
fn converged_cluster_plans_nothing() {
    let d = desired(1, 2, ModeRequest::Auto);
    let mut o = Observed::default();
    execute(&d, &mut o);
    assert!(plan(&d, &o).is_empty());
    // Forcing the other mode replans the registry and forwarders only.
    let forced = desired(1, 2, ModeRequest::Force(RegistryMode::Mesh));
    let p = plan(&forced, &o);
    let steps: Vec<_> = p.steps.iter().map(|s| s.step.clone()).collect();
    assert!(steps.contains(&Step::DeployRegistry));
    assert!(
        steps.iter().all(|s| matches!(s, Step::ChooseRegistryMode | Step::DeployRegistry | Step::Forwarder { .. })),
        "{steps:?}"
    );
}

/// Issue 9, mutual TLS: an open cluster switched to mutual makes the certificates, gives
/// them to every node's engine, redeploys the registry with them and then puts a relay on
/// every node (port 5000 on its loopback is the relay's once the registry publishes its
/// TLS port instead), touching nothing else; then nothing is left to do. A renewal does
/// the certificates and the registry again, not the relays (they read the files at each
/// connection); a node made again gets its certificates; back to open redeploys the
/// registry once the relay on its node is gone, and turns the other relays back into
/// plain forwarders.
#[test]
fn switching_to_mutual_tls_certifies_every_node_and_redeploys_the_registry() {
    let open = desired(1, 2, ModeRequest::Auto);
    let o = converged(&open);
    let mutual = Desired { tls: RegistryTls::Mutual, ..open.clone() };
    let p = plan(&mutual, &o);
    let steps: Vec<Step> = p.steps.iter().map(|s| s.step.clone()).collect();
    let pos = |want: &Step| steps.iter().position(|s| s == want).unwrap_or_else(|| panic!("{want} not in {p:#?}"));
    let issue = pos(&Step::IssueRegistryCerts);
    let deploy = pos(&Step::DeployRegistry);
    assert!(p.steps[deploy].after.contains(&issue), "{p:#?}");
    for n in ["manager", "worker1", "worker2"] {
        let certs = pos(&Step::NodeCerts { node: n.into() });
        assert!(p.steps[certs].after.contains(&issue), "{p:#?}");
        let relay = &p.steps[pos(&Step::Forwarder { node: n.into() })];
        assert!(relay.after.contains(&certs) && relay.after.contains(&deploy), "{p:#?}");
    }
    assert_eq!(steps.len(), 8, "{steps:?}");
    let mut o2 = o.clone();
    execute(&mutual, &mut o2);
    assert!(plan(&mutual, &o2).is_empty(), "{:#?}", plan(&mutual, &o2));
    // Due for renewal: made again, and everything that holds them is redone.
    let mut due = o2.clone();
    due.certs.as_mut().unwrap().due = true;
    let p = plan(&mutual, &due);
    assert!(p.steps.iter().any(|s| s.step == Step::IssueRegistryCerts), "{p:#?}");
    assert!(p.steps.iter().any(|s| s.step == Step::DeployRegistry), "{p:#?}");
    assert_eq!(p.steps.iter().filter(|s| matches!(s.step, Step::NodeCerts { .. })).count(), 3, "{p:#?}");
    assert!(!p.steps.iter().any(|s| matches!(s.step, Step::Forwarder { .. })), "{p:#?}");
    execute(&mutual, &mut due);
    assert!(plan(&mutual, &due).is_empty());
    // A node that lost its certificates (made again) gets them, and only it.
    let mut lost = o2.clone();
    lost.nodes.get_mut("worker2").unwrap().registry_certs = None;
    let p = plan(&mutual, &lost);
    let steps: Vec<Step> = p.steps.iter().map(|s| s.step.clone()).collect();
    assert_eq!(steps, vec![Step::NodeCerts { node: "worker2".into() }]);
    // Back to open: the registry's node loses its relay before the registry publishes
    // port 5000 there; the others get plain forwarders.
    let p = plan(&open, &o2);
    let steps: Vec<Step> = p.steps.iter().map(|s| s.step.clone()).collect();
    let pos = |want: &Step| steps.iter().position(|s| s == want).unwrap_or_else(|| panic!("{want} not in {p:#?}"));
    assert_eq!(steps.len(), 4, "{steps:?}");
    let deploy = pos(&Step::DeployRegistry);
    assert!(p.steps[deploy].after.contains(&pos(&Step::Forwarder { node: "worker1".into() })), "{p:#?}");
    pos(&Step::Forwarder { node: "manager".into() });
    pos(&Step::Forwarder { node: "worker2".into() });
    let mut back = o2.clone();
    execute(&open, &mut back);
    // A new cluster in mutual TLS, its mode not chosen yet: every relay still waits for
    // the registry's TLS deploy and its node's certificates.
    let p = plan(&mutual, &Observed::default());
    let deploy = p.steps.iter().position(|s| s.step == Step::DeployRegistry).expect("a deploy");
    for (i, s) in p.steps.iter().enumerate() {
        if let Step::Forwarder { node } = &s.step {
            let certs = p.steps.iter().position(|c| c.step == Step::NodeCerts { node: node.clone() }).unwrap();
            assert!(s.after.contains(&deploy) && s.after.contains(&certs), "step {i}: {p:#?}");
        }
    }
    assert!(plan(&open, &back).is_empty(), "{:#?}", plan(&open, &back));
    // With the mesh, back to open waits for every relay to go.
    let mesh = Desired { mode: ModeRequest::Force(RegistryMode::Mesh), ..mutual.clone() };
    let mut m = o2.clone();
    execute(&mesh, &mut m);
    assert!(plan(&mesh, &m).is_empty());
    let open_mesh = Desired { tls: RegistryTls::Open, ..mesh.clone() };
    let p = plan(&open_mesh, &m);
    let deploy = p.steps.iter().position(|s| s.step == Step::DeployRegistry).expect("a deploy");
    assert_eq!(
        p.steps[deploy].after.iter().filter(|&&a| matches!(p.steps[a].step, Step::Forwarder { .. })).count(),
        3,
        "{p:#?}"
    );
    execute(&open_mesh, &mut m);
    assert!(plan(&open_mesh, &m).is_empty());
}

/// Issue 18, item 11: a node that leaves a mutual-TLS cluster keeps a key the registry
/// trusts, and distribution reads no revocation list. So the plan makes a new CA, issues
/// every remaining node its own certificate again from it, and redeploys the registry with
/// it; a node lab may not destroy, if it answers, first loses its relay and key. Then
/// nothing is left to do.
#[test]
fn a_node_leaving_a_mutual_tls_cluster_renews_the_ca_and_issues_the_rest_again() {
    let mutual = |workers| Desired { tls: RegistryTls::Mutual, ..desired(1, workers, ModeRequest::Auto) };
    let o = converged(&mutual(2));
    // Every node has a certificate of its own.
    let issued = &o.certs.as_ref().unwrap().nodes;
    let fps: std::collections::BTreeSet<&String> = issued.values().collect();
    assert_eq!((issued.len(), fps.len()), (3, 3), "{issued:#?}");
    for (name, n) in &o.nodes {
        assert_eq!(n.registry_certs.as_ref(), issued.get(name), "{name}");
    }
    let one = mutual(1);
    let p = plan(&one, &o);
    let steps: Vec<Step> = p.steps.iter().map(|s| s.step.clone()).collect();
    let pos = |want: &Step| steps.iter().position(|s| s == want).unwrap_or_else(|| panic!("{want} not in {p:#?}"));
    let renew = pos(&Step::RenewRegistryCa { reason: "worker2 left the cluster".into() });
    pos(&Step::DestroyNode { node: "worker2".into(), reason: "not in the topology".into() });
    assert!(p.steps[pos(&Step::DeployRegistry)].after.contains(&renew), "{p:#?}");
    for n in ["manager", "worker1"] {
        assert!(p.steps[pos(&Step::NodeCerts { node: n.into() })].after.contains(&renew), "{p:#?}");
    }
    assert!(!steps.contains(&Step::NodeCerts { node: "worker2".into() }), "{p:#?}");
    assert!(!steps.contains(&Step::IssueRegistryCerts), "{p:#?}");
    let mut after = o.clone();
    execute(&one, &mut after);
    assert!(plan(&one, &after).is_empty(), "{:#?}", plan(&one, &after));
    let issued: Vec<&String> = after.certs.as_ref().unwrap().nodes.keys().collect();
    assert_eq!(issued, ["manager", "worker1"]);

    // A machine lab may not destroy (an ssh host dropped from the hosts file), still
    // answering: its relay and key go first, then the CA.
    let mut kept = mutual(1);
    kept.capabilities.destroy = false;
    let p = plan(&kept, &o);
    let steps: Vec<Step> = p.steps.iter().map(|s| s.step.clone()).collect();
    let pos = |want: &Step| steps.iter().position(|s| s == want).unwrap_or_else(|| panic!("{want} not in {p:#?}"));
    let revoke = pos(&Step::RevokeNode { node: "worker2".into() });
    let renew = pos(&Step::RenewRegistryCa { reason: "worker2 left the cluster".into() });
    assert!(p.steps[renew].after.contains(&revoke), "{p:#?}");
    let mut after = o.clone();
    execute(&kept, &mut after);
    let w2 = &after.nodes["worker2"];
    assert!(w2.registry_certs.is_none() && w2.forwarder.is_none(), "{w2:#?}");
    assert!(plan(&kept, &after).is_empty(), "{:#?}", plan(&kept, &after));
    // Not answering: the new CA is all lab can do, and it does it.
    let mut silent = o.clone();
    silent.nodes.get_mut("worker2").unwrap().engine = false;
    let p = plan(&kept, &silent);
    assert!(p.steps.iter().any(|s| matches!(s.step, Step::RenewRegistryCa { .. })), "{p:#?}");
    assert!(!p.steps.iter().any(|s| matches!(s.step, Step::RevokeNode { .. })), "{p:#?}");
    // In open mode, nothing of this.
    assert!(plan(&desired(1, 1, ModeRequest::Auto), &converged(&desired(1, 2, ModeRequest::Auto)))
        .steps
        .iter()
        .all(|s| !matches!(s.step, Step::RenewRegistryCa { .. } | Step::RevokeNode { .. })));
}

/// Issue 18, item 11: `--renew-certs` does the same on demand: a new CA, every node issued
/// again, the registry redeployed (the relays stay: they read the files at each
/// connection); the next plan without the flag has nothing to do.
#[test]
fn renew_certs_makes_a_new_ca_and_issues_every_node_again() {
    let mutual = Desired { tls: RegistryTls::Mutual, ..desired(1, 2, ModeRequest::Auto) };
    let mut o = converged(&mutual);
    let renew = Desired { renew_certs: true, ..mutual.clone() };
    let p = plan(&renew, &o);
    let steps: Vec<Step> = p.steps.iter().map(|s| s.step.clone()).collect();
    let first = steps.iter().position(|s| *s == Step::RenewRegistryCa { reason: "--renew-certs".into() });
    let first = first.unwrap_or_else(|| panic!("no renewal in {p:#?}"));
    assert!(steps.contains(&Step::DeployRegistry), "{p:#?}");
    for n in ["manager", "worker1", "worker2"] {
        let c = steps.iter().position(|s| *s == Step::NodeCerts { node: n.into() }).expect("node certs");
        assert!(p.steps[c].after.contains(&first), "{p:#?}");
    }
    assert_eq!(steps.len(), 5, "{steps:?}");
    let before = o.certs.clone().unwrap();
    execute(&renew, &mut o);
    assert_ne!(o.certs.as_ref().unwrap().registry, before.registry);
    assert!(plan(&mutual, &o).is_empty(), "{:#?}", plan(&mutual, &o));
}

#[test]
fn without_destroy_capability_strays_are_left() {
    let mut d = desired(1, 1, ModeRequest::Auto);
    d.capabilities.destroy = false;
    let mut o = Observed::default();
    o.nodes.insert("worker7".into(), NodeObs::new(Role::Worker, MachineState::Running));
    let p = plan(&d, &o);
    assert!(!p.steps.iter().any(|s| matches!(s.step, Step::DestroyNode { .. })));
}

/// A converged 1+2 cluster whose registry runs on worker1, as `up` leaves it.
fn converged(d: &Desired) -> Observed {
    let mut o = Observed::default();
    execute(d, &mut o);
    assert!(plan(d, &o).is_empty());
    o
}

/// Issue 7, item 4: scaling to 0 workers moves the registry to the manager. Its data moves
/// first, the manager's forwarder goes before the registry deploys there, and worker1
/// (holding the data) is destroyed only after the move.
#[test]
fn moving_the_registry_moves_its_data_before_its_node_is_destroyed() {
    let d = desired(1, 2, ModeRequest::Auto);
    let o = converged(&d);
    assert!(o.nodes["manager"].forwarder.is_some(), "the model gives the manager a forwarder");
    let zero = desired(1, 0, ModeRequest::Auto);
    let p = plan(&zero, &o);
    assert!(p.blocked.is_empty(), "{p:#?}");
    let pos =
        |want: &Step| p.steps.iter().position(|s| &s.step == want).unwrap_or_else(|| panic!("{want} not in {p:#?}"));
    let mv = pos(&Step::MoveRegistryData { from: "worker1".into(), to: "manager".into() });
    let destroy = pos(&Step::DestroyNode { node: "worker1".into(), reason: "not in the topology".into() });
    let unforward = pos(&Step::Forwarder { node: "manager".into() });
    let deploy = pos(&Step::DeployRegistry);
    assert!(p.steps[destroy].after.contains(&mv), "worker1 destroyed before its data moved: {p:#?}");
    assert!(p.steps[deploy].after.contains(&mv) && p.steps[deploy].after.contains(&unforward), "{p:#?}");
    // And the model says the data ends on the manager, with nothing left to do.
    let mut o2 = o.clone();
    execute(&zero, &mut o2);
    assert!(o2.nodes["manager"].registry_data);
    assert!(plan(&zero, &o2).is_empty());
    // Back to two workers: the data moves back to worker1.
    let p = plan(&d, &o2);
    assert!(
        p.steps.iter().any(|s| s.step == Step::MoveRegistryData { from: "manager".into(), to: "worker1".into() }),
        "{p:#?}"
    );
}

/// Item 4: data on a node whose engine does not answer cannot move; without --force the
/// plan is blocked, naming the node.
#[test]
fn data_that_cannot_move_blocks_the_plan_without_force() {
    let d = desired(1, 2, ModeRequest::Auto);
    let mut o = converged(&d);
    o.nodes.get_mut("worker1").unwrap().engine = false;
    let zero = desired(1, 0, ModeRequest::Auto);
    let p = plan(&zero, &o);
    assert_eq!(p.blocked.len(), 1, "{p:#?}");
    assert!(p.blocked[0].contains("worker1") && p.blocked[0].contains("lose"), "{}", p.blocked[0]);
    assert!(!p.is_empty());
    let forced = Desired { force: true, ..zero };
    assert!(plan(&forced, &o).blocked.is_empty());
}

/// Issue 18, item 1: an interrupted move left a partial copy on the manager (which does not
/// count as the registry's data) and scaled the service to zero: the data moves again from
/// worker1, which is destroyed only after that.
#[test]
fn a_partial_copy_left_by_an_interrupted_move_is_moved_again() {
    let d = desired(1, 1, ModeRequest::Auto);
    let mut o = converged(&d);
    o.registry.as_mut().unwrap().running_on = None;
    let zero = desired(1, 0, ModeRequest::Auto);
    let p = plan(&zero, &o);
    assert!(p.blocked.is_empty(), "{p:#?}");
    let mv = p
        .steps
        .iter()
        .position(|s| s.step == Step::MoveRegistryData { from: "worker1".into(), to: "manager".into() })
        .unwrap_or_else(|| panic!("no move in {p:#?}"));
    let destroy = p
        .steps
        .iter()
        .position(|s| matches!(&s.step, Step::DestroyNode { node, .. } if node == "worker1"))
        .expect("worker1 destroyed");
    assert!(p.steps[destroy].after.contains(&mv), "{p:#?}");
}

/// Item 1: a node leaving the topology that holds, or may hold, the only complete copy of
/// the registry's data is never destroyed while the registry's node is not known to have
/// one: not when the registry's node does not answer, nor when the leaving node does not.
/// `--force` goes ahead.
#[test]
fn a_leaving_node_with_the_only_copy_is_never_destroyed() {
    let d = desired(1, 2, ModeRequest::Auto);
    let zero = desired(1, 0, ModeRequest::Auto);
    let destroys = |p: &Plan, node: &str| {
        p.steps.iter().any(|s| matches!(&s.step, Step::DestroyNode { node: n, .. } if n == node))
    };
    // The manager (the registry's node once workers are gone) stopped, the task stopped.
    let mut o = converged(&d);
    o.registry.as_mut().unwrap().running_on = None;
    let m = o.nodes.get_mut("manager").unwrap();
    m.machine = MachineState::Stopped;
    m.engine = false;
    let p = plan(&zero, &o);
    assert!(p.blocked.iter().any(|b| b.starts_with("worker1 is not in the topology any more")), "{p:#?}");
    assert!(p.blocked.iter().all(|b| !b.starts_with("worker2")), "worker2 has no data: {p:#?}");
    assert!(destroys(&plan(&Desired { force: true, ..zero.clone() }, &o), "worker1"));
    // worker1 (with the data) not answering, the manager without a copy.
    let mut o = converged(&d);
    o.registry.as_mut().unwrap().running_on = None;
    let w1 = o.nodes.get_mut("worker1").unwrap();
    w1.machine = MachineState::Stopped;
    w1.engine = false;
    let p = plan(&zero, &o);
    assert!(p.blocked.iter().any(|b| b.contains("worker1") && b.contains("may hold")), "{p:#?}");
    // Once the manager has the data, leaving nodes go whatever they hold.
    let mut o = converged(&d);
    o.nodes.get_mut("manager").unwrap().registry_data = true;
    o.nodes.get_mut("worker1").unwrap().engine = false;
    o.registry.as_mut().unwrap().running_on = None;
    let p = plan(&zero, &o);
    assert!(p.blocked.is_empty() && destroys(&p, "worker1") && destroys(&p, "worker2"), "{p:#?}");
}

/// A stopped registry node keeps its data: `up` starts it and redeploys, moving nothing
/// (found by the virtualbox suite: the manager still listed the task on the stopped node).
#[test]
fn a_stopped_registry_node_is_started_not_robbed() {
    let d = desired(1, 2, ModeRequest::Auto);
    let mut o = converged(&d);
    // Even with a stale copy on another node.
    o.nodes.get_mut("worker2").unwrap().registry_data = true;
    let w1 = o.nodes.get_mut("worker1").unwrap();
    w1.machine = MachineState::Stopped;
    w1.engine = false;
    o.registry.as_mut().unwrap().running_on = None;
    let p = plan(&d, &o);
    assert!(p.blocked.is_empty(), "{p:#?}");
    assert!(!p.steps.iter().any(|s| matches!(s.step, Step::MoveRegistryData { .. })), "{p:#?}");
    assert!(p.steps.iter().any(|s| s.step == Step::StartNode { node: "worker1".into() }), "{p:#?}");
}

/// A converged 1+2 cluster whose `lab.registry` label was moved by hand from worker1 to
/// worker2, where a volume was made; the registry's task runs on `running_on`.
fn pin_moved_by_hand(d: &Desired, running_on: Option<&str>) -> Observed {
    let mut o = converged(d);
    o.nodes.get_mut("worker1").unwrap().labels.remove(REGISTRY_NODE_LABEL);
    let w2 = o.nodes.get_mut("worker2").unwrap();
    w2.labels.insert(REGISTRY_NODE_LABEL.into(), "true".into());
    w2.registry_data = true;
    o.registry.as_mut().unwrap().running_on = running_on.map(str::to_string);
    o
}

/// Issue 9: the pin moved by hand (`lab.registry` taken off worker1 and put on worker2)
/// and the task running on worker2: the labels go back, the data worker2's task wrote
/// moves to worker1 before the registry is deployed there again, and the model ends
/// converged with the data on worker1 only.
#[test]
fn a_pin_moved_by_hand_is_put_back_and_the_data_follows() {
    let d = desired(1, 2, ModeRequest::Auto);
    let o = pin_moved_by_hand(&d, Some("worker2"));
    let p = plan(&d, &o);
    assert!(p.blocked.is_empty(), "{p:#?}");
    let pos =
        |want: &Step| p.steps.iter().position(|s| &s.step == want).unwrap_or_else(|| panic!("{want} not in {p:#?}"));
    let mv = pos(&Step::MoveRegistryData { from: "worker2".into(), to: "worker1".into() });
    let deploy = pos(&Step::DeployRegistry);
    let pin = pos(&Step::ConfigureNode { node: "worker1".into() });
    let unpin = pos(&Step::ConfigureNode { node: "worker2".into() });
    for before in [mv, pin, unpin] {
        assert!(p.steps[deploy].after.contains(&before), "{p:#?}");
    }
    let mut o2 = o.clone();
    execute(&d, &mut o2);
    assert!(o2.nodes["worker1"].registry_data && !o2.nodes["worker2"].registry_data);
    assert!(plan(&d, &o2).is_empty());
}

/// The same drift where the task could not start on worker2 (in fallback mode, worker2's
/// forwarder holds the port), leaving an empty volume there: nothing moves, and the
/// registry is deployed again on worker1, which kept the data.
#[test]
fn a_pin_moved_by_hand_whose_task_never_ran_moves_nothing() {
    let d = desired(1, 2, ModeRequest::Auto);
    let o = pin_moved_by_hand(&d, None);
    let p = plan(&d, &o);
    assert!(p.blocked.is_empty(), "{p:#?}");
    assert!(!p.steps.iter().any(|s| matches!(s.step, Step::MoveRegistryData { .. })), "{p:#?}");
    assert!(p.steps.iter().any(|s| s.step == Step::DeployRegistry), "{p:#?}");
    assert!(p.steps.iter().any(|s| s.step == Step::ConfigureNode { node: "worker1".into() }), "{p:#?}");
}

/// Item 4: a registry whose task does not run is never converged.
#[test]
fn a_registry_whose_task_is_not_running_is_redeployed() {
    let d = desired(1, 2, ModeRequest::Auto);
    let mut o = converged(&d);
    o.registry.as_mut().unwrap().running_on = None;
    let p = plan(&d, &o);
    assert!(p.steps.iter().any(|s| s.step == Step::DeployRegistry), "{p:#?}");
    assert!(!p.steps.iter().any(|s| matches!(s.step, Step::MoveRegistryData { .. })), "{p:#?}");
}

/// Item 5: a broken registry node is not destroyed to repair it without --force, and the
/// step that destroys a broken node says why.
#[test]
fn a_broken_registry_node_is_not_destroyed_without_force() {
    let d = desired(1, 2, ModeRequest::Auto);
    let mut o = converged(&d);
    o.nodes.get_mut("worker1").unwrap().machine = MachineState::Broken("status Error".into());
    o.nodes.get_mut("worker1").unwrap().engine = false;
    let p = plan(&d, &o);
    assert_eq!(p.blocked.len(), 1, "{p:#?}");
    assert!(p.blocked[0].contains("worker1") && p.blocked[0].contains("status Error"), "{}", p.blocked[0]);
    // Another broken node is repaired without asking, and the step names the cause.
    let mut o = converged(&d);
    o.nodes.get_mut("worker2").unwrap().machine = MachineState::Broken("status Error".into());
    let p = plan(&d, &o);
    assert!(p.blocked.is_empty());
    let text: Vec<String> = p.steps.iter().map(|s| s.step.to_string()).collect();
    assert!(text.contains(&"destroy node worker2 (broken: status Error)".to_string()), "{text:#?}");
    // With --force the registry node is repaired too.
    let mut o = converged(&d);
    o.nodes.get_mut("worker1").unwrap().machine = MachineState::Broken("status Error".into());
    assert!(plan(&Desired { force: true, ..d }, &o).blocked.is_empty());
}

/// A converged 1+2 cluster with `node` in a swarm that is not the cluster's.
fn with_foreign(d: &Desired, node: &str) -> Observed {
    let mut o = converged(d);
    let n = o.nodes.get_mut(node).unwrap();
    n.swarm = Membership::Foreign { swarm: "swarm f00".into() };
    n.labels.clear();
    o
}

/// Issue 10, item 1: a manager in a foreign swarm is refused without --force, naming the
/// node and the swarm; with it, it leaves before the swarm is initialised on it.
#[test]
fn a_foreign_manager_is_blocked_without_force_and_leaves_with_it() {
    let d = desired(1, 2, ModeRequest::Auto);
    let mut o = with_foreign(&d, "manager");
    o.swarm_id = None;
    o.registry = None;
    for w in ["worker1", "worker2"] {
        o.nodes.get_mut(w).unwrap().swarm = Membership::None;
    }
    let p = plan(&d, &o);
    assert_eq!(p.blocked.len(), 1, "{p:#?}");
    let b = &p.blocked[0];
    assert!(b.contains("manager") && b.contains("another swarm (swarm f00)"), "{b}");
    assert!(b.contains("lab will not take it over") && b.contains("docker swarm leave --force"), "{b}");
    let forced = Desired { force: true, ..d };
    let p = plan(&forced, &o);
    assert!(p.blocked.is_empty(), "{p:#?}");
    let leave = p.steps.iter().position(|s| s.step == Step::LeaveSwarm { node: "manager".into() });
    let init = p.steps.iter().position(|s| s.step == Step::InitSwarm { node: "manager".into() });
    let (leave, init) = (leave.expect("no leave"), init.expect("no init"));
    assert!(p.steps[init].after.contains(&leave), "{p:#?}");
    let mut o2 = o.clone();
    execute(&forced, &mut o2);
    assert!(plan(&forced, &o2).is_empty());
}

/// A foreign worker too; and --force never makes anyone leave while this cluster's
/// managers could not be checked (issue 7, item 12).
#[test]
fn force_makes_no_node_leave_while_the_managers_are_unchecked() {
    let d = desired(1, 2, ModeRequest::Auto);
    let o = with_foreign(&d, "worker2");
    let p = plan(&d, &o);
    assert_eq!(p.blocked.len(), 1, "{p:#?}");
    assert!(p.blocked[0].starts_with("worker2 is already in another swarm (swarm f00)"), "{}", p.blocked[0]);
    let forced = Desired { force: true, ..d };
    assert!(plan(&forced, &o).steps.iter().any(|s| s.step == Step::LeaveSwarm { node: "worker2".into() }));
    let mut unchecked = o.clone();
    unchecked.managers_unchecked = true;
    let p = plan(&forced, &unchecked);
    assert!(!p.steps.iter().any(|s| matches!(s.step, Step::LeaveSwarm { .. })), "{p:#?}");
    assert_eq!(p.blocked.len(), 1, "{p:#?}");
    assert!(p.blocked[0].contains("could not check this cluster's managers"), "{}", p.blocked[0]);
    // Nor does a node of one of this cluster's former swarms leave then.
    let mut former = converged(&forced);
    former.managers_unchecked = true;
    former.nodes.get_mut("worker1").unwrap().swarm = Membership::Member { swarm_id: "old".into(), manager: false };
    let p = plan(&forced, &former);
    assert!(!p.steps.iter().any(|s| matches!(s.step, Step::LeaveSwarm { .. })), "{p:#?}");
}

/// Nodes of one of this cluster's own former swarms leave it without --force, as a node
/// whose manager was made again must; nothing is blocked.
#[test]
fn a_node_in_a_former_swarm_of_this_cluster_leaves_without_force() {
    let d = desired(1, 2, ModeRequest::Auto);
    let mut o = converged(&d);
    o.nodes.get_mut("worker2").unwrap().swarm = Membership::Member { swarm_id: "old".into(), manager: false };
    let p = plan(&d, &o);
    assert!(p.blocked.is_empty(), "{p:#?}");
    let leave = p.steps.iter().position(|s| s.step == Step::LeaveSwarm { node: "worker2".into() }).expect("leave");
    let join = p
        .steps
        .iter()
        .position(|s| s.step == Step::JoinSwarm { node: "worker2".into(), role: Role::Worker })
        .expect("join");
    assert!(p.steps[join].after.contains(&leave));
}

/// A node whose membership is unknown (its managers could not say) is never foreign: it
/// is not made to leave, even with --force, and nothing is blocked on its account.
#[test]
fn a_worker_of_this_cluster_is_never_foreign() {
    let d = Desired { force: true, ..desired(1, 2, ModeRequest::Auto) };
    let mut o = converged(&d);
    o.swarm_id = None;
    o.registry = None;
    o.managers_unchecked = true;
    o.nodes.get_mut("manager").unwrap().engine = false;
    o.nodes.get_mut("manager").unwrap().swarm = Membership::Unknown;
    for w in ["worker1", "worker2"] {
        o.nodes.get_mut(w).unwrap().swarm = Membership::Unknown;
    }
    let p = plan(&d, &o);
    assert!(p.blocked.is_empty(), "{p:#?}");
    assert!(!p.steps.iter().any(|s| matches!(s.step, Step::LeaveSwarm { .. })), "{p:#?}");
}
