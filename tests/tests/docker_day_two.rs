//! End-to-end: the docker driver on day two, after the happy path: a shell that `lab env`
//! pointed at a manager, a foreign container squatting on a node's name, probes left behind,
//! and a state directory that went missing. Each test makes its own uniquely named cluster
//! and removes it (and anything it made by hand) even when it fails.

use std::time::{Duration, Instant};

use lab_tests::{docker, ensure_images, labelled, node_exec, remove_labelled, NODE_IMAGE, REGISTRY_IMAGE};

fn lab(tag: &str) -> lab_tests::Lab {
    lab_tests::Lab::new(tag, env!("CARGO_BIN_EXE_lab-e2e"))
}

/// Removes a container by name when dropped, whatever the test did.
struct RemoveOnDrop(String);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        docker(&["rm", "-fv", &self.0]);
    }
}

/// Removes a cluster's labelled objects from the host engine when dropped.
struct RemoveLabelledOnDrop(String);

impl Drop for RemoveLabelledOnDrop {
    fn drop(&mut self) {
        remove_labelled(&self.0);
    }
}

/// Every file under `dir`, as `find` lists them.
fn files_under(dir: &std::path::Path) -> Vec<String> {
    let out = std::process::Command::new("find").arg(dir).args(["-type", "f"]).output().expect("run find");
    String::from_utf8_lossy(&out.stdout).lines().map(String::from).collect()
}

/// The node containers' IDs, to see that a command changed none of them.
fn node_ids(cluster: &str) -> String {
    docker(&["ps", "-aq", "--no-trunc", "--filter", &format!("label=lab.cluster={cluster}")]).stdout
}

/// Item 1: after `eval "$(lab env)"` (DOCKER_HOST points at the manager's engine), lab still
/// drives the cluster on the engine it was made on; a new cluster there is refused.
#[test]
fn lab_env_shell_keeps_lab_on_the_recorded_engine() {
    ensure_images();
    let lab = lab("env");
    let other = lab_tests::unique_cluster("nested");
    let _other_cleanup = RemoveLabelledOnDrop(other.clone());
    lab.up(&["--workers", "1"]).ok("lab up");
    let env = lab.on(&["env", "--shell", "bash"]).ok("lab env");
    let host = env
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("export DOCKER_HOST="))
        .expect("lab env printed DOCKER_HOST")
        .trim_matches('\'')
        .to_string();
    let shell = [("DOCKER_HOST", host.as_str())];
    let c = lab.cluster.as_str();

    // Everything `eval "$(lab env)"` exports: in that shell, lab acts on the cluster it was
    // pointed at without `--cluster`, as docker does on the manager.
    let exports = lab_tests::exports(&env.stdout, '\'');
    let all: Vec<(&str, &str)> = exports.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let status = lab.run_env(&all, &["status"]);
    assert_eq!(status.code, 0, "lab status in the lab env shell, no --cluster:\n{}", status.all());
    assert!(status.stdout.contains("worker1"), "status is not of cluster {c}:\n{}", status.stdout);
    let plan = lab.run_env(&all, &["plan"]).ok("lab plan in the lab env shell, no --cluster");
    assert!(plan.stdout.contains(c) && plan.stdout.contains("nothing to do"), "{}", plan.stdout);
    let unset = lab.run_env(&all, &["env", "--unset"]).ok("lab env --unset");
    assert!(unset.stdout.lines().any(|l| l == "unset LAB_CLUSTER"), "{}", unset.stdout);

    let plan = lab.run_env(&shell, &["plan", "--cluster", c]).ok("lab plan in the lab env shell");
    assert!(plan.stdout.contains("nothing to do"), "plan in the lab env shell planned:\n{}", plan.stdout);

    let before = node_ids(c);
    let up = lab.run_env(&shell, &["up", "--cluster", c]).ok("lab up in the lab env shell");
    assert!(up.stderr.contains("nothing to change"), "{}", up.stderr);
    assert_eq!(node_ids(c), before, "up in the lab env shell changed the node containers");

    lab.run_env(&shell, &["ssh", "--cluster", c, "worker1", "--", "true"]).ok("lab ssh in the lab env shell");

    // A new cluster inside the manager's engine: refused, naming the cluster and the node.
    let nested = lab
        .run_env(&shell, &["up", "--cluster", &other, "--node-image", NODE_IMAGE, "--registry-image", REGISTRY_IMAGE]);
    assert_eq!(nested.code, 2, "a cluster nested in a node was not refused:\n{}", nested.all());
    assert!(
        nested.stderr.contains(&format!("cluster {c}")) && nested.stderr.contains("manager"),
        "the refusal does not name cluster {c} and node manager:\n{}",
        nested.stderr
    );
    assert!(!nested.stderr.contains("panicked"), "{}", nested.stderr);
    let inside =
        docker(&["-H", &host, "ps", "-aq", "--filter", &format!("label=lab.cluster={other}")]).ok("ps on the manager");
    assert_eq!(inside.stdout.trim(), "", "the refused up created containers on the manager");

    // `down` in the same shell removes the cluster from the host engine, and says that the
    // shell still points at it (issue 18, item 17); run elsewhere, it does not.
    let unset = "eval \"$(lab env --unset)\"";
    // DOCKER_HOST alone points at the manager.
    let down = lab.run_env(&shell, &["down", "--cluster", c]).ok("lab down in the lab env shell");
    assert!(down.stderr.contains(unset), "down does not say to run {unset}:\n{}", down.stderr);
    assert_eq!(labelled(c), Vec::<String>::new(), "down in the lab env shell left these on the host engine");
    assert!(!lab.run(&["ls"]).stdout.contains(c), "down forgot nothing");
    // What it says to run works, though lab no longer knows the cluster.
    let unset_run = lab.run_env(&all, &["env", "--unset"]).ok("lab env --unset after down");
    for (k, _) in &exports {
        assert!(unset_run.stdout.lines().any(|l| l == format!("unset {k}")), "{k} stays set:\n{}", unset_run.stdout);
    }
    // LAB_CLUSTER still names the cluster `down` was asked to remove.
    let again = lab.run_env(&[("LAB_CLUSTER", c)], &["down"]).ok("a second down with LAB_CLUSTER");
    assert!(again.stderr.contains(unset), "{}", again.stderr);
    // With DOCKER_HOST still the removed manager's socket, lab cannot reach an engine, and
    // says why.
    let stale = lab.run_env(&all, &["down"]);
    assert_eq!(stale.code, 1, "{}", stale.all());
    assert!(stale.stderr.contains(unset) && stale.stderr.contains("node manager"), "{}", stale.stderr);
    let elsewhere = lab.run(&["down", "--cluster", c]).ok("lab down from another shell");
    assert!(!elsewhere.stderr.contains("lab env --unset"), "{}", elsewhere.stderr);
}

