//! An example third-party lab driver: `static`, for Docker engines that already exist.
//!
//! It manages no machines. Its `[drivers.static]` table maps lab's node names to engines the
//! user runs themselves, and the driver hands those engines to lab's core, which forms the
//! swarm and deploys the registry on them exactly as it does for the built-in drivers:
//!
//! ```toml
//! [drivers.static]
//! engines = { manager = "unix:///var/run/docker.sock", worker1 = "tcp://10.0.0.12:2375" }
//! advertise = { manager = "10.0.0.11" }  # required for unix:// engines
//! ```
//!
//! It is small on purpose: it shows the whole surface a plugin touches (the [`Driver`] trait,
//! a config table, registration) without a backend's own complexity.
#![deny(missing_docs)]

use std::collections::BTreeMap;

// Everything a driver needs comes from lab-core's driver module, bollard and async_trait
// included, so the plugin cannot pin a bollard that differs from lab's.
use lab_core::driver::bollard::{self, Docker};
use lab_core::driver::{
    async_trait, Capabilities, Driver, DriverContext, DriverOption, Error, Machine, MachineState, NodeEngine, NodeSpec,
    OptionKind, Result,
};
use serde::Deserialize;

/// The name users pass to `--driver`.
pub const NAME: &str = "static";

/// Seconds bollard waits on one request to an engine (the docker driver's value).
const TIMEOUT_SECS: u64 = 120;

/// `[drivers.static]` in lab.toml (or `LAB_DRIVERS__STATIC__ENGINES__<NODE>=<url>`).
///
/// Nothing here is secret, so `Debug` is derived; a driver whose table holds a password or a
/// key should write `Debug` by hand so that it never reaches a log.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticConfig {
    /// Node name (`manager`, `worker1`, ...) to engine URL: `unix:///path`, `tcp://host:port`
    /// or `http://host:port`.
    pub engines: BTreeMap<String, String>,
    /// Node name to the address the node advertises to the swarm (no port). Defaults to the
    /// host of a `tcp://` or `http://` URL; required for `unix://` engines.
    #[serde(default)]
    pub advertise: BTreeMap<String, String>,
    /// Seconds one request to an engine may take (`--static-timeout`); default 120.
    #[serde(default)]
    pub timeout: Option<u64>,
}

#[derive(Debug)]
struct Engine {
    url: String,
    advertise: String,
}

/// The driver for one cluster: its configured engines by node name.
#[derive(Debug)]
pub struct StaticDriver {
    engines: BTreeMap<String, Engine>,
    /// `lab.toml: [drivers.static]`, for errors found after construction.
    table: String,
    /// Seconds one request to an engine may take.
    timeout: u64,
}

impl StaticDriver {
    /// Makes the driver from its context. Every configuration mistake is reported here, as bad
    /// input (exit 2), before lab does anything.
    pub fn new(ctx: DriverContext) -> Result<Self> {
        let config: StaticConfig = ctx.parse_config()?;
        let table = format!("{}: [drivers.{}]", ctx.config_source, ctx.driver);
        let bad = |field: &str, message: String| Error::input(format!("{table} {field}"), message);
        if let Some(node) = config.advertise.keys().find(|n| !config.engines.contains_key(*n)) {
            return Err(bad(&format!("advertise.{node}"), format!("node {node:?} has no entry in engines")));
        }
        let mut engines = BTreeMap::new();
        let mut owner: BTreeMap<&str, &str> = BTreeMap::new();
        for (node, url) in &config.engines {
            let field = format!("engines.{node}");
            // One engine is one swarm node: a second node on it would only rejoin the same swarm.
            if let Some(other) = owner.insert(url, node) {
                return Err(bad(&field, format!("{url:?} is node {other:?}'s engine already")));
            }
            let host = match url.split_once("://") {
                Some(("unix", path)) if path.starts_with('/') => None,
                Some(("tcp" | "http", rest)) => {
                    Some(host_of(rest).ok_or_else(|| bad(&field, format!("{url:?} has no host")))?)
                }
                _ => {
                    return Err(bad(
                        &field,
                        format!("{url:?} is not unix:///path, tcp://host:port or http://host:port"),
                    ))
                }
            };
            let advertise = match (config.advertise.get(node), host) {
                (Some(a), _) if a.trim().is_empty() => {
                    return Err(bad(&format!("advertise.{node}"), "is empty".into()))
                }
                (Some(a), _) => a.clone(),
                (None, Some(h)) => h,
                (None, None) => {
                    return Err(bad(
                        &format!("advertise.{node}"),
                        format!("required for the socket {url:?}: the address other nodes reach this one at"),
                    ))
                }
            };
            engines.insert(node.clone(), Engine { url: url.clone(), advertise });
        }
        Ok(StaticDriver { engines, table, timeout: config.timeout.unwrap_or(TIMEOUT_SECS) })
    }

