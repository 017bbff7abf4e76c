//! Mutual TLS: the certificates made (or renewed when due), then every node's engine given
//! its own client certificate. In open mode, certificates a node got before are left: they are
//! the node's own and harmless (Docker tries TLS first for `localhost:5000` and falls back to
//! plain HTTP).
//!
//! Revocation: distribution reads no revocation list, so a key lab gave a node stops working
//! only when the registry trusts another CA. When a node that was issued a certificate from
//! the current CA leaves the topology (or on `--renew-certs`), a new CA is made and every
//! remaining node is issued again from it; a node that leaves but stays (its machine is not
//! lab's to destroy) and still answers first loses its relay and its certificate.

use std::collections::BTreeMap;

use super::observed::{CertsObs, Observed};
use super::order::{Done, Plan};
use crate::cluster::{Desired, Step};
use crate::registry::is_relay;
use crate::state::RegistryTls;

/// The certificates lab keeps, if they will do: made, not due for renewal, and issued to no
/// node that left the topology.
pub(super) fn current<'a>(desired: &Desired, observed: &'a Observed) -> Option<&'a CertsObs> {
    observed.certs.as_ref().filter(|c| !c.due && departed(desired, c).is_empty() && !desired.renew_certs)
}

/// The nodes issued a certificate from the current CA that are not in the topology any more.
fn departed<'a>(desired: &Desired, c: &'a CertsObs) -> Vec<&'a str> {
    c.nodes.keys().map(String::as_str).filter(|n| desired.topology.node(n).is_none()).collect()
}

/// The step that makes the certificates, renews them when due (a renewal names new
/// certificates, so the registry and every node get them again), or makes a new CA when a
/// node left or `--renew-certs` asks. A node that left, answers, and is not destroyed loses
/// its relay and certificate first.
pub(super) fn issue(desired: &Desired, observed: &Observed, p: &mut Plan) -> Option<usize> {
    if desired.tls != RegistryTls::Mutual || current(desired, observed).is_some() {
        return None;
    }
    let Some(c) = observed.certs.as_ref() else { return Some(p.push(Step::IssueRegistryCerts, [])) };
    let gone = departed(desired, c);
    let reason = match (gone.as_slice(), desired.renew_certs) {
        (_, true) => "--renew-certs".to_string(),
        ([], false) => return Some(p.push(Step::IssueRegistryCerts, [])),
        ([one], false) => format!("{one} left the cluster"),
        (many, false) => format!("{} left the cluster", many.join(", ")),
    };
    let revoked: Vec<Option<usize>> = revoke(desired, observed, p).into_iter().map(Some).collect();
    Some(p.push(Step::RenewRegistryCa { reason }, revoked))
}

/// The relay and certificate taken off every node that left the topology, stays (lab may not
/// destroy machines), answers, and still has either.
fn revoke(desired: &Desired, observed: &Observed, p: &mut Plan) -> Vec<usize> {
    if desired.capabilities.destroy {
        return Vec::new();
    }
    observed
        .nodes
        .iter()
        .filter(|(n, o)| {
            desired.topology.node(n).is_none()
                && o.engine
                && (o.registry_certs.is_some() || o.forwarder.as_deref().is_some_and(is_relay))
        })
        .map(|(n, _)| p.push(Step::RevokeNode { node: n.clone() }, []))
        .collect()
}

/// Every node whose engine lacks its current certificate gets one, through a helper
/// container of the registry image, which must be there first.
pub(super) fn node_certs<'a>(
    desired: &'a Desired,
    observed: &Observed,
    done: &Done<'a>,
    issue: Option<usize>,
    p: &mut Plan,
) -> BTreeMap<&'a str, usize> {
    let mut steps = BTreeMap::new();
    if desired.tls != RegistryTls::Mutual {
        return steps;
    }
    let certs = current(desired, observed);
    for node in &desired.topology.nodes {
        let name = node.name.as_str();
        let has = if done.fresh.contains(name) {
            None
        } else {
            observed.nodes.get(name).filter(|o| o.engine).and_then(|o| o.registry_certs.as_deref())
        };
        let want = certs.and_then(|c| c.nodes.get(name)).map(String::as_str);
        if issue.is_some() || has.is_none() || has != want {
            let c = p.push(Step::NodeCerts { node: name.into() }, [done.engine(name), done.image(name), issue]);
            steps.insert(name, c);
        }
    }
    steps
}
