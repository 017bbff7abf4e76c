//! Mutual TLS: switching to it and back, a node leaving, and `--renew-certs`.

use super::*;

/// Issue 9, mutual TLS: an open cluster switched to mutual makes the certificates, gives
/// them to every node's engine, redeploys the registry with them and then puts a relay on
/// every node (port 5000 on its loopback is the relay's once the registry publishes its
/// TLS port instead), touching nothing else; then nothing is left to do. A renewal does
/// the certificates and the registry again, not the relays (they read the files at each
/// connection); a node made again gets its certificates; back to open redeploys the
/// registry once the relay on its node is gone, and turns the other relays back into
/// plain forwarders.
#[test]
fn switching_to_mutual_tls_certifies_every_node_and_redeploys_the_registry() {
    let open = desired(1, 2, ModeRequest::Auto);
    let o = converged(&open);
    let mutual = Desired { tls: RegistryTls::Mutual, ..open.clone() };
    let p = plan(&mutual, &o);
    let steps: Vec<Step> = p.steps.iter().map(|s| s.step.clone()).collect();
    let pos = |want: &Step| steps.iter().position(|s| s == want).unwrap_or_else(|| panic!("{want} not in {p:#?}"));
    let issue = pos(&Step::IssueRegistryCerts);
    let deploy = pos(&Step::DeployRegistry);
    assert!(p.steps[deploy].after.contains(&issue), "{p:#?}");
    for n in ["manager", "worker1", "worker2"] {
        let certs = pos(&Step::NodeCerts { node: n.into() });
        assert!(p.steps[certs].after.contains(&issue), "{p:#?}");
        let relay = &p.steps[pos(&Step::Forwarder { node: n.into() })];
        assert!(relay.after.contains(&certs) && relay.after.contains(&deploy), "{p:#?}");
    }
    assert_eq!(steps.len(), 8, "{steps:?}");
    let mut o2 = o.clone();
    execute(&mutual, &mut o2);
    assert!(plan(&mutual, &o2).is_empty(), "{:#?}", plan(&mutual, &o2));
    // Due for renewal: made again, and everything that holds them is redone.
    let mut due = o2.clone();
    due.certs.as_mut().unwrap().due = true;
    let p = plan(&mutual, &due);
    assert!(p.steps.iter().any(|s| s.step == Step::IssueRegistryCerts), "{p:#?}");
    assert!(p.steps.iter().any(|s| s.step == Step::DeployRegistry), "{p:#?}");
    assert_eq!(p.steps.iter().filter(|s| matches!(s.step, Step::NodeCerts { .. })).count(), 3, "{p:#?}");
    assert!(!p.steps.iter().any(|s| matches!(s.step, Step::Forwarder { .. })), "{p:#?}");
    execute(&mutual, &mut due);
    assert!(plan(&mutual, &due).is_empty());
    // A node that lost its certificates (made again) gets them, and only it.
    let mut lost = o2.clone();
    lost.nodes.get_mut("worker2").unwrap().registry_certs = None;
    let p = plan(&mutual, &lost);
    let steps: Vec<Step> = p.steps.iter().map(|s| s.step.clone()).collect();
    assert_eq!(steps, vec![Step::NodeCerts { node: "worker2".into() }]);
    // Back to open: the registry's node loses its relay before the registry publishes
    // port 5000 there; the others get plain forwarders.
    let p = plan(&open, &o2);
    let steps: Vec<Step> = p.steps.iter().map(|s| s.step.clone()).collect();
    let pos = |want: &Step| steps.iter().position(|s| s == want).unwrap_or_else(|| panic!("{want} not in {p:#?}"));
    assert_eq!(steps.len(), 4, "{steps:?}");
    let deploy = pos(&Step::DeployRegistry);
    assert!(p.steps[deploy].after.contains(&pos(&Step::Forwarder { node: "worker1".into() })), "{p:#?}");
    pos(&Step::Forwarder { node: "manager".into() });
    pos(&Step::Forwarder { node: "worker2".into() });
    let mut back = o2.clone();
    execute(&open, &mut back);
    // A new cluster in mutual TLS, its mode not chosen yet: every relay still waits for
    // the registry's TLS deploy and its node's certificates.
    let p = plan(&mutual, &Observed::default());
    let deploy = p.steps.iter().position(|s| s.step == Step::DeployRegistry).expect("a deploy");
    for (i, s) in p.steps.iter().enumerate() {
        if let Step::Forwarder { node } = &s.step {
            let certs = p.steps.iter().position(|c| c.step == Step::NodeCerts { node: node.clone() }).unwrap();
            assert!(s.after.contains(&deploy) && s.after.contains(&certs), "step {i}: {p:#?}");
        }
    }
    assert!(plan(&open, &back).is_empty(), "{:#?}", plan(&open, &back));
    // With the mesh, back to open waits for every relay to go.
    let mesh = Desired { mode: ModeRequest::Force(RegistryMode::Mesh), ..mutual.clone() };
    let mut m = o2.clone();
    execute(&mesh, &mut m);
    assert!(plan(&mesh, &m).is_empty());
    let open_mesh = Desired { tls: RegistryTls::Open, ..mesh.clone() };
    let p = plan(&open_mesh, &m);
    let deploy = p.steps.iter().position(|s| s.step == Step::DeployRegistry).expect("a deploy");
    assert_eq!(
        p.steps[deploy].after.iter().filter(|&&a| matches!(p.steps[a].step, Step::Forwarder { .. })).count(),
        3,
        "{p:#?}"
    );
    execute(&open_mesh, &mut m);
    assert!(plan(&open_mesh, &m).is_empty());
}

