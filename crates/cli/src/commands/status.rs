//! `lab status`: nodes, their engines and swarm state, and the registry.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use lab_core::cluster::Silent;
use lab_core::converge::observe::observe;
use lab_core::converge::runtime::Runtime;
use lab_core::Result;
use serde_json::json;

use super::cluster::existing;
use crate::args::Output;
use crate::output::table;

pub(super) fn status_table(rt: &Runtime, obs: &lab_core::converge::observe::Observation) -> String {
    let rows: Vec<Vec<String>> = node_rows(rt, obs)
        .into_iter()
        .map(|n| {
            ["name", "role", "address", "engine", "swarm", "availability", "manager_status"]
                .iter()
                .map(|k| n[*k].as_str().unwrap_or("").to_string())
                .map(|v| if v.is_empty() { "-".into() } else { v })
                .collect()
        })
        .collect();
    table(&["NODE", "ROLE", "ADDRESS", "ENGINE", "SWARM", "AVAILABILITY", "MANAGER STATUS"], &rows)
}

pub(super) fn node_rows(rt: &Runtime, obs: &lab_core::converge::observe::Observation) -> Vec<serde_json::Value> {
    use lab_core::converge::plan::Membership;
    let mut names: Vec<String> = rt.desired.topology.nodes.iter().map(|n| n.name.clone()).collect();
    for m in &obs.machines {
        if !names.contains(&m.name) {
            names.push(m.name.clone());
        }
    }
    names
        .iter()
        .map(|name| {
            let machine = obs.machines.iter().find(|m| &m.name == name);
            let o = obs.observed.nodes.get(name);
            let sw = obs.swarm_nodes.get(name);
            let role = rt
                .desired
                .topology
                .node(name)
                .map(|n| n.role.to_string())
                .or_else(|| machine.and_then(|m| m.role).map(|r| r.to_string()))
                .unwrap_or_default();
            let engine = match (machine, o) {
                (None, _) => "missing",
                (Some(m), _) if m.state == lab_core::MachineState::Stopped => "stopped",
                (Some(m), _) if matches!(m.state, lab_core::MachineState::Broken(_)) => "broken",
                (_, Some(o)) if o.engine => "ready",
                _ => "not answering",
            };
            let swarm = match (o.map(|o| &o.swarm), sw) {
                (_, Some(s)) => s.status.clone(),
                (Some(Membership::None), _) => "inactive".into(),
                (Some(Membership::Member { .. } | Membership::Foreign { .. }), None) => "foreign swarm".into(),
                _ => "".into(),
            };
            json!({
                "name": name,
                "role": role,
                "address": o.and_then(|o| o.address.clone()).or_else(|| machine.and_then(|m| m.address.clone())).unwrap_or_default(),
                "engine": engine,
                "reach": match engine {
                    "ready" => "ok",
                    "missing" => "gone",
                    "not answering" => "unreachable",
                    other => other,
                },
                "swarm": swarm,
                "availability": sw.map(|s| s.availability.clone()).unwrap_or_default(),
                "manager_status": sw.map(|s| s.manager_status.clone()).unwrap_or_default(),
                "labels": sw.map(|s| json!(s.labels)).unwrap_or(json!({})),
            })
        })
        .collect()
}

/// What a node that is not `ok` means, and what brings it back: stopped, gone and unreachable
/// are three different things to a user (`cause`: why its engine did not answer).
fn reach_line(node: &str, reach: &str, cause: Option<&String>) -> Option<String> {
    Some(match reach {
        "stopped" => {
            format!("{node}: stopped: its machine exists but does not run; `lab up` starts it, keeping its disk")
        }
        "gone" => format!(
            "{node}: gone: its machine no longer exists (removed with its disk); `lab up` makes it again and \
             joins it, and removes what is left of it in the swarm"
        ),
        "unreachable" => format!(
            "{node}: unreachable: its machine runs, but lab cannot reach its engine{}; once that is mended the swarm \
             takes it back by itself, and `lab up` does not make it again",
            cause.map(|c| format!(" ({c})")).unwrap_or_default()
        ),
        "broken" => format!("{node}: broken: its machine is in a state lab cannot use; `lab up` makes it again"),
        _ => return None,
    })
}

