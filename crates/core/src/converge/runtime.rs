//! The cluster's runtime: its driver, what is wanted of it, its recorded state, and the
//! connections to its nodes' engines, made once per command. It implements the
//! [`Nodes`](crate::cluster::Nodes) seam every area works through, and carries out each step of
//! a plan ([`Runtime::run_step`]) by calling the area that does it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bollard::Docker;

use super::exec::StepRunner;
use crate::cluster::{Desired, Progress, Step};
use crate::driver::{Driver, Machine, NodeEngine};
use crate::error::{Error, Result};
use crate::state::{now, ClusterState, NodeRecord, Paths, StepRecord};
use crate::topology::Role;
use crate::wait::{Look, Wait};
use crate::{images, registry, swarm};

/// How long lab waits for a node's engine to answer after the machine starts.
pub const ENGINE_TIMEOUT: Duration = Duration::from_secs(120);
pub use crate::cluster::REQUEST_TIMEOUT;

/// Whether the driver's list of machines, `observed`, lacks `node`'s: its machine went away.
fn went_away(observed: &[Machine], node: &str) -> bool {
    !observed.iter().any(|m| m.name == node)
}

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
    images: crate::cluster::ImageSource,
    /// Whether a machine went away during this command and was made again ([`Runtime::remade`]).
    remade: std::sync::atomic::AtomicBool,
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
            remade: std::sync::atomic::AtomicBool::new(false),
            images: crate::cluster::ImageSource::default(),
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
        // Negotiating is a `GET /version` answered: the engine answers, no ping needed.
        let docker = tokio::time::timeout(timeout, docker.negotiate_version())
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

    /// Waits, at most [`ENGINE_TIMEOUT`], until a node's engine answers; the timeout keeps
    /// the last error as its cause.
    pub async fn wait_engine(&self, node: &str) -> Result<NodeEngine> {
        let start = Instant::now();
        let remade = std::sync::atomic::AtomicBool::new(false);
        let remade = &remade;
        // A look is a connection to a socket that refuses at once until dockerd listens; the
        // driver's list, which loads the host, is asked at most once a second.
        let listed = Mutex::new(start);
        let listed = &listed;
        Wait::new(node, "its Docker engine to answer", ENGINE_TIMEOUT)
            .every(Duration::from_millis(100))
            .poll(|| async move {
                // The machine may have been created by another process or have a new address;
                // or it went away after observation saw it, and is made again (once).
                let relist = start.elapsed() > Duration::from_secs(5) && {
                    let mut last = listed.lock().expect("list time lock");
                    let due = last.elapsed() >= Duration::from_secs(1);
                    if due {
                        *last = Instant::now();
                    }
                    due
                };
                if self.machine(node).is_none() || relist {
                    if let Ok(ms) = self.driver.observe().await {
                        let gone = went_away(&ms, node);
                        self.set_machines(ms);
                        if gone && !remade.swap(true, std::sync::atomic::Ordering::SeqCst) {
                            if let Err(e) = self.remake(node).await {
                                return Look::Fail(e);
                            }
                        }
                    }
                }
                match self.try_engine(node, Duration::from_secs(5)).await {
                    Ok(e) => Look::Done(e),
                    Err(e) => Look::not_yet(e),
                }
            })
            .await
    }

    /// Makes a node's machine again when it went away after observation saw it: a removal
    /// under way when `up` looked (a `lab down` killed a moment before leaves its engine
    /// removing the containers it was asked to), or someone else's `docker rm`. Waiting for
    /// the engine of a machine that no longer exists would only time out, and the next `up`
    /// would make it anyway.
    async fn remake(&self, node: &str) -> Result<()> {
        let Some(spec) = self.desired.topology.node(node) else { return Ok(()) };
        if !self.desired.capabilities.create {
            return Ok(());
        }
        self.progress.note(&format!(
            "{node}: its machine went away while up ran (a removal under way when up looked, such as a killed \
             `lab down`'s): making it again"
        ));
        self.forget(node).await;
        let m = self.driver.create(spec).await?;
        self.set_machines([m]);
        self.remade.store(true, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }

    /// Whether a machine went away during this command and was made again: what the plan was
    /// made from is then stale (an engine that did not answer, a swarm it could not see), and
    /// `up` observes and plans again.
    pub fn remade(&self) -> bool {
        self.remade.load(std::sync::atomic::Ordering::SeqCst)
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
        match step {
            Step::DestroyNode { .. } | Step::CreateNode { .. } | Step::StartNode { .. } | Step::WaitEngine { .. } => {
                self.machine_step(step).await
            }
            Step::LoadImage { node, image } => images::ensure(self, step, node, image).await.map(Some),
            Step::LeaveSwarm { .. } | Step::InitSwarm { .. } | Step::JoinSwarm { .. } | Step::ConfigureNode { .. } => {
                self.swarm_step(step).await
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
            Step::IssueRegistryCerts
            | Step::NodeCerts { .. }
            | Step::RenewRegistryCa { .. }
            | Step::RevokeNode { .. } => self.tls_step(step).await,
        }
    }

    /// The machine steps, through the driver, recording each node's address once its engine
    /// answers and forgetting a destroyed one.
    async fn machine_step(&self, step: &Step) -> Result<Option<String>> {
        let topo = &self.desired.topology;
        match step {
            Step::DestroyNode { node, reason } => {
                // Say what is about to go, before it goes.
                self.progress.note(&format!("destroying node {node} ({reason})"));
                let id = swarm::steps::node_id(self, node).await;
                if let Some(id) = &id {
                    swarm::steps::retire(self, node, id).await?;
                }
                self.driver.destroy(node).await?;
                self.forget(node).await;
                if let Some(id) = id {
                    swarm::steps::forget_node(self, &id).await;
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
            other => unreachable!("not a machine step: {other}"),
        }
    }

    /// The swarm steps ([`swarm::steps`]), recording the swarm they make or find.
    async fn swarm_step(&self, step: &Step) -> Result<Option<String>> {
        match step {
            Step::LeaveSwarm { node } => swarm::steps::leave_node(self, node).await.map(|()| None),
            Step::InitSwarm { node } => {
                let rec = swarm::steps::init_on(self, node).await?;
                let detail = format!("advertising {}", rec.manager_addr);
                self.update_state(|st| {
                    st.swarm = Some(rec);
                    st.registry_mode = None;
                })?;
                Ok(Some(detail))
            }
            Step::JoinSwarm { node, role } => {
                // Machines a driver makes are this cluster's alone; fixed hosts (ssh) may be
                // in a swarm of their owner's, which only the plan, with --force, may leave.
                let ours = self.driver.fixed_nodes().is_none();
                let joined = swarm::steps::join_node(self, node, *role, self.state().swarm.is_some(), ours).await?;
                if let Some(rec) = joined.record {
                    self.update_state(|st| st.swarm = Some(rec))?;
                }
                Ok(joined.already.then(|| "already a member".to_string()))
            }
            Step::ConfigureNode { node } => swarm::steps::configure_node(self, node).await.map(Some),
            other => unreachable!("not a swarm step: {other}"),
        }
    }

    /// The mutual-TLS steps: the certificates made in the cluster's directory (a new CA when
    /// asked), a node issued its own pair and its engine given it, and a node that left
    /// stripped of its relay and pair.
    async fn tls_step(&self, step: &Step) -> Result<Option<String>> {
        let topo = &self.desired.topology;
        let cluster = topo.cluster.as_str();
        let image = &self.desired.registry_image;
        match step {
            Step::IssueRegistryCerts => {
                let dir = crate::tls::dir(&self.paths.ensure_cluster_dir(&topo.cluster)?);
                let (m, _) = crate::tls::ensure(&dir, cluster)?;
                Ok(Some(format!("valid until {}", crate::tls::date(m.meta.leaf_not_after))))
            }
            Step::RenewRegistryCa { .. } => {
                let dir = crate::tls::dir(&self.paths.ensure_cluster_dir(&topo.cluster)?);
                let m = crate::tls::renew_ca(&dir, cluster)?;
                Ok(Some(format!("valid until {}", crate::tls::date(m.meta.leaf_not_after))))
            }
            Step::NodeCerts { node } => {
                let dir = crate::tls::dir(&self.paths.cluster_dir(&topo.cluster));
                let m = crate::tls::issue_node(&dir, cluster, node)?;
                let e = self.engine(node).await?;
                crate::tls::install_node(&e.docker, node, cluster, image, &m).await.map(Some)
            }
            Step::RevokeNode { node } => {
                let e = self.engine(node).await?;
                registry::forwarder::remove_forwarder(node, &e.docker).await?;
                // The helper that removes the files runs the registry image: a node without
                // it had none of lab's files put there.
                if e.docker.inspect_image(image).await.is_ok() {
                    crate::tls::remove_node(&e.docker, node, cluster, image).await?;
                }
                Ok(Some("relay and client certificate removed".into()))
            }
            other => unreachable!("not a TLS step: {other}"),
        }
    }
}

#[async_trait::async_trait]
impl crate::cluster::Nodes for Runtime {
    fn desired(&self) -> &Desired {
        &self.desired
    }
    fn state(&self) -> ClusterState {
        Runtime::state(self)
    }
    fn progress(&self) -> Arc<dyn Progress> {
        self.progress.clone()
    }
    async fn machines(&self) -> Result<Vec<Machine>> {
        let machines = self.driver.observe().await?;
        self.set_machines(machines.clone());
        Ok(machines)
    }
    fn set_cluster_swarm(&self, id: Option<String>) {
        Runtime::set_cluster_swarm(self, id)
    }
    async fn engine(&self, node: &str) -> Result<NodeEngine> {
        Runtime::engine(self, node).await
    }
    async fn try_engine(&self, node: &str, timeout: Duration) -> Result<NodeEngine> {
        Runtime::try_engine(self, node, timeout).await
    }
    async fn manager(&self) -> Result<(String, Docker)> {
        Runtime::manager(self).await
    }
    fn can_exec(&self) -> bool {
        self.desired.capabilities.exec
    }
    async fn exec(&self, node: &str, argv: &[String]) -> Result<crate::driver::ExecOutput> {
        self.driver.exec(node, argv).await
    }
    fn images(&self) -> &crate::cluster::ImageSource {
        &self.images
    }
    fn cluster_dir(&self) -> std::path::PathBuf {
        self.paths.cluster_dir(&self.desired.topology.cluster)
    }
}

#[async_trait::async_trait]
impl StepRunner for Runtime {
    async fn run_step(&self, step: &Step) -> Result<Option<String>> {
        Runtime::run_step(self, step).await
    }
    fn progress(&self) -> Arc<dyn Progress> {
        self.progress.clone()
    }
    fn driver_name(&self) -> String {
        self.state().driver
    }
    fn begin_run(&self) -> Result<Vec<StepRecord>> {
        let st = self.state();
        let before = if st.run_finished { Vec::new() } else { st.completed.clone() };
        self.update_state(|st| {
            st.completed.clear();
            st.run_finished = false;
        })?;
        Ok(before)
    }
    fn step_finished(&self, step: &Step) -> Result<()> {
        let text = step.to_string();
        self.update_state(|st| st.completed.push(StepRecord { step: text, finished_at: now() }))
    }
    fn end_run(&self) -> Result<()> {
        self.update_state(|st| st.run_finished = true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::MachineState;

    fn machine(name: &str, state: MachineState) -> Machine {
        Machine { name: name.into(), role: None, state, address: None }
    }

    /// A machine the driver no longer lists went away (and `wait_engine` makes it again); one
    /// it lists in any state, being removed included, is waited for.
    #[test]
    fn a_machine_missing_from_the_drivers_list_went_away() {
        let manager = machine("manager", MachineState::Running);
        assert!(went_away(std::slice::from_ref(&manager), "worker1"));
        assert!(went_away(&[], "manager"));
        let removing = machine("worker1", MachineState::Broken("container state removing".into()));
        assert!(!went_away(&[manager.clone(), removing], "worker1"));
        assert!(!went_away(&[manager], "manager"));
    }
}
