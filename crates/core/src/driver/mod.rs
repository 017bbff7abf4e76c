//! The driver API: the one thing that differs between the docker, SSH and VirtualBox
//! backends (and third-party ones), and the only part of `lab-core` a driver needs.
//!
//! A driver makes machines, reports which exist, and hands back a way to reach each
//! machine's Docker engine and to run a command on it. It never touches the swarm or the
//! registry: the core does that, identically for every driver, through the engine the driver
//! returns. Drivers register with [`register_driver!`](crate::register_driver) and are found
//! by name with [`lookup`].
//!
//! This module is lab's stable surface for plugin authors, the way ripgrep keeps its
//! `Matcher` trait apart from what implements it: it re-exports what a driver needs
//! ([`bollard`], [`async_trait`], the error type), so a plugin depends on `lab-core` alone and
//! cannot pin a different bollard by accident. [`Capabilities`] is `#[non_exhaustive]` and
//! built with constructors, so a capability added later breaks no plugin, and the operations a
//! driver may not support ([`Driver::start`], [`Driver::destroy`], [`Driver::exec`]) answer
//! "unsupported" unless implemented. Everything else in `lab-core` serves the `lab` binary and
//! is hidden from the documentation.

pub use async_trait::async_trait;
pub use bollard;

pub use crate::error::{Error, Result};
pub use crate::topology::{ClusterName, NodeSpec, Role};

// The behaviour suite every driver must pass; `lab driver-test` runs it.
#[doc(hidden)]
pub mod conformance;
// Drivers that are programs, spoken to over the driver protocol.
#[doc(hidden)]
pub mod external;
// What several drivers share: per-role machine sizes, TLS to a machine's engine.
pub mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use serde::de::DeserializeOwned;
use serde::Serialize;

/// What a driver can do, and what the core does about what it cannot:
/// - without `create`, a missing node is an error saying the driver cannot make it (the
///   driver's `create` is still asked, and may answer with a machine that exists already);
/// - without `destroy`, the planner leaves machines alone and `down` only undoes the swarm
///   and the registry on them;
/// - without `start`, a stopped machine is an error saying so;
/// - without `shell`, `lab ssh` says the driver cannot open one;
/// - without `exec`, the core looks inside nodes with throwaway containers instead.
///
/// Built with [`Capabilities::none`] or [`Capabilities::all`] and the setters, never with a
/// struct literal, so that capabilities added later break no driver:
///
/// ```
/// let caps = lab_core::Capabilities::all().destroy(false).start(false);
/// assert!(caps.create && !caps.destroy);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Capabilities {
    /// The driver can create machines (the SSH driver cannot: its hosts exist already).
    pub create: bool,
    /// The driver can destroy machines (`down` removes them); otherwise `down` only leaves
    /// the swarm and removes what lab deployed.
    pub destroy: bool,
    /// The driver can start a stopped machine.
    pub start: bool,
    /// The driver can open an interactive shell on a node (`lab ssh`).
    pub shell: bool,
    /// [`Driver::exec`] runs commands on nodes. Then lab looks at a node from inside with a
    /// command (as the seed does with `docker-machine ssh`), not with a throwaway container,
    /// and needs no image on the node for that.
    pub exec: bool,
}

impl Capabilities {
    /// Nothing: a driver that only hands over engines that exist.
    pub const fn none() -> Self {
        Capabilities { create: false, destroy: false, start: false, shell: false, exec: false }
    }
    /// Everything.
    pub const fn all() -> Self {
        Capabilities { create: true, destroy: true, start: true, shell: true, exec: true }
    }
    /// Sets [`Capabilities::create`].
    pub const fn create(mut self, yes: bool) -> Self {
        self.create = yes;
        self
    }
    /// Sets [`Capabilities::destroy`].
    pub const fn destroy(mut self, yes: bool) -> Self {
        self.destroy = yes;
        self
    }
    /// Sets [`Capabilities::start`].
    pub const fn start(mut self, yes: bool) -> Self {
        self.start = yes;
        self
    }
    /// Sets [`Capabilities::shell`].
    pub const fn shell(mut self, yes: bool) -> Self {
        self.shell = yes;
        self
    }
    /// Sets [`Capabilities::exec`].
    pub const fn exec(mut self, yes: bool) -> Self {
        self.exec = yes;
        self
    }
}

