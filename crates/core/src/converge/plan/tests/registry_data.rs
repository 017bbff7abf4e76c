//! The registry's node and its data: moving it, refusing to lose it, and putting back a
//! pin moved by hand.

use super::*;

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

/// Seen in CI (`interrupted`, seed 1): `up --workers 2` from a lone manager that held the
/// registry was killed after the nodes were labelled and before the data moved. Taking the
/// label off the manager made the swarm start the registry's task on worker1, on a volume its
/// engine made empty, and the next `up` counted that as the registry's data: every image
/// seemed lost. The labels that move the task now wait for the data's move.
#[test]
fn the_registry_nodes_labels_change_only_after_its_data_moved() {
    let one = desired(1, 0, ModeRequest::Auto);
    let o = converged(&one);
    assert!(o.nodes["manager"].registry_data, "the model keeps the data on the manager");
    let d = desired(1, 2, ModeRequest::Auto);
    let p = plan(&d, &o);
    let pos =
        |want: &Step| p.steps.iter().position(|s| &s.step == want).unwrap_or_else(|| panic!("{want} not in {p:#?}"));
    let mv = pos(&Step::MoveRegistryData { from: "manager".into(), to: "worker1".into() });
    for node in ["manager", "worker1"] {
        let c = pos(&Step::ConfigureNode { node: node.into() });
        assert!(p.steps[c].after.contains(&mv), "{node} labelled before the data moved: {p:#?}");
    }
    let mut o2 = o.clone();
    execute(&d, &mut o2);
    assert!(o2.nodes["worker1"].registry_data && !o2.nodes["manager"].registry_data, "{o2:#?}");
    assert!(plan(&d, &o2).is_empty());
}

/// The same, after it happened under an older lab: the task runs on the registry's node, on
/// a volume its engine made, while the node the registry last answered from keeps its whole
/// copy. That copy is added to the registry's node's (a union: nothing pushed to either is
/// lost). A copy on a node the registry did not last answer from is not (see
/// `a_pin_moved_by_hand_whose_task_never_ran_moves_nothing`).
#[test]
fn the_copy_the_registry_last_answered_from_is_added_to_its_nodes() {
    let d = desired(1, 2, ModeRequest::Auto);
    let mut o = converged(&d);
    assert_eq!(o.registry.as_ref().unwrap().running_on.as_deref(), Some("worker1"));
    o.nodes.get_mut("manager").unwrap().registry_data = true;
    assert!(plan(&d, &o).is_empty(), "a copy lab knows nothing of moves: {:#?}", plan(&d, &o));
    o.data_last_on = Some("manager".into());
    let p = plan(&d, &o);
    assert!(p.blocked.is_empty(), "{p:#?}");
    assert!(
        p.steps.iter().any(|s| s.step == Step::MoveRegistryData { from: "manager".into(), to: "worker1".into() }),
        "{p:#?}"
    );
    let mut o2 = o.clone();
    execute(&d, &mut o2);
    assert!(o2.nodes["worker1"].registry_data && !o2.nodes["manager"].registry_data, "{o2:#?}");
    assert!(plan(&d, &o2).is_empty());
}
