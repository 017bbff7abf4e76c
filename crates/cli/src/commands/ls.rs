//! `lab ls`: the clusters lab knows.

use lab_core::state::Paths;
use lab_core::Result;
use serde_json::json;

use crate::args::Output;
use crate::output::table;

pub(super) fn ls(output: Output) -> Result<i32> {
    let paths = Paths::from_env()?;
    let all = paths.list()?;
    match output {
        Output::Json => {
            let v: Vec<_> = all
                .iter()
                .map(|s| json!({"cluster": s.cluster, "driver": s.driver, "managers": s.managers, "workers": s.workers, "registry_image": s.registry_image, "registry_mode": s.registry_mode}))
                .collect();
            outln!("{}", serde_json::to_string_pretty(&v).expect("json"))?;
        }
        Output::Table => {
            let rows: Vec<Vec<String>> = all
                .iter()
                .map(|s| {
                    vec![
                        s.cluster.to_string(),
                        s.driver.clone(),
                        s.managers.to_string(),
                        s.workers.to_string(),
                        s.registry_image.clone(),
                        s.registry_mode.map(|m| m.to_string()).unwrap_or_else(|| "-".into()),
                    ]
                })
                .collect();
            out!("{}", table(&["CLUSTER", "DRIVER", "MANAGERS", "WORKERS", "REGISTRY IMAGE", "REGISTRY MODE"], &rows))?;
        }
    }
    Ok(0)
}
