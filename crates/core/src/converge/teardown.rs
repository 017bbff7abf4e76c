//! Undoing `up` on machines lab may not destroy (hosts it was given over SSH): the registry
//! stack, its volume, the forwarders, the registry certificates lab gave the engines (mutual
//! TLS), and swarm membership, workers first. Every other
//! container, image and volume on the hosts is left alone.
//!
//! Which nodes are in the cluster's swarm is observation's call ([`crate::converge::observe`]). The
//! engines are reached through the seam ([`Nodes`]) and asked only through `Engines`, one
//! method per thing taken away; the order of the work, and what becomes of each failure, is
//! decided above that line, so the tests below check it against engines that answer by hand.

use std::time::Duration;

use bollard::query_parameters::{RemoveContainerOptionsBuilder, RemoveVolumeOptionsBuilder};
use futures_util::future::join_all;

use crate::cluster::Nodes;
use crate::cluster::Progress;
use crate::converge::plan::{Membership, Observed};
use crate::error::{Error, Result};
use crate::registry::forwarder::FORWARDER;
use crate::registry::{NETWORK, SERVICE, VOLUME};
use crate::topology::Topology;
use crate::{swarm, Role};

const GONE_TIMEOUT: Duration = Duration::from_secs(60);

/// Whether the engine said the thing is not there (404): what removing it would achieve.
fn missing(e: &Error) -> bool {
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<bollard::errors::Error>())
        .is_some_and(|e| matches!(e, bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }))
}

/// Removes the registry stack and forwarders and makes every node leave the swarm.
///
/// A node whose engine does not answer is not skipped silently: the others are cleaned as far
/// as is safe, and the result is an error naming every node that could not be cleaned, so the
/// caller keeps the cluster's record and a later `down` finishes the job. To make that later
/// run possible, the managers stay in the swarm while any node is out of reach (a node that
/// comes back rejoins it and is told the service is gone), and while the service could not be
/// removed nothing leaves the swarm and no volume is touched.
///
/// Which nodes are in this cluster's swarm is observation's call, as for `up`: a node in a
/// swarm that is not this cluster's stays in it, and no other swarm's service is touched.
pub async fn dismantle(rt: &dyn Nodes) -> Result<()> {
    let observed = crate::converge::observe::observe(rt).await?.observed;
    take_down(&rt.desired().topology, &observed, &Live(rt), &*rt.progress()).await
}

/// What taking a cluster down asks of its nodes' engines. Errors name the node and keep the
/// engine's own error as their source, so that "not there" (404) can be told apart.
#[async_trait::async_trait]
trait Engines: Send + Sync {
    /// Whether the engine of `node` answers.
    async fn reach(&self, node: &str) -> Result<()>;
    /// A manager of this cluster's swarm that answers: its node's name.
    async fn manager(&self) -> Result<String>;
    /// Removes the registry service through the manager on `node`.
    async fn remove_service(&self, node: &str) -> Result<()>;
    /// Removes the registry forwarder on `node`, running or not, with its anonymous volumes.
    async fn remove_forwarder(&self, node: &str) -> Result<()>;
    /// Waits, at most [`GONE_TIMEOUT`], until no registry task container, not even a stopped
    /// one, is left on `node`.
    async fn tasks_gone(&self, node: &str) -> Result<()>;
    /// Removes the registry stack's network on `node`.
    async fn remove_network(&self, node: &str) -> Result<()>;
    /// Removes every helper a registry data move left on `node` (`lab-registry-move-*`).
    async fn remove_move_helpers(&self, node: &str) -> Result<()>;
    /// Removes the registry's data volume on `node`.
    async fn remove_volume(&self, node: &str) -> Result<()>;
    /// Makes `node` leave its swarm; not being in one is success.
    async fn leave(&self, node: &str) -> Result<()>;
    /// Removes the registry certificates lab put in the engine's `/etc/docker/certs.d`.
    async fn remove_certs(&self, node: &str) -> Result<()>;
}

