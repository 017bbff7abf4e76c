//! The `Driver` implementation over QEMU.
//!
//! Files, under the cluster's state directory (0700; keys 0600):
//! - `qemu/nodes/<node>/`: `node.json` (written last: a directory without it is a half-made
//!   node that `create` makes again), `disk.qcow2`, `console.log`, `qmp.sock`, `qemu.pid`, and
//!   `fw/` (what the guest's lab-config reads at every boot);
//! - `qemu/switch/` and `qemu/switch.pid`: the cluster segment's `vde_switch`;
//! - `qemu/ssh/`, `qemu/ca/`, `qemu/certs/`: keys and certificates ([`crate::pki`]);
//! - `qemu/image.json`: the image the cluster was made from.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bollard::Docker;
use lab_core::driver::support;
use lab_core::state::{make_private_dir, write_atomic};
use lab_core::wait::{Look, Wait};
use lab_core::{
    Capabilities, ClusterName, Driver, DriverContext, Error, ExecOutput, Machine, MachineState, NodeEngine, NodeSpec,
    Result,
};
use lab_ssh::{known_hosts, Endpoint, HostKeyPolicy, KnownHostsFiles, Remote, Target};
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, OnceCell};

use crate::config::{Accel, QemuConfig};
use crate::host::{self, run, QEMU, QEMU_IMG, VDE_SWITCH};
use crate::pki::{ioe, ssh_keygen, Pki};
use crate::vm::{self, Boot, NodeDir, NodeRecord, FW_FILES};

/// The image recipe whose guests serve dockerd with TLS from fw_cfg (`scripts/qemu-image.sh`).
const MIN_RECIPE: u32 = 2;
/// Unix socket paths are limited to 108 bytes by the kernel.
const MAX_SOCKET_PATH: usize = 100;
/// The command that builds the image.
const BUILD_IMAGE: &str = "scripts/qemu-image.sh (in lab's repository; it needs root)";

/// The image a cluster boots: kernel, initramfs and the base disk its overlays name.
#[derive(Debug, Clone)]
struct Image {
    kernel: PathBuf,
    initrd: PathBuf,
    base: PathBuf,
}

/// What `image.json` records of the base disk, to notice it was rebuilt under the overlays.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct BaseStamp {
    base: PathBuf,
    size: u64,
    modified: u64,
}

impl BaseStamp {
    fn of(base: &Path) -> Option<BaseStamp> {
        let m = std::fs::metadata(base).ok()?;
        let modified = m.modified().ok()?.duration_since(SystemTime::UNIX_EPOCH).ok()?.as_secs();
        Some(BaseStamp { base: base.to_path_buf(), size: m.len(), modified })
    }
}

/// Nodes as QEMU VMs.
pub struct QemuDriver {
    cluster: ClusterName,
    config: QemuConfig,
    config_source: String,
    root: PathBuf,
    cache: PathBuf,
    image_dir: PathBuf,
    pki: Pki,
    /// Held while shared things are made or changed (keys, the switch, indices, known_hosts).
    shared: Mutex<()>,
    kvm: OnceCell<bool>,
    remotes: std::sync::Mutex<HashMap<String, Arc<Remote>>>,
}

impl QemuDriver {
    /// Makes the driver from its context (its `[drivers.qemu]` table).
    pub fn new(ctx: DriverContext) -> Result<Self> {
        let config: QemuConfig = ctx.parse_config()?;
        config.validate(&ctx.config_source)?;
        let image_dir = match &config.image {
            Some(p) => p.clone(),
            None => default_image_dir().ok_or_else(|| {
                Error::input(
                    format!("{}: [drivers.qemu] image", ctx.config_source),
                    "not set, and neither $LAB_QEMU_CACHE, $XDG_CACHE_HOME nor $HOME is set to find the image",
                )
            })?,
        };
        let root = ctx.state_dir.join("qemu");
        Ok(QemuDriver {
            cluster: ctx.cluster,
            config,
            config_source: ctx.config_source,
            pki: Pki::new(&root),
            root,
            cache: ctx.cache_dir,
            image_dir,
            shared: Mutex::new(()),
            kvm: OnceCell::new(),
            remotes: std::sync::Mutex::new(HashMap::new()),
        })
    }

