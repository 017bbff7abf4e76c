//! The executor: runs a [`Plan`] against real machines and engines.
//!
//! Steps whose dependencies are done run concurrently (node creation, engine waits, image
//! loading, worker joins); manager joins are chained by the planner. Each finished step is
//! recorded in the cluster's state before the next ones start, so an interrupted `up`
//! resumes from what is really there: the next observation sees the finished work and the
//! planner plans only the rest. On the first failure no new step starts, the running ones
//! finish, and that failure is returned.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bollard::Docker;
use tokio::sync::OnceCell;
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::driver::{Driver, Machine, NodeEngine};
use crate::error::{Error, Result};
use crate::plan::{Desired, Plan, Step};
use crate::progress::Progress;
use crate::state::{now, ClusterState, NodeRecord, Paths, StepRecord};
use crate::topology::Role;
use crate::{images, registry, swarm};

/// How long lab waits for a node's engine to answer after the machine starts.
pub const ENGINE_TIMEOUT: Duration = Duration::from_secs(120);
/// Timeout for one Docker API request (image transfers included).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(600);

/// Everything a running `lab` command needs about one cluster: its driver, the desired
/// state, the recorded state, and connections to the nodes' engines.
pub struct Runtime {
    /// The driver that makes this cluster's machines.
    pub driver: Box<dyn Driver>,
    /// The desired cluster.
    pub desired: Desired,
    /// Where state is kept.
    pub paths: Paths,
    /// Where progress goes.
    pub progress: Arc<dyn Progress>,
    state: Mutex<ClusterState>,
    machines: Mutex<BTreeMap<String, Machine>>,
    engines: tokio::sync::Mutex<HashMap<String, NodeEngine>>,
    /// The swarm observation decided is the cluster's (`Some(None)`: none), once it has.
    swarm: Mutex<Option<Option<String>>>,
    pub(crate) local: OnceCell<std::result::Result<Docker, String>>,
    pub(crate) exports: Mutex<HashMap<String, Arc<OnceCell<bytes::Bytes>>>>,
}

impl Runtime {
    /// Assembles a runtime.
    pub fn new(
        driver: Box<dyn Driver>,
        desired: Desired,
        paths: Paths,
        state: ClusterState,
        progress: Arc<dyn Progress>,
    ) -> Self {
        Runtime {
            driver,
            desired,
            paths,
            progress,
            state: Mutex::new(state),
            machines: Mutex::new(BTreeMap::new()),
            engines: tokio::sync::Mutex::new(HashMap::new()),
            swarm: Mutex::new(None),
            local: OnceCell::new(),
            exports: Mutex::new(HashMap::new()),
        }
    }

    /// A copy of the cluster's state.
    pub fn state(&self) -> ClusterState {
        self.state.lock().expect("state lock").clone()
    }

    /// Changes the state and writes it to disk atomically.
    pub fn update_state(&self, f: impl FnOnce(&mut ClusterState)) -> Result<()> {
        let mut st = self.state.lock().expect("state lock");
        f(&mut st);
        self.paths.save(&st)
    }

    /// Remembers machines as the driver reported them.
    pub fn set_machines(&self, machines: impl IntoIterator<Item = Machine>) {
        let mut m = self.machines.lock().expect("machines lock");
        for machine in machines {
            m.insert(machine.name.clone(), machine);
        }
    }

    /// The machine for `node`, as last reported.
    pub fn machine(&self, node: &str) -> Option<Machine> {
        self.machines.lock().expect("machines lock").get(node).cloned()
    }

    /// Drops what is known of a node's machine and engine (it was destroyed or restarted,
    /// and may come back with another address).
    async fn forget(&self, node: &str) {
        self.machines.lock().expect("machines lock").remove(node);
        self.engines.lock().await.remove(node);
    }

    /// Connects to a node's engine once, negotiating the API version, within `timeout`.
    pub async fn try_engine(&self, node: &str, timeout: Duration) -> Result<NodeEngine> {
        if let Some(e) = self.engines.lock().await.get(node) {
            return Ok(e.clone());
        }
        let machine = self
            .machine(node)
            .ok_or_else(|| Error::node(node, "connect to its Docker engine", "the driver reports no such machine"))?;
        let mut engine = self.driver.engine(&machine).await?;
        let docker = engine.docker.clone().with_timeout(timeout);
        let docker = tokio::time::timeout(timeout, docker.negotiate_version())
            .await
            .map_err(|_| Error::node(node, "connect to its Docker engine", "no answer"))?
            .map_err(|e| Error::engine(node, "connect to its Docker engine", e))?;
        tokio::time::timeout(timeout, docker.ping())
            .await
            .map_err(|_| Error::node(node, "connect to its Docker engine", "no answer"))?
            .map_err(|e| Error::engine(node, "connect to its Docker engine", e))?;
        engine.docker = docker.with_timeout(REQUEST_TIMEOUT);
        self.engines.lock().await.insert(node.to_string(), engine.clone());
        Ok(engine)
    }

    /// The engine of a node, which must be answering.
    pub async fn engine(&self, node: &str) -> Result<NodeEngine> {
        self.try_engine(node, Duration::from_secs(10)).await
    }

