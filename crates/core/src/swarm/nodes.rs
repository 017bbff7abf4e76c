//! The swarm's nodes as its managers hold them: setting a node's role, availability and labels
//! (`docker node update`, `promote`, `demote`), removing the entries a node made again leaves
//! behind, and retrying an update that lost a race with the swarm's own.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bollard::models::{Node, NodeSpec as SwarmNodeSpec, NodeSpecAvailabilityEnum, NodeSpecRoleEnum, NodeState};
use bollard::query_parameters::{DeleteNodeOptionsBuilder, UpdateNodeOptionsBuilder};
use bollard::Docker;

use crate::error::{Error, Result};
use crate::topology::Role;
use crate::wait::{Look, Wait};

/// Sets a swarm node's role, availability and labels through a manager, like
/// `docker node update` (and `promote`/`demote`).
pub async fn configure(
    node: &str,
    manager: &Docker,
    node_id: &str,
    role: Role,
    drain: bool,
    labels: &BTreeMap<String, String>,
) -> Result<()> {
    let step = "set role, availability and labels";
    // The swarm updates a node's object on its own (a node that just joined registers), so
    // the version read may be stale by the time of the update: read it again and retry.
    update_race(node, "the swarm to take its new role, availability and labels")
        .poll(|| async {
            let current = match manager.inspect_node(node_id).await {
                Ok(n) => n,
                Err(e) => return Look::Fail(Error::engine(node, step, e)),
            };
            let version = current.version.and_then(|v| v.index).unwrap_or_default();
            let spec = SwarmNodeSpec {
                name: current.spec.and_then(|s| s.name),
                labels: Some(labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect::<HashMap<_, _>>()),
                role: Some(match role {
                    Role::Manager => NodeSpecRoleEnum::MANAGER,
                    Role::Worker => NodeSpecRoleEnum::WORKER,
                }),
                availability: Some(if drain {
                    NodeSpecAvailabilityEnum::DRAIN
                } else {
                    NodeSpecAvailabilityEnum::ACTIVE
                }),
            };
            let opts = UpdateNodeOptionsBuilder::new().version(version as i64).build();
            update_look(manager.update_node(node_id, spec, opts).await, |e| Error::engine(node, step, e))
        })
        .await
}

/// How long an update that loses races with the swarm's own is tried again. Generous: on a
/// slow machine (QEMU without KVM) a node that has just started updates its own object for
/// tens of seconds, and each read and update takes seconds; 3 s failed there, in CI.
pub const UPDATE_RETRY: Duration = Duration::from_secs(30);

/// The wait for an update of a swarm object that may lose a race with the swarm's own: each
/// look reads the object's version and updates it, and answers with [`update_look`].
pub fn update_race(node: &str, what: &str) -> Wait {
    Wait::new(node, what, UPDATE_RETRY).every(Duration::from_millis(200))
}

/// What an update's result means to [`update_race`]: done; not yet, when the swarm said
/// "update out of sequence" (read again and retry); or failed, with `fail`'s error.
pub fn update_look<T>(
    result: std::result::Result<T, bollard::errors::Error>,
    fail: impl FnOnce(bollard::errors::Error) -> Error,
) -> Look<T> {
    match result {
        Ok(v) => Look::Done(v),
        Err(e) if out_of_sequence(&e) => Look::NotYet(Box::new(fail(e))),
        Err(e) => Look::Fail(fail(e)),
    }
}

/// Whether the swarm refused an update because the object changed since it was read
/// ("update out of sequence"): reading it again and retrying is the answer.
pub fn out_of_sequence(e: &bollard::errors::Error) -> bool {
    crate::error::engine_message(e).contains("update out of sequence")
}

/// Whether the swarm refused a membership change because it would lose its quorum.
pub fn would_lose_quorum(e: &bollard::errors::Error) -> bool {
    crate::error::engine_message(e).contains("would result in a loss of quorum")
}

/// Removes the swarm's entries for `hostname` (other than `keep_id`) that are down or, for a
/// manager, unreachable: what is left of a node that was destroyed and made again, or lost. A
/// manager's entry is demoted first, which takes it out of the Raft membership (a member
/// cannot be removed), so the quorum is counted over managers that exist: a lost manager left
/// in the membership makes 3 managers count as 4, and one more failure would lose the quorum.
/// `node` names lab's node for errors.
pub async fn forget_stale(node: &str, manager: &Docker, hostname: &str, keep_id: Option<&str>) -> Result<()> {
    let step = "remove what is left of it in the swarm";
    let nodes = manager.list_nodes(None).await.map_err(|e| Error::engine(node, step, e))?;
    for n in nodes.iter().filter(|n| stale(n, hostname, keep_id)) {
        let id = n.id.clone().unwrap_or_default();
        tracing::info!(node, %id, "removing a stale swarm entry");
        if n.manager_status.is_some() {
            demote(node, manager, &id).await?;
        }
        let opts = DeleteNodeOptionsBuilder::new().force(true).build();
        match manager.delete_node(&id, Some(opts)).await {
            Ok(()) => {}
            Err(e) if crate::error::is_not_found(&e) => {}
            Err(e) => return Err(Error::engine(node, step, e)),
        }
    }
    Ok(())
}