    /// [`StaticDriver::new`], boxed, for registration.
    pub fn boxed(ctx: DriverContext) -> Result<Box<dyn Driver>> {
        Ok(Box::new(Self::new(ctx)?))
    }

    fn machine(&self, node: &str) -> Option<Machine> {
        let engine = self.engines.get(node)?;
        Some(Machine {
            name: node.to_string(),
            // The config has no roles of its own; the core knows each node's from the topology.
            role: None,
            state: MachineState::Running,
            address: Some(engine.advertise.clone()),
        })
    }

    fn unconfigured(&self, node: &str, what: &str) -> Error {
        Error::Unsupported {
            driver: NAME.into(),
            message: format!("cannot {what} node {node:?}: it has no entry in [drivers.{NAME}] engines"),
        }
    }
}

/// The host of `host:port/...`, keeping an IPv6 literal's brackets.
fn host_of(rest: &str) -> Option<String> {
    let authority = rest.split('/').next().unwrap_or_default();
    let host = match authority.rsplit_once(':') {
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host,
        _ => authority,
    };
    (!host.is_empty()).then(|| host.to_string())
}

#[async_trait]
impl Driver for StaticDriver {
    fn capabilities(&self) -> Capabilities {
        // The engines are the user's: lab may use them but never makes, starts or removes them.
        Capabilities::none()
    }

    /// Every node of the topology must have an engine; checked before anything is changed.
    async fn preflight(&self, nodes: &[NodeSpec]) -> Result<()> {
        let missing: Vec<_> =
            nodes.iter().filter(|n| !self.engines.contains_key(&n.name)).map(|n| n.name.as_str()).collect();
        if missing.is_empty() {
            return Ok(());
        }
        Err(Error::input(
            format!("{} engines", self.table),
            format!("no engine for node(s) {}; add one per node, or ask for fewer nodes", missing.join(", ")),
        ))
    }

    /// The configured engines, all "running": whether one answers is not the driver's to say.
    /// The core probes each engine with a bounded timeout and treats a silent one as not ready.
    async fn observe(&self) -> Result<Vec<Machine>> {
        Ok(self.engines.keys().filter_map(|n| self.machine(n)).collect())
    }

    /// Nothing to create: a configured node exists already and is returned as it is.
    async fn create(&self, node: &NodeSpec) -> Result<Machine> {
        self.machine(&node.name).ok_or_else(|| self.unconfigured(&node.name, "create"))
    }

    // No `start`, `destroy` or `exec`: the engines are the user's, and a URL reaches an
    // engine, not the host under it. The trait's defaults answer "unsupported", as they must
    // for what the capabilities above do not claim (`lab driver-test static` checks it), and
    // the capabilities tell the core not to ask.

    async fn engine(&self, machine: &Machine) -> Result<NodeEngine> {
        let engine = self.engines.get(&machine.name).ok_or_else(|| self.unconfigured(&machine.name, "reach"))?;
        let connected = match engine.url.strip_prefix("unix://") {
            Some(path) => Docker::connect_with_unix(path, self.timeout, bollard::API_DEFAULT_VERSION),
            None => Docker::connect_with_http(&engine.url, self.timeout, bollard::API_DEFAULT_VERSION),
        };
        let docker = connected.map_err(|e| Error::engine(&machine.name, format!("connect to {}", engine.url), e))?;
        // The docker CLI spells plain-HTTP engines tcp://.
        let docker_host = match engine.url.strip_prefix("http://") {
            Some(rest) => format!("tcp://{rest}"),
            None => engine.url.clone(),
        };
        Ok(NodeEngine {
            docker,
            advertise_addr: engine.advertise.clone(),
            client_env: vec![("DOCKER_HOST".into(), docker_host)],
        })
    }
}

