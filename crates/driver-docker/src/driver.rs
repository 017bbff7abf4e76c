//! The `Driver` implementation over the local Docker engine.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use bollard::exec::{StartExecOptions, StartExecResults};
use bollard::models::{
    ContainerCreateBody, ContainerSummary, ContainerSummaryStateEnum, ExecConfig, HostConfig, NetworkCreateRequest,
    VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, ListContainersOptionsBuilder, ListNetworksOptionsBuilder,
    ListVolumesOptionsBuilder, RemoveContainerOptionsBuilder, RemoveVolumeOptionsBuilder,
    RestartContainerOptionsBuilder,
};
use bollard::Docker;
use futures_util::{StreamExt, TryStreamExt};
use lab_core::error::engine_message;
use lab_core::state::{make_private_dir, write_atomic};
use lab_core::{
    Capabilities, ClusterName, Driver, DriverContext, Error, ExecOutput, Machine, MissingImage, NodeEngine, NodeSpec,
    Result,
};
use tokio::sync::OnceCell;

use crate::config::{DockerConfig, PrivilegedMode};
use crate::engine::{self, EngineRecord, CLUSTER_LABEL, NODE_LABEL};
use crate::error::{because, is_not_found, is_removal_in_progress, on_engine, on_node};
use crate::node::{
    empty_files_tar, is_socket, machine_of, socket_appears, socket_dir_of, wait_answering, FIXED_SUBNET_LABEL,
    ROLE_LABEL,
};

/// How to get a node image on a machine that cannot pull.
const NODE_IMAGE_HOW: &str =
    "build one with scripts/offline-images.sh and pass --node-image lab-offline/node:bookworm (or set [drivers.docker] \
     node_image)";
/// Unix socket paths are limited to 108 bytes by the kernel.
const MAX_SOCKET_PATH: usize = 100;
/// How long a node's dockerd gets to stop cleanly on restart. Killed earlier, it leaves its
/// pid file in the container's filesystem and refuses to start again ("pid file found").
const STOP_GRACE_SECS: i32 = 60;
/// How long a running node whose socket directory exists gets to make its socket (it may
/// have just been created) before `up` restarts it.
const SOCKET_GRACE: Duration = Duration::from_secs(20);

/// Nodes as Docker-in-Docker containers.
pub struct DockerDriver {
    cluster: ClusterName,
    config: DockerConfig,
    state_dir: PathBuf,
    cache_dir: PathBuf,
    config_source: String,
    host: OnceCell<(Docker, EngineRecord)>,
    privileged: OnceCell<bool>,
    // Docker allows two networks with one name, so concurrent creations must not race.
    // Its fixed subnet, if it has one (networks made before lab fixed them have none).
    network_ready: OnceCell<Option<String>>,
    /// Each node's socket directory as its container binds it, from the last list of the
    /// cluster's containers: `engine` needs no inspection of its own once `observe` listed.
    bound: std::sync::Mutex<HashMap<String, PathBuf>>,
}

impl DockerDriver {
    /// Makes the driver from its context (its `[drivers.docker]` table).
    pub fn new(ctx: DriverContext) -> Result<Self> {
        let config: DockerConfig = ctx.parse_config()?;
        if config.node_image.trim().is_empty() || config.node_image.starts_with('-') {
            return Err(Error::input(
                format!("{}: [drivers.docker] node_image", ctx.config_source),
                format!("invalid image reference {:?}", config.node_image),
            ));
        }
        Ok(DockerDriver {
            cluster: ctx.cluster,
            config,
            state_dir: ctx.state_dir,
            cache_dir: ctx.cache_dir,
            config_source: ctx.config_source,
            host: OnceCell::new(),
            privileged: OnceCell::new(),
            network_ready: OnceCell::new(),
            bound: std::sync::Mutex::new(HashMap::new()),
        })
    }

    /// [`DockerDriver::new`], boxed, for registration.
    pub fn boxed(ctx: DriverContext) -> Result<Box<dyn Driver>> {
        Ok(Box::new(Self::new(ctx)?))
    }

    async fn host(&self) -> Result<&Docker> {
        Ok(&self.host.get_or_try_init(|| self.connect_host()).await?.0)
    }

