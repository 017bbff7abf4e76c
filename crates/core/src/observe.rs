//! Observing a cluster: what the driver reports, what each node's engine says, what the
//! swarm's managers say, and what lab recorded. Read-only; feeds the planner and `status`.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bollard::models::{NodeSpecAvailabilityEnum, NodeSpecRoleEnum};
use futures_util::future::join_all;
use serde::Serialize;

use crate::driver::{Machine, MachineState};
use crate::error::Result;
use crate::exec::Runtime;
use crate::plan::{Membership, NodeObs, Observed};
use crate::swarm::{local_view, LocalView};
use crate::{registry, Role};

/// A swarm node as a manager lists it.
#[derive(Debug, Clone, Serialize)]
pub struct SwarmNode {
    /// Swarm node ID.
    pub id: String,
    /// `manager` or `worker`.
    pub role: String,
    /// `active`, `pause` or `drain`.
    pub availability: String,
    /// `ready`, `down`, ...
    pub status: String,
    /// `leader`, `reachable`, or empty for workers.
    pub manager_status: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
}

/// A full observation: the planner's view plus what `status` shows.
#[derive(Debug, Clone)]
pub struct Observation {
    /// The planner's view.
    pub observed: Observed,
    /// Machines as the driver reported them.
    pub machines: Vec<Machine>,
    /// Each node's swarm node, by lab node name, as a manager lists it.
    pub swarm_nodes: BTreeMap<String, SwarmNode>,
    /// The registry task's node and state, if the service exists.
    pub registry_task: Option<(String, String)>,
}

