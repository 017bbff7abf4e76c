//! The `Driver` implementation over docker-machine.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use lab_core::driver::support;
use lab_core::{
    Capabilities, ClusterName, Driver, DriverContext, Error, ExecOutput, Machine, MachineState, NodeEngine, NodeSpec,
    Result,
};
use lab_ssh::Remote;
use tokio::sync::{Mutex, OnceCell, Semaphore};

use crate::client::{self, NotFound, Output};
use crate::config::VirtualBoxConfig;
use crate::error::{does_not_exist, failed, not_run, program_not_run};
use crate::ssh;

/// `ls`, `env`, `ip`, `status` and `--version`: quick reads.
const QUICK: Duration = Duration::from_secs(60);
/// How long to wait before looking again at a machine seen broken.
#[cfg(not(test))]
const CONFIRM_BROKEN: Duration = Duration::from_secs(3);
#[cfg(test)]
const CONFIRM_BROKEN: Duration = Duration::from_millis(50);
/// `create`: boot2docker's first download and a VM's first boot can be slow.
const CREATE: Duration = Duration::from_secs(30 * 60);
/// `start` and `rm`.
const SLOW: Duration = Duration::from_secs(10 * 60);
/// The engine port docker-machine's virtualbox driver configures.
const ENGINE_PORT: u16 = 2376;
/// What to install when docker-machine is missing.
const INSTALL_HINT: &str =
    "install docker-machine 0.16.2 (https://github.com/docker/machine/releases) and VirtualBox, \
     or point [drivers.virtualbox] docker_machine (--driver-opt docker_machine=PATH) at it";

/// Nodes as VirtualBox machines made with docker-machine.
pub struct VirtualBoxDriver {
    cluster: ClusterName,
    config: VirtualBoxConfig,
    config_source: String,
    /// The program, found once (PATH or configured).
    program: std::sync::OnceLock<std::result::Result<PathBuf, NotFound>>,
    /// Its version line, checked once per run.
    version: OnceCell<String>,
    /// Whether a create has succeeded in this run: until one has, creates run one at a time
    /// (VirtualBox fails when several VMs make the host-only network at once).
    first_created: Mutex<bool>,
    /// Creates allowed at once after the first.
    slots: Semaphore,
    /// docker-machine's store (`$MACHINE_STORAGE_PATH`, else `~/.docker/machine`), to tell a
    /// half-made machine from a healthy one.
    store: Option<PathBuf>,
    /// lab's record of the machines' SSH host keys ([`ssh`]).
    known_hosts: PathBuf,
    /// Where lab's SSH sockets for the cluster would go (commands need none, but lab_ssh asks).
    sockets: PathBuf,
    /// Each node's way in over SSH, made on first use and dropped when its machine is made,
    /// started or removed (its address may change).
    remotes: std::sync::Mutex<HashMap<String, Arc<Remote>>>,
}

impl VirtualBoxDriver {
    /// Makes the driver from its context (its `[drivers.virtualbox]` table).
    pub fn new(ctx: DriverContext) -> Result<Self> {
        let config: VirtualBoxConfig = ctx.parse_config()?;
        config.validate(&ctx.config_source)?;
        let store =
            std::env::var_os("MACHINE_STORAGE_PATH").filter(|v| !v.is_empty()).map(PathBuf::from).or_else(|| {
                std::env::var_os("HOME").filter(|v| !v.is_empty()).map(|h| PathBuf::from(h).join(".docker/machine"))
            });
        let dir = ctx.state_dir.join("virtualbox");
        Ok(VirtualBoxDriver {
            known_hosts: dir.join("known_hosts"),
            sockets: dir.join("sockets"),
            remotes: std::sync::Mutex::new(HashMap::new()),
            cluster: ctx.cluster,
            slots: Semaphore::new(config.concurrency() as usize),
            config,
            config_source: ctx.config_source,
            program: std::sync::OnceLock::new(),
            version: OnceCell::new(),
            first_created: Mutex::new(false),
            store,
        })
    }

