//! Swarm membership through the Docker API of each node: init, join, leave, and setting a
//! node's role, availability and labels. The same calls `docker swarm init --availability
//! drain`, `docker swarm join` and `docker node update` make, without a shell in between.

use std::collections::{BTreeMap, HashMap};

use bollard::models::{
    LocalNodeState, Node, NodeSpec as SwarmNodeSpec, NodeSpecAvailabilityEnum, NodeSpecRoleEnum, NodeState, SwarmInfo,
    SwarmInitRequest, SwarmJoinRequest, SwarmSpec,
};
use bollard::query_parameters::{LeaveSwarmOptionsBuilder, UpdateNodeOptionsBuilder};
use bollard::Docker;

use crate::error::{Error, Result};
use crate::cluster::probe::CLUSTER_LABEL;
use crate::state::{Secret, SwarmRecord};
use crate::topology::Role;

/// The swarm's management port.
pub const SWARM_PORT: u16 = 2377;

/// What a node's own engine says of its swarm membership.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalView {
    /// In a swarm (active, pending or locked).
    pub active: bool,
    /// Still joining, or rejoining after its engine started.
    pub pending: bool,
    /// Its swarm node ID.
    pub node_id: Option<String>,
    /// Whether it is a manager that can answer for the swarm.
    pub manager: bool,
    /// The swarm's ID; only managers know it.
    pub cluster_id: Option<String>,
    /// The managers it knows, as `address:port`: all a worker can say of its swarm.
    pub remote_managers: Vec<String>,
}

/// Reads a node's own view of its membership.
pub async fn local_view(docker: &Docker) -> std::result::Result<LocalView, bollard::errors::Error> {
    Ok(view_of(docker.info().await?.swarm))
}

/// A node's view of its membership from the `Swarm` part of its `docker info`.
fn view_of(swarm: Option<SwarmInfo>) -> LocalView {
    let Some(swarm) = swarm else { return LocalView::default() };
    let active = matches!(
        swarm.local_node_state,
        Some(LocalNodeState::ACTIVE) | Some(LocalNodeState::PENDING) | Some(LocalNodeState::LOCKED)
    );
    LocalView {
        active,
        pending: swarm.local_node_state == Some(LocalNodeState::PENDING),
        node_id: swarm.node_id.filter(|s| !s.is_empty()),
        manager: active && swarm.control_available.unwrap_or(false),
        cluster_id: swarm.cluster.and_then(|c| c.id).filter(|s| !s.is_empty()),
        remote_managers: if active {
            swarm.remote_managers.unwrap_or_default().into_iter().filter_map(|m| m.addr).collect()
        } else {
            Vec::new()
        },
    }
}

/// `docker swarm init --advertise-addr ADDR` on `node`; returns the swarm's ID and address.
/// The swarm itself carries `lab.cluster=<cluster>` from its first moment, so an `up` killed
/// before it recorded the swarm finds it again as this cluster's.
pub async fn init(node: &str, docker: &Docker, advertise: &str, cluster: &str) -> Result<SwarmRecord> {
    let req = SwarmInitRequest {
        listen_addr: Some(format!("0.0.0.0:{SWARM_PORT}")),
        advertise_addr: Some(format!("{advertise}:{SWARM_PORT}")),
        spec: Some(SwarmSpec {
            labels: Some(HashMap::from([(CLUSTER_LABEL.to_string(), cluster.to_string())])),
            ..Default::default()
        }),
        ..Default::default()
    };
    docker.init_swarm(req).await.map_err(|e| Error::engine(node, "initialise the swarm", e))?;
    record(node, docker, advertise).await
}

/// Reads the swarm's ID from a manager.
pub async fn record(node: &str, docker: &Docker, advertise: &str) -> Result<SwarmRecord> {
    let swarm = docker.inspect_swarm().await.map_err(|e| Error::engine(node, "read the swarm's ID", e))?;
    Ok(SwarmRecord { id: swarm.id.unwrap_or_default(), manager_addr: format!("{advertise}:{SWARM_PORT}") })
}

/// The swarm's current join token for `role`, read from a manager (`manager`, named
/// `manager_node` for errors). Read at every join and never stored, so a rotated token
/// (`docker swarm join-token --rotate`) is simply the one used next.
pub async fn join_token(manager_node: &str, manager: &Docker, role: Role) -> Result<Secret> {
    let swarm =
        manager.inspect_swarm().await.map_err(|e| Error::engine(manager_node, "read the swarm's join token", e))?;
    let tokens = swarm.join_tokens.unwrap_or_default();
    let token = match role {
        Role::Manager => tokens.manager,
        Role::Worker => tokens.worker,
    };
    token
        .filter(|t| !t.is_empty())
        .map(Secret::new)
        .ok_or_else(|| Error::node(manager_node, "read the swarm's join token", "the manager returned no token"))
}

