//! The desired shape of a cluster: its name, its managers and workers, and their labels.
//!
//! Node names follow the seed procedure: `manager` when there is one manager (`manager1..M`
//! otherwise) and `worker1..N`. Cluster names become container, machine, volume and network
//! names, so they are restricted to what every driver's naming accepts.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Longest cluster name: it is a prefix of container, volume and machine names.
pub const MAX_CLUSTER_NAME: usize = 32;
/// Most workers lab will plan for in one cluster; a guard against typos like `--workers 200`.
pub const MAX_WORKERS: u32 = 64;
/// Most managers: Raft gains nothing past seven.
pub const MAX_MANAGERS: u32 = 7;

/// A validated cluster name: lowercase letters, digits and `-`, starting with a letter, at
/// most [`MAX_CLUSTER_NAME`] characters.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ClusterName(String);

impl ClusterName {
    /// Validates `name`; `what` names where it came from (e.g. `--cluster`) for the error.
    pub fn parse(name: &str, what: &str) -> Result<Self> {
        let bad = |why: &str| Error::input(what, format!("invalid cluster name {name:?}: {why}"));
        if name.is_empty() {
            return Err(bad("it is empty"));
        }
        if name.len() > MAX_CLUSTER_NAME {
            return Err(bad(&format!("it is longer than {MAX_CLUSTER_NAME} characters")));
        }
        if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
            return Err(bad("it must start with a lowercase letter"));
        }
        if let Some(c) = name.chars().find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-')) {
            return Err(bad(&format!("{c:?} is not allowed (use lowercase letters, digits and '-')")));
        }
        Ok(ClusterName(name.to_string()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ClusterName {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        ClusterName::parse(&s, "cluster").map_err(|e| e.to_string())
    }
}

impl From<ClusterName> for String {
    fn from(c: ClusterName) -> String {
        c.0
    }
}

impl fmt::Display for ClusterName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A node's swarm role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A swarm manager (drained when the cluster has workers).
    Manager,
    /// A swarm worker.
    Worker,
}

impl Role {
    /// `manager` or `worker`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Manager => "manager",
            Role::Worker => "worker",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether managers take tasks (`docker node update --availability`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Availability {
    /// Managers run no tasks while there are workers, as the seed drains its manager: a
    /// manager busy with tasks is slower to answer Raft, and the swarm's control plane is what
    /// keeps every service alive.
    #[default]
    Drain,
    /// Managers take tasks like workers.
    Active,
}

impl fmt::Display for Availability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Availability::Drain => "drain",
            Availability::Active => "active",
        })
    }
}

/// One node of the desired topology.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSpec {
    /// Node name within the cluster (`manager`, `worker1`, ...).
    pub name: String,
    /// Its swarm role.
    pub role: Role,
    /// Swarm node labels lab sets on it, besides its own `lab.*` labels.
    pub labels: BTreeMap<String, String>,
}

/// The desired cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topology {
    /// The cluster's name.
    pub cluster: ClusterName,
    /// Managers first (the first one initialises the swarm), then workers.
    pub nodes: Vec<NodeSpec>,
    /// Whether managers take tasks when there are workers.
    #[serde(default)]
    pub manager_availability: Availability,
}

/// Label that marks the node the registry is pinned to.
pub const REGISTRY_NODE_LABEL: &str = "lab.registry";

/// The names of `count` managers: those of `existing` first, in the seed's order (`manager`,
/// then `manager1`, `manager2`, ...), then `managerN` for the lowest N not taken (`manager`
/// takes 1). Without existing managers: `manager` alone, or `manager1..count`.
fn manager_names(count: u32, existing: &[String]) -> Vec<String> {
    let number = |n: &str| match n {
        "manager" => Some(1),
        _ => n.strip_prefix("manager").and_then(|d| d.parse::<u32>().ok()),
    };
    let mut kept: Vec<&String> = existing.iter().filter(|n| number(n).is_some()).collect();
    kept.sort_by_key(|n| (number(n), n.len()));
    kept.dedup();
    if kept.is_empty() && count == 1 {
        return vec!["manager".into()];
    }
    let mut names: Vec<String> = kept.iter().take(count as usize).map(|n| n.to_string()).collect();
    let taken: Vec<u32> = kept.iter().filter_map(|n| number(n)).collect();
    let mut i = 1;
    while names.len() < count as usize {
        if !taken.contains(&i) {
            names.push(format!("manager{i}"));
        }
        i += 1;
    }
    names
}

impl Topology {
    /// Builds the seed's naming for `managers` managers and `workers` workers. Returns the
    /// topology and any warnings (an even number of managers).
    pub fn new(cluster: ClusterName, managers: u32, workers: u32) -> Result<(Self, Vec<String>)> {
        Self::keeping(cluster, managers, workers, &[])
    }

