//! One function per command. Results go to stdout; progress and logs to stderr.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use lab_core::driver::{lookup, registry};
use lab_core::exec::{execute, Runtime};
use lab_core::external;
use lab_core::observe::observe;
use lab_core::plan::{plan, Desired};
use lab_core::progress::{Progress, Silent};
use lab_core::registry::{check_all, wait_ready};
use lab_core::state::{ClusterState, Paths};
use lab_core::{Driver, DriverContext, Error, Result, Role, Topology};
use serde_json::json;

use crate::args::{Cli, Command, EnvArgs, Output, Shell, SshArgs, TopologyArgs};
use crate::output::table;
use crate::progress::{in_ci, use_bars, Reporter};
use crate::settings::{self, Settings};

/// How long `up` waits for every node to answer `{}` once the plan is executed.
const READY_TIMEOUT: Duration = Duration::from_secs(120);

pub async fn dispatch(cli: Cli) -> Result<i32> {
    let config = cli.config.as_deref();
    match cli.command {
        Command::Up(a) => up(config, &a.topology).await,
        Command::Plan(a) => plan_cmd(config, &a.topology, a.output).await,
        Command::Status(a) => status(config, a.cluster.cluster.as_deref(), a.output).await,
        Command::Ls(a) => ls(a.output),
        Command::Env(a) => env(config, &a).await,
        Command::Check(a) => check(config, a.cluster.cluster.as_deref(), a.output).await,
        Command::Down(a) => down(config, a.cluster.as_deref()).await,
        Command::Drivers(a) => drivers(a.output, a.long).await,
        Command::Ssh(a) => ssh(config, &a).await,
        Command::DriverTest(a) => crate::driver_test::run(config, &a).await,
    }
}

