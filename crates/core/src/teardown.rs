//! Undoing `up` on machines lab may not destroy (hosts it was given over SSH): the registry
//! stack, its volume, the forwarders, and swarm membership, workers first. Every other
//! container, image and volume on the hosts is left alone.

use std::time::Duration;

use bollard::query_parameters::{RemoveContainerOptionsBuilder, RemoveVolumeOptionsBuilder};
use futures_util::future::join_all;

use crate::error::{engine_message, Error, Result};
use crate::exec::Runtime;
use crate::plan::Membership;
use crate::registry::{FORWARDER, NETWORK, SERVICE, VOLUME};
use crate::{swarm, Role};

const GONE_TIMEOUT: Duration = Duration::from_secs(60);

fn missing(e: &bollard::errors::Error) -> bool {
    matches!(e, bollard::errors::Error::DockerResponseServerError { status_code: 404, .. })
}

/// Removes the registry stack and forwarders and makes every node leave the swarm.
///
/// A node whose engine does not answer is not skipped silently: the others are cleaned as far
/// as is safe, and the result is an error naming every node that could not be cleaned, so the
/// caller keeps the cluster's record and a later `down` finishes the job. To make that later
/// run possible, the managers stay in the swarm while any node is out of reach (a node that
/// comes back rejoins it and is told the service is gone), and while the service could not be
/// removed nothing leaves the swarm and no volume is touched.
///
/// Which nodes are in this cluster's swarm is observation's call, as for `up`: a node in a
/// swarm that is not this cluster's stays in it, and no other swarm's service is touched.
pub async fn dismantle(rt: &Runtime) -> Result<()> {
    let observed = crate::observe::observe(rt).await?.observed;
    let ours = |node: &str| matches!(observed.nodes.get(node).map(|o| &o.swarm), Some(Membership::Member { .. }));
    let nodes: Vec<_> = rt.desired.topology.nodes.clone();
    let probes = join_all(nodes.iter().map(|n| async move { (n, rt.engine(&n.name).await) })).await;
    let mut failed: Vec<String> = Vec::new();
    let mut reachable = Vec::new();
    for (n, r) in probes {
        match r {
            Ok(_) => reachable.push(n),
            // The error names the node already.
            Err(e) => failed.push(e.to_string()),
        }
    }
    let manager_unreachable =
        nodes.iter().any(|n| n.role == Role::Manager && !reachable.iter().any(|r| r.name == n.name));
    let mut service_removed = false;
    match rt.manager().await {
        Ok((name, mgr)) => match mgr.delete_service(SERVICE).await {
            Ok(()) => service_removed = true,
            Err(e) if missing(&e) => service_removed = true,
            Err(e) => {
                failed.push(Error::node(&name, format!("remove service {SERVICE}"), engine_message(&e)).to_string())
            }
        },
        // Every manager answers and none is one: the swarm, and the service, are gone already.
        Err(_) if !manager_unreachable => service_removed = true,
        Err(_) => {}
    }
    if service_removed {
        rt.progress.note(&format!("removed service {SERVICE}"));
    }
    let results = join_all(reachable.iter().map(|n| clean_node(rt, &n.name, service_removed))).await;
    for r in results {
        if let Err(e) = r {
            failed.push(e.to_string());
        }
    }
    if service_removed {
        // Workers first, then managers one at a time with the first manager last, so the swarm
        // always has a manager while others leave.
        let workers: Vec<_> = reachable.iter().filter(|n| n.role == Role::Worker && ours(&n.name)).collect();
        for r in join_all(workers.iter().map(|n| leave(rt, &n.name))).await {
            if let Err(e) = r {
                failed.push(e.to_string());
            }
        }
        if failed.is_empty() {
            for n in nodes.iter().filter(|n| n.role == Role::Manager && ours(&n.name)).rev() {
                leave(rt, &n.name).await?;
            }
        }
    }
    if failed.is_empty() {
        return Ok(());
    }
    Err(Error::op(
        format!("take down cluster {}", rt.desired.topology.cluster),
        format!("{} of {} nodes could not be cleaned: {}", failed.len(), nodes.len(), failed.join("; ")),
    )
    .with_hint("the cluster stays recorded; once those nodes answer again, run `lab down` again to finish"))
}

async fn leave(rt: &Runtime, node: &str) -> Result<()> {
    let e = rt.engine(node).await?;
    swarm::leave(node, &e.docker).await?;
    rt.progress.note(&format!("{node} left the swarm"));
    Ok(())
}

/// Waits for the node's registry task container to go, then removes the forwarder, the
/// stack's network and the registry's volume there. While the service still exists (its
/// manager could not be reached), only the forwarder goes: its task may still use the volume.
async fn clean_node(rt: &Runtime, node: &str, service_removed: bool) -> Result<()> {
    let e = rt.engine(node).await?;
    let docker = &e.docker;
    match docker
        .remove_container(FORWARDER, Some(RemoveContainerOptionsBuilder::new().force(true).v(true).build()))
        .await
    {
        Ok(()) => {}
        Err(err) if missing(&err) => {}
        Err(err) => return Err(Error::node(node, format!("remove container {FORWARDER}"), engine_message(&err))),
    }
    if !service_removed {
        return Ok(());
    }
    crate::registry::wait_tasks_gone(
        node,
        docker,
        true,
        &format!("the {SERVICE} task container to stop"),
        GONE_TIMEOUT,
    )
    .await?;
    let _ = docker.remove_network(NETWORK).await;
    match docker.remove_volume(VOLUME, Some(RemoveVolumeOptionsBuilder::new().build())).await {
        Ok(()) => {}
        Err(err) if missing(&err) => {}
        Err(err) => return Err(Error::node(node, format!("remove volume {VOLUME}"), engine_message(&err))),
    }
    Ok(())
}