    /// [`VirtualBoxDriver::new`], boxed, for registration.
    pub fn boxed(ctx: DriverContext) -> Result<Box<dyn Driver>> {
        Ok(Box::new(Self::new(ctx)?))
    }

    fn machine_name(&self, node: &str) -> String {
        format!("{}-{node}", self.cluster)
    }

    fn found_program(&self) -> &std::result::Result<PathBuf, NotFound> {
        self.program
            .get_or_init(|| client::find_program(self.config.docker_machine.as_deref(), std::env::var_os("PATH")))
    }

    /// The docker-machine program, found and its version checked once.
    async fn program(&self) -> Result<&Path> {
        let program = match self.found_program() {
            Ok(p) => p.as_path(),
            Err(NotFound::NotOnPath) => {
                return Err(Error::op("find docker-machine", "docker-machine is not on PATH").with_hint(INSTALL_HINT))
            }
            Err(NotFound::Configured(p)) => {
                return Err(Error::input(
                    format!("{}: [drivers.virtualbox] docker_machine", self.config_source),
                    format!("no such program: {}", p.display()),
                ))
            }
        };
        self.version
            .get_or_try_init(|| async {
                let step = format!("run {} --version", program.display());
                let out = client::run(program, &["--version".into()], QUICK)
                    .await
                    .map_err(|e| Error::from(program_not_run(&step, e)).with_hint(INSTALL_HINT))?;
                if !out.success() {
                    return Err(Error::op(&step, out.message()));
                }
                let line = out.stdout.trim().to_string();
                match client::parse_version(&line) {
                    Some((major, minor, _)) if (major, minor) < client::MIN_VERSION => Err(Error::op(
                        "check docker-machine's version",
                        format!(
                            "{} is {line:?}; lab needs {}.{} or newer",
                            program.display(),
                            client::MIN_VERSION.0,
                            client::MIN_VERSION.1
                        ),
                    )
                    .with_hint(INSTALL_HINT)),
                    Some(_) => {
                        tracing::debug!(program = %program.display(), version = %line, "docker-machine");
                        Ok(line)
                    }
                    None => {
                        tracing::warn!(program = %program.display(), output = %line, "cannot read docker-machine's version; going on");
                        Ok(line)
                    }
                }
            })
            .await?;
        Ok(program)
    }

    /// Runs docker-machine for `node`; a failure to run it at all is an error naming the node
    /// and the command.
    async fn machine_cmd(&self, node: &str, args: &[String], timeout: Duration) -> Result<Output> {
        let program = self.program().await?;
        let shown = format!("docker-machine {}", args.iter().take(2).cloned().collect::<Vec<_>>().join(" "));
        tracing::debug!(node, args = ?args, "docker-machine");
        Ok(client::run(program, args, timeout).await.map_err(|e| not_run(node, &shown, e))?)
    }

    fn machine_dir(&self, machine: &str) -> Option<PathBuf> {
        self.store.as_ref().map(|s| s.join("machines").join(machine))
    }

    /// Why a machine docker-machine lists as usable is not: a create that failed half-way
    /// saves config.json before the VM exists, and copies the TLS certificates only at the
    /// end; such a machine may even be "Stopped", and starting it would not help.
    fn half_made(&self, machine: &str) -> Option<String> {
        let dir = self.machine_dir(machine)?;
        if !dir.is_dir() {
            // docker-machine keeps its machines elsewhere (a --storage-path lab does not know).
            return None;
        }
        if !dir.join("config.json").is_file() {
            return Some(format!("{} has no config.json: its create did not finish", dir.display()));
        }
        let missing: Vec<_> =
            ["ca.pem", "cert.pem", "key.pem"].into_iter().filter(|f| !dir.join(f).is_file()).collect();
        if !missing.is_empty() {
            return Some(format!(
                "{} lacks {}: its create did not finish provisioning",
                dir.display(),
                missing.join(", ")
            ));
        }
        None
    }