fn reporter(json: bool) -> Arc<dyn Progress> {
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
    let mut driver_config = driver_table;
    if let (Some(hosts), "ssh") = (&settings.hosts, settings.driver.as_str()) {
        // Recorded absolute, so later commands find it from any directory.
        let hosts = std::path::absolute(hosts).unwrap_or_else(|_| hosts.clone());
        if let serde_json::Value::Object(m) = &mut driver_config {
            m.insert("hosts".into(), json!(hosts));
        } else {
            driver_config = json!({ "hosts": hosts });
        }
    }
    Ok((found, driver_config))
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
async fn runtime(
    settings: &Settings,
    recorded: Option<ClusterState>,
    paths: &Paths,
    progress: Arc<dyn Progress>,
    force: bool,
) -> Result<(Runtime, Vec<String>)> {
    // Already validated by `settings::load`, which names where a bad name came from.
    let cluster = settings.cluster_name("cluster")?;
    if let Some(st) = &recorded {
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
    let (found, driver_config) = find_driver(settings)?;
    if settings.registry.image.trim().is_empty() || settings.registry.image.starts_with('-') {
        return Err(Error::input("registry.image", format!("invalid image reference {:?}", settings.registry.image)));
    }
    let ctx = DriverContext {
        driver: settings.driver.clone(),
        cluster: cluster.clone(),
        state_dir: paths.cluster_dir(&cluster),
        cache_dir: paths.driver_cache_dir(&settings.driver),
        config: driver_config.clone(),
        config_source: settings::driver_source(),
        force,
    };
    let driver = make_driver(&found, ctx).await?;
    // A hosts file dictates the nodes; otherwise the counts do, with the seed's names.
    let (mut topology, warnings) = match driver.fixed_nodes() {
        Some(nodes) => Topology::from_nodes(cluster.clone(), nodes)?,
        None => Topology::new(cluster.clone(), settings.managers, settings.workers)?,
    };
    topology.add_role_labels(Role::Manager, settings.role_labels(Role::Manager)?);
    topology.add_role_labels(Role::Worker, settings.role_labels(Role::Worker)?);
    let count = |role| topology.nodes.iter().filter(|n| n.role == role).count() as u32;
    let (managers, workers) = (count(Role::Manager), count(Role::Worker));
    let desired = Desired {
        capabilities: driver.capabilities(),
        topology,
        registry_image: settings.registry.image.clone(),
        mode: settings.mode_request(),
        force,
    };
    // What is recorded for later commands; a one-off `--force` is not.
    let mut recorded_config = driver_config.clone();
    if let serde_json::Value::Object(m) = &mut recorded_config {
        m.remove("force");
    }
    let driver_config = recorded_config;
    let mut state = match recorded {
        Some(mut st) => {
            st.managers = managers;
            st.workers = workers;
            st.registry_image = settings.registry.image.clone();
            st.driver_config = driver_config;
            st
        }
        None => ClusterState {
            version: 1,
            cluster,
            driver: settings.driver.clone(),
            driver_config,
            managers,
            workers,
            registry_image: settings.registry.image.clone(),
            registry_mode: None,
            swarm: None,
            nodes: Default::default(),
            completed: Vec::new(),
            manager_labels: Default::default(),
            worker_labels: Default::default(),
            registry_mode_request: None,
        },
    };
    settings.record(&mut state);
    Ok((Runtime::new(driver, desired, paths.clone(), state, progress), warnings))
}

async fn up(config: Option<&std::path::Path>, flags: &TopologyArgs) -> Result<i32> {
    let paths = Paths::from_env()?;
    // Every input is checked before anything is written, not even the lock file.
    let (settings, recorded) = settings::load(config, flags, |c| paths.load(c))?;
    runtime(&settings, recorded, &paths, Arc::new(Silent), flags.force).await?;
    let cluster = settings.cluster_name("cluster")?;
    // From here on lab reads, decides and writes only under the cluster's lock: the state is
    // read again now, so a run that started while another held the lock sees its work, and
    // the driver's preflight (which may make a host leave a foreign swarm) runs under it too.
    let _lock = paths.lock(&cluster, "lab up")?;
    let (settings, recorded) = settings::load(config, flags, |c| paths.load(c))?;
    let progress = reporter(false);
    let (rt, warnings) = runtime(&settings, recorded, &paths, progress.clone(), flags.force).await?;
    for w in &warnings {
        progress.note(&format!("warning: {w}"));
    }
    let rt = Arc::new(rt);
    rt.driver.preflight(&rt.desired.topology.nodes).await?;
    rt.update_state(|_| {})?;
    let obs = observe(&rt).await?;
    let p = plan(&rt.desired, &obs.observed);
    refuse_blocked(&cluster, &p)?;
    if p.is_empty() {
        progress.note(&format!("cluster {cluster} already matches the desired state; nothing to change"));
    } else {
        progress.note(&format!(
            "bringing up cluster {cluster} with driver {}: {} steps",
            settings.driver,
            p.steps.len()
        ));
        if p.steps.iter().any(|s| matches!(s.step, lab_core::plan::Step::LoadImage { .. })) {
            lab_core::images::prefetch(rt.clone(), rt.desired.registry_image.clone());
        }
        execute(rt.clone(), &p).await?;
    }
    progress.note("checking http://127.0.0.1:5000/v2/ and http://localhost:5000/v2/ on every node");
    wait_ready(&rt, READY_TIMEOUT).await?;
    let mode = rt.state().registry_mode.map(|m| m.to_string()).unwrap_or_default();
    let obs = observe(&rt).await?;
    print!("{}", status_table(&rt, &obs));
    println!();
    println!("registry: answering {{}} at localhost:5000 on every node (mode {mode})");
    println!("point your docker client at the manager: eval \"$(lab env --cluster {cluster})\"");
    Ok(0)
}

/// A plan that would lose the registry's data runs only with `--force`: bad input, exit 2,
/// and nothing changed.
fn refuse_blocked(cluster: &lab_core::ClusterName, p: &lab_core::plan::Plan) -> Result<()> {
    if p.blocked.is_empty() {
        return Ok(());
    }
    Err(Error::input(
        format!("lab up --cluster {cluster}"),
        format!("{}; nothing was changed: pass --force to go ahead anyway", p.blocked.join("; ")),
    ))
}

async fn plan_cmd(config: Option<&std::path::Path>, flags: &TopologyArgs, output: Output) -> Result<i32> {
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
            println!(
                "{}",
                serde_json::to_string_pretty(
                    &json!({"cluster": rt.desired.topology.cluster, "steps": steps, "blocked": p.blocked})
                )
                .expect("json")
            );
        }
        Output::Table if p.is_empty() => {
            println!("cluster {} matches the desired state: nothing to do", rt.desired.topology.cluster);
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
            print!("{}", table(&["#", "STEP", "AFTER"], &rows));
            for b in &p.blocked {
                println!("blocked without --force: {b}");
            }
        }
    }
    Ok(0)
}

