//! The `Driver` implementation over SSH: hosts come from the hosts file, exist already, and
//! are never created or deleted; lab only reaches their Docker engines.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use bollard::Docker;
use futures_util::future::join_all;
use lab_core::{
    Capabilities, Driver, DriverContext, Error, ExecOutput, Machine, MachineState, NodeEngine, NodeSpec, Result,
};
use lab_ssh::{known_hosts, Endpoint, Hints, KnownHostsFiles, Remote, Target};

use crate::config::SshConfig;
use crate::hosts::{self, Environment, Host};

/// What to check when a host cannot be reached, by the stage that failed.
const HINTS: Hints = Hints {
    connect: Some("check the address and port in the hosts file, and that sshd runs there"),
    auth: Some("set identity_file for the host in the hosts file, or add its key to ssh-agent (ssh-add)"),
};

/// Existing hosts over SSH.
pub struct SshDriver {
    config: SshConfig,
    hosts: Vec<Host>,
    remotes: HashMap<String, Remote>,
}

/// What preflight learnt of one host.
struct HostReport {
    version: String,
    engine_id: String,
}

impl SshDriver {
    /// Makes the driver from its context: reads and validates the hosts file (bad input,
    /// exit 2, before any connection).
    pub fn new(ctx: DriverContext) -> Result<Self> {
        let config: SshConfig = ctx.parse_config()?;
        let path = config.hosts.clone().ok_or_else(|| {
            Error::input(
                "--hosts",
                "the ssh driver needs a hosts file: pass --hosts FILE, or set hosts = \"FILE\" in lab.toml",
            )
        })?;
        for (key, v) in [("connect_timeout", config.connect_timeout), ("operation_timeout", config.operation_timeout)] {
            if v == 0 || v > 3600 {
                return Err(Error::input(
                    format!("{}: [drivers.ssh] {key}", ctx.config_source),
                    format!("{v} is not a number of seconds from 1 to 3600"),
                ));
            }
        }
        let env = Environment::from_process();
        let hosts = hosts::load(&path, &env)?;
        let known_hosts = match (&config.known_hosts, &env.home) {
            (Some(k), _) => k.clone(),
            (None, Some(home)) => home.join(".ssh/known_hosts"),
            (None, None) => {
                return Err(Error::input("--known-hosts", "not given, and $HOME is not set to find ~/.ssh/known_hosts"))
            }
        };
        let global = match &config.global_known_hosts {
            Some(g) => vec![g.clone()],
            None => known_hosts::GLOBAL_FILES.iter().map(PathBuf::from).collect(),
        };
        let known_hosts = KnownHostsFiles { user: known_hosts, global };
        let sockets = ctx.state_dir.join("ssh");
        let remotes = hosts
            .iter()
            .map(|h| {
                let endpoint = Endpoint {
                    name: h.name.clone(),
                    address: h.address.clone(),
                    port: h.port,
                    user: h.user.clone(),
                    identity_file: h.identity_file.clone(),
                    host_key_alias: None,
                };
                let t = Target::new(
                    endpoint,
                    known_hosts.clone(),
                    config.host_key_policy,
                    Duration::from_secs(config.connect_timeout),
                    Duration::from_secs(config.operation_timeout),
                    env.home.clone(),
                );
                (h.name.clone(), Remote::new(t, &sockets, HINTS))
            })
            .collect();
        Ok(SshDriver { config, hosts, remotes })
    }

    /// [`SshDriver::new`], boxed, for registration.
    pub fn boxed(ctx: DriverContext) -> Result<Box<dyn Driver>> {
        Ok(Box::new(Self::new(ctx)?))
    }

    fn host(&self, node: &str) -> Result<&Host> {
        self.hosts
            .iter()
            .find(|h| h.name == node)
            .ok_or_else(|| Error::node(node, "find the host", "it is not in the hosts file"))
    }

    fn remote(&self, node: &str) -> Result<&Remote> {
        self.remotes.get(node).ok_or_else(|| Error::node(node, "find the host", "it is not in the hosts file"))
    }

    fn machine(&self, h: &Host) -> Machine {
        Machine {
            name: h.name.clone(),
            role: Some(h.role),
            state: MachineState::Running,
            address: Some(h.advertise_address.clone()),
        }
    }

    fn docker(&self, node: &str) -> Result<Docker> {
        self.remote(node)?.docker()
    }

    /// Reachable, host key, authentication, the Docker socket, then the engine's version and
    /// ID, each bounded. What the engine runs is the core's business, not this driver's.
    async fn check_host(&self, h: &Host) -> Result<HostReport> {
        self.remote(&h.name)?.reach_engine().await?;
        let step = "ask its Docker engine for its version and ID";
        let timeout = Duration::from_secs(self.config.operation_timeout);
        let docker = self.docker(&h.name)?.with_timeout(timeout);
        let docker = tokio::time::timeout(timeout, docker.negotiate_version())
            .await
            .map_err(|_| Error::node(&h.name, step, format!("no answer within {}s", timeout.as_secs())))?
            .map_err(|e| Error::engine(&h.name, step, e))?;
        let version = docker.version().await.map_err(|e| Error::engine(&h.name, step, e))?;
        let info = docker.info().await.map_err(|e| Error::engine(&h.name, step, e))?;
        Ok(HostReport {
            version: version.version.unwrap_or_else(|| "unknown".into()),
            engine_id: info.id.unwrap_or_default(),
        })
    }

