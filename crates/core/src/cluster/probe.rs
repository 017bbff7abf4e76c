//! Short-lived containers on a node's engine, in the node's own network namespace
//! (`network_mode: host`), to look at the node from inside: is `/proc/net/ip_vs` there, does
//! `http://127.0.0.1:5000/v2/` answer. They run the registry image, which lab has already made
//! present on every node, so they need nothing else and work the same for every driver.
//!
//! Each probe carries its cluster's label and the time after which it is surely a leftover
//! (its owner was killed before it could remove it); every probe first removes its cluster's
//! leftovers on that engine, so none piles up, and another cluster's are left alone.

use std::collections::HashMap;
use std::time::Duration;

use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
    WaitContainerOptionsBuilder,
};
use bollard::Docker;
use futures_util::StreamExt;

/// Label on every probe container, so leftovers can be found.
pub const PROBE_LABEL: &str = "lab.probe";
/// The cluster a probe looks at (the label every object lab makes for a cluster carries).
pub const CLUSTER_LABEL: &str = "lab.cluster";
/// When (seconds since the Unix epoch) a probe is surely a leftover if it still exists.
pub const EXPIRES_LABEL: &str = "lab.probe.expires";
/// How long after its own timeout a probe may still legitimately exist (being removed).
const GRACE: Duration = Duration::from_secs(60);

/// What a probe printed and how it exited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeOutput {
    /// Exit code (`-1` if the wait ran out).
    pub code: i64,
    /// stdout and stderr, in order.
    pub output: String,
}

/// The labels of a probe for `cluster` that may run for `timeout`, made at `now`.
pub fn labels(cluster: &str, timeout: Duration, now: u64) -> HashMap<String, String> {
    HashMap::from([
        (PROBE_LABEL.to_string(), "true".to_string()),
        (CLUSTER_LABEL.to_string(), cluster.to_string()),
        (EXPIRES_LABEL.to_string(), (now + timeout.as_secs() + GRACE.as_secs()).to_string()),
    ])
}

/// Whether a probe with these labels is a leftover at `now`: its expiry passed, or it has
/// none (then it is not one this version made, yet carries the cluster's label).
pub fn is_leftover(labels: &HashMap<String, String>, now: u64) -> bool {
    labels.get(EXPIRES_LABEL).and_then(|v| v.parse::<u64>().ok()).is_none_or(|t| t <= now)
}

/// Removes `cluster`'s leftover probes on this engine. Best effort: a probe that cannot be
/// removed now is tried again by the next one.
pub async fn remove_leftovers(docker: &Docker, cluster: &str) {
    let filters =
        HashMap::from([("label".to_string(), vec![PROBE_LABEL.to_string(), format!("{CLUSTER_LABEL}={cluster}")])]);
    let Ok(list) =
        docker.list_containers(Some(ListContainersOptionsBuilder::new().all(true).filters(&filters).build())).await
    else {
        return;
    };
    let now = crate::state::now();
    for c in list {
        if let (Some(id), true) = (c.id.as_deref(), is_leftover(&c.labels.clone().unwrap_or_default(), now)) {
            tracing::info!(container = id, "removing a leftover probe");
            let _ = docker
                .remove_container(id, Some(RemoveContainerOptionsBuilder::new().force(true).v(true).build()))
                .await;
        }
    }
}