    /// Connects to the engine this cluster lives on: the recorded one for a cluster lab made,
    /// else the `host` setting, else `DOCKER_HOST` (or the default socket), which must not be
    /// a node of another lab cluster unless the user said so.
    async fn connect_host(&self) -> Result<(Docker, EngineRecord)> {
        let recorded = engine::read(&self.state_dir)?;
        let setting = format!("{}: [drivers.docker] host", self.config_source);
        let env_host = std::env::var("DOCKER_HOST").ok().filter(|h| !h.trim().is_empty());
        let (endpoint, what, explicit) = match (&recorded, &self.config.host) {
            (Some(r), Some(h)) if h != &r.endpoint => {
                return Err(Error::input(
                    setting,
                    format!(
                        "{h:?}: cluster {} was made on the engine at {}, and lab keeps it there",
                        self.cluster, r.endpoint
                    ),
                ))
            }
            (Some(r), _) => (r.endpoint.clone(), format!("the engine cluster {} was made on", self.cluster), true),
            (None, Some(h)) => (h.clone(), setting.clone(), true),
            (None, None) => {
                let what = if env_host.is_some() { "DOCKER_HOST" } else { "the local Docker engine" };
                (engine::from_env(env_host.as_deref()), what.to_string(), false)
            }
        };
        let context = format!("connect to {what} at {endpoint}");
        let hint = match (&recorded, explicit, engine::lab_node(&[], &endpoint)) {
            // The shell `lab env` left, after `lab down` removed that cluster.
            (None, false, Some((cluster, node))) => format!(
                "DOCKER_HOST is the engine socket of node {node} of lab cluster {cluster}, as `lab env` left it; \
                 if that cluster is gone, run `eval \"$(lab env --unset)\"`"
            ),
            _ => "the docker driver runs nodes on a Docker engine on this machine: is it running?".to_string(),
        };
        let hint = hint.as_str();
        let docker = Docker::connect_with_host(&endpoint)
            .map_err(|e| match (&recorded, &e) {
                // A value the user gave (DOCKER_HOST, the host setting) that is no endpoint.
                (None, bollard::errors::Error::UnsupportedURISchemeError { .. }) => {
                    Error::input(what.clone(), format!("{endpoint:?}: {}", engine_message(&e)))
                }
                _ => Error::from(on_engine(context.clone(), e)).with_hint(hint),
            })?
            .with_timeout(Duration::from_secs(600));
        let docker =
            docker.negotiate_version().await.map_err(|e| Error::from(on_engine(&context, e)).with_hint(hint))?;
        let info = docker.info().await.map_err(|e| Error::from(on_engine(&context, e)).with_hint(hint))?;
        let engine_id = info.id.clone().unwrap_or_default();
        if let Some(r) = recorded {
            if r.engine_id != engine_id {
                return Err(Error::op(
                    context,
                    format!(
                        "that is engine {engine_id}, not engine {} that cluster {} was made on",
                        r.engine_id, self.cluster
                    ),
                )
                .with_hint(format!(
                    "the engine was replaced, and the cluster's nodes with it; `lab down --cluster {}` forgets it",
                    self.cluster
                )));
            }
            return Ok((docker, r));
        }
        if !explicit && !self.config.allow_nested {
            if let Some((cluster, node)) = engine::lab_node(&info.labels.unwrap_or_default(), &endpoint) {
                return Err(Error::input(
                    what,
                    format!(
                        "{endpoint:?} is the Docker engine of node {node} of lab cluster {cluster} \
                         (as `eval \"$(lab env --cluster {cluster})\"` leaves it), so cluster {} would be made \
                         inside that node; run `eval \"$(lab env --cluster {cluster} --unset)\"` first, or, to \
                         mean it, set [drivers.docker] allow_nested = true (--driver-opt allow_nested=true) or \
                         name the engine with [drivers.docker] host",
                        self.cluster
                    ),
                ));
            }
        }
        Ok((docker, EngineRecord { endpoint, engine_id }))
    }

    /// Records the engine a new cluster is made on; a recorded one stays as it is. Returns
    /// whether it wrote the record now.
    async fn record_engine(&self) -> Result<bool> {
        let (_, record) = self.host.get_or_try_init(|| self.connect_host()).await?;
        if engine::read(&self.state_dir)?.is_none() {
            engine::write(&self.state_dir, record)?;
            return Ok(true);
        }
        Ok(false)
    }