/// The settings of `[drivers.static]`. With a flag, an option appears in `lab up --help`,
/// is recorded for the cluster, and is refused for clusters of other drivers: no CLI code.
const OPTIONS: &[DriverOption] = &[
    DriverOption::new("engines", OptionKind::String, "node name to engine URL (a table; lab.toml only)"),
    DriverOption::new("advertise", OptionKind::String, "node name to the address it advertises (a table)"),
    DriverOption::new("timeout", OptionKind::Integer, "seconds one request to an engine may take (120)")
        .flag("static-timeout"),
];

lab_core::register_driver!(
    NAME,
    "Docker engines that already exist, listed in [drivers.static] engines (example plugin)",
    StaticDriver::boxed,
    options = OPTIONS
);

#[cfg(test)]
mod tests {
    use super::*;
    use lab_core::ClusterName;
    use serde_json::{json, Value};

    // Link lab's built-in drivers, as the `lab-example` binary does through `lab_cli::run`.
    use lab_cli as _;

    fn make(config: Value) -> Result<Box<dyn Driver>> {
        let ctx = DriverContext {
            driver: NAME.into(),
            cluster: ClusterName::parse("lab", "test").unwrap(),
            state_dir: std::env::temp_dir(),
            cache_dir: std::env::temp_dir(),
            config,
            config_source: "lab.toml".into(),
            force: false,
        };
        (lab_core::driver::lookup(NAME).unwrap().factory)(ctx)
    }

    fn input_error(config: Value) -> String {
        let err = make(config).err().expect("config is rejected");
        assert_eq!(err.exit_code(), 2, "{err}");
        err.to_string()
    }

    #[test]
    fn registry_has_builtins_and_this_driver() {
        let registry = lab_core::driver::registry().unwrap();
        for name in ["docker", "ssh", "virtualbox", NAME] {
            assert!(registry.contains_key(name), "{name} is not in {:?}", registry.keys());
        }
    }

    #[test]
    fn bad_config_is_bad_input() {
        let msg = input_error(json!({ "engines": {}, "engnies": {} }));
        assert!(msg.starts_with("lab.toml: [drivers.static]") && msg.contains("engnies"), "{msg}");
        assert!(input_error(Value::Null).contains("engines"));
        assert!(input_error(json!({ "engines": { "manager": "ftp://x" } })).contains("engines.manager"));
        assert!(input_error(json!({ "engines": { "manager": "unix:///s" } })).contains("advertise.manager"));
        let twice = json!({ "engines": { "manager": "tcp://a:2375", "worker1": "tcp://a:2375" } });
        assert!(input_error(twice).contains("already"));
    }

    #[tokio::test]
    async fn hands_back_configured_engines_only() {
        let driver = make(json!({
            "engines": { "manager": "unix:///var/run/docker.sock", "worker1": "http://10.0.0.12:2375" },
            "advertise": { "manager": "10.0.0.11" },
        }))
        .unwrap();
        let machines = driver.observe().await.unwrap();
        let summary: Vec<_> = machines.iter().map(|m| (m.name.as_str(), m.role, m.address.as_deref())).collect();
        assert_eq!(summary, [("manager", None, Some("10.0.0.11")), ("worker1", None, Some("10.0.0.12"))]);
        assert!(machines.iter().all(|m| m.state == MachineState::Running));

        let engine = driver.engine(&machines[1]).await.unwrap();
        assert_eq!(engine.advertise_addr, "10.0.0.12");
        assert_eq!(engine.client_env, [("DOCKER_HOST".to_string(), "tcp://10.0.0.12:2375".to_string())]);

        let worker2 = NodeSpec { name: "worker2".into(), role: lab_core::Role::Worker, labels: Default::default() };
        assert!(matches!(driver.create(&worker2).await, Err(Error::Unsupported { .. })));
        let err = driver.preflight(std::slice::from_ref(&worker2)).await.unwrap_err();
        assert!(err.exit_code() == 2 && err.to_string().contains("worker2"), "{err}");
        assert!(matches!(driver.destroy("manager").await, Err(Error::Unsupported { .. })));
        assert!(matches!(driver.exec("manager", &[]).await, Err(Error::Unsupported { .. })));
    }
}
