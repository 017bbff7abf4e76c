//! End-to-end: the registry's data survives what happens to its task and its node, on the
//! docker driver (issue 9, "Data that survives"): its task restarted, its task forced onto
//! another node and then `lab up`, and its node's container removed and made again by `lab
//! up`. After each, every image put in with `lab push` is still there: each node's own engine
//! pulls it from `localhost:5000`, and Swarm runs it as a service on every worker. (Scaling so
//! that the registry moves is `swarm_day_two.rs`'s
//! `scaling_workers_to_zero_and_back_keeps_pushed_images`.)
//!
//! Each test makes its own cluster: they move the registry and remove nodes, so sharing one
//! would make them interfere.

use std::time::Duration;

use lab_tests::{assert_served, ensure_images, node_exec, push_image as push, wait_for, Lab};

fn lab(tag: &str) -> Lab {
    Lab::new(tag, env!("CARGO_BIN_EXE_lab-e2e"))
}

const SERVICE: &str = "registry_registry";
/// The nodes of the 1+2 cluster each test makes, and its workers.
const ALL: [&str; 3] = ["manager", "worker1", "worker2"];
const WORKERS: [&str; 2] = ["worker1", "worker2"];

/// A 1+2 cluster (`tag`) with two images put in with `lab push`, its registry on worker1.
fn cluster_with_two_images(tag: &str) -> (Lab, lab_tests::Pushed, lab_tests::Pushed) {
    ensure_images();
    let lab = lab(tag);
    lab.up(&["--workers", "2"]).ok("lab up");
    let a = push(&lab, &name(&format!("{tag}-a"), "1"), "first");
    let b = push(&lab, &name(&format!("{tag}-b"), "1"), "second");
    assert_eq!(registry_runs_on(&lab).as_deref(), Some("worker1"));
    (lab, a, b)
}

/// A name unique to this process, so that concurrent tests' host images do not collide.
fn name(repo: &str, tag: &str) -> String {
    format!("e2e-{repo}-{}:{tag}", std::process::id())
}

/// The node the registry's running task is on, as the manager's `docker service ps` says
/// (`None` while none runs).
fn registry_runs_on(lab: &Lab) -> Option<String> {
    let r = node_exec(
        &lab.container("manager"),
        &[
            "docker",
            "service",
            "ps",
            SERVICE,
            "--filter",
            "desired-state=running",
            "--format",
            "{{.Node}} {{.CurrentState}}",
        ],
    );
    r.stdout
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some("Running"))
        .map(|l| l.split(' ').next().unwrap().into())
}

/// The registry's running task container on `node`, if one runs there.
fn task_container(lab: &Lab, node: &str) -> Option<String> {
    let filter = format!("label=com.docker.swarm.service.name={SERVICE}");
    let r = node_exec(&lab.container(node), &["docker", "ps", "-q", "--filter", &filter]);
    r.stdout.lines().next().map(str::to_string)
}

/// Waits until the registry's task runs on `node` in a container other than `not`, and
/// `localhost:5000` answers `{}` on every node in `nodes`; returns the container.
fn wait_registry_on(lab: &Lab, node: &str, not: Option<&str>, nodes: &[&str]) -> String {
    let c = wait_for(&format!("a new registry task running on {node}"), Duration::from_secs(180), || {
        match (registry_runs_on(lab), task_container(lab, node)) {
            (Some(n), Some(c)) if n == node && Some(c.as_str()) != not => Ok(c),
            other => Err(format!("{other:?}")),
        }
    });
    for n in nodes {
        wait_for(&format!("{{}} from localhost:5000 on {n}"), Duration::from_secs(120), || {
            let r = node_exec(&lab.container(n), &["curl", "-s", "-m", "5", "http://localhost:5000/v2/"]);
            if r.stdout.trim() == "{}" {
                Ok(())
            } else {
                Err(r.all())
            }
        });
    }
    c
}

fn plan_is_empty(lab: &Lab) {
    let plan = lab.on(&["plan"]).ok("lab plan");
    assert!(plan.stdout.contains("nothing to do"), "lab plan after the repair:\n{}", plan.stdout);
}

