//! The managers' Raft quorum, in numbers and in words: how many managers the swarm counts,
//! how many answer, and how many more failures it can take.
//!
//! Raft commits a change once a majority of the managers agree, so a swarm of `n` managers
//! works while more than `n / 2` are reachable: 3 tolerate 1 failure, 5 tolerate 2.

use std::fmt;

use bollard::models::{Node, NodeSpecRoleEnum, Reachability};

/// The swarm label lab gives each node: its name.
pub const NODE_LABEL: &str = "lab.node";

/// The managers as a manager's node list counts them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Quorum {
    /// Managers in the Raft membership.
    pub managers: u32,
    /// Of them, those reachable (the leader included).
    pub reachable: u32,
    /// The names (lab's, else the swarm's hostnames) of those that are not.
    pub unreachable: Vec<String>,
}

impl Quorum {
    /// Counts the managers among `nodes` (a manager's `docker node ls`); `name` gives lab's
    /// name for a swarm node ID, where lab knows it.
    pub fn of(nodes: &[Node], name: impl Fn(&str) -> Option<String>) -> Quorum {
        let mut q = Quorum::default();
        for n in nodes {
            let manager = n.spec.as_ref().and_then(|s| s.role) == Some(NodeSpecRoleEnum::MANAGER);
            let Some(status) = n.manager_status.as_ref().filter(|_| manager) else { continue };
            q.managers += 1;
            if status.leader == Some(true) || status.reachability == Some(Reachability::REACHABLE) {
                q.reachable += 1;
            } else {
                // lab's name: the node's `lab.node` label, else what lab knows of its ID, else
                // the hostname it registered with.
                let label = n.spec.as_ref().and_then(|s| s.labels.as_ref()).and_then(|l| l.get(NODE_LABEL)).cloned();
                let host = n.description.as_ref().and_then(|d| d.hostname.clone());
                let id = n.id.clone().unwrap_or_default();
                q.unreachable.push(label.or_else(|| name(&id)).or(host).unwrap_or(id));
            }
        }
        q.unreachable.sort();
        q
    }

    /// The quorum as the manager `docker` counts it, or the swarm's own words when it cannot
    /// list its nodes (without a quorum: "The swarm does not have a leader").
    pub async fn ask(docker: &bollard::Docker) -> Result<Quorum, String> {
        let nodes = docker.list_nodes(None).await.map_err(|e| crate::error::engine_message(&e))?;
        Ok(Quorum::of(&nodes, |_| None))
    }

    /// The fewest reachable managers that still make a majority.
    pub fn majority(&self) -> u32 {
        self.managers / 2 + 1
    }

    /// Whether a majority answers, so the swarm can change anything.
    pub fn holds(&self) -> bool {
        self.reachable >= self.majority()
    }

    /// How many more managers may fail before the quorum is lost.
    pub fn tolerates(&self) -> u32 {
        self.reachable.saturating_sub(self.majority())
    }

    /// Every manager answers.
    pub fn healthy(&self) -> bool {
        self.reachable == self.managers
    }
}

/// "3 managers, 3 reachable: tolerates 1 failure"; "degraded: 2 of 3 reachable, tolerates 0
/// more (unreachable: manager1)"; "lost: 1 of 3 reachable, a majority is 2".
impl fmt::Display for Quorum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (n, r, t) = (self.managers, self.reachable, self.tolerates());
        let failures = if t == 1 { "failure" } else { "failures" };
        if self.healthy() {
            let managers = if n == 1 { "manager" } else { "managers" };
            return write!(f, "{n} {managers}, {r} reachable: tolerates {t} {failures}");
        }
        if self.holds() {
            write!(f, "degraded: {r} of {n} reachable, tolerates {t} more")?;
        } else {
            write!(f, "lost: {r} of {n} reachable, a majority is {}", self.majority())?;
        }
        write!(f, " (unreachable: {})", self.unreachable.join(", "))
    }
}

/// A swarm whose managers answer for themselves, but too few of them to elect a leader, or
/// to keep the one they have (it lists the swarm for an election timeout more, and commits
/// nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumLoss {
    /// The cluster's managers whose engines answer and are in its swarm.
    pub survivors: Vec<String>,
    /// The cluster's managers that do not.
    pub lost: Vec<String>,
    /// The swarm's own words, as a surviving manager gave them.
    pub cause: String,
}

impl QuorumLoss {
    /// Whether the survivors are a majority of the managers: then the swarm is most likely
    /// electing a leader (the old one just went), not without a quorum.
    pub fn electing(&self) -> bool {
        self.survivors.len() > self.lost.len()
    }