    /// [`QemuDriver::new`], boxed, for registration.
    pub fn boxed(ctx: DriverContext) -> Result<Box<dyn Driver>> {
        Ok(Box::new(Self::new(ctx)?))
    }

    fn nodes_dir(&self) -> PathBuf {
        self.root.join("nodes")
    }

    fn node_dir(&self, node: &str) -> NodeDir {
        NodeDir(self.nodes_dir().join(node))
    }

    fn switch_dir(&self) -> PathBuf {
        self.root.join("switch")
    }

    fn vm_name(&self, node: &str) -> String {
        format!("{}-{node}", self.cluster)
    }

    /// The image, or what to run to build it.
    fn image(&self) -> Result<Image> {
        let d = &self.image_dir;
        let image = Image { kernel: d.join("vmlinuz"), initrd: d.join("initrd.img"), base: d.join("base.qcow2") };
        let missing: Vec<String> = [&image.kernel, &image.initrd, &image.base]
            .iter()
            .filter(|p| !p.is_file())
            .map(|p| p.file_name().unwrap_or_default().to_string_lossy().into_owned())
            .collect();
        if !missing.is_empty() && self.config.image.is_some() {
            // The user named this directory: their setting is wrong, not the machine.
            return Err(Error::input(
                format!("{}: [drivers.qemu] image", self.config_source),
                format!(
                    "{} is not an image directory: {} missing; build one with {BUILD_IMAGE} \
                     (LAB_QEMU_CACHE={} scripts/qemu-image.sh builds it there)",
                    d.display(),
                    missing.join(", ") + " is",
                    d.display()
                ),
            ));
        }
        if !missing.is_empty() {
            return Err(Error::op(
                format!("find the qemu driver's image in {}", d.display()),
                format!("{} missing; build the image with {BUILD_IMAGE}", missing.join(", ") + " is"),
            ));
        }
        let recipe: u32 =
            std::fs::read_to_string(d.join("recipe")).ok().and_then(|r| r.trim().parse().ok()).unwrap_or(0);
        if recipe < MIN_RECIPE {
            return Err(Error::op(
                format!("use the qemu driver's image in {}", d.display()),
                format!(
                    "it was built by recipe {recipe}, and this lab needs recipe {MIN_RECIPE} or later (dockerd with \
                     TLS); build it again with {BUILD_IMAGE}"
                ),
            ));
        }
        Ok(image)
    }

    /// KVM or TCG, decided once per run.
    async fn kvm(&self, image: &Image) -> Result<bool> {
        self.kvm
            .get_or_try_init(|| async {
                match self.config.accel {
                    Accel::Tcg => Ok(false),
                    Accel::Kvm => {
                        let (works, why) = host::kvm_works(&self.cache, &image.kernel).await;
                        if works {
                            Ok(true)
                        } else {
                            Err(Error::op("use KVM (accel = \"kvm\")", why)
                                .with_hint("use --accel tcg (slower), or auto to fall back by itself"))
                        }
                    }
                    Accel::Auto => {
                        let (works, why) = host::kvm_works(&self.cache, &image.kernel).await;
                        tracing::info!("qemu: {}: {why}", if works { "KVM" } else { "TCG (software emulation)" });
                        Ok(works)
                    }
                }
            })
            .await
            .copied()
    }

    fn read_record(dir: &NodeDir) -> Option<NodeRecord> {
        serde_json::from_slice(&std::fs::read(dir.record()).ok()?).ok()
    }