/// How a machine is, as far as the driver knows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "state", content = "reason")]
pub enum MachineState {
    /// Running; its engine may still be starting.
    Running,
    /// Exists but is stopped: [`Driver::start`] brings it back.
    Stopped,
    /// Exists but is unusable (e.g. left half-made by a failed create): it is destroyed and
    /// created again.
    Broken(String),
}

/// An image `lab up` needs that it can neither find nor get.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MissingImage {
    /// The reference, as the settings give it.
    pub image: String,
    /// What it is for, and the setting that names it ("the node image (--node-image)").
    pub what: String,
    /// Why it cannot be had, in the engine's words.
    pub why: String,
    /// How to get it, or another one, for the user.
    pub how: String,
}

/// A machine the driver knows of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Machine {
    /// Node name within the cluster (`manager`, `worker1`, ...).
    pub name: String,
    /// The role it was made for, if the driver knows; the core takes the role from the
    /// desired topology for every node in it, so a driver never has to guess.
    pub role: Option<Role>,
    /// Its state.
    #[serde(flatten)]
    pub state: MachineState,
    /// The address other nodes reach it at (the swarm advertise address), when known.
    pub address: Option<String>,
}

/// The way to a node's Docker engine.
#[derive(Debug, Clone)]
pub struct NodeEngine {
    /// A bollard client for the engine; the core negotiates the API version.
    pub docker: bollard::Docker,
    /// The address the node advertises to the swarm (no port).
    pub advertise_addr: String,
    /// What `lab env` exports to point a docker client at this engine
    /// (e.g. `DOCKER_HOST=unix:///...`).
    pub client_env: Vec<(String, String)>,
}

/// What a command run on a node printed, and how it exited.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOutput {
    /// Exit status; `None` when the driver could not tell.
    pub status: Option<i64>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// What a driver is given when it is made: the cluster, where it may keep files, and its own
/// configuration table (`[drivers.<name>]` in `lab.toml`, `LAB_DRIVERS__<NAME>__*`, flags).
#[derive(Debug, Clone)]
pub struct DriverContext {
    /// The driver's registered name.
    pub driver: String,
    /// The cluster.
    pub cluster: ClusterName,
    /// A directory (0700) the driver may keep per-cluster files in.
    pub state_dir: PathBuf,
    /// A directory the driver may keep files in that outlive clusters (facts about the
    /// machine it runs on); the driver creates it (0700) when it needs it.
    pub cache_dir: PathBuf,
    /// The driver's configuration table.
    pub config: serde_json::Value,
    /// Where that table came from, for error messages (e.g. `lab.toml`).
    pub config_source: String,
    /// `--force` was given for this run (never remembered): the driver may go ahead with what
    /// it would otherwise refuse (the ssh driver takes over hosts in another swarm).
    pub force: bool,
}

impl DriverContext {
    /// Deserialises the driver's table into `T`. Errors are bad input (exit 2) and name the
    /// table, the field and the value. Use `#[serde(deny_unknown_fields)]` on `T`.
    pub fn parse_config<T: DeserializeOwned>(&self) -> Result<T> {
        let value = if self.config.is_null() { serde_json::json!({}) } else { self.config.clone() };
        serde_json::from_value(value)
            .map_err(|e| Error::input(format!("{}: [drivers.{}]", self.config_source, self.driver), e.to_string()))
    }
}

/// A backend that makes machines for a cluster.
///
/// Every method may be called again after an interruption, so each must be idempotent in the
/// way its documentation says. Methods are called concurrently for different nodes.
#[async_trait]
pub trait Driver: Send + Sync {
    /// What this driver supports.
    fn capabilities(&self) -> Capabilities;

    /// Checks, before anything is created, that the driver's configuration and the machine it
    /// runs on can work (a binary on PATH, a hosts file that parses). Bad configuration is
    /// [`Error::Input`]. The default does nothing.
    async fn preflight(&self, _nodes: &[NodeSpec]) -> Result<()> {
        Ok(())
    }

