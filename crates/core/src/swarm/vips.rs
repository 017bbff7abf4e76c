//! Whether the swarm's services get virtual IPs: a service's VIP, and a port published
//! through the ingress routing mesh, are IPVS rules in each node's kernel. Without IPVS
//! (this is common for Docker-in-Docker nodes on a kernel without the `ip_vs` module) the
//! swarm takes a service with a VIP all the same, and connections to it fail (`No route to
//! host`). lab's registry does without ([`crate::registry::mode`] picks its fallback); the
//! user's services must too: `endpoint_mode: dnsrr` and ports published in `mode: host`.
//!
//! `up` and `status` say so, and `lab check` reports it per node.

use std::time::Duration;

use futures_util::future::join_all;
use serde::Serialize;

use crate::cluster::{probe, Nodes};

/// Whether one node's kernel has IPVS.
#[derive(Debug, Clone, Serialize)]
pub struct VipCheck {
    /// The node.
    pub node: String,
    /// Whether its kernel has IPVS; `None`: lab could not look (the answer says why).
    pub ipvs: Option<bool>,
    /// What that means for services there, or why lab could not tell.
    pub answer: String,
}

/// What service VIPs need and what works without them, for a node's line.
pub const WITHOUT: &str = "no IPVS in the kernel: service VIPs and ingress-published ports fail here; \
     endpoint_mode dnsrr and host-mode ports work";
/// What a node with IPVS offers.
pub const WITH: &str = "IPVS in the kernel: service VIPs and ingress-published ports work";

/// Whether `node`'s kernel has IPVS (`/proc/net/ip_vs` exists), looked at on the node, within
/// `timeout`.
pub async fn has_ipvs(rt: &dyn Nodes, node: &str, timeout: Duration) -> std::result::Result<bool, String> {
    let cat: &[&str] = &["cat", "/proc/net/ip_vs"];
    let out = probe::on_node(rt, node, &[cat], &rt.desired().registry_image, timeout).await?;
    Ok(out.code == 0)
}

/// Looks for IPVS on each of `nodes` at once, each bounded to a few seconds.
pub async fn check(rt: &dyn Nodes, nodes: &[String]) -> Vec<VipCheck> {
    join_all(nodes.iter().cloned().map(|node| async move {
        let (ipvs, answer) = match has_ipvs(rt, &node, Duration::from_secs(10)).await {
            Ok(true) => (Some(true), WITH.to_string()),
            Ok(false) => (Some(false), WITHOUT.to_string()),
            Err(why) => (None, format!("could not look for IPVS: {why}")),
        };
        VipCheck { node, ipvs, answer }
    }))
    .await
}

/// IPVS on each of `nodes`: looked for on `look`, and on every node the cluster's record
/// ([`crate::state::ClusterState::ipvs`]) says nothing of; as recorded on the others. A
/// kernel's IPVS is the same until the node's machine starts again, and a look is a command
/// run in the node, the one cost of a `status` or a second `up`.
pub async fn check_or_recall(rt: &dyn Nodes, nodes: &[String], look: &[String]) -> Vec<VipCheck> {
    let record = rt.state().ipvs;
    let (fresh, recalled): (Vec<&String>, Vec<&String>) =
        nodes.iter().partition(|n| look.contains(n) || !record.contains_key(*n));
    let fresh: Vec<String> = fresh.into_iter().cloned().collect();
    let mut checks = check(rt, &fresh).await;
    checks.extend(recalled.into_iter().map(|n| recalled_check(n, record[n])));
    checks.sort_by_key(|c| nodes.iter().position(|n| *n == c.node));
    checks
}

/// The check a record says.
fn recalled_check(node: &str, ipvs: bool) -> VipCheck {
    VipCheck { node: node.into(), ipvs: Some(ipvs), answer: if ipvs { WITH } else { WITHOUT }.to_string() }
}

/// Writes what `checks` found into `record`, and forgets nodes not among `nodes`; a node lab
/// could not look at keeps what it had.
pub fn record(record: &mut std::collections::BTreeMap<String, bool>, checks: &[VipCheck], nodes: &[String]) {
    record.retain(|n, _| nodes.contains(n));
    for c in checks {
        if let Some(ipvs) = c.ipvs {
            record.insert(c.node.clone(), ipvs);
        }
    }
}

/// What the user must know when nodes lack IPVS, naming them: `None` when every node that
/// could be asked has it.
pub fn advice(checks: &[VipCheck]) -> Option<String> {
    let without: Vec<&str> = checks.iter().filter(|c| c.ipvs == Some(false)).map(|c| c.node.as_str()).collect();
    if without.is_empty() {
        return None;
    }
    // Never "NODE: ...": a line that starts so, in `lab check`, explains a failing node.
    let who = match without.as_slice() {
        [one] => format!("node {one} has"),
        many => format!("nodes {} have", many.join(", ")),
    };
    Some(format!(
        "{who} no IPVS: your swarm services there get no virtual IP (connections to a service's VIP fail with \
         \"No route to host\") and no port published through the ingress routing mesh; deploy them with \
         `endpoint_mode: dnsrr` and ports in `mode: host` (docker service create --endpoint-mode dnsrr --publish \
         mode=host,target=80,published=8080 ...); `lab check` shows it per node",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vip(node: &str, ipvs: Option<bool>) -> VipCheck {
        VipCheck { node: node.into(), ipvs, answer: String::new() }
    }

    /// A record keeps what lab saw of each node of the cluster, forgets nodes no longer in it,
    /// and keeps its word for a node lab could not look at this time.
    #[test]
    fn the_record_keeps_each_nodes_last_answer() {
        let mut r = std::collections::BTreeMap::from([("worker1".to_string(), true), ("gone".to_string(), false)]);
        let nodes = ["manager".to_string(), "worker1".to_string()];
        record(&mut r, &[vip("manager", Some(false)), vip("worker1", None)], &nodes);
        assert_eq!(
            r,
            std::collections::BTreeMap::from([("manager".to_string(), false), ("worker1".to_string(), true)])
        );
        assert_eq!(recalled_check("manager", false).answer, WITHOUT);
        assert_eq!(recalled_check("worker1", true).answer, WITH);
    }

    /// Issue 18, item 14: nodes without IPVS are named with what that means for the user's
    /// services and how to deploy anyway; nodes with it, or that could not be asked, say
    /// nothing.
    #[test]
    fn nodes_without_ipvs_get_advice_on_deploying_anyway() {
        assert_eq!(advice(&[vip("manager", Some(true)), vip("worker1", None)]), None);
        let a = advice(&[vip("manager", Some(false)), vip("worker1", Some(true)), vip("worker2", Some(false))])
            .expect("advice");
        assert!(a.starts_with("nodes manager, worker2 have no IPVS:"), "{a}");
        let one = advice(&[vip("worker1", Some(false))]).expect("advice");
        assert!(one.starts_with("node worker1 has no IPVS:"), "{one}");
        for needle in ["no virtual IP", "ingress routing mesh", "endpoint_mode: dnsrr", "mode: host", "--endpoint-mode"]
        {
            assert!(a.contains(needle), "{needle}: {a}");
        }
    }
}
