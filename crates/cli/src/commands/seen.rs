//! What lab last saw in a cluster's registry, so that losing the registry's node is said in
//! numbers: the registry's data lives on one node's disk, and once that node is gone there is
//! nothing left to ask.
//!
//! `up` and `push` write the registry's repositories to `registry-seen.json` in the cluster's
//! state directory when they finish. It is a file of its own, not part of the cluster's state,
//! so that `push`, which takes no lock, never races `up` over `state.json`.

use lab_core::converge::runtime::Runtime;
use lab_core::images::distribution::Client;
use lab_core::state::write_atomic;
use serde::{Deserialize, Serialize};

const FILE: &str = "registry-seen.json";

/// The repositories the registry held when lab last looked.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct Seen {
    pub(super) repositories: Vec<String>,
    /// Seconds since the Unix epoch.
    pub(super) at: u64,
}

/// Reads what lab last saw in the registry of `rt`'s cluster; nothing if it never looked.
pub(super) fn seen(rt: &Runtime) -> Seen {
    std::fs::read(rt.paths.cluster_dir(&rt.desired.topology.cluster).join(FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Asks the registry for its repositories and records them. Best effort: a registry that does
/// not answer leaves the last record as it was.
pub(super) async fn remember(rt: &Runtime) {
    let Ok(endpoint) = lab_core::registry::endpoint(rt).await else { return };
    let Ok(repositories) = Client::new(endpoint).catalog().await else { return };
    remember_these(rt, repositories);
}

/// Records `repositories` as what the registry holds now.
pub(super) fn remember_these(rt: &Runtime, repositories: Vec<String>) {
    let seen = Seen { repositories, at: lab_core::state::now() };
    let path = rt.paths.cluster_dir(&rt.desired.topology.cluster).join(FILE);
    if let Err(e) = write_atomic(&path, &serde_json::to_vec_pretty(&seen).expect("json")) {
        tracing::debug!("could not record what the registry holds: {e}");
    }
}

/// The registry's node, if its machine is gone (`machines`: what the driver reports).
pub(super) fn registry_node_gone(rt: &Runtime, machines: &[lab_core::Machine]) -> Option<String> {
    let node = rt.desired.topology.registry_node().name.clone();
    (!machines.iter().any(|m| m.name == node) && rt.state().nodes.contains_key(&node)).then_some(node)
}

/// "the registry's node worker1 is gone with its data: the 3 repositories lab last saw in it
/// (app, db, web) are lost unless the node's disk comes back".
pub(super) fn loss(node: &str, seen: &Seen) -> String {
    let n = seen.repositories.len();
    let what = match n {
        0 => return format!("the registry's node {node} is gone with its data (lab saw no repository in it)"),
        1 => format!("the 1 repository lab last saw in it ({}) is lost", seen.repositories[0]),
        _ => format!("the {n} repositories lab last saw in it ({}) are lost", list(&seen.repositories)),
    };
    format!("the registry's node {node} is gone with its data: {what} unless the node's disk comes back")
}

/// Up to five names, then how many more.
fn list(names: &[String]) -> String {
    let mut s = names.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
    if names.len() > 5 {
        s.push_str(&format!(", and {} more", names.len() - 5));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_loss_is_said_in_numbers_and_names() {
        let seen = |r: &[&str]| Seen { repositories: r.iter().map(|s| s.to_string()).collect(), at: 0 };
        assert_eq!(
            loss("worker1", &seen(&["app", "db"])),
            "the registry's node worker1 is gone with its data: the 2 repositories lab last saw in it (app, db) are \
             lost unless the node's disk comes back"
        );
        assert!(loss("worker1", &seen(&["app"])).contains("the 1 repository lab last saw in it (app) is lost"));
        let many = loss("w", &seen(&["a", "b", "c", "d", "e", "f", "g"]));
        assert!(many.contains("the 7 repositories") && many.contains("(a, b, c, d, e, and 2 more)"), "{many}");
    }
}