/// Item 9: a container named like a node but not made by lab is a conflict, left untouched.
#[test]
fn foreign_container_named_like_a_node_is_not_adopted() {
    ensure_images();
    let lab = lab("foreign");
    let name = lab.container("worker1");
    let _cleanup = RemoveOnDrop(name.clone());
    docker(&["create", "--name", &name, NODE_IMAGE, "true"]).ok("create the foreign container");
    let before = docker(&["inspect", "--format", "{{.Id}} {{.State.Status}}", &name]).ok("inspect").stdout;

    let up = lab.up(&["--workers", "1"]);
    assert_eq!(up.code, 1, "up did not fail on the foreign container:\n{}", up.all());
    assert!(
        up.stderr.contains(&name) && up.stderr.contains("not lab's"),
        "the error does not name {name} as not lab's:\n{}",
        up.stderr
    );
    assert!(!up.stderr.contains("panicked"), "{}", up.stderr);
    let after = docker(&["inspect", "--format", "{{.Id}} {{.State.Status}}", &name]).ok("inspect after up").stdout;
    assert_eq!(after, before, "up touched the foreign container");
    assert!(before.trim().ends_with(" created"), "{before}");
}

/// Item 9: probes (throwaway containers on a node's engine) carry the cluster's label, are
/// removed, and a run removes the leftovers of a killed one; another cluster's are kept.
#[test]
fn probes_carry_the_cluster_label_and_leftovers_are_removed() {
    ensure_images();
    let lab = lab("probe");
    lab.up(&["--workers", "1"]).ok("lab up");
    let worker = lab.container("worker1");
    // Without curl (and wget) on the node, lab looks from a probe container.
    node_exec(&worker, &["mv", "/usr/bin/curl", "/usr/bin/curl.hidden"]).ok("hide curl");
    let label = format!("lab.cluster={}", lab.cluster);
    for (name, cluster_label) in [("lab-probe-leftover", label.as_str()), ("lab-probe-others", "lab.cluster=e2e-other")]
    {
        node_exec(
            &worker,
            &[
                "docker",
                "create",
                "--name",
                name,
                "--label",
                "lab.probe=true",
                "--label",
                cluster_label,
                "--label",
                "lab.probe.expires=1",
                REGISTRY_IMAGE,
            ],
        )
        .ok("plant a leftover probe");
    }
    let since = node_exec(&worker, &["date", "+%s"]).ok("date").stdout.trim().to_string();

    lab.on(&["check"]).ok("lab check with probes on worker1");

    let until = node_exec(&worker, &["date", "+%s"]).ok("date").stdout.trim().to_string();
    let until = (until.parse::<u64>().expect("epoch") + 1).to_string();
    let created = node_exec(
        &worker,
        &[
            "docker",
            "events",
            "--since",
            &since,
            "--until",
            &until,
            "--filter",
            "type=container",
            "--filter",
            "event=create",
            "--format",
            "{{json .Actor.Attributes}}",
        ],
    )
    .ok("docker events on worker1")
    .stdout;
    let probes: Vec<&str> = created
        .lines()
        .filter(|l| l.contains("\"lab.probe\"") && !l.contains("lab-probe-leftover") && !l.contains("lab-probe-others"))
        .collect();
    assert!(!probes.is_empty(), "lab check ran no probe on worker1; created: {created}");
    for p in &probes {
        assert!(p.contains(&format!("\"lab.cluster\":\"{}\"", lab.cluster)), "a probe without the cluster label: {p}");
    }
    let left = node_exec(&worker, &["docker", "ps", "-a", "--filter", "label=lab.probe", "--format", "{{.Names}}"])
        .ok("ps on worker1")
        .stdout;
    assert_eq!(left.trim(), "lab-probe-others", "probes left on worker1 (only the other cluster's may stay)");
}

