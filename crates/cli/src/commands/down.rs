//! `lab down`: remove everything `up` made for the cluster.

use std::time::Duration;

use futures_util::future::join_all;
use lab_core::state::Paths;
use lab_core::Result;

use super::cluster::{existing, reporter};
use super::env::{shell_from_env, unset_command};
use crate::settings;

pub(super) async fn down(config: Option<&std::path::Path>, cluster: Option<&str>) -> Result<i32> {
    let progress = reporter(false);
    let name = settings::cluster_only(config, cluster)?;
    // The state is read under the lock, and the lock file lives outside the directory `down`
    // removes, so no other lab process can take the cluster while it goes.
    let _lock = Paths::from_env()?.lock(&name, "lab down")?;
    let (rt, paths, known) = existing(config, cluster, progress.clone(), false).await?;
    let cluster = rt.desired.topology.cluster.clone();
    let machines = rt.driver.observe().await?;
    // Asked before the nodes go: once they are gone, no driver can say what `lab env` exported.
    let pointed_here = env_points_here(&rt, &machines).await;
    if rt.desired.capabilities.destroy {
        let results = join_all(machines.iter().map(|m| async {
            let r = rt.driver.destroy(&m.name).await;
            if r.is_ok() {
                progress.note(&format!("removed node {}", m.name));
            }
            r
        }))
        .await;
        for r in results {
            r?;
        }
    } else if !machines.is_empty() {
        // Machines lab was given, not made: undo the swarm and the registry, keep the hosts.
        rt.set_machines(machines.clone());
        lab_core::converge::teardown::dismantle(&rt).await?;
    }
    rt.driver.teardown().await?;
    paths.remove(&cluster)?;
    if machines.is_empty() && !known {
        progress.note(&format!("nothing to remove: lab knows no cluster named {cluster} and found none of its nodes"));
    } else {
        progress.note(&format!("cluster {cluster} is gone"));
    }
    if pointed_here {
        progress.note(&format!(
            "this shell still points at cluster {cluster} (as `lab env` left it): run {} to clear that",
            unset_command(shell_from_env())
        ));
    }
    Ok(0)
}

/// Whether lab runs in a shell `lab env` pointed at this cluster: its `LAB_CLUSTER` names the
/// cluster, or its `DOCKER_HOST` is the one `lab env` exports for the cluster's manager (the
/// driver is asked, briefly; a driver that cannot say counts as no).
async fn env_points_here(rt: &lab_core::converge::runtime::Runtime, machines: &[lab_core::Machine]) -> bool {
    let cluster = rt.desired.topology.cluster.as_str();
    let lab_cluster = std::env::var("LAB_CLUSTER").ok();
    let docker_host = std::env::var("DOCKER_HOST").ok();
    let (lab_cluster, docker_host) = (lab_cluster.as_deref(), docker_host.as_deref());
    // The driver is asked only where the answer could change the decision.
    let mut exported = Vec::new();
    if docker_host.is_some() && !points_at(cluster, lab_cluster, docker_host, &[]) {
        let manager = &rt.desired.topology.first_manager().name;
        if let Some(machine) = machines.iter().find(|m| &m.name == manager) {
            if let Ok(Ok(engine)) = tokio::time::timeout(Duration::from_secs(10), rt.driver.engine(machine)).await {
                exported = engine.client_env;
            }
        }
    }
    points_at(cluster, lab_cluster, docker_host, &exported)
}

/// [`env_points_here`]'s decision: `LAB_CLUSTER` names `cluster`, or `DOCKER_HOST` is the
/// value `exported` (what `lab env` prints for the cluster) gives it.
fn points_at(
    cluster: &str,
    lab_cluster: Option<&str>,
    docker_host: Option<&str>,
    exported: &[(String, String)],
) -> bool {
    let host_here = docker_host
        .filter(|h| !h.trim().is_empty())
        .is_some_and(|h| exported.iter().any(|(k, v)| k == "DOCKER_HOST" && v == h));
    lab_cluster == Some(cluster) || host_here
}

#[cfg(test)]
mod tests {
    use super::points_at;

    /// Issue 18, item 17: `down` says to unset the shell only where the shell points at the
    /// cluster it removed.
    #[test]
    fn the_shell_points_at_the_cluster_only_by_its_own_variables() {
        let sock = "unix:///s/lab/clusters/c1/nodes/manager/docker.sock";
        let exported = vec![("DOCKER_HOST".to_string(), sock.to_string())];
        assert!(points_at("c1", Some("c1"), None, &[]), "LAB_CLUSTER names it");
        assert!(points_at("c1", None, Some(sock), &exported), "DOCKER_HOST is its manager's");
        assert!(!points_at("c1", Some("c2"), None, &exported), "LAB_CLUSTER names another cluster");
        assert!(!points_at("c1", None, Some("unix:///var/run/docker.sock"), &exported), "the host's engine");
        assert!(!points_at("c1", None, None, &exported), "nothing set");
        assert!(!points_at("c1", None, Some(""), &[("DOCKER_HOST".into(), String::new())]), "empty is unset");
        assert!(!points_at("c1", None, Some(sock), &[("OTHER".into(), sock.into())]), "not as DOCKER_HOST");
    }
}
