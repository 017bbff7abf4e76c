//! Observing a cluster: what the driver reports, what each node's engine says, what the
//! swarm's managers say, and what lab recorded. Read-only; feeds the planner and `status`.
//!
//! It is also the one place that decides which swarm is the cluster's, for every driver: the
//! one lab recorded, or one whose nodes carry the cluster's `lab.cluster` label (an `up`
//! interrupted before recording it, or a lost state directory). Any other swarm a node is in
//! is foreign ([`Membership::Foreign`]); the planner refuses to take such a node without
//! `--force`, and never makes a node leave while this cluster's managers could not be asked.
//!
//! It reaches the machines and engines through the seam ([`Nodes`]), and asks the engines
//! only through `EngineView`, whose answers are plain facts: what a node says of itself
//! (`NodeFacts`), a manager's list of the swarm's nodes, the registry service and its task.
//! `Live` asks real engines through bollard; the tests below answer by hand, so everything
//! that turns the answers into an [`Observation`] is checked without an engine.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use bollard::models::{NodeSpecAvailabilityEnum, NodeSpecRoleEnum, Reachability};
use futures_util::future::join_all;
use serde::Serialize;

use crate::cluster::probe::CLUSTER_LABEL;
use crate::cluster::Desired;
use crate::cluster::Nodes;
use crate::converge::plan::{CertsObs, Membership, NodeObs, Observed};
use crate::driver::{Machine, MachineState};
use crate::error::{engine_message, Result};
use crate::registry::RegistryObs;
use crate::state::{ClusterState, RegistryTls};
use crate::swarm::quorum::NODE_LABEL;
use crate::swarm::{local_view, LocalView, Quorum, QuorumLoss};
use crate::wait::{Look, Wait};
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
    /// The managers' quorum, as a manager of the cluster's swarm lists them.
    pub quorum: Option<Quorum>,
    /// The cluster's swarm has managers that answer for themselves, but none could list its
    /// nodes: the swarm's own words (with a lost quorum, "The swarm does not have a leader").
    pub leaderless: Option<String>,
}

impl Observation {
    /// The cluster's swarm has lost its quorum: its managers that answer cannot list its
    /// nodes, or the one that lists them leads fewer than a majority. Names the managers that
    /// answer and are in it, and those that do not.
    ///
    /// A leader that loses the majority does not step down at once: until an election timeout
    /// passes without hearing from a majority (some 14 s on moby 20.10), it goes on listing the
    /// nodes, the lost managers as unreachable, and refuses every change of the membership
    /// ("can't remove member from the raft: this would result in a loss of quorum"). Its
    /// listing is a loss in numbers, and is taken for one.
    pub fn quorum_loss(&self, desired: &Desired) -> Option<QuorumLoss> {
        let short = self.quorum.as_ref().filter(|q| q.managers > 0 && !q.holds()).map(|q| q.to_string());
        let cause = self.leaderless.clone().or(short)?;
        let (survivors, lost): (Vec<String>, Vec<String>) = desired
            .topology
            .nodes
            .iter()
            .filter(|n| n.role == Role::Manager)
            .map(|n| n.name.clone())
            .partition(|n| {
                self.observed.nodes.get(n).is_some_and(|o| {
                    o.engine && matches!(&o.swarm, Membership::Member { manager: true, swarm_id } if Some(swarm_id) == self.observed.swarm_id.as_ref())
                })
            });
        Some(QuorumLoss { survivors, lost, cause })
    }
}

/// Observes the cluster. Engines that do not answer within a few seconds count as not ready.
/// Remembers, for [`Nodes::manager`], which swarm it decided is the cluster's.
pub async fn observe(rt: &dyn Nodes) -> Result<Observation> {
    let machines = rt.machines().await?;
    let mut obs = look(rt.desired(), &rt.state(), machines, &Live(rt)).await?;
    if rt.desired().tls == RegistryTls::Mutual {
        let now = crate::state::now();
        obs.observed.certs = crate::tls::load(&crate::tls::dir(&rt.cluster_dir()))?.map(|m| CertsObs {
            registry: m.registry_fingerprint(),
            nodes: m.nodes.keys().filter_map(|n| Some((n.clone(), m.node_fingerprint(n)?))).collect(),
            due: m.due(now),
        });
    }
    rt.set_cluster_swarm(obs.observed.swarm_id.clone());
    Ok(obs)
}

/// What a node's engine says of itself, as observation needs it.
#[derive(Debug, Clone)]
struct NodeFacts {
    /// The address it advertises to the swarm.
    address: String,
    /// Whether it has the registry image.
    has_image: bool,
    /// Where its registry forwarder relays to, if one runs.
    forwarder: Option<String>,
    /// Whether it has a complete copy of the registry's data (a partial one, left by an
    /// interrupted move, does not count: [`registry::Data`]).
    registry_data: bool,
    /// The fingerprint of lab's registry certificates in its `/etc/docker/certs.d` (looked
    /// for in mutual TLS mode only).
    registry_certs: Option<String>,
    /// Its own view of its swarm membership once settled; `Ok(None)` if it did not settle in
    /// time, an error (the engine's words) if it could not say.
    swarm: std::result::Result<Option<LocalView>, String>,
}

/// What observation asks of the engines. Every answer is a fact, never a connection, so a
/// test can give them by hand.
#[async_trait::async_trait]
trait EngineView: Send + Sync {
    /// What the engine of `node` (a running machine) says of itself, with whether it has
    /// `image`; `None` if it does not answer within a few seconds.
    async fn node(&self, node: &str, image: &str) -> Option<NodeFacts>;
    /// The swarm's nodes as the manager on `node` lists them; `None` if it cannot.
    async fn list_nodes(&self, node: &str) -> std::result::Result<Vec<bollard::models::Node>, String>;
    /// The swarm's own labels as the manager on `node` reads them; `None` if it cannot.
    async fn swarm_labels(&self, node: &str) -> Option<HashMap<String, String>>;
    /// The registry service as the manager on `node` reads it (`None`: there is none); an
    /// error if that engine no longer answers.
    async fn registry(&self, node: &str) -> Result<Option<RegistryObs>>;
    /// The registry task the swarm wants running, as the manager on `node` lists it: its
    /// swarm node ID and its state.
    async fn registry_task(&self, node: &str) -> Option<(String, String)>;
}

