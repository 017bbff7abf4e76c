//! Command-line arguments. Every flag that has a configuration counterpart is an `Option`, so
//! that an unset flag leaves lower configuration layers alone.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Stand up a Docker Swarm with its own private registry, on any driver.
#[derive(Debug, Parser)]
#[command(name = "lab", version, about, propagate_version = true)]
pub struct Cli {
    /// Configuration file (default: ./lab.toml if it exists).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// More detail on stderr (-v, -vv); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create or converge a cluster: machines, swarm, registry; finishes when every node
    /// answers {} at http://127.0.0.1:5000/v2/.
    Up(UpArgs),
    /// Print the steps `up` would take, changing nothing.
    Plan(PlanArgs),
    /// Nodes, their engines and swarm state, and the registry.
    Status(ShowArgs),
    /// Clusters lab knows.
    Ls(OutputArgs),
    /// Print shell exports that point the docker client at the cluster's manager.
    Env(EnvArgs),
    /// Ask every node for http://127.0.0.1:5000/v2/ and http://localhost:5000/v2/, and explain
    /// any failure.
    Check(ShowArgs),
    /// Remove everything `up` made for the cluster.
    Down(ClusterArg),
    /// List the drivers: built-in ones, and external `lab-driver-NAME` programs on PATH.
    Drivers(OutputArgs),
    /// Open a shell on a node, or run a command there.
    Ssh(SshArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Output {
    #[default]
    Table,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum HostKeyPolicy {
    Strict,
    AcceptNew,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    Auto,
    Mesh,
    Fallback,
}

#[derive(Debug, Args, Default)]
pub struct ClusterArg {
    /// Cluster name (default "lab").
    #[arg(long, value_name = "NAME")]
    pub cluster: Option<String>,
}

#[derive(Debug, Args)]
pub struct OutputArgs {
    /// Output format.
    #[arg(long, short, value_enum, default_value_t)]
    pub output: Output,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    #[command(flatten)]
    pub cluster: ClusterArg,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t)]
    pub output: Output,
}

#[derive(Debug, Args)]
pub struct EnvArgs {
    #[command(flatten)]
    pub cluster: ClusterArg,
    /// Shell syntax for the exports (default: from $SHELL, else bash).
    #[arg(long, value_enum)]
    pub shell: Option<Shell>,
    /// Print the commands that undo the exports.
    #[arg(long, short)]
    pub unset: bool,
}

#[derive(Debug, Args)]
pub struct SshArgs {
    #[command(flatten)]
    pub cluster: ClusterArg,
    /// The node (e.g. manager, worker1).
    pub node: String,
    /// Command to run instead of a shell.
    #[arg(last = true)]
    pub command: Vec<String>,
}

/// What `up` and `plan` share: the desired cluster.
#[derive(Debug, Args, Default)]
pub struct TopologyArgs {
    #[command(flatten)]
    pub cluster: ClusterArg,
    /// Driver that makes the machines (`lab drivers` lists them; default docker).
    #[arg(long, short)]
    pub driver: Option<String>,
    /// Number of managers (default 1).
    // Negative numbers parse as values, so the number parser's error names this flag.
    #[arg(long, allow_negative_numbers = true)]
    pub managers: Option<u32>,
    /// Number of workers (default 2).
    // Negative numbers parse as values, so the number parser's error names this flag.
    #[arg(long, allow_negative_numbers = true)]
    pub workers: Option<u32>,
    /// Node image for the docker driver (default docker:dind).
    #[arg(long, value_name = "IMAGE")]
    pub node_image: Option<String>,
    /// Registry image (default registry:2).
    #[arg(long, value_name = "IMAGE")]
    pub registry_image: Option<String>,
    /// How nodes reach the registry at localhost:5000 (default auto: mesh if IPVS, else fallback).
    #[arg(long, value_enum)]
    pub registry_mode: Option<ModeArg>,
    /// Hosts file for the ssh driver.
    #[arg(long, value_name = "FILE")]
    pub hosts: Option<PathBuf>,
    /// Known-hosts file for the ssh driver (default ~/.ssh/known_hosts).
    #[arg(long, value_name = "FILE")]
    pub known_hosts: Option<PathBuf>,
    /// Host key checking for the ssh driver (default accept-new).
    #[arg(long, value_enum)]
    pub host_key_policy: Option<HostKeyPolicy>,
    /// Go ahead with what lab otherwise refuses because it loses data: repairing a broken
    /// registry node, moving the registry away from data that cannot move; and, on the ssh
    /// driver, taking over hosts that are in another swarm. Never remembered.
    #[arg(long)]
    pub force: bool,
    /// A setting of the driver's own table, KEY=VALUE with dotted keys
    /// (e.g. worker.memory=8192); repeatable. Values are read as TOML (numbers, booleans,
    /// arrays), else as strings.
    #[arg(long = "driver-opt", value_name = "KEY=VALUE")]
    pub driver_opts: Vec<String>,
    /// Swarm label for every worker, KEY=VALUE (repeatable).
    #[arg(long = "worker-label", value_name = "KEY=VALUE")]
    pub worker_labels: Vec<String>,
    /// Swarm label for every manager, KEY=VALUE (repeatable).
    #[arg(long = "manager-label", value_name = "KEY=VALUE")]
    pub manager_labels: Vec<String>,
}

#[derive(Debug, Args)]
pub struct UpArgs {
    #[command(flatten)]
    pub topology: TopologyArgs,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub topology: TopologyArgs,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t)]
    pub output: Output,
}