    /// The recorded engine's endpoint (or the `host` setting), for the docker CLI.
    fn cli_endpoint(&self) -> Option<String> {
        match engine::read(&self.state_dir) {
            Ok(Some(r)) => Some(r.endpoint),
            _ => self.config.host.clone(),
        }
    }

    fn container(&self, node: &str) -> String {
        format!("{}-{node}", self.cluster)
    }

    fn volume(&self, node: &str) -> String {
        format!("{}-{node}-docker", self.cluster)
    }

    fn network(&self) -> String {
        format!("{}-net", self.cluster)
    }

    fn socket_dir(&self, node: &str) -> PathBuf {
        self.state_dir.join("nodes").join(node)
    }

    fn socket(&self, node: &str) -> PathBuf {
        self.socket_dir(node).join("docker.sock")
    }

    fn labels(&self, node: Option<&NodeSpec>) -> HashMap<String, String> {
        let mut l = HashMap::from([(CLUSTER_LABEL.to_string(), self.cluster.to_string())]);
        if let Some(n) = node {
            l.insert(NODE_LABEL.into(), n.name.clone());
            l.insert(ROLE_LABEL.into(), n.role.to_string());
        }
        l
    }

    fn cluster_filter(&self) -> HashMap<String, Vec<String>> {
        HashMap::from([("label".to_string(), vec![format!("{CLUSTER_LABEL}={}", self.cluster)])])
    }

    /// Makes sure the node image is in the local engine, pulling it if not.
    async fn ensure_node_image(&self) -> Result<()> {
        let host = self.host().await?;
        let image = &self.config.node_image;
        if host.inspect_image(image).await.is_ok() {
            return Ok(());
        }
        let opts = CreateImageOptionsBuilder::new().from_image(image).build();
        host.create_image(Some(opts), None, None).try_for_each(|_| async { Ok(()) }).await.map_err(|e| {
            Error::Operation {
                context: format!("get node image {image}"),
                message: format!("not in the local engine, and pulling it failed: {}", engine_message(&e)),
                hint: None,
                source: Some(Box::new(e)),
            }
            .with_hint(format!("on a machine that cannot pull, {NODE_IMAGE_HOW}"))
        })
    }

    /// Whether this engine lets containers run privileged: tried once per run with a
    /// throwaway container, because some engines refuse ("unable to apply caps") only at start.
    async fn privileged_works(&self) -> Result<bool> {
        match self.config.privileged {
            PrivilegedMode::Always => return Ok(true),
            PrivilegedMode::Never => return Ok(false),
            PrivilegedMode::Auto => {}
        }
        let host = self.host().await?;
        self.privileged
            .get_or_try_init(|| async {
                // Remembered per engine (ID and version), so only the first cluster on an
                // engine pays for the trial container.
                let info = host.info().await.ok();
                let engine_key =
                    info.map(|i| format!("{} {}", i.id.unwrap_or_default(), i.server_version.unwrap_or_default()));
                let cache = self.cache_dir.join("privileged.json");
                let mut known: HashMap<String, bool> =
                    std::fs::read(&cache).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
                if let Some(v) = engine_key.as_ref().and_then(|k| known.get(k)) {
                    return Ok(*v);
                }
                let works = self.try_privileged(host).await?;
                if let Some(k) = engine_key {
                    known.insert(k, works);
                    if make_private_dir(&self.cache_dir).is_ok() {
                        let _ = write_atomic(&cache, &serde_json::to_vec(&known).unwrap_or_default());
                    }
                }
                Ok::<_, Error>(works)
            })
            .await
            .copied()
    }

    /// Starts a throwaway privileged container: some engines refuse only at start.
    async fn try_privileged(&self, host: &Docker) -> Result<bool> {
        let name = format!("{}-privileged-probe-{}", self.cluster, lab_core::driver::support::random_suffix());
        let body = ContainerCreateBody {
            image: Some(self.config.node_image.clone()),
            entrypoint: Some(vec!["true".into()]),
            cmd: Some(vec![]),
            labels: Some(self.labels(None)),
            host_config: Some(HostConfig { privileged: Some(true), ..Default::default() }),
            ..Default::default()
        };
        host.create_container(Some(CreateContainerOptionsBuilder::new().name(&name).build()), body)
            .await
            .map_err(|e| on_engine("try a privileged container", e))?;
        let started = host.start_container(&name, None).await;
        let _ =
            host.remove_container(&name, Some(RemoveContainerOptionsBuilder::new().force(true).v(true).build())).await;
        match started {
            Ok(()) => Ok(true),
            Err(e) => {
                tracing::info!(cause = %engine_message(&e), "privileged containers fail here; using explicit capabilities");
                Ok(false)
            }
        }
    }