    /// Every node lab recorded, by name.
    fn records(&self) -> Vec<(String, NodeRecord)> {
        let Ok(entries) = std::fs::read_dir(self.nodes_dir()) else { return Vec::new() };
        let mut out: Vec<(String, NodeRecord)> = entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_str()?.to_string();
                Some((name.clone(), Self::read_record(&NodeDir(e.path()))?))
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    fn running(dir: &NodeDir) -> Option<u32> {
        vm::running(&dir.pidfile(), &dir.disk().to_string_lossy())
    }

    fn machine(&self, name: &str, dir: &NodeDir, record: &NodeRecord) -> Machine {
        let state = if Self::running(dir).is_some() {
            MachineState::Running
        } else if dir.disk().is_file() {
            MachineState::Stopped
        } else {
            MachineState::Broken(format!("its disk {} is missing", dir.disk().display()))
        };
        Machine { name: name.to_string(), role: Some(record.role), state, address: Some(record.address()) }
    }

    /// A client of the node's engine: TLS to the forwarded port, with the cluster's client
    /// certificate, trusting only the cluster's CA.
    fn docker(&self, node: &str, record: &NodeRecord) -> Result<Docker> {
        support::connect_with_ssl(node, &format!("tcp://127.0.0.1:{}", record.engine_port), &self.pki.client_certs())
    }

    fn remote(&self, node: &str) -> Result<Arc<Remote>> {
        let record = Self::read_record(&self.node_dir(node))
            .ok_or_else(|| Error::node(node, "reach the VM over SSH", "lab made no VM for it"))?;
        let mut remotes = self.remotes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = remotes.get(node).filter(|r| r.target().host.port == record.ssh_port) {
            return Ok(r.clone());
        }
        let endpoint = Endpoint {
            name: node.to_string(),
            address: "127.0.0.1".into(),
            port: record.ssh_port,
            user: "root".into(),
            identity_file: Some(self.pki.ssh_key()),
            host_key_alias: None,
        };
        let target = Target::new(
            endpoint,
            KnownHostsFiles { user: self.pki.known_hosts(), global: Vec::new() },
            HostKeyPolicy::Strict,
            Duration::from_secs(10),
            Duration::from_secs(60),
            None,
        );
        let r = Arc::new(Remote::new(target, &self.root.join("sockets"), lab_ssh::Hints::default()));
        remotes.insert(node.to_string(), r.clone());
        Ok(r)
    }

    /// Keys, certificates and the image stamp, made once per cluster. Holds `shared`.
    async fn ensure_cluster(&self, image: &Image) -> Result<()> {
        make_private_dir(&self.nodes_dir())?;
        self.pki.ensure(self.cluster.as_str()).await?;
        let stamp_file = self.root.join("image.json");
        if !stamp_file.is_file() {
            if let Some(stamp) = BaseStamp::of(&image.base) {
                let bytes = serde_json::to_vec_pretty(&stamp).expect("serialisable");
                write_atomic(&stamp_file, &bytes)?;
            }
        }
        Ok(())
    }

    /// Refuses to boot overlays whose base disk was replaced since the cluster was made.
    fn check_base(&self, node: &str, image: &Image) -> Result<()> {
        let Ok(bytes) = std::fs::read(self.root.join("image.json")) else { return Ok(()) };
        let Ok(recorded) = serde_json::from_slice::<BaseStamp>(&bytes) else { return Ok(()) };
        let now = BaseStamp::of(&recorded.base);
        if now.as_ref() != Some(&recorded) || recorded.base != image.base {
            return Err(Error::node(
                node,
                "boot its VM",
                format!(
                    "the image's base disk {} changed after this cluster was made (it was rebuilt or moved), and \
                     the nodes' disks are overlays of the old one",
                    recorded.base.display()
                ),
            )
            .with_hint("remove the cluster with `lab down` and bring it up again"));
        }
        Ok(())
    }

    /// Makes the node's files (keys, fw_cfg files, overlay), `node.json` last. Holds `shared`.
    async fn make_node(&self, spec: &NodeSpec, dir: &NodeDir, image: &Image) -> Result<NodeRecord> {
        let node = &spec.name;
        let _ = std::fs::remove_dir_all(&dir.0);
        make_private_dir(&dir.0.join("fw"))?;
        let qmp = dir.qmp();
        if qmp.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(Error::node(
                node,
                "make its VM",
                format!(
                    "the socket path {} is longer than {MAX_SOCKET_PATH} bytes, which unix sockets do not allow",
                    qmp.display()
                ),
            )
            .with_hint("set XDG_STATE_HOME to a shorter directory"));
        }
        let records = self.records();
        let used: BTreeSet<u32> = records.iter().map(|(_, r)| r.index).collect();
        let index = (0..).find(|i| !used.contains(i)).expect("a free index");
        let taken: BTreeSet<u16> = records.iter().flat_map(|(_, r)| [r.ssh_port, r.engine_port]).collect();
        let ssh_port = free_port(&taken).map_err(|e| Error::io(node, "find a free port on 127.0.0.1", e))?;
        let mut taken = taken;
        taken.insert(ssh_port);
        let engine_port = free_port(&taken).map_err(|e| Error::io(node, "find a free port on 127.0.0.1", e))?;
        let mut id = [0u8; 16];
        getrandom::getrandom(&mut id).map_err(|e| crate::error::QemuError::Random { node: node.clone(), source: e })?;
        let record = NodeRecord {
            index,
            role: spec.role,
            ssh_port,
            engine_port,
            machine_id: id.iter().map(|b| format!("{b:02x}")).collect(),
            resources: self.config.resources(spec.role),
        };
        ssh_keygen(&dir.fw("ssh_host_ed25519_key"), &self.vm_name(node)).await?;
        let copy = |from: PathBuf, name: &str| -> Result<()> {
            let bytes = std::fs::read(&from).map_err(|e| ioe(&from, e))?;
            write_atomic(&dir.fw(name), &bytes)
        };
        copy(self.pki.ssh_key().with_extension("pub"), "authorized_keys")?;
        copy(self.pki.ca(), "docker_ca")?;
        copy(self.pki.server_cert(), "docker_cert")?;
        copy(self.pki.server_key(), "docker_key")?;
        write_atomic(&dir.fw("hostname"), format!("{}\n", self.vm_name(node)).as_bytes())?;
        write_atomic(&dir.fw("cluster_addr"), format!("{}/24\n", record.address()).as_bytes())?;
        debug_assert!(FW_FILES.iter().all(|f| dir.fw(f).is_file()));
        let base = image.base.to_string_lossy().into_owned();
        let disk = dir.disk().to_string_lossy().into_owned();
        let out =
            run(QEMU_IMG, &["create", "-q", "-f", "qcow2", "-b", &base, "-F", "qcow2", &disk], Duration::from_secs(60))
                .await?;
        if !out.ok() {
            return Err(Error::node(node, "make its disk with qemu-img", out.message()));
        }
        let bytes = serde_json::to_vec_pretty(&record).expect("serialisable");
        write_atomic(&dir.record(), &bytes)?;
        self.write_known_hosts()?;
        Ok(record)
    }