    /// The cluster's machines. A machine seen broken is looked at again after
    /// [`CONFIRM_BROKEN`] and counts as broken only if the second look agrees: VirtualBox
    /// reports `Error` for a moment when VBoxManage fails transiently, and a broken machine is
    /// destroyed with all its data.
    async fn list(&self) -> Result<Vec<Machine>> {
        let first = self.list_once().await?;
        if !first.iter().any(|m| matches!(m.state, MachineState::Broken(_))) {
            return Ok(first);
        }
        tokio::time::sleep(CONFIRM_BROKEN).await;
        let second = self.list_once().await?;
        // Broken only if both looks say so; a machine broken on the second look only keeps
        // what the first look saw, and the next `up` looks again.
        Ok(second
            .into_iter()
            .map(|m| match (&m.state, first.iter().find(|f| f.name == m.name)) {
                (MachineState::Broken(_), Some(f)) if !matches!(f.state, MachineState::Broken(_)) => f.clone(),
                _ => m,
            })
            .collect())
    }

    async fn list_once(&self) -> Result<Vec<Machine>> {
        let args: Vec<String> = vec![
            "ls".into(),
            "--filter".into(),
            format!("name=^{}-", self.cluster),
            "--format".into(),
            client::LS_FORMAT.into(),
        ];
        let program = self.program().await?;
        let out = client::run(program, &args, QUICK)
            .await
            .map_err(|e| program_not_run("list machines (docker-machine ls)", e))?;
        if !out.success() {
            return Err(Error::op("list machines (docker-machine ls)", out.message()));
        }
        let mut machines = Vec::new();
        // Machines whose config does not load are listed whatever the filter says: the
        // prefix is checked here again.
        for row in client::parse_ls(&out.stdout) {
            let Some((name, role)) = client::node_of(self.cluster.as_str(), &row.name) else { continue };
            let mut state = client::machine_state(&row);
            if !matches!(state, MachineState::Broken(_)) {
                if let Some(why) = self.half_made(&row.name) {
                    state = MachineState::Broken(why);
                }
            }
            let address = if state == MachineState::Running { client::url_host(&row.url) } else { None };
            machines.push(Machine { name, role: Some(role), state, address });
        }
        machines.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(machines)
    }

    async fn find(&self, node: &str) -> Result<Option<Machine>> {
        Ok(self.list().await?.into_iter().find(|m| m.name == node))
    }

    /// `create`, then the new machine's host keys recorded (see [`ssh`] for why they can be
    /// read this way).
    async fn run_create(&self, node: &NodeSpec, args: &[String], command: &str) -> Result<()> {
        let out = self.machine_cmd(&node.name, args, CREATE).await?;
        if !out.success() {
            return Err(failed(&node.name, command, &out).into());
        }
        self.forget_remote(&node.name);
        let (program, known, name, machine) = self.ssh_args(&node.name).await?;
        blocking(&node.name, move || ssh::learn(&program, &known, &name, &machine)).await
    }

    /// What the blocking SSH set-up needs: the program, the record, the node and its machine.
    async fn ssh_args(&self, node: &str) -> Result<(PathBuf, PathBuf, String, String)> {
        let program = self.program().await?.to_path_buf();
        Ok((program, self.known_hosts.clone(), node.to_string(), self.machine_name(node)))
    }

    /// The node's way in over SSH (see [`ssh::target`]), made once.
    async fn remote(&self, node: &str) -> Result<Arc<Remote>> {
        if let Some(r) = self.remotes.lock().unwrap_or_else(|e| e.into_inner()).get(node) {
            return Ok(r.clone());
        }
        let (program, known, name, machine) = self.ssh_args(node).await?;
        let target = blocking(node, move || ssh::target(&program, &known, &name, &machine)).await?;
        let remote = Arc::new(Remote::new(target, &self.sockets, lab_ssh::Hints::default()));
        self.remotes.lock().unwrap_or_else(|e| e.into_inner()).insert(node.to_string(), remote.clone());
        Ok(remote)
    }

    fn forget_remote(&self, node: &str) {
        self.remotes.lock().unwrap_or_else(|e| e.into_inner()).remove(node);
    }
}

#[async_trait]
impl Driver for VirtualBoxDriver {
    fn capabilities(&self) -> Capabilities {
        Capabilities::all()
    }