    /// The cluster's network, made if missing; returns its fixed subnet, if it has one.
    async fn ensure_network(&self) -> Result<Option<String>> {
        self.network_ready.get_or_try_init(|| self.create_network()).await.cloned()
    }

    /// The cluster's network, by name, with its fixed subnet if it has one.
    async fn find_network(&self) -> Result<Option<Option<String>>> {
        let host = self.host().await?;
        let name = self.network();
        let filters = HashMap::from([("name".to_string(), vec![name.clone()])]);
        let existing = host
            .list_networks(Some(ListNetworksOptionsBuilder::new().filters(&filters).build()))
            .await
            .map_err(|e| on_engine(format!("list networks for {name}"), e))?;
        Ok(existing
            .into_iter()
            .find(|n| n.name.as_deref() == Some(name.as_str()))
            .map(|n| n.labels.and_then(|l| l.get(FIXED_SUBNET_LABEL).cloned())))
    }

    /// Makes the cluster's network with a fixed subnet, so that each node is given the same
    /// address at every start (`--ip`, which needs a subnet the user chose): after a host's
    /// reboot, nodes started in any order keep the addresses the swarm knows them by. The
    /// subnet is the one Docker picks from its own address pools (respecting the engine's
    /// `default-address-pools`): the network is made once to learn it, then made again with
    /// it fixed.
    async fn create_network(&self) -> Result<Option<String>> {
        if let Some(fixed) = self.find_network().await? {
            return Ok(fixed);
        }
        let host = self.host().await?;
        let name = self.network();
        let make = |subnet: Option<String>| {
            let mut labels = self.labels(None);
            let ipam = subnet.map(|s| {
                labels.insert(FIXED_SUBNET_LABEL.into(), s.clone());
                bollard::models::Ipam {
                    config: Some(vec![bollard::models::IpamConfig { subnet: Some(s), ..Default::default() }]),
                    ..Default::default()
                }
            });
            NetworkCreateRequest {
                name: name.clone(),
                driver: Some("bridge".into()),
                labels: Some(labels),
                ipam,
                ..Default::default()
            }
        };
        let created = match host.create_network(make(None)).await {
            Ok(n) => n,
            // Created concurrently by another lab process.
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 409, .. }) => {
                return Ok(self.find_network().await?.flatten());
            }
            Err(e) => return Err(on_engine(format!("create network {name}"), e).into()),
        };
        let picked = host
            .inspect_network(&created.id, None)
            .await
            .map_err(|e| on_engine(format!("inspect network {name}"), e))?
            .ipam
            .and_then(|i| i.config)
            .and_then(|c| c.into_iter().find_map(|c| c.subnet.filter(|s| crate::node::parse_subnet(s).is_some())));
        let Some(subnet) = picked else { return Ok(None) };
        host.remove_network(&created.id).await.map_err(|e| on_engine(format!("remove network {name}"), e))?;
        match host.create_network(make(Some(subnet.clone()))).await {
            Ok(_) => Ok(Some(subnet)),
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 409, .. }) => {
                Ok(self.find_network().await?.flatten())
            }
            Err(e) => Err(on_engine(format!("create network {name} on subnet {subnet}"), e).into()),
        }
    }

    async fn find(&self, node: &str) -> Result<Option<Machine>> {
        Ok(self.observe().await?.into_iter().find(|m| m.name == node))
    }

    /// Every container labelled with this cluster, in any state.
    async fn containers(&self) -> Result<Vec<ContainerSummary>> {
        let host = self.host().await?;
        let opts = ListContainersOptionsBuilder::new().all(true).filters(&self.cluster_filter()).build();
        Ok(host.list_containers(Some(opts)).await.map_err(|e| on_engine("list node containers", e))?)
    }

    /// Whether the container named `name` is this cluster's node `node` (carries both
    /// labels); an error naming it if it exists but is not lab's; `false` if there is none.
    async fn owned(&self, name: &str, node: &str) -> Result<bool> {
        let host = self.host().await?;
        let c = match host.inspect_container(name, None).await {
            Ok(c) => c,
            Err(e) if is_not_found(&e) => return Ok(false),
            Err(e) => return Err(on_node(node, "inspect node container", e).into()),
        };
        let labels = c.config.and_then(|c| c.labels).unwrap_or_default();
        let ours = labels.get(CLUSTER_LABEL).map(String::as_str) == Some(self.cluster.as_str())
            && labels.get(NODE_LABEL).map(String::as_str) == Some(node);
        if ours {
            return Ok(true);
        }
        Err(Error::node(
            node,
            "create node container",
            format!(
                "a container named {name} exists and is not lab's: it lacks the labels {CLUSTER_LABEL}={} and \
                 {NODE_LABEL}={node}; lab leaves it alone",
                self.cluster
            ),
        )
        .with_hint(format!("remove or rename that container (docker rm {name}), or choose another --cluster")))
    }

    /// Brings back nodes whose engine socket is gone (their socket directory, in lab's
    /// state, was removed): recreates the directory the node binds and restarts the node, so
    /// its dockerd makes the socket again. The node's `/var/lib/docker` volume keeps its
    /// swarm. Waits, bounded, until each restarted engine answers; the core's observation
    /// then waits for each node's membership to settle.
    async fn recover(&self) -> Result<()> {
        let host = self.host().await?;
        let mut restarted = Vec::new();
        for c in self.containers().await? {
            let Some(node) = c.labels.as_ref().and_then(|l| l.get(NODE_LABEL)).cloned() else { continue };
            let Some(dir) = socket_dir_of(&c) else { continue };
            if is_socket(&dir.join("docker.sock")) {
                continue;
            }
            // A directory that is there may be about to get its socket (a node just made);
            // a missing one never will.
            let existed = dir.is_dir();
            make_private_dir(&dir).map_err(|e| {
                because(&node, "recreate its engine socket directory", e)
                    .with_hint("lab's state directory must be writable by the user who made the cluster")
            })?;
            if c.state == Some(ContainerSummaryStateEnum::RUNNING) {
                restarted.push((node, existed, dir.join("docker.sock")));
            }
        }
        // All at once: a node stops within STOP_GRACE_SECS.
        let restart = restarted.iter().map(|(node, existed, socket)| async move {
            if *existed && socket_appears(socket, SOCKET_GRACE).await {
                return Ok(());
            }
            tracing::info!(node = %node, "engine socket gone; restarting the node");
            host.restart_container(
                &self.container(node),
                Some(RestartContainerOptionsBuilder::new().t(STOP_GRACE_SECS).build()),
            )
            .await
            .map_err(|e| on_node(node, "restart node container to recreate its engine socket", e))?;
            wait_answering(node, socket).await
        });
        for r in futures_util::future::join_all(restart).await {
            r?;
        }
        Ok(())
    }
}