/// Runs `argv` (the first element replaces the image's entrypoint) in a throwaway
/// host-network container from `image`, labelled with `cluster`, for at most `timeout`. The
/// container is removed whatever happens, and so are the cluster's leftover probes on that
/// engine. Errors are the engine's own words.
pub async fn run(
    docker: &Docker,
    cluster: &str,
    image: &str,
    argv: &[&str],
    timeout: Duration,
) -> Result<ProbeOutput, String> {
    remove_leftovers(docker, cluster).await;
    let name = format!("lab-probe-{}", crate::driver::support::random_suffix());
    let body = ContainerCreateBody {
        image: Some(image.to_string()),
        entrypoint: Some(vec![argv[0].to_string()]),
        cmd: Some(argv[1..].iter().map(|s| s.to_string()).collect()),
        labels: Some(labels(cluster, timeout, crate::state::now())),
        host_config: Some(HostConfig { network_mode: Some("host".into()), ..Default::default() }),
        ..Default::default()
    };
    let opts = CreateContainerOptionsBuilder::new().name(&name).build();
    docker.create_container(Some(opts), body).await.map_err(|e| crate::error::engine_message(&e))?;
    let result = async {
        docker.start_container(&name, None).await.map_err(|e| crate::error::engine_message(&e))?;
        let mut wait =
            docker.wait_container(&name, Some(WaitContainerOptionsBuilder::new().condition("not-running").build()));
        let code = match tokio::time::timeout(timeout, wait.next()).await {
            Ok(Some(Ok(r))) => r.status_code,
            // bollard reports a non-zero exit as an error carrying the code.
            Ok(Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. }))) => code,
            Ok(Some(Err(e))) => return Err(crate::error::engine_message(&e)),
            Ok(None) => -1,
            Err(_) => -1,
        };
        let mut logs = docker.logs(&name, Some(LogsOptionsBuilder::new().stdout(true).stderr(true).build()));
        let mut output = String::new();
        while let Some(Ok(chunk)) = logs.next().await {
            output.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
        }
        Ok(ProbeOutput { code, output })
    }
    .await;
    // `v`: the image may declare volumes (registry:2 does); leave none behind.
    let _ =
        docker.remove_container(&name, Some(RemoveContainerOptionsBuilder::new().force(true).v(true).build())).await;
    result
}

/// Runs a look at `node` from inside it: first as a command on the node itself through the
/// driver (like the seed's `docker-machine ssh NODE curl ...`; cheap), trying each of
/// `commands` until one exists there; if the driver cannot run commands or the node has
/// none of them, in a throwaway host-network container from `image` with the last command.
pub async fn on_node(
    rt: &dyn crate::cluster::Nodes,
    node: &str,
    commands: &[&[&str]],
    image: &str,
    timeout: Duration,
) -> Result<ProbeOutput, String> {
    // Only a driver that says it can run commands is asked to.
    let commands_on_node: &[&[&str]] = if rt.can_exec() { commands } else { &[] };
    for argv in commands_on_node {
        let owned: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
        match tokio::time::timeout(timeout, rt.exec(node, &owned)).await {
            // 126/127: the shell's "cannot run" / "not found"; try the next command.
            Ok(Ok(out)) => match out.status {
                Some(126) | Some(127) | None => continue,
                Some(code) => return Ok(ProbeOutput { code, output: format!("{}{}", out.stdout, out.stderr) }),
            },
            Ok(Err(_)) => break,
            Err(_) => return Ok(ProbeOutput { code: -1, output: format!("no answer within {}s", timeout.as_secs()) }),
        }
    }
    let docker = rt.engine(node).await.map_err(|e| e.to_string())?.docker;
    let last = commands.last().expect("at least one command");
    run(&docker, rt.desired().topology.cluster.as_str(), image, last, timeout).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_probe_carries_its_cluster_and_expires_after_its_timeout() {
        let l = labels("c1", Duration::from_secs(20), 1000);
        assert_eq!(l[PROBE_LABEL], "true");
        assert_eq!(l[CLUSTER_LABEL], "c1");
        assert!(!is_leftover(&l, 1000));
        assert!(!is_leftover(&l, 1000 + 20));
        assert!(is_leftover(&l, 1000 + 20 + GRACE.as_secs()));
    }

    #[test]
    fn a_probe_without_an_expiry_is_a_leftover() {
        let l = HashMap::from([(PROBE_LABEL.to_string(), "true".to_string())]);
        assert!(is_leftover(&l, 0));
    }
}