/// `docker swarm join --token T --advertise-addr ADDR MANAGER:2377` on `node`, where
/// `manager_addr` is `address:2377` of a manager that answers.
pub async fn join(
    node: &str,
    docker: &Docker,
    advertise: &str,
    manager_addr: &str,
    token: &Secret,
    role: Role,
) -> Result<()> {
    let req = SwarmJoinRequest {
        listen_addr: Some(format!("0.0.0.0:{SWARM_PORT}")),
        advertise_addr: Some(format!("{advertise}:{SWARM_PORT}")),
        remote_addrs: Some(vec![manager_addr.to_string()]),
        join_token: Some(token.expose().to_string()),
        ..Default::default()
    };
    docker.join_swarm(req).await.map_err(|e| Error::engine(node, format!("join the swarm as {role}"), e))
}

/// `docker swarm leave --force` on `node`. Not being in a swarm is success.
pub async fn leave(node: &str, docker: &Docker) -> Result<()> {
    match docker.leave_swarm(Some(LeaveSwarmOptionsBuilder::new().force(true).build())).await {
        Ok(()) => Ok(()),
        Err(bollard::errors::Error::DockerResponseServerError { status_code: 503, .. }) => Ok(()),
        Err(e) => Err(Error::engine(node, "leave the swarm", e)),
    }
}

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

/// Removes swarm node entries that are down and carry `hostname`: what is left of a node that
/// was destroyed and made again.
pub async fn forget_stale(manager: &Docker, hostname: &str, keep_id: &str) {
    let Ok(nodes) = manager.list_nodes(None).await else { return };
    for n in nodes.iter().filter(|n| stale(n, hostname, keep_id)) {
        let id = n.id.clone().unwrap_or_default();
        let _ = manager
            .delete_node(&id, Some(bollard::query_parameters::DeleteNodeOptionsBuilder::new().force(true).build()))
            .await;
    }
}

/// Whether a listed swarm node is what is left of `hostname` made again (as `keep_id`): down,
/// with that hostname, and not `keep_id`.
fn stale(n: &Node, hostname: &str, keep_id: &str) -> bool {
    let host = n.description.as_ref().and_then(|d| d.hostname.as_deref()).unwrap_or_default();
    let down = n.status.as_ref().and_then(|s| s.state) == Some(NodeState::DOWN);
    host == hostname && n.id.as_deref().unwrap_or_default() != keep_id && down
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
    }

    #[test]
    fn a_nodes_own_view_of_its_membership() {
        use bollard::models::{ClusterInfo, PeerNode};
        assert_eq!(view_of(None), LocalView::default());
        let info = |state: LocalNodeState, control: bool| SwarmInfo {
            local_node_state: Some(state),
            node_id: Some("n1".into()),
            control_available: Some(control),
            cluster: control.then(|| ClusterInfo { id: Some("S".into()), ..Default::default() }),
            remote_managers: Some(vec![PeerNode { node_id: None, addr: Some("10.0.0.1:2377".into()) }]),
            ..Default::default()
        };
        let manager = view_of(Some(info(LocalNodeState::ACTIVE, true)));
        assert!(manager.active && manager.manager && !manager.pending);
        assert_eq!((manager.node_id.as_deref(), manager.cluster_id.as_deref()), (Some("n1"), Some("S")));
        assert_eq!(manager.remote_managers, ["10.0.0.1:2377"]);
        let worker = view_of(Some(info(LocalNodeState::ACTIVE, false)));
        assert!(worker.active && !worker.manager && worker.cluster_id.is_none());
        // Rejoining, or locked: still in the swarm.
        let pending = view_of(Some(info(LocalNodeState::PENDING, false)));
        assert!(pending.active && pending.pending);
        assert!(view_of(Some(info(LocalNodeState::LOCKED, false))).active);
        // Not in a swarm (or just left it): neither a manager nor managed, whatever else it says.
        for state in [LocalNodeState::INACTIVE, LocalNodeState::ERROR, LocalNodeState::EMPTY] {
            let v = view_of(Some(info(state, true)));
            assert!(!v.active && !v.manager && v.remote_managers.is_empty(), "{state:?}: {v:?}");
        }
        // Empty IDs are none.
        let mut blank = info(LocalNodeState::INACTIVE, false);
        blank.node_id = Some(String::new());
        assert_eq!(view_of(Some(blank)).node_id, None);
    }

    #[test]
    fn only_a_down_entry_of_the_same_host_made_again_is_stale() {
        use bollard::models::{NodeDescription, NodeStatus};
        let entry = |id: &str, host: &str, state: NodeState| Node {
            id: Some(id.into()),
            description: Some(NodeDescription { hostname: Some(host.into()), ..Default::default() }),
            status: Some(NodeStatus { state: Some(state), ..Default::default() }),
            ..Default::default()
        };
        assert!(stale(&entry("old", "worker1", NodeState::DOWN), "worker1", "new"));
        assert!(!stale(&entry("new", "worker1", NodeState::DOWN), "worker1", "new"), "the node itself");
        assert!(!stale(&entry("old", "worker1", NodeState::READY), "worker1", "new"), "one that is up");
        assert!(!stale(&entry("old", "worker2", NodeState::DOWN), "worker1", "new"), "another host");
    }
}
