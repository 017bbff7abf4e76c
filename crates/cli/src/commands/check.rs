//! `lab check`: ask every node for the registry, with curl on the node and through the
//! node's own dockerd, and explain any failure.

use std::sync::Arc;

use lab_core::cluster::Silent;
use lab_core::registry::check_all;
use lab_core::Result;
use serde_json::json;

use super::cluster::existing;
use crate::args::Output;
use crate::output::table;

pub(super) async fn check(config: Option<&std::path::Path>, cluster: Option<&str>, output: Output) -> Result<i32> {
    let (rt, _, _) = existing(config, cluster, Arc::new(Silent), true).await?;
    let machines = rt.driver.observe().await?;
    rt.set_machines(machines.clone());
    let checks = check_all(&rt).await;
    // Every node answering {} is not enough: a registry left read-only (an interrupted
    // `lab images gc`) answers, and refuses every push.
    let read_only = match rt.manager().await {
        Ok((_, mgr)) => lab_core::registry::observe(&mgr).await.is_some_and(|r| r.read_only),
        Err(_) => false,
    };
    let (managers_ok, managers_said) = managers(&rt).await;
    let lost = super::seen::registry_node_gone(&rt, &machines).map(|n| super::seen::loss(&n, &super::seen::seen(&rt)));
    let ok = checks.iter().all(|c| c.ok) && !read_only && managers_ok && lost.is_none();
    // What the user's services can use: asked of the nodes whose engine answered (the
    // others say why not already). It does not fail the check: the registry does without.
    let answering: Vec<String> =
        checks.iter().filter(|c| !c.urls.is_empty() || c.engine.is_some()).map(|c| c.node.clone()).collect();
    let vips = lab_core::swarm::vips::check(&rt, &answering).await;
    let advice = lab_core::swarm::vips::advice(&vips);
    match output {
        Output::Json => outln!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "ok": ok,
                "nodes": checks,
                "registry": {"read_only": read_only},
                "swarm": {"managers_answer": managers_ok, "quorum": managers_said},
                "registry_lost": lost,
                "service_vips": {"nodes": vips, "advice": advice},
            }))
            .expect("json")
        )?,
        Output::Table => {
            let mut rows = node_rows(&checks);
            rows.extend(vip_rows(&vips));
            if read_only {
                rows.push(vec![
                    "-".into(),
                    "the registry takes pushes".into(),
                    "FAIL".into(),
                    "read-only, as `lab images gc` leaves it while it runs; if none runs, one was interrupted: \
                     `lab up` makes it writable again"
                        .into(),
                ]);
            }
            if let Some(lost) = &lost {
                rows.push(vec!["-".into(), "the registry's data".into(), "FAIL".into(), lost.clone()]);
            }
            rows.push(vec![
                "-".into(),
                "every manager answers".into(),
                if managers_ok { "ok".into() } else { "FAIL".into() },
                managers_said,
            ]);
            out!("{}", table(&["NODE", "CHECK", "RESULT", "ANSWER"], &rows))?;
            for c in checks.iter().filter(|c| !c.ok) {
                if let Some(why) = &c.explanation {
                    outln!("{}: {why}", c.node)?;
                }
            }
            if let Some(advice) = &advice {
                outln!("services: {advice}")?;
            }
        }
    }
    Ok(if ok { 0 } else { 1 })
}

/// Whether every manager answers, in the swarm's own count, and the quorum in words: a manager
/// lost still lets the registry answer, but one more failure may cost the swarm its quorum.
async fn managers(rt: &lab_core::converge::runtime::Runtime) -> (bool, String) {
    let quorum = match rt.manager().await {
        Ok((_, mgr)) => lab_core::swarm::Quorum::ask(&mgr).await,
        Err(e) => Err(e.to_string()),
    };
    match &quorum {
        Ok(q) => (q.healthy(), q.to_string()),
        Err(why) => (false, format!("no quorum: {why}")),
    }
}

/// A row per node saying whether it offers service VIPs: not "ok" or "FAIL", what the node
/// offers, which the check does not judge.
fn vip_rows(vips: &[lab_core::swarm::vips::VipCheck]) -> Vec<Vec<String>> {
    vips.iter()
        .map(|v| {
            let result = match v.ipvs {
                Some(true) => "yes",
                Some(false) => "no",
                None => "?",
            };
            vec![v.node.clone(), "service VIPs (IPVS)".into(), result.into(), v.answer.clone()]
        })
        .collect()
}

/// The table's rows for each node: each URL curl asked on it, and what its dockerd answered;
/// a node that could not be asked at all, one row saying why.
fn node_rows(checks: &[lab_core::registry::NodeCheck]) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    for c in checks {
        if c.urls.is_empty() {
            rows.push(vec![c.node.clone(), "-".into(), "FAIL".into(), c.explanation.clone().unwrap_or_default()]);
        }
        for u in &c.urls {
            rows.push(vec![
                c.node.clone(),
                u.url.clone(),
                if u.ok { "ok".into() } else { "FAIL".into() },
                u.answer.clone(),
            ]);
        }
        if let Some(e) = &c.engine {
            // A registry that answers says it has no such image: that is the pass.
            let answer = if e.ok { format!("a registry answered: {}", e.answer) } else { e.answer.clone() };
            rows.push(vec![
                c.node.clone(),
                format!("dockerd {}", e.reference),
                if e.ok { "ok".into() } else { "FAIL".into() },
                answer,
            ]);
        }
    }
    rows
}