/// The runtime of an existing cluster, from its recorded state.
async fn existing(
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
    let (settings, recorded) = settings::load(config, &flags, |c| paths.load(c))?;
    let (rt, _) = runtime(&settings, recorded, &paths, progress, false).await?;
    Ok((rt, paths, known))
}

fn status_table(rt: &Runtime, obs: &lab_core::observe::Observation) -> String {
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

fn node_rows(rt: &Runtime, obs: &lab_core::observe::Observation) -> Vec<serde_json::Value> {
    use lab_core::plan::Membership;
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
                (Some(Membership::Member { .. }), None) => "foreign swarm".into(),
                _ => "".into(),
            };
            json!({
                "name": name,
                "role": role,
                "address": o.and_then(|o| o.address.clone()).or_else(|| machine.and_then(|m| m.address.clone())).unwrap_or_default(),
                "engine": engine,
                "swarm": swarm,
                "availability": sw.map(|s| s.availability.clone()).unwrap_or_default(),
                "manager_status": sw.map(|s| s.manager_status.clone()).unwrap_or_default(),
                "labels": sw.map(|s| json!(s.labels)).unwrap_or(json!({})),
            })
        })
        .collect()
}

async fn status(config: Option<&std::path::Path>, cluster: Option<&str>, output: Output) -> Result<i32> {
    let (rt, _, _) = existing(config, cluster, Arc::new(Silent), true).await?;
    let obs = observe(&rt).await?;
    let st = rt.state();
    let reg_node = rt.desired.topology.registry_node().name.clone();
    let (task_node, task_state) = obs.registry_task.clone().unwrap_or_default();
    let service = if obs.observed.registry.is_some() { "deployed" } else { "missing" };
    match output {
        Output::Json => {
            let v = json!({
                "cluster": st.cluster,
                "driver": st.driver,
                "nodes": node_rows(&rt, &obs),
                "registry": {
                    "stack": lab_core::registry::STACK,
                    "service": lab_core::registry::SERVICE,
                    "state": if service == "missing" { "missing".to_string() } else if task_state.is_empty() { "no task".to_string() } else { task_state.clone() },
                    "running_on": task_node,
                    "image": rt.desired.registry_image,
                    "mode": st.registry_mode,
                    "url": "http://localhost:5000",
                    "data": { "volume": lab_core::registry::VOLUME, "node": reg_node },
                },
            });
            println!("{}", serde_json::to_string_pretty(&v).expect("json"));
        }
        Output::Table => {
            print!("{}", status_table(&rt, &obs));
            println!();
            if service == "missing" {
                println!("registry: stack {} not deployed (run lab up)", lab_core::registry::STACK);
            } else {
                println!(
                    "registry: service {} {} on {}, image {}, mode {}, data in volume {} on {}",
                    lab_core::registry::SERVICE,
                    if task_state.is_empty() { "has no task".to_string() } else { task_state },
                    if task_node.is_empty() { "-".to_string() } else { task_node },
                    rt.desired.registry_image,
                    st.registry_mode.map(|m| m.to_string()).unwrap_or_else(|| "-".into()),
                    lab_core::registry::VOLUME,
                    reg_node
                );
            }
        }
    }
    Ok(0)
}

fn ls(output: Output) -> Result<i32> {
    let paths = Paths::from_env()?;
    let all = paths.list()?;
    match output {
        Output::Json => {
            let v: Vec<_> = all
                .iter()
                .map(|s| json!({"cluster": s.cluster, "driver": s.driver, "managers": s.managers, "workers": s.workers, "registry_image": s.registry_image, "registry_mode": s.registry_mode}))
                .collect();
            println!("{}", serde_json::to_string_pretty(&v).expect("json"));
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
            print!(
                "{}",
                table(&["CLUSTER", "DRIVER", "MANAGERS", "WORKERS", "REGISTRY IMAGE", "REGISTRY MODE"], &rows)
            );
        }
    }
    Ok(0)
}

fn shell_from_env() -> Shell {
    match std::env::var("SHELL").unwrap_or_default().rsplit('/').next() {
        Some("fish") => Shell::Fish,
        Some("zsh") => Shell::Zsh,
        _ => Shell::Bash,
    }
}

/// Quotes a value for a POSIX shell or fish: single quotes, with embedded ones escaped.
fn quote(shell: Shell, v: &str) -> String {
    match shell {
        Shell::Fish => format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'")),
        _ => format!("'{}'", v.replace('\'', r"'\''")),
    }
}

