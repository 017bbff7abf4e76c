//! `lab env`: shell exports that point the docker client at the cluster's manager.

use std::sync::Arc;

use lab_core::progress::Silent;
use lab_core::{Error, Result};

use super::cluster::existing;
use crate::args::{EnvArgs, Shell};

pub(super) fn shell_from_env() -> Shell {
    match std::env::var("SHELL").unwrap_or_default().rsplit('/').next() {
        Some("fish") => Shell::Fish,
        Some("zsh") => Shell::Zsh,
        _ => Shell::Bash,
    }
}

/// Quotes a value for a POSIX shell or fish: single quotes, with embedded ones escaped.
pub(super) fn quote(shell: Shell, v: &str) -> String {
    match shell {
        Shell::Fish => format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'")),
        _ => format!("'{}'", v.replace('\'', r"'\''")),
    }
}

pub(super) async fn env(config: Option<&std::path::Path>, a: &EnvArgs) -> Result<i32> {
    let (rt, _, _) = existing(config, a.cluster.cluster.as_deref(), Arc::new(Silent), true).await?;
    let shell = a.shell.unwrap_or_else(shell_from_env);
    let manager = rt.desired.topology.first_manager().name.clone();
    let machines = rt.driver.observe().await?;
    let machine = machines
        .iter()
        .find(|m| m.name == manager)
        .ok_or_else(|| Error::node(&manager, "find the machine", "it does not exist (run lab up)"))?;
    let engine = rt.driver.engine(machine).await?;
    let cluster = &rt.desired.topology.cluster;
    // LAB_CLUSTER last: lab commands in that shell then act on this cluster without
    // `--cluster` (a flag still wins), as the docker client acts on its manager.
    let lab_cluster = ("LAB_CLUSTER".to_string(), cluster.to_string());
    for (k, v) in engine.client_env.iter().chain(std::iter::once(&lab_cluster)) {
        match (shell, a.unset) {
            (Shell::Fish, false) => outln!("set -gx {k} {};", quote(shell, v))?,
            (Shell::Fish, true) => outln!("set -e {k};")?,
            (_, false) => outln!("export {k}={}", quote(shell, v))?,
            (_, true) => outln!("unset {k}")?,
        }
    }
    let flag = if a.unset { " --unset" } else { "" };
    match shell {
        Shell::Fish => {
            outln!("# Run this command to configure your shell:\n# lab env --cluster {cluster}{flag} | source")?
        }
        _ => outln!("# Run this command to configure your shell:\n# eval \"$(lab env --cluster {cluster}{flag})\"")?,
    }
    Ok(0)
}
