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

use lab_tests::{ensure_images, node_exec, wait_for, HostImage, Lab};

fn lab(tag: &str) -> Lab {
    Lab::new(tag, env!("CARGO_BIN_EXE_lab-e2e"))
}

const SERVICE: &str = "registry_registry";

/// An image this test pushed, and what its task prints (its marker file).
struct Pushed {
    name: String,
    content: &'static str,
}

impl Pushed {
    fn reference(&self) -> String {
        format!("localhost:5000/{}", self.name)
    }
}

/// Builds `name` on the host engine with `content` in it and puts it in with `lab push`.
fn push(lab: &Lab, name: &str, content: &'static str) -> Pushed {
    let image = HostImage::with_content(name, content);
    let r = lab.on(&["push", &image.0]).ok(&format!("lab push {name}"));
    assert_eq!(r.stdout.trim(), format!("localhost:5000/{name}"), "{}", r.all());
    Pushed { name: name.to_string(), content }
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
/// `localhost:5000` answers `{}` from the manager and every worker in `nodes`; returns the
/// container.
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

/// Every image in `images` can be pulled from `localhost:5000` by the engine of every node in
/// `nodes` (its local copy removed first, so the registry must serve it), and runs as a
/// global service on every worker in `workers`, printing its own content.
fn assert_served(lab: &Lab, nodes: &[&str], workers: &[&str], images: &[&Pushed]) {
    for img in images {
        let reference = img.reference();
        for n in nodes {
            let c = lab.container(n);
            node_exec(&c, &["docker", "image", "rm", "-f", &reference]);
            let pulled = node_exec(&c, &["docker", "pull", &reference]);
            assert_eq!(pulled.code, 0, "{n} cannot pull {reference}:\n{}", pulled.all());
            // And gone again, so the service below pulls it too.
            node_exec(&c, &["docker", "image", "rm", "-f", &reference]).ok("remove the pulled copy");
        }
        let manager = lab.container("manager");
        let svc = format!("e2e-served-{}", std::process::id());
        node_exec(&manager, &["docker", "service", "rm", &svc]);
        node_exec(
            &manager,
            &["docker", "service", "create", "--detach", "--name", &svc, "--mode", "global", &reference],
        )
        .ok(&format!("service create {reference}"));
        wait_for(&format!("{reference} running on every worker"), Duration::from_secs(180), || {
            let r = node_exec(
                &manager,
                &["docker", "service", "ps", &svc, "--format", "{{.Node}} {{.CurrentState}} {{.Error}}"],
            );
            let running = r.stdout.lines().filter(|l| l.contains(" Running ")).count();
            if running == workers.len() {
                Ok(())
            } else {
                Err(r.all())
            }
        });
        for w in workers {
            let filter = format!("label=com.docker.swarm.service.name={svc}");
            let ids = node_exec(&lab.container(w), &["docker", "ps", "-q", "--filter", &filter]).ok("docker ps");
            let id = ids.stdout.lines().next().unwrap_or_else(|| panic!("no task of {svc} on {w}")).to_string();
            let logs = wait_for(&format!("{reference} printing its content on {w}"), Duration::from_secs(30), || {
                let logs = node_exec(&lab.container(w), &["docker", "logs", &id]);
                if logs.stdout.contains(img.content) {
                    Ok(logs)
                } else {
                    Err(logs.all())
                }
            });
            assert!(logs.stdout.contains(img.content), "{w} runs something else than {reference}: {}", logs.all());
        }
        node_exec(&manager, &["docker", "service", "rm", &svc]).ok("service rm");
        let filter = format!("label=com.docker.swarm.service.name={svc}");
        for w in workers {
            wait_for(&format!("{svc}'s task gone from {w}"), Duration::from_secs(60), || {
                let r = node_exec(&lab.container(w), &["docker", "ps", "-aq", "--filter", &filter]);
                if r.stdout.trim().is_empty() {
                    Ok(())
                } else {
                    Err(r.all())
                }
            });
        }
    }
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
    ensure_images();
    let lab = lab("restart");
    lab.up(&["--workers", "2"]).ok("lab up");
    let all = ["manager", "worker1", "worker2"];
    let workers = ["worker1", "worker2"];
    let a = push(&lab, &name("restart-a", "1"), "first");
    let b = push(&lab, &name("restart-b", "1"), "second");
    assert_eq!(registry_runs_on(&lab).as_deref(), Some("worker1"));

    let task = task_container(&lab, "worker1").expect("the registry's task on worker1");
    node_exec(&lab.container("worker1"), &["docker", "kill", &task]).ok("kill the registry's task");
    let task = wait_registry_on(&lab, "worker1", Some(&task), &all);
    assert_served(&lab, &all, &workers, &[&a, &b]);
    plan_is_empty(&lab);

    node_exec(&lab.container("manager"), &["docker", "service", "update", "--detach", "--force", SERVICE])
        .ok("docker service update --force");
    wait_registry_on(&lab, "worker1", Some(&task), &all);
    assert_served(&lab, &all, &workers, &[&a, &b]);
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
    let all = ["manager", "worker1", "worker2"];
    let workers = ["worker1", "worker2"];
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
        up.stderr.contains("MB of registry data from worker2 to worker1"),
        "lab up did not say how much it moved:\n{}",
        up.stderr
    );
    assert_eq!((pin_of(&lab, "worker1").as_str(), pin_of(&lab, "worker2").as_str()), ("true", ""));
    assert_eq!(registry_runs_on(&lab).as_deref(), Some("worker1"));
    assert!(!has_volume(&lab, "worker2"), "worker2 keeps a copy of the registry's data");
    assert_served(&lab, &all, &workers, &[&kept, &new, &twice]);
    plan_is_empty(&lab);
}

/// The registry's node container removed (`docker rm -f`, as a user cleaning up would), then
/// `lab up`: the node is made again on its volume, and the registry with every image is back.
#[test]
fn the_registry_node_made_again_by_up_keeps_every_image() {
    ensure_images();
    let lab = lab("remake");
    lab.up(&["--workers", "2"]).ok("lab up");
    let all = ["manager", "worker1", "worker2"];
    let workers = ["worker1", "worker2"];
    let a = push(&lab, &name("remake-a", "1"), "first");
    let b = push(&lab, &name("remake-b", "1"), "second");
    assert_eq!(registry_runs_on(&lab).as_deref(), Some("worker1"));

    lab_tests::docker(&["rm", "-f", &lab.container("worker1")]).ok("docker rm -f worker1's container");
    let plan = lab.on(&["plan"]).ok("lab plan");
    assert!(plan.stdout.contains("create node worker1"), "{}", plan.stdout);
    let up = lab.on(&["up"]);
    assert_eq!(up.code, 0, "lab up did not make worker1 again:\n{}", up.all());
    assert_eq!(registry_runs_on(&lab).as_deref(), Some("worker1"));
    assert_served(&lab, &all, &workers, &[&a, &b]);
    plan_is_empty(&lab);
}