/// Issue 18, item 11: a node that leaves a mutual-TLS cluster keeps a key the registry
/// trusts, and distribution reads no revocation list. So the plan makes a new CA, issues
/// every remaining node its own certificate again from it, and redeploys the registry with
/// it; a node lab may not destroy, if it answers, first loses its relay and key. Then
/// nothing is left to do.
#[test]
fn a_node_leaving_a_mutual_tls_cluster_renews_the_ca_and_issues_the_rest_again() {
    let mutual = |workers| Desired { tls: RegistryTls::Mutual, ..desired(1, workers, ModeRequest::Auto) };
    let o = converged(&mutual(2));
    // Every node has a certificate of its own.
    let issued = &o.certs.as_ref().unwrap().nodes;
    let fps: std::collections::BTreeSet<&String> = issued.values().collect();
    assert_eq!((issued.len(), fps.len()), (3, 3), "{issued:#?}");
    for (name, n) in &o.nodes {
        assert_eq!(n.registry_certs.as_ref(), issued.get(name), "{name}");
    }
    let one = mutual(1);
    let p = plan(&one, &o);
    let steps: Vec<Step> = p.steps.iter().map(|s| s.step.clone()).collect();
    let pos = |want: &Step| steps.iter().position(|s| s == want).unwrap_or_else(|| panic!("{want} not in {p:#?}"));
    let renew = pos(&Step::RenewRegistryCa { reason: "worker2 left the cluster".into() });
    pos(&Step::DestroyNode { node: "worker2".into(), reason: "not in the topology".into() });
    assert!(p.steps[pos(&Step::DeployRegistry)].after.contains(&renew), "{p:#?}");
    for n in ["manager", "worker1"] {
        assert!(p.steps[pos(&Step::NodeCerts { node: n.into() })].after.contains(&renew), "{p:#?}");
    }
    assert!(!steps.contains(&Step::NodeCerts { node: "worker2".into() }), "{p:#?}");
    assert!(!steps.contains(&Step::IssueRegistryCerts), "{p:#?}");
    let mut after = o.clone();
    execute(&one, &mut after);
    assert!(plan(&one, &after).is_empty(), "{:#?}", plan(&one, &after));
    let issued: Vec<&String> = after.certs.as_ref().unwrap().nodes.keys().collect();
    assert_eq!(issued, ["manager", "worker1"]);

    // A machine lab may not destroy (an ssh host dropped from the hosts file), still
    // answering: its relay and key go first, then the CA.
    let mut kept = mutual(1);
    kept.capabilities.destroy = false;
    let p = plan(&kept, &o);
    let steps: Vec<Step> = p.steps.iter().map(|s| s.step.clone()).collect();
    let pos = |want: &Step| steps.iter().position(|s| s == want).unwrap_or_else(|| panic!("{want} not in {p:#?}"));
    let revoke = pos(&Step::RevokeNode { node: "worker2".into() });
    let renew = pos(&Step::RenewRegistryCa { reason: "worker2 left the cluster".into() });
    assert!(p.steps[renew].after.contains(&revoke), "{p:#?}");
    let mut after = o.clone();
    execute(&kept, &mut after);
    let w2 = &after.nodes["worker2"];
    assert!(w2.registry_certs.is_none() && w2.forwarder.is_none(), "{w2:#?}");
    assert!(plan(&kept, &after).is_empty(), "{:#?}", plan(&kept, &after));
    // Not answering: the new CA is all lab can do, and it does it.
    let mut silent = o.clone();
    silent.nodes.get_mut("worker2").unwrap().engine = false;
    let p = plan(&kept, &silent);
    assert!(p.steps.iter().any(|s| matches!(s.step, Step::RenewRegistryCa { .. })), "{p:#?}");
    assert!(!p.steps.iter().any(|s| matches!(s.step, Step::RevokeNode { .. })), "{p:#?}");
    // In open mode, nothing of this.
    assert!(plan(&desired(1, 1, ModeRequest::Auto), &converged(&desired(1, 2, ModeRequest::Auto)))
        .steps
        .iter()
        .all(|s| !matches!(s.step, Step::RenewRegistryCa { .. } | Step::RevokeNode { .. })));
}

/// Issue 18, item 11: `--renew-certs` does the same on demand: a new CA, every node issued
/// again, the registry redeployed (the relays stay: they read the files at each
/// connection); the next plan without the flag has nothing to do.
#[test]
fn renew_certs_makes_a_new_ca_and_issues_every_node_again() {
    let mutual = Desired { tls: RegistryTls::Mutual, ..desired(1, 2, ModeRequest::Auto) };
    let mut o = converged(&mutual);
    let renew = Desired { renew_certs: true, ..mutual.clone() };
    let p = plan(&renew, &o);
    let steps: Vec<Step> = p.steps.iter().map(|s| s.step.clone()).collect();
    let first = steps.iter().position(|s| *s == Step::RenewRegistryCa { reason: "--renew-certs".into() });
    let first = first.unwrap_or_else(|| panic!("no renewal in {p:#?}"));
    assert!(steps.contains(&Step::DeployRegistry), "{p:#?}");
    for n in ["manager", "worker1", "worker2"] {
        let c = steps.iter().position(|s| *s == Step::NodeCerts { node: n.into() }).expect("node certs");
        assert!(p.steps[c].after.contains(&first), "{p:#?}");
    }
    assert_eq!(steps.len(), 5, "{steps:?}");
    let before = o.certs.clone().unwrap();
    execute(&renew, &mut o);
    assert_ne!(o.certs.as_ref().unwrap().registry, before.registry);
    assert!(plan(&mutual, &o).is_empty(), "{:#?}", plan(&mutual, &o));
}