/// The swarm's managers in `status --output json`: the quorum in numbers and in words, or
/// its loss.
fn swarm_json(obs: &lab_core::converge::observe::Observation) -> serde_json::Value {
    match (&obs.quorum, &obs.leaderless) {
        (Some(q), _) => json!({
            "managers": q.managers,
            "reachable": q.reachable,
            "unreachable": q.unreachable,
            "tolerates": q.tolerates(),
            "quorum": if q.holds() { "held" } else { "lost" },
            "summary": q.to_string(),
        }),
        (None, Some(why)) => json!({ "quorum": "lost", "summary": why }),
        (None, None) => json!(null),
    }
}

/// Why each node whose machine runs has an engine that does not answer, by node: the error
/// of one more bounded attempt to reach it, without the node's name. Observation only says
/// "not answering"; the cause (a refused host key, a refused connection, a tunnel that
/// cannot open) is what the user acts on.
async fn unanswered(rt: &Runtime, obs: &lab_core::converge::observe::Observation) -> BTreeMap<String, String> {
    let quiet = obs.machines.iter().filter(|m| {
        m.state == lab_core::MachineState::Running && !obs.observed.nodes.get(&m.name).is_some_and(|o| o.engine)
    });
    let causes = join_all(quiet.map(|m| async move {
        let e = rt.try_engine(&m.name, Duration::from_secs(5)).await.err()?;
        let text = e.to_string();
        let cause = text.strip_prefix(&format!("{}: ", m.name)).unwrap_or(&text).to_string();
        Some((m.name.clone(), cause))
    }))
    .await;
    causes.into_iter().flatten().collect()
}

pub(super) async fn status(config: Option<&std::path::Path>, cluster: Option<&str>, output: Output) -> Result<i32> {
    let (rt, _, _) = existing(config, cluster, Arc::new(Silent), true).await?;
    let obs = observe(&rt).await?;
    // IPVS as `up` recorded it, on the nodes whose engine answers; looked for only where there
    // is no record (a cluster an older lab made).
    let answering: Vec<String> = rt
        .desired
        .topology
        .nodes
        .iter()
        .filter(|n| obs.observed.nodes.get(&n.name).is_some_and(|o| o.engine))
        .map(|n| n.name.clone())
        .collect();
    let (causes, vips) =
        tokio::join!(unanswered(&rt, &obs), lab_core::swarm::vips::check_or_recall(&rt, &answering, &[]));
    let advice = lab_core::swarm::vips::advice(&vips);
    let registry = RegistryStatus::of(&rt, &obs);
    match output {
        Output::Json => {
            let mut v = status_json(&rt, &obs, &causes, &registry);
            v["service_vips"] = json!({ "nodes": vips, "advice": advice });
            outln!("{}", serde_json::to_string_pretty(&v).expect("json"))?;
        }
        Output::Table => print_status(&rt, &obs, &causes, registry, advice.as_deref())?,
    }
    Ok(0)
}

/// What `lab status` says of the registry.
struct RegistryStatus {
    /// The node that keeps its data.
    node: String,
    /// The node its task runs on, and the task's state (empty if none).
    task_node: String,
    task_state: String,
    /// Whether its stack is deployed.
    deployed: bool,
    /// `open`, `mutual`, or `-` when it is not deployed.
    tls_word: &'static str,
    /// In mutual TLS, until when its certificates hold (`lab up` renews them in their last 30
    /// days).
    expires: Option<String>,
    /// Whether it refuses pushes (an interrupted `lab images gc`).
    read_only: bool,
}

impl RegistryStatus {
    fn of(rt: &Runtime, obs: &lab_core::converge::observe::Observation) -> RegistryStatus {
        let (task_node, task_state) = obs.registry_task.clone().unwrap_or_default();
        let tls = obs.observed.registry.as_ref().map(|r| r.tls.is_some());
        let cluster_dir = rt.paths.cluster_dir(&rt.state().cluster);
        let certs = lab_core::tls::load(&lab_core::tls::dir(&cluster_dir)).ok().flatten();
        RegistryStatus {
            node: rt.desired.topology.registry_node().name.clone(),
            task_node,
            task_state,
            deployed: obs.observed.registry.is_some(),
            tls_word: match tls {
                Some(true) => "mutual",
                Some(false) => "open",
                None => "-",
            },
            expires: certs.as_ref().filter(|_| tls == Some(true)).map(|m| lab_core::tls::date(m.meta.leaf_not_after)),
            read_only: obs.observed.registry.as_ref().is_some_and(|r| r.read_only),
        }
    }
}