/// [`dismantle`] once the cluster is observed.
async fn take_down(
    topology: &Topology,
    observed: &Observed,
    engines: &dyn Engines,
    progress: &dyn Progress,
) -> Result<()> {
    let ours = |node: &str| matches!(observed.nodes.get(node).map(|o| &o.swarm), Some(Membership::Member { .. }));
    let nodes = &topology.nodes;
    let probes = join_all(nodes.iter().map(|n| async move { (n, engines.reach(&n.name).await) })).await;
    let mut failed: Vec<String> = Vec::new();
    let mut reachable = Vec::new();
    for (n, r) in probes {
        match r {
            Ok(_) => reachable.push(n),
            // The error names the node already.
            Err(e) => failed.push(e.to_string()),
        }
    }
    let manager_unreachable =
        nodes.iter().any(|n| n.role == Role::Manager && !reachable.iter().any(|r| r.name == n.name));
    let mut service_removed = false;
    match engines.manager().await {
        Ok(name) => match engines.remove_service(&name).await {
            Ok(()) => service_removed = true,
            Err(e) if missing(&e) => service_removed = true,
            Err(e) => failed.push(e.to_string()),
        },
        // Every manager answers and none is one: the swarm, and the service, are gone already.
        Err(_) if !manager_unreachable => service_removed = true,
        Err(_) => {}
    }
    if service_removed {
        progress.note(&format!("removed service {SERVICE}"));
    }
    // Only certificates that are lab's current ones for this cluster: anything else in
    // certs.d is not lab's to take.
    let certs = |node: &str| {
        let lab = observed.certs.as_ref().and_then(|c| c.nodes.get(node)).map(String::as_str);
        lab.is_some() && observed.nodes.get(node).and_then(|o| o.registry_certs.as_deref()) == lab
    };
    let results =
        join_all(reachable.iter().map(|n| clean_node(engines, &n.name, service_removed, certs(&n.name)))).await;
    for r in results {
        if let Err(e) = r {
            failed.push(e.to_string());
        }
    }
    if service_removed {
        // Workers first, then managers one at a time with the first manager last, so the swarm
        // always has a manager while others leave.
        let workers: Vec<_> = reachable.iter().filter(|n| n.role == Role::Worker && ours(&n.name)).collect();
        for r in join_all(workers.iter().map(|n| leave(engines, progress, &n.name))).await {
            if let Err(e) = r {
                failed.push(e.to_string());
            }
        }
        if failed.is_empty() {
            for n in nodes.iter().filter(|n| n.role == Role::Manager && ours(&n.name)).rev() {
                leave(engines, progress, &n.name).await?;
            }
        }
    }
    if failed.is_empty() {
        return Ok(());
    }
    Err(Error::op(
        format!("take down cluster {}", topology.cluster),
        format!(
            "{} of {} {} could not be cleaned: {}",
            failed.len(),
            nodes.len(),
            if nodes.len() == 1 { "node" } else { "nodes" },
            failed.join("; ")
        ),
    )
    .with_hint("the cluster stays recorded; once those nodes answer again, run `lab down` again to finish"))
}

async fn leave(engines: &dyn Engines, progress: &dyn Progress, node: &str) -> Result<()> {
    engines.leave(node).await?;
    progress.note(&format!("{node} left the swarm"));
    Ok(())
}

/// Waits for the node's registry task container to go, then removes the forwarder, the
/// stack's network and the registry's volume there, and with `certs` lab's certificates in its
/// engine's `certs.d`. While the service still exists (its manager could not be reached), only
/// the forwarder and the certificates go: its task may still use the volume.
async fn clean_node(engines: &dyn Engines, node: &str, service_removed: bool, certs: bool) -> Result<()> {
    match engines.remove_forwarder(node).await {
        Err(e) if !missing(&e) => return Err(e),
        _ => {}
    }
    if certs {
        engines.remove_certs(node).await?;
    }
    if !service_removed {
        return Ok(());
    }
    engines.tasks_gone(node).await?;
    // A data move's helpers (left by an interrupted one) hold the volume.
    engines.remove_move_helpers(node).await?;
    let _ = engines.remove_network(node).await;
    match engines.remove_volume(node).await {
        Err(e) if !missing(&e) => Err(e),
        _ => Ok(()),
    }
}

/// The engines, asked through bollard.
struct Live<'a>(&'a dyn Nodes);

