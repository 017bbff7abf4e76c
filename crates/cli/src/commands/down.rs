//! `lab down`: remove everything `up` made for the cluster.

use futures_util::future::join_all;
use lab_core::state::Paths;
use lab_core::Result;

use super::cluster::{existing, reporter};
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
        lab_core::teardown::dismantle(&rt).await?;
    }
    rt.driver.teardown().await?;
    paths.remove(&cluster)?;
    if machines.is_empty() && !known {
        progress.note(&format!("nothing to remove: lab knows no cluster named {cluster} and found none of its nodes"));
    } else {
        progress.note(&format!("cluster {cluster} is gone"));
    }
    Ok(0)
}
