//! Command-line arguments. Every flag that has a configuration counterpart is an `Option`, so
//! that an unset flag leaves lower configuration layers alone.

use std::path::PathBuf;

use std::collections::BTreeMap;

use clap::builder::PossibleValuesParser;
use clap::{Arg, ArgAction, Args, CommandFactory, Parser, Subcommand, ValueEnum};
use lab_core::driver::{DriverOption, OptionKind};

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
    /// Put images from this machine's engine (the one `docker images` shows here) into the
    /// cluster's registry, as localhost:5000/NAME:TAG; only the layers it lacks are sent.
    Push(PushArgs),
    /// What the cluster's registry holds; `rm NAME:TAG` deletes a tag, `gc` reclaims its space,
    /// `save DIR` and `load DIR` copy it all to an OCI image layout here and back.
    Images(ImagesArgs),
    /// How other clients (skopeo, crane, oras, curl) reach the registry: its URL and address,
    /// and in mutual TLS the CA and client certificate; `forward` relays it to this machine.
    Registry(RegistryArgs),
    /// Remove everything `up` made for the cluster.
    Down(ClusterArg),
    /// List the drivers: built-in ones, and external `lab-driver-NAME` programs on PATH.
    Drivers(DriversArgs),
    /// Open a shell on a node, or run a command there.
    Ssh(SshArgs),
    /// Check a driver against lab's driver contract on a throwaway cluster (for driver
    /// authors): exit 0 when it conforms, 1 naming each broken rule.
    DriverTest(DriverTestArgs),
    /// lab's relay on a node, to a mutual-TLS registry; started by `lab up` in the relay
    /// container, not by hand.
    #[command(hide = true)]
    Relay(RelayArgs),
}

#[derive(Debug, Args)]
pub struct RelayArgs {
    /// Where to take plain connections; repeatable.
    #[arg(long, required = true)]
    pub listen: Vec<std::net::SocketAddr>,
    /// The registry, HOST:PORT, spoken to in TLS.
    #[arg(long)]
    pub to: String,
    /// The directory with ca.crt, client.cert and client.key.
    #[arg(long)]
    pub certs: std::path::PathBuf,
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
pub enum ModeArg {
    Auto,
    Mesh,
    Fallback,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AvailabilityArg {
    Drain,
    Active,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TlsArg {
    Open,
    Mutual,
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
pub struct PushArgs {
    #[command(flatten)]
    pub cluster: ClusterArg,
    /// Images as the local engine names them (myapp:1, ghcr.io/me/app, an image ID with --as).
    #[arg(value_name = "IMAGE", required = true)]
    pub images: Vec<String>,
    /// The name and tag in the registry, for one image (default: its own, without any
    /// registry host).
    #[arg(long = "as", value_name = "NAME:TAG")]
    pub rename: Option<String>,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t)]
    pub output: Output,
}

#[derive(Debug, Args)]
pub struct ImagesArgs {
    /// Cluster name (default "lab").
    #[arg(long, value_name = "NAME", global = true)]
    pub cluster: Option<String>,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t, global = true)]
    pub output: Output,
    #[command(subcommand)]
    pub action: Option<ImagesAction>,
}