/// Turns what the driver reports (`machines`), what lab recorded (`state`) and what the
/// engines answer into an observation, deciding which swarm is the cluster's.
async fn look(
    desired: &Desired,
    state: &ClusterState,
    machines: Vec<Machine>,
    engines: &dyn EngineView,
) -> Result<Observation> {
    let (mut nodes, mut views) = look_at_nodes(desired, &machines, engines).await;
    // A manager of a swarm without a quorum cannot read the swarm's ID ("The swarm does not
    // have a leader"): taken for a manager of the swarm lab recorded, so that it is asked, and
    // its refusal is what observation reports, instead of a node in no swarm to initialise.
    if let Some(recorded) = state.swarm.as_ref().map(|s| s.id.clone()).filter(|s| !s.is_empty()) {
        for v in views.values_mut().filter(|v| v.manager && v.cluster_id.is_none() && v.error.is_some()) {
            v.cluster_id = Some(recorded.clone());
        }
    }
    // Which swarm is this cluster's, and which nodes are in it or in another: decided here,
    // once, for every driver.
    let manager_order: Vec<&str> = desired
        .topology
        .nodes
        .iter()
        .filter(|n| n.role == Role::Manager)
        .map(|n| n.name.as_str())
        .chain(views.keys().map(|k| k.as_str()))
        .collect();
    let swarms = list_swarms(desired, &manager_order, &views, engines).await;
    let facts = SwarmFacts {
        cluster: desired.topology.cluster.to_string(),
        recorded: state.swarm.as_ref().map(|s| s.id.as_str()).filter(|s| !s.is_empty()),
        manager_order: &manager_order,
        views: &views,
        listings: &swarms.listings,
        labelled: &swarms.labelled,
        manager_addrs: manager_addresses(desired, state, &nodes, &machines),
        managers_unanswered: managers_unanswered(desired, &machines, &views),
    };
    let decided = facts.decide();
    let swarm_id = decided.swarm_id.clone();
    let listing = swarm_id.as_ref().and_then(|id| swarms.listings.get(id)).and_then(|l| l.as_ref());
    let mut swarm_nodes = BTreeMap::new();
    for (name, membership) in decided.membership {
        let obs = nodes.get_mut(&name).expect("viewed nodes are observed");
        obs.swarm = membership;
        let listed = listing.and_then(|l| views.get(&name).and_then(|v| v.node_id.as_ref()).and_then(|i| l.get(i)));
        if let Some(n) = listed {
            swarm_nodes.insert(name, swarm_node(n, obs));
        }
    }
    // The quorum as the listing counts it; a swarm whose managers answer but cannot list its
    // nodes has none to count, and says why.
    let quorum = listing.map(|l| quorum_of(l, &views, &machines));
    let leaderless = match (&swarm_id, listing) {
        (Some(id), None) => swarms.refusals.get(id).cloned(),
        _ => None,
    };
    // A swarm without a leader cannot say what services it has either.
    let lister = swarm_id.as_ref().and_then(|id| swarms.listers.get(id)).filter(|_| leaderless.is_none());
    let (registry, registry_task) = match lister {
        Some(lister) => look_at_registry(engines, lister, &swarm_nodes).await?,
        None => (None, None),
    };
    Ok(Observation {
        observed: Observed {
            nodes,
            swarm_id,
            registry,
            mode: state.registry_mode,
            data_last_on: state.registry_data_on.clone(),
            managers_unchecked: decided.unchecked,
            certs: None,
        },
        machines,
        swarm_nodes,
        registry_task,
        quorum,
        leaderless,
    })
}

/// This cluster's managers that exist but whose engines did not say what swarm they are in (a
/// manager that is missing or about to be made again has no swarm to ask).
fn managers_unanswered(desired: &Desired, machines: &[Machine], views: &BTreeMap<String, LocalView>) -> Vec<String> {
    desired
        .topology
        .nodes
        .iter()
        .filter(|n| n.role == Role::Manager)
        .filter(|n| {
            let exists = machines.iter().any(|m| m.name == n.name && !matches!(m.state, MachineState::Broken(_)));
            exists && !views.contains_key(&n.name)
        })
        .map(|n| n.name.clone())
        .collect()
}

/// The quorum as `listing`, the cluster's swarm's nodes, counts it, each node by its name.
///
/// A manager whose machine is gone or stopped counts as unreachable, whatever the listing
/// says: the leader learns it only once its messages go unanswered, and for some seconds
/// lists it reachable still. A plan made from that word would join a lost manager made again
/// beside an entry the swarm cannot demote ("this would result in a loss of quorum").
fn quorum_of(listing: &Listing, views: &BTreeMap<String, LocalView>, machines: &[Machine]) -> Quorum {
    let by_id: HashMap<&str, &str> =
        views.iter().filter_map(|(name, v)| Some((v.node_id.as_deref()?, name.as_str()))).collect();
    let name = |n: &bollard::models::Node| -> Option<String> {
        let label = n.spec.as_ref().and_then(|s| s.labels.as_ref()).and_then(|l| l.get(NODE_LABEL)).cloned();
        label.or_else(|| by_id.get(n.id.as_deref()?).map(|s| s.to_string()))
    };
    let silent = |name: &str| !machines.iter().any(|m| m.name == name && m.state != MachineState::Stopped);
    let nodes: Vec<bollard::models::Node> = listing
        .values()
        .cloned()
        .map(|mut n| {
            if name(&n).is_some_and(|name| silent(&name)) {
                if let Some(status) = n.manager_status.as_mut() {
                    (status.leader, status.reachability) = (Some(false), Some(Reachability::UNREACHABLE));
                }
            }
            n
        })
        .collect();
    Quorum::of(&nodes, |id| by_id.get(id).map(|n| n.to_string()))
}

/// What every running machine's engine says of itself, all asked at once: the planner's view
/// of each node, and each node's own view of its swarm membership once it has settled.
async fn look_at_nodes(
    desired: &Desired,
    machines: &[Machine],
    engines: &dyn EngineView,
) -> (BTreeMap<String, NodeObs>, BTreeMap<String, LocalView>) {
    let image = desired.registry_image.as_str();
    let probes = machines.iter().map(|m| async move {
        // The topology says what a node is for; the driver's word only for strays.
        let role = desired.topology.node(&m.name).map(|n| n.role).or(m.role).unwrap_or(Role::Worker);
        let mut obs = NodeObs::new(role, m.state.clone());
        obs.address = m.address.clone();
        let mut view = None;
        if m.state == MachineState::Running {
            if let Some(facts) = engines.node(&m.name, image).await {
                obs.engine = true;
                obs.address = Some(facts.address);
                if facts.has_image {
                    obs.images.insert(image.to_string());
                }
                obs.forwarder = facts.forwarder;
                obs.registry_data = facts.registry_data;
                obs.registry_certs = facts.registry_certs;
                // An engine that cannot say whether it is in a swarm is not "not in a swarm":
                // it counts as not answering, and the steps that wait for it say why.
                match facts.swarm {
                    Ok(Some(v)) => {
                        view = Some(v);
                        obs.swarm = Membership::None;
                    }
                    // Not settled in time: its membership stays unknown, and, were it one of
                    // this cluster's managers, unchecked.
                    Ok(None) => tracing::debug!(node = %m.name, "swarm membership still settling"),
                    Err(cause) => {
                        tracing::debug!(node = %m.name, %cause, "docker info failed");
                        obs.engine = false;
                    }
                }
            }
        }
        (m.name.clone(), obs, view)
    });
    let mut nodes = BTreeMap::new();
    let mut views = BTreeMap::new();
    for (name, obs, view) in join_all(probes).await {
        nodes.insert(name.clone(), obs);
        if let Some(v) = view {
            views.insert(name, v);
        }
    }
    (nodes, views)
}

/// The swarms the managers know, as [`list_swarms`] finds them.
#[derive(Default)]
struct Swarms {
    /// Each swarm some node manages, by its first manager (in the order asked) that answers.
    listers: BTreeMap<String, String>,
    /// Each swarm's nodes, as that manager lists them (`None`: it could not).
    listings: BTreeMap<String, Option<Listing>>,
    /// The swarms whose own label names this cluster (set by lab's `swarm init`).
    labelled: BTreeSet<String>,
    /// Why a swarm's nodes could not be listed, in the last asked manager's words.
    refusals: BTreeMap<String, String>,
}

