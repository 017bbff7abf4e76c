//! `lab env`: shell exports that point the docker client at the cluster's manager, and with
//! `--unset` the commands that undo them (`down` says to run those when it removes the cluster
//! the shell points at).

use std::sync::Arc;

use lab_core::cluster::Silent;
use lab_core::state::Paths;
use lab_core::{Error, Result};

use super::cluster::existing;
use crate::args::{EnvArgs, Shell};
use crate::settings;

/// What lab's drivers' `lab env` may export besides `LAB_CLUSTER`: `DOCKER_HOST` (docker,
/// ssh), the TLS pair (qemu) and docker-machine's four (virtualbox). `--unset` for a cluster
/// lab no longer knows clears them all, as `docker-machine env -u` does: no driver is left to
/// say which it used.
const CLIENT_VARS: [&str; 4] = ["DOCKER_HOST", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH", "DOCKER_MACHINE_NAME"];

pub(super) fn shell_from_env() -> Shell {
    match std::env::var("SHELL").unwrap_or_default().rsplit('/').next() {
        Some("fish") => Shell::Fish,
        Some("zsh") => Shell::Zsh,
        _ => Shell::Bash,
    }
}

/// Quotes a value for a POSIX shell or fish: single quotes, with embedded ones escaped.
///
/// Not shlex: shlex quotes for POSIX shells only (fish reads `\'` inside single quotes, which a
/// POSIX shell does not), and it leaves a value that needs no quotes bare, where `lab env`
/// always quotes, so the lines users paste look the same whatever the value.
pub(super) fn quote(shell: Shell, v: &str) -> String {
    match shell {
        Shell::Fish => format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'")),
        _ => format!("'{}'", v.replace('\'', r"'\''")),
    }
}

/// The command that clears what `lab env` exported, in `shell`'s syntax; it works after
/// `down` too, when lab no longer knows the cluster (the shell's `LAB_CLUSTER` names it).
pub(super) fn unset_command(shell: Shell) -> &'static str {
    match shell {
        Shell::Fish => "`lab env --unset | source`",
        _ => "`eval \"$(lab env --unset)\"`",
    }
}

pub(super) async fn env(config: Option<&std::path::Path>, a: &EnvArgs) -> Result<i32> {
    let shell = a.shell.unwrap_or_else(shell_from_env);
    if a.unset {
        let cluster = settings::cluster_only(config, a.cluster.cluster.as_deref())?;
        if Paths::from_env()?.load(&cluster)?.is_none() {
            let vars = CLIENT_VARS.iter().map(|k| (k.to_string(), String::new())).collect();
            return print_exports(shell, true, &cluster, vars);
        }
    }
    let (rt, _, _) = existing(config, a.cluster.cluster.as_deref(), Arc::new(Silent), true).await?;
    // A manager that answers for the swarm: with several, the first that does, so the docker
    // client keeps working while a lost manager is being replaced.
    let machines = rt.driver.observe().await?;
    rt.set_machines(machines.clone());
    let manager = match rt.manager().await {
        Ok((name, _)) => name,
        Err(_) => rt.desired.topology.first_manager().name.clone(),
    };
    let machine = machines
        .iter()
        .find(|m| m.name == manager)
        .ok_or_else(|| Error::node(&manager, "find the machine", "it does not exist (run lab up)"))?;
    let engine = rt.driver.engine(machine).await?;
    print_exports(shell, a.unset, &rt.desired.topology.cluster, engine.client_env)
}

/// Prints `vars` and `LAB_CLUSTER` as exports (or unsets) in `shell`'s syntax, and how to use
/// them.
fn print_exports(
    shell: Shell,
    unset: bool,
    cluster: &lab_core::ClusterName,
    vars: Vec<(String, String)>,
) -> Result<i32> {
    // LAB_CLUSTER last: lab commands in that shell then act on this cluster without
    // `--cluster` (a flag still wins), as the docker client acts on its manager.
    let lab_cluster = ("LAB_CLUSTER".to_string(), cluster.to_string());
    for (k, v) in vars.iter().chain(std::iter::once(&lab_cluster)) {
        match (shell, unset) {
            (Shell::Fish, false) => outln!("set -gx {k} {};", quote(shell, v))?,
            (Shell::Fish, true) => outln!("set -e {k};")?,
            (_, false) => outln!("export {k}={}", quote(shell, v))?,
            (_, true) => outln!("unset {k}")?,
        }
    }
    let flag = if unset { " --unset" } else { "" };
    match shell {
        Shell::Fish => {
            outln!("# Run this command to configure your shell:\n# lab env --cluster {cluster}{flag} | source")?
        }
        _ => outln!("# Run this command to configure your shell:\n# eval \"$(lab env --cluster {cluster}{flag})\"")?,
    }
    Ok(0)
}
