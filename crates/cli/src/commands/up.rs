//! `lab up`: create or converge a cluster, then wait until every node answers `{}` and every
//! node's dockerd reaches the registry.

use std::sync::Arc;
use std::time::Duration;

use lab_core::cluster::{Progress, Step};
use lab_core::converge::exec::execute;
use lab_core::converge::observe::observe;
use lab_core::converge::plan::{plan, Plan};
use lab_core::converge::runtime::Runtime;
use lab_core::registry::wait_ready;
use lab_core::state::{Paths, RegistryTls};
use lab_core::wait::{Look, Wait};
use lab_core::{ClusterName, Error, Result};

use super::cluster::{reporter, runtime};
use super::status::status_table;
use crate::args::UpArgs;
use crate::settings;
use crate::timings::Timings;

/// How long `up` waits for every node to answer `{}` once the plan is executed (a node whose
/// dockerd hangs on `localhost:5000` fails at once, after dockerd's own timeout).
pub(super) const READY_TIMEOUT: Duration = Duration::from_secs(120);

pub(super) async fn up(config: Option<&std::path::Path>, args: &UpArgs) -> Result<i32> {
    let Some(path) = &args.timings else {
        return converge(config, args, reporter(false), None).await;
    };
    // The timeline is written whatever happens: a failed run is when it is wanted most.
    let timings = Arc::new(Timings::new(reporter(false)));
    let result = converge(config, args, timings.clone(), Some(&timings)).await;
    match timings.write(path) {
        Ok(file) => timings.note(&format!("timings written to {}", file.display())),
        Err(e) => timings.note(&format!("warning: could not write the timings to {}: {e}", path.display())),
    }
    result
}

/// `work`, as a phase of the run's timeline when there is one.
async fn phase<T>(
    timings: Option<&Timings>,
    label: &str,
    work: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    match timings {
        Some(t) => t.phase(label, work).await,
        None => work.await,
    }
}

async fn converge(
    config: Option<&std::path::Path>,
    args: &UpArgs,
    progress: Arc<dyn Progress>,
    timings: Option<&Timings>,
) -> Result<i32> {
    let flags = &args.topology;
    let paths = Paths::from_env()?;
    // Every input is checked before anything is written, not even the lock file.
    let mut loaded = settings::load(config, flags, |c| paths.load(c))?;
    let recorded = loaded.recorded.clone();
    let mut built =
        runtime(&loaded.settings, recorded.clone(), &paths, progress.clone(), flags.force, flags.renew_certs).await?;
    let cluster = loaded.settings.cluster_name("cluster")?;
    // From here on lab reads, decides and writes only under the cluster's lock: the state is
    // read again now, so a run that started while another held the lock sees its work, and
    // the driver's preflight runs under it too. Only if another run changed the state is the
    // runtime made again (an external driver would be started twice otherwise).
    let _lock = paths.lock(&cluster, "lab up")?;
    if paths.load(&cluster)? != recorded {
        loaded = settings::load(config, flags, |c| paths.load(c))?;
        built = runtime(
            &loaded.settings,
            loaded.recorded.clone(),
            &paths,
            progress.clone(),
            flags.force,
            flags.renew_certs,
        )
        .await?;
    }
    let settings = &loaded.settings;
    if let Some(t) = timings {
        t.name(cluster.as_str(), &settings.driver);
    }
    let (rt, warnings) = built;
    say_settings(&*progress, &loaded, &warnings, &cluster);
    let rt = Arc::new(rt);
    // A first `up` whose images cannot be had stops before it makes anything, and leaves no
    // file either (the driver's preflight may record the engine it will use).
    let dir = paths.cluster_dir(&cluster);
    let first = loaded.recorded.is_none() && !dir.exists();
    phase(timings, "preflight of the driver", rt.driver.preflight(&rt.desired.topology.nodes)).await?;
    rt.update_state(|_| {})?;
    let (obs, lost) = look(&rt, timings, &*progress, args.force_new_cluster).await?;
    let p = plan(&rt.desired, &obs.observed);
    if let Some(t) = timings {
        t.plan(&p);
    }
    refuse_blocked(&cluster, &p, rt.desired.force)?;
    if let Err(e) = phase(timings, "check the images up needs", images_needed(&rt, &p)).await {
        if first {
            let _ = std::fs::remove_dir_all(&dir);
        }
        return Err(e);
    }
    run_plan(&rt, &p, timings, &*progress, &cluster, &settings.driver).await?;
    // IPVS is the kernel's: looked for again only where a machine started or was made.
    let started: Vec<String> = if rt.remade() {
        rt.desired.topology.nodes.iter().map(|n| n.name.clone()).collect()
    } else {
        p.steps
            .iter()
            .filter_map(|s| match &s.step {
                lab_core::cluster::Step::WaitEngine { node } => Some(node.clone()),
                _ => None,
            })
            .collect()
    };
    finish(&rt, timings, &*progress, &cluster, p.is_empty().then_some(obs), lost, &started).await
}