/// `docker node demote ID` through `manager`, then waits until the swarm no longer counts it
/// among its managers (bounded): the Raft membership change is committed by then.
pub async fn demote(node: &str, manager: &Docker, id: &str) -> Result<()> {
    let step = "demote it out of the managers' Raft membership";
    update_race(node, "the swarm to take its demotion")
        .poll(|| async {
            let current = match manager.inspect_node(id).await {
                Ok(n) => n,
                Err(e) if crate::error::is_not_found(&e) => return Look::Done(()),
                Err(e) => return Look::Fail(Error::engine(node, step, e)),
            };
            let version = current.version.and_then(|v| v.index).unwrap_or_default();
            let mut spec = current.spec.unwrap_or_default();
            if spec.role == Some(NodeSpecRoleEnum::WORKER) {
                return Look::Done(());
            }
            spec.role = Some(NodeSpecRoleEnum::WORKER);
            let opts = UpdateNodeOptionsBuilder::new().version(version as i64).build();
            update_look(manager.update_node(id, spec, opts).await, |e| Error::engine(node, step, e))
        })
        .await?;
    Wait::new(node, "the swarm to stop counting it as a manager after its demotion", DEMOTE_TIMEOUT)
        .every(Duration::from_millis(250))
        .poll(|| async {
            match manager.inspect_node(id).await {
                Ok(n) if n.manager_status.is_none() => Look::Done(()),
                Err(e) if crate::error::is_not_found(&e) => Look::Done(()),
                Err(e) => Look::Fail(Error::engine(node, step, e)),
                Ok(_) => Look::not_yet("the swarm still lists it with a manager status"),
            }
        })
        .await
}

/// How long a demotion gets to leave the Raft membership.
const DEMOTE_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether a listed swarm node is what is left of `hostname` (other than `keep_id`): down (or
/// unknown, as a forced new cluster leaves its former managers), or a manager the others
/// cannot reach.
fn stale(n: &Node, hostname: &str, keep_id: Option<&str>) -> bool {
    let host = n.description.as_ref().and_then(|d| d.hostname.as_deref()).unwrap_or_default();
    // After `swarm init --force-new-cluster`, the managers left behind read Unknown.
    let down = matches!(
        n.status.as_ref().and_then(|s| s.state),
        Some(NodeState::DOWN | NodeState::UNKNOWN | NodeState::DISCONNECTED)
    );
    let unreachable =
        n.manager_status.as_ref().and_then(|m| m.reachability) == Some(bollard::models::Reachability::UNREACHABLE);
    // A node that has just joined reads Unknown, with no hostname yet (its description comes
    // with its first session): with workers joining side by side, one's entry read that way
    // while another asked for the stale entries of its own hostname, read as "" the same
    // way, and was removed ("node ... not found" when its role was set next).
    !hostname.is_empty() && host == hostname && n.id.as_deref() != keep_id && (down || unreachable)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `up` met "update out of sequence" from a node update racing the swarm's own (a node
    /// that had just joined); only that refusal is retried.
    #[test]
    fn only_a_stale_version_is_retried() {
        let stale = bollard::errors::Error::DockerResponseServerError {
            status_code: 500,
            message: "rpc error: code = Unknown desc = update out of sequence".into(),
        };
        assert!(out_of_sequence(&stale));
        let other =
            bollard::errors::Error::DockerResponseServerError { status_code: 404, message: "node not found".into() };
        assert!(!out_of_sequence(&other));
        let quorum = bollard::errors::Error::DockerResponseServerError {
            status_code: 500,
            message: "rpc error: code = FailedPrecondition desc = can't remove member from the raft: this would \
                      result in a loss of quorum"
                .into(),
        };
        assert!(would_lose_quorum(&quorum) && !out_of_sequence(&quorum));
        assert!(!would_lose_quorum(&other));
    }

    #[test]
    fn only_a_down_or_unreachable_entry_of_the_same_host_is_stale() {
        use bollard::models::{NodeDescription, NodeStatus};
        let entry = |id: &str, host: &str, state: NodeState| Node {
            id: Some(id.into()),
            description: Some(NodeDescription { hostname: Some(host.into()), ..Default::default() }),
            status: Some(NodeStatus { state: Some(state), ..Default::default() }),
            ..Default::default()
        };
        let new = Some("new");
        assert!(stale(&entry("old", "worker1", NodeState::DOWN), "worker1", new));
        assert!(stale(&entry("old", "worker1", NodeState::DOWN), "worker1", None), "before the join");
        assert!(!stale(&entry("new", "worker1", NodeState::DOWN), "worker1", new), "the node itself");
        assert!(!stale(&entry("old", "worker1", NodeState::READY), "worker1", new), "one that is up");
        assert!(!stale(&entry("old", "worker2", NodeState::DOWN), "worker1", new), "another host");
        // A lost manager can still read Ready for a while; the others cannot reach it.
        let mut lost = entry("old", "manager1", NodeState::READY);
        lost.manager_status = Some(bollard::models::ManagerStatus {
            reachability: Some(bollard::models::Reachability::UNREACHABLE),
            ..Default::default()
        });
        assert!(stale(&lost, "manager1", None));
        // Workers joining side by side: entries that have just joined read Unknown, with no
        // hostname yet; none is ever what is left of another node.
        let fresh = Node {
            id: Some("fresh".into()),
            status: Some(NodeStatus { state: Some(NodeState::UNKNOWN), ..Default::default() }),
            ..Default::default()
        };
        assert!(!stale(&fresh, "", Some("new")), "a fresh entry read by a node as fresh");
        assert!(!stale(&entry("fresh", "", NodeState::UNKNOWN), "", None));
        // What `swarm init --force-new-cluster` leaves of the other managers.
        assert!(stale(&entry("old", "manager2", NodeState::UNKNOWN), "manager2", Some("new")));
    }
}
