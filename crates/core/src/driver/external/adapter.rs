//! [`ExternalDriver`]: a [`Driver`] that speaks the protocol to a driver's process, checking
//! every answer (names, environment variables, versions) before lab acts on it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bollard::Docker;
use serde_json::{json, Map, Value};
use tokio::process::Child;
use tokio::sync::Mutex;

use super::discover::plain_name;
use super::discover::Program;
use super::process::shell_name;
use super::process::truncate;
use super::process::Conn;
use super::process::Fault;
use super::process::Identity;
use super::process::Tail;
use super::wire::driver_table;
use super::wire::DriverOption;
use super::wire::Hello;
use super::wire::Limits;
use super::wire::WireEngine;
use super::wire::WireError;
use super::wire::WireExec;
use super::wire::WireMachine;
use super::ENGINE_TIMEOUT_SECS;
use super::PROTOCOL_VERSION;
use super::STDERR_QUOTED;
use crate::driver::DriverContext;
use crate::driver::{Capabilities, Driver, ExecOutput, Machine, NodeEngine};
use crate::error::{Error, Result};
use crate::topology::{check_node_name, NodeSpec};
use crate::wait::{Look, Wait};

/// A driver that is a program speaking `docs/driver-protocol.md`.
pub struct ExternalDriver {
    pub(super) id: Identity,
    pub(super) hello: Hello,
    pub(super) limits: Limits,
    pub(super) fixed: Option<Vec<NodeSpec>>,
    pub(super) conn: Mutex<Conn>,
    pub(super) tail: Tail,
    /// `ssh -L` tunnels to `ssh://` engines, killed with the driver.
    pub(super) tunnels: Mutex<BTreeMap<String, (Child, PathBuf)>>,
    pub(super) state_dir: Option<PathBuf>,
}

impl std::fmt::Debug for ExternalDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExternalDriver").field("name", &self.id.name).field("path", &self.id.path).finish()
    }
}

impl ExternalDriver {
    /// Starts `id`'s program and exchanges the handshake within `limits.timeout`.
    pub(super) async fn handshake(id: Identity, hello: Value, limits: Limits) -> Result<ExternalDriver> {
        let tail: Tail = Arc::default();
        let mut conn = Conn::spawn(&id, tail.clone())?;
        let answer = conn.exchange(&hello, limits.timeout).await;
        let mut d = ExternalDriver {
            id,
            hello: Hello {
                lab_protocol: PROTOCOL_VERSION,
                description: String::new(),
                capabilities: Default::default(),
                options: vec![],
            },
            limits,
            fixed: None,
            conn: Mutex::new(conn),
            tail,
            tunnels: Mutex::default(),
            state_dir: None,
        };
        let answer = match answer {
            Ok(a) => a,
            Err(fault) => return Err(d.fault("handshake", None, fault).await),
        };
        // The version first: a driver of another version may answer in another shape.
        let version = answer.get("ok").and_then(|ok| ok.get("lab_protocol")).or_else(|| answer.get("lab_protocol"));
        match version.map(|v| v.as_u64()) {
            Some(Some(PROTOCOL_VERSION)) => {}
            Some(other) => {
                let theirs =
                    other.map(|v| v.to_string()).unwrap_or_else(|| version.map(Value::to_string).unwrap_or_default());
                return Err(Error::Unsupported {
                    driver: d.id.name.clone(),
                    message: format!(
                        "{} speaks lab driver protocol {theirs}, but this lab speaks protocol {PROTOCOL_VERSION}; upgrade the one that is older",
                        d.id.path.display()
                    ),
                });
            }
            None if answer.get("error").is_some() => {}
            None => {
                return Err(d.broken("handshake", None, "answered the handshake without \"lab_protocol\"".into()).await)
            }
        }
        let ok = d.outcome("handshake", None, answer).await?;
        d.hello = d.decode("handshake", ok)?;
        if let Some(o) =
            d.hello.options.iter().find(|o| !plain_name(&o.name) || o.name.chars().any(|c| c.is_ascii_uppercase()))
        {
            return Err(d
                .broken("handshake", None, format!("declares an option with an invalid name {:?}", o.name))
                .await);
        }
        Ok(d)
    }

    /// The driver's handshake answer: description, capabilities, options.
    pub fn hello(&self) -> &Hello {
        &self.hello
    }

    /// The options the driver declared.
    pub fn options(&self) -> &[DriverOption] {
        &self.hello.options
    }

    /// `"; its stderr ended with: a | b"`, or nothing when it wrote nothing.
    async fn stderr_tail(&self) -> String {
        // Let the stderr reader catch up with a process that just died.
        {
            let mut conn = self.conn.lock().await;
            // (A finished JoinHandle must not be polled again.)
            if conn.dead.is_some() && !conn.stderr_task.is_finished() {
                let _ = tokio::time::timeout(Duration::from_millis(500), &mut conn.stderr_task).await;
            }
        }
        let t = self.tail.lock().unwrap_or_else(|e| e.into_inner());
        if t.is_empty() {
            return "; it wrote nothing on stderr".into();
        }
        let last: Vec<&str> = t.iter().skip(t.len().saturating_sub(STDERR_QUOTED)).map(String::as_str).collect();
        format!("; its stderr ended with: {}", last.join(" | "))
    }

    async fn fault(&self, op: &str, node: Option<&str>, fault: Fault) -> Error {
        match fault {
            Fault::Timeout(d) => {
                let tail = self.stderr_tail().await;
                Error::Timeout {
                    node: node.map(str::to_string).unwrap_or_else(|| format!("driver {}", self.id.name)),
                    what: format!("{} to answer {op} (it was stopped)", self.id.label()),
                    secs: d.as_secs().max(1),
                    hint: Some(format!(
                        "raise [drivers.{}] {} if the driver needs longer{tail}",
                        self.id.name,
                        if self.long(op) { "create_timeout" } else { "timeout" }
                    )),
                    source: None,
                }
            }
            Fault::Broken(why) => self.broken(op, node, why).await,
        }
    }