    /// Waits, at most [`ENGINE_TIMEOUT`], until a node's engine answers.
    pub async fn wait_engine(&self, node: &str) -> Result<NodeEngine> {
        let start = Instant::now();
        let mut last;
        loop {
            // The machine may have been created by another process or have a new address.
            if self.machine(node).is_none() || start.elapsed() > Duration::from_secs(5) {
                if let Ok(ms) = self.driver.observe().await {
                    self.set_machines(ms);
                }
            }
            match self.try_engine(node, Duration::from_secs(5)).await {
                Ok(e) => return Ok(e),
                Err(e) => last = e,
            }
            if start.elapsed() >= ENGINE_TIMEOUT {
                let cause = match &last {
                    Error::Node { message, .. } => message.clone(),
                    other => other.to_string(),
                };
                return Err(Error::Timeout {
                    node: node.into(),
                    what: "its Docker engine to answer".into(),
                    secs: ENGINE_TIMEOUT.as_secs(),
                    hint: Some(format!("last error: {cause}")),
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Remembers which swarm is the cluster's, as observation decided or `InitSwarm` made it.
    pub(crate) fn set_cluster_swarm(&self, id: Option<String>) {
        *self.swarm.lock().expect("swarm lock") = Some(id);
    }

    /// A manager of this cluster's swarm that answers, with its node name. Once observation
    /// has decided which swarm is the cluster's, only a manager of that one: a manager still
    /// in a foreign swarm is never asked for a join token or told to deploy anything.
    pub async fn manager(&self) -> Result<(String, Docker)> {
        let decided = self.swarm.lock().expect("swarm lock").clone();
        let want = match decided {
            Some(id) => Some(id),
            None => self.state().swarm.map(|s| Some(s.id)).filter(|s| s.as_deref().is_some_and(|s| !s.is_empty())),
        };
        for n in self.desired.topology.nodes.iter().filter(|n| n.role == Role::Manager) {
            if let Ok(e) = self.engine(&n.name).await {
                if let Ok(v) = swarm::local_view(&e.docker).await {
                    if v.manager && want.as_ref().is_none_or(|w| w.is_some() && v.cluster_id == *w) {
                        return Ok((n.name.clone(), e.docker));
                    }
                }
            }
        }
        Err(Error::op("find a swarm manager", "no manager of this cluster's swarm answers")
            .with_hint("`lab status` shows each node's engine and swarm state"))
    }

    /// Runs one step. Returns a short detail for the progress line.
    pub async fn run_step(&self, step: &Step) -> Result<Option<String>> {
        let topo = &self.desired.topology;
        match step {
            Step::DestroyNode { node, reason } => {
                // Say what is about to go, before it goes.
                self.progress.note(&format!("destroying node {node} ({reason})"));
                // Its swarm node ID, to take it off the managers' list once it is gone.
                let id = match self.try_engine(node, Duration::from_secs(3)).await {
                    Ok(e) => swarm::local_view(&e.docker).await.ok().and_then(|v| v.node_id),
                    Err(_) => None,
                };
                self.driver.destroy(node).await?;
                self.forget(node).await;
                if let (Some(id), Ok((_, mgr))) = (id, self.manager().await) {
                    let opts = bollard::query_parameters::DeleteNodeOptionsBuilder::new().force(true).build();
                    let _ = mgr.delete_node(&id, Some(opts)).await;
                }
                self.update_state(|st| {
                    st.nodes.remove(node);
                })?;
                Ok(None)
            }
            Step::CreateNode { node, .. } => {
                let spec = topo.node(node).expect("planned nodes are in the topology");
                let m = self.driver.create(spec).await?;
                self.set_machines([m]);
                Ok(None)
            }
            Step::StartNode { node } => {
                if !self.desired.capabilities.start {
                    return Err(Error::node(
                        node,
                        "start the machine",
                        format!("it is stopped, and driver {} cannot start machines", self.state().driver),
                    )
                    .with_hint("start it yourself, then run lab up again"));
                }
                let m = self.driver.start(node).await?;
                self.forget(node).await;
                self.set_machines([m]);
                Ok(None)
            }
            Step::WaitEngine { node } => {
                let e = self.wait_engine(node).await?;
                let role = topo.node(node).map(|n| n.role).unwrap_or(Role::Worker);
                let addr = e.advertise_addr.clone();
                self.update_state(|st| {
                    st.nodes.insert(node.clone(), NodeRecord { role, address: Some(addr.clone()) });
                })?;
                Ok(Some(addr))
            }
            Step::LoadImage { node, image } => images::ensure(self, step, node, image).await.map(Some),
            Step::LeaveSwarm { node } => {
                let e = self.engine(node).await?;
                swarm::leave(node, &e.docker).await?;
                Ok(None)
            }
            Step::InitSwarm { node } => {
                let e = self.engine(node).await?;
                let rec = swarm::init(node, &e.docker, &e.advertise_addr).await?;
                let detail = format!("advertising {}", rec.manager_addr);
                self.set_cluster_swarm(Some(rec.id.clone()));
                self.update_state(|st| {
                    st.swarm = Some(rec);
                    st.registry_mode = None;
                })?;
                Ok(Some(detail))
            }
            Step::JoinSwarm { node, role } => {
                let e = self.engine(node).await?;
                // A node that was stopped when the plan was made could not say whether it was
                // a member; once started, its engine rejoins on its own, and joining again
                // would fail ("already part of a swarm"). A member a manager knows is done.
                if let Ok(v) = swarm::local_view(&e.docker).await {
                    if let (true, Some(id)) = (v.active, v.node_id.as_deref()) {
                        if let Ok((_, mgr)) = self.manager().await {
                            if mgr.inspect_node(id).await.is_ok() {
                                return Ok(Some("already a member".into()));
                            }
                        }
                    }
                }
                // The current token, from a manager that answers now: never a stored one, which
                // a `docker swarm join-token --rotate` would have made useless.
                let (mgr_name, mgr) = self.manager().await?;
                let mgr_addr = format!("{}:{}", self.engine(&mgr_name).await?.advertise_addr, swarm::SWARM_PORT);
                let token = swarm::join_token(&mgr_name, &mgr, *role).await?;
                swarm::join(node, &e.docker, &e.advertise_addr, &mgr_addr, &token, *role).await?;
                if self.state().swarm.is_none() {
                    let rec = swarm::record(&mgr_name, &mgr, &self.engine(&mgr_name).await?.advertise_addr).await?;
                    self.update_state(|st| st.swarm = Some(rec))?;
                }
                // A node made again leaves its old self behind as a down entry; drop it.
                if let (Ok((_, mgr)), Ok(v)) = (self.manager().await, swarm::local_view(&e.docker).await) {
                    if let Some(id) = v.node_id {
                        if let Ok(n) = mgr.inspect_node(&id).await {
                            let host = n.description.and_then(|d| d.hostname).unwrap_or_default();
                            swarm::forget_stale(&mgr, &host, &id).await;
                        }
                    }
                }
                Ok(None)
            }
            Step::ConfigureNode { node } => {
                let spec = topo.node(node).expect("planned nodes are in the topology");
                let e = self.engine(node).await?;
                let id = swarm::local_view(&e.docker)
                    .await
                    .map_err(|err| Error::engine(node, "read its swarm node ID", err))?
                    .node_id
                    .ok_or_else(|| {
                        Error::node(node, "set role, availability and labels", "the node is not in the swarm")
                    })?;
                let (_, mgr) = self.manager().await?;
                let drain = topo.drain_managers() && spec.role == Role::Manager;
                swarm::configure(node, &mgr, &id, spec.role, drain, &topo.swarm_labels(spec)).await?;
                Ok(Some(format!("{}, {}", spec.role, if drain { "drain" } else { "active" })))
            }
            Step::ChooseRegistryMode => {
                let (mode, why) = registry::choose_mode(self).await?;
                self.update_state(|st| st.registry_mode = Some(mode))?;
                self.progress.note(&format!("registry mode: {mode} ({why})"));
                Ok(Some(format!("{mode}: {why}")))
            }
            Step::DeployRegistry => registry::deploy(self).await.map(Some),
            Step::MoveRegistryData { from, to } => registry::move_data(self, from, to).await.map(Some),
            Step::Forwarder { node } => registry::forwarder(self, node).await.map(Some),
        }
    }
}

/// Executes `plan`, running independent steps concurrently, recording each finished step.
pub async fn execute(rt: Arc<Runtime>, plan: &Plan) -> Result<()> {
    let n = plan.steps.len();
    let mut done = vec![false; n];
    let mut started = vec![false; n];
    let mut running = JoinSet::new();
    let mut failure: Option<Error> = None;
    rt.update_state(|st| st.completed.clear())?;
    loop {
        if failure.is_none() {
            for i in 0..n {
                if !started[i] && plan.steps[i].after.iter().all(|&a| done[a]) {
                    started[i] = true;
                    let step = plan.steps[i].step.clone();
                    let rt = rt.clone();
                    let span = tracing::info_span!("step", node = step.node().unwrap_or("-"), step = %step);
                    running.spawn(
                        async move {
                            rt.progress.started(&step);
                            let t = Instant::now();
                            let driver = rt.state().driver;
                            let r = rt.run_step(&step).await.map_err(|e| e.for_driver(&driver));
                            match &r {
                                Ok(detail) => rt.progress.finished(&step, t.elapsed(), detail.as_deref()),
                                Err(e) => rt.progress.failed(&step, t.elapsed(), e),
                            }
                            (i, r)
                        }
                        .instrument(span),
                    );
                }
            }
        }
        let Some(joined) = running.join_next().await else { break };
        let (i, result) = joined.map_err(|e| Error::op("run a step", e))?;
        match result {
            Ok(_) => {
                done[i] = true;
                let text = plan.steps[i].step.to_string();
                rt.update_state(|st| st.completed.push(StepRecord { step: text, finished_at: now() }))?;
            }
            Err(e) => {
                if failure.is_none() {
                    failure = Some(e);
                }
            }
        }
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