    /// As [`Topology::new`], keeping the names of the managers a cluster has (`existing`):
    /// scaling `manager` to three managers adds `manager2` and `manager3`, and scaling
    /// `manager1..3` down to one keeps `manager1`. A manager is never made again only to be
    /// renamed, which would cost the swarm its Raft state.
    pub fn keeping(
        cluster: ClusterName,
        managers: u32,
        workers: u32,
        existing: &[String],
    ) -> Result<(Self, Vec<String>)> {
        if managers == 0 {
            return Err(Error::input("managers", "must be at least 1 (a swarm needs a manager), got 0"));
        }
        if managers > MAX_MANAGERS {
            return Err(Error::input("managers", format!("at most {MAX_MANAGERS} are supported, got {managers}")));
        }
        if workers > MAX_WORKERS {
            return Err(Error::input("workers", format!("at most {MAX_WORKERS} are supported, got {workers}")));
        }
        let mut warnings = Vec::new();
        if managers.is_multiple_of(2) {
            warnings.push(format!(
                "{managers} managers: an even number of managers tolerates no more failures than {} \
                 (Raft needs a majority); consider {}",
                managers - 1,
                managers + 1
            ));
        }
        let mut nodes = Vec::new();
        for name in manager_names(managers, existing) {
            nodes.push(NodeSpec { name, role: Role::Manager, labels: BTreeMap::new() });
        }
        for i in 1..=workers {
            nodes.push(NodeSpec { name: format!("worker{i}"), role: Role::Worker, labels: BTreeMap::new() });
        }
        Ok((Topology { cluster, nodes, manager_availability: Availability::Drain }, warnings))
    }

    /// A topology from nodes a driver dictates (a hosts file). Managers keep their order and
    /// come first, so the first listed manager initialises the swarm.
    pub fn from_nodes(cluster: ClusterName, nodes: Vec<NodeSpec>) -> Result<(Self, Vec<String>)> {
        let managers = nodes.iter().filter(|n| n.role == Role::Manager).count() as u32;
        if managers == 0 {
            return Err(Error::input("hosts", "no host has role \"manager\"; a swarm needs at least one"));
        }
        let mut warnings = Vec::new();
        if managers.is_multiple_of(2) {
            warnings.push(format!(
                "{managers} managers: an even number of managers tolerates no more failures than {}",
                managers - 1
            ));
        }
        let (mut sorted, workers): (Vec<_>, Vec<_>) = nodes.into_iter().partition(|n| n.role == Role::Manager);
        sorted.extend(workers);
        Ok((Topology { cluster, nodes: sorted, manager_availability: Availability::Drain }, warnings))
    }

    /// Adds labels to every node of `role`.
    pub fn add_role_labels(&mut self, role: Role, labels: &BTreeMap<String, String>) {
        for n in self.nodes.iter_mut().filter(|n| n.role == role) {
            n.labels.extend(labels.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
    }

    /// The node that initialises the swarm.
    pub fn first_manager(&self) -> &NodeSpec {
        self.nodes.iter().find(|n| n.role == Role::Manager).expect("topology has a manager")
    }

    /// Whether managers are drained: when asked to be, and only when there is a worker to run
    /// tasks.
    pub fn drain_managers(&self) -> bool {
        self.manager_availability == Availability::Drain && self.nodes.iter().any(|n| n.role == Role::Worker)
    }

    /// The node the registry is pinned to: the first worker, or the first manager when there
    /// are no workers (then managers are not drained).
    pub fn registry_node(&self) -> &NodeSpec {
        self.nodes.iter().find(|n| n.role == Role::Worker).unwrap_or_else(|| self.first_manager())
    }

    /// Looks a node up by name.
    pub fn node(&self, name: &str) -> Option<&NodeSpec> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// The swarm labels lab wants on `node`: the user's, plus `lab.cluster`, `lab.node`,
    /// `lab.role` and, on the registry node, [`REGISTRY_NODE_LABEL`].
    pub fn swarm_labels(&self, node: &NodeSpec) -> BTreeMap<String, String> {
        let mut labels = node.labels.clone();
        labels.insert("lab.cluster".into(), self.cluster.to_string());
        labels.insert("lab.node".into(), node.name.clone());
        labels.insert("lab.role".into(), node.role.to_string());
        if self.registry_node().name == node.name {
            labels.insert(REGISTRY_NODE_LABEL.into(), "true".into());
        }
        labels
    }
}

/// Longest node name: it is part of container and machine names and a socket's file name.
pub const MAX_NODE_NAME: usize = 32;

/// What a node name may be, whoever gives it (lab's own `manager`/`workerN`, a hosts file, an
/// external driver): a letter, then letters, digits, `-` or `_`, at most [`MAX_NODE_NAME`]. It
/// becomes file names (`{node}.sock`), container names and swarm labels, so never a path.
/// `Err` says what is wrong, for the caller's message.
pub fn check_node_name(name: &str) -> std::result::Result<(), String> {
    if name.is_empty() || name.len() > MAX_NODE_NAME {
        return Err(format!("a node name has 1 to {MAX_NODE_NAME} characters"));
    }
    if !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return Err("a node name starts with a letter".into());
    }
    match name.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_')) {
        Some(c) => Err(format!("{c:?} is not allowed in a node name (letters, digits, '-' and '_')")),
        None => Ok(()),
    }
}