    async fn broken(&self, op: &str, node: Option<&str>, why: String) -> Error {
        {
            let mut conn = self.conn.lock().await;
            let _ = conn.child.start_kill();
            conn.dead.get_or_insert_with(|| why.clone());
        }
        // `driver NAME (PATH): OP: what it did; its stderr ended with: ...`
        let message = format!("{why}{}", self.stderr_tail().await);
        match node {
            Some(n) => Error::node(n, format!("{}: {op}", self.id.label()), message),
            None => Error::op(format!("{}: {op}", self.id.label()), message),
        }
    }

    /// The `ok` value of an answer, or the error it carries, mapped.
    async fn outcome(&self, op: &str, node: Option<&str>, answer: Value) -> Result<Value> {
        let Value::Object(mut m) = answer else { unreachable!("exchange returns objects") };
        if let Some(e) = m.remove("error") {
            return match serde_json::from_value::<WireError>(e.clone()) {
                Ok(e) => Err(self.id.map_error(op, node, e)),
                Err(why) => Err(self
                    .broken(
                        op,
                        node,
                        format!(
                            "answered an error that does not follow the protocol ({why}): {}",
                            truncate(&e.to_string(), 200)
                        ),
                    )
                    .await),
            };
        }
        match m.remove("ok") {
            Some(v) => Ok(v),
            None => Err(self.broken(op, node, "answered with neither \"ok\" nor \"error\"".into()).await),
        }
    }

    pub(super) fn decode<T: serde::de::DeserializeOwned>(&self, op: &str, v: Value) -> Result<T> {
        serde_json::from_value(v.clone()).map_err(|e| {
            Error::op(
                format!("{}: {op}", self.id.label()),
                format!(
                    "answered something that does not follow the protocol ({e}): {}",
                    truncate(&v.to_string(), 200)
                ),
            )
        })
    }

    /// Node names the driver answered: held to lab's own rule ([`check_node_name`]), since
    /// they become file names (`{node}.sock`) and container names; anything else is a broken
    /// protocol naming the driver.
    pub(super) fn check_names<'a>(&self, op: &str, mut names: impl Iterator<Item = &'a str>) -> Result<()> {
        match names.find_map(|n| check_node_name(n).err().map(|why| (n, why))) {
            None => Ok(()),
            Some((name, why)) => Err(Error::op(
                format!("{}: {op}", self.id.label()),
                format!("answered the node name {:?}, which does not follow the protocol: {why}", truncate(name, 100)),
            )),
        }
    }

    fn long(&self, op: &str) -> bool {
        matches!(op, "create" | "start" | "destroy" | "teardown")
    }

    /// One request: `{"id": N, "op": op, ...params}`, answered by `{"id": N, "ok": ...}` or
    /// `{"id": N, "error": {...}}` within the op's limit (counted once the driver is free).
    pub(super) async fn call(&self, op: &str, node: Option<&str>, params: Value, limit: Duration) -> Result<Value> {
        let answer = {
            let mut conn = self.conn.lock().await;
            conn.next_id += 1;
            let id = conn.next_id;
            let mut message = Map::new();
            message.insert("id".into(), json!(id));
            message.insert("op".into(), json!(op));
            if let Value::Object(p) = params {
                message.extend(p);
            }
            match conn.exchange(&Value::Object(message), limit).await {
                Ok(a) if a.get("id").and_then(Value::as_u64) == Some(id) => Ok(a),
                Ok(a) => Err(Fault::Broken(format!(
                    "answered request {id} with id {}",
                    a.get("id").map(Value::to_string).unwrap_or_else(|| "(none)".into())
                ))),
                Err(f) => Err(f),
            }
        };
        match answer {
            Ok(a) => self.outcome(op, node, a).await,
            Err(f) => Err(self.fault(op, node, f).await),
        }
    }

    fn unsupported(&self, what: &str) -> Error {
        Error::Unsupported { driver: self.id.name.clone(), message: format!("cannot {what}: its handshake says so") }
    }

    /// A local socket relayed to the Docker socket of `ssh://[user@]host[:port]` by the system's
    /// `ssh` (its config, agent and known hosts apply; `BatchMode`, so never a prompt).
    ///
    /// This is one of lab's two SSH tunnels on purpose; the other is `lab-ssh`'s
    /// (`crates/ssh/src/tunnel.rs`), which the ssh, qemu and virtualbox drivers use. An
    /// external driver's `ssh://` engine means what it means to `docker -H ssh://...`: the
    /// user's own `ssh`, with their `~/.ssh/config` (aliases, jump hosts, `IdentityFile`),
    /// agent and known hosts, none of which libssh2 reads. `lab-ssh`'s tunnel instead takes
    /// the host, user and key from `hosts.toml` (or the VM the driver made) and checks host
    /// keys against lab's own known-hosts file, which is what those drivers need. Nor can
    /// lab-core use `lab-ssh`: that crate depends on this one.
    async fn ssh_tunnel(&self, node: &str, url: &str) -> Result<PathBuf> {
        let step = "connect to its Docker engine over ssh";
        if let Some((_, sock)) = self.tunnels.lock().await.get(node) {
            return Ok(sock.clone());
        }
        let rest = url.strip_prefix("ssh://").unwrap_or(url);
        let (authority, remote) = match rest.split_once('/') {
            Some((a, p)) => (a, format!("/{p}")),
            None => (rest, "/var/run/docker.sock".to_string()),
        };
        let (dest, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.is_empty() && !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()) => (h, Some(p)),
            _ => (authority, None),
        };
        let dest = dest.trim_start_matches('[').trim_end_matches(']');
        if dest.is_empty() || dest.starts_with('-') || dest.chars().any(char::is_whitespace) {
            return Err(Error::node(
                node,
                step,
                format!("{} answered engine {url:?}, which names no host", self.id.label()),
            ));
        }
        let dir = self.state_dir.clone().unwrap_or_else(std::env::temp_dir).join("external-ssh");
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::node(node, step, format!("create {}: {e}", dir.display())).with_source(e))?;
        let sock = dir.join(format!("{node}.sock"));
        let _ = std::fs::remove_file(&sock);
        let mut cmd = tokio::process::Command::new("ssh");
        cmd.args(["-nNT", "-o", "BatchMode=yes", "-o", "ExitOnForwardFailure=yes", "-o", "StreamLocalBindUnlink=yes"])
            .arg("-L")
            .arg(format!("{}:{remote}", sock.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(p) = port {
            cmd.args(["-p", p]);
        }
        cmd.arg("--").arg(dest);
        let mut child =
            cmd.spawn().map_err(|e| Error::node(node, step, format!("cannot run ssh: {e}")).with_source(e))?;
        let what = format!("ssh {dest} to forward the Docker socket");
        Wait::new(node, what, self.limits.timeout)
            .every(Duration::from_millis(100))
            .poll(|| {
                // The exit is seen here; its stderr is read, bounded, in the future.
                let seen = if sock.exists() {
                    Ok(Look::Done(()))
                } else {
                    match child.try_wait() {
                        Ok(Some(status)) => Err((status, child.stderr.take())),
                        _ => Ok(Look::not_yet(format!("no socket at {} yet", sock.display()))),
                    }
                };
                async move {
                    match seen {
                        Ok(look) => look,
                        Err((status, stderr)) => {
                            let mut err = String::new();
                            if let Some(mut e) = stderr {
                                use tokio::io::AsyncReadExt;
                                let _ = tokio::time::timeout(Duration::from_secs(1), e.read_to_string(&mut err)).await;
                            }
                            Look::Fail(Error::node(node, step, format!("ssh {dest} exited ({status}): {}", err.trim())))
                        }
                    }
                }
            })
            .await?;
        self.tunnels.lock().await.insert(node.to_string(), (child, sock.clone()));
        Ok(sock)
    }
}