    /// The error `lab up` (and `check`) give, naming the survivors, what was lost and the one
    /// way back lab offers.
    pub fn error(&self, cluster: &str) -> crate::Error {
        let total = self.survivors.len() + self.lost.len();
        let answer = if self.survivors.len() == 1 { "answers" } else { "answer" };
        crate::Error::op(
            format!("cluster {cluster}"),
            format!(
                "its swarm has lost its quorum: {} of {total} managers {answer} ({}); lost: {} (the swarm says: {})",
                self.survivors.len(),
                self.survivors.join(", "),
                self.lost.join(", "),
                self.cause
            ),
        )
        .with_hint(self.way_back(cluster))
    }

    /// The way back: bring the lost managers back, or force a new cluster on a survivor.
    pub fn way_back(&self, cluster: &str) -> String {
        format!(
            "without a majority of its managers the swarm can change nothing, though running tasks go on. If the \
             lost managers can come back (their machines restarted, their network mended), bring them back and run \
             `lab up --cluster {cluster}`. If they cannot, `lab up --cluster {cluster} --force-new-cluster` makes {} \
             the only manager of a new Raft cluster (moby's `docker swarm init --force-new-cluster`), keeping the \
             swarm's services, secrets and the registry's data, then makes {} again and joins them as managers",
            self.survivors.first().map(String::as_str).unwrap_or("a surviving manager"),
            self.lost.join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{ManagerStatus, NodeDescription, NodeSpec};

    fn manager(id: &str, leader: bool, reachable: bool) -> Node {
        Node {
            id: Some(id.into()),
            spec: Some(NodeSpec { role: Some(NodeSpecRoleEnum::MANAGER), ..Default::default() }),
            description: Some(NodeDescription { hostname: Some(format!("host-{id}")), ..Default::default() }),
            manager_status: Some(ManagerStatus {
                leader: Some(leader),
                reachability: Some(if reachable { Reachability::REACHABLE } else { Reachability::UNREACHABLE }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn worker(id: &str) -> Node {
        Node {
            id: Some(id.into()),
            spec: Some(NodeSpec { role: Some(NodeSpecRoleEnum::WORKER), ..Default::default() }),
            ..Default::default()
        }
    }

    fn named(id: &str) -> Option<String> {
        (id == "a").then(|| "manager1".to_string())
    }

    #[test]
    fn three_managers_tolerate_one_failure_and_five_two() {
        let q = Quorum::of(&[manager("a", true, true), manager("b", false, true), manager("c", false, true)], named);
        assert_eq!((q.managers, q.reachable, q.tolerates(), q.holds()), (3, 3, 1, true));
        assert_eq!(q.to_string(), "3 managers, 3 reachable: tolerates 1 failure");
        let five: Vec<Node> = (0..5).map(|i| manager(&i.to_string(), i == 0, true)).collect();
        assert_eq!(Quorum::of(&five, named).to_string(), "5 managers, 5 reachable: tolerates 2 failures");
        let one = Quorum::of(&[manager("a", true, true), worker("w")], named);
        assert_eq!(one.to_string(), "1 manager, 1 reachable: tolerates 0 failures");
    }

    #[test]
    fn an_unreachable_manager_degrades_and_a_majority_gone_loses_it() {
        let q = Quorum::of(&[manager("a", false, false), manager("b", true, true), manager("c", false, true)], named);
        assert!(q.holds() && !q.healthy());
        assert_eq!(q.to_string(), "degraded: 2 of 3 reachable, tolerates 0 more (unreachable: manager1)");
        // A fourth member left behind by a manager made again: one more failure loses it.
        let q = Quorum::of(
            &[
                manager("a", false, false),
                manager("b", true, true),
                manager("c", false, true),
                manager("d", false, true),
            ],
            named,
        );
        assert_eq!((q.majority(), q.tolerates()), (3, 0));
        let q = Quorum::of(&[manager("a", false, false), manager("b", false, false), manager("c", true, true)], named);
        assert!(!q.holds());
        assert_eq!(q.to_string(), "lost: 1 of 3 reachable, a majority is 2 (unreachable: host-b, manager1)");
    }

    #[test]
    fn a_lost_quorum_names_the_survivors_what_was_lost_and_the_way_back() {
        let loss = QuorumLoss {
            survivors: vec!["manager3".into()],
            lost: vec!["manager1".into(), "manager2".into()],
            cause: "The swarm does not have a leader.".into(),
        };
        assert!(!loss.electing());
        let e = loss.error("c1");
        let text = e.to_string();
        assert!(
            text.contains("lost its quorum: 1 of 3 managers answers (manager3); lost: manager1, manager2"),
            "{text}"
        );
        assert!(text.contains("the swarm says: The swarm does not have a leader."), "{text}");
        let hint = e.hint().unwrap_or_default().to_string();
        assert!(hint.contains("lab up --cluster c1 --force-new-cluster") && hint.contains("makes manager3"), "{hint}");
        let two_of_three =
            QuorumLoss { survivors: vec!["a".into(), "b".into()], lost: vec!["c".into()], cause: String::new() };
        assert!(two_of_three.electing());
    }
}