    /// Bad input if two entries of the hosts file reach one Docker engine (one machine
    /// listed under two names or addresses): it would become two nodes of one swarm.
    fn refuse_duplicates(&self, reports: &[(&Host, HostReport)]) -> Result<()> {
        let mut seen: HashMap<&str, &Host> = HashMap::new();
        for (h, r) in reports {
            if r.engine_id.is_empty() {
                continue;
            }
            if let Some(first) = seen.insert(&r.engine_id, h) {
                let file = self.config.hosts.as_deref().map(|p| p.display().to_string()).unwrap_or_default();
                return Err(Error::input(
                    format!("{file}: hosts \"{}\" and \"{}\"", first.name, h.name),
                    format!(
                        "{} ({}) and {} ({}) are the same machine: both reach the Docker engine with ID {}; \
                         list each machine once",
                        first.name,
                        known_hosts::pattern(&first.address, first.port),
                        h.name,
                        known_hosts::pattern(&h.address, h.port),
                        r.engine_id
                    ),
                ));
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Driver for SshDriver {
    fn capabilities(&self) -> Capabilities {
        Capabilities::none().shell(true).exec(true)
    }

    /// Checks every host at once and reports every failing one together.
    async fn preflight(&self, _nodes: &[NodeSpec]) -> Result<()> {
        let results = join_all(self.hosts.iter().map(|h| async move { (h, self.check_host(h).await) })).await;
        let mut failures: Vec<Error> = Vec::new();
        let mut reports = Vec::new();
        for (h, r) in results {
            match r {
                Ok(rep) => reports.push((h, rep)),
                Err(e) => failures.push(e),
            }
        }
        // Before anything changes: one machine listed twice is the user's mistake.
        self.refuse_duplicates(&reports)?;
        for (h, r) in &reports {
            tracing::info!(host = %h.name, "{}: reachable, authenticated as {}, Docker {}", h.name, h.user, r.version);
        }
        match failures.len() {
            0 => Ok(()),
            1 => Err(failures.remove(0)),
            n => {
                let lines: Vec<String> = failures
                    .iter()
                    .map(|e| match e.hint() {
                        Some(hint) => format!("  {e} ({hint})"),
                        None => format!("  {e}"),
                    })
                    .collect();
                Err(Error::op(
                    format!("check the hosts in the hosts file: {n} of {} cannot be used", self.hosts.len()),
                    format!("\n{}", lines.join("\n")),
                ))
            }
        }
    }

    /// Every host in the file, as Running: lab cannot start or stop them, and a host that
    /// does not answer shows as an engine that does not answer (in `status`, and as a bounded
    /// wait naming the cause in `up`). Reporting it Broken would plan its destruction, and
    /// Stopped a start, neither of which an SSH host allows.
    async fn observe(&self) -> Result<Vec<Machine>> {
        Ok(self.hosts.iter().map(|h| self.machine(h)).collect())
    }

    /// The host exists already: returned if it answers on its SSH port.
    async fn create(&self, node: &NodeSpec) -> Result<Machine> {
        self.remote(&node.name)?.blocking(|t| t.tcp().map(|_| ())).await?;
        Ok(self.machine(self.host(&node.name)?))
    }

    /// Not a capability: lab never starts a host it was given (and never asks, since the
    /// capability is not claimed). Answering with the host when it happened to be up broke
    /// the contract `lab driver-test` checks: what is not claimed answers unsupported.
    async fn start(&self, node: &str) -> Result<Machine> {
        Err(Error::Unsupported {
            driver: "ssh".into(),
            message: format!("cannot start {node}: lab never starts hosts it was given; start it yourself"),
        })
    }

    async fn destroy(&self, node: &str) -> Result<()> {
        Err(Error::Unsupported {
            driver: "ssh".into(),
            message: format!(
                "lab never deletes hosts it was given ({node}); `lab down` only undoes what lab set up on them"
            ),
        })
    }

    async fn engine(&self, machine: &Machine) -> Result<NodeEngine> {
        let h = self.host(&machine.name)?;
        Ok(NodeEngine {
            docker: self.docker(&machine.name)?,
            advertise_addr: h.advertise_address.clone(),
            client_env: vec![("DOCKER_HOST".into(), h.docker_host())],
        })
    }

    async fn exec(&self, node: &str, argv: &[String]) -> Result<ExecOutput> {
        self.remote(node)?.exec(argv).await
    }

    fn fixed_nodes(&self) -> Option<Vec<NodeSpec>> {
        Some(
            self.hosts
                .iter()
                .map(|h| NodeSpec { name: h.name.clone(), role: h.role, labels: h.labels.clone() })
                .collect(),
        )
    }

    /// OpenSSH with the same known-hosts files and policy lab uses
    /// ([`Target::openssh_command`]).
    fn shell_command(&self, node: &str, args: &[String]) -> Option<Vec<String>> {
        Some(self.remotes.get(node)?.target().openssh_command(args))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lab_core::{ClusterName, Role};

    fn driver(dir: &std::path::Path, config: serde_json::Value) -> Result<SshDriver> {
        SshDriver::new(DriverContext {
            driver: "ssh".into(),
            cluster: ClusterName::parse("t", "test").unwrap(),
            state_dir: dir.join("state"),
            cache_dir: dir.join("cache"),
            config,
            config_source: "lab.toml".into(),
            force: false,
        })
    }

    const HOSTS: &str =
        "[defaults]\nuser = \"root\"\n[[hosts]]\nname = \"w\"\naddress = \"10.0.0.2\"\nrole = \"worker\"\n\
                         [[hosts]]\nname = \"m\"\naddress = \"10.0.0.1\"\nrole = \"manager\"\nport = 2222\n";

    #[test]
    fn no_hosts_file_is_bad_input() {
        let dir = tempfile::tempdir().unwrap();
        let err = driver(dir.path(), serde_json::Value::Null).err().expect("refused");
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().starts_with("--hosts: "), "{err}");
        let err = driver(dir.path(), serde_json::json!({"hosts": dir.path().join("absent.toml")})).err().unwrap();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("absent.toml"), "{err}");
        let err = driver(dir.path(), serde_json::json!({"hosts": "h.toml", "colour": 1})).err().unwrap();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("colour"), "{err}");
    }

    #[test]
    fn hosts_become_nodes_machines_and_ssh_commands() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hosts.toml");
        std::fs::write(&file, HOSTS).unwrap();
        let d = driver(
            dir.path(),
            serde_json::json!({"hosts": file, "known_hosts": "/k/known", "host_key_policy": "strict", "connect_timeout": 3}),
        )
        .unwrap();
        let nodes = d.fixed_nodes().unwrap();
        assert_eq!(
            nodes.iter().map(|n| (n.name.as_str(), n.role)).collect::<Vec<_>>(),
            [("w", Role::Worker), ("m", Role::Manager)]
        );
        let cmd = d.shell_command("m", &["docker".into(), "ps; reboot".into()]).unwrap();
        assert_eq!(
            cmd,
            [
                "ssh",
                "-p",
                "2222",
                "-o",
                "UserKnownHostsFile=/k/known",
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                "ConnectTimeout=3",
                "-l",
                "root",
                "--",
                "10.0.0.1",
                "docker",
                "'ps; reboot'"
            ]
        );
        assert!(d.shell_command("x", &[]).is_none());
        let g = driver(dir.path(), serde_json::json!({"hosts": file, "global_known_hosts": "/g/known"})).unwrap();
        let cmd = g.shell_command("w", &[]).unwrap();
        let at = cmd.iter().position(|a| a == "GlobalKnownHostsFile=/g/known").expect("global file passed to ssh");
        assert_eq!(cmd[at - 1], "-o");
        assert!(at < cmd.iter().position(|a| a == "--").unwrap());
        assert_eq!(d.capabilities(), Capabilities::none().shell(true).exec(true));
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let machines = rt.block_on(d.observe()).unwrap();
        assert_eq!(machines.len(), 2);
        assert!(machines.iter().all(|m| m.state == MachineState::Running));
        let engine = rt.block_on(d.engine(&machines[1])).unwrap();
        assert_eq!(engine.advertise_addr, "10.0.0.1");
        assert_eq!(engine.client_env, [("DOCKER_HOST".to_string(), "ssh://root@10.0.0.1:2222".to_string())]);
    }

    fn report(engine_id: &str) -> HostReport {
        HostReport { version: "20.10".into(), engine_id: engine_id.into() }
    }

    #[test]
    fn one_engine_reached_through_two_entries_is_bad_input_naming_both() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hosts.toml");
        std::fs::write(&file, HOSTS).unwrap();
        let d = driver(dir.path(), serde_json::json!({"hosts": file})).unwrap();
        let (w, m) = (&d.hosts[0], &d.hosts[1]);
        assert!(d.refuse_duplicates(&[(w, report("A")), (m, report("B"))]).is_ok());
        let err = d.refuse_duplicates(&[(w, report("A")), (m, report("A"))]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        let text = err.to_string();
        assert!(text.contains("hosts.toml") && text.contains("\"w\"") && text.contains("\"m\""), "{text}");
        assert!(text.contains("10.0.0.2") && text.contains("[10.0.0.1]:2222") && text.contains("ID A"), "{text}");
    }

    #[test]
    fn zero_timeouts_are_bad_input() {
        let dir = tempfile::tempdir().unwrap();
        let err = driver(dir.path(), serde_json::json!({"hosts": "h.toml", "connect_timeout": 0})).err().unwrap();
        assert!(err.to_string().contains("connect_timeout"), "{err}");
    }
}
