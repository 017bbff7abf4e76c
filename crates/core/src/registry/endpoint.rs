//! Where the registry's HTTP API is reached now: its node, that node's engine and its task's
//! container, for [`crate::images::distribution`].

use std::collections::HashMap;

use bollard::query_parameters::ListTasksOptionsBuilder;
use bollard::Docker;

use crate::cluster::Nodes;
use crate::error::{Error, Result};
use crate::registry::observe;
use crate::registry::SERVICE;
use std::sync::Arc;

/// Where the registry is, and how to reach it.
#[derive(Clone)]
pub struct Endpoint {
    /// The registry's node, for errors.
    pub node: String,
    /// That node's engine.
    pub docker: Docker,
    /// The registry's task container on it.
    pub container: String,
    /// In mutual TLS: how to speak TLS to it (the cluster's CA, lab's client certificate).
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// The registry's port at its node's address (what `lab registry` prints): where this
    /// machine may reach it without the engine's relay, as skopeo does. Tried first, briefly;
    /// the relay through the engine always works (VMs behind user networking, hosts behind a
    /// firewall).
    pub direct: Option<std::net::SocketAddr>,
}

/// Where the registry runs now: its node, that node's engine and its task's container, for
/// [`crate::images::distribution`]. A registry with no running task is an error naming the cause.
pub async fn endpoint(rt: &dyn Nodes) -> Result<crate::registry::Endpoint> {
    let step = "find the cluster's registry";
    let (mgr_name, mgr) = rt.manager().await?;
    let filters = HashMap::from([("service", vec![SERVICE]), ("desired-state", vec!["running"])]);
    let tasks = mgr
        .list_tasks(Some(ListTasksOptionsBuilder::new().filters(&filters).build()))
        .await
        .map_err(|e| Error::engine(&mgr_name, step, e))?;
    let running =
        tasks.iter().find(|t| t.status.as_ref().and_then(|s| s.state) == Some(bollard::models::TaskState::RUNNING));
    let Some(task) = running else {
        // The task waits for its node: that the node is stopped is the cause to name.
        let reg = rt.desired().topology.registry_node().name.clone();
        if let Some(e) = node_down(rt, &reg).await {
            return Err(e);
        }
        let why = match tasks.first().and_then(|t| t.status.as_ref()) {
            Some(s) => format!(
                "its task is {}{}",
                s.state.map(|s| s.to_string()).unwrap_or_default(),
                s.err.as_deref().map(|e| format!(": {e}")).unwrap_or_default()
            ),
            None if observe(&mgr).await.is_none() => "the swarm has no registry service".to_string(),
            None => "the registry service has no task".to_string(),
        };
        return Err(Error::node(&mgr_name, step, why).with_hint("`lab up` deploys it; `lab check` says more"));
    };
    let container = task
        .status
        .as_ref()
        .and_then(|s| s.container_status.as_ref())
        .and_then(|c| c.container_id.clone())
        .ok_or_else(|| Error::node(&mgr_name, step, "the registry's running task names no container"))?;
    let node_id = task.node_id.clone().unwrap_or_default();
    let swarm_node = mgr.inspect_node(&node_id).await.map_err(|e| Error::engine(&mgr_name, step, e))?;
    let labels = swarm_node.spec.and_then(|s| s.labels).unwrap_or_default();
    let node =
        labels.get("lab.node").cloned().or_else(|| swarm_node.description.and_then(|d| d.hostname)).unwrap_or(node_id);
    // The swarm takes a while to notice a node stopped, and lists its task as running.
    let (docker, advertised) = match rt.engine(&node).await {
        Ok(e) => (e.docker, e.advertise_addr),
        Err(e) => return Err(node_down(rt, &node).await.unwrap_or(e)),
    };
    // A registry deployed with mutual TLS is spoken to in TLS with the cluster's certificates.
    let tls = match observe(&mgr).await.and_then(|r| r.tls) {
        None => None,
        Some(_) => {
            let m = crate::tls::load(&crate::tls::dir(&rt.cluster_dir()))?.ok_or_else(|| {
                Error::node(
                    &node,
                    step,
                    "the registry requires a client certificate, and lab has none for this cluster",
                )
                .with_hint("`lab up` makes new certificates and gives them to the registry and every node")
            })?;
            Some(crate::tls::client_config(&m).map_err(|e| Error::caused(&node, step, e))?)
        }
    };
    let port = if tls.is_some() { crate::registry::TLS_PORT } else { crate::registry::PORT };
    let routes = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    let direct = match advertised.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(ip)) if on_link(&routes, ip) => Some(std::net::SocketAddr::new(ip.into(), port)),
        _ => None,
    };
    Ok(crate::registry::Endpoint { node, docker, container, tls, direct })
}

/// Whether `ip` is on a network this machine is attached to, by the kernel's IPv4 routing
/// table (`/proc/net/route`, given as `routes`): a route with no gateway, other than the
/// default one, covers it. Only then does lab talk to the registry's address itself. A node
/// address that is not (a QEMU VM's 192.168.77.x behind user networking) would be sent
/// through the default gateway to whatever answers there, outside this machine: in CI
/// something beyond the gateway answered `GET /v2/` with 404, and `lab push` failed.
pub(crate) fn on_link(routes: &str, ip: std::net::Ipv4Addr) -> bool {
    // Addresses in the table are hex words in the machine's byte order (little-endian on x86).
    let word = |s: &str| u32::from_str_radix(s, 16).ok().map(|w| std::net::Ipv4Addr::from(w.to_le_bytes()));
    let ip = u32::from(ip);
    routes.lines().skip(1).any(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        match (f.get(1).and_then(|d| word(d)), f.get(2).and_then(|g| word(g)), f.get(7).and_then(|m| word(m))) {
            (Some(dest), Some(gateway), Some(mask)) => {
                let (dest, mask) = (u32::from(dest), u32::from(mask));
                gateway.is_unspecified() && mask != 0 && ip & mask == dest & mask
            }
            _ => false,
        }
    })
}

/// The error that says the registry's node `node` is not running, if it is not.
async fn node_down(rt: &dyn Nodes, node: &str) -> Option<Error> {
    let down = crate::registry::check::machines_down(rt).await;
    let why = down.get(node)?;
    let fix = if why == "missing" { "`lab up` makes it" } else { "`lab up` starts it" };
    Some(
        Error::node(node, "find the cluster's registry", format!("the registry's node is {why}"))
            .with_hint(format!("{fix}, and the registry with it")),
    )
}

#[cfg(test)]
mod tests {
    use super::on_link;

    /// This machine's table in CI: a default route through 192.0.2.1, the docker bridges, and
    /// eth0's own network.
    const ROUTES: &str = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
        eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
        docker0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n\
        br-f807606ad7c4\t0090A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
        eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";

    #[test]
    fn only_addresses_of_attached_networks_are_reached_directly() {
        assert!(on_link(ROUTES, "192.168.144.101".parse().unwrap()), "a docker node, on its bridge");
        assert!(on_link(ROUTES, "172.17.0.2".parse().unwrap()));
        assert!(!on_link(ROUTES, "192.168.77.10".parse().unwrap()), "a QEMU VM's address: only the default route");
        assert!(!on_link(ROUTES, "10.1.2.3".parse().unwrap()));
        assert!(!on_link("", "192.168.144.101".parse().unwrap()), "no table, no direct way");
    }
}