async fn env(config: Option<&std::path::Path>, a: &EnvArgs) -> Result<i32> {
    let (rt, _, _) = existing(config, a.cluster.cluster.as_deref(), Arc::new(Silent), true).await?;
    let shell = a.shell.unwrap_or_else(shell_from_env);
    let manager = rt.desired.topology.first_manager().name.clone();
    let machines = rt.driver.observe().await?;
    let machine = machines
        .iter()
        .find(|m| m.name == manager)
        .ok_or_else(|| Error::node(&manager, "find the machine", "it does not exist (run lab up)"))?;
    let engine = rt.driver.engine(machine).await?;
    let cluster = &rt.desired.topology.cluster;
    for (k, v) in &engine.client_env {
        match (shell, a.unset) {
            (Shell::Fish, false) => println!("set -gx {k} {};", quote(shell, v)),
            (Shell::Fish, true) => println!("set -e {k};"),
            (_, false) => println!("export {k}={}", quote(shell, v)),
            (_, true) => println!("unset {k}"),
        }
    }
    let flag = if a.unset { " --unset" } else { "" };
    match shell {
        Shell::Fish => {
            println!("# Run this command to configure your shell:\n# lab env --cluster {cluster}{flag} | source")
        }
        _ => println!("# Run this command to configure your shell:\n# eval \"$(lab env --cluster {cluster}{flag})\""),
    }
    Ok(0)
}

async fn check(config: Option<&std::path::Path>, cluster: Option<&str>, output: Output) -> Result<i32> {
    let (rt, _, _) = existing(config, cluster, Arc::new(Silent), true).await?;
    rt.set_machines(rt.driver.observe().await?);
    let checks = check_all(&rt).await;
    let ok = checks.iter().all(|c| c.ok);
    match output {
        Output::Json => {
            println!("{}", serde_json::to_string_pretty(&json!({"ok": ok, "nodes": checks})).expect("json"))
        }
        Output::Table => {
            let mut rows = Vec::new();
            for c in &checks {
                if c.urls.is_empty() {
                    rows.push(vec![
                        c.node.clone(),
                        "-".into(),
                        "FAIL".into(),
                        c.explanation.clone().unwrap_or_default(),
                    ]);
                }
                for u in &c.urls {
                    rows.push(vec![
                        c.node.clone(),
                        u.url.clone(),
                        if u.ok { "ok".into() } else { "FAIL".into() },
                        u.answer.clone(),
                    ]);
                }
            }
            print!("{}", table(&["NODE", "URL", "RESULT", "ANSWER"], &rows));
            for c in checks.iter().filter(|c| !c.ok) {
                if let Some(why) = &c.explanation {
                    println!("{}: {why}", c.node);
                }
            }
        }
    }
    Ok(if ok { 0 } else { 1 })
}

async fn down(config: Option<&std::path::Path>, cluster: Option<&str>) -> Result<i32> {
    let progress = reporter(false);
    let name = settings::cluster_only(config, cluster)?;
    // The state is read under the lock, and the lock file lives outside the directory `down`
    // removes, so no other lab process can take the cluster while it goes.
    let _lock = Paths::from_env()?.lock(&name, "lab down")?;
    let (rt, paths, known) = existing(config, cluster, progress.clone(), false).await?;
    let cluster = rt.desired.topology.cluster.clone();
    let machines = rt.driver.observe().await?;
    if rt.desired.capabilities.destroy {
        let results = join_all(machines.iter().map(|m| async {
            let r = rt.driver.destroy(&m.name).await;
            if r.is_ok() {
                progress.note(&format!("removed node {}", m.name));
            }
            r
        }))
        .await;
        for r in results {
            r?;
        }
    } else if !machines.is_empty() {
        // Machines lab was given, not made: undo the swarm and the registry, keep the hosts.
        rt.set_machines(machines.clone());
        lab_core::teardown::dismantle(&rt).await?;
    }
    rt.driver.teardown().await?;
    paths.remove(&cluster)?;
    if machines.is_empty() && !known {
        progress.note(&format!("nothing to remove: lab knows no cluster named {cluster} and found none of its nodes"));
    } else {
        progress.note(&format!("cluster {cluster} is gone"));
    }
    Ok(0)
}

