//! `lab plan`: the steps `up` would take, changing nothing.

use std::sync::Arc;

use lab_core::observe::observe;
use lab_core::plan::plan;
use lab_core::progress::Silent;
use lab_core::state::Paths;
use lab_core::Result;
use serde_json::json;

use super::cluster::runtime;
use crate::args::{Output, TopologyArgs};
use crate::output::table;
use crate::settings;

pub(super) async fn plan_cmd(config: Option<&std::path::Path>, flags: &TopologyArgs, output: Output) -> Result<i32> {
    let paths = Paths::from_env()?;
    let (settings, recorded) = settings::load(config, flags, |c| paths.load(c))?;
    let (rt, warnings) = runtime(&settings, recorded, &paths, Arc::new(Silent), flags.force).await?;
    for w in &warnings {
        eprintln!("lab: warning: {w}");
    }
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
                    &json!({"cluster": rt.desired.topology.cluster, "steps": steps, "blocked": p.blocked})
                )
                .expect("json")
            )?;
        }
        Output::Table if p.is_empty() => {
            outln!("cluster {} matches the desired state: nothing to do", rt.desired.topology.cluster)?;
        }
        Output::Table => {
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