/// The end of `up`, once the plan ran: the registry checked on every node, IPVS looked for
/// beside it (on the nodes in `started`, whose engine the plan waited for, and on those never
/// looked at; the rest as recorded), what the registry holds recorded, and the status table.
/// `unchanged`: the observation an empty plan came from, which is the cluster's now.
async fn finish(
    rt: &Arc<Runtime>,
    timings: Option<&Timings>,
    progress: &dyn Progress,
    cluster: &ClusterName,
    unchanged: Option<lab_core::converge::observe::Observation>,
    lost: Option<super::seen::Seen>,
    started: &[String],
) -> Result<i32> {
    progress.note("checking that every node's dockerd reaches the registry at localhost:5000 and 127.0.0.1:5000");
    // IPVS is the kernel's, whatever the registry does: looked for while the registry is
    // checked.
    let nodes: Vec<String> = rt.desired.topology.nodes.iter().map(|n| n.name.clone()).collect();
    let checked = async {
        let (ready, vips) = tokio::join!(
            phase(timings, "check the registry on every node", wait_ready(&**rt, READY_TIMEOUT)),
            phase(timings, "look for IPVS on every node", async {
                Ok::<_, Error>(lab_core::swarm::vips::check_or_recall(&**rt, &nodes, started).await)
            }),
        );
        ready?;
        let vips = vips?;
        // Written only when they change: a second `up` writes nothing. The registry answers
        // from its node, so its data is there now.
        let mut ipvs = rt.state().ipvs;
        lab_core::swarm::vips::record(&mut ipvs, &vips, &nodes);
        let data_on = Some(rt.desired.topology.registry_node().name.clone());
        if ipvs != rt.state().ipvs || data_on != rt.state().registry_data_on {
            rt.update_state(|st| {
                st.ipvs = ipvs;
                st.registry_data_on = data_on;
            })?;
        }
        Ok::<_, Error>(vips)
    };
    let remember = phase(timings, "record what the registry holds", async {
        super::seen::remember(rt).await;
        Ok(())
    });
    let (vips, obs) = match unchanged {
        // Nothing to change: the registry ran when the cluster was observed, so what it holds
        // is recorded while it is checked; and that observation is the status table's, the
        // check proving the registry answers on every node since.
        Some(obs) => {
            let (vips, remembered) = tokio::join!(checked, remember);
            remembered?;
            (vips?, obs)
        }
        // Else after the check (a registry just deployed may not answer before), while the
        // status table's cluster is observed.
        None => {
            let vips = checked.await?;
            let table = phase(timings, "observe the cluster for the status table", observe(&**rt));
            let (remembered, obs) = tokio::join!(remember, table);
            remembered?;
            (vips, obs?)
        }
    };
    if let Some(seen) = lost.filter(|s| !s.repositories.is_empty()) {
        progress.note(&emptied(seen.repositories.len()));
    }
    say_ready(rt, &obs, cluster, &vips)?;
    Ok(0)
}