#[derive(Debug, Subcommand)]
pub enum ImagesAction {
    /// List repositories, tags, digests and sizes (the default).
    Ls,
    /// Delete tags: each NAME:TAG alone (other tags of the same image stay), or with
    /// --all-tags the image and every tag naming it.
    Rm {
        /// Images as `lab images` lists them (NAME:TAG, or localhost:5000/NAME:TAG).
        #[arg(value_name = "NAME:TAG", required = true)]
        references: Vec<String>,
        /// Delete the image each NAME:TAG names, with every tag of its repository naming it.
        #[arg(long)]
        all_tags: bool,
    },
    /// Reclaim the space of deleted tags: the registry's garbage collection, with the
    /// registry read-only while it runs (its task restarts twice).
    Gc,
    /// Write everything the registry holds (every repository, every tag) to DIR on this
    /// machine, as an OCI image layout; into a layout saved before, only the blobs it lacks.
    Save {
        /// A new or empty directory, or a layout `lab images save` wrote.
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
    /// Put the images of an OCI image layout (one `lab images save` wrote, from this cluster
    /// or another) into the registry, sending only the blobs it lacks.
    Load {
        /// The layout's directory.
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct RegistryArgs {
    /// Cluster name (default "lab").
    #[arg(long, value_name = "NAME", global = true)]
    pub cluster: Option<String>,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t, global = true)]
    pub output: Output,
    #[command(subcommand)]
    pub action: Option<RegistryAction>,
}

#[derive(Debug, Subcommand)]
pub enum RegistryAction {
    /// Relay a port of this machine's loopback to the registry until Ctrl-C, for clients that
    /// cannot connect to the registry's address while checking the name localhost (skopeo):
    /// they use localhost:PORT; prints that URL.
    Forward {
        /// Where to listen (default 127.0.0.1 and the registry's port: 5000, or 5443 in mutual
        /// TLS; port 0 picks a free one).
        #[arg(long, value_name = "ADDR:PORT")]
        listen: Option<std::net::SocketAddr>,
    },
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
pub struct DriversArgs {
    /// Also list each driver's settings: key, flag, kind and help.
    #[arg(long, short)]
    pub long: bool,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t)]
    pub output: Output,
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

#[derive(Debug, Args)]
pub struct DriverTestArgs {
    /// The driver: built-in, or an external `lab-driver-NAME` program.
    #[arg(value_name = "NAME")]
    pub driver: String,
    /// A setting of the driver's table, KEY=VALUE with dotted keys; repeatable. Values are
    /// read as TOML, else as strings.
    #[arg(long = "driver-opt", value_name = "KEY=VALUE")]
    pub driver_opts: Vec<String>,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t)]
    pub output: Output,
    /// The flags the drivers declare, as for `up`; filled in by [`take_driver_flags`].
    #[arg(skip)]
    pub driver_flags: Vec<DriverFlag>,
}

/// What `up` and `plan` share: the desired cluster.
#[derive(Debug, Args, Default)]
pub struct TopologyArgs {
    #[command(flatten)]
    pub cluster: ClusterArg,
    /// Driver that makes the machines (`lab drivers` lists them; default docker).
    #[arg(long, short)]
    pub driver: Option<String>,
    /// Number of managers, 1 to 7 (default 1).
    // Negative numbers parse as values, so the number parser's error names this flag.
    #[arg(long, allow_negative_numbers = true, value_parser = managers)]
    pub managers: Option<u32>,
    /// Number of workers, 0 to 64 (default 2).
    // Negative numbers parse as values, so the number parser's error names this flag.
    #[arg(long, allow_negative_numbers = true, value_parser = workers)]
    pub workers: Option<u32>,
    /// Whether managers take tasks when there are workers: drain (the default, as the seed
    /// drains its manager) or active.
    #[arg(long, value_enum, value_name = "drain|active")]
    pub manager_availability: Option<AvailabilityArg>,
    /// Registry image (default registry:3 for a new cluster; a cluster keeps the one it was
    /// made with).
    #[arg(long, value_name = "IMAGE")]
    pub registry_image: Option<String>,
    /// How nodes reach the registry at localhost:5000 (default auto: mesh if IPVS, else fallback).
    #[arg(long, value_enum)]
    pub registry_mode: Option<ModeArg>,
    /// Who may talk to the registry: open (anyone who reaches a node's port 5000, as the seed;
    /// the default) or mutual (TLS on port 5443, only clients presenting the cluster's
    /// certificate; each node's localhost:5000 is a relay that presents it, see the README).
    #[arg(long, value_enum, value_name = "open|mutual")]
    pub registry_tls: Option<TlsArg>,
    /// Go ahead with what lab otherwise refuses because it loses data: repairing a broken
    /// registry node, moving the registry away from data that cannot move; and, on the ssh
    /// driver, taking over hosts that are in another swarm. Never remembered.
    #[arg(long)]
    pub force: bool,
    /// Mutual TLS: make a new CA for the registry and issue every certificate again from it
    /// (each node's, lab's, the registry's), so every key given out before stops working.
    /// lab does this by itself when a node leaves the cluster. Never remembered.
    #[arg(long)]
    pub renew_certs: bool,
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
    /// The flags the drivers declare (`--node-image`, `--hosts`, ...), as given; filled in by
    /// [`take_driver_flags`] after parsing.
    #[arg(skip)]
    pub driver_flags: Vec<DriverFlag>,
}

/// `--managers`: within the topology's limits, so clap names them (a bare `u32` parser
/// said "not in 0..=4294967295").
fn managers(v: &str) -> Result<u32, String> {
    count(v, 1, lab_core::topology::MAX_MANAGERS, "managers")
}

