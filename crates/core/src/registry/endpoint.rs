//! Where the registry's HTTP API is reached now: its node, that node's engine and its task's
//! container, for [`crate::images::distribution`].

use std::collections::HashMap;

use bollard::query_parameters::ListTasksOptionsBuilder;
use bollard::Docker;

use crate::cluster::Nodes;
use crate::error::{Error, Result};
use crate::registry::observe;
use crate::registry::SERVICE;
use std::sync::Arc;

/// Where the registry is, and how to reach it.
#[derive(Clone)]
pub struct Endpoint {
    /// The registry's node, for errors.
    pub node: String,
    /// That node's engine.
    pub docker: Docker,
    /// The registry's task container on it.
    pub container: String,
    /// In mutual TLS: how to speak TLS to it (the cluster's CA, lab's client certificate).
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// The registry's port at its node's address (what `lab registry` prints): where this
    /// machine may reach it without the engine's relay, as skopeo does. Tried first, briefly;
    /// the relay through the engine always works (VMs behind user networking, hosts behind a
    /// firewall).
    pub direct: Option<std::net::SocketAddr>,
}

/// Where the registry runs now: its node, that node's engine and its task's container, for
/// [`crate::images::distribution`]. A registry with no running task is an error naming the cause.
pub async fn endpoint(rt: &dyn Nodes) -> Result<crate::registry::Endpoint> {
    let step = "find the cluster's registry";
    let (mgr_name, mgr) = rt.manager().await?;
    let filters = HashMap::from([("service", vec![SERVICE]), ("desired-state", vec!["running"])]);
    let tasks = mgr
        .list_tasks(Some(ListTasksOptionsBuilder::new().filters(&filters).build()))
        .await
        .map_err(|e| Error::engine(&mgr_name, step, e))?;
    let running =
        tasks.iter().find(|t| t.status.as_ref().and_then(|s| s.state) == Some(bollard::models::TaskState::RUNNING));
    let Some(task) = running else {
        // The task waits for its node: that the node is stopped is the cause to name.
        let reg = rt.desired().topology.registry_node().name.clone();
        if let Some(e) = node_down(rt, &reg).await {
            return Err(e);
        }
        let why = match tasks.first().and_then(|t| t.status.as_ref()) {
            Some(s) => format!(
                "its task is {}{}",
                s.state.map(|s| s.to_string()).unwrap_or_default(),
                s.err.as_deref().map(|e| format!(": {e}")).unwrap_or_default()
            ),
            None if observe(&mgr).await.is_none() => "the swarm has no registry service".to_string(),
            None => "the registry service has no task".to_string(),
        };
        return Err(Error::node(&mgr_name, step, why).with_hint("`lab up` deploys it; `lab check` says more"));
    };
    let container = task
        .status
        .as_ref()
        .and_then(|s| s.container_status.as_ref())
        .and_then(|c| c.container_id.clone())
        .ok_or_else(|| Error::node(&mgr_name, step, "the registry's running task names no container"))?;
    let node_id = task.node_id.clone().unwrap_or_default();
    let swarm_node = mgr.inspect_node(&node_id).await.map_err(|e| Error::engine(&mgr_name, step, e))?;
    let labels = swarm_node.spec.and_then(|s| s.labels).unwrap_or_default();
    let node =
        labels.get("lab.node").cloned().or_else(|| swarm_node.description.and_then(|d| d.hostname)).unwrap_or(node_id);
    // The swarm takes a while to notice a node stopped, and lists its task as running.
    let (docker, advertised) = match rt.engine(&node).await {
        Ok(e) => (e.docker, e.advertise_addr),
        Err(e) => return Err(node_down(rt, &node).await.unwrap_or(e)),
    };
    // A registry deployed with mutual TLS is spoken to in TLS with the cluster's certificates.
    let tls = match observe(&mgr).await.and_then(|r| r.tls) {
        None => None,
        Some(_) => {
            let m = crate::tls::load(&crate::tls::dir(&rt.cluster_dir()))?.ok_or_else(|| {
                Error::node(
                    &node,
                    step,
                    "the registry requires a client certificate, and lab has none for this cluster",
                )
                .with_hint("`lab up` makes new certificates and gives them to the registry and every node")
            })?;
            Some(crate::tls::client_config(&m).map_err(|e| Error::caused(&node, step, e))?)
        }
    };
    let port = if tls.is_some() { crate::registry::TLS_PORT } else { crate::registry::PORT };
    let direct = advertised.parse::<std::net::IpAddr>().ok().map(|ip| std::net::SocketAddr::new(ip, port));
    Ok(crate::registry::Endpoint { node, docker, container, tls, direct })
}

/// The error that says the registry's node `node` is not running, if it is not.
async fn node_down(rt: &dyn Nodes, node: &str) -> Option<Error> {
    let down = crate::registry::check::machines_down(rt).await;
    let why = down.get(node)?;
    let fix = if why == "missing" { "`lab up` makes it" } else { "`lab up` starts it" };
    Some(
        Error::node(node, "find the cluster's registry", format!("the registry's node is {why}"))
            .with_hint(format!("{fix}, and the registry with it")),
    )
}