/// Item 16: with the cluster's state directory gone, `up` recovers the nodes that still run
/// on the engine, quickly, into the same swarm.
#[test]
fn up_recovers_a_cluster_whose_state_directory_was_removed() {
    ensure_images();
    let lab = lab("nostate");
    lab.up(&["--workers", "1"]).ok("lab up");
    let manager = lab.container("manager");
    let swarm_id = || {
        node_exec(&manager, &["docker", "info", "--format", "{{.Swarm.Cluster.ID}}"])
            .ok("swarm ID")
            .stdout
            .trim()
            .to_string()
    };
    let before = swarm_id();
    assert!(!before.is_empty());

    let dir = lab.state_home().join("lab/clusters").join(&lab.cluster);
    std::fs::remove_dir_all(&dir).expect("remove the cluster's state directory");

    let start = Instant::now();
    lab.up(&["--workers", "1"]).ok("lab up after the state directory was removed");
    let took = start.elapsed();
    assert!(took < Duration::from_secs(100), "recovery took {}s", took.as_secs());

    lab.on(&["check"]).ok("every node answers after recovery");
    let status = lab.on(&["status", "--output", "json"]).ok("lab status");
    let v: serde_json::Value = serde_json::from_str(&status.stdout).expect("json");
    for n in v["nodes"].as_array().expect("nodes") {
        assert_eq!(n["engine"], "ready", "{n}");
        assert_eq!(n["swarm"], "ready", "{n}");
    }
    assert_eq!(swarm_id(), before, "the recovered cluster is another swarm");
}

/// Item 1: a cluster whose recorded engine was replaced (another engine ID at the recorded
/// endpoint) is not driven on the new one: exit 1, saying so, and the record is kept.
#[test]
fn a_replaced_engine_is_named_and_not_used() {
    ensure_images();
    let lab = lab("engid");
    lab.up(&["--workers", "1"]).ok("lab up");
    let record = lab.state_home().join("lab/clusters").join(&lab.cluster).join("engine.json");
    let text = std::fs::read_to_string(&record).expect("the driver recorded the cluster's engine");
    let v: serde_json::Value = serde_json::from_str(&text).expect("engine.json is JSON");
    let id = v["engine_id"].as_str().expect("engine_id").to_string();
    let host_id = docker(&["info", "--format", "{{.ID}}"]).ok("docker info").stdout.trim().to_string();
    assert_eq!(id, host_id, "the recorded engine is not the host engine");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&record).unwrap().permissions().mode() & 0o777, 0o600);

    std::fs::write(&record, text.replace(&id, "0000-not-this-engine")).expect("rewrite engine.json");
    for args in [&["status"][..], &["plan"], &["down"]] {
        let r = lab.on(args);
        assert_eq!(r.code, 1, "lab {args:?} on a replaced engine:\n{}", r.all());
        assert!(r.stderr.contains("not engine 0000-not-this-engine"), "lab {args:?} does not say so:\n{}", r.stderr);
    }
    assert!(lab.run(&["ls"]).stdout.contains(&lab.cluster), "a failed down forgot the cluster");
    assert_eq!(labelled(&lab.cluster).len(), 5, "down on a replaced engine removed something");
    std::fs::write(&record, text).expect("restore engine.json");
}

