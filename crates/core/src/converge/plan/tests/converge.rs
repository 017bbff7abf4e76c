//! For any observed state one plan converges, and a converged cluster plans nothing; the
//! order and concurrency of a fresh cluster's plan.

use super::*;

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
        // Without it, a broken registry node is (rightly) not repaired: see below.
        d.force = true;
        let names: Vec<String> = d.topology.nodes.iter().map(|n| n.name.clone()).collect();
        let per_node = per_node_states(&d);
        let certs_and_records: Vec<(Option<RegistryMode>, Option<CertsObs>)> = [None, Some(RegistryMode::Fallback)]
            .into_iter()
            .flat_map(|r| cert_cases(tls).into_iter().map(move |c| (r, c)))
            .collect();
        let mut count = 0;
        for a in &per_node[0] {
            for b in &per_node[1] {
                for c in &per_node[2] {
                    for reg in 0..5 {
                        for (recorded, certs) in &certs_and_records {
                            let mut o = with_nodes(&names, [a, b, c], *recorded, certs);
                            place_registry(&mut o, reg, tls);
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

/// In mutual mode, the certificates lab keeps: none, good, or due; and what the registry and
/// the nodes have (the good ones, or older ones).
fn cert_cases(tls: RegistryTls) -> Vec<Option<CertsObs>> {
    match tls {
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
    }
}

/// For each node of `d`, every state it may be found in: missing, each of [`node_states`],
/// and each member configured as `d` wants it.
fn per_node_states(d: &Desired) -> Vec<Vec<Option<NodeObs>>> {
    d.topology
        .nodes
        .iter()
        .map(|n| {
            let mut v: Vec<Option<NodeObs>> = vec![None];
            for s in node_states(n.role) {
                v.push(Some(s.clone()));
                if matches!(s.swarm, Membership::Member { .. }) {
                    v.push(Some(configured(d, &n.name, s)));
                }
            }
            v
        })
        .collect()
}

/// An observation of the nodes `names` in the states `nodes` (running ones with their
/// addresses), lab's record of the mode and its certificates. In mutual TLS the nodes whose
/// engines answer have the current certificates, but worker2 another set.
fn with_nodes(
    names: &[String],
    nodes: [&Option<NodeObs>; 3],
    recorded: Option<RegistryMode>,
    certs: &Option<CertsObs>,
) -> Observed {
    let mut o = Observed { mode: recorded, certs: certs.clone(), ..Default::default() };
    for (name, n) in names.iter().zip(nodes) {
        if let Some(n) = n {
            let mut n = n.clone();
            if n.machine == MachineState::Running {
                n.address = Some(addr(name));
            }
            if n.engine {
                n.registry_certs =
                    certs.as_ref().map(
                        |c| {
                            if name == "worker2" {
                                "n-old".into()
                            } else {
                                c.nodes[name.as_str()].clone()
                            }
                        },
                    );
            }
            o.nodes.insert(name.clone(), n);
        }
    }
    o
}

/// Puts the registry where `reg` says it runs and keeps its data: 0 nowhere, 1 on its node
/// (worker1), 2 on worker2, 3 data on worker2 with no task (and a forwarder on worker1), 4 on
/// a stray node, worker9, which is not in the topology.
fn place_registry(o: &mut Observed, reg: u8, tls: RegistryTls) {
    let recorded = o.mode;
    let manager_member = o
        .nodes
        .values()
        .any(|n| matches!(&n.swarm, Membership::Member { swarm_id, manager: true } if swarm_id == SWARM));
    let answering = |o: &Observed, n: &str| o.nodes.get(n).is_some_and(|n| n.engine);
    let running_on = match reg {
        1 if answering(o, "worker1") => Some("worker1"),
        2 if answering(o, "worker2") => Some("worker2"),
        4 => Some("worker9"),
        _ => None,
    };
    if let Some(n) = running_on.filter(|n| *n != "worker9") {
        o.nodes.get_mut(n).unwrap().registry_data = true;
    }
    if reg == 3 && answering(o, "worker2") {
        o.nodes.get_mut("worker2").unwrap().registry_data = true;
        if answering(o, "worker1") {
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
                tls: o.certs.as_ref().map(|c| c.registry.clone()),
                read_only: false,
            });
        }
    }
    // The stray node, holding the registry's data in case 4.
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

/// Issue 18, item 18: scaling down destroys the nodes that go side by side. No destroy waits,
/// directly or through other steps, for another destroy: only the registry's old node waits,
/// for its data to move.
#[test]
fn scale_down_destroys_depend_on_no_other_destroy() {
    for (from, to) in [(3, 0), (5, 1)] {
        let o = converged(&desired(1, from, ModeRequest::Auto));
        let p = plan(&desired(1, to, ModeRequest::Auto), &o);
        assert!(p.blocked.is_empty(), "{p:#?}");
        let destroys: Vec<usize> = p
            .steps
            .iter()
            .enumerate()
            .filter(|(_, s)| matches!(s.step, Step::DestroyNode { .. }))
            .map(|(i, _)| i)
            .collect();
        assert_eq!(destroys.len(), (from - to) as usize, "{p:#?}");
        // Everything each destroy waits for, through any chain of steps.
        let waits_for = |i: usize| {
            let mut seen = std::collections::BTreeSet::new();
            let mut todo = p.steps[i].after.clone();
            while let Some(a) = todo.pop() {
                if seen.insert(a) {
                    todo.extend(p.steps[a].after.iter().copied());
                }
            }
            seen
        };
        for &d in &destroys {
            let before = waits_for(d);
            for &other in destroys.iter().filter(|&&o| o != d) {
                assert!(!before.contains(&other), "{} waits for {}: {p:#?}", p.steps[d].step, p.steps[other].step);
            }
            if to > 0 {
                assert!(before.is_empty(), "{} waits for {before:?}: {p:#?}", p.steps[d].step);
            }
        }
    }
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

#[test]
fn without_destroy_capability_strays_are_left() {
    let mut d = desired(1, 1, ModeRequest::Auto);
    d.capabilities.destroy = false;
    let mut o = Observed::default();
    o.nodes.insert("worker7".into(), NodeObs::new(Role::Worker, MachineState::Running));
    let p = plan(&d, &o);
    assert!(!p.steps.iter().any(|s| matches!(s.step, Step::DestroyNode { .. })));
}
