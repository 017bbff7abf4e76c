//! The plan's swarm steps, carried out on a cluster through the [`Nodes`] seam: initialise the
//! swarm on the first manager, join a node, set a node's role, availability and labels, make
//! a node leave, and forget a destroyed node's entry. They change nothing of lab's state; the
//! executor records the [`SwarmRecord`] they return.

use std::time::Duration;

use crate::cluster::{Desired, Nodes};
use crate::error::{Error, Result};
use crate::state::SwarmRecord;
use crate::topology::Role;
use crate::wait::Wait;

/// `InitSwarm`: a new swarm on `node`, carrying the cluster's label; returns what to record.
///
/// A machine made again on the disk it had (a `lab down` killed after it removed the
/// containers and before the volumes) comes back in the swarm it was in, with its services
/// and the registry's data. When the swarm `node` turns out to be in is this cluster's (its
/// own `lab.cluster` label says so), it is taken as it is instead of refused.
pub async fn init_on(rt: &dyn Nodes, node: &str) -> Result<SwarmRecord> {
    let e = rt.engine(node).await?;
    let cluster = rt.desired().topology.cluster.as_str();
    let rec = match super::init(node, &e.docker, &e.advertise_addr, cluster).await {
        Ok(rec) => rec,
        Err(err) if err.to_string().contains("already part of a swarm") => {
            match adopt(node, &e.docker, cluster).await {
                Some(()) => {
                    rt.progress().note(&format!("{node}: came back in this cluster's swarm, which is kept"));
                    super::record(node, &e.docker, &e.advertise_addr).await?
                }
                None => return Err(err),
            }
        }
        Err(err) => return Err(err),
    };
    rt.set_cluster_swarm(Some(rec.id.clone()));
    Ok(rec)
}

/// Whether the swarm the engine `docker` of `node` manages (once its control plane is up:
/// bounded) is this cluster's, by the swarm's own `lab.cluster` label.
async fn adopt(node: &str, docker: &bollard::Docker, cluster: &str) -> Option<()> {
    let swarm = Wait::new(node, "its engine to say which swarm it manages", Duration::from_secs(30))
        .every(Duration::from_millis(500))
        .until(|| docker.inspect_swarm())
        .await
        .ok()?;
    let labels = swarm.spec.and_then(|s| s.labels).unwrap_or_default();
    (labels.get(crate::cluster::probe::CLUSTER_LABEL).map(String::as_str) == Some(cluster)).then_some(())
}

/// The recovery of a lost quorum: `swarm init --force-new-cluster` on `survivor`, and every
/// other surviving manager (`others`) made to leave, so that the plan joins it again to the
/// new Raft cluster. Returns what to record.
pub async fn force_new_cluster(rt: &dyn Nodes, survivor: &str, others: &[String]) -> Result<SwarmRecord> {
    let e = rt.engine(survivor).await?;
    let rec = super::force_new_cluster(survivor, &e.docker, &e.advertise_addr).await?;
    rt.set_cluster_swarm(Some(rec.id.clone()));
    // The new Raft cluster elects its one member leader; until then it lists nothing, and the
    // observation that follows would take the swarm for none.
    Wait::new(survivor, "the new cluster to elect its leader", Duration::from_secs(60))
        .until(|| async {
            e.docker.list_nodes(None).await.map_err(|err| Error::engine(survivor, "list the swarm's nodes", err))
        })
        .await?;
    for other in others {
        leave_node(rt, other).await?;
    }
    Ok(rec)
}

/// What a join did.
#[derive(Debug, Default)]
pub struct Joined {
    /// The node was a member already (it rejoined on its own once started).
    pub already: bool,
    /// The swarm as a manager reports it, for a cluster that has none recorded yet.
    pub record: Option<SwarmRecord>,
}

