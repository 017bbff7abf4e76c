//! Joining and leaving a swarm on one node's engine: `swarm init`, `swarm join` with a token
//! read from a manager at that moment, and `swarm leave --force`.

use std::collections::HashMap;

use bollard::models::{SwarmInitRequest, SwarmJoinRequest, SwarmSpec};
use bollard::query_parameters::LeaveSwarmOptionsBuilder;
use bollard::Docker;

use super::SWARM_PORT;
use crate::cluster::probe::CLUSTER_LABEL;
use crate::error::{Error, Result};
use crate::state::{Secret, SwarmRecord};
use crate::topology::Role;

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

/// `docker swarm init --force-new-cluster` on `node`, a manager of a swarm that lost its
/// quorum: it becomes the only manager of a new Raft cluster that keeps the swarm's ID,
/// services, secrets, configs and workers (moby's admin guide, "Recover from losing the
/// quorum"). It works on a manager that still leads, too (a leader that lost the majority
/// leads on for an election timeout). The other managers' entries stay behind as managers
/// outside the Raft membership, without a manager status and reading Unknown; joining a node
/// made again removes its own (see [`super::forget_stale`]), with no demotion to wait for.
pub async fn force_new_cluster(node: &str, docker: &Docker, advertise: &str) -> Result<SwarmRecord> {
    let req = SwarmInitRequest {
        listen_addr: Some(format!("0.0.0.0:{SWARM_PORT}")),
        advertise_addr: Some(format!("{advertise}:{SWARM_PORT}")),
        force_new_cluster: Some(true),
        ..Default::default()
    };
    docker
        .init_swarm(req)
        .await
        .map_err(|e| Error::engine(node, "force a new cluster (swarm init --force-new-cluster)", e))?;
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