    async fn preflight(&self, _nodes: &[NodeSpec]) -> Result<()> {
        self.program().await.map(|_| ())
    }

    async fn observe(&self) -> Result<Vec<Machine>> {
        self.list().await
    }

    async fn create(&self, node: &NodeSpec) -> Result<Machine> {
        if let Some(m) = self.find(&node.name).await? {
            return Ok(m);
        }
        let name = self.machine_name(&node.name);
        let command = format!("docker-machine create {name}");
        let args = self.config.options(node.role).create_args(&name);
        let mut done = false;
        {
            let mut first = self.first_created.lock().await;
            if !*first {
                // Alone: nobody else may create while the first machine makes the host-only
                // network. The lock is held until it is done; if it fails, the next create
                // runs alone in turn.
                self.run_create(node, &args, &command).await?;
                *first = true;
                done = true;
            }
        }
        if !done {
            let _slot = self.slots.acquire().await.map_err(|e| Error::Node {
                node: node.name.clone(),
                step: command.clone(),
                message: e.to_string(),
                hint: None,
                source: Some(Box::new(e)),
            })?;
            self.run_create(node, &args, &command).await?;
        }
        self.find(&node.name).await?.ok_or_else(|| {
            Error::node(&node.name, command, "docker-machine ls does not list the machine it just created")
        })
    }

    async fn start(&self, node: &str) -> Result<Machine> {
        let name = self.machine_name(node);
        self.forget_remote(node);
        let command = format!("docker-machine start {name}");
        let out = self.machine_cmd(node, &["start".into(), name.clone()], SLOW).await?;
        if !out.success() && !out.message().contains("is already running") {
            return Err(failed(node, &command, &out).into());
        }
        self.find(node).await?.ok_or_else(|| Error::node(node, command, "docker-machine ls does not list it"))
    }

    async fn destroy(&self, node: &str) -> Result<()> {
        let name = self.machine_name(node);
        let command = format!("docker-machine rm -y {name}");
        self.forget_remote(node);
        let out = self.machine_cmd(node, &["rm".into(), "-y".into(), name.clone()], SLOW).await?;
        if out.success() || does_not_exist(&out) {
            return ssh::forget(&self.known_hosts, node, &name);
        }
        // A machine whose config.json never got written cannot be loaded, so plain `rm` fails
        // on it; there is no VM to lose, and `-f` removes what is left of it.
        let unloadable = self.machine_dir(&name).is_some_and(|d| d.is_dir() && !d.join("config.json").is_file());
        if unloadable {
            let forced = self.machine_cmd(node, &["rm".into(), "-f".into(), "-y".into(), name.clone()], SLOW).await?;
            if forced.success() {
                return ssh::forget(&self.known_hosts, node, &name);
            }
            return Err(failed(node, &format!("docker-machine rm -f -y {name}"), &forced).into());
        }
        Err(failed(node, &command, &out).into())
    }

    async fn engine(&self, machine: &Machine) -> Result<NodeEngine> {
        let name = self.machine_name(&machine.name);
        let env_cmd = format!("docker-machine env {name}");
        let out = self
            .machine_cmd(&machine.name, &["env".into(), "--shell".into(), "bash".into(), name.clone()], QUICK)
            .await?;
        if !out.success() {
            return Err(failed(&machine.name, &env_cmd, &out).into());
        }
        let vars = client::parse_env(&out.stdout);
        let var = |k: &str| vars.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
        let (Some(host), Some(certs)) = (var("DOCKER_HOST"), var("DOCKER_CERT_PATH")) else {
            return Err(Error::node(
                &machine.name,
                env_cmd,
                format!("it printed no DOCKER_HOST and DOCKER_CERT_PATH:\n{}", out.stdout.trim()),
            ));
        };
        let ip_cmd = format!("docker-machine ip {name}");
        let out = self.machine_cmd(&machine.name, &["ip".into(), name.clone()], QUICK).await?;
        if !out.success() {
            return Err(failed(&machine.name, &ip_cmd, &out).into());
        }
        let ip = out.stdout.trim().to_string();
        if ip.parse::<std::net::IpAddr>().is_err() {
            return Err(Error::node(&machine.name, ip_cmd, format!("not an IP address: {ip:?}")));
        }
        if client::url_host(&host).is_none() || !host.ends_with(&format!(":{ENGINE_PORT}")) {
            tracing::debug!(node = %machine.name, %host, "engine is not on the usual port {ENGINE_PORT}");
        }
        let docker = support::connect_with_ssl(&machine.name, &host, Path::new(&certs))?;
        let order = ["DOCKER_TLS_VERIFY", "DOCKER_HOST", "DOCKER_CERT_PATH", "DOCKER_MACHINE_NAME"];
        let client_env = order.iter().filter_map(|k| var(k).map(|v| (k.to_string(), v))).collect();
        Ok(NodeEngine { docker, advertise_addr: ip, client_env })
    }