/// Asks the managers in `manager_order`, one per swarm, for their swarm's nodes and labels.
async fn list_swarms(
    desired: &Desired,
    manager_order: &[&str],
    views: &BTreeMap<String, LocalView>,
    engines: &dyn EngineView,
) -> Swarms {
    let mut s = Swarms::default();
    for name in manager_order {
        let Some(id) = views.get(*name).filter(|v| v.manager).and_then(|v| v.cluster_id.clone()) else { continue };
        if s.listings.get(&id).is_some_and(|l| l.is_some()) {
            continue;
        }
        let listed = match engines.list_nodes(name).await {
            Ok(ns) => Some(ns.into_iter().filter_map(|n| Some((n.id.clone()?, n))).collect()),
            Err(why) => {
                s.refusals.insert(id.clone(), why);
                None
            }
        };
        if engines.swarm_labels(name).await.and_then(|l| l.get(CLUSTER_LABEL).cloned()).as_deref()
            == Some(desired.topology.cluster.as_str())
        {
            s.labelled.insert(id.clone());
        }
        if listed.is_some() || !s.listings.contains_key(&id) {
            s.listers.insert(id.clone(), name.to_string());
            s.listings.insert(id, listed);
        }
    }
    s
}

/// A node as its swarm's manager lists it, which also gives the planner its labels and
/// availability (`obs`).
fn swarm_node(n: &bollard::models::Node, obs: &mut NodeObs) -> SwarmNode {
    let spec = n.spec.clone().unwrap_or_default();
    obs.labels = spec.labels.clone().unwrap_or_default().into_iter().collect();
    obs.drained = spec.availability == Some(NodeSpecAvailabilityEnum::DRAIN);
    let manager_status = n
        .manager_status
        .as_ref()
        .map(|m| {
            if m.leader == Some(true) {
                "leader".to_string()
            } else {
                m.reachability.map(|r| r.to_string()).unwrap_or_default()
            }
        })
        .unwrap_or_default();
    SwarmNode {
        id: n.id.clone().unwrap_or_default(),
        role: spec.role.map(|r| r.to_string()).unwrap_or_default(),
        availability: spec.availability.map(|a| a.to_string()).unwrap_or_default(),
        status: n.status.as_ref().and_then(|s| s.state).map(|s| s.to_string()).unwrap_or_default(),
        manager_status,
        labels: obs.labels.clone(),
    }
}

/// The registry service as the manager on `lister` reads it, with the node its task is on,
/// by lab's name for it where a manager lists that node.
async fn look_at_registry(
    engines: &dyn EngineView,
    lister: &str,
    swarm_nodes: &BTreeMap<String, SwarmNode>,
) -> Result<(Option<RegistryObs>, Option<(String, String)>)> {
    let Some(mut reg) = engines.registry(lister).await? else { return Ok((None, None)) };
    let task = engines.registry_task(lister).await.map(|(id, state)| {
        let node = swarm_nodes.iter().find(|(_, n)| n.id == id).map(|(k, _)| k.clone()).unwrap_or(id);
        (node, state)
    });
    // Only a node lab can name: a task the managers still list on a node whose engine did not
    // answer (stopped, lost) runs nowhere lab can see.
    reg.running_on = task
        .as_ref()
        .filter(|(node, state)| state == "running" && swarm_nodes.contains_key(node))
        .map(|(n, _)| n.clone());
    Ok((Some(reg), task))
}

/// One swarm's nodes, by swarm node ID, as one of its managers lists them.
type Listing = HashMap<String, bollard::models::Node>;

/// What observation learnt of the nodes' swarms: the input to [`SwarmFacts::decide`].
struct SwarmFacts<'a> {
    /// This cluster's name, as its nodes' `lab.cluster` label carries it.
    cluster: String,
    /// The swarm lab recorded for this cluster.
    recorded: Option<&'a str>,
    /// Nodes in the order their swarm is preferred as the cluster's: the topology's managers
    /// first.
    manager_order: &'a [&'a str],
    /// Each answering node's own view.
    views: &'a BTreeMap<String, LocalView>,
    /// Each swarm a node manages, with its nodes, or `None` if none of its managers could
    /// list them.
    listings: &'a BTreeMap<String, Option<Listing>>,
    /// The swarms whose own `lab.cluster` label is this cluster's.
    labelled: &'a BTreeSet<String>,
    /// The addresses (no port) this cluster's managers advertise, or did.
    manager_addrs: BTreeSet<String>,
    /// This cluster's managers that exist and whose engines did not say what swarm they are in.
    managers_unanswered: Vec<String>,
}

/// Which swarm is the cluster's, and where each node in a swarm stands.
#[derive(Debug, PartialEq)]
struct Decided {
    swarm_id: Option<String>,
    /// For every node in a swarm.
    membership: BTreeMap<String, Membership>,
    /// Some manager of this cluster could not say which nodes are its swarm's.
    unchecked: bool,
}

impl SwarmFacts<'_> {
    /// Whether the swarm `id` is this cluster's: the one lab recorded, or one that itself or
    /// whose nodes carry this cluster's `lab.cluster` label (an `up` interrupted before it
    /// recorded the swarm, or a state directory lost).
    fn ours(&self, id: &str) -> bool {
        self.recorded == Some(id)
            || self.labelled.contains(id)
            || self.listings.get(id).and_then(|l| l.as_ref()).is_some_and(|l| {
                l.values().any(|n| {
                    n.spec.as_ref().and_then(|s| s.labels.as_ref()).and_then(|l| l.get(CLUSTER_LABEL))
                        == Some(&self.cluster)
                })
            })
    }

    fn decide(&self) -> Decided {
        let managed = |name: &str| self.views.get(name).filter(|v| v.manager).and_then(|v| v.cluster_id.as_deref());
        // The recorded swarm while a manager is in it; else the first of this cluster's.
        let swarm_id = self
            .recorded
            .filter(|r| self.manager_order.iter().any(|n| managed(n) == Some(*r)))
            .or_else(|| self.manager_order.iter().filter_map(|n| managed(n)).find(|id| self.ours(id)))
            .map(str::to_string);
        // A manager whose list could not be read may be this cluster's (its labels are unknown).
        let unchecked = !self.managers_unanswered.is_empty() || self.listings.values().any(Option::is_none);
        let listed_in = |id: &str, node: Option<&String>| -> Option<&bollard::models::Node> {
            self.listings.get(id)?.as_ref()?.get(node?)
        };
        let mut membership = BTreeMap::new();
        for (name, v) in self.views.iter().filter(|(_, v)| v.active) {
            // Listed by the cluster's swarm, or by another of this cluster's swarms.
            let listed = swarm_id
                .iter()
                .chain(self.listings.keys().filter(|id| self.ours(id)))
                .find_map(|id| listed_in(id, v.node_id.as_ref()).map(|n| (id, n)));
            let m = if let Some((id, n)) = listed {
                let manager = n.spec.as_ref().and_then(|s| s.role) == Some(NodeSpecRoleEnum::MANAGER);
                Membership::Member { swarm_id: id.clone(), manager }
            } else if let Some(id) = v.cluster_id.as_ref().filter(|_| v.manager) {
                if self.ours(id) {
                    Membership::Member { swarm_id: id.clone(), manager: true }
                } else {
                    Membership::Foreign { swarm: format!("swarm {id}") }
                }
            } else if let Some(id) = self.listings.keys().find(|id| listed_in(id, v.node_id.as_ref()).is_some()) {
                // Listed by a swarm that is not this cluster's, whatever its managers' addresses.
                Membership::Foreign { swarm: format!("swarm {id}") }
            } else if self.managed_by_ours(&v.remote_managers) {
                if unchecked {
                    // Its managers are this cluster's, which could not say whether it is
                    // theirs: taken for this cluster's, since evicting a cluster's own node is
                    // the worse mistake.
                    Membership::Unknown
                } else {
                    // This cluster's managers answered and do not list it: what is left of a
                    // swarm they were in before.
                    Membership::Member {
                        swarm_id: format!("a former swarm of cluster {}", self.cluster),
                        manager: v.manager,
                    }
                }
            } else if !v.remote_managers.is_empty() {
                Membership::Foreign { swarm: format!("the swarm managed at {}", v.remote_managers.join(", ")) }
            } else {
                Membership::Foreign { swarm: "a swarm lab cannot identify".into() }
            };
            membership.insert(name.clone(), m);
        }
        Decided { swarm_id, membership, unchecked }
    }

    /// Whether swarm `RemoteManagers` (`address:port`) include one of this cluster's managers.
    fn managed_by_ours(&self, remote_managers: &[String]) -> bool {
        remote_managers.iter().any(|m| self.manager_addrs.contains(&host_of(m)))
    }
}