/// `--workers`, as [`managers`].
fn workers(v: &str) -> Result<u32, String> {
    count(v, 0, lab_core::topology::MAX_WORKERS, "workers")
}

fn count(v: &str, min: u32, max: u32, what: &str) -> Result<u32, String> {
    match v.trim().parse::<i64>() {
        Ok(n) if (i64::from(min)..=i64::from(max)).contains(&n) => Ok(n as u32),
        _ => Err(format!("not a number of {what} from {min} to {max}")),
    }
}

/// `lab ssh NODE CMD...` without `--` before the command: clap's bare "unexpected argument"
/// gains a tip with the line to type instead. Other errors are left as they are.
pub fn with_ssh_separator_tip(mut e: clap::Error, args: &[std::ffi::OsString]) -> clap::Error {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if e.kind() != ErrorKind::UnknownArgument {
        return e;
    }
    let Some(ContextValue::String(invalid)) = e.get(ContextKind::InvalidArg) else { return e };
    if let Some(line) = ssh_line_with_separator(args, invalid) {
        let tip = format!("to run a command on the node, put `--` before it: `{line}`");
        e.insert(ContextKind::Suggested, ContextValue::StyledStrs(vec![tip.into()]));
    }
    e
}

/// The command line `args` with `--` put before `invalid`, if they are `lab ssh ...` with no
/// `--` before it.
fn ssh_line_with_separator(args: &[std::ffi::OsString], invalid: &str) -> Option<String> {
    let words: Vec<String> = args.iter().map(|a| a.to_string_lossy().into_owned()).collect();
    // The subcommand is the first word that is neither an option nor `--config`'s value (the
    // one global option that takes a separate value).
    let mut i = 1;
    while words.get(i).is_some_and(|w| w.starts_with('-')) {
        i += if words[i] == "--config" { 2 } else { 1 };
    }
    if words.get(i).map(String::as_str) != Some("ssh") {
        return None;
    }
    let at = i + 1 + words.get(i + 1..)?.iter().position(|w| w == invalid)?;
    if words[i + 1..at].iter().any(|w| w == "--") {
        return None;
    }
    // Only after the node: before it, an unknown option is just that (`lab ssh -t worker1`).
    let mut j = i + 1;
    let mut node = false;
    while j < at {
        match words[j].as_str() {
            "--cluster" | "--config" => j += 2,
            w if w.starts_with('-') => j += 1,
            _ => {
                node = true;
                break;
            }
        }
    }
    if !node {
        return None;
    }
    let quoted = |w: &String| {
        if !w.is_empty() && w.chars().all(|c| c.is_ascii_alphanumeric() || "-_./:=@%+,".contains(c)) {
            w.clone()
        } else {
            format!("'{}'", w.replace('\'', r"'\''"))
        }
    };
    let mut line = vec!["lab".to_string()];
    line.extend(words[1..at].iter().map(quoted));
    line.push("--".into());
    line.extend(words[at..].iter().map(quoted));
    Some(line.join(" "))
}

/// A driver's flag as given on the command line.
#[derive(Debug, Clone, PartialEq)]
pub struct DriverFlag {
    /// `--name`.
    pub flag: String,
    /// The drivers that declare it, with the key in each one's table.
    pub drivers: Vec<(String, String)>,
    /// The value, as its option's kind reads it.
    pub value: serde_json::Value,
}

/// The commands that take driver flags: those that shape a cluster, and `driver-test`, which
/// makes the driver as `up` would.
const TAKE_DRIVER_FLAGS: [&str; 3] = ["up", "plan", "driver-test"];

/// Every flag the registered drivers declare, by flag name, with the drivers (and options)
/// that declare it. The drivers are the source of truth: adding a driver crate adds its flags
/// here without a line of CLI code.
fn declared_flags() -> BTreeMap<&'static str, Vec<(&'static str, &'static DriverOption)>> {
    let mut flags: BTreeMap<&'static str, Vec<(&'static str, &'static DriverOption)>> = BTreeMap::new();
    // A duplicate driver name is reported when a driver is looked up.
    if let Ok(reg) = lab_core::driver::registry() {
        for r in reg.values() {
            for o in r.options {
                if let Some(f) = o.flag {
                    flags.entry(f).or_default().push((r.name, o));
                }
            }
        }
    }
    flags
}