#[async_trait]
impl Driver for DockerDriver {
    fn capabilities(&self) -> Capabilities {
        Capabilities::all()
    }

    async fn preflight(&self, _nodes: &[NodeSpec]) -> Result<()> {
        let recorded_now = self.record_engine().await?;
        // The node image is `missing_images`' to check, with the other images `up` needs.
        let ready = self.recover().await;
        if ready.is_err() && recorded_now {
            // A first `up` that stops here made nothing on the engine, and the core records
            // the cluster only after preflight: the record would be a file no command lists.
            engine::forget(&self.state_dir);
        }
        ready
    }

    async fn missing_images(&self) -> Result<Vec<MissingImage>> {
        match self.ensure_node_image().await {
            Ok(()) => Ok(Vec::new()),
            Err(Error::Operation { message, .. }) => Ok(vec![MissingImage {
                image: self.config.node_image.clone(),
                what: "the node image (--node-image)".into(),
                why: message,
                how: NODE_IMAGE_HOW.into(),
            }]),
            Err(e) => Err(e),
        }
    }

    async fn observe(&self) -> Result<Vec<Machine>> {
        let list = self.containers().await?;
        let network = self.network();
        *self.bound.lock().expect("bound lock") = crate::node::socket_dirs(&list);
        let mut machines: Vec<Machine> = list.iter().filter_map(|c| machine_of(c, &network)).collect();
        machines.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(machines)
    }

