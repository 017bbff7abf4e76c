//! The swarm: forming it and keeping each node's membership, role, availability and labels
//! as the topology wants them, through the Docker API of each node (the calls `docker swarm
//! init --availability drain`, `docker swarm join` and `docker node update` make, without a
//! shell in between).
//!
//! - [`membership`]: init, join and leave on one engine, and the join token read at each join;
//! - [`nodes`]: a swarm node's spec as a manager sets it, stale entries of nodes made again,
//!   and the retry of an update that raced the swarm's own;
//! - [`quorum`]: the managers' Raft quorum, counted and put in words;
//! - [`steps`]: what the plan's swarm steps do on a cluster, through the [`Nodes`](crate::cluster::Nodes) seam.
//!
//! Neighbours: it works through [`crate::cluster`] and records nothing itself (the executor
//! keeps the [`SwarmRecord`](crate::state::SwarmRecord) a step returns); the registry and the
//! convergence loop build on it.

use bollard::models::{LocalNodeState, SwarmInfo};
use bollard::Docker;

pub mod membership;
pub mod nodes;
pub mod quorum;
pub mod steps;

pub use membership::{force_new_cluster, init, join, join_token, leave, record};
pub use nodes::{configure, forget_stale, out_of_sequence, UPDATE_ATTEMPTS};
pub use quorum::{Quorum, QuorumLoss};

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
    /// What its engine says went wrong with its swarm: on a manager of a swarm without a
    /// quorum, "The swarm does not have a leader", and then it cannot say the swarm's ID.
    pub error: Option<String>,
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
        error: swarm.error.filter(|e| !e.is_empty()),
        remote_managers: if active {
            swarm.remote_managers.unwrap_or_default().into_iter().filter_map(|m| m.addr).collect()
        } else {
            Vec::new()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
