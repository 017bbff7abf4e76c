//! Mutual TLS: the certificates made (or renewed when due), then every node's engine given
//! them. In open mode, certificates a node got before are left: they are the node's own and
//! harmless (Docker tries TLS first for `localhost:5000` and falls back to plain HTTP).

use std::collections::BTreeMap;

use super::observed::{CertsObs, Observed};
use super::order::{Done, Plan};
use crate::cluster::{Desired, Step};
use crate::state::RegistryTls;

/// The certificates lab keeps, if they will do: made, and not due for renewal.
pub(super) fn current(observed: &Observed) -> Option<&CertsObs> {
    observed.certs.as_ref().filter(|c| !c.due)
}

/// The step that makes the certificates, or renews them when due (a renewal names new
/// certificates, so the registry and every node get them again).
pub(super) fn issue(desired: &Desired, observed: &Observed, p: &mut Plan) -> Option<usize> {
    (desired.tls == RegistryTls::Mutual && current(observed).is_none()).then(|| p.push(Step::IssueRegistryCerts, []))
}

/// Every node whose engine lacks the current certificates gets them, through a helper
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
    let certs = current(observed);
    for node in &desired.topology.nodes {
        let name = node.name.as_str();
        let has = if done.fresh.contains(name) {
            None
        } else {
            observed.nodes.get(name).filter(|o| o.engine).and_then(|o| o.registry_certs.as_deref())
        };
        if issue.is_some() || has.is_none() || has != certs.map(|c| c.nodes.as_str()) {
            let c = p.push(Step::NodeCerts { node: name.into() }, [done.engine(name), done.image(name), issue]);
            steps.insert(name, c);
        }
    }
    steps
}