    /// `ssh/known_hosts`: each VM's host key at its forwarded port, and nothing else.
    fn write_known_hosts(&self) -> Result<()> {
        let mut text = String::new();
        for (name, r) in self.records() {
            let pub_key = self.node_dir(&name).fw("ssh_host_ed25519_key.pub");
            if let Ok(k) = std::fs::read_to_string(&pub_key) {
                let mut parts = k.split_whitespace();
                if let (Some(kind), Some(key)) = (parts.next(), parts.next()) {
                    text.push_str(&format!("{} {kind} {key}\n", known_hosts::pattern("127.0.0.1", r.ssh_port)));
                }
            }
        }
        write_atomic(&self.pki.known_hosts(), text.as_bytes())
    }

    /// Starts the cluster's switch unless it runs. Holds `shared`.
    async fn ensure_switch(&self) -> Result<()> {
        let dir = self.switch_dir();
        let pidfile = self.root.join("switch.pid");
        let marker = dir.to_string_lossy().into_owned();
        if vm::running(&pidfile, &marker).is_some() {
            return Ok(());
        }
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_file(&pidfile);
        let out = run(
            VDE_SWITCH,
            &[
                "--sock",
                &marker,
                "--mode",
                "0600",
                "--numports",
                "128",
                "--daemon",
                "--pidfile",
                &pidfile.to_string_lossy(),
            ],
            Duration::from_secs(30),
        )
        .await?;
        if !out.ok() {
            return Err(Error::op("start the cluster's network switch (vde_switch)", out.message()));
        }
        // With --daemon the pidfile is written after the fork.
        let up = || std::future::ready(vm::running(&pidfile, &marker).is_some() && dir.join("ctl").exists());
        Wait::new("", "", Duration::from_secs(10)).every(Duration::from_millis(100)).holds("", up).await.map_err(|_| {
            Error::op(
                "start the cluster's network switch (vde_switch)",
                format!("it did not come up within 10s (no running process in {})", pidfile.display()),
            )
        })
    }

