//! Which Docker engine a cluster lives on.
//!
//! "The local engine" is whatever `DOCKER_HOST` names, and `eval "$(lab env)"` points
//! `DOCKER_HOST` at a node's engine. So the driver records, when a cluster is first made, the
//! engine's endpoint and ID in `engine.json` in the cluster's state directory, and every later
//! command for that cluster uses that engine, whatever `DOCKER_HOST` says then. A cluster with
//! no record is new (or lab lost its state): it goes on the engine `DOCKER_HOST` names, unless
//! that engine is a node of another lab cluster, which is refused unless the user says so.

use std::path::{Component, Path};

use lab_core::state::{make_private_dir, write_atomic};
use lab_core::{Error, Result};
use serde::{Deserialize, Serialize};

/// The file, in the cluster's state directory.
pub(crate) const RECORD_FILE: &str = "engine.json";
/// Where the docker CLI and bollard look when `DOCKER_HOST` is unset.
pub(crate) const DEFAULT_ENDPOINT: &str = "unix:///var/run/docker.sock";
/// Labels the docker driver gives each node's dockerd (`docker info` shows them), and its
/// containers, volumes and network.
pub(crate) const CLUSTER_LABEL: &str = "lab.cluster";
pub(crate) const NODE_LABEL: &str = "lab.node";

/// The engine a cluster was made on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EngineRecord {
    /// How to reach it, e.g. `unix:///var/run/docker.sock`.
    pub endpoint: String,
    /// Its ID, as `docker info` reports it.
    pub engine_id: String,
}

/// The cluster's record; `None` if there is none (a new cluster, or lost state).
pub(crate) fn read(state_dir: &Path) -> Result<Option<EngineRecord>> {
    let path = state_dir.join(RECORD_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(Error::State { path, source }),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| Error::State { path, source: std::io::Error::new(std::io::ErrorKind::InvalidData, e) })
}

/// Writes the record atomically, 0600 in the (0700) state directory.
pub(crate) fn write(state_dir: &Path, record: &EngineRecord) -> Result<()> {
    make_private_dir(state_dir)?;
    write_atomic(&state_dir.join(RECORD_FILE), &serde_json::to_vec_pretty(record).expect("record serialises"))
}

/// Removes the record, and the state directory with it if nothing else is in it: for a first
/// `up` that stopped before it made anything, whose record no command would ever list.
pub(crate) fn forget(state_dir: &Path) {
    let _ = std::fs::remove_file(state_dir.join(RECORD_FILE));
    // Fails, as it should, where the directory holds anything else.
    let _ = std::fs::remove_dir(state_dir);
}

/// The endpoint `DOCKER_HOST` names, or the default socket when it is unset or empty.
pub(crate) fn from_env(docker_host: Option<&str>) -> String {
    docker_host.map(str::trim).filter(|h| !h.is_empty()).unwrap_or(DEFAULT_ENDPOINT).to_string()
}

/// Which lab cluster and node an engine is, if it is one: from the labels lab starts each
/// node's dockerd with, else (nodes made before those labels) from where its socket is, the
/// `.../lab/clusters/<cluster>/nodes/<node>/docker.sock` that `lab env` exports.
pub(crate) fn lab_node(labels: &[String], endpoint: &str) -> Option<(String, String)> {
    let label = |key: &str| {
        labels.iter().find_map(|l| l.split_once('=').filter(|(k, _)| *k == key).map(|(_, v)| v.to_string()))
    };
    if let (Some(c), Some(n)) = (label(CLUSTER_LABEL), label(NODE_LABEL)) {
        return Some((c, n));
    }
    let path = Path::new(endpoint.strip_prefix("unix://")?);
    let parts: Vec<&str> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => s.to_str(),
            _ => None,
        })
        .collect();
    match parts.as_slice() {
        [.., "lab", "clusters", cluster, "nodes", node, "docker.sock"] => Some((cluster.to_string(), node.to_string())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_endpoint_when_docker_host_is_unset_or_empty() {
        assert_eq!(from_env(None), DEFAULT_ENDPOINT);
        assert_eq!(from_env(Some("  ")), DEFAULT_ENDPOINT);
        assert_eq!(from_env(Some("unix:///x.sock")), "unix:///x.sock");
    }

    #[test]
    fn a_lab_node_is_known_by_its_engine_labels() {
        let labels = vec!["foo=bar".to_string(), "lab.cluster=nc2".into(), "lab.node=manager".into()];
        assert_eq!(lab_node(&labels, "tcp://10.0.0.1:2375"), Some(("nc2".into(), "manager".into())));
    }

    #[test]
    fn a_lab_node_is_known_by_the_socket_path_lab_env_exports() {
        let ep = "unix:///home/u/.local/state/lab/clusters/nc2/nodes/worker1/docker.sock";
        assert_eq!(lab_node(&[], ep), Some(("nc2".into(), "worker1".into())));
        assert_eq!(lab_node(&[], DEFAULT_ENDPOINT), None);
        assert_eq!(lab_node(&["lab.cluster=x".into()], "unix:///run/docker.sock"), None);
    }

    #[test]
    fn the_record_round_trips_privately() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile_dir();
        let st = dir.join("c");
        assert_eq!(read(&st).unwrap(), None);
        let r = EngineRecord { endpoint: DEFAULT_ENDPOINT.into(), engine_id: "abc".into() };
        write(&st, &r).unwrap();
        assert_eq!(read(&st).unwrap(), Some(r));
        let mode = std::fs::metadata(st.join(RECORD_FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Issue 18, item 17: forgetting the record of a cluster that has nothing else leaves
    /// no file and no directory; one that has more keeps the rest.
    #[test]
    fn forgetting_the_record_leaves_nothing_of_a_cluster_that_has_nothing_else() {
        let dir = tempfile_dir();
        let st = dir.join("c");
        let r = EngineRecord { endpoint: DEFAULT_ENDPOINT.into(), engine_id: "abc".into() };
        write(&st, &r).unwrap();
        forget(&st);
        assert!(!st.exists(), "the cluster's state directory stayed");
        write(&st, &r).unwrap();
        std::fs::write(st.join("state.json"), "{}").unwrap();
        forget(&st);
        assert_eq!(read(&st).unwrap(), None);
        assert!(st.join("state.json").exists(), "forget removed more than the record");
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("lab-engine-test-{}", lab_core::driver::support::random_suffix()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