/// Item 1: `down` that cannot remove something labelled with the cluster fails naming it and
/// keeps the cluster's record, so a later `down` finishes the job.
#[test]
fn down_that_leaves_something_behind_keeps_the_cluster() {
    ensure_images();
    let lab = lab("downkeep");
    lab.up(&["--workers", "1"]).ok("lab up");
    let net = format!("{}-extra", lab.cluster);
    docker(&["network", "create", "--label", &format!("lab.cluster={}", lab.cluster), &net]).ok("labelled network");
    let squatter = format!("{}-squatter", lab.cluster);
    let _cleanup = RemoveOnDrop(squatter.clone());
    docker(&["run", "-d", "--name", &squatter, "--network", &net, "--entrypoint", "sleep", REGISTRY_IMAGE, "300"])
        .ok("a foreign container on that network");

    let down = lab.on(&["down"]);
    assert_eq!(down.code, 1, "down with a network it cannot remove:\n{}", down.all());
    assert!(down.stderr.contains(&net), "down does not name {net}:\n{}", down.stderr);
    assert!(!down.stderr.contains("is gone"), "{}", down.stderr);
    assert!(lab.run(&["ls"]).stdout.contains(&lab.cluster), "a failed down forgot the cluster");

    docker(&["rm", "-fv", &squatter]).ok("remove the squatter");
    lab.on(&["down"]).ok("the second down");
    assert_eq!(labelled(&lab.cluster), Vec::<String>::new());
    assert!(!lab.run(&["ls"]).stdout.contains(&lab.cluster));
}

/// Item 16: lab run with another state root (another XDG_STATE_HOME, or sudo's HOME) knows
/// nothing of the cluster, yet `up` reaches the nodes through the sockets they were made with.
#[test]
fn up_from_another_state_home_reaches_the_nodes() {
    ensure_images();
    let lab = lab("otherhome");
    lab.up(&["--workers", "1"]).ok("lab up");
    let other = tempfile::Builder::new().prefix("lab-st2").tempdir().expect("another state root");
    let home = [("XDG_STATE_HOME", other.path().to_str().expect("utf-8 path"))];
    let c = lab.cluster.as_str();
    let before = node_ids(c);
    let start = Instant::now();
    lab.run_env(
        &home,
        &["up", "--cluster", c, "--workers", "1", "--node-image", NODE_IMAGE, "--registry-image", REGISTRY_IMAGE],
    )
    .ok("lab up from another state root");
    assert!(start.elapsed() < Duration::from_secs(60), "took {}s", start.elapsed().as_secs());
    assert_eq!(node_ids(c), before, "up from another state root replaced nodes");
    lab.run_env(&home, &["check", "--cluster", c]).ok("lab check from another state root");
    lab.run_env(&home, &["down", "--cluster", c]).ok("lab down from another state root");
    assert_eq!(labelled(c), Vec::<String>::new());
}

/// Issue 18, item 17: a first `up` that fails before it makes anything (its node image cannot
/// be had) leaves no file behind: no `engine.json`, which no command lists, and no lock. And
/// `down` removes such a record where an older lab left one.
#[test]
fn a_failed_first_up_leaves_no_file() {
    ensure_images();
    let lab = lab("failfirst");
    // In a registry on a loopback port nobody listens on: the pull fails at once, offline.
    let image = "127.0.0.1:9/lab-absent:1";
    let up = lab.on(&["up", "--workers", "1", "--node-image", image, "--registry-image", REGISTRY_IMAGE]);
    assert_eq!(up.code, 1, "{}", up.all());
    assert!(up.stderr.contains(image), "{}", up.stderr);
    assert_eq!(files_under(lab.state_home()), Vec::<String>::new(), "the failed up left these");
    assert_eq!(labelled(&lab.cluster), Vec::<String>::new());

    // The record an older lab's failed first `up` left: `down` removes it.
    let dir = lab.state_home().join("lab/clusters").join(&lab.cluster);
    std::fs::create_dir_all(&dir).expect("the cluster's state directory");
    let id = docker(&["info", "--format", "{{.ID}}"]).ok("docker info").stdout.trim().to_string();
    let endpoint = std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into());
    let record = serde_json::json!({ "endpoint": endpoint, "engine_id": id });
    std::fs::write(dir.join("engine.json"), record.to_string()).expect("write engine.json");
    lab.on(&["down"]).ok("lab down");
    assert_eq!(files_under(lab.state_home()), Vec::<String>::new(), "down left these");
}