    /// Over SSH with the machine's recorded host key ([`ssh`]), not `docker-machine ssh`.
    async fn exec(&self, node: &str, argv: &[String]) -> Result<ExecOutput> {
        let out = self.remote(node).await?.exec(argv).await;
        // lab's probes fall back to a container when a command cannot run, and say nothing of
        // why: a refused host key shows here, with -v.
        out.inspect_err(|e| tracing::debug!(node, "{e}"))
    }

    /// OpenSSH to the machine's host-only address as docker-machine's user, checking the host
    /// key lab recorded ([`ssh`]). The trait has no room for an error: when the way in cannot
    /// be found (docker-machine fails, the machine is not running), it is logged with the
    /// node's name and `lab ssh` says the driver cannot open a shell.
    fn shell_command(&self, node: &str, args: &[String]) -> Option<Vec<String>> {
        let program = match self.found_program() {
            Ok(p) => p,
            Err(_) => {
                tracing::error!(node, "docker-machine is not on PATH");
                return None;
            }
        };
        match ssh::target(program, &self.known_hosts, node, &self.machine_name(node)) {
            Ok(t) => Some(t.openssh_command(args)),
            Err(e) => {
                tracing::error!("{e}");
                None
            }
        }
    }
}

/// Runs blocking SSH set-up (docker-machine runs, file writes) off the runtime's workers.
async fn blocking<T: Send + 'static>(node: &str, f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| Error::Node {
        node: node.into(),
        step: "set up SSH to it".into(),
        message: e.to_string(),
        hint: None,
        source: Some(Box::new(e)),
    })?
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A docker-machine that records when each create starts and ends.
    const FAKE: &str = r#"#!/bin/sh