#[async_trait]
impl Driver for ExternalDriver {
    fn capabilities(&self) -> Capabilities {
        self.hello.capabilities.into()
    }

    async fn preflight(&self, nodes: &[NodeSpec]) -> Result<()> {
        match self.call("preflight", None, json!({ "nodes": nodes }), self.limits.timeout).await {
            Ok(_) | Err(Error::Unsupported { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn observe(&self) -> Result<Vec<Machine>> {
        let v = self.call("observe", None, json!({}), self.limits.timeout).await?;
        let machines: Vec<WireMachine> = self.decode("observe", v)?;
        self.check_names("observe", machines.iter().map(|m| m.name.as_str()))?;
        Ok(machines.into_iter().map(Machine::from).collect())
    }

    async fn create(&self, node: &NodeSpec) -> Result<Machine> {
        let v = self.call("create", Some(&node.name), json!({ "node": node }), self.limits.create_timeout).await?;
        let m: WireMachine = self.decode("create", v)?;
        self.check_names("create", std::iter::once(m.name.as_str()))?;
        Ok(m.into())
    }

    async fn start(&self, node: &str) -> Result<Machine> {
        let v = self.call("start", Some(node), json!({ "node": node }), self.limits.create_timeout).await?;
        let m: WireMachine = self.decode("start", v)?;
        self.check_names("start", std::iter::once(m.name.as_str()))?;
        Ok(m.into())
    }

    async fn destroy(&self, node: &str) -> Result<()> {
        self.call("destroy", Some(node), json!({ "node": node }), self.limits.create_timeout).await.map(drop)
    }

    async fn teardown(&self) -> Result<()> {
        match self.call("teardown", None, json!({}), self.limits.create_timeout).await {
            Ok(_) | Err(Error::Unsupported { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn engine(&self, machine: &Machine) -> Result<NodeEngine> {
        let node = machine.name.as_str();
        let v = self
            .call("engine", Some(node), json!({ "machine": WireMachine::from(machine) }), self.limits.timeout)
            .await?;
        let e: WireEngine = self.decode("engine", v)?;
        let step = "connect to its Docker engine";
        let bad =
            |why: &str| Error::node(node, step, format!("{} answered engine {:?}: {why}", self.id.label(), e.host));
        if e.advertise_addr.trim().is_empty() {
            return Err(bad("its advertise_addr is empty"));
        }
        // `lab env` prints these into `export NAME='VALUE'` lines that users `eval`: a name is
        // printed as it is, so it must be a plain shell name (values are quoted there).
        if let Some((k, why)) = e.env.iter().flatten().find_map(|(k, v)| {
            if !shell_name(k) {
                Some((k, "is not a shell variable name ([A-Za-z_][A-Za-z0-9_]*)"))
            } else if v.contains('\0') {
                Some((k, "has a NUL in its value, which no environment can hold"))
            } else {
                None
            }
        }) {
            return Err(Error::node(
                node,
                format!("{}: engine", self.id.label()),
                format!("answered the environment variable {:?}, which {why}", truncate(k, 100)),
            ));
        }
        let mut env = vec![("DOCKER_HOST".to_string(), e.host.clone())];
        let connected = match e.host.split_once("://") {
            Some(("unix", path)) if path.starts_with('/') => {
                Docker::connect_with_unix(path, ENGINE_TIMEOUT_SECS, bollard::API_DEFAULT_VERSION)
            }
            Some(("tcp", rest)) if !rest.is_empty() => match &e.tls {
                None => Docker::connect_with_http(&e.host, ENGINE_TIMEOUT_SECS, bollard::API_DEFAULT_VERSION),
                Some(tls) => {
                    for f in [&tls.ca, &tls.cert, &tls.key] {
                        if !f.is_file() {
                            return Err(bad(&format!("TLS file {} does not exist", f.display())));
                        }
                    }
                    // The docker CLI wants the three files in one directory, named as below.
                    let dir = tls.cert.parent().map(Path::to_path_buf).unwrap_or_default();
                    if [(&tls.ca, "ca.pem"), (&tls.cert, "cert.pem"), (&tls.key, "key.pem")].iter().all(|(f, n)| {
                        f.parent() == Some(dir.as_path()) && f.file_name() == Some(std::ffi::OsStr::new(n))
                    }) {
                        env.push(("DOCKER_TLS_VERIFY".into(), "1".into()));
                        env.push(("DOCKER_CERT_PATH".into(), dir.display().to_string()));
                    }
                    Docker::connect_with_ssl(
                        &e.host,
                        &tls.key,
                        &tls.cert,
                        &tls.ca,
                        ENGINE_TIMEOUT_SECS,
                        bollard::API_DEFAULT_VERSION,
                    )
                }
            },
            Some(("ssh", rest)) if !rest.is_empty() => {
                let sock = self.ssh_tunnel(node, &e.host).await?;
                Docker::connect_with_unix(&sock.to_string_lossy(), ENGINE_TIMEOUT_SECS, bollard::API_DEFAULT_VERSION)
            }
            _ => return Err(bad("not unix:///path, tcp://host:port or ssh://[user@]host[:port]")),
        };
        let docker = connected.map_err(|err| Error::engine(node, step, err))?;
        Ok(NodeEngine {
            docker,
            advertise_addr: e.advertise_addr.clone(),
            client_env: match e.env {
                Some(map) => map.into_iter().collect(),
                None => env,
            },
        })
    }

    async fn exec(&self, node: &str, argv: &[String]) -> Result<ExecOutput> {
        if !self.hello.capabilities.exec {
            return Err(self.unsupported("run commands on nodes"));
        }
        let v = self.call("exec", Some(node), json!({ "node": node, "argv": argv }), self.limits.timeout).await?;
        let out: WireExec = self.decode("exec", v)?;
        Ok(ExecOutput { status: out.status, stdout: out.stdout, stderr: out.stderr })
    }

    fn fixed_nodes(&self) -> Option<Vec<NodeSpec>> {
        self.fixed.clone()
    }

    /// `shell_command` is synchronous in the trait, so the request is made by blocking this
    /// worker thread on the runtime (possible only on a multi-threaded runtime, which the CLI
    /// uses); elsewhere, or when the driver fails, lab says it cannot open a shell.
    fn shell_command(&self, node: &str, args: &[String]) -> Option<Vec<String>> {
        use tokio::runtime::{Handle, RuntimeFlavor};
        if !self.hello.capabilities.shell {
            return None;
        }
        let handle = Handle::try_current().ok().filter(|h| h.runtime_flavor() == RuntimeFlavor::MultiThread)?;
        let params = json!({ "node": node, "args": args });
        let answer = tokio::task::block_in_place(|| {
            handle.block_on(self.call("shell_command", Some(node), params, self.limits.timeout))
        });
        match answer.and_then(|v| self.decode::<Option<Vec<String>>>("shell_command", v)) {
            Ok(Some(argv)) if !argv.is_empty() => Some(argv),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!("{e}");
                None
            }
        }
    }
}

impl Program {
    fn identity(&self, source: &str) -> Identity {
        Identity {
            name: self.name.clone(),
            path: self.path.clone(),
            table: format!("{source}: [drivers.{}]", self.name),
        }
    }

    /// Starts the driver for one cluster: the handshake (which sends the driver its table,
    /// without lab's own keys) and the `fixed_nodes` request. Bad configuration the driver
    /// reports is bad input naming its table.
    pub async fn start(&self, ctx: DriverContext) -> Result<ExternalDriver> {
        let limits = Limits::from_config(&self.name, &ctx.config, &ctx.config_source)?;
        let hello = json!({
            "lab_protocol": PROTOCOL_VERSION,
            "driver": self.name,
            "cluster": ctx.cluster.as_str(),
            "state_dir": ctx.state_dir,
            "cache_dir": ctx.cache_dir,
            "config": driver_table(&ctx.config),
        });
        let mut d = ExternalDriver::handshake(self.identity(&ctx.config_source), hello, limits).await?;
        d.state_dir = Some(ctx.state_dir);
        d.fixed = match d.call("fixed_nodes", None, json!({}), d.limits.timeout).await {
            Ok(Value::Null) => None,
            Ok(v) => {
                let nodes = d.decode::<Vec<NodeSpec>>("fixed_nodes", v)?;
                d.check_names("fixed_nodes", nodes.iter().map(|n| n.name.as_str()))?;
                Some(nodes)
            }
            Err(Error::Unsupported { .. }) => None,
            Err(e) => return Err(e),
        };
        Ok(d)
    }

    /// The driver's handshake answer without a cluster (`"cluster": null`), for `lab drivers`.
    pub async fn describe(&self, timeout: Duration) -> Result<Hello> {
        let hello = json!({
            "lab_protocol": PROTOCOL_VERSION,
            "driver": self.name,
            "cluster": null,
            "state_dir": null,
            "cache_dir": null,
            "config": {},
        });
        let limits = Limits { timeout, create_timeout: timeout };
        Ok(ExternalDriver::handshake(self.identity("lab drivers"), hello, limits).await?.hello)
    }
}

#[cfg(test)]
pub(super) mod tests {
    //! The protocol against tiny `#!/bin/sh` drivers written by each test: framing, versions,
    //! timeouts, dead and lying drivers, and how answered errors map to lab's.

    use crate::driver::DriverContext;
    use crate::driver::MachineState;
    use crate::topology::Role;

    use crate::driver::external::{Program, MAX_LINE};
    use std::time::Instant;

    use super::*;
    use crate::topology::ClusterName;

    /// Writes `body` as an executable `lab-driver-fake` in a fresh directory.
    pub(crate) fn script(body: &str) -> (tempfile::TempDir, Program) {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lab-driver-fake");
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        (dir, Program { name: "fake".into(), path, from_config: false })
    }

    pub(crate) fn ctx(dir: &Path, config: Value) -> DriverContext {
        DriverContext {
            driver: "fake".into(),
            cluster: ClusterName::parse("lab", "test").unwrap(),
            state_dir: dir.join("state"),
            cache_dir: dir.join("cache"),
            config,
            config_source: "lab.toml".into(),
            force: false,
        }
    }

    pub(crate) const HELLO: &str = r#"read hello
    echo '{"ok":{"lab_protocol":1,"description":"a fake","capabilities":{"exec":true,"shell":false},"options":[{"name":"engines","type":"string","help":"h","repeatable":true}]}}'"#;

    /// A driver that answers the handshake, then each request by the shell `case` arms given,
    /// matched against the request line; `$id` is the request's id.
    pub(crate) fn driver(arms: &str) -> (tempfile::TempDir, Program) {
        script(&format!(
            r#"{HELLO}
    while read line; do
      id=$(printf '%s' "$line" | sed -n 's/.*"id":\([0-9]*\).*/\1/p')
      case "$line" in
    {arms}
    *'"op":"fixed_nodes"'*) echo "{{\"id\":$id,\"error\":{{\"kind\":\"unsupported\",\"message\":\"no fixed nodes\"}}}}" ;;
    *) echo "{{\"id\":$id,\"error\":{{\"kind\":\"unsupported\",\"message\":\"unknown request\"}}}}" ;;
      esac
    done"#
        ))
    }

    pub(crate) async fn start(p: &Program, dir: &Path, config: Value) -> Result<ExternalDriver> {
        p.start(ctx(dir, config)).await
    }

    pub(crate) fn fast() -> Value {
        json!({ "timeout": 1, "create_timeout": 1 })
    }

    #[tokio::test]
    async fn handshake_carries_capabilities_options_and_only_the_drivers_keys() {
        let (dir, p) = script(&format!(
            r#"read hello
    printf '%s\n' "$hello" > "$(dirname "$0")/hello.json"
    {}"#,
            HELLO.lines().nth(1).unwrap()
        ));
        // The handshake is its only exchange before fixed_nodes: no loop, so fixed_nodes
        // fails. describe() needs only the handshake.
        let hello = p.describe(Duration::from_secs(5)).await.unwrap();
        assert_eq!(hello.description, "a fake");
        assert!(hello.capabilities.exec && !hello.capabilities.create);
        assert_eq!(hello.options[0].name, "engines");
        assert!(hello.options[0].repeatable && !hello.options[0].secret);
        let sent: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join("hello.json")).unwrap()).unwrap();
        assert_eq!(sent["lab_protocol"], 1);
        assert_eq!(sent["cluster"], Value::Null, "describe has no cluster");

        let (dir, p) = driver("");
        std::fs::write(
            &p.path,
            std::fs::read_to_string(&p.path).unwrap().replacen(
                "read hello",
                "read hello; printf '%s\\n' \"$hello\" > \"$(dirname \"$0\")/hello.json\"",
                1,
            ),
        )
        .unwrap();
        let config = json!({ "command": p.path, "timeout": 5, "engines": { "manager": "unix:///x.sock" } });
        let d = start(&p, dir.path(), config).await.unwrap();
        let sent: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join("hello.json")).unwrap()).unwrap();
        assert_eq!(sent["cluster"], "lab");
        assert_eq!(sent["config"], json!({ "engines": { "manager": "unix:///x.sock" } }), "lab's keys are not sent");
        assert_eq!(sent["state_dir"], json!(dir.path().join("state")));
        assert!(d.capabilities().exec && !d.capabilities().destroy);
        assert_eq!(d.fixed_nodes(), None, "unsupported fixed_nodes is None");
    }

    #[tokio::test]
    async fn garbage_is_an_error_naming_the_driver_and_quoting_its_stderr() {
        let (dir, p) = script("read hello\necho 'about to fail' >&2\necho 'hello, I am not JSON'\nsleep 5");
        let e = start(&p, dir.path(), fast()).await.unwrap_err();
        let m = e.to_string();
        assert_eq!(e.exit_code(), 1, "{m}");
        for needle in ["driver fake", "lab-driver-fake", "not JSON", "hello, I am not JSON", "about to fail"] {
            assert!(m.contains(needle), "{m:?} lacks {needle:?}");
        }
    }

    /// Issue 18, item 5: an answer is read with a bound. A line past 1 MiB fails the driver
    /// at once, naming it, whether or not the line ever ends (one 1 GiB line used to take
    /// lab to a gigabyte of memory before the timeout); a long answer under the bound is fine.
    #[tokio::test]
    async fn a_line_past_the_bound_fails_the_driver_at_once() {
        let limits = json!({ "timeout": 20 });
        for tail in ["; echo", "; sleep 30"] {
            let (dir, p) = script(&format!("read hello\n(head -c 67108864 /dev/zero | tr '\\0' x{tail})"));
            let t = Instant::now();
            let e = start(&p, dir.path(), limits.clone()).await.unwrap_err();
            assert!(t.elapsed() < Duration::from_secs(10), "took {:?}: {e}", t.elapsed());
            let m = e.to_string();
            assert_eq!(e.exit_code(), 1, "{m}");
            for needle in ["driver fake", "lab-driver-fake", "handshake", "longer than 1 MiB"] {
                assert!(m.contains(needle), "{m:?} lacks {needle:?}");
            }
            assert!(m.len() < 2000, "the message quotes the line: {} bytes", m.len());
        }
        // An answer just under the bound (JSON may end in blanks) is read as usual.
        let (dir, p) = script(&format!(
            r#"read hello
    printf '%s' '{{"ok":{{"lab_protocol":1,"description":"a fake"}}}}'
    printf '%{}s\n' ''
    exec sleep 30"#,
            MAX_LINE - 1000
        ));
        let hello = p.describe(Duration::from_secs(10)).await.unwrap();
        assert_eq!(hello.description, "a fake");
        drop(dir);
    }

    #[tokio::test]
    async fn a_driver_that_exits_is_an_error_with_its_status_and_stderr() {
        let (dir, p) = script("read hello\necho 'cannot find my config' >&2\nexit 3");
        let e = start(&p, dir.path(), fast()).await.unwrap_err();
        let m = e.to_string();
        for needle in ["driver fake", "exited with status 3", "cannot find my config"] {
            assert!(m.contains(needle), "{m:?} lacks {needle:?}");
        }

        // Dying in the middle of a session: the request fails naming the node, and the driver
        // is not asked again.
        let (dir, p) = driver(r#"    *'"op":"start"'*) echo 'start: out of memory' >&2; exit 4 ;;"#);
        let d = start(&p, dir.path(), fast()).await.unwrap();
        let e = d.start("worker1").await.unwrap_err();
        let m = e.to_string();
        for needle in ["worker1", "driver fake", "exited with status 4", "start: out of memory"] {
            assert!(m.contains(needle), "{m:?} lacks {needle:?}");
        }
        let e = d.observe().await.unwrap_err().to_string();
        assert!(e.contains("cannot be used any more") && e.contains("status 4"), "{e}");
    }

    #[tokio::test]
    async fn a_driver_that_never_answers_times_out_fast() {
        let (dir, p) = script("read hello\necho 'thinking' >&2\nexec sleep 60");
        let t = Instant::now();
        let e = start(&p, dir.path(), fast()).await.unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(5), "took {:?}", t.elapsed());
        assert!(matches!(e, Error::Timeout { secs: 1, .. }), "{e:?}");
        let m = e.to_string();
        assert!(m.contains("driver fake") && m.contains("handshake") && m.contains("timed out after 1s"), "{m}");
        assert!(e.hint().unwrap().contains("thinking") && e.hint().unwrap().contains("timeout"), "{e:?}");

        // A request that hangs: bounded by the same limit, and the process is stopped.
        let (dir, p) = driver(r#"    *'"op":"observe"'*) exec sleep 60 ;;"#);
        let d = start(&p, dir.path(), fast()).await.unwrap();
        let t = Instant::now();
        let e = d.observe().await.unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(5), "took {:?}", t.elapsed());
        assert!(e.to_string().contains("to answer observe"), "{e}");
    }

    #[tokio::test]
    async fn another_protocol_version_is_refused_naming_both() {
        let (dir, p) = script(
            r#"read hello
    echo '{"ok":{"lab_protocol":2,"description":"from the future","capabilities":{}}}'"#,
        );
        let e = start(&p, dir.path(), fast()).await.unwrap_err();
        assert!(matches!(e, Error::Unsupported { .. }), "{e:?}");
        let m = e.to_string();
        for needle in ["driver fake", "lab-driver-fake", "protocol 2", "protocol 1"] {
            assert!(m.contains(needle), "{m:?} lacks {needle:?}");
        }
        // Also when the driver refuses first, saying which version it speaks.
        let (dir, p) = script(
            r#"read hello
    echo '{"lab_protocol":0,"error":{"kind":"unsupported","message":"I speak 0"}}'"#,
        );
        let m = start(&p, dir.path(), fast()).await.unwrap_err().to_string();
        assert!(m.contains("protocol 0") && m.contains("protocol 1"), "{m}");
    }

    #[tokio::test]
    async fn answered_errors_map_to_lab_errors() {
        // input at the handshake: bad input (exit 2) naming the table and the field.
        let (dir, p) = script(
            r#"read hello
    echo '{"error":{"kind":"input","field":"engines.manager","message":"\"ftp://x\" is not unix:///path"}}'"#,
        );
        let e = start(&p, dir.path(), fast()).await.unwrap_err();
        assert_eq!(e.exit_code(), 2, "{e}");
        assert_eq!(e.to_string(), r#"lab.toml: [drivers.fake] engines.manager: "ftp://x" is not unix:///path"#);

        let (dir, p) = driver(
            r#"    *'"op":"create"'*) echo "{\"id\":$id,\"error\":{\"kind\":\"failed\",\"message\":\"disk full\"}}" ;;
    *'"op":"destroy"'*) echo "{\"id\":$id,\"error\":{\"kind\":\"failed\",\"node\":\"other\",\"message\":\"busy\"}}" ;;
    *'"op":"preflight"'*) echo "{\"id\":$id,\"error\":{\"kind\":\"input\",\"message\":\"no engine for worker1\"}}" ;;
    *'"op":"start"'*) echo "{\"id\":$id,\"error\":{\"kind\":\"weird\",\"message\":\"odd\"}}" ;;
    *'"op":"teardown"'*) echo "{\"id\":$id,\"ok\":null}" ;;"#,
        );
        let d = start(&p, dir.path(), fast()).await.unwrap();
        let node = NodeSpec { name: "worker1".into(), role: Role::Worker, labels: Default::default() };
        let e = d.create(&node).await.unwrap_err();
        assert!(matches!(&e, Error::Node { node, .. } if node == "worker1"), "{e:?}");
        assert_eq!(e.exit_code(), 1);
        assert_eq!(e.to_string(), "worker1: driver fake: create: disk full");
        let e = d.destroy("worker1").await.unwrap_err();
        assert!(e.to_string().starts_with("other: "), "the driver's node wins: {e}");
        let e = d.preflight(std::slice::from_ref(&node)).await.unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert_eq!(e.to_string(), "lab.toml: [drivers.fake]: no engine for worker1");
        let e = d.start("worker1").await.unwrap_err();
        assert!(e.exit_code() == 1 && e.to_string().contains("odd"), "{e}");
        // unsupported: Error::Unsupported (observe is not in the arms); optional calls succeed.
        assert!(matches!(d.observe().await, Err(Error::Unsupported { .. })));
        d.teardown().await.unwrap();
    }

    #[tokio::test]
    async fn requests_and_answers_round_trip() {
        let (dir, p) = driver(
            r#"    *'"op":"observe"'*) echo "{\"id\":$id,\"ok\":[{\"name\":\"manager\",\"state\":\"running\",\"address\":\"10.0.0.2\"},{\"name\":\"w\",\"role\":\"worker\",\"state\":\"broken\",\"reason\":\"half made\"}]}" ;;
    *'"op":"exec"'*) echo "{\"id\":$id,\"ok\":{\"status\":7,\"stdout\":\"$(printf '%s' "$line" | sed 's/"/\\"/g')\",\"stderr\":\"e\"}}" ;;
    *'"op":"engine"'*) echo "{\"id\":$id,\"ok\":{\"host\":\"unix://$(dirname "$0")/docker.sock\",\"advertise_addr\":\"10.0.0.2\"}}" ;;
    *'"op":"create"'*) echo "{\"id\":999,\"ok\":null}" ;;"#,
        );
        let d = start(&p, dir.path(), fast()).await.unwrap();
        let ms = d.observe().await.unwrap();
        assert_eq!(ms[0].role, None, "a missing role is left to lab's topology");
        assert_eq!(ms[1].role, Some(Role::Worker));
        assert_eq!(ms[0].state, MachineState::Running);
        assert_eq!(ms[0].address.as_deref(), Some("10.0.0.2"));
        assert_eq!(ms[1].state, MachineState::Broken("half made".into()));

        // argv goes as a JSON array, never a shell string.
        let argv: Vec<String> = vec!["echo".into(), "a b; rm -rf /".into()];
        let out = d.exec("manager", &argv).await.unwrap();
        assert_eq!(out.status, Some(7));
        let request: Value = serde_json::from_str(&out.stdout).unwrap();
        assert_eq!(request["op"], "exec");
        assert_eq!(request["node"], "manager");
        assert_eq!(request["argv"], json!(["echo", "a b; rm -rf /"]));

        let sock = dir.path().join("docker.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let e = d.engine(&ms[0]).await.unwrap();
        assert_eq!(e.advertise_addr, "10.0.0.2");
        assert_eq!(e.client_env, vec![("DOCKER_HOST".to_string(), format!("unix://{}", sock.display()))]);

        // An answer to another request is a broken protocol: an error, and the driver stops.
        let node = NodeSpec { name: "w".into(), role: Role::Worker, labels: Default::default() };
        let m = d.create(&node).await.unwrap_err().to_string();
        assert!(m.contains("answered request") && m.contains("999"), "{m}");
    }

    /// Issue 18, item 10: node names a driver answers become file names (`{node}.sock`), so
    /// they are held to lab's own rule; `../` and the like are a protocol error naming the
    /// driver and the name, from `fixed_nodes`, `observe`, `create` and `start`.
    #[tokio::test]
    async fn node_names_from_the_driver_are_checked() {
        let (dir, p) = driver(
            r#"    *'"op":"observe"'*) echo "{\"id\":$id,\"ok\":[{\"name\":\"manager\",\"state\":\"running\"},{\"name\":\"../../evil\",\"state\":\"running\"}]}" ;;
    *'"op":"create"'*) echo "{\"id\":$id,\"ok\":{\"name\":\"a/b\",\"state\":\"running\"}}" ;;
    *'"op":"start"'*) echo "{\"id\":$id,\"ok\":{\"name\":\"\",\"state\":\"running\"}}" ;;"#,
        );
        let d = start(&p, dir.path(), fast()).await.unwrap();
        let e = d.observe().await.unwrap_err();
        let m = e.to_string();
        for needle in ["driver fake", "lab-driver-fake", "observe", "\"../../evil\""] {
            assert!(m.contains(needle), "{m:?} lacks {needle:?}");
        }
        let node = NodeSpec { name: "worker1".into(), role: Role::Worker, labels: Default::default() };
        let m = d.create(&node).await.unwrap_err().to_string();
        assert!(m.contains("driver fake") && m.contains("create") && m.contains("\"a/b\""), "{m}");
        let m = d.start("worker1").await.unwrap_err().to_string();
        assert!(m.contains("driver fake") && m.contains("start") && m.contains("\"\""), "{m}");

        let (dir, p) = driver(
            r#"    *'"op":"fixed_nodes"'*) echo "{\"id\":$id,\"ok\":[{\"name\":\"../x\",\"role\":\"manager\",\"labels\":{}}]}" ;;"#,
        );
        let m = start(&p, dir.path(), fast()).await.unwrap_err().to_string();
        assert!(m.contains("driver fake") && m.contains("fixed_nodes") && m.contains("\"../x\""), "{m}");
    }

    /// Issue 18, item 8: the variables an engine's `env` names end up in `export NAME=...`
    /// lines that users `eval`; a name that is not `[A-Za-z_][A-Za-z0-9_]*` (or a value with a
    /// NUL, which no environment can hold) is a protocol error naming the driver and the name.
    #[tokio::test]
    async fn engine_env_names_must_be_shell_names() {
        for (name, value) in [
            ("X=1;touch PWNED;Y", "v"),
            ("", "v"),
            ("1X", "v"),
            ("A-B", "v"),
            ("ÉTÉ", "v"),
            ("A B", "v"),
            ("OK_NAME", "a\0b"),
        ] {
            let env = serde_json::to_string(&json!({ name: value })).unwrap().replace('"', "\\\"");
            let (dir, p) = driver(&format!(
                r#"    *'"op":"engine"'*) echo "{{\"id\":$id,\"ok\":{{\"host\":\"tcp://127.0.0.1:1\",\"advertise_addr\":\"127.0.0.1\",\"env\":{env}}}}}" ;;"#
            ));
            let d = start(&p, dir.path(), fast()).await.unwrap();
            let m = Machine {
                name: "manager".into(),
                role: Some(Role::Manager),
                state: MachineState::Running,
                address: None,
            };
            let e = d.engine(&m).await.map(|e| e.client_env).unwrap_err().to_string();
            let shown = serde_json::to_string(name).unwrap();
            for needle in ["manager", "driver fake", "lab-driver-fake", "engine", "variable", &shown] {
                assert!(e.contains(needle), "{name:?}: {e:?} lacks {needle:?}");
            }
        }
        // Plain names, and any text as a value, are fine.
        let (dir, p) = driver(
            r#"    *'"op":"engine"'*) echo "{\"id\":$id,\"ok\":{\"host\":\"tcp://127.0.0.1:1\",\"advertise_addr\":\"127.0.0.1\",\"env\":{\"_A1\":\"it's; \$(x)\"}}}" ;;"#,
        );
        let d = start(&p, dir.path(), fast()).await.unwrap();
        let m = Machine { name: "manager".into(), role: None, state: MachineState::Running, address: None };
        assert_eq!(d.engine(&m).await.unwrap().client_env, vec![("_A1".to_string(), "it's; $(x)".to_string())]);
    }

    /// `shell_command` is synchronous in the trait: on the CLI's multi-threaded runtime it asks
    /// the driver; a driver without the capability is not asked.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shell_command_asks_the_driver() {
        let (dir, p) =
            driver(r#"    *'"op":"shell_command"'*) echo "{\"id\":$id,\"ok\":[\"ssh\",\"-t\",\"root@node\"]}" ;;"#);
        let d = start(&p, dir.path(), fast()).await.unwrap();
        assert_eq!(d.shell_command("manager", &[]), None, "no shell capability, not asked");
        std::fs::write(
            &p.path,
            std::fs::read_to_string(&p.path).unwrap().replace(r#""shell":false"#, r#""shell":true"#),
        )
        .unwrap();
        let d = start(&p, dir.path(), fast()).await.unwrap();
        assert_eq!(d.shell_command("manager", &[]), Some(vec!["ssh".into(), "-t".into(), "root@node".into()]));
    }

    /// An `ssh://` engine is reached through the system's ssh; one that cannot be reached (a
    /// closed port on loopback) is an error naming the node and ssh's own words, not a hang.
    #[tokio::test]
    async fn an_ssh_engine_that_cannot_be_reached_is_an_error() {
        let (dir, p) = driver(
            r#"    *'"op":"engine"'*) echo "{\"id\":$id,\"ok\":{\"host\":\"ssh://nobody@127.0.0.1:1\",\"advertise_addr\":\"127.0.0.1\"}}" ;;"#,
        );
        let d = start(&p, dir.path(), json!({ "timeout": 10 })).await.unwrap();
        let m =
            Machine { name: "manager".into(), role: Some(Role::Manager), state: MachineState::Running, address: None };
        let t = Instant::now();
        let e = d.engine(&m).await.unwrap_err().to_string();
        assert!(t.elapsed() < Duration::from_secs(15), "took {:?}", t.elapsed());
        assert!(e.starts_with("manager: connect to its Docker engine over ssh: "), "{e}");
        assert!(e.contains("ssh nobody@127.0.0.1 exited") || e.contains("cannot run ssh"), "{e}");
    }

    #[tokio::test]
    async fn exec_is_not_asked_of_a_driver_without_the_capability() {
        let (dir, p) = driver("");
        std::fs::write(&p.path, std::fs::read_to_string(&p.path).unwrap().replace(r#""exec":true"#, r#""exec":false"#))
            .unwrap();
        let d = start(&p, dir.path(), fast()).await.unwrap();
        let e = d.exec("manager", &["true".into()]).await.unwrap_err();
        assert!(matches!(e, Error::Unsupported { .. }), "{e:?}");
    }

    #[tokio::test]
    async fn the_process_is_killed_when_the_driver_is_dropped() {
        let (dir, p) = driver("");
        std::fs::write(
            &p.path,
            std::fs::read_to_string(&p.path).unwrap().replacen(
                "read hello",
                "echo $$ > \"$(dirname \"$0\")/pid\"; read hello",
                1,
            ),
        )
        .unwrap();
        let d = start(&p, dir.path(), fast()).await.unwrap();
        let pid = std::fs::read_to_string(dir.path().join("pid")).unwrap().trim().to_string();
        let alive = || {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|s| !s.split(") ").nth(1).unwrap_or("").starts_with('Z'))
                .unwrap_or(false)
        };
        assert!(alive());
        drop(d);
        let gone =
            Wait::new("driver fake", "its process to end", Duration::from_secs(5)).every(Duration::from_millis(50));
        gone.holds("it is alive", || std::future::ready(!alive()))
            .await
            .unwrap_or_else(|e| panic!("driver process {pid} outlived the driver: {e}"));
    }
}