    /// The images the driver needs to make machines (the docker driver's node image) that it
    /// can neither find nor get (a pull is allowed, and nothing else may change), each with how
    /// to get it. `lab up` asks only when its plan makes a machine, after [`Driver::preflight`]
    /// and before anything is made, so that every missing image is named at once. The default:
    /// none.
    async fn missing_images(&self) -> Result<Vec<MissingImage>> {
        Ok(Vec::new())
    }

    /// Every machine that exists for this cluster, whatever its state. Machines that do not
    /// exist are simply absent. Must not change anything.
    async fn observe(&self) -> Result<Vec<Machine>>;

    /// Creates the machine for `node` and starts it. If it exists already it is returned as
    /// it is, not duplicated. Need not wait for the engine: the core does.
    async fn create(&self, node: &NodeSpec) -> Result<Machine>;

    /// Starts a stopped machine. Starting a running machine succeeds. Optional (with
    /// [`Capabilities::start`]): the default answers [`Error::Unsupported`].
    async fn start(&self, node: &str) -> Result<Machine> {
        Err(Error::unsupported(format!("cannot start machine {node}")))
    }

    /// Destroys the machine and everything the driver made for it. A missing machine is
    /// success. Optional (with [`Capabilities::destroy`]): the default answers
    /// [`Error::Unsupported`].
    async fn destroy(&self, node: &str) -> Result<()> {
        Err(Error::unsupported(format!("cannot destroy machine {node}")))
    }

    /// Removes what the driver made for the whole cluster (networks, directories), after every
    /// machine is destroyed. Missing things are success. The default does nothing.
    async fn teardown(&self) -> Result<()> {
        Ok(())
    }

    /// How to reach the engine of a running machine. Need not check that the engine answers:
    /// the core waits for it with a bounded timeout.
    async fn engine(&self, machine: &Machine) -> Result<NodeEngine>;

    /// Runs `argv` on the node (not in a container on it), without a shell: each element is
    /// passed as one argument. A program that is not there is status 127, as a shell says it
    /// (or an error), so the core can try another. Used for diagnostics and by tests, never
    /// for swarm operations.
    /// Optional (with [`Capabilities::exec`]): the default answers [`Error::Unsupported`].
    async fn exec(&self, node: &str, argv: &[String]) -> Result<ExecOutput> {
        let _ = argv;
        Err(Error::unsupported(format!("cannot run commands on {node}")))
    }

    /// The nodes this driver's machines dictate (e.g. the hosts of a hosts file), in order,
    /// managers and workers mixed as the user listed them. `None` (the default) lets the
    /// user's `managers`/`workers` decide, with the seed's names.
    fn fixed_nodes(&self) -> Option<Vec<NodeSpec>> {
        None
    }

    /// The command that opens an interactive shell on `node` (or runs `args` there), for
    /// `lab ssh`. `None` when the driver cannot.
    fn shell_command(&self, _node: &str, _args: &[String]) -> Option<Vec<String>> {
        None
    }
}

/// The kind of value a driver option takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "type", content = "choices")]
#[non_exhaustive]
pub enum OptionKind {
    /// Any text.
    String,
    /// A file or directory: given as a flag, it is made absolute against the directory lab
    /// runs in, so later commands find it from anywhere.
    Path,
    /// A whole number.
    Integer,
    /// `true` or `false`; as a flag, present means true.
    Bool,
    /// One of these words.
    Choice(&'static [&'static str]),
}

/// One setting of a driver's table (`[drivers.NAME] key = ...`), as the driver declares it.
/// With a flag, `lab up` and `lab plan` take `--flag VALUE` for it, show it in `--help`, and
/// refuse it (exit 2) for a cluster of another driver. Every option is listed by `lab
/// drivers --long`, and can be set with `--driver-opt key=value`, `lab.toml` or
/// `LAB_DRIVERS__NAME__KEY`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct DriverOption {
    /// The key in the driver's table.
    pub key: &'static str,
    /// The flag's long name (without `--`), if it has one.
    pub flag: Option<&'static str>,
    /// What it takes.
    pub kind: OptionKind,
    /// One line of help.
    pub help: &'static str,
    /// A secret: its value is never shown (not in `lab drivers`, not in errors).
    pub secret: bool,
    /// The flag may be given more than once; the values form a list.
    pub repeatable: bool,
}

