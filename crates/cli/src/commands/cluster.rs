//! What every command shares: making a cluster's runtime (its driver, desired state and
//! recorded state) from settings, for a new cluster or an existing one.

use std::io::IsTerminal;
use std::sync::Arc;

use lab_core::cluster::Desired;
use lab_core::cluster::Progress;
use lab_core::converge::runtime::Runtime;
use lab_core::driver::lookup;
use lab_core::external;
use lab_core::state::{ClusterState, Paths};
use lab_core::topology::ClusterName;
use lab_core::{Driver, DriverContext, Error, Result, Role, Topology};

use crate::args::TopologyArgs;
use crate::progress::{in_ci, use_bars, Reporter};
use crate::settings::{self, Settings};

pub(super) fn reporter(json: bool) -> Arc<dyn Progress> {
    Arc::new(Reporter::new(use_bars(std::io::stderr().is_terminal(), in_ci(), json)))
}

/// Where a driver name led.
#[derive(Clone)]
pub(crate) enum Found {
    Registered(&'static lab_core::driver::Registration),
    External(external::Program),
}

/// Finds the driver the settings name, built-in or external, and its table as the settings
/// give it.
pub(crate) fn find_driver(settings: &Settings) -> Result<(Found, serde_json::Value)> {
    // A name no crate registered may be an external driver: `[drivers.NAME] command`, or
    // `lab-driver-NAME` on PATH.
    let driver_table = settings.drivers.get(&settings.driver).cloned().unwrap_or(serde_json::Value::Null);
    let found = match lookup(&settings.driver) {
        Ok(reg) => Found::Registered(reg),
        Err(Error::Input { .. }) => {
            match external::find(&settings.driver, &driver_table, &settings::driver_source())? {
                Some(program) => Found::External(program),
                None => return Err(external::unknown(&settings.driver)),
            }
        }
        Err(e) => return Err(e),
    };
    // (`hosts = "..."` at the top of an older lab.toml is in the ssh table already, and paths
    // are absolute: `settings::load` normalises both.)
    Ok((found, driver_table))
}

/// What the driver of `settings` is given for `cluster`: its directories and its table.
pub(crate) fn driver_context(
    settings: &Settings,
    paths: &Paths,
    cluster: &lab_core::ClusterName,
    config: serde_json::Value,
    force: bool,
) -> DriverContext {
    DriverContext {
        driver: settings.driver.clone(),
        cluster: cluster.clone(),
        state_dir: paths.cluster_dir(cluster),
        cache_dir: paths.driver_cache_dir(&settings.driver),
        config,
        config_source: settings::driver_source(),
        force,
    }
}

/// Makes the driver `found` leads to, for `ctx`: the registered factory, or the program
/// started and its handshake done.
pub(crate) async fn make_driver(found: &Found, ctx: DriverContext) -> Result<Box<dyn Driver>> {
    Ok(match found {
        Found::Registered(reg) => (reg.factory)(ctx)?,
        Found::External(program) => Box::new(program.start(ctx).await?),
    })
}

/// Builds the runtime for a cluster from settings, validating everything first.
pub(super) async fn runtime(
    settings: &Settings,
    recorded: Option<ClusterState>,
    paths: &Paths,
    progress: Arc<dyn Progress>,
    force: bool,
    renew_certs: bool,
) -> Result<(Runtime, Vec<String>)> {
    // Already validated by `settings::load`, which names where a bad name came from.
    let cluster = settings.cluster_name("cluster")?;
    refuse_mismatch(settings, recorded.as_ref(), &cluster, renew_certs)?;
    let (found, driver_config) = find_driver(settings)?;
    if settings.registry.image.trim().is_empty() || settings.registry.image.starts_with('-') {
        return Err(Error::input("registry.image", format!("invalid image reference {:?}", settings.registry.image)));
    }
    let ctx = driver_context(settings, paths, &cluster, driver_config.clone(), force);
    let driver = make_driver(&found, ctx).await?;
    // A hosts file dictates the nodes; otherwise the counts do, with the seed's names.
    let (mut topology, warnings) = match driver.fixed_nodes() {
        Some(nodes) => Topology::from_nodes(cluster.clone(), nodes)?,
        None => {
            // The managers it has keep their names, whatever the count becomes.
            let existing: Vec<String> = recorded
                .iter()
                .flat_map(|st| st.nodes.iter())
                .filter(|(_, n)| n.role == Role::Manager)
                .map(|(name, _)| name.clone())
                .collect();
            Topology::keeping(cluster.clone(), settings.managers, settings.workers, &existing)?
        }
    };
    topology.manager_availability = settings.manager_availability;
    topology.add_role_labels(Role::Manager, settings.role_labels(Role::Manager)?);
    topology.add_role_labels(Role::Worker, settings.role_labels(Role::Worker)?);
    let count = |role| topology.nodes.iter().filter(|n| n.role == role).count() as u32;
    let (managers, workers) = (count(Role::Manager), count(Role::Worker));
    let desired = Desired {
        capabilities: driver.capabilities(),
        topology,
        registry_image: settings.registry.image.clone(),
        mode: settings.mode_request(),
        tls: settings.registry.tls,
        force,
        renew_certs,
    };
    // What is recorded for later commands; a one-off `--force` is not.
    let mut recorded_config = driver_config.clone();
    if let serde_json::Value::Object(m) = &mut recorded_config {
        m.remove("force");
    }
    let state = to_record(settings, recorded, cluster, recorded_config, (managers, workers));
    Ok((Runtime::new(driver, desired, paths.clone(), state, progress), warnings))
}

/// Refuses what this cluster's settings and its record say cannot be done: `--renew-certs` on
/// an open registry, or another driver than the one that made the cluster.
fn refuse_mismatch(
    settings: &Settings,
    recorded: Option<&ClusterState>,
    cluster: &ClusterName,
    renew_certs: bool,
) -> Result<()> {
    if renew_certs && settings.registry.tls != lab_core::state::RegistryTls::Mutual {
        return Err(Error::input(
            "--renew-certs",
            format!(
                "the registry of cluster {cluster} is open (registry.tls = \"open\"): it has no certificates to \
                 renew; --registry-tls mutual gives it some"
            ),
        ));
    }
    if let Some(st) = recorded {
        if st.driver != settings.driver {
            return Err(Error::input(
                "--driver",
                format!(
                    "cluster {cluster} was made with driver {:?}, not {:?}; run `lab down --cluster {cluster}` first, or use another --cluster",
                    st.driver, settings.driver
                ),
            ));
        }
    }
    Ok(())
}

/// What is recorded of the cluster for later commands: its recorded state brought up to these
/// settings, or a new one.
fn to_record(
    settings: &Settings,
    recorded: Option<ClusterState>,
    cluster: ClusterName,
    driver_config: serde_json::Value,
    (managers, workers): (u32, u32),
) -> ClusterState {
    let mut state = match recorded {
        Some(mut st) => {
            st.managers = managers;
            st.workers = workers;
            st.registry_image = settings.registry.image.clone();
            st.driver_config = driver_config;
            st
        }
        None => {
            let mut st = ClusterState::new(cluster, &settings.driver, driver_config);
            (st.managers, st.workers) = (managers, workers);
            st.registry_image = settings.registry.image.clone();
            st
        }
    };
    settings.record(&mut state);
    state
}

/// The runtime of an existing cluster, from its recorded state.
pub(super) async fn existing(
    config: Option<&std::path::Path>,
    cluster_flag: Option<&str>,
    progress: Arc<dyn Progress>,
    must_exist: bool,
) -> Result<(Runtime, Paths, bool)> {
    let paths = Paths::from_env()?;
    let cluster = settings::cluster_only(config, cluster_flag)?;
    let recorded = paths.load(&cluster)?;
    let known = recorded.is_some();
    if must_exist && !known {
        return Err(Error::input(
            if cluster_flag.is_some() { "--cluster" } else { "cluster" },
            format!("lab knows no cluster named \"{cluster}\"; `lab ls` lists the clusters it knows"),
        ));
    }
    let flags =
        TopologyArgs { cluster: crate::args::ClusterArg { cluster: Some(cluster.to_string()) }, ..Default::default() };
    let loaded = settings::load(config, &flags, |c| paths.load(c))?;
    for w in &loaded.warnings {
        eprintln!("lab: warning: {w}");
    }
    let (rt, _) = runtime(&loaded.settings, loaded.recorded, &paths, progress, false, false).await?;
    Ok((rt, paths, known))
}
