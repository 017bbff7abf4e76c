//! The `Driver` implementation over the local Docker engine.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use bollard::exec::{StartExecOptions, StartExecResults};
use bollard::models::{
    ContainerCreateBody, ContainerSummaryStateEnum, ExecConfig, HostConfig, Mount, MountType, NetworkCreateRequest,
    VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, ListContainersOptionsBuilder, ListNetworksOptionsBuilder,
    ListVolumesOptionsBuilder, RemoveContainerOptionsBuilder, RemoveVolumeOptionsBuilder,
};
use bollard::Docker;
use futures_util::{StreamExt, TryStreamExt};
use lab_core::error::engine_message;
use lab_core::state::{make_private_dir, write_atomic};
use lab_core::{
    Capabilities, ClusterName, Driver, DriverContext, Error, ExecOutput, Machine, MachineState, NodeEngine, NodeSpec,
    Result, Role,
};
use tokio::sync::OnceCell;

use crate::config::{DockerConfig, PrivilegedMode};
use crate::error::{is_not_found, on_node};

const CLUSTER_LABEL: &str = "lab.cluster";
const NODE_LABEL: &str = "lab.node";
const ROLE_LABEL: &str = "lab.role";
/// Where the node's extra API socket appears inside the container.
const SOCKET_DIR_IN_NODE: &str = "/run/lab";
/// Unix socket paths are limited to 108 bytes by the kernel.
const MAX_SOCKET_PATH: usize = 100;

/// Every capability except SYS_RESOURCE, which some engines' bounding sets lack and which is
/// why `--privileged` fails there ("unable to apply caps"). BPF, PERFMON and
/// CHECKPOINT_RESTORE are left out because Docker 20.10 rejects them as unknown.
pub const CAPS: &[&str] = &[
    "AUDIT_CONTROL",
    "AUDIT_READ",
    "AUDIT_WRITE",
    "BLOCK_SUSPEND",
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "IPC_LOCK",
    "IPC_OWNER",
    "KILL",
    "LEASE",
    "LINUX_IMMUTABLE",
    "MAC_ADMIN",
    "MAC_OVERRIDE",
    "MKNOD",
    "NET_ADMIN",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_RAW",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYSLOG",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_CHROOT",
    "SYS_MODULE",
    "SYS_NICE",
    "SYS_PACCT",
    "SYS_PTRACE",
    "SYS_RAWIO",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "WAKE_ALARM",
];

/// Nodes as Docker-in-Docker containers.
pub struct DockerDriver {
    cluster: ClusterName,
    config: DockerConfig,
    state_dir: PathBuf,
    cache_dir: PathBuf,
    host: OnceCell<Docker>,
    privileged: OnceCell<bool>,
    // Docker allows two networks with one name, so concurrent creations must not race.
    network_ready: OnceCell<()>,
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
            host: OnceCell::new(),
            privileged: OnceCell::new(),
            network_ready: OnceCell::new(),
        })
    }

    /// [`DockerDriver::new`], boxed, for registration.
    pub fn boxed(ctx: DriverContext) -> Result<Box<dyn Driver>> {
        Ok(Box::new(Self::new(ctx)?))
    }

    async fn host(&self) -> Result<&Docker> {
        self.host
            .get_or_try_init(|| async {
                let hint = "the docker driver runs nodes on the local Docker engine: is it running, \
                            and does DOCKER_HOST point at it?";
                let d = Docker::connect_with_local_defaults()
                    .map_err(|e| Error::op("connect to the local Docker engine", engine_message(&e)).with_hint(hint))?
                    .with_timeout(Duration::from_secs(600));
                d.negotiate_version()
                    .await
                    .map_err(|e| Error::op("connect to the local Docker engine", engine_message(&e)).with_hint(hint))
            })
            .await
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
            Error::op(
                format!("get node image {image}"),
                format!("not in the local engine, and pulling it failed: {}", engine_message(&e)),
            )
            .with_hint(
                "on a machine that cannot pull, build an offline node image with scripts/offline-images.sh \
                            and pass --node-image lab-offline/node:bookworm",
            )
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
        let name = format!("{}-privileged-probe-{}", self.cluster, lab_core::probe::random_suffix());
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
            .map_err(|e| Error::op("try a privileged container", engine_message(&e)))?;
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

    async fn ensure_network(&self) -> Result<()> {
        self.network_ready.get_or_try_init(|| self.create_network()).await.map(|_| ())
    }

    async fn create_network(&self) -> Result<()> {
        let host = self.host().await?;
        let name = self.network();
        let filters = HashMap::from([("name".to_string(), vec![name.clone()])]);
        let existing = host
            .list_networks(Some(ListNetworksOptionsBuilder::new().filters(&filters).build()))
            .await
            .map_err(|e| Error::op(format!("list networks for {name}"), engine_message(&e)))?;
        if existing.iter().any(|n| n.name.as_deref() == Some(name.as_str())) {
            return Ok(());
        }
        let req = NetworkCreateRequest {
            name: name.clone(),
            driver: Some("bridge".into()),
            labels: Some(self.labels(None)),
            ..Default::default()
        };
        match host.create_network(req).await {
            Ok(_) => Ok(()),
            // Created concurrently by another node's creation.
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 409, .. }) => Ok(()),
            Err(e) => Err(Error::op(format!("create network {name}"), engine_message(&e))),
        }
    }

    async fn find(&self, node: &str) -> Result<Option<Machine>> {
        Ok(self.observe().await?.into_iter().find(|m| m.name == node))
    }
}