/// The registry's task restarted on its own node, twice: its container killed (Swarm starts
/// another), then `docker service update --force`. Its data is on the node's volume, so every
/// image is still there, and lab has nothing to do.
#[test]
fn a_restarted_registry_task_keeps_every_image() {
    let (lab, a, b) = cluster_with_two_images("restart");

    let task = task_container(&lab, "worker1").expect("the registry's task on worker1");
    node_exec(&lab.container("worker1"), &["docker", "kill", &task]).ok("kill the registry's task");
    let task = wait_registry_on(&lab, "worker1", Some(&task), &ALL);
    assert_served(&lab, &ALL, &WORKERS, &[&a, &b]);
    plan_is_empty(&lab);

    node_exec(&lab.container("manager"), &["docker", "service", "update", "--detach", "--force", SERVICE])
        .ok("docker service update --force");
    wait_registry_on(&lab, "worker1", Some(&task), &ALL);
    assert_served(&lab, &ALL, &WORKERS, &[&a, &b]);
    plan_is_empty(&lab);
}

/// The swarm node label `lab.registry` of `node`, as the manager reads it.
fn pin_of(lab: &Lab, node: &str) -> String {
    let r = node_exec(
        &lab.container("manager"),
        &["docker", "node", "inspect", node, "--format", "{{index .Spec.Labels \"lab.registry\"}}"],
    )
    .ok("docker node inspect");
    r.stdout.trim().to_string()
}

/// Whether `node`'s engine has the registry's data volume.
fn has_volume(lab: &Lab, node: &str) -> bool {
    let r = node_exec(&lab.container(node), &["docker", "volume", "ls", "-q"]).ok("docker volume ls");
    r.stdout.lines().any(|l| l == "registry_data")
}

/// The pin moved behind lab's back (the label taken off worker1 and put on worker2, the
/// service forced to reschedule), and images pushed while the task ran there, one of them a
/// tag pushed before too. `lab plan` sees the drift; `lab up` puts the pin back and carries
/// what was pushed meanwhile to worker1, merged with what was there: every image pushed before
/// and after is served, a tag pushed twice serves its last push, and worker2 keeps no copy.
#[test]
fn a_registry_task_forced_onto_another_node_comes_back_with_every_image() {
    ensure_images();
    let lab = lab("drift");
    lab.up(&["--workers", "2"]).ok("lab up");
    let kept = push(&lab, &name("drift-kept", "1"), "kept");
    let twice = name("drift-twice", "1");
    push(&lab, &twice, "old");

    let manager = lab.container("manager");
    node_exec(&manager, &["docker", "node", "update", "--label-rm", "lab.registry", "worker1"]).ok("label-rm");
    node_exec(&manager, &["docker", "node", "update", "--label-add", "lab.registry=true", "worker2"]).ok("label-add");
    // worker2's forwarder holds its port 5000 (the registry is on worker1), where the task
    // would publish it: out of the way, as a user moving the registry by hand must do.
    node_exec(&lab.container("worker2"), &["docker", "rm", "-f", "lab-registry-forwarder"]).ok("remove the forwarder");
    node_exec(&manager, &["docker", "service", "update", "--detach", "--force", SERVICE]).ok("force the service");
    wait_registry_on(&lab, "worker2", None, &["worker2"]);
    // Pushed while the registry runs on worker2, on worker2's own, new volume.
    let new = push(&lab, &name("drift-new", "1"), "new");
    let twice = push(&lab, &twice, "last");

    let plan = lab.on(&["plan"]).ok("lab plan");
    for want in ["set role, availability and labels of worker1", "move registry data from worker2 to worker1"] {
        assert!(plan.stdout.contains(want), "lab plan does not show `{want}`:\n{}", plan.stdout);
    }
    let up = lab.on(&["up"]);
    assert_eq!(up.code, 0, "lab up after the pin moved failed:\n{}", up.all());
    assert!(
        up.stderr.contains("MB of registry data from worker2 to worker1, added to the data worker1 had"),
        "lab up did not say how much it moved:\n{}",
        up.stderr
    );
    assert_eq!((pin_of(&lab, "worker1").as_str(), pin_of(&lab, "worker2").as_str()), ("true", ""));
    assert_eq!(registry_runs_on(&lab).as_deref(), Some("worker1"));
    assert!(!has_volume(&lab, "worker2"), "worker2 keeps a copy of the registry's data");
    assert_served(&lab, &ALL, &WORKERS, &[&kept, &new, &twice]);
    plan_is_empty(&lab);
}