/// Runs the plan; if a machine went away after observation saw it and was made again, the
/// plan was made from a cluster that is no longer there: it looks and plans once more.
async fn run_plan(
    rt: &Arc<Runtime>,
    p: &Plan,
    timings: Option<&Timings>,
    progress: &dyn Progress,
    cluster: &ClusterName,
    driver: &str,
) -> Result<()> {
    if p.is_empty() {
        progress.note(&format!("cluster {cluster} already matches the desired state; nothing to change"));
    } else {
        progress.note(&bringing_up(cluster, driver, p.steps.len()));
        if p.steps.iter().any(|s| matches!(s.step, lab_core::cluster::Step::LoadImage { .. })) {
            lab_core::images::prefetch(rt.clone(), rt.desired.registry_image.clone());
        }
        let done = execute(rt.clone(), p).await;
        if rt.remade() {
            // A machine went away after observation saw it, and was made again: the plan was
            // made from a cluster that is no longer there, so look and plan once more.
            progress.note("a machine was made again while up ran: observing the cluster again");
            let obs = phase(timings, "observe the cluster again", observe(&**rt)).await?;
            let again = plan(&rt.desired, &obs.observed);
            if !again.is_empty() {
                progress.note(&bringing_up(cluster, driver, again.steps.len()));
                execute(rt.clone(), &again).await?;
            }
        } else {
            done?;
        }
    }
    Ok(())
}

/// The cluster observed for planning: once engines that just started answer, once the swarm
/// has its quorum (or `--force-new-cluster` gave it one), and with the registry's lost node,
/// if it is, said before anything is made, in numbers (and what lab last saw in it returned).
async fn look(
    rt: &Arc<Runtime>,
    timings: Option<&Timings>,
    progress: &dyn Progress,
    force_new_cluster: bool,
) -> Result<(lab_core::converge::observe::Observation, Option<super::seen::Seen>)> {
    let obs = phase(timings, "observe the cluster", observe(&**rt)).await?;
    let obs = phase(timings, "wait for engines that just started", settled(rt, obs, progress)).await?;
    let obs = phase(timings, "recover the swarm's quorum", quorum(rt, obs, force_new_cluster, progress)).await?;
    let lost = super::seen::registry_node_gone(rt, &obs.machines).map(|node| {
        let seen = super::seen::seen(rt);
        progress.note(&format!("warning: {}; lab up deploys an empty registry", super::seen::loss(&node, &seen)));
        seen
    });
    Ok((obs, lost))
}

/// What `up` says once it deployed an empty registry where one held `n` repositories.
fn emptied(n: usize) -> String {
    format!(
        "the registry is empty: it held {n} {} before its node was lost; push them again, or `lab images load` a \
         saved copy",
        if n == 1 { "repository" } else { "repositories" }
    )
}

/// The notes the settings call for before any work: their warnings and the driver's, and what
/// changes how the cluster is reached or secured.
fn say_settings(progress: &dyn Progress, loaded: &settings::Loaded, warnings: &[String], cluster: &ClusterName) {
    let settings = &loaded.settings;
    for w in loaded.warnings.iter().chain(warnings) {
        progress.note(&format!("warning: {w}"));
    }
    for c in &loaded.changes {
        progress.note(&format!("changing how cluster {cluster} is reached or secured: {c}"));
    }
    if let Some(w) = registry_tls_warning(&settings.driver, settings.registry.tls) {
        progress.note(&format!("warning: {w}"));
    }
}

/// The end of a good `up`: the status table (of `obs`), how the registry answers, and how to
/// reach the cluster.
fn say_ready(
    rt: &Runtime,
    obs: &lab_core::converge::observe::Observation,
    cluster: &ClusterName,
    vips: &[lab_core::swarm::vips::VipCheck],
) -> Result<()> {
    let mode = rt.state().registry_mode.map(|m| m.to_string()).unwrap_or_default();
    out!("{}", status_table(rt, obs))?;
    outln!()?;
    let tls = match rt.desired.tls {
        RegistryTls::Open => "",
        RegistryTls::Mutual => "; mutual TLS: every other client needs the cluster's certificate",
    };
    outln!("registry: answering at localhost:5000 on every node, to the node's dockerd (mode {mode}{tls})")?;
    if let Some(advice) = lab_core::swarm::vips::advice(vips) {
        outln!("services: {advice}")?;
    }
    outln!("point your docker client at the manager: eval \"$(lab env --cluster {cluster})\"")?;
    Ok(())
}

/// How long `up` waits for the engines of running machines to answer before it plans.
const STARTING_TIMEOUT: Duration = Duration::from_secs(90);