    async fn create(&self, node: &NodeSpec) -> Result<Machine> {
        if let Some(m) = self.find(&node.name).await? {
            return Ok(m);
        }
        let step = "create node container";
        let host = self.host().await?;
        let name = self.container(&node.name);
        // A container by that name without this cluster's labels is someone else's.
        if self.owned(&name, &node.name).await? {
            return self.start(&node.name).await;
        }
        self.ensure_node_image().await.map_err(|e| because(&node.name, step, e))?;
        let subnet = self.ensure_network().await?;
        let address = subnet.as_deref().and_then(|s| crate::node::fixed_address(s, &node.name));
        let dir = self.socket_dir(&node.name);
        make_private_dir(&dir)?;
        let socket = self.socket(&node.name);
        if socket.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(Error::node(
                &node.name,
                step,
                format!(
                    "the engine socket path {} is longer than {MAX_SOCKET_PATH} bytes, which unix sockets do not allow",
                    socket.display()
                ),
            )
            .with_hint("set XDG_STATE_HOME to a shorter directory"));
        }
        let gid = std::fs::metadata(&dir).map(|m| m.gid()).unwrap_or(0);
        let volume = self.volume(&node.name);
        host.create_volume(VolumeCreateRequest {
            name: Some(volume.clone()),
            labels: Some(self.labels(Some(node))),
            ..Default::default()
        })
        .await
        .map_err(|e| on_node(&node.name, "create volume", e))?;

