//! `lab driver-test NAME`: the conformance suite (`lab_core::conformance`) against one driver,
//! built-in or external, for the people who write drivers.
//!
//! The driver is found and made exactly as `up` makes it (`commands::cluster::find_driver` and
//! `make_driver`, with the same configuration layers and driver flags), but for a throwaway
//! cluster, `conf-<random>`, that no user cluster can share, and whose state directory is
//! removed at the end. One line per rule goes to stdout; the exit status is 0 when the driver
//! conforms and 1 when a rule failed, naming each one.

use std::path::Path;
use std::time::Duration;

use lab_core::conformance::{self, Limits, Remake, Subject, Verdict};
use lab_core::state::Paths;
use lab_core::{DriverContext, Error, Result, Topology};
use serde_json::json;

use crate::args::{ClusterArg, DriverTestArgs, Output, TopologyArgs};
use crate::commands::cluster::{driver_context, find_driver, make_driver};
use crate::settings;

pub async fn run(config: Option<&Path>, a: &DriverTestArgs) -> Result<i32> {
    // A flag of another driver would be refused by `settings::load` in terms of a cluster;
    // here there is only the driver under test to name.
    if let Some(f) = a.driver_flags.iter().find(|f| !f.drivers.iter().any(|(d, _)| *d == a.driver)) {
        let owners: Vec<&str> = f.drivers.iter().map(|(d, _)| d.as_str()).collect();
        return Err(Error::input(
            &f.flag,
            format!("is an option of the {} driver, not of {:?}, the driver under test", owners.join(", "), a.driver),
        ));
    }
    let paths = Paths::from_env()?;
    let cluster = conformance::throwaway_cluster();
    let flags = TopologyArgs {
        cluster: ClusterArg { cluster: Some(cluster.to_string()) },
        driver: Some(a.driver.clone()),
        driver_opts: a.driver_opts.clone(),
        driver_flags: a.driver_flags.clone(),
        ..Default::default()
    };
    // A throwaway cluster has no recorded state, and none is read.
    let settings = settings::load(config, &flags, |_| Ok(None))?.settings;
    let (found, table) = find_driver(&settings)?;
    let ctx = driver_context(&settings, &paths, &cluster, table.clone(), false);
    eprintln!("lab: testing driver {} on the throwaway cluster {cluster}", settings.driver);
    paths.ensure_cluster_dir(&cluster)?;
    // Interrupted, the suite's own cleanup never runs: the driver is made again and what it
    // lists for the throwaway cluster goes (all of it is the suite's). A second Ctrl-C stops
    // that too.
    let outcome = tokio::select! {
        r = suite(&found, ctx.clone(), table) => r,
        _ = tokio::signal::ctrl_c() => tokio::select! {
            e = interrupted(&found, ctx) => Err(e),
            _ = tokio::signal::ctrl_c() => Err(Error::op(
                "lab driver-test",
                format!("interrupted twice; what the suite made for cluster {cluster} may be left"),
            )),
        },
    };
    // The state directory goes whatever happened; the suite has cleaned up the machines.
    let removed = paths.remove(&cluster);
    let results = outcome?;
    removed?;

    let broken: Vec<&str> = results.iter().filter(|r| r.verdict == Verdict::Failed).map(|r| r.rule).collect();
    match a.output {
        Output::Json => {
            let v = json!({
                "driver": settings.driver,
                "cluster": cluster,
                "conforms": broken.is_empty(),
                "rules": results,
            });
            outln!("{}", serde_json::to_string_pretty(&v).map_err(|e| Error::op_caused("print the results", e))?)?;
        }
        Output::Table => {
            let width = results.iter().map(|r| r.rule.len()).max().unwrap_or(0);
            for r in &results {
                let word = match r.verdict {
                    Verdict::Passed => "ok",
                    Verdict::Failed => "FAIL",
                    Verdict::Skipped => "skip",
                };
                outln!("{word:<4}  {:<width$}  {}", r.rule, r.detail)?;
            }
        }
    }
    if broken.is_empty() {
        eprintln!("lab: driver {} conforms", settings.driver);
        return Ok(0);
    }
    Err(Error::op(
        format!("driver {}", settings.driver),
        format!("does not conform: {} broken: {}", if broken.len() == 1 { "rule" } else { "rules" }, broken.join(", ")),
    ))
}

/// Makes the driver and runs the suite. A driver that cannot be made, or whose preflight
/// fails, is an error as it would be for `up` (bad input exits 2).
async fn suite(
    found: &crate::commands::cluster::Found,
    ctx: DriverContext,
    table: serde_json::Value,
) -> Result<Vec<conformance::RuleResult>> {
    let driver = make_driver(found, ctx.clone()).await?;
    // A hosts file (or an inventory) dictates the nodes; otherwise the seed's first name.
    let nodes = match driver.fixed_nodes() {
        Some(nodes) => Topology::from_nodes(ctx.cluster.clone(), nodes)?.0.nodes,
        None => Topology::new(ctx.cluster.clone(), 1, 0)?.0.nodes,
    };
    let again = found.clone();
    let remake: Remake = Box::new(move |table| {
        let (found, mut ctx) = (again.clone(), ctx.clone());
        ctx.config = table;
        Box::pin(async move { make_driver(&found, ctx).await })
    });
    let subject = Subject {
        name: driver_name(found),
        driver,
        nodes,
        config: table,
        remake: Some(remake),
        limits: Limits::default(),
    };
    conformance::run(subject).await
}

/// After Ctrl-C: destroys every machine the driver lists for the throwaway cluster and tears
/// it down, within a bound; the error says what was done or what is left.
async fn interrupted(found: &crate::commands::cluster::Found, ctx: DriverContext) -> Error {
    let cluster = ctx.cluster.clone();
    eprintln!("lab: interrupted: removing what the suite made for cluster {cluster}");
    let limit = Duration::from_secs(120);
    let cleaned = tokio::time::timeout(limit, async {
        let driver = make_driver(found, ctx).await?;
        if driver.capabilities().destroy {
            for m in driver.observe().await? {
                driver.destroy(&m.name).await?;
            }
        }
        driver.teardown().await
    })
    .await;
    let outcome = match cleaned {
        Ok(Ok(())) => format!("interrupted; what the suite made for cluster {cluster} was removed"),
        Ok(Err(e)) => format!("interrupted, and removing what the suite made for cluster {cluster} failed: {e}"),
        Err(_) => format!("interrupted, and removing what the suite made for cluster {cluster} took over {limit:?}"),
    };
    Error::op("lab driver-test", outcome)
}

fn driver_name(found: &crate::commands::cluster::Found) -> String {
    match found {
        crate::commands::cluster::Found::Registered(r) => r.name.to_string(),
        crate::commands::cluster::Found::External(p) => p.name.clone(),
    }
}
