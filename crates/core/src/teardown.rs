//! Undoing `up` on machines lab may not destroy (hosts it was given over SSH): the registry
//! stack, its volume, the forwarders, and swarm membership, workers first. Every other
//! container, image and volume on the hosts is left alone.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bollard::query_parameters::{
    ListContainersOptionsBuilder, RemoveContainerOptionsBuilder, RemoveVolumeOptionsBuilder,
};
use futures_util::future::join_all;

use crate::error::{engine_message, Error, Result};
use crate::exec::Runtime;
use crate::registry::{FORWARDER, NETWORK, SERVICE, VOLUME};
use crate::{swarm, Role};

const GONE_TIMEOUT: Duration = Duration::from_secs(60);

fn missing(e: &bollard::errors::Error) -> bool {
    matches!(e, bollard::errors::Error::DockerResponseServerError { status_code: 404, .. })
}

/// Removes the registry stack and forwarders and makes every node leave the swarm.
pub async fn dismantle(rt: &Runtime) -> Result<()> {
    if let Ok((name, mgr)) = rt.manager().await {
        match mgr.delete_service(SERVICE).await {
            Ok(()) => {}
            Err(e) if missing(&e) => {}
            Err(e) => return Err(Error::node(&name, format!("remove service {SERVICE}"), engine_message(&e))),
        }
        rt.progress.note(&format!("removed service {SERVICE}"));
    }
    let nodes: Vec<_> = rt.desired.topology.nodes.clone();
    let results = join_all(nodes.iter().map(|n| clean_node(rt, &n.name))).await;
    for r in results {
        r?;
    }
    // Workers first, then managers one at a time with the first manager last, so the swarm
    // always has a manager while others leave.
    let workers: Vec<_> = nodes.iter().filter(|n| n.role == Role::Worker).collect();
    for r in join_all(workers.iter().map(|n| leave(rt, &n.name))).await {
        r?;
    }
    for n in nodes.iter().filter(|n| n.role == Role::Manager).rev() {
        leave(rt, &n.name).await?;
    }
    Ok(())
}

async fn leave(rt: &Runtime, node: &str) -> Result<()> {
    let Ok(e) = rt.engine(node).await else { return Ok(()) };
    swarm::leave(node, &e.docker).await?;
    rt.progress.note(&format!("{node} left the swarm"));
    Ok(())
}

/// Waits for the node's registry task container to go, then removes the forwarder, the
/// stack's network and the registry's volume there.
async fn clean_node(rt: &Runtime, node: &str) -> Result<()> {
    let Ok(e) = rt.engine(node).await else { return Ok(()) };
    let docker = &e.docker;
    match docker
        .remove_container(FORWARDER, Some(RemoveContainerOptionsBuilder::new().force(true).v(true).build()))
        .await
    {
        Ok(()) => {}
        Err(err) if missing(&err) => {}
        Err(err) => return Err(Error::node(node, format!("remove container {FORWARDER}"), engine_message(&err))),
    }
    let filters = HashMap::from([("label", vec![format!("com.docker.swarm.service.name={SERVICE}")])]);
    let start = Instant::now();
    loop {
        let tasks = docker
            .list_containers(Some(ListContainersOptionsBuilder::new().all(true).filters(&filters).build()))
            .await
            .unwrap_or_default();
        if tasks.is_empty() {
            break;
        }
        if start.elapsed() > GONE_TIMEOUT {
            return Err(Error::Timeout {
                node: node.into(),
                what: format!("the {SERVICE} task container to stop"),
                secs: GONE_TIMEOUT.as_secs(),
                hint: None,
            });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let _ = docker.remove_network(NETWORK).await;
    match docker.remove_volume(VOLUME, Some(RemoveVolumeOptionsBuilder::new().build())).await {
        Ok(()) => {}
        Err(err) if missing(&err) => {}
        Err(err) => return Err(Error::node(node, format!("remove volume {VOLUME}"), engine_message(&err))),
    }
    Ok(())
}