/// The host of `address:port` (`[v6]:port` too), lowercased.
fn host_of(addr: &str) -> String {
    let host = match addr.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) && (!h.contains(':') || h.ends_with(']')) => h,
        _ => addr,
    };
    host.trim_matches(['[', ']']).to_ascii_lowercase()
}

/// The addresses this cluster's managers advertise now, as the driver reports them, or did, as
/// lab recorded them.
fn manager_addresses(
    desired: &Desired,
    state: &ClusterState,
    nodes: &BTreeMap<String, NodeObs>,
    machines: &[Machine],
) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for n in desired.topology.nodes.iter().filter(|n| n.role == Role::Manager) {
        out.extend(nodes.get(&n.name).and_then(|o| o.address.clone()));
        out.extend(machines.iter().filter(|m| m.name == n.name).filter_map(|m| m.address.clone()));
        out.extend(state.nodes.get(&n.name).filter(|r| r.role == Role::Manager).and_then(|r| r.address.clone()));
    }
    out.extend(state.swarm.as_ref().map(|s| s.manager_addr.clone()));
    out.iter().map(|a| host_of(a)).filter(|a| !a.is_empty()).collect()
}

/// How long observation waits for a node's swarm membership to settle.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Whether a node's view of its membership is still settling. An engine that has just started
/// (a machine started or restarted) reports `pending` while it rejoins; a manager's control
/// plane takes a moment longer, and until then it looks like a worker whose managers include
/// itself (at `advertise`). Either, taken at face value, would count a node of this
/// cluster's as in some other swarm.
fn settling(v: &LocalView, advertise: &str) -> bool {
    let own = host_of(advertise);
    v.pending || (v.active && !v.manager && v.remote_managers.iter().any(|m| host_of(m) == own))
}

/// The engines, asked through bollard.
struct Live<'a>(&'a dyn Nodes);

#[async_trait::async_trait]
impl EngineView for Live<'_> {
    async fn node(&self, node: &str, image: &str) -> Option<NodeFacts> {
        let e = self.0.try_engine(node, Duration::from_secs(5)).await.ok()?;
        // Independent questions to one engine: asked at once.
        let (has_image, forwarder, data, swarm) = tokio::join!(
            async { e.docker.inspect_image(image).await.is_ok() },
            registry::observe_forwarder(&e.docker),
            registry::data_on(&e.docker),
            settled_view(&e.docker, &e.advertise_addr),
        );
        let desired = self.0.desired();
        // Looked at through a helper container of the registry image: only where there is one.
        let registry_certs = match (desired.tls, has_image) {
            (RegistryTls::Mutual, true) => {
                crate::tls::observe_node(&e.docker, desired.topology.cluster.as_str(), image).await
            }
            _ => None,
        };
        Some(NodeFacts {
            has_image,
            registry_certs,
            forwarder,
            registry_data: data == registry::Data::Complete,
            swarm: swarm.map_err(|err| engine_message(&err)),
            address: e.advertise_addr,
        })
    }

    async fn list_nodes(&self, node: &str) -> std::result::Result<Vec<bollard::models::Node>, String> {
        let e = self.0.engine(node).await.map_err(|e| e.to_string())?;
        e.docker.list_nodes(None).await.map_err(|e| engine_message(&e))
    }

    async fn swarm_labels(&self, node: &str) -> Option<HashMap<String, String>> {
        let swarm = self.0.engine(node).await.ok()?.docker.inspect_swarm().await.ok()?;
        Some(swarm.spec.and_then(|s| s.labels).unwrap_or_default())
    }

    async fn registry(&self, node: &str) -> Result<Option<RegistryObs>> {
        let mgr = self.0.engine(node).await?.docker;
        Ok(registry::observe(&mgr).await)
    }

    async fn registry_task(&self, node: &str) -> Option<(String, String)> {
        let mgr = self.0.engine(node).await.ok()?.docker;
        let filters = HashMap::from([("service", vec![registry::SERVICE]), ("desired-state", vec!["running"])]);
        let tasks = mgr
            .list_tasks(Some(bollard::query_parameters::ListTasksOptionsBuilder::new().filters(&filters).build()))
            .await
            .ok()?;
        let t = tasks.first()?;
        let state = t.status.as_ref().and_then(|s| s.state).map(|s| s.to_string()).unwrap_or_default();
        Some((t.node_id.clone().unwrap_or_default(), state))
    }
}