/// Checks a swarm label key or value given by the user.
pub fn validate_label(what: &str, key: &str, value: &str) -> Result<()> {
    if key.is_empty() || key.starts_with("lab.") {
        return Err(Error::input(what, format!("invalid label key {key:?}: empty or in lab's own `lab.` namespace")));
    }
    if key.chars().chain(value.chars()).any(|c| c.is_control()) {
        return Err(Error::input(what, format!("invalid label {key:?}={value:?}: control characters")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Result<ClusterName> {
        ClusterName::parse(s, "--cluster")
    }

    #[test]
    fn managers_keep_their_names_when_the_count_changes() {
        let names = |count, existing: &[&str]| {
            let existing: Vec<String> = existing.iter().map(|s| s.to_string()).collect();
            manager_names(count, &existing)
        };
        assert_eq!(names(1, &[]), ["manager"]);
        assert_eq!(names(3, &[]), ["manager1", "manager2", "manager3"]);
        assert_eq!(names(3, &["manager"]), ["manager", "manager2", "manager3"]);
        assert_eq!(names(1, &["manager1", "manager2", "manager3"]), ["manager1"]);
        assert_eq!(names(1, &["manager3", "manager2"]), ["manager2"]);
        assert_eq!(
            names(5, &["manager2", "manager1", "manager3"]),
            ["manager1", "manager2", "manager3", "manager4", "manager5"]
        );
        assert_eq!(names(3, &["manager2"]), ["manager2", "manager1", "manager3"]);
        let (t, _) = Topology::keeping(ClusterName::parse("c", "c").unwrap(), 3, 1, &["manager".into()]).unwrap();
        assert_eq!(t.first_manager().name, "manager", "the swarm's first manager stays first");
    }

    #[test]
    fn cluster_names() {
        for ok in ["lab", "demo-2", "a", &"a".repeat(32)] {
            assert!(name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Lab", "2lab", "-lab", "la_b", "lab.x", "lab x", &"a".repeat(33), "lab;rm"] {
            let err = name(bad).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad}");
            assert!(err.to_string().starts_with("--cluster: invalid cluster name"), "{err}");
        }
    }

    #[test]
    fn node_names() {
        for ok in ["manager", "worker12", "gpu-box_2", &"a".repeat(32)] {
            assert_eq!(check_node_name(ok), Ok(()), "{ok}");
        }
        for bad in ["", "../x", "a/b", ".", "1st", "-x", "a b", "x\n", &"a".repeat(33)] {
            assert!(check_node_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn seed_naming() {
        let (t, w) = Topology::new(name("lab").unwrap(), 1, 2).unwrap();
        let names: Vec<_> = t.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["manager", "worker1", "worker2"]);
        assert!(w.is_empty());
        assert_eq!(t.registry_node().name, "worker1");
        assert!(t.drain_managers());

        let (t, w) = Topology::new(name("lab").unwrap(), 2, 0).unwrap();
        let names: Vec<_> = t.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["manager1", "manager2"]);
        assert_eq!(w.len(), 1, "even managers warn");
        assert_eq!(t.registry_node().name, "manager1");
        assert!(!t.drain_managers());
    }

    #[test]
    fn zero_managers_is_bad_input() {
        let err = Topology::new(name("lab").unwrap(), 0, 2).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("managers"));
    }

    #[test]
    fn labels() {
        let (t, _) = Topology::new(name("c").unwrap(), 1, 1).unwrap();
        let l = t.swarm_labels(t.node("worker1").unwrap());
        assert_eq!(l["lab.registry"], "true");
        assert_eq!(l["lab.role"], "worker");
        assert!(!t.swarm_labels(t.node("manager").unwrap()).contains_key("lab.registry"));
        assert!(validate_label("--label", "lab.x", "1").is_err());
        assert!(validate_label("--label", "zone", "a").is_ok());
    }
}