/// Issue 18, item 13: a first `up` on a machine that cannot pull names every image it lacks
/// in one message, each with how to get it, before it makes anything: exit 1, no container,
/// no file. With the node image there, the missing registry image is found before any node
/// is made (it was found only once every node had been made and had joined).
#[test]
fn every_missing_image_is_named_before_anything_is_made() {
    ensure_images();
    let lab = lab("noimages");
    // In a registry on a loopback port nobody listens on: the lookups fail at once, offline.
    let (node, registry) = ("127.0.0.1:9/lab-absent-node:1", "127.0.0.1:9/lab-absent-registry:1");
    let up = lab.on(&["up", "--workers", "1", "--node-image", node, "--registry-image", registry]);
    assert_eq!(up.code, 1, "{}", up.all());
    for needle in [node, registry, "2 images missing", "scripts/offline-images.sh", "--node-image", "--registry-image"]
    {
        assert!(up.stderr.contains(needle), "the message does not name {needle}:\n{}", up.stderr);
    }
    assert_eq!(up.stderr.matches("lab: error:").count(), 1, "{}", up.stderr);
    assert_eq!(labelled(&lab.cluster), Vec::<String>::new(), "up made these");
    assert_eq!(files_under(lab.state_home()), Vec::<String>::new(), "up left these");

    let up = lab.on(&["up", "--workers", "1", "--node-image", NODE_IMAGE, "--registry-image", registry]);
    assert_eq!(up.code, 1, "{}", up.all());
    assert!(up.stderr.contains(registry) && up.stderr.contains("1 image missing"), "{}", up.stderr);
    assert!(!up.stderr.contains(NODE_IMAGE), "{}", up.stderr);
    assert_eq!(labelled(&lab.cluster), Vec::<String>::new(), "up made these before it found the image missing");
    assert_eq!(files_under(lab.state_home()), Vec::<String>::new(), "up left these");
}

/// A `lab down` killed after it removed the node containers and the manager's volume, but not
/// a worker's (interrupted.rs, `LAB_KILL_SEED=2`, kill 1): the next `up` makes both again, the
/// manager on an empty disk and a new swarm, the worker on its old disk and still in the old
/// swarm, whose managers are gone. The worker leaves that swarm and joins the new one.
#[test]
fn a_worker_made_again_on_its_old_disk_leaves_the_old_swarm_and_joins_the_new() {
    ensure_images();
    let lab = lab("olddisk");
    lab.up(&["--workers", "1"]).ok("lab up");
    let manager = lab.container("manager");
    let old = node_exec(&manager, &["docker", "info", "--format", "{{.Swarm.Cluster.ID}}"]).ok("swarm ID");
    for node in ["manager", "worker1"] {
        lab_tests::docker(&["rm", "-f", &lab.container(node)]).ok("remove a node's container");
    }
    lab_tests::docker(&["volume", "rm", &format!("{manager}-docker")]).ok("remove the manager's volume");

    lab.on(&["up"]).ok("lab up after a down killed half way");
    let new = node_exec(&manager, &["docker", "info", "--format", "{{.Swarm.Cluster.ID}}"]).ok("swarm ID");
    assert_ne!(old.stdout.trim(), new.stdout.trim(), "the manager's empty disk cannot hold the old swarm");
    let ls = node_exec(&manager, &["docker", "node", "ls", "--format", "{{.Hostname}} {{.Status}}"]).ok("node ls");
    let mut rows: Vec<&str> = ls.stdout.lines().collect();
    rows.sort();
    assert_eq!(rows, ["manager Ready", "worker1 Ready"], "{}", ls.all());
    let plan = lab.on(&["plan"]).ok("lab plan");
    assert!(plan.stdout.contains("nothing to do"), "{}", plan.all());
    lab.on(&["check"]).ok("lab check");
}