/// A node's own view of its membership once it has settled (see [`settling`]), or `None` if
/// it has not within [`SETTLE_TIMEOUT`].
async fn settled_view(
    docker: &bollard::Docker,
    advertise: &str,
) -> std::result::Result<Option<LocalView>, bollard::errors::Error> {
    // An engine error ends the wait as the wait's value; only "settling" waits on.
    let settled = Wait::new("", "its membership to settle", SETTLE_TIMEOUT)
        .poll(|| async {
            match local_view(docker).await {
                Ok(v) if settling(&v, advertise) => Look::not_yet("settling"),
                answer => Look::Done(answer),
            }
        })
        .await;
    match settled {
        Ok(answer) => answer.map(Some),
        Err(_) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{ModeRequest, Step};
    use crate::converge::plan::plan;
    use crate::converge::plan::tests::desired;
    use crate::state::{RegistryMode, SwarmRecord};
    use crate::topology::ClusterName;
    use bollard::models::{ManagerStatus, Node, NodeSpec, NodeState, NodeStatus};

    fn node(id: &str, role: NodeSpecRoleEnum, cluster: Option<&str>) -> (String, Node) {
        let labels = cluster.map(|c| HashMap::from([("lab.cluster".to_string(), c.to_string())]));
        let spec = NodeSpec { role: Some(role), labels, ..Default::default() };
        (id.to_string(), Node { id: Some(id.into()), spec: Some(spec), ..Default::default() })
    }

    fn manager_in(swarm: &str, node_id: &str) -> LocalView {
        LocalView {
            active: true,
            pending: false,
            node_id: Some(node_id.into()),
            manager: true,
            cluster_id: Some(swarm.into()),
            remote_managers: vec![],
            error: None,
        }
    }

    fn worker(node_id: &str, managers: &[&str]) -> LocalView {
        LocalView {
            active: true,
            pending: false,
            node_id: Some(node_id.into()),
            manager: false,
            cluster_id: None,
            remote_managers: managers.iter().map(|m| m.to_string()).collect(),
            error: None,
        }
    }

    /// manager (10.0.0.1) and worker1 of cluster `lab`, in the swarms `views` and `listings` say.
    fn decide(
        recorded: Option<&str>,
        views: &[(&str, LocalView)],
        listings: &[(&str, Option<Listing>)],
        unanswered: &[&str],
    ) -> Decided {
        let views: BTreeMap<String, LocalView> = views.iter().map(|(n, v)| (n.to_string(), v.clone())).collect();
        let listings: BTreeMap<String, Option<Listing>> =
            listings.iter().map(|(id, l)| (id.to_string(), l.clone())).collect();
        let order: Vec<&str> = ["manager"].into_iter().chain(views.keys().map(String::as_str)).collect();
        SwarmFacts {
            cluster: "lab".into(),
            recorded,
            manager_order: &order,
            views: &views,
            listings: &listings,
            labelled: &BTreeSet::new(),
            manager_addrs: BTreeSet::from(["10.0.0.1".to_string()]),
            managers_unanswered: unanswered.iter().map(|s| s.to_string()).collect(),
        }
        .decide()
    }

    fn member(swarm: &str, manager: bool) -> Membership {
        Membership::Member { swarm_id: swarm.into(), manager }
    }

    #[test]
    fn the_recorded_swarm_is_adopted_with_the_nodes_it_lists() {
        let listing: Listing =
            [node("m", NodeSpecRoleEnum::MANAGER, None), node("w", NodeSpecRoleEnum::WORKER, None)].into();
        let d = decide(
            Some("S"),
            &[("manager", manager_in("S", "m")), ("worker1", worker("w", &["10.0.0.1:2377"]))],
            &[("S", Some(listing))],
            &[],
        );
        assert_eq!(d.swarm_id.as_deref(), Some("S"));
        assert_eq!(d.membership["manager"], member("S", true));
        assert_eq!(d.membership["worker1"], member("S", false));
        assert!(!d.unchecked);
    }

    #[test]
    fn an_unrecorded_swarm_is_adopted_only_if_labelled_as_this_clusters() {
        let labelled: Listing = [node("m", NodeSpecRoleEnum::MANAGER, Some("lab"))].into();
        let d = decide(None, &[("manager", manager_in("S", "m"))], &[("S", Some(labelled))], &[]);
        assert_eq!(d.swarm_id.as_deref(), Some("S"));
        assert_eq!(d.membership["manager"], member("S", true));
        // Another cluster's label, or none, is a foreign swarm.
        for label in [Some("other"), None] {
            let listing: Listing = [node("m", NodeSpecRoleEnum::MANAGER, label)].into();
            let d = decide(None, &[("manager", manager_in("F", "m"))], &[("F", Some(listing))], &[]);
            assert_eq!(d.swarm_id, None);
            assert_eq!(d.membership["manager"], Membership::Foreign { swarm: "swarm F".into() });
        }
        // And a recorded swarm is not replaced by a foreign one the manager is in now.
        let listing: Listing = [node("m", NodeSpecRoleEnum::MANAGER, None)].into();
        let d = decide(Some("S"), &[("manager", manager_in("F", "m"))], &[("F", Some(listing))], &[]);
        assert_eq!(d.swarm_id, None);
        assert_eq!(d.membership["manager"], Membership::Foreign { swarm: "swarm F".into() });
    }

    #[test]
    fn workers_are_this_clusters_when_listed_or_managed_at_its_managers() {
        let listing: Listing = [node("m", NodeSpecRoleEnum::MANAGER, None)].into();
        let views = [
            ("manager", manager_in("S", "m")),
            ("worker1", worker("w1", &["10.0.0.1:2377"])),
            ("worker2", worker("w2", &["10.9.9.9:2377"])),
            ("worker3", worker("w3", &[])),
        ];
        // The managers answered and list neither: worker1 is left over from a former swarm of
        // this cluster's; worker2 and worker3 are in someone else's.
        let d = decide(Some("S"), &views, &[("S", Some(listing.clone()))], &[]);
        assert!(matches!(&d.membership["worker1"], Membership::Member { swarm_id, .. } if swarm_id != "S"));
        assert_eq!(d.membership["worker2"], Membership::Foreign { swarm: "the swarm managed at 10.9.9.9:2377".into() });
        assert_eq!(d.membership["worker3"], Membership::Foreign { swarm: "a swarm lab cannot identify".into() });
        // The manager's list cannot be read: worker1 is taken for this cluster's, and the
        // managers count as unchecked.
        let d = decide(Some("S"), &views, &[("S", None)], &[]);
        assert!(d.unchecked);
        assert_eq!(d.swarm_id.as_deref(), Some("S"));
        assert_eq!(d.membership["worker1"], Membership::Unknown);
        assert!(matches!(d.membership["worker2"], Membership::Foreign { .. }));
        // Listed by a foreign swarm, even one with this cluster's manager in it: foreign.
        let foreign: Listing =
            [node("m", NodeSpecRoleEnum::MANAGER, None), node("w1", NodeSpecRoleEnum::WORKER, None)].into();
        let d = decide(Some("S"), &[("manager", manager_in("F", "m")), views[1].clone()], &[("F", Some(foreign))], &[]);
        assert_eq!(d.membership["worker1"], Membership::Foreign { swarm: "swarm F".into() });
        // No manager answers at all.
        let d = decide(Some("S"), &views[1..], &[], &["manager"]);
        assert!(d.unchecked && d.swarm_id.is_none());
        assert_eq!(d.membership["worker1"], Membership::Unknown);
    }

    #[test]
    fn swarm_manager_addresses_are_compared_by_host() {
        assert_eq!(host_of("10.0.0.1:2377"), "10.0.0.1");
        assert_eq!(host_of("Node.Example:2377"), "node.example");
        assert_eq!(host_of("[fd00::1]:2377"), "fd00::1");
        assert_eq!(host_of("fd00::1"), "fd00::1");
        assert_eq!(host_of("10.0.0.1"), "10.0.0.1");
    }

    /// Engines that answer as told, with no engine behind them. A node missing from `nodes`
    /// does not answer; a manager missing from `lists` cannot list its swarm.
    #[derive(Default)]
    struct Canned {
        nodes: BTreeMap<String, NodeFacts>,
        lists: BTreeMap<String, Vec<Node>>,
        registry: Option<RegistryObs>,
        task: Option<(String, String)>,
        /// The swarm's own labels, by the manager that reads them.
        swarm_labels: BTreeMap<String, HashMap<String, String>>,
        /// The nodes whose engines were asked about themselves.
        asked: std::sync::Mutex<Vec<String>>,
    }

    #[async_trait::async_trait]
    impl EngineView for Canned {
        async fn node(&self, node: &str, image: &str) -> Option<NodeFacts> {
            assert_eq!(image, "registry:2", "observation looks for the registry image");
            self.asked.lock().unwrap().push(node.to_string());
            self.nodes.get(node).cloned()
        }
        async fn list_nodes(&self, node: &str) -> std::result::Result<Vec<Node>, String> {
            self.lists.get(node).cloned().ok_or_else(|| format!("{node} cannot list: the swarm does not have a leader"))
        }
        async fn swarm_labels(&self, node: &str) -> Option<HashMap<String, String>> {
            self.swarm_labels.get(node).cloned()
        }
        async fn registry(&self, node: &str) -> Result<Option<RegistryObs>> {
            assert!(self.lists.contains_key(node), "the registry service asked of {node}, which listed no swarm");
            Ok(self.registry.clone())
        }
        async fn registry_task(&self, _: &str) -> Option<(String, String)> {
            self.task.clone()
        }
    }

    impl Canned {
        /// `node`'s engine answers at `address`, has the registry image and sees itself as `view`.
        fn answers(mut self, node: &str, address: &str, view: LocalView) -> Self {
            let facts = NodeFacts {
                address: address.into(),
                has_image: true,
                forwarder: None,
                registry_data: false,
                registry_certs: None,
                swarm: Ok(Some(view)),
            };
            self.nodes.insert(node.into(), facts);
            self
        }

        fn facts(&mut self, node: &str) -> &mut NodeFacts {
            self.nodes.get_mut(node).expect("an answering node")
        }
    }

    /// A swarm node as a manager lists it: ready, and the leader if a manager.
    fn listed(id: &str, role: NodeSpecRoleEnum, drain: bool, labels: &[(&str, &str)]) -> Node {
        let availability = if drain { NodeSpecAvailabilityEnum::DRAIN } else { NodeSpecAvailabilityEnum::ACTIVE };
        let labels = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Node {
            id: Some(id.into()),
            spec: Some(NodeSpec {
                role: Some(role),
                availability: Some(availability),
                labels: Some(labels),
                name: None,
            }),
            status: Some(NodeStatus { state: Some(NodeState::READY), ..Default::default() }),
            manager_status: (role == NodeSpecRoleEnum::MANAGER)
                .then(|| ManagerStatus { leader: Some(true), ..Default::default() }),
            ..Default::default()
        }
    }

    fn machine(name: &str, state: MachineState) -> Machine {
        Machine { name: name.into(), role: None, state, address: None }
    }

    /// The machines of `desired(1, 2, ..)` (manager, worker1, worker2), all running.
    fn running() -> Vec<Machine> {
        ["manager", "worker1", "worker2"].iter().map(|n| machine(n, MachineState::Running)).collect()
    }

    /// Cluster `t`'s record, with the swarm lab made, if it made one.
    fn recorded(swarm: Option<(&str, &str)>) -> ClusterState {
        let mut st = ClusterState::new(ClusterName::parse("t", "t").unwrap(), "fake", serde_json::json!({}));
        (st.managers, st.workers, st.registry_image) = (1, 2, "registry:2".into());
        st.swarm = swarm.map(|(id, addr)| SwarmRecord { id: id.into(), manager_addr: addr.into() });
        st
    }

    /// Cluster `t` in swarm S, as `up` leaves it: the manager (10.0.0.1, drained, the leader)
    /// lists itself and both workers.
    fn in_swarm() -> Canned {
        let mut c = Canned::default()
            .answers("manager", "10.0.0.1", manager_in("S", "m"))
            .answers("worker1", "10.0.0.2", worker("w1", &["10.0.0.1:2377"]))
            .answers("worker2", "10.0.0.3", worker("w2", &["10.0.0.1:2377"]));
        c.lists.insert(
            "manager".into(),
            vec![
                listed("m", NodeSpecRoleEnum::MANAGER, true, &[("lab.cluster", "t"), ("lab.node", "manager")]),
                listed("w1", NodeSpecRoleEnum::WORKER, false, &[("lab.cluster", "t"), ("lab.node", "worker1")]),
                listed("w2", NodeSpecRoleEnum::WORKER, false, &[("lab.cluster", "t"), ("lab.node", "worker2")]),
            ],
        );
        c
    }

    const RECORDED_S: Option<(&str, &str)> = Some(("S", "10.0.0.1:2377"));

    fn steps(d: &Desired, o: &Observed) -> Vec<Step> {
        plan(d, o).steps.into_iter().map(|s| s.step).collect()
    }

    #[tokio::test]
    async fn fresh_machines_are_in_no_swarm_and_the_plan_makes_one() {
        let d = desired(1, 2, ModeRequest::Auto);
        let engines = Canned::default()
            .answers("manager", "10.0.0.1", LocalView::default())
            .answers("worker1", "10.0.0.2", LocalView::default())
            .answers("worker2", "10.0.0.3", LocalView::default());
        let obs = look(&d, &recorded(None), running(), &engines).await.unwrap();
        for (name, addr) in [("manager", "10.0.0.1"), ("worker1", "10.0.0.2"), ("worker2", "10.0.0.3")] {
            let n = &obs.observed.nodes[name];
            assert!(n.engine, "{name}");
            assert_eq!(n.swarm, Membership::None, "{name}");
            assert_eq!(n.address.as_deref(), Some(addr), "the address its engine advertises");
            assert!(n.images.contains("registry:2"), "{name}");
        }
        assert_eq!(obs.observed.swarm_id, None);
        assert_eq!(obs.observed.registry, None);
        assert!(!obs.observed.managers_unchecked);
        assert!(obs.swarm_nodes.is_empty() && obs.registry_task.is_none());
        let steps = steps(&d, &obs.observed);
        assert!(steps.contains(&Step::InitSwarm { node: "manager".into() }), "{steps:?}");
        for w in ["worker1", "worker2"] {
            assert!(steps.contains(&Step::JoinSwarm { node: w.into(), role: Role::Worker }), "{steps:?}");
        }
    }

    #[tokio::test]
    async fn the_quorum_is_counted_from_the_listing_and_a_leaderless_swarm_says_why() {
        let d = desired(1, 2, ModeRequest::Auto);
        let obs = look(&d, &recorded(RECORDED_S), running(), &in_swarm()).await.unwrap();
        let q = obs.quorum.expect("a listing gives the quorum");
        assert_eq!(q.to_string(), "1 manager, 1 reachable: tolerates 0 failures");
        assert_eq!(obs.leaderless, None);
        // The manager answers for itself but cannot list the swarm: its words are kept.
        let mut engines = in_swarm();
        engines.lists.clear();
        let obs = look(&d, &recorded(RECORDED_S), running(), &engines).await.unwrap();
        assert_eq!(obs.quorum, None);
        assert_eq!(obs.leaderless.as_deref(), Some("manager cannot list: the swarm does not have a leader"));
        assert!(obs.observed.managers_unchecked, "nothing is taken out of a swarm lab cannot list");
        // Without a quorum the manager cannot even say its swarm's ID: it is still the recorded
        // swarm's, not a node in no swarm that the plan would initialise again.
        let mut engines = in_swarm();
        engines.lists.clear();
        let v = match &mut engines.facts("manager").swarm {
            Ok(Some(v)) => v,
            other => panic!("{other:?}"),
        };
        v.cluster_id = None;
        v.error = Some("rpc error: The swarm does not have a leader.".into());
        let obs = look(&d, &recorded(RECORDED_S), running(), &engines).await.unwrap();
        assert_eq!(obs.observed.swarm_id.as_deref(), Some("S"));
        assert!(obs.leaderless.is_some());
        let loss = obs.quorum_loss(&d).expect("a lost quorum");
        assert_eq!((loss.survivors, loss.lost), (vec!["manager".to_string()], vec![]));
        let steps = steps(&d, &obs.observed);
        assert!(
            !steps.iter().any(|s| matches!(s, Step::InitSwarm { .. } | Step::LeaveSwarm { .. })),
            "no swarm is made anew over one without a leader: {steps:?}"
        );
    }

    /// Right after losing a majority, a leader still lists the swarm for an election timeout,
    /// the lost managers unreachable, and for the first seconds even reachable: a loss in
    /// numbers, taken for one, by what the driver says of their machines too.
    #[tokio::test]
    async fn a_leader_that_reaches_fewer_than_a_majority_has_lost_the_quorum() {
        use bollard::models::Reachability::{REACHABLE, UNREACHABLE};
        let d = desired(1, 2, ModeRequest::Auto);
        let with = |reachability: [bollard::models::Reachability; 2]| {
            let mut engines = in_swarm();
            for ((id, name), r) in [("x2", "manager2"), ("x3", "manager3")].into_iter().zip(reachability) {
                let mut n = listed(id, NodeSpecRoleEnum::MANAGER, true, &[("lab.cluster", "t"), ("lab.node", name)]);
                n.manager_status =
                    Some(ManagerStatus { leader: Some(false), reachability: Some(r), ..Default::default() });
                engines.lists.get_mut("manager").unwrap().push(n);
            }
            engines
        };
        let lost = "lost: 1 of 3 reachable, a majority is 2 (unreachable: manager2, manager3)";
        // Their machines are gone: unreachable, whether the leader knows it yet or not.
        for r in [[UNREACHABLE, UNREACHABLE], [REACHABLE, REACHABLE]] {
            let obs = look(&d, &recorded(RECORDED_S), running(), &with(r)).await.unwrap();
            assert_eq!(obs.leaderless, None, "it lists the swarm");
            let loss = obs.quorum_loss(&d).expect("a lost quorum");
            assert_eq!((loss.survivors, loss.cause.as_str()), (vec!["manager".to_string()], lost), "{r:?}");
        }
        // manager3's machine runs: one unreachable of three is degraded, not lost; and the
        // listing's word stands for a machine that runs.
        let mut machines = running();
        machines.push(machine("manager3", MachineState::Running));
        let obs = look(&d, &recorded(RECORDED_S), machines.clone(), &with([UNREACHABLE, REACHABLE])).await.unwrap();
        assert_eq!(obs.quorum_loss(&d), None);
        assert_eq!(
            obs.quorum.unwrap().to_string(),
            "degraded: 2 of 3 reachable, tolerates 0 more (unreachable: manager2)"
        );
        let obs = look(&d, &recorded(RECORDED_S), machines, &with([UNREACHABLE, UNREACHABLE])).await.unwrap();
        assert_eq!(obs.quorum_loss(&d).map(|l| l.cause), Some(lost.to_string()));
    }

    #[tokio::test]
    async fn nodes_in_the_recorded_swarm_are_members_as_its_manager_lists_them() {
        let d = desired(1, 2, ModeRequest::Auto);
        let obs = look(&d, &recorded(RECORDED_S), running(), &in_swarm()).await.unwrap();
        assert_eq!(obs.observed.swarm_id.as_deref(), Some("S"));
        assert!(!obs.observed.managers_unchecked);
        assert_eq!(obs.observed.nodes["manager"].swarm, member("S", true));
        assert_eq!(obs.observed.nodes["worker1"].swarm, member("S", false));
        assert_eq!(obs.observed.nodes["worker2"].swarm, member("S", false));
        // What `status` shows, as the manager lists it.
        let m = &obs.swarm_nodes["manager"];
        assert_eq!(
            (m.id.as_str(), m.role.as_str(), m.availability.as_str(), m.status.as_str(), m.manager_status.as_str()),
            ("m", "manager", "drain", "ready", "leader")
        );
        let w = &obs.swarm_nodes["worker1"];
        assert_eq!((w.role.as_str(), w.availability.as_str(), w.manager_status.as_str()), ("worker", "active", ""));
        assert_eq!(w.labels.get("lab.node").map(String::as_str), Some("worker1"));
        // What the planner reads.
        assert!(obs.observed.nodes["manager"].drained && !obs.observed.nodes["worker1"].drained);
        assert_eq!(obs.observed.nodes["worker1"].labels, w.labels);
        let steps = steps(&d, &obs.observed);
        assert!(
            !steps
                .iter()
                .any(|s| matches!(s, Step::InitSwarm { .. } | Step::JoinSwarm { .. } | Step::LeaveSwarm { .. })),
            "members are left in their swarm: {steps:?}"
        );
    }

    #[tokio::test]
    async fn a_node_in_another_swarm_is_foreign_and_the_plan_will_not_take_it() {
        let d = desired(1, 2, ModeRequest::Auto);
        let engines = in_swarm().answers("worker2", "10.0.0.3", worker("x", &["10.9.9.9:2377"]));
        let obs = look(&d, &recorded(RECORDED_S), running(), &engines).await.unwrap();
        assert_eq!(
            obs.observed.nodes["worker2"].swarm,
            Membership::Foreign { swarm: "the swarm managed at 10.9.9.9:2377".into() }
        );
        assert!(!obs.swarm_nodes.contains_key("worker2"));
        assert_eq!(obs.observed.nodes["worker1"].swarm, member("S", false));
        let p = plan(&d, &obs.observed);
        assert!(
            p.blocked
                .iter()
                .any(|b| b.starts_with("worker2 is already in another swarm (the swarm managed at 10.9.9.9")),
            "{:?}",
            p.blocked
        );
    }

    #[tokio::test]
    async fn an_engine_that_does_not_answer_is_not_ready_and_is_waited_for() {
        let d = desired(1, 2, ModeRequest::Auto);
        let mut machines = running();
        machines[1].address = Some("172.16.0.9".into());
        let mut engines = in_swarm();
        engines.nodes.remove("worker1");
        let obs = look(&d, &recorded(RECORDED_S), machines, &engines).await.unwrap();
        let w = &obs.observed.nodes["worker1"];
        assert!(!w.engine);
        assert_eq!(w.swarm, Membership::Unknown);
        assert_eq!(w.address.as_deref(), Some("172.16.0.9"), "the driver's address, lacking the engine's");
        assert!(!obs.swarm_nodes.contains_key("worker1"));
        // A worker's silence does not stop the managers answering for the swarm.
        assert!(!obs.observed.managers_unchecked);
        assert_eq!(obs.observed.nodes["worker2"].swarm, member("S", false));
        assert!(steps(&d, &obs.observed).contains(&Step::WaitEngine { node: "worker1".into() }));

        // An engine that answers but cannot say whether it is in a swarm counts as not answering.
        let mut engines = in_swarm();
        engines.facts("worker1").swarm = Err("Cannot connect to the Docker daemon".into());
        let obs = look(&d, &recorded(RECORDED_S), running(), &engines).await.unwrap();
        assert!(!obs.observed.nodes["worker1"].engine);
        assert_eq!(obs.observed.nodes["worker1"].swarm, Membership::Unknown);

        // A stopped machine's engine is not asked; the plan starts it.
        let mut machines = running();
        machines[2].state = MachineState::Stopped;
        let engines = in_swarm();
        let obs = look(&d, &recorded(RECORDED_S), machines, &engines).await.unwrap();
        assert!(!engines.asked.lock().unwrap().contains(&"worker2".to_string()));
        assert!(!obs.observed.nodes["worker2"].engine);
        assert!(steps(&d, &obs.observed).contains(&Step::StartNode { node: "worker2".into() }));
    }

    #[tokio::test]
    async fn a_silent_manager_leaves_the_swarm_unchecked_and_no_node_is_made_to_leave() {
        let d = desired(1, 2, ModeRequest::Auto);
        let mut engines = in_swarm();
        engines.nodes.remove("manager");
        engines.registry = Some(RegistryObs {
            image: "registry:2".into(),
            mode: RegistryMode::Fallback,
            spec_matches: true,
            running_on: None,
            tls: None,
            read_only: false,
        });
        let obs = look(&d, &recorded(RECORDED_S), running(), &engines).await.unwrap();
        assert!(obs.observed.managers_unchecked);
        assert_eq!(obs.observed.swarm_id, None);
        assert!(!obs.observed.nodes["manager"].engine);
        // The workers' managers are this cluster's, which could not say: taken for its own.
        assert_eq!(obs.observed.nodes["worker1"].swarm, Membership::Unknown);
        // Nothing to ask for the registry either.
        assert_eq!(obs.observed.registry, None);
        let steps = steps(&d, &obs.observed);
        assert!(!steps.iter().any(|s| matches!(s, Step::LeaveSwarm { .. })), "{steps:?}");
        assert!(steps.contains(&Step::WaitEngine { node: "manager".into() }), "{steps:?}");
    }

    #[tokio::test]
    async fn the_registry_service_and_the_node_its_task_runs_on() {
        let d = desired(1, 2, ModeRequest::Auto);
        let service = RegistryObs {
            image: "registry:2".into(),
            mode: RegistryMode::Fallback,
            spec_matches: true,
            running_on: None,
            tls: None,
            read_only: false,
        };
        let with = |task: Option<(&str, &str)>| {
            let mut c = in_swarm();
            c.registry = Some(service.clone());
            c.task = task.map(|(n, s)| (n.to_string(), s.to_string()));
            c
        };
        // Running on worker1: named by lab's name for it.
        let obs = look(&d, &recorded(RECORDED_S), running(), &with(Some(("w1", "running")))).await.unwrap();
        let reg = obs.observed.registry.clone().expect("the service");
        assert_eq!((reg.image.as_str(), reg.mode, reg.spec_matches), ("registry:2", RegistryMode::Fallback, true));
        assert_eq!(reg.running_on.as_deref(), Some("worker1"));
        assert_eq!(obs.registry_task, Some(("worker1".into(), "running".into())));
        // Not running yet: where it is, but running nowhere.
        let obs = look(&d, &recorded(RECORDED_S), running(), &with(Some(("w1", "pending")))).await.unwrap();
        assert_eq!(obs.observed.registry.unwrap().running_on, None);
        assert_eq!(obs.registry_task, Some(("worker1".into(), "pending".into())));
        // On a node no manager lists (a lost one): its ID, and running nowhere lab can see.
        let obs = look(&d, &recorded(RECORDED_S), running(), &with(Some(("lost", "running")))).await.unwrap();
        assert_eq!(obs.observed.registry.unwrap().running_on, None);
        assert_eq!(obs.registry_task, Some(("lost".into(), "running".into())));
        // No service: no registry and no task; the plan deploys it.
        let mut engines = in_swarm();
        engines.task = Some(("w1".into(), "running".into()));
        let obs = look(&d, &recorded(RECORDED_S), running(), &engines).await.unwrap();
        assert_eq!(obs.observed.registry, None);
        assert_eq!(obs.registry_task, None);
        assert!(steps(&d, &obs.observed).contains(&Step::DeployRegistry));
    }

    #[tokio::test]
    async fn forwarders_data_volumes_and_images_are_seen_on_each_node() {
        let d = desired(1, 2, ModeRequest::Auto);
        let mut engines = in_swarm();
        engines.facts("worker2").forwarder = Some("10.0.0.2:5000".into());
        engines.facts("worker1").registry_data = true;
        engines.facts("manager").has_image = false;
        let obs = look(&d, &recorded(RECORDED_S), running(), &engines).await.unwrap();
        let n = &obs.observed.nodes;
        assert_eq!(n["worker2"].forwarder.as_deref(), Some("10.0.0.2:5000"));
        assert_eq!(n["worker1"].forwarder, None);
        assert!(n["worker1"].registry_data && !n["worker2"].registry_data);
        assert!(n["manager"].images.is_empty() && n["worker1"].images.contains("registry:2"));
    }

    /// Lab's record is out of date: the manager was made again outside lab (a new address, in
    /// no swarm), and worker1 is still in the swarm lab recorded.
    #[tokio::test]
    async fn a_recorded_swarm_whose_manager_is_gone_is_recognised_by_its_recorded_address() {
        let d = desired(1, 2, ModeRequest::Auto);
        let engines = Canned::default()
            .answers("manager", "10.0.0.7", LocalView::default())
            .answers("worker1", "10.0.0.2", worker("w1", &["10.0.0.1:2377"]))
            .answers("worker2", "10.0.0.3", LocalView::default());
        let mut state = recorded(Some(("OLD", "10.0.0.1:2377")));
        state.registry_mode = Some(RegistryMode::Fallback);
        let obs = look(&d, &state, running(), &engines).await.unwrap();
        assert_eq!(obs.observed.swarm_id, None);
        assert!(!obs.observed.managers_unchecked);
        assert_eq!(
            obs.observed.nodes["worker1"].swarm,
            Membership::Member { swarm_id: "a former swarm of cluster t".into(), manager: false }
        );
        assert_eq!(obs.observed.mode, Some(RegistryMode::Fallback), "the recorded mode is carried");
        // worker1 leaves the old swarm without asking, and joins the new one.
        let p = plan(&d, &obs.observed);
        assert!(p.blocked.is_empty(), "{:?}", p.blocked);
        let steps: Vec<Step> = p.steps.into_iter().map(|s| s.step).collect();
        for s in [
            Step::InitSwarm { node: "manager".into() },
            Step::LeaveSwarm { node: "worker1".into() },
            Step::JoinSwarm { node: "worker1".into(), role: Role::Worker },
        ] {
            assert!(steps.contains(&s), "{s} missing from {steps:?}");
        }
        // Without the record, nothing says that swarm was this cluster's: it is foreign.
        let obs = look(&d, &recorded(None), running(), &engines).await.unwrap();
        assert_eq!(
            obs.observed.nodes["worker1"].swarm,
            Membership::Foreign { swarm: "the swarm managed at 10.0.0.1:2377".into() }
        );
    }

    /// An `up` killed right after `swarm init`, before it recorded the swarm or labelled a
    /// node: the swarm's own `lab.cluster` label, set by the init itself, says it is this
    /// cluster's, so the next `up` goes on with it instead of calling it foreign.
    #[tokio::test]
    async fn a_swarm_labelled_at_init_is_adopted_before_any_node_is_labelled() {
        let d = desired(1, 2, ModeRequest::Auto);
        let mut engines = Canned::default()
            .answers("manager", "10.0.0.1", manager_in("S", "m"))
            .answers("worker1", "10.0.0.2", LocalView::default())
            .answers("worker2", "10.0.0.3", LocalView::default());
        engines.lists.insert("manager".into(), vec![listed("m", NodeSpecRoleEnum::MANAGER, false, &[])]);
        engines.swarm_labels.insert("manager".into(), HashMap::from([("lab.cluster".into(), "t".into())]));
        let obs = look(&d, &recorded(None), running(), &engines).await.unwrap();
        assert_eq!(obs.observed.swarm_id.as_deref(), Some("S"));
        assert_eq!(obs.observed.nodes["manager"].swarm, Membership::Member { swarm_id: "S".into(), manager: true });
        let p = plan(&d, &obs.observed);
        assert!(p.blocked.is_empty(), "{:?}", p.blocked);
        assert!(!p.steps.iter().any(|s| matches!(s.step, Step::InitSwarm { .. })), "{:?}", p.steps);

        // Another cluster's label on the swarm is no claim on it.
        engines.swarm_labels.insert("manager".into(), HashMap::from([("lab.cluster".into(), "other".into())]));
        let obs = look(&d, &recorded(None), running(), &engines).await.unwrap();
        assert_eq!(obs.observed.swarm_id, None);
        assert_eq!(obs.observed.nodes["manager"].swarm, Membership::Foreign { swarm: "swarm S".into() });
    }

    #[test]
    fn a_membership_still_settling_is_not_taken_at_face_value() {
        // Rejoining after its engine started.
        assert!(settling(&LocalView { active: true, pending: true, ..Default::default() }, "10.0.0.1"));
        // A manager whose control plane is not up yet: a worker managed at its own address.
        assert!(settling(&worker("m", &["10.0.0.1:2377"]), "10.0.0.1"));
        assert!(!settling(&worker("w", &["10.0.0.1:2377"]), "10.0.0.2"));
        assert!(!settling(&manager_in("S", "m"), "10.0.0.1"));
        assert!(!settling(&LocalView::default(), "10.0.0.1"));
    }
}