d=$(dirname "$0")
case "$1" in
  --version) echo "docker-machine version 0.16.2, build bd45ab13" ;;
  ls) for f in "$d"/made/*; do
        [ -e "$f" ] && printf '%s\tRunning\ttcp://10.9.0.1:2376\t\n' "$(basename "$f")"
      done ;;
  create) for a; do name=$a; done
      echo "start $name" >>"$d/events"; sleep 0.3; echo "end $name" >>"$d/events"
      mkdir -p "$d/made"; touch "$d/made/$name" ;;
  ssh) echo "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhscHR4f root@$2" ;;
esac
exit 0
"#;

    fn driver(dir: &Path, concurrency: u32) -> VirtualBoxDriver {
        use std::os::unix::fs::PermissionsExt;
        let program = dir.join("docker-machine");
        std::fs::write(&program, FAKE).unwrap();
        std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
        VirtualBoxDriver::new(DriverContext {
            driver: "virtualbox".into(),
            cluster: ClusterName::parse("t", "test").unwrap(),
            state_dir: dir.join("state"),
            cache_dir: dir.join("cache"),
            config: serde_json::json!({ "docker_machine": program, "concurrency": concurrency }),
            config_source: "test".into(),
            force: false,
        })
        .unwrap()
    }

    fn spec(name: &str) -> NodeSpec {
        let role = if name.starts_with("manager") { lab_core::Role::Manager } else { lab_core::Role::Worker };
        NodeSpec { name: name.into(), role, labels: Default::default() }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn the_first_create_runs_alone_then_a_few_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let d = driver(dir.path(), 2);
        let specs: Vec<NodeSpec> = ["manager", "worker1", "worker2", "worker3"].iter().map(|n| spec(n)).collect();
        let (a, b, c, e) =
            tokio::join!(d.create(&specs[0]), d.create(&specs[1]), d.create(&specs[2]), d.create(&specs[3]));
        for m in [a, b, c, e] {
            assert_eq!(m.unwrap().state, MachineState::Running);
        }
        let events = std::fs::read_to_string(dir.path().join("events")).unwrap();
        let lines: Vec<&str> = events.lines().collect();
        assert_eq!(lines.len(), 8, "{events}");
        let first = lines[0].strip_prefix("start ").unwrap();
        assert_eq!(lines[1], format!("end {first}"), "the first create did not run alone:\n{events}");
        let (mut running, mut most) = (0, 0);
        for l in &lines {
            running += if l.starts_with("start") { 1 } else { -1 };
            most = most.max(running);
        }
        assert!(most <= 2, "more than 2 creates at once:\n{events}");
        // Existing machines are returned, not made again.
        d.create(&specs[1]).await.unwrap();
        assert_eq!(std::fs::read_to_string(dir.path().join("events")).unwrap().lines().count(), 8);
        // Each new machine's host key is recorded under its name, right after its create.
        let known = std::fs::read_to_string(dir.path().join("state/virtualbox/known_hosts")).unwrap();
        let mut names: Vec<&str> = known.lines().filter_map(|l| l.split_whitespace().next()).collect();
        names.sort();
        assert_eq!(names, ["t-manager", "t-worker1", "t-worker2", "t-worker3"], "{known}");
    }

    #[tokio::test]
    async fn observe_keeps_to_the_clusters_machines() {
        let dir = tempfile::tempdir().unwrap();
        let d = driver(dir.path(), 1);
        std::fs::create_dir_all(dir.path().join("made")).unwrap();
        for m in ["t-manager", "t-worker1", "t-x-worker1", "tt-worker1", "default"] {
            std::fs::write(dir.path().join("made").join(m), "").unwrap();
        }
        let names: Vec<_> = d.observe().await.unwrap().into_iter().map(|m| (m.name, m.role, m.address)).collect();
        assert_eq!(
            names,
            [
                ("manager".to_string(), Some(lab_core::Role::Manager), Some("10.9.0.1".to_string())),
                ("worker1".to_string(), Some(lab_core::Role::Worker), Some("10.9.0.1".to_string())),
            ]
        );
    }

    /// Issue 7, item 5: one `Error` from `docker-machine ls` (a transient VBoxManage failure)
    /// does not make a machine broken; two looks in a row do.
    #[tokio::test]
    async fn a_machine_seen_broken_once_is_not_broken() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let d = driver(dir.path(), 1);
        // Replace the fake: `ls` says Error for as many calls as the file `errors` holds lines.
        let fake = r#"#!/bin/sh
d=$(dirname "$0")
case "$1" in
  --version) echo "docker-machine version 0.16.2, build bd45ab13" ;;
  ls) echo x >>"$d/ls-calls"
      if [ -s "$d/errors" ]; then sed -i 1d "$d/errors"; state=Error; else state=Running; fi
      printf 't-worker1\t%s\ttcp://10.9.0.1:2376\t\n' "$state" ;;
esac
exit 0
"#;
        let program = dir.path().join("docker-machine");
        std::fs::write(&program, fake).unwrap();
        std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(dir.path().join("errors"), "1\n").unwrap();
        let seen = d.observe().await.unwrap();
        assert!(
            !seen.iter().any(|m| matches!(m.state, MachineState::Broken(_))),
            "one Error made the machine broken: {seen:?}"
        );
        std::fs::write(dir.path().join("errors"), "1\n2\n").unwrap();
        let seen = d.observe().await.unwrap();
        assert!(matches!(seen[0].state, MachineState::Broken(_)), "two Errors in a row: {seen:?}");
    }
}