/// The observation to plan from once every running machine's engine answers, when one of the
/// cluster's managers did not. Right after a host's reboot (machines started, dockerds still
/// starting) the managers cannot say which swarm is the cluster's, and a plan made then would
/// initialise a new one on a node that is in the old one. Bounded: an engine that never
/// answers is left to the plan's own wait, which names it.
async fn settled(
    rt: &Arc<lab_core::converge::runtime::Runtime>,
    mut obs: lab_core::converge::observe::Observation,
    progress: &dyn Progress,
) -> Result<lab_core::converge::observe::Observation> {
    let quiet = |obs: &lab_core::converge::observe::Observation| -> Vec<String> {
        obs.machines
            .iter()
            .filter(|m| m.state == lab_core::MachineState::Running)
            .filter(|m| !obs.observed.nodes.get(&m.name).is_some_and(|o| o.engine))
            .map(|m| m.name.clone())
            .collect()
    };
    let deadline = std::time::Instant::now() + STARTING_TIMEOUT;
    let mut said = false;
    while obs.observed.managers_unchecked && !quiet(&obs).is_empty() && std::time::Instant::now() < deadline {
        if !said {
            progress.note(&format!(
                "waiting for the engines of {} to answer before planning (their machines run)",
                quiet(&obs).join(", ")
            ));
            said = true;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        obs = observe(&**rt).await?;
    }
    Ok(obs)
}

/// Every image the plan needs that cannot be had, named at once, before anything is made:
/// the driver's (its node image) when the plan makes a machine, and the registry image when
/// the plan loads it onto a machine it makes. (A machine that exists already may pull it
/// itself, over a network this machine does not see.)
async fn images_needed(rt: &Arc<lab_core::converge::runtime::Runtime>, p: &Plan) -> Result<()> {
    let made: Vec<&str> = p
        .steps
        .iter()
        .filter_map(|s| matches!(s.step, Step::CreateNode { .. }).then(|| s.step.node()).flatten())
        .collect();
    if made.is_empty() {
        return Ok(());
    }
    let mut missing = rt.driver.missing_images().await?;
    let loads_on_made =
        p.steps.iter().any(|s| matches!(&s.step, Step::LoadImage { node, .. } if made.contains(&node.as_str())));
    if loads_on_made {
        missing.extend(lab_core::images::needed::missing_registry_image(&**rt, &rt.desired.registry_image).await);
    }
    match lab_core::images::needed::missing_error(&missing) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// How long `up` waits for the swarm to elect a leader when a majority of its managers answer
/// but none leads yet (the leader just went).
const ELECTION_TIMEOUT: Duration = Duration::from_secs(45);

/// The observation to plan from, once the swarm has a quorum. A swarm whose surviving managers
/// are a majority is electing a leader: waited for, bounded. One that lost its quorum (no
/// leader, or a leader that reaches fewer than a majority and can commit nothing) stops `up`
/// with exit 1, naming survivors, losses and the way back, unless `--force-new-cluster` asks
/// for moby's recovery: then the first survivor forces a new cluster, the others leave, and
/// the cluster is observed again (the plan makes and joins the lost managers).
///
/// Killed anywhere in there, the recovery is taken up again: before the forced cluster the
/// quorum is still lost, and `up` says so again; after it, the swarm holds with its one
/// member, the lost managers' entries are no longer in the Raft membership, and a plain `up`
/// makes and joins whichever lost managers have not joined yet.
async fn quorum(
    rt: &Arc<lab_core::converge::runtime::Runtime>,
    obs: lab_core::converge::observe::Observation,
    force_new_cluster: bool,
    progress: &dyn Progress,
) -> Result<lab_core::converge::observe::Observation> {
    let cluster = rt.desired.topology.cluster.to_string();
    // While the swarm is electing, it is observed again, bounded; the last look decides.
    let given = std::sync::Mutex::new(Some(obs));
    let electing = std::sync::Mutex::new(None);
    let waited = Wait::new(format!("cluster {cluster}"), "its swarm to elect a leader", ELECTION_TIMEOUT)
        .every(Duration::from_secs(2))
        .poll(|| async {
            let first = given.lock().expect("observation lock").take();
            let obs = match first {
                Some(obs) => obs,
                None => match observe(&**rt).await {
                    Ok(obs) => obs,
                    Err(e) => return Look::Fail(e),
                },
            };
            let why = obs.quorum_loss(&rt.desired).filter(|l| l.electing()).map(|l| l.error(&cluster));
            match why {
                Some(why) => {
                    *electing.lock().expect("observation lock") = Some(obs);
                    Look::NotYet(Box::new(why))
                }
                None => Look::Done(obs),
            }
        })
        .await;
    let obs = match waited {
        Ok(obs) => obs,
        Err(Error::Timeout { .. }) => {
            electing.into_inner().expect("observation lock").expect("the last look kept its observation")
        }
        Err(e) => return Err(e),
    };
    if let Some(loss) = obs.quorum_loss(&rt.desired) {
        if !force_new_cluster || loss.survivors.is_empty() {
            return Err(loss.error(&cluster));
        }
        let (first, others) = loss.survivors.split_first().expect("checked above");
        progress.note(&format!(
            "forcing a new cluster on {first}: the swarm lost {} of its {} managers ({}); {first} becomes its only \
             manager, keeping services, secrets and data",
            loss.lost.len(),
            loss.lost.len() + loss.survivors.len(),
            loss.lost.join(", ")
        ));
        let rec = lab_core::swarm::steps::force_new_cluster(&**rt, first, others).await?;
        rt.update_state(|st| st.swarm = Some(rec.clone()))?;
        return observe(&**rt).await;
    }
    if force_new_cluster {
        progress.note("the swarm has its quorum: --force-new-cluster changes nothing");
    }
    Ok(obs)
}

/// What `up` says as it starts on the plan's steps.
fn bringing_up(cluster: &lab_core::ClusterName, driver: &str, steps: usize) -> String {
    let noun = if steps == 1 { "step" } else { "steps" };
    format!("bringing up cluster {cluster} with driver {driver}: {steps} {noun}")
}

/// What `up` says once about who may talk to the registry. On the ssh driver the nodes are
/// machines on a real network: an open registry there lets anyone who reaches a node's port
/// 5000 push an image the swarm will then run (the other drivers' nodes sit on a network only
/// this machine reaches).
pub(super) fn registry_tls_warning(driver: &str, tls: RegistryTls) -> Option<String> {
    match tls {
        RegistryTls::Open if driver == "ssh" => Some(
            "the registry is open (tls = \"open\"): anyone on the hosts' network who reaches a node's port 5000 \
             can push images the swarm will run; `--registry-tls mutual` (or [registry] tls = \"mutual\") refuses \
             every client without the cluster's certificate"
                .to_string(),
        ),
        RegistryTls::Open | RegistryTls::Mutual => None,
    }
}

/// A plan that would lose the registry's data, or take a node from another swarm, runs only
/// with `--force` (and some not even then): bad input, exit 2, and nothing changed.
pub(super) fn refuse_blocked(
    cluster: &lab_core::ClusterName,
    p: &lab_core::converge::plan::Plan,
    force: bool,
) -> Result<()> {
    if p.blocked.is_empty() {
        return Ok(());
    }
    Err(Error::input(
        format!("lab up --cluster {cluster}"),
        format!(
            "{}; nothing was changed{}",
            p.blocked.join("; "),
            if force { "" } else { ": pass --force to go ahead anyway" }
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 18, item 19: "1 step", not "1 steps".
    #[test]
    fn the_step_count_agrees_with_its_noun() {
        let c = lab_core::ClusterName::parse("c1", "test").unwrap();
        assert_eq!(bringing_up(&c, "docker", 1), "bringing up cluster c1 with driver docker: 1 step");
        assert_eq!(bringing_up(&c, "docker", 19), "bringing up cluster c1 with driver docker: 19 steps");
    }

    #[test]
    fn an_open_registry_is_a_warning_on_the_ssh_driver_only() {
        let w = registry_tls_warning("ssh", RegistryTls::Open).expect("a warning on ssh");
        assert!(w.contains("anyone on the hosts' network") && w.contains("--registry-tls mutual"), "{w}");
        for d in ["docker", "virtualbox", "qemu"] {
            assert_eq!(registry_tls_warning(d, RegistryTls::Open), None, "{d}");
        }
        for d in ["docker", "ssh"] {
            assert_eq!(registry_tls_warning(d, RegistryTls::Mutual), None, "{d}: mutual TLS serves the engines");
        }
    }
}
