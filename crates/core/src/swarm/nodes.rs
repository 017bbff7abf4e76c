//! The swarm's nodes as its managers hold them: setting a node's role, availability and labels
//! (`docker node update`, `promote`, `demote`), removing the entries a node made again leaves
//! behind, and retrying an update that lost a race with the swarm's own.

use std::collections::{BTreeMap, HashMap};

use bollard::models::{Node, NodeSpec as SwarmNodeSpec, NodeSpecAvailabilityEnum, NodeSpecRoleEnum, NodeState};
use bollard::query_parameters::{DeleteNodeOptionsBuilder, UpdateNodeOptionsBuilder};
use bollard::Docker;

use crate::error::{Error, Result};
use crate::topology::Role;

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
    let mut attempt = 0;
    loop {
        attempt += 1;
        let current = manager.inspect_node(node_id).await.map_err(|e| Error::engine(node, step, e))?;
        let version = current.version.and_then(|v| v.index).unwrap_or_default();
        let spec = SwarmNodeSpec {
            name: current.spec.and_then(|s| s.name),
            labels: Some(labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect::<HashMap<_, _>>()),
            role: Some(match role {
                Role::Manager => NodeSpecRoleEnum::MANAGER,
                Role::Worker => NodeSpecRoleEnum::WORKER,
            }),
            availability: Some(if drain { NodeSpecAvailabilityEnum::DRAIN } else { NodeSpecAvailabilityEnum::ACTIVE }),
        };
        match manager.update_node(node_id, spec, UpdateNodeOptionsBuilder::new().version(version as i64).build()).await
        {
            Ok(()) => return Ok(()),
            Err(e) if out_of_sequence(&e) && attempt < UPDATE_ATTEMPTS => {
                tokio::time::sleep(std::time::Duration::from_millis(100 * attempt as u64)).await;
            }
            Err(e) => return Err(Error::engine(node, step, e)),
        }
    }
}

/// How many times an update that lost a race with the swarm's own is tried.
pub const UPDATE_ATTEMPTS: u32 = 5;

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
    let start = std::time::Instant::now();
    let mut attempt = 0;
    while attempt < UPDATE_ATTEMPTS {
        attempt += 1;
        let current = match manager.inspect_node(id).await {
            Ok(n) => n,
            Err(e) if crate::error::is_not_found(&e) => return Ok(()),
            Err(e) => return Err(Error::engine(node, step, e)),
        };
        let version = current.version.and_then(|v| v.index).unwrap_or_default();
        let mut spec = current.spec.unwrap_or_default();
        if spec.role == Some(NodeSpecRoleEnum::WORKER) {
            break;
        }
        spec.role = Some(NodeSpecRoleEnum::WORKER);
        match manager.update_node(id, spec, UpdateNodeOptionsBuilder::new().version(version as i64).build()).await {
            Ok(()) => break,
            Err(e) if out_of_sequence(&e) && attempt < UPDATE_ATTEMPTS => {
                tokio::time::sleep(std::time::Duration::from_millis(100 * attempt as u64)).await;
            }
            // A manager that just joined is not yet counted reachable, so the swarm refuses a
            // change that would leave it the quorum (seen after a killed --force-new-cluster,
            // LAB_KILL_SEED=1): wait for it, bounded, without spending an attempt.
            Err(e) if would_lose_quorum(&e) && start.elapsed() < DEMOTE_TIMEOUT => {
                attempt -= 1;
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
            Err(e) => return Err(Error::engine(node, step, e)),
        }
    }
    let deadline = std::time::Instant::now() + DEMOTE_TIMEOUT;
    loop {
        match manager.inspect_node(id).await {
            Ok(n) if n.manager_status.is_none() => return Ok(()),
            Err(e) if crate::error::is_not_found(&e) => return Ok(()),
            Err(e) => return Err(Error::engine(node, step, e)),
            Ok(_) if std::time::Instant::now() >= deadline => {
                return Err(Error::node(
                    node,
                    step,
                    format!("the swarm still counts it as a manager {} s after its demotion", DEMOTE_TIMEOUT.as_secs()),
                ))
            }
            Ok(_) => tokio::time::sleep(std::time::Duration::from_millis(250)).await,
        }
    }
}

/// How long a demotion gets to leave the Raft membership.
const DEMOTE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

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
    host == hostname && n.id.as_deref() != keep_id && (down || unreachable)
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
        // What `swarm init --force-new-cluster` leaves of the other managers.
        assert!(stale(&entry("old", "manager2", NodeState::UNKNOWN), "manager2", Some("new")));
    }
}