/// Observes the cluster. Engines that do not answer within a few seconds count as not ready.
pub async fn observe(rt: &Runtime) -> Result<Observation> {
    let machines = rt.driver.observe().await?;
    rt.set_machines(machines.clone());
    let image = rt.desired.registry_image.clone();
    let probes = machines.iter().map(|m| {
        let image = image.clone();
        async move {
            // The topology says what a node is for; the driver's word only for strays.
            let role = rt.desired.topology.node(&m.name).map(|n| n.role).or(m.role).unwrap_or(Role::Worker);
            let mut obs = NodeObs::new(role, m.state.clone());
            obs.address = m.address.clone();
            let mut view = None;
            if m.state == MachineState::Running {
                if let Ok(e) = rt.try_engine(&m.name, Duration::from_secs(5)).await {
                    obs.engine = true;
                    obs.address = Some(e.advertise_addr.clone());
                    if e.docker.inspect_image(&image).await.is_ok() {
                        obs.images.insert(image.clone());
                    }
                    obs.forwarder = registry::observe_forwarder(&e.docker).await;
                    obs.registry_data = registry::has_data(&e.docker).await;
                    // An engine that cannot say whether it is in a swarm is not "not in a
                    // swarm": it counts as not answering, and the steps that wait for it say
                    // why.
                    match local_view(&e.docker).await {
                        Ok(v) => {
                            view = Some(v);
                            obs.swarm = Membership::None;
                        }
                        Err(err) => {
                            tracing::debug!(node = %m.name, cause = %crate::error::engine_message(&err), "docker info failed");
                            obs.engine = false;
                        }
                    }
                }
            }
            (m.name.clone(), obs, view)
        }
    });
    let results = join_all(probes).await;
    let mut nodes: BTreeMap<String, NodeObs> = BTreeMap::new();
    let mut views: BTreeMap<String, LocalView> = BTreeMap::new();
    for (name, obs, view) in results {
        nodes.insert(name.clone(), obs);
        if let Some(v) = view {
            views.insert(name, v);
        }
    }

    // The cluster's swarm is the one its managers (first manager first) are in.
    let manager_order: Vec<&str> = rt
        .desired
        .topology
        .nodes
        .iter()
        .filter(|n| n.role == Role::Manager)
        .map(|n| n.name.as_str())
        .chain(views.keys().map(|k| k.as_str()))
        .collect();
    let leader = manager_order.iter().find(|n| views.get(**n).is_some_and(|v| v.manager && v.cluster_id.is_some()));
    let mut swarm_id = None;
    let mut swarm_nodes = BTreeMap::new();
    let mut registry_obs = None;
    let mut registry_task = None;
    if let Some(leader) = leader {
        let id = views[*leader].cluster_id.clone().expect("checked above");
        let mgr = rt.engine(leader).await?.docker;
        let listed: HashMap<String, bollard::models::Node> = mgr
            .list_nodes(None)
            .await
            .map(|ns| ns.into_iter().filter_map(|n| Some((n.id.clone()?, n))).collect())
            .unwrap_or_default();
        for (name, view) in &views {
            let obs = nodes.get_mut(name).expect("viewed nodes are observed");
            if !view.active {
                continue;
            }
            let listed_node = view.node_id.as_ref().and_then(|i| listed.get(i));
            match listed_node {
                Some(n) => {
                    let spec = n.spec.clone().unwrap_or_default();
                    let manager = spec.role == Some(NodeSpecRoleEnum::MANAGER);
                    obs.swarm = Membership::Member { swarm_id: id.clone(), manager };
                    obs.labels = spec.labels.clone().unwrap_or_default().into_iter().collect();
                    obs.drained = spec.availability == Some(NodeSpecAvailabilityEnum::DRAIN);
                    swarm_nodes.insert(
                        name.clone(),
                        SwarmNode {
                            id: n.id.clone().unwrap_or_default(),
                            role: spec.role.map(|r| r.to_string()).unwrap_or_default(),
                            availability: spec.availability.map(|a| a.to_string()).unwrap_or_default(),
                            status: n.status.as_ref().and_then(|s| s.state).map(|s| s.to_string()).unwrap_or_default(),
                            manager_status: n
                                .manager_status
                                .as_ref()
                                .map(|m| {
                                    if m.leader == Some(true) {
                                        "leader".to_string()
                                    } else {
                                        m.reachability.map(|r| r.to_string()).unwrap_or_default()
                                    }
                                })
                                .unwrap_or_default(),
                            labels: obs.labels.clone(),
                        },
                    );
                }
                None => {
                    let other = view.cluster_id.clone().unwrap_or_else(|| "another swarm".into());
                    obs.swarm = Membership::Member { swarm_id: other, manager: view.manager };
                }
            }
        }
        swarm_id = Some(id);
        registry_obs = registry::observe(&mgr).await;
        if let Some(reg) = registry_obs.as_mut() {
            registry_task = registry_task_of(&mgr, &swarm_nodes).await;
            // Only a node lab can name: a task the managers still list on a node whose engine
            // did not answer (stopped, lost) runs nowhere lab can see.
            reg.running_on = registry_task
                .as_ref()
                .filter(|(node, state)| state == "running" && swarm_nodes.contains_key(node))
                .map(|(n, _)| n.clone());
        }
    } else {
        for (name, view) in &views {
            if view.active {
                let other = view.cluster_id.clone().unwrap_or_else(|| "another swarm".into());
                nodes.get_mut(name).expect("viewed").swarm =
                    Membership::Member { swarm_id: other, manager: view.manager };
            }
        }
    }
    Ok(Observation {
        observed: Observed { nodes, swarm_id, registry: registry_obs, mode: rt.state().registry_mode },
        machines,
        swarm_nodes,
        registry_task,
    })
}

async fn registry_task_of(
    mgr: &bollard::Docker,
    swarm_nodes: &BTreeMap<String, SwarmNode>,
) -> Option<(String, String)> {
    let filters = HashMap::from([("service", vec![registry::SERVICE]), ("desired-state", vec!["running"])]);
    let tasks = mgr
        .list_tasks(Some(bollard::query_parameters::ListTasksOptionsBuilder::new().filters(&filters).build()))
        .await
        .ok()?;
    let t = tasks.first()?;
    let node_id = t.node_id.clone().unwrap_or_default();
    let node = swarm_nodes.iter().find(|(_, n)| n.id == node_id).map(|(k, _)| k.clone()).unwrap_or(node_id);
    let state = t.status.as_ref().and_then(|s| s.state).map(|s| s.to_string()).unwrap_or_default();
    Some((node, state))
}