#[async_trait::async_trait]
impl Engines for Live<'_> {
    async fn reach(&self, node: &str) -> Result<()> {
        self.0.engine(node).await.map(drop)
    }

    async fn manager(&self) -> Result<String> {
        Ok(self.0.manager().await?.0)
    }

    async fn remove_service(&self, node: &str) -> Result<()> {
        let docker = self.0.engine(node).await?.docker;
        docker.delete_service(SERVICE).await.map_err(|e| Error::engine(node, format!("remove service {SERVICE}"), e))
    }

    async fn remove_forwarder(&self, node: &str) -> Result<()> {
        let docker = self.0.engine(node).await?.docker;
        let opts = RemoveContainerOptionsBuilder::new().force(true).v(true).build();
        docker
            .remove_container(FORWARDER, Some(opts))
            .await
            .map_err(|e| Error::engine(node, format!("remove container {FORWARDER}"), e))
    }

    async fn tasks_gone(&self, node: &str) -> Result<()> {
        let docker = self.0.engine(node).await?.docker;
        let what = format!("the {SERVICE} task container to stop");
        crate::registry::wait_tasks_gone(node, &docker, true, &what, GONE_TIMEOUT).await
    }

    async fn remove_network(&self, node: &str) -> Result<()> {
        let docker = self.0.engine(node).await?.docker;
        docker.remove_network(NETWORK).await.map_err(|e| Error::engine(node, format!("remove network {NETWORK}"), e))
    }

    async fn remove_move_helpers(&self, node: &str) -> Result<()> {
        let docker = self.0.engine(node).await?.docker;
        crate::registry::remove_move_helpers(node, &docker, None).await
    }

    async fn remove_volume(&self, node: &str) -> Result<()> {
        let docker = self.0.engine(node).await?.docker;
        let opts = RemoveVolumeOptionsBuilder::new().build();
        docker
            .remove_volume(VOLUME, Some(opts))
            .await
            .map_err(|e| Error::engine(node, format!("remove volume {VOLUME}"), e))
    }

    async fn leave(&self, node: &str) -> Result<()> {
        let docker = self.0.engine(node).await?.docker;
        swarm::leave(node, &docker).await
    }

    async fn remove_certs(&self, node: &str) -> Result<()> {
        let docker = self.0.engine(node).await?.docker;
        let d = self.0.desired();
        crate::tls::remove_node(&docker, node, d.topology.cluster.as_str(), &d.registry_image).await
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::Mutex;

    use super::*;
    use crate::cluster::{ModeRequest, Step};
    use crate::converge::plan::tests::desired;
    use crate::converge::plan::NodeObs;
    use crate::MachineState;

    /// Engines that answer as told, and a log of what was asked of them (and noted), in order.
    #[derive(Default)]
    struct Fake {
        /// Nodes whose engines do not answer.
        down: BTreeSet<String>,
        /// The manager of the swarm that answers, if one does.
        manager: Option<String>,
        /// Calls (`"remove_volume worker1"`) the engine refuses, with its status code.
        refuse: BTreeMap<String, u16>,
        log: Mutex<Vec<String>>,
    }

    impl Fake {
        fn new(manager: &str) -> Self {
            Fake { manager: Some(manager.into()), ..Default::default() }
        }

        fn call(&self, what: &str, node: &str) -> Result<()> {
            if self.down.contains(node) {
                return Err(Error::node(node, "connect to its Docker engine", "no answer"));
            }
            let call = format!("{what} {node}");
            self.log.lock().unwrap().push(call.clone());
            match self.refuse.get(&call) {
                Some(&status_code) => Err(Error::engine(
                    node,
                    what,
                    bollard::errors::Error::DockerResponseServerError { status_code, message: "refused".into() },
                )),
                None => Ok(()),
            }
        }

        fn log(&self) -> Vec<String> {
            self.log.lock().unwrap().clone()
        }

        fn did(&self, call: &str) -> bool {
            self.log().iter().any(|c| c == call)
        }

        fn at(&self, call: &str) -> usize {
            self.log().iter().position(|c| c == call).unwrap_or_else(|| panic!("{call} not done: {:?}", self.log()))
        }
    }

    #[async_trait::async_trait]
    impl Engines for Fake {
        async fn reach(&self, node: &str) -> Result<()> {
            self.call("reach", node)
        }
        async fn manager(&self) -> Result<String> {
            self.manager.clone().ok_or_else(|| Error::op("find a swarm manager", "no manager answers"))
        }
        async fn remove_service(&self, node: &str) -> Result<()> {
            self.call("remove_service", node)
        }
        async fn remove_forwarder(&self, node: &str) -> Result<()> {
            self.call("remove_forwarder", node)
        }
        async fn tasks_gone(&self, node: &str) -> Result<()> {
            self.call("tasks_gone", node)
        }
        async fn remove_network(&self, node: &str) -> Result<()> {
            self.call("remove_network", node)
        }
        async fn remove_move_helpers(&self, node: &str) -> Result<()> {
            self.call("remove_move_helpers", node)
        }
        async fn remove_volume(&self, node: &str) -> Result<()> {
            self.call("remove_volume", node)
        }
        async fn leave(&self, node: &str) -> Result<()> {
            self.call("leave", node)
        }
        async fn remove_certs(&self, node: &str) -> Result<()> {
            self.call("remove_certs", node)
        }
    }

    impl Progress for Fake {
        fn started(&self, _: &Step) {}
        fn finished(&self, _: &Step, _: Duration, _: Option<&str>) {}
        fn failed(&self, _: &Step, _: Duration, _: &Error) {}
        fn note(&self, message: &str) {
            self.log.lock().unwrap().push(format!("note: {message}"));
        }
    }

    /// Every node of `topology` observed in this cluster's swarm, but those in `foreign`.
    fn observed(topology: &Topology, foreign: &[&str]) -> Observed {
        let nodes = topology
            .nodes
            .iter()
            .map(|n| {
                let mut o = NodeObs::new(n.role, MachineState::Running);
                o.engine = true;
                o.swarm = if foreign.contains(&n.name.as_str()) {
                    Membership::Foreign { swarm: "swarm F".into() }
                } else {
                    Membership::Member { swarm_id: "S".into(), manager: n.role == Role::Manager }
                };
                (n.name.clone(), o)
            })
            .collect();
        Observed { nodes, swarm_id: Some("S".into()), ..Default::default() }
    }

    async fn run(topology: &Topology, foreign: &[&str], fake: &Fake) -> Result<()> {
        take_down(topology, &observed(topology, foreign), fake, fake).await
    }

    #[tokio::test]
    async fn everything_goes_and_every_node_leaves_workers_first_and_the_first_manager_last() {
        let topo = desired(3, 2, ModeRequest::Auto).topology;
        let fake = Fake::new("manager1");
        run(&topo, &[], &fake).await.unwrap();
        assert!(fake.at("remove_service manager1") < fake.at("note: removed service registry_registry"));
        for n in ["manager1", "manager2", "manager3", "worker1", "worker2"] {
            // Its task container gone, once the service is, and then the volume it used.
            assert!(fake.at("remove_service manager1") < fake.at(&format!("tasks_gone {n}")));
            assert!(fake.at(&format!("tasks_gone {n}")) < fake.at(&format!("remove_volume {n}")));
            // A data move's helpers hold the volume (issue 18, item 4): they go before it.
            assert!(fake.at(&format!("remove_move_helpers {n}")) < fake.at(&format!("remove_volume {n}")));
            assert!(fake.did(&format!("remove_forwarder {n}")) && fake.did(&format!("remove_network {n}")));
            assert!(fake.at(&format!("leave {n}")) < fake.at(&format!("note: {n} left the swarm")));
        }
        let leaves: Vec<String> = fake.log().into_iter().filter(|c| c.starts_with("leave ")).collect();
        assert_eq!(leaves, ["leave worker1", "leave worker2", "leave manager3", "leave manager2", "leave manager1"]);
    }

    /// Mutual TLS: the certificates lab gave each engine go; a node whose certs.d holds
    /// anything else keeps it.
    #[tokio::test]
    async fn lab_certificates_go_and_nothing_else_in_certs_d() {
        let topo = desired(1, 2, ModeRequest::Auto).topology;
        let fake = Fake::new("manager");
        let mut o = observed(&topo, &[]);
        o.certs = Some(crate::converge::plan::CertsObs {
            registry: "r".into(),
            nodes: ["manager", "worker1", "worker2"].iter().map(|n| (n.to_string(), format!("n-{n}"))).collect(),
            due: false,
        });
        for (node, has) in [("manager", Some("n-manager")), ("worker1", Some("someone else's")), ("worker2", None)] {
            o.nodes.get_mut(node).unwrap().registry_certs = has.map(String::from);
        }
        take_down(&topo, &o, &fake, &fake).await.unwrap();
        assert!(fake.did("remove_certs manager"), "{:?}", fake.log());
        assert!(!fake.did("remove_certs worker1") && !fake.did("remove_certs worker2"), "{:?}", fake.log());
        // An open cluster has none to take.
        let fake = Fake::new("manager");
        run(&topo, &[], &fake).await.unwrap();
        assert!(!fake.log().iter().any(|c| c.starts_with("remove_certs")), "{:?}", fake.log());
    }

    #[tokio::test]
    async fn what_is_already_gone_is_not_a_failure() {
        let topo = desired(1, 2, ModeRequest::Auto).topology;
        let mut fake = Fake::new("manager");
        for call in ["remove_service manager", "remove_forwarder worker1", "remove_volume worker2"] {
            fake.refuse.insert(call.into(), 404);
        }
        // The network's removal is never a failure, whatever the engine says.
        fake.refuse.insert("remove_network worker1".into(), 500);
        run(&topo, &[], &fake).await.unwrap();
        assert!(fake.did("note: removed service registry_registry"));
        assert!(fake.did("remove_volume worker1"), "cleaning goes on past a missing forwarder");
        assert!(fake.did("leave manager"));

        // Every engine answers and none is a manager of a swarm: the service went with it.
        let mut fake = Fake::new("manager");
        fake.manager = None;
        run(&topo, &[], &fake).await.unwrap();
        assert!(fake.did("note: removed service registry_registry") && fake.did("remove_volume worker1"));
    }

    #[tokio::test]
    async fn a_node_that_does_not_answer_is_named_and_the_managers_stay_for_the_next_down() {
        let topo = desired(1, 2, ModeRequest::Auto).topology;
        let mut fake = Fake::new("manager");
        fake.down.insert("worker2".into());
        let e = run(&topo, &[], &fake).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "take down cluster t: 1 of 3 nodes could not be cleaned: worker2: connect to its Docker engine: no answer"
        );
        assert!(e.hint().is_some_and(|h| h.contains("run `lab down` again")), "{:?}", e.hint());
        // The others are cleaned and the workers leave; the manager keeps the swarm, which
        // worker2 rejoins when it comes back.
        assert!(fake.did("remove_volume worker1") && fake.did("leave worker1"));
        assert!(!fake.did("leave manager"));
        assert!(!fake.log().iter().any(|c| c.ends_with(" worker2")), "{:?}", fake.log());
    }

    /// Issue 18, item 19: "1 of 1 node", not "1 of 1 nodes".
    #[tokio::test]
    async fn one_node_is_counted_as_one() {
        let mut fake = Fake::new("manager");
        fake.refuse.insert("remove_volume manager".into(), 500);
        let e = run(&desired(1, 0, ModeRequest::Auto).topology, &[], &fake).await.unwrap_err();
        assert!(e.to_string().contains(": 1 of 1 node could not be cleaned: manager: "), "{e}");
    }

    #[tokio::test]
    async fn a_refusal_is_named_with_its_node_and_keeps_the_managers_in() {
        let topo = desired(1, 2, ModeRequest::Auto).topology;
        let mut fake = Fake::new("manager");
        fake.refuse.insert("remove_volume worker1".into(), 500);
        let e = run(&topo, &[], &fake).await.unwrap_err();
        assert!(e.to_string().ends_with("1 of 3 nodes could not be cleaned: worker1: remove_volume: refused"), "{e}");
        assert!(fake.did("leave worker1") && fake.did("leave worker2") && !fake.did("leave manager"));
    }

    #[tokio::test]
    async fn while_the_service_stays_only_the_forwarders_go_and_nothing_leaves() {
        let topo = desired(1, 2, ModeRequest::Auto).topology;
        // Its manager does not answer.
        let mut fake = Fake::new("manager");
        fake.manager = None;
        fake.down.insert("manager".into());
        let e = run(&topo, &[], &fake).await.unwrap_err();
        assert!(e.to_string().contains("1 of 3 nodes could not be cleaned: manager: "), "{e}");
        // The manager refuses to remove it.
        let mut refused = Fake::new("manager");
        refused.refuse.insert("remove_service manager".into(), 500);
        let e = run(&topo, &[], &refused).await.unwrap_err();
        assert!(e.to_string().contains("could not be cleaned: manager: remove_service: refused"), "{e}");
        for fake in [fake, refused] {
            assert!(fake.did("remove_forwarder worker1") && fake.did("remove_forwarder worker2"));
            let log = fake.log();
            assert!(
                !log.iter().any(|c| c.starts_with("tasks_gone")
                    || c.starts_with("remove_volume")
                    || c.starts_with("leave")
                    || c.starts_with("note: removed")),
                "{log:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_node_in_another_swarm_stays_in_it() {
        let topo = desired(1, 2, ModeRequest::Auto).topology;
        let fake = Fake::new("manager");
        run(&topo, &["worker2"], &fake).await.unwrap();
        assert!(fake.did("leave worker1") && fake.did("leave manager"));
        assert!(!fake.did("leave worker2"));
    }

    #[test]
    fn only_not_found_is_missing() {
        let refusal = |status_code| {
            Error::engine(
                "n",
                "remove",
                bollard::errors::Error::DockerResponseServerError { status_code, message: "x".into() },
            )
        };
        assert!(missing(&refusal(404)));
        assert!(!missing(&refusal(409)) && !missing(&refusal(500)));
        // An error of lab's own, with nothing from the engine under it.
        assert!(!missing(&Error::node("n", "remove", "no such container")));
    }
}