/// `JoinSwarm`: `node` joins the cluster's swarm as `role`, with the token a manager that
/// answers gives now (never a stored one, which `docker swarm join-token --rotate` would have
/// made useless). `recorded`: whether lab has the swarm on record already. `ours`: the node's
/// machine is one the driver made for this cluster, so a swarm it is in that the cluster's
/// manager does not know is what an earlier life of the cluster left, and it leaves it.
pub async fn join_node(rt: &dyn Nodes, node: &str, role: Role, recorded: bool, ours: bool) -> Result<Joined> {
    let e = rt.engine(node).await?;
    // A node that was stopped when the plan was made could not say whether it was a member;
    // once started, its engine rejoins on its own, and joining again would fail ("already
    // part of a swarm"). A member a manager knows is done.
    // A member the manager does not know is in another swarm: a node made again on a disk
    // that outlived its swarm's managers (a `lab down` killed before it removed this node's
    // volume). The plan could not see it, the machine did not exist yet; it leaves that
    // swarm, or the join fails "This node is already part of a swarm".
    if let Ok(v) = super::local_view(&e.docker).await {
        if let (true, Some(id)) = (v.active, v.node_id.as_deref()) {
            if let Ok((_, mgr)) = rt.manager().await {
                match mgr.inspect_node(id).await {
                    Ok(_) => return Ok(Joined { already: true, record: None }),
                    Err(err) if ours && crate::error::is_not_found(&err) => {
                        tracing::info!(node, "in a swarm this cluster's managers do not know; leaving it to join");
                        super::leave(node, &e.docker).await?;
                    }
                    Err(_) => {}
                }
            }
        }
    }
    let (mgr_name, mgr) = rt.manager().await?;
    // What a lost node of this name left behind goes first: a lost manager still counts in the
    // Raft membership until it is demoted, and joining beside it would count one more.
    let hostname = e.docker.info().await.map_err(|err| Error::engine(node, "read its hostname", err))?.name;
    if let Some(host) = hostname.filter(|h| !h.is_empty()) {
        super::forget_stale(node, &mgr, &host, None).await?;
    }
    let mgr_advertise = rt.engine(&mgr_name).await?.advertise_addr;
    let token = super::join_token(&mgr_name, &mgr, role).await?;
    let mgr_addr = format!("{mgr_advertise}:{}", super::SWARM_PORT);
    super::join(node, &e.docker, &e.advertise_addr, &mgr_addr, &token, role).await?;
    let record = if recorded { None } else { Some(super::record(&mgr_name, &mgr, &mgr_advertise).await?) };
    // A node made again leaves its old self behind as a down entry; drop it.
    if let (Ok((_, mgr)), Ok(v)) = (rt.manager().await, super::local_view(&e.docker).await) {
        if let Some(id) = v.node_id {
            if let Ok(n) = mgr.inspect_node(&id).await {
                let host = n.description.and_then(|d| d.hostname).unwrap_or_default();
                super::forget_stale(node, &mgr, &host, Some(&id)).await?;
            }
        }
    }
    Ok(Joined { already: false, record })
}

/// `ConfigureNode`: the node's role, availability and labels as the topology wants them, set
/// through a manager. Returns the detail for the progress line.
pub async fn configure_node(rt: &dyn Nodes, node: &str) -> Result<String> {
    let desired: &Desired = rt.desired();
    let topo = &desired.topology;
    let spec = topo.node(node).expect("planned nodes are in the topology");
    let e = rt.engine(node).await?;
    let id = super::local_view(&e.docker)
        .await
        .map_err(|err| Error::engine(node, "read its swarm node ID", err))?
        .node_id
        .ok_or_else(|| Error::node(node, "set role, availability and labels", "the node is not in the swarm"))?;
    let (_, mgr) = rt.manager().await?;
    let drain = topo.drain_managers() && spec.role == Role::Manager;
    super::configure(node, &mgr, &id, spec.role, drain, &topo.swarm_labels(spec)).await?;
    Ok(format!("{}, {}", spec.role, if drain { "drain" } else { "active" }))
}

/// `LeaveSwarm`: `node` leaves whatever swarm it is in.
pub async fn leave_node(rt: &dyn Nodes, node: &str) -> Result<()> {
    let e = rt.engine(node).await?;
    super::leave(node, &e.docker).await
}

/// The swarm node ID of `node`, if its engine answers within a few seconds: read before a
/// node is destroyed, so that its entry can be taken off the managers' list afterwards.
pub async fn node_id(rt: &dyn Nodes, node: &str) -> Option<String> {
    let e = rt.try_engine(node, Duration::from_secs(3)).await.ok()?;
    super::local_view(&e.docker).await.ok().and_then(|v| v.node_id)
}

/// Before a manager's machine is destroyed: demotes it through a manager, so that the Raft
/// membership shrinks while the node still answers, instead of counting a member that is gone
/// (three managers scaled to one would otherwise lose their quorum).
pub async fn retire(rt: &dyn Nodes, node: &str, id: &str) -> Result<()> {
    let (_, mgr) = rt.manager().await?;
    let Ok(nodes) = mgr.list_nodes(None).await else { return Ok(()) };
    // The last manager is not demoted: the swarm goes with it.
    let managers = nodes.iter().filter(|n| n.manager_status.is_some()).count();
    let this = nodes.iter().find(|n| n.id.as_deref() == Some(id));
    match this {
        Some(n) if n.manager_status.is_some() && managers > 1 => super::nodes::demote(node, &mgr, id).await,
        _ => Ok(()),
    }
}

/// Takes the entry `id` of a destroyed node off the managers' list, if a manager answers.
pub async fn forget_node(rt: &dyn Nodes, id: &str) {
    if let Ok((_, mgr)) = rt.manager().await {
        // A manager that could not be demoted before (it no longer answered) is demoted now.
        if mgr.inspect_node(id).await.is_ok_and(|n| n.manager_status.is_some()) {
            let _ = super::nodes::demote(id, &mgr, id).await;
        }
        let opts = bollard::query_parameters::DeleteNodeOptionsBuilder::new().force(true).build();
        let _ = mgr.delete_node(id, Some(opts)).await;
    }
}
