//! `lab plan`: the steps `up` would take, changing nothing.

use std::sync::Arc;

use lab_core::cluster::Silent;
use lab_core::converge::observe::observe;
use lab_core::converge::plan::plan;
use lab_core::state::Paths;
use lab_core::Result;
use serde_json::json;

use super::cluster::runtime;
use crate::args::{Output, TopologyArgs};
use crate::output::table;
use crate::settings;

pub(super) async fn plan_cmd(config: Option<&std::path::Path>, flags: &TopologyArgs, output: Output) -> Result<i32> {
    let paths = Paths::from_env()?;
    let loaded = settings::load(config, flags, |c| paths.load(c))?;
    let (rt, warnings) =
        runtime(&loaded.settings, loaded.recorded, &paths, Arc::new(Silent), flags.force, flags.renew_certs).await?;
    for w in loaded.warnings.iter().chain(&warnings) {
        eprintln!("lab: warning: {w}");
    }
    let cluster = &rt.desired.topology.cluster;
    // What `up` would record that changes how the cluster is reached or secured: no step of
    // the plan shows it (a new driver program, say), so it is said before the steps.
    let changes: Vec<String> =
        loaded.changes.iter().map(|c| format!("changes how cluster {cluster} is reached or secured: {c}")).collect();
    let obs = observe(&rt).await?;
    let p = plan(&rt.desired, &obs.observed);
    match output {
        Output::Json => {
            let steps: Vec<_> = p
                .steps
                .iter()
                .enumerate()
                .map(|(i, s)| json!({"id": i + 1, "description": s.step.to_string(), "step": s.step, "after": s.after.iter().map(|a| a + 1).collect::<Vec<_>>()}))
                .collect();
            outln!(
                "{}",
                serde_json::to_string_pretty(
                    &json!({"cluster": cluster, "steps": steps, "blocked": p.blocked, "changes": loaded.changes})
                )
                .expect("json")
            )?;
        }
        Output::Table if p.is_empty() && changes.is_empty() => {
            outln!("cluster {cluster} matches the desired state: nothing to do")?;
        }
        Output::Table if p.is_empty() => {
            for c in &changes {
                outln!("{c}")?;
            }
            outln!("cluster {cluster} needs no step; lab up records the settings above")?;
        }
        Output::Table => {
            for c in &changes {
                outln!("{c}")?;
            }
            let rows: Vec<Vec<String>> = p
                .steps
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    let after = if s.after.is_empty() {
                        "-".to_string()
                    } else {
                        s.after.iter().map(|a| (a + 1).to_string()).collect::<Vec<_>>().join(",")
                    };
                    vec![(i + 1).to_string(), s.step.to_string(), after]
                })
                .collect();
            out!("{}", table(&["#", "STEP", "AFTER"], &rows))?;
            for b in &p.blocked {
                outln!("blocked without --force: {b}")?;
            }
        }
    }
    Ok(0)
}