/// The registry's node container removed (`docker rm -f`, as a user cleaning up would), then
/// `lab up`: the node is made again on its volume, and the registry with every image is back.
#[test]
fn the_registry_node_made_again_by_up_keeps_every_image() {
    let (lab, a, b) = cluster_with_two_images("remake");

    lab_tests::docker(&["rm", "-f", &lab.container("worker1")]).ok("docker rm -f worker1's container");
    let plan = lab.on(&["plan"]).ok("lab plan");
    assert!(plan.stdout.contains("create node worker1"), "{}", plan.stdout);
    let up = lab.on(&["up"]);
    assert_eq!(up.code, 0, "lab up did not make worker1 again:\n{}", up.all());
    assert_eq!(registry_runs_on(&lab).as_deref(), Some("worker1"));
    assert_served(&lab, &ALL, &WORKERS, &[&a, &b]);
    plan_is_empty(&lab);
}

/// The move helpers lab makes on `node` (`lab-registry-move-*`), running or not.
fn move_helpers(lab: &Lab, node: &str) -> Vec<String> {
    let r = node_exec(&lab.container(node), &["docker", "ps", "-a", "--format", "{{.Names}}"]).ok("docker ps -a");
    r.stdout.lines().filter(|l| l.starts_with("lab-registry-move-")).map(str::to_string).collect()
}

/// Issue 18, items 1 and 4: `lab up --workers 0` killed while it copies the registry's data
/// from worker1 to the manager. The manager's volume then holds a partial copy, and worker1
/// the only complete one: the next plan moves the data again before it destroys worker1, `up`
/// ends with every image served, and no move helper is left behind.
#[test]
fn a_data_move_killed_half_way_loses_nothing() {
    ensure_images();
    let lab = lab("halfmove");
    lab.up(&["--workers", "1"]).ok("lab up");
    // Enough data that the copy takes seconds: 300 MB that do not compress.
    let big = lab_tests::HostImage::with_script(
        &name("halfmove-big", "1"),
        "head -c 300000000 /dev/urandom > /big && echo big > /marker",
    );
    lab.on(&["push", &big.0]).ok("lab push of the big image");
    let big = lab_tests::Pushed { name: big.0.clone(), content: "big" };
    let small = push(&lab, &name("halfmove-small", "1"), "small");

    let mut up = lab.command(&["up", "--workers", "0", "--cluster", &lab.cluster]).spawn().expect("start lab up");
    // Killed the moment the manager's volume appears: the copy has only begun.
    wait_for("the registry's volume to appear on the manager", Duration::from_secs(120), || {
        if has_volume(&lab, "manager") {
            Ok(())
        } else if let Ok(Some(status)) = up.try_wait() {
            Err(format!("lab up ended ({status}) before the move began"))
        } else {
            Err("no volume yet".into())
        }
    });
    up.kill().expect("kill lab up");
    up.wait().expect("reap lab up");

    let plan = lab.on(&["plan", "--workers", "0"]).ok("lab plan after the kill");
    assert!(
        plan.stdout.contains("move registry data from worker1 to manager"),
        "the partial copy on the manager was taken for the registry's data:\n{}",
        plan.stdout
    );
    let up = lab.on(&["up", "--workers", "0"]);
    assert_eq!(up.code, 0, "lab up after the kill failed:\n{}", up.all());
    assert_eq!(registry_runs_on(&lab).as_deref(), Some("manager"));
    let images = lab.on(&["images"]).ok("lab images");
    for img in [&big, &small] {
        let (repo, _) = img.name.split_once(':').unwrap();
        assert!(images.stdout.contains(repo), "{} is gone from the registry:\n{}", img.name, images.stdout);
    }
    assert_served(&lab, &["manager"], &["manager"], &[&small, &big]);
    assert_eq!(move_helpers(&lab, "manager"), Vec::<String>::new(), "move helpers left on the manager");
    plan_is_empty(&lab);
}