        let privileged = self.privileged_works().await?;
        let body = crate::node::body(&crate::node::Spec {
            image: &self.config.node_image,
            node: &node.name,
            cluster: self.cluster.as_str(),
            network: self.network(),
            address,
            volume,
            socket_dir: &dir,
            gid,
            privileged,
            labels: self.labels(Some(node)),
        });
        match host.create_container(Some(CreateContainerOptionsBuilder::new().name(&name).build()), body).await {
            Ok(_) => {}
            // Created concurrently: start it if another lab process made it, else it is a
            // conflict, named.
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 409, .. }) => {
                self.owned(&name, &node.name).await?;
            }
            Err(e) => return Err(on_node(&node.name, step, e).into()),
        }
        host.start_container(&name, None).await.map_err(|e| on_node(&node.name, "start node container", e))?;
        self.find(&node.name)
            .await?
            .ok_or_else(|| Error::node(&node.name, step, "the container vanished right after it was created"))
    }

    async fn start(&self, node: &str) -> Result<Machine> {
        let host = self.host().await?;
        // A stopped node whose socket directory went missing cannot start: its bind mount
        // has no source.
        if let Some(dir) = self.containers().await?.iter().find_map(|c| {
            let ours = c.labels.as_ref().and_then(|l| l.get(NODE_LABEL)).map(String::as_str) == Some(node);
            ours.then(|| socket_dir_of(c)).flatten()
        }) {
            make_private_dir(&dir).map_err(|e| because(node, "recreate its engine socket directory", e))?;
        }
        // A node that was killed (a crash, a power cut, `docker kill`) left dockerd's and
        // containerd's pid files behind; when the pid in one belongs to a live process after
        // the restart, dockerd refuses to start ("pid file found"). Empty them first: an empty
        // pid file names no process. Only a stopped container can have stale ones.
        if let Ok(c) = host.inspect_container(&self.container(node), None).await {
            if !c.state.and_then(|st| st.running).unwrap_or(false) {
                let opts = bollard::query_parameters::UploadToContainerOptionsBuilder::new().path("/").build();
                let tar = empty_files_tar(&["run/docker.pid", "run/docker/containerd/containerd.pid"])
                    .map_err(|e| Error::io(node, "make the archive that clears its stale pid files", e))?;
                host.upload_to_container(&self.container(node), Some(opts), bollard::body_full(tar.into()))
                    .await
                    .map_err(|e| on_node(node, "clear its stale pid files", e))?;
            }
        }
        match host.start_container(&self.container(node), None).await {
            Ok(()) => {}
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 304, .. }) => {}
            Err(e) => return Err(on_node(node, "start node container", e).into()),
        }
        self.find(node).await?.ok_or_else(|| Error::node(node, "start node container", "no such container"))
    }

    async fn destroy(&self, node: &str) -> Result<()> {
        let host = self.host().await?;
        let opts = RemoveContainerOptionsBuilder::new().force(true).v(true).build();
        match host.remove_container(&self.container(node), Some(opts)).await {
            Ok(()) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) if is_removal_in_progress(&e) => {
                crate::node::container_gone(host, node, &self.container(node)).await?
            }
            Err(e) => return Err(on_node(node, "remove node container", e).into()),
        }
        match host.remove_volume(&self.volume(node), Some(RemoveVolumeOptionsBuilder::new().force(true).build())).await
        {
            Ok(()) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(on_node(node, "remove node volume", e).into()),
        }
        let _ = std::fs::remove_dir_all(self.socket_dir(node));
        Ok(())
    }

    async fn teardown(&self) -> Result<()> {
        let host = self.host().await?;
        let endpoint = self.host.get().map(|(_, r)| r.endpoint.clone()).unwrap_or_default();
        // Anything labelled with the cluster that a destroy did not reach (e.g. a node
        // container whose labels lack lab.node, or a probe left by a killed run). Every
        // failure is kept: the cluster is gone only when nothing labelled with it is left.
        let mut failures = Vec::new();
        for c in self.containers().await? {
            let Some(id) = c.id else { continue };
            let name = c.names.and_then(|n| n.first().cloned()).unwrap_or(id.clone());
            match host
                .remove_container(&id, Some(RemoveContainerOptionsBuilder::new().force(true).v(true).build()))
                .await
            {
                Ok(()) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => failures.push(format!("container {}: {}", name.trim_start_matches('/'), engine_message(&e))),
            }
        }
        let volumes = || async {
            host.list_volumes(Some(ListVolumesOptionsBuilder::new().filters(&self.cluster_filter()).build()))
                .await
                .map(|v| v.volumes.unwrap_or_default())
                .map_err(|e| Error::from(on_engine("list the cluster's volumes", e)))
        };
        for v in volumes().await? {
            match host.remove_volume(&v.name, Some(RemoveVolumeOptionsBuilder::new().force(true).build())).await {
                Ok(()) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => failures.push(format!("volume {}: {}", v.name, engine_message(&e))),
            }
        }
        let networks = || async {
            host.list_networks(Some(ListNetworksOptionsBuilder::new().filters(&self.cluster_filter()).build()))
                .await
                .map_err(|e| Error::from(on_engine("list the cluster's networks", e)))
        };
        for n in networks().await? {
            let name = n.name.unwrap_or_default();
            // By ID: a name can be ambiguous if networks were made concurrently elsewhere.
            match host.remove_network(n.id.as_deref().unwrap_or(&name)).await {
                Ok(()) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => failures.push(format!("network {name}: {}", engine_message(&e))),
            }
        }
        // Look again: what a removal raced with (or silently kept) is still the cluster's.
        let mut left: Vec<String> = self
            .containers()
            .await?
            .into_iter()
            .map(|c| {
                let name = c.names.and_then(|n| n.first().cloned()).or(c.id).unwrap_or_default();
                format!("container {}", name.trim_start_matches('/'))
            })
            .collect();
        left.extend(volumes().await?.into_iter().map(|v| format!("volume {}", v.name)));
        left.extend(networks().await?.into_iter().map(|n| format!("network {}", n.name.unwrap_or_default())));
        if !left.is_empty() || !failures.is_empty() {
            let mut message = String::new();
            if !left.is_empty() {
                message.push_str(&format!("still labelled {CLUSTER_LABEL}={}: {}", self.cluster, left.join(", ")));
            }
            if !failures.is_empty() {
                if !message.is_empty() {
                    message.push_str("; ");
                }
                message.push_str(&failures.join("; "));
            }
            return Err(Error::op(format!("remove cluster {} from the engine at {endpoint}", self.cluster), message)
                .with_hint(format!(
                    "lab keeps the cluster's record; run `lab down --cluster {}` again",
                    self.cluster
                )));
        }
        let _ = std::fs::remove_dir_all(self.state_dir.join("nodes"));
        Ok(())
    }

    async fn engine(&self, machine: &Machine) -> Result<NodeEngine> {
        // Where the node binds its socket directory from: the state directory it was made
        // from, which may not be this one (another XDG_STATE_HOME, sudo). As the last list of
        // the containers showed it (a machine comes from such a list), else asked.
        let listed = self.bound.lock().expect("bound lock").get(&machine.name).cloned();
        let bound = match listed {
            Some(dir) => Some(dir),
            None => crate::node::inspected_socket_dir(self.host().await?, &self.container(&machine.name)).await,
        };
        let socket = bound.map(|d| d.join("docker.sock")).unwrap_or_else(|| self.socket(&machine.name));
        let address = machine.address.clone().ok_or_else(|| {
            Error::node(
                &machine.name,
                "find its address",
                format!(
                    "the container is not on network {}: its network is cut (`docker network connect` mends it)",
                    self.network()
                ),
            )
        })?;
        let path = socket.to_string_lossy().into_owned();
        let docker = Docker::connect_with_unix(&path, 120, bollard::API_DEFAULT_VERSION)
            .map_err(|e| on_node(&machine.name, "connect to its Docker engine", e))?;
        Ok(NodeEngine {
            docker,
            advertise_addr: address,
            client_env: vec![("DOCKER_HOST".into(), format!("unix://{path}"))],
        })
    }

    async fn exec(&self, node: &str, argv: &[String]) -> Result<ExecOutput> {
        let host = self.host().await?;
        let step = format!("run {:?}", argv.first().map(String::as_str).unwrap_or(""));
        let cfg = ExecConfig {
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            cmd: Some(argv.to_vec()),
            ..Default::default()
        };
        let created = host.create_exec(&self.container(node), cfg).await.map_err(|e| on_node(node, &step, e))?;
        let mut out = ExecOutput::default();
        if let StartExecResults::Attached { mut output, .. } = host
            .start_exec(&created.id, Some(StartExecOptions { detach: false, ..Default::default() }))
            .await
            .map_err(|e| on_node(node, &step, e))?
        {
            while let Some(chunk) = output.next().await {
                match chunk.map_err(|e| on_node(node, &step, e))? {
                    bollard::container::LogOutput::StdErr { message } => {
                        out.stderr.push_str(&String::from_utf8_lossy(&message))
                    }
                    other => out.stdout.push_str(&String::from_utf8_lossy(&other.into_bytes())),
                }
            }
        }
        out.status = host.inspect_exec(&created.id).await.ok().and_then(|i| i.exit_code);
        // The engine says 126 when the program is missing (its runtime cannot exec it); the
        // contract, like a shell, says 127, which lets the core try another program.
        if out.status == Some(126) && missing_program(&out) {
            out.status = Some(127);
        }
        Ok(out)
    }

    fn shell_command(&self, node: &str, args: &[String]) -> Option<Vec<String>> {
        let mut cmd = vec!["docker".to_string()];
        // The engine the cluster lives on, not whatever DOCKER_HOST says now.
        if let Some(endpoint) = self.cli_endpoint() {
            cmd.extend(["--host".into(), endpoint]);
        }
        cmd.push("exec".into());
        if args.is_empty() {
            cmd.extend(["-it".into(), self.container(node), "sh".into()]);
        } else {
            cmd.push(self.container(node));
            cmd.extend(args.iter().cloned());
        }
        Some(cmd)
    }
}

