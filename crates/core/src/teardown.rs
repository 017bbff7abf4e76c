//! Undoing `up` on machines lab may not destroy (hosts it was given over SSH): the registry
//! stack, its volume, the forwarders, and swarm membership, workers first. Every other
//! container, image and volume on the hosts is left alone.
//!
//! Which nodes are in the cluster's swarm is observation's call ([`crate::observe`]). The
//! engines are reached through the seam ([`Nodes`]) and asked only through [`Engines`], one
//! method per thing taken away; the order of the work, and what becomes of each failure, is
//! decided above that line, so the tests below check it against engines that answer by hand.

use std::time::Duration;

use bollard::query_parameters::{RemoveContainerOptionsBuilder, RemoveVolumeOptionsBuilder};
use futures_util::future::join_all;

use crate::error::{Error, Result};
use crate::plan::{Membership, Observed};
use crate::progress::Progress;
use crate::registry::{FORWARDER, NETWORK, SERVICE, VOLUME};
use crate::seam::Nodes;
use crate::topology::Topology;
use crate::{swarm, Role};

const GONE_TIMEOUT: Duration = Duration::from_secs(60);

/// Whether the engine said the thing is not there (404): what removing it would achieve.
fn missing(e: &Error) -> bool {
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<bollard::errors::Error>())
        .is_some_and(|e| matches!(e, bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }))
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
pub async fn dismantle(rt: &dyn Nodes) -> Result<()> {
    let observed = crate::observe::observe(rt).await?.observed;
    take_down(&rt.desired().topology, &observed, &Live(rt), &*rt.progress()).await
}

/// What taking a cluster down asks of its nodes' engines. Errors name the node and keep the
/// engine's own error as their source, so that "not there" (404) can be told apart.
#[async_trait::async_trait]
trait Engines: Send + Sync {
    /// Whether the engine of `node` answers.
    async fn reach(&self, node: &str) -> Result<()>;
    /// A manager of this cluster's swarm that answers: its node's name.
    async fn manager(&self) -> Result<String>;
    /// Removes the registry service through the manager on `node`.
    async fn remove_service(&self, node: &str) -> Result<()>;
    /// Removes the registry forwarder on `node`, running or not, with its anonymous volumes.
    async fn remove_forwarder(&self, node: &str) -> Result<()>;
    /// Waits, at most [`GONE_TIMEOUT`], until no registry task container, not even a stopped
    /// one, is left on `node`.
    async fn tasks_gone(&self, node: &str) -> Result<()>;
    /// Removes the registry stack's network on `node`.
    async fn remove_network(&self, node: &str) -> Result<()>;
    /// Removes the registry's data volume on `node`.
    async fn remove_volume(&self, node: &str) -> Result<()>;
    /// Makes `node` leave its swarm; not being in one is success.
    async fn leave(&self, node: &str) -> Result<()>;
}

/// [`dismantle`] once the cluster is observed.
async fn take_down(
    topology: &Topology,
    observed: &Observed,
    engines: &dyn Engines,
    progress: &dyn Progress,
) -> Result<()> {
    let ours = |node: &str| matches!(observed.nodes.get(node).map(|o| &o.swarm), Some(Membership::Member { .. }));
    let nodes = &topology.nodes;
    let probes = join_all(nodes.iter().map(|n| async move { (n, engines.reach(&n.name).await) })).await;
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
    match engines.manager().await {
        Ok(name) => match engines.remove_service(&name).await {
            Ok(()) => service_removed = true,
            Err(e) if missing(&e) => service_removed = true,
            Err(e) => failed.push(e.to_string()),
        },
        // Every manager answers and none is one: the swarm, and the service, are gone already.
        Err(_) if !manager_unreachable => service_removed = true,
        Err(_) => {}
    }
    if service_removed {
        progress.note(&format!("removed service {SERVICE}"));
    }
    let results = join_all(reachable.iter().map(|n| clean_node(engines, &n.name, service_removed))).await;
    for r in results {
        if let Err(e) = r {
            failed.push(e.to_string());
        }
    }
    if service_removed {
        // Workers first, then managers one at a time with the first manager last, so the swarm
        // always has a manager while others leave.
        let workers: Vec<_> = reachable.iter().filter(|n| n.role == Role::Worker && ours(&n.name)).collect();
        for r in join_all(workers.iter().map(|n| leave(engines, progress, &n.name))).await {
            if let Err(e) = r {
                failed.push(e.to_string());
            }
        }
        if failed.is_empty() {
            for n in nodes.iter().filter(|n| n.role == Role::Manager && ours(&n.name)).rev() {
                leave(engines, progress, &n.name).await?;
            }
        }
    }
    if failed.is_empty() {
        return Ok(());
    }
    Err(Error::op(
        format!("take down cluster {}", topology.cluster),
        format!("{} of {} nodes could not be cleaned: {}", failed.len(), nodes.len(), failed.join("; ")),
    )
    .with_hint("the cluster stays recorded; once those nodes answer again, run `lab down` again to finish"))
}