/// The command line with every driver's flags on `up` and `plan`, under their own heading.
pub fn command() -> clap::Command {
    let flags = declared_flags();
    let mut cmd = Cli::command();
    for sub in TAKE_DRIVER_FLAGS {
        cmd = cmd.mut_subcommand(sub, |mut c| {
            for (flag, owners) in &flags {
                // A driver cannot take over one of lab's own flags.
                if c.get_arguments().any(|a| a.get_long() == Some(*flag) || a.get_id() == *flag) {
                    continue;
                }
                let (_, first) = owners[0];
                let drivers: Vec<&str> = owners.iter().map(|(d, _)| *d).collect();
                let mut help = first.help.to_string();
                if let Some(c) = help.get(..1) {
                    help.replace_range(..1, &c.to_uppercase());
                }
                let mut arg = Arg::new(*flag)
                    .long(*flag)
                    .help(format!("{help} [{} driver]", drivers.join(", ")))
                    .help_heading("Driver options");
                arg = match first.kind {
                    OptionKind::Bool => arg.action(ArgAction::SetTrue),
                    OptionKind::Integer => arg.value_parser(clap::value_parser!(i64)).value_name("N"),
                    OptionKind::Path => arg.value_parser(clap::value_parser!(PathBuf)).value_name("FILE"),
                    OptionKind::Choice(choices) => arg
                        .value_parser(PossibleValuesParser::new(choices.iter().copied()))
                        .value_name(first.key.to_uppercase()),
                    _ => arg.value_name(first.key.to_uppercase()),
                };
                if first.repeatable && first.kind != OptionKind::Bool {
                    arg = arg.action(ArgAction::Append);
                }
                c = c.arg(arg);
            }
            c
        });
    }
    cmd
}

/// Moves the driver flags found in `matches` into the parsed arguments.
pub fn take_driver_flags(cli: &mut Cli, matches: &clap::ArgMatches) {
    let given = match &mut cli.command {
        Command::Up(a) => &mut a.topology.driver_flags,
        Command::Plan(a) => &mut a.topology.driver_flags,
        Command::DriverTest(a) => &mut a.driver_flags,
        _ => return,
    };
    let Some((_, sub)) = matches.subcommand() else { return };
    for (flag, owners) in declared_flags() {
        let id = flag;
        if !sub.ids().any(|i| i == id) || sub.value_source(id) != Some(clap::parser::ValueSource::CommandLine) {
            continue;
        }
        let (_, first) = owners[0];
        let one = |raw: &serde_json::Value| raw.clone();
        let values: Vec<serde_json::Value> = match first.kind {
            OptionKind::Bool => vec![serde_json::json!(sub.get_flag(id))],
            OptionKind::Integer => {
                sub.get_many::<i64>(id).into_iter().flatten().map(|n| serde_json::json!(n)).collect()
            }
            OptionKind::Path => sub
                .get_many::<PathBuf>(id)
                .into_iter()
                .flatten()
                // Made absolute here, so the recorded path works from any directory.
                .map(|p| serde_json::json!(std::path::absolute(p).unwrap_or_else(|_| p.clone())))
                .collect(),
            _ => sub.get_many::<String>(id).into_iter().flatten().map(|v| serde_json::json!(v)).collect(),
        };
        let value = if first.repeatable {
            serde_json::Value::Array(values)
        } else {
            values.first().map(one).unwrap_or_default()
        };
        given.push(DriverFlag {
            flag: format!("--{flag}"),
            drivers: owners.iter().map(|(d, o)| (d.to_string(), o.key.to_string())).collect(),
            value,
        });
    }
}

#[derive(Debug, Args)]
pub struct UpArgs {
    #[command(flatten)]
    pub topology: TopologyArgs,
    /// Write a timeline of the run (every step per node, the critical path marked) as an HTML
    /// page: to FILE, or lab-timings-CLUSTER-TIME.html in the current directory (or in FILE,
    /// if it is a directory).
    #[arg(long, value_name = "FILE", num_args = 0..=1, default_missing_value = ".")]
    pub timings: Option<std::path::PathBuf>,
    /// When the swarm has lost its quorum (a majority of its managers gone for good): make the
    /// first surviving manager the only manager of a new Raft cluster, keeping services,
    /// secrets and the registry's data (`docker swarm init --force-new-cluster`), then make
    /// the lost managers again. lab never does this without the flag. Never remembered.
    #[arg(long)]
    pub force_new_cluster: bool,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub topology: TopologyArgs,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t)]
    pub output: Output,
}