fn machine_of(c: &bollard::models::ContainerSummary, network: &str) -> Option<Machine> {
    let labels = c.labels.as_ref()?;
    let name = labels.get(NODE_LABEL)?.clone();
    let role = match labels.get(ROLE_LABEL).map(String::as_str) {
        Some("manager") => Role::Manager,
        _ => Role::Worker,
    };
    let state = match c.state {
        Some(ContainerSummaryStateEnum::RUNNING) => MachineState::Running,
        Some(ContainerSummaryStateEnum::CREATED)
        | Some(ContainerSummaryStateEnum::EXITED)
        | Some(ContainerSummaryStateEnum::PAUSED)
        | Some(ContainerSummaryStateEnum::RESTARTING) => MachineState::Stopped,
        other => MachineState::Broken(format!("container state {}", other.map(|s| s.to_string()).unwrap_or_default())),
    };
    let address = c
        .network_settings
        .as_ref()
        .and_then(|n| n.networks.as_ref())
        .and_then(|n| n.get(network))
        .and_then(|e| e.ip_address.clone())
        .filter(|a| !a.is_empty());
    Some(Machine { name, role, state, address })
}

#[async_trait]
impl Driver for DockerDriver {
    fn capabilities(&self) -> Capabilities {
        Capabilities { create: true, destroy: true, start: true, shell: true, exec: true }
    }

    async fn preflight(&self, _nodes: &[NodeSpec]) -> Result<()> {
        self.host().await?;
        self.ensure_node_image().await
    }