async fn leave(engines: &dyn Engines, progress: &dyn Progress, node: &str) -> Result<()> {
    engines.leave(node).await?;
    progress.note(&format!("{node} left the swarm"));
    Ok(())
}

/// Waits for the node's registry task container to go, then removes the forwarder, the
/// stack's network and the registry's volume there. While the service still exists (its
/// manager could not be reached), only the forwarder goes: its task may still use the volume.
async fn clean_node(engines: &dyn Engines, node: &str, service_removed: bool) -> Result<()> {
    match engines.remove_forwarder(node).await {
        Err(e) if !missing(&e) => return Err(e),
        _ => {}
    }
    if !service_removed {
        return Ok(());
    }
    engines.tasks_gone(node).await?;
    let _ = engines.remove_network(node).await;
    match engines.remove_volume(node).await {
        Err(e) if !missing(&e) => Err(e),
        _ => Ok(()),
    }
}

/// The engines, asked through bollard.
struct Live<'a>(&'a dyn Nodes);

#[async_trait::async_trait]
impl Engines for Live<'_> {
    async fn reach(&self, node: &str) -> Result<()> {
        self.0.engine(node).await.map(drop)
    }

    async fn manager(&self) -> Result<String> {
        Ok(self.0.manager().await?.0)
    }

    async fn remove_service(&self, node: &str) -> Result<()> {
        let docker = self.0.engine(node).await?.docker;
        docker.delete_service(SERVICE).await.map_err(|e| Error::engine(node, format!("remove service {SERVICE}"), e))
    }

    async fn remove_forwarder(&self, node: &str) -> Result<()> {
        let docker = self.0.engine(node).await?.docker;
        let opts = RemoveContainerOptionsBuilder::new().force(true).v(true).build();
        docker
            .remove_container(FORWARDER, Some(opts))
            .await
            .map_err(|e| Error::engine(node, format!("remove container {FORWARDER}"), e))
    }

    async fn tasks_gone(&self, node: &str) -> Result<()> {
        let docker = self.0.engine(node).await?.docker;
        let what = format!("the {SERVICE} task container to stop");
        crate::registry::wait_tasks_gone(node, &docker, true, &what, GONE_TIMEOUT).await
    }

    async fn remove_network(&self, node: &str) -> Result<()> {
        let docker = self.0.engine(node).await?.docker;
        docker.remove_network(NETWORK).await.map_err(|e| Error::engine(node, format!("remove network {NETWORK}"), e))
    }

    async fn remove_volume(&self, node: &str) -> Result<()> {
        let docker = self.0.engine(node).await?.docker;
        let opts = RemoveVolumeOptionsBuilder::new().build();
        docker
            .remove_volume(VOLUME, Some(opts))
            .await
            .map_err(|e| Error::engine(node, format!("remove volume {VOLUME}"), e))
    }

    async fn leave(&self, node: &str) -> Result<()> {
        let docker = self.0.engine(node).await?.docker;
        swarm::leave(node, &docker).await
    }
}