/// Built-in drivers, then external ones found on PATH with where each is. An external driver
/// that cannot be used (its handshake fails, it speaks another protocol version, a built-in
/// driver has its name) is listed with the reason; the others are listed all the same.
async fn drivers(output: Output, long: bool) -> Result<i32> {
    let map = registry()?;
    let mut rows: Vec<serde_json::Value> = map
        .values()
        .map(|r| {
            json!({
                "name": r.name, "from": "built-in", "description": r.description, "usable": true, "error": null,
                "options": r.options,
            })
        })
        .collect();
    let programs = external::on_path();
    let hellos = join_all(programs.iter().map(|p| async move {
        if map.contains_key(p.name.as_str()) {
            return Err(format!("not used: the built-in driver {:?} has this name", p.name));
        }
        p.describe(external::DESCRIBE_TIMEOUT).await.map_err(|e| e.to_string())
    }))
    .await;
    for (p, hello) in programs.iter().zip(hellos) {
        rows.push(match hello {
            Ok(h) => json!({
                "name": p.name, "from": p.path, "description": h.description, "usable": true, "error": null,
                "capabilities": h.capabilities, "options": h.options,
            }),
            Err(why) => json!({ "name": p.name, "from": p.path, "description": null, "usable": false, "error": why }),
        });
    }
    if output == Output::Json {
        println!("{}", serde_json::to_string_pretty(&rows).map_err(|e| Error::op("print the drivers", e))?);
        return Ok(0);
    }
    let cell = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
    let table_rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let what = match r["error"].as_str() {
                Some(why) => format!("unusable: {why}"),
                None => cell(&r["description"]),
            };
            vec![cell(&r["name"]), cell(&r["from"]), what]
        })
        .collect();
    print!("{}", table(&["DRIVER", "FROM", "DESCRIPTION"], &table_rows));
    if long {
        // Every setting of each driver's table, as the driver declares it.
        for r in rows.iter().filter(|r| r["options"].as_array().is_some_and(|o| !o.is_empty())) {
            println!("\n{} settings ([drivers.{}]):", cell(&r["name"]), cell(&r["name"]));
            let option_rows: Vec<Vec<String>> = r["options"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|o| {
                    // Built-in drivers declare {key, flag, kind: {type, choices}}; external ones
                    // {name, type} in the protocol's handshake.
                    let kind = match o["kind"]["choices"].as_array() {
                        Some(c) => c.iter().map(cell).collect::<Vec<_>>().join("|"),
                        None if o["kind"].is_object() => cell(&o["kind"]["type"]),
                        None => cell(&o["type"]),
                    };
                    let mut help = cell(&o["help"]);
                    for note in ["repeatable", "secret"] {
                        if o[note].as_bool() == Some(true) {
                            help.push_str(&format!(" ({note})"));
                        }
                    }
                    let flag = o["flag"].as_str().map(|f| format!("--{f}")).unwrap_or_else(|| "-".into());
                    let key = if o["key"].is_string() { cell(&o["key"]) } else { cell(&o["name"]) };
                    vec![format!("  {key}"), flag, kind, help]
                })
                .collect();
            print!("{}", table(&["  KEY", "FLAG", "TYPE", "HELP"], &option_rows));
        }
    }
    Ok(0)
}

async fn ssh(config: Option<&std::path::Path>, a: &SshArgs) -> Result<i32> {
    let (rt, _, _) = existing(config, a.cluster.cluster.as_deref(), Arc::new(Silent), true).await?;
    if rt.desired.topology.node(&a.node).is_none() {
        let names: Vec<_> = rt.desired.topology.nodes.iter().map(|n| n.name.as_str()).collect();
        return Err(Error::input(
            "NODE",
            format!("no node {:?} in cluster {}; nodes: {}", a.node, rt.desired.topology.cluster, names.join(", ")),
        ));
    }
    let shell = if rt.desired.capabilities.shell { rt.driver.shell_command(&a.node, &a.command) } else { None };
    let cmd = shell.ok_or_else(|| Error::Unsupported {
        driver: rt.state().driver,
        message: "cannot open a shell on a node".into(),
    })?;
    let status = std::process::Command::new(&cmd[0])
        .args(&cmd[1..])
        .status()
        .map_err(|e| Error::node(&a.node, format!("run {}", cmd[0]), e))?;
    Ok(status.code().unwrap_or(1))
}