    /// Boots the node's VM unless its QEMU runs, then waits (bounded) until its engine answers.
    /// A guest whose kernel panicked while booting (its QEMU ends: `panic=-1`, `-no-reboot`)
    /// is booted once more: under TCG on a loaded host an early-boot panic is a matter of
    /// timing, and the second boot is what a user would try. A second panic is the error.
    async fn boot(&self, node: &str, dir: &NodeDir, record: &NodeRecord, image: &Image) -> Result<Machine> {
        match self.boot_once(node, dir, record, image).await {
            Err(_) if Self::running(dir).is_none() && vm::panicked(&dir.console()) => {
                tracing::warn!(
                    node,
                    "qemu: the guest's kernel panicked while booting (see its console log); booting it once more"
                );
                self.boot_once(node, dir, record, image).await
            }
            other => other,
        }
    }

    async fn boot_once(&self, node: &str, dir: &NodeDir, record: &NodeRecord, image: &Image) -> Result<Machine> {
        if Self::running(dir).is_none() {
            self.check_base(node, image)?;
            let kvm = self.kvm(image).await?;
            {
                let _g = self.shared.lock().await;
                self.ensure_switch().await?;
            }
            let _ = std::fs::remove_file(dir.qmp());
            let _ = std::fs::remove_file(dir.pidfile());
            let switch = self.switch_dir();
            let boot = Boot {
                name: self.vm_name(node),
                dir,
                record,
                kvm,
                kernel: &image.kernel,
                initrd: &image.initrd,
                switch: &switch,
            };
            let out = run(QEMU, &boot.args(), Duration::from_secs(60)).await?;
            if !out.ok() {
                return Err(Error::node(node, "start its VM with qemu-system-x86_64", out.message())
                    .with_hint(vm::console_tail(&dir.console(), 10)));
            }
            tracing::info!(node, "qemu: booting {} ({})", self.vm_name(node), if kvm { "KVM" } else { "TCG" });
        }
        self.wait_engine(node, dir, record).await?;
        Ok(self.machine(node, dir, record))
    }

