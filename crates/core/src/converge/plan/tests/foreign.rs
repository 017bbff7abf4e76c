//! Nodes in a swarm that is not the cluster's: refused without `--force`, and never a node
//! of the cluster itself.

use super::*;

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