/// Whether a failed exec's output is the runtime saying the program does not exist (runc:
/// `exec: "x": executable file not found in $PATH`, or `... no such file or directory` for a
/// path).
fn missing_program(out: &ExecOutput) -> bool {
    let said = format!("{}{}", out.stdout, out.stderr);
    said.contains("executable file not found") || (said.contains("exec:") && said.contains("no such file or directory"))
}

#[cfg(test)]
mod tests {
    /// The archive that empties a killed node's pid files reads back, with the `tar` crate
    /// the engine's archive API agrees with, as the files (empty, mode 0644, root's) and
    /// their directories.
    #[test]
    fn the_pid_file_archive_is_a_valid_tar() {
        let tar = crate::node::empty_files_tar(&["run/docker.pid", "run/docker/containerd/containerd.pid"]).unwrap();
        let mut archive = tar::Archive::new(tar.as_slice());
        let mut seen = Vec::new();
        for entry in archive.entries().unwrap() {
            let entry = entry.unwrap();
            let h = entry.header();
            let path = entry.path().unwrap().display().to_string();
            assert_eq!((h.uid().unwrap(), h.gid().unwrap(), h.size().unwrap()), (0, 0, 0), "{path}");
            let (kind, mode) =
                if path.ends_with('/') { (tar::EntryType::Directory, 0o755) } else { (tar::EntryType::Regular, 0o644) };
            assert_eq!((h.entry_type(), h.mode().unwrap()), (kind, mode), "{path}");
            seen.push(path);
        }
        assert_eq!(
            seen,
            ["run/", "run/docker.pid", "run/docker/", "run/docker/containerd/", "run/docker/containerd/containerd.pid"]
        );
    }
}