    /// Waits until the engine answers, the VM's QEMU exits, or the boot timeout passes; the
    /// error quotes the console.
    async fn wait_engine(&self, node: &str, dir: &NodeDir, record: &NodeRecord) -> Result<()> {
        let timeout = Duration::from_secs(self.config.boot_timeout());
        let docker = self.docker(node, record)?;
        let what = format!("its Docker engine to answer at tcp://127.0.0.1:{}", record.engine_port);
        let console = || vm::console_tail(&dir.console(), 15);
        Wait::new(node, what, timeout)
            .every(Duration::from_secs(1))
            .poll(|| async {
                if Self::running(dir).is_none() {
                    return Look::Fail(
                        Error::node(node, "boot its VM", "its QEMU process exited").with_hint(console()),
                    );
                }
                let probe = docker.clone().with_timeout(Duration::from_secs(5));
                match tokio::time::timeout(Duration::from_secs(6), probe.ping()).await {
                    Ok(Ok(_)) => Look::Done(()),
                    Ok(Err(e)) => Look::NotYet(Box::new(Error::engine(node, "ping its Docker engine", e))),
                    Err(_) => Look::not_yet("no answer within 5s"),
                }
            })
            .await
            .map_err(|e| match e {
                Error::Timeout { .. } => e.with_hint(console()),
                other => other,
            })
    }

    /// Ends the node's QEMU: QMP `quit`, then SIGKILL, each bounded.
    async fn kill_vm(&self, node: &str, dir: &NodeDir) -> Result<()> {
        let Some(pid) = Self::running(dir) else { return Ok(()) };
        let qmp = dir.qmp();
        let _ = tokio::task::spawn_blocking(move || vm::qmp(&qmp, "quit", Duration::from_secs(3))).await;
        if !gone(|| Self::running(dir).is_none(), Duration::from_secs(10)).await {
            let _ = tokio::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status().await;
            if !gone(|| Self::running(dir).is_none(), Duration::from_secs(10)).await {
                return Err(Error::node(node, "stop its VM", format!("QEMU (pid {pid}) did not exit after SIGKILL")));
            }
        }
        Ok(())
    }
}

async fn gone(done: impl Fn() -> bool, within: Duration) -> bool {
    let wait = Wait::new("", "", within).every(Duration::from_millis(100));
    wait.holds("", || std::future::ready(done())).await.is_ok()
}

/// A port on 127.0.0.1 that is free now and not in `taken`.
fn free_port(taken: &BTreeSet<u16>) -> std::io::Result<u16> {
    for _ in 0..50 {
        let port = std::net::TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port();
        if !taken.contains(&port) {
            return Ok(port);
        }
    }
    Err(std::io::Error::other("no free port after 50 tries"))
}

/// `$LAB_QEMU_CACHE`, else `$XDG_CACHE_HOME/lab/qemu`, else `~/.cache/lab/qemu`, as
/// `scripts/qemu-image.sh` builds it.
fn default_image_dir() -> Option<PathBuf> {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    var("LAB_QEMU_CACHE")
        .or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("lab/qemu")))
        .or_else(|| var("HOME").map(|h| h.join(".cache/lab/qemu")))
}

#[async_trait]
impl Driver for QemuDriver {
    fn capabilities(&self) -> Capabilities {
        Capabilities::all()
    }

    /// The programs (naming the Debian package of a missing one) and the image (naming the
    /// command that builds it); with `accel = "kvm"`, that KVM works.
    async fn preflight(&self, _nodes: &[NodeSpec]) -> Result<()> {
        for p in host::ALL {
            p.find()?;
        }
        let image = self.image()?;
        self.kvm(&image).await?;
        Ok(())
    }

    async fn observe(&self) -> Result<Vec<Machine>> {
        Ok(self.records().iter().map(|(name, r)| self.machine(name, &self.node_dir(name), r)).collect())
    }

    async fn create(&self, spec: &NodeSpec) -> Result<Machine> {
        let image = self.image()?;
        let dir = self.node_dir(&spec.name);
        let record = {
            let _g = self.shared.lock().await;
            self.ensure_cluster(&image).await?;
            match Self::read_record(&dir) {
                Some(r) if dir.disk().is_file() => r,
                _ => self.make_node(spec, &dir, &image).await?,
            }
        };
        self.boot(&spec.name, &dir, &record, &image).await
    }