    async fn observe(&self) -> Result<Vec<Machine>> {
        let host = self.host().await?;
        let opts = ListContainersOptionsBuilder::new().all(true).filters(&self.cluster_filter()).build();
        let list = host
            .list_containers(Some(opts))
            .await
            .map_err(|e| Error::op("list node containers", engine_message(&e)))?;
        let network = self.network();
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
        self.ensure_node_image().await.map_err(|e| Error::node(&node.name, step, e))?;
        self.ensure_network().await?;
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
        let mut host_config = HostConfig {
            init: Some(true),
            network_mode: Some(self.network()),
            mounts: Some(vec![
                Mount {
                    target: Some("/var/lib/docker".into()),
                    source: Some(volume),
                    typ: Some(MountType::VOLUME),
                    ..Default::default()
                },
                Mount {
                    target: Some(SOCKET_DIR_IN_NODE.into()),
                    source: Some(dir.to_string_lossy().into_owned()),
                    typ: Some(MountType::BIND),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        };
        if privileged {
            host_config.privileged = Some(true);
        } else {
            host_config.cap_add = Some(CAPS.iter().map(|c| c.to_string()).collect());
            host_config.security_opt = Some(vec!["seccomp=unconfined".into(), "apparmor=unconfined".into()]);
            // The API's spelling of the CLI's `--security-opt systempaths=unconfined`.
            host_config.masked_paths = Some(vec![]);
            host_config.readonly_paths = Some(vec![]);
            host_config.mounts.as_mut().expect("set above").push(Mount {
                target: Some("/sys/fs/cgroup".into()),
                source: Some("/sys/fs/cgroup".into()),
                typ: Some(MountType::BIND),
                read_only: Some(false),
                ..Default::default()
            });
        }
        let body = ContainerCreateBody {
            image: Some(self.config.node_image.clone()),
            hostname: Some(node.name.clone()),
            // The image's entrypoint stays (docker:dind's prepares iptables); without TLS
            // settings it adds no TCP listener, and we add none.
            cmd: Some(vec![
                "dockerd".into(),
                "--host=unix:///var/run/docker.sock".into(),
                format!("--host=unix://{SOCKET_DIR_IN_NODE}/docker.sock"),
                format!("--group={gid}"),
            ]),
            env: Some(vec!["DOCKER_TLS_CERTDIR=".into()]),
            labels: Some(self.labels(Some(node))),
            host_config: Some(host_config),
            ..Default::default()
        };
        let name = self.container(&node.name);
        match host.create_container(Some(CreateContainerOptionsBuilder::new().name(&name).build()), body).await {
            Ok(_) => {}
            // Created concurrently by another lab process: fall through to start it.
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 409, .. }) => {}
            Err(e) => return Err(on_node(&node.name, step, e)),
        }
        host.start_container(&name, None).await.map_err(|e| on_node(&node.name, "start node container", e))?;
        self.find(&node.name)
            .await?
            .ok_or_else(|| Error::node(&node.name, step, "the container vanished right after it was created"))
    }

    async fn start(&self, node: &str) -> Result<Machine> {
        let host = self.host().await?;
        match host.start_container(&self.container(node), None).await {
            Ok(()) => {}
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 304, .. }) => {}
            Err(e) => return Err(on_node(node, "start node container", e)),
        }
        self.find(node).await?.ok_or_else(|| Error::node(node, "start node container", "no such container"))
    }

    async fn destroy(&self, node: &str) -> Result<()> {
        let host = self.host().await?;
        let opts = RemoveContainerOptionsBuilder::new().force(true).v(true).build();
        match host.remove_container(&self.container(node), Some(opts)).await {
            Ok(()) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(on_node(node, "remove node container", e)),
        }
        match host.remove_volume(&self.volume(node), Some(RemoveVolumeOptionsBuilder::new().force(true).build())).await
        {
            Ok(()) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(on_node(node, "remove node volume", e)),
        }
        let _ = std::fs::remove_dir_all(self.socket_dir(node));
        Ok(())
    }

    async fn teardown(&self) -> Result<()> {
        let host = self.host().await?;
        // Anything labelled with the cluster that a destroy did not reach (e.g. a node
        // container whose labels lack lab.node, or a probe left by a killed run).
        let opts = ListContainersOptionsBuilder::new().all(true).filters(&self.cluster_filter()).build();
        for c in host.list_containers(Some(opts)).await.unwrap_or_default() {
            if let Some(id) = c.id {
                let _ = host
                    .remove_container(&id, Some(RemoveContainerOptionsBuilder::new().force(true).v(true).build()))
                    .await;
            }
        }
        let vols = host
            .list_volumes(Some(ListVolumesOptionsBuilder::new().filters(&self.cluster_filter()).build()))
            .await
            .map_err(|e| Error::op("list the cluster's volumes", engine_message(&e)))?;
        for v in vols.volumes.unwrap_or_default() {
            match host.remove_volume(&v.name, Some(RemoveVolumeOptionsBuilder::new().force(true).build())).await {
                Ok(()) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(Error::op(format!("remove volume {}", v.name), engine_message(&e))),
            }
        }
        let nets = host
            .list_networks(Some(ListNetworksOptionsBuilder::new().filters(&self.cluster_filter()).build()))
            .await
            .map_err(|e| Error::op("list the cluster's networks", engine_message(&e)))?;
        for n in nets {
            let name = n.name.unwrap_or_default();
            // By ID: a name can be ambiguous if networks were made concurrently elsewhere.
            match host.remove_network(n.id.as_deref().unwrap_or(&name)).await {
                Ok(()) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(Error::op(format!("remove network {name}"), engine_message(&e))),
            }
        }
        let _ = std::fs::remove_dir_all(self.state_dir.join("nodes"));
        Ok(())
    }

    async fn engine(&self, machine: &Machine) -> Result<NodeEngine> {
        let socket = self.socket(&machine.name);
        let address = machine.address.clone().ok_or_else(|| {
            Error::node(&machine.name, "find its address", "the container has no address on its network")
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
        Ok(out)
    }

    fn shell_command(&self, node: &str, args: &[String]) -> Option<Vec<String>> {
        let mut cmd = vec!["docker".to_string(), "exec".into()];
        if args.is_empty() {
            cmd.extend(["-it".into(), self.container(node), "sh".into()]);
        } else {
            cmd.push(self.container(node));
            cmd.extend(args.iter().cloned());
        }
        Some(cmd)
    }
}
