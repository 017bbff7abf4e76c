//! `lab ssh`: a shell on a node, or a command run there.

use std::sync::Arc;

use lab_core::cluster::Silent;
use lab_core::{Error, Result};

use super::cluster::existing;
use crate::args::SshArgs;

pub(super) async fn ssh(config: Option<&std::path::Path>, a: &SshArgs) -> Result<i32> {
    let (rt, _, _) = existing(config, a.cluster.cluster.as_deref(), Arc::new(Silent), true).await?;
    if rt.desired.topology.node(&a.node).is_none() {
        let names: Vec<_> = rt.desired.topology.nodes.iter().map(|n| n.name.as_str()).collect();
        return Err(Error::input(
            "NODE",
            format!("no node {:?} in cluster {}; nodes: {}", a.node, rt.desired.topology.cluster, names.join(", ")),
        ));
    }
    let shell = if rt.desired.capabilities.shell { rt.driver.shell_command(&a.node, &a.command) } else { None };
    let cmd = shell.ok_or_else(|| Error::Unsupported {
        driver: rt.state().driver,
        message: "cannot open a shell on a node".into(),
    })?;
    let status = std::process::Command::new(&cmd[0])
        .args(&cmd[1..])
        .status()
        .map_err(|e| Error::caused(&a.node, format!("run {}", cmd[0]), e))?;
    Ok(status.code().unwrap_or(1))
}