    async fn start(&self, node: &str) -> Result<Machine> {
        let dir = self.node_dir(node);
        let record =
            Self::read_record(&dir).ok_or_else(|| Error::node(node, "start its VM", "lab made no VM for it"))?;
        let image = self.image()?;
        self.boot(node, &dir, &record, &image).await
    }

    async fn destroy(&self, node: &str) -> Result<()> {
        let dir = self.node_dir(node);
        self.kill_vm(node, &dir).await?;
        self.remotes.lock().unwrap_or_else(|e| e.into_inner()).remove(node);
        match std::fs::remove_dir_all(&dir.0) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(node, format!("remove {}", dir.0.display()), e)),
        }
        let _g = self.shared.lock().await;
        if self.pki.known_hosts().is_file() {
            self.write_known_hosts()?;
        }
        Ok(())
    }

    /// Stops the switch, ends any VM left (one half-made before its record), and removes
    /// everything under `qemu/`.
    async fn teardown(&self) -> Result<()> {
        if let Ok(entries) = std::fs::read_dir(self.nodes_dir()) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                self.kill_vm(&name, &NodeDir(e.path())).await?;
            }
        }
        let pidfile = self.root.join("switch.pid");
        if let Some(pid) = vm::running(&pidfile, &self.switch_dir().to_string_lossy()) {
            let _ = tokio::process::Command::new("kill").arg(pid.to_string()).status().await;
            let switch = self.switch_dir();
            if !gone(|| vm::running(&pidfile, &switch.to_string_lossy()).is_none(), Duration::from_secs(5)).await {
                let _ = tokio::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status().await;
            }
        }
        match std::fs::remove_dir_all(&self.root) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(crate::error::io(format!("remove {}", self.root.display()), e).into()),
        }
    }

    async fn engine(&self, machine: &Machine) -> Result<NodeEngine> {
        let node = &machine.name;
        let record = Self::read_record(&self.node_dir(node))
            .ok_or_else(|| Error::node(node, "connect to its Docker engine", "lab made no VM for it"))?;
        Ok(NodeEngine {
            docker: self.docker(node, &record)?,
            advertise_addr: record.address(),
            client_env: vec![
                ("DOCKER_TLS_VERIFY".into(), "1".into()),
                ("DOCKER_HOST".into(), format!("tcp://127.0.0.1:{}", record.engine_port)),
                ("DOCKER_CERT_PATH".into(), self.pki.client_certs().to_string_lossy().into_owned()),
            ],
        })
    }

    async fn exec(&self, node: &str, argv: &[String]) -> Result<ExecOutput> {
        self.remote(node)?.exec(argv).await
    }

    /// OpenSSH to the VM's forwarded port as root with lab's key, checking the host key lab
    /// made strictly against the driver's known-hosts file only ([`Target::openssh_command`]).
    fn shell_command(&self, node: &str, args: &[String]) -> Option<Vec<String>> {
        Some(self.remote(node).ok()?.target().openssh_command(args))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn driver(dir: &Path, config: serde_json::Value) -> Result<QemuDriver> {
        QemuDriver::new(DriverContext {
            driver: "qemu".into(),
            cluster: ClusterName::parse("c", "test").unwrap(),
            state_dir: dir.join("state"),
            cache_dir: dir.join("cache"),
            config,
            config_source: "lab.toml".into(),
            force: false,
        })
    }

    #[test]
    fn a_missing_or_old_image_names_the_command_that_builds_it() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("img");
        std::fs::create_dir_all(&img).unwrap();
        // An image directory the user named that holds no image is their setting's fault.
        let d = driver(dir.path(), serde_json::json!({"image": img})).unwrap();
        let e = d.image().unwrap_err();
        assert_eq!(e.exit_code(), 2);
        let text = e.to_string();
        assert!(text.contains("lab.toml: [drivers.qemu] image") && text.contains(&*img.to_string_lossy()), "{e}");
        // The default directory without an image: the machine lacks it, exit 1.
        std::env::set_var("LAB_QEMU_CACHE", &img);
        let d = driver(dir.path(), serde_json::Value::Null).unwrap();
        std::env::remove_var("LAB_QEMU_CACHE");
        let e = d.image().unwrap_err();
        assert_eq!(e.exit_code(), 1);
        assert!(e.to_string().contains("vmlinuz, initrd.img, base.qcow2 is missing"), "{e}");
        assert!(e.to_string().contains("scripts/qemu-image.sh"), "{e}");
        for f in ["vmlinuz", "initrd.img", "base.qcow2"] {
            std::fs::write(img.join(f), "x").unwrap();
        }
        std::fs::write(img.join("recipe"), "1\n").unwrap();
        let e = d.image().unwrap_err();
        assert!(e.to_string().contains("recipe 1") && e.to_string().contains("scripts/qemu-image.sh"), "{e}");
        std::fs::write(img.join("recipe"), "2\n").unwrap();
        assert!(d.image().is_ok());
    }

    #[test]
    fn nothing_made_is_nothing_observed_and_half_made_nodes_are_not_machines() {
        let dir = tempfile::tempdir().unwrap();
        let d = driver(dir.path(), serde_json::Value::Null).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        assert!(rt.block_on(d.observe()).unwrap().is_empty());
        std::fs::create_dir_all(d.node_dir("worker1").0.join("fw")).unwrap();
        assert!(rt.block_on(d.observe()).unwrap().is_empty());
        let r = NodeRecord {
            index: 1,
            role: lab_core::Role::Worker,
            ssh_port: 1,
            engine_port: 2,
            machine_id: "0".repeat(32),
            resources: crate::Resources { memory: 1024, cpus: 1 },
        };
        std::fs::write(d.node_dir("worker1").record(), serde_json::to_vec(&r).unwrap()).unwrap();
        let ms = rt.block_on(d.observe()).unwrap();
        assert_eq!(ms.len(), 1);
        assert!(matches!(&ms[0].state, MachineState::Broken(why) if why.contains("disk")), "{ms:?}");
        std::fs::write(d.node_dir("worker1").disk(), "").unwrap();
        let ms = rt.block_on(d.observe()).unwrap();
        assert_eq!(ms[0].state, MachineState::Stopped);
        assert_eq!(ms[0].address.as_deref(), Some("192.168.77.11"));
        // Destroying a machine that is not there, or is not running, succeeds.
        rt.block_on(d.destroy("worker1")).unwrap();
        rt.block_on(d.destroy("worker9")).unwrap();
        assert!(rt.block_on(d.observe()).unwrap().is_empty());
        rt.block_on(d.teardown()).unwrap();
        assert!(!d.root.exists());
    }

    #[test]
    fn the_shell_command_trusts_only_the_recorded_host_key() {
        let dir = tempfile::tempdir().unwrap();
        let d = driver(dir.path(), serde_json::Value::Null).unwrap();
        assert!(d.shell_command("manager", &[]).is_none());
        let r = NodeRecord {
            index: 0,
            role: lab_core::Role::Manager,
            ssh_port: 40022,
            engine_port: 40023,
            machine_id: "0".repeat(32),
            resources: crate::Resources { memory: 1024, cpus: 1 },
        };
        std::fs::create_dir_all(d.node_dir("manager").0).unwrap();
        std::fs::write(d.node_dir("manager").record(), serde_json::to_vec(&r).unwrap()).unwrap();
        let cmd = d.shell_command("manager", &["docker".into(), "ps -a".into()]).unwrap().join(" ");
        assert!(cmd.starts_with("ssh -p 40022 -i "), "{cmd}");
        assert!(cmd.contains("StrictHostKeyChecking=yes") && cmd.contains("GlobalKnownHostsFile=/dev/null"), "{cmd}");
        assert!(cmd.ends_with("-- 127.0.0.1 docker 'ps -a'"), "{cmd}");
    }
}