impl DriverOption {
    /// An option with no flag.
    pub const fn new(key: &'static str, kind: OptionKind, help: &'static str) -> Self {
        DriverOption { key, flag: None, kind, help, secret: false, repeatable: false }
    }
    /// Gives it the flag `--name`.
    pub const fn flag(mut self, name: &'static str) -> Self {
        self.flag = Some(name);
        self
    }
    /// Marks it secret.
    pub const fn secret(mut self) -> Self {
        self.secret = true;
        self
    }
    /// Makes its flag repeatable.
    pub const fn repeatable(mut self) -> Self {
        self.repeatable = true;
        self
    }
}

/// A registered driver: a name, a one-line description, a constructor and the options it
/// takes.
pub struct Registration {
    /// The name users pass to `--driver`.
    pub name: &'static str,
    /// One line for `lab drivers`.
    pub description: &'static str,
    /// Makes the driver for one cluster.
    pub factory: fn(DriverContext) -> Result<Box<dyn Driver>>,
    /// The settings its table takes.
    pub options: &'static [DriverOption],
}

impl Registration {
    /// For [`register_driver!`](crate::register_driver).
    pub const fn new(
        name: &'static str,
        description: &'static str,
        factory: fn(DriverContext) -> Result<Box<dyn Driver>>,
    ) -> Self {
        Registration { name, description, factory, options: &[] }
    }

    /// Declares the options the driver's table takes.
    pub const fn with_options(mut self, options: &'static [DriverOption]) -> Self {
        self.options = options;
        self
    }
}

inventory::collect!(Registration);

/// Registers a driver under a name, with a one-line description, a constructor
/// `fn(DriverContext) -> lab_core::Result<Box<dyn Driver>>`, and optionally the options its
/// table takes (see [`DriverOption`]).
///
/// ```ignore
/// use lab_core::driver::{DriverOption, OptionKind};
/// const OPTIONS: &[DriverOption] = &[
///     DriverOption::new("node_image", OptionKind::String, "image the nodes run").flag("node-image"),
/// ];
/// lab_core::register_driver!("docker", "nodes as Docker-in-Docker containers", DockerDriver::boxed, options = OPTIONS);
/// ```
#[macro_export]
macro_rules! register_driver {
    ($name:expr, $description:expr, $factory:expr $(,)?) => {
        $crate::__private::inventory::submit! {
            $crate::driver::Registration::new($name, $description, $factory)
        }
    };
    ($name:expr, $description:expr, $factory:expr, options = $options:expr $(,)?) => {
        $crate::__private::inventory::submit! {
            $crate::driver::Registration::new($name, $description, $factory).with_options($options)
        }
    };
}

type Registry = BTreeMap<&'static str, &'static Registration>;

/// Every registered driver by name, built once. Two drivers with one name are an error
/// naming it, whichever is asked for.
pub fn registry() -> Result<&'static Registry> {
    static MAP: OnceLock<std::result::Result<Registry, String>> = OnceLock::new();
    MAP.get_or_init(|| {
        let mut map = Registry::new();
        for r in inventory::iter::<Registration> {
            if map.insert(r.name, r).is_some() {
                return Err(format!("two drivers are registered as {:?}; a binary may link only one", r.name));
            }
        }
        Ok(map)
    })
    .as_ref()
    .map_err(|m| Error::op("driver registry", m))
}

/// Finds a driver by name; an unknown name is bad input that lists every registered driver.
pub fn lookup(name: &str) -> Result<&'static Registration> {
    let map = registry()?;
    map.get(name).copied().ok_or_else(|| {
        let known: Vec<_> = map.keys().copied().collect();
        Error::input("--driver", format!("unknown driver {name:?}; registered drivers: {}", known.join(", ")))
    })
}
