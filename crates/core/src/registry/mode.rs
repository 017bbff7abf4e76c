//! How every node reaches the registry: the ingress routing mesh, or lab's forwarders
//! (fallback), decided once per cluster by looking for IPVS and at the engines' versions.

use std::time::Duration;

use crate::cluster::ModeRequest;
use crate::cluster::Nodes;
use crate::error::{Error, Result};
use crate::registry::PORT;
use crate::state::RegistryMode;

/// Decides the registry mode: the forced one, or by looking for IPVS on the first manager.
pub async fn choose_mode(rt: &dyn Nodes) -> Result<(RegistryMode, String)> {
    if let ModeRequest::Force(m) = rt.desired().mode {
        return Ok((m, "--registry-mode".into()));
    }
    let first = rt.desired().topology.first_manager().name.clone();
    if !has_ipvs(rt, &first).await.map_err(|m| Error::node(&first, "look for IPVS", m))? {
        return Ok((
            RegistryMode::Fallback,
            format!("{first} has no IPVS: forwarders relay :{PORT} to the registry's node"),
        ));
    }
    // The mesh answers on 127.0.0.1 but, before Docker 29.8, its listener on [::]:PORT takes
    // connections to ::1 and never serves them (moby#53091), and `localhost` is ::1 first on
    // most distributions: `docker push localhost:5000/...` would hang. Every node's engine
    // must be one that serves ::1.
    for node in rt.desired().topology.nodes.iter().map(|n| n.name.clone()) {
        let e = rt.engine(&node).await?;
        let version = e.docker.version().await.map_err(|err| Error::engine(&node, "ask its engine's version", err))?;
        let version = version.version.unwrap_or_default();
        if !mesh_serves_ipv6_loopback(&version) {
            return Ok((
                RegistryMode::Fallback,
                format!(
                    "{first} has IPVS, but {node}'s Docker {version} would hang localhost:{PORT} on ::1 through the \
                     mesh (moby#53091, fixed in 29.8): forwarders relay :{PORT} to the registry's node"
                ),
            ));
        }
    }
    Ok((RegistryMode::Mesh, format!("{first} has IPVS and every engine serves ::1 through the ingress routing mesh")))
}

/// Whether the ingress routing mesh of Docker `version` serves connections to `[::1]:PORT`
/// (29.8 and later; moby#53091). A version lab cannot read is taken as not.
pub fn mesh_serves_ipv6_loopback(version: &str) -> bool {
    let mut parts = version.split(|c: char| !c.is_ascii_digit()).map(|p| p.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(major), Some(minor)) => (major, minor) >= (29, 8),
        _ => false,
    }
}

pub(crate) async fn has_ipvs(rt: &dyn Nodes, node: &str) -> std::result::Result<bool, String> {
    crate::swarm::vips::has_ipvs(rt, node, Duration::from_secs(30)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_engines_from_29_8_get_the_mesh_by_auto_detection() {
        assert!(!mesh_serves_ipv6_loopback("20.10.24+dfsg1"));
        assert!(!mesh_serves_ipv6_loopback("28.2.2"));
        assert!(!mesh_serves_ipv6_loopback("29.7.9"));
        assert!(mesh_serves_ipv6_loopback("29.8.0"));
        assert!(mesh_serves_ipv6_loopback("30.0.1"));
        assert!(!mesh_serves_ipv6_loopback(""));
        assert!(!mesh_serves_ipv6_loopback("dev"));
    }
}