/// `lab status --output json`.
fn status_json(
    rt: &Runtime,
    obs: &lab_core::converge::observe::Observation,
    causes: &BTreeMap<String, String>,
    reg: &RegistryStatus,
) -> serde_json::Value {
    let st = rt.state();
    json!({
        "cluster": st.cluster,
        "driver": st.driver,
        "nodes": node_rows(rt, obs).into_iter().map(|mut n| {
            if let Some(cause) = n["name"].as_str().and_then(|name| causes.get(name)) {
                n["engine_error"] = json!(cause);
            }
            n
        }).collect::<Vec<_>>(),
        "swarm": swarm_json(obs),
        "registry_lost": super::seen::registry_node_gone(rt, &obs.machines).map(|node| {
            let seen = super::seen::seen(rt);
            json!({"node": node, "repositories": seen.repositories, "message": super::seen::loss(&node, &seen)})
        }),
        "registry": {
            "stack": lab_core::registry::STACK,
            "service": lab_core::registry::SERVICE,
            "state": if !reg.deployed { "missing".to_string() } else if reg.task_state.is_empty() { "no task".to_string() } else { reg.task_state.clone() },
            "running_on": reg.task_node,
            "image": rt.desired.registry_image,
            "mode": st.registry_mode,
            "url": "http://localhost:5000",
            "tls": reg.tls_word,
            "certificate_expires": reg.expires,
            "read_only": reg.read_only,
            "data": { "volume": lab_core::registry::VOLUME, "node": reg.node },
        },
    })
}

/// `lab status`: the nodes' table, why a node does not answer, the registry's lost node, the
/// swarm's quorum, what no IPVS means for services, and the registry.
fn print_status(
    rt: &Runtime,
    obs: &lab_core::converge::observe::Observation,
    causes: &BTreeMap<String, String>,
    reg: RegistryStatus,
    services: Option<&str>,
) -> Result<()> {
    let st = rt.state();
    out!("{}", status_table(rt, obs))?;
    for row in node_rows(rt, obs) {
        let name = row["name"].as_str().unwrap_or_default();
        if let Some(line) = reach_line(name, row["reach"].as_str().unwrap_or_default(), causes.get(name)) {
            outln!("{line}")?;
        }
    }
    outln!()?;
    if let Some(node) = super::seen::registry_node_gone(rt, &obs.machines) {
        outln!("{}", super::seen::loss(&node, &super::seen::seen(rt)))?;
    }
    if let Some(loss) = obs.quorum_loss(&rt.desired) {
        let e = loss.error(st.cluster.as_str());
        outln!("swarm: {e}")?;
        outln!("  {}", e.hint().unwrap_or_default())?;
    } else if let Some(q) = &obs.quorum {
        outln!("swarm: {q}")?;
    }
    if let Some(advice) = services {
        outln!("services: {advice}")?;
    }
    if !reg.deployed {
        outln!("registry: stack {} not deployed (run lab up)", lab_core::registry::STACK)?;
        return Ok(());
    }
    outln!(
        "registry: service {} {} on {}, image {}, mode {}, data in volume {} on {}",
        lab_core::registry::SERVICE,
        if reg.task_state.is_empty() { "has no task".to_string() } else { reg.task_state },
        if reg.task_node.is_empty() { "-".to_string() } else { reg.task_node },
        rt.desired.registry_image,
        st.registry_mode.map(|m| m.to_string()).unwrap_or_else(|| "-".into()),
        lab_core::registry::VOLUME,
        reg.node
    )?;
    match &reg.expires {
        Some(date) => outln!("registry TLS: mutual, certificates valid until {date} (lab up renews them)")?,
        None => outln!("registry TLS: {}", reg.tls_word)?,
    }
    if reg.read_only {
        outln!(
            "registry: read-only, as `lab images gc` leaves it while it runs; if none runs, one was \
             interrupted: `lab up` makes it writable again"
        )?;
    }
    Ok(())
}
