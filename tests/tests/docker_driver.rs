//! End-to-end: the docker driver against the real Docker engine, as a user would drive it.
//! Each test makes its own uniquely named cluster and removes it, even when it fails.

use std::time::Duration;

use lab_tests::{docker, ensure_images, labelled, node_exec, wait_for, REGISTRY_IMAGE};

fn lab(tag: &str) -> lab_tests::Lab {
    lab_tests::Lab::new(tag, env!("CARGO_BIN_EXE_lab-e2e"))
}
use serde_json::Value;

const NODES: [&str; 3] = ["manager", "worker1", "worker2"];

fn json(run: &lab_tests::Run) -> Value {
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", run.stdout))
}

/// Issue 18, item 12: `lab ARGS --cluster <cluster>` with its stdout a pipe nobody reads (the
/// reading end closed before lab starts, as after `| head -1`) ends quietly, with the exit
/// status it has when read (`want`).
fn quiet_with_nobody_reading(lab: &lab_tests::Lab, args: &[&str], want: i32) {
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    let mut a = args.to_vec();
    a.extend(["--cluster", &lab.cluster]);
    let out = lab.command(&a).stdout(writer).output().expect("run lab");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked") && !stderr.contains("Broken pipe"), "lab {args:?}:\n{stderr}");
    assert_eq!(out.status.code(), Some(want), "lab {args:?} with nobody reading:\n{stderr}");
}

/// The seed's whole procedure and what lab adds, end to end.
#[test]
fn up_forms_a_drained_swarm_whose_registry_serves_every_node() {
    ensure_images();
    let lab = lab("main");
    // With its timeline (issue 20): a page in the directory named, with every step `up` ran.
    let timings = tempfile::tempdir().expect("a directory for the timings");
    let up = lab.up(&["--timings", &timings.path().display().to_string()]).ok("lab up");
    assert!(up.stderr.contains("registry mode: fallback"), "up did not say which mode it chose:\n{}", up.stderr);
    let pages: Vec<_> = std::fs::read_dir(timings.path()).expect("read the timings directory").flatten().collect();
    assert_eq!(pages.len(), 1, "lab up --timings DIR wrote {} files:\n{}", pages.len(), up.stderr);
    let page = std::fs::read_to_string(pages[0].path()).expect("read the timings page");
    assert!(up.stderr.contains(&format!("timings written to {}", pages[0].path().display())), "{}", up.stderr);
    for line in up.stderr.lines().filter_map(|l| l.strip_prefix("  ok  ")) {
        // `STEP (1.2s)` or `STEP (1.2s): DETAIL`; a step may hold parentheses of its own.
        let at = line.match_indices(" (").map(|(i, _)| i).find(|&i| {
            let rest = &line[i + 2..];
            rest.split_once("s)").is_some_and(|(secs, _)| secs.parse::<f64>().is_ok())
        });
        let step = at.map_or(line, |i| &line[..i]);
        assert!(page.contains(&step.replace('<', "&lt;")), "the timeline lacks `{step}`");
    }
    assert!(page.contains("class=\"critical\"") && page.contains("check the registry on every node"), "{page}");

    // Three ready nodes, a drained leader, two active workers.
    let status = json(&lab.on(&["status", "--output", "json"]).ok("lab status"));
    let nodes = status["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 3, "{status:#}");
    for n in nodes {
        assert_eq!(n["engine"], "ready", "{n}");
        assert_eq!(n["swarm"], "ready", "{n}");
    }
    let mgr = nodes.iter().find(|n| n["name"] == "manager").expect("manager");
    assert_eq!(mgr["availability"], "drain");
    assert_eq!(mgr["manager_status"], "leader");
    for w in nodes.iter().filter(|n| n["role"] == "worker") {
        assert_eq!(w["availability"], "active", "{w}");
    }
    assert_eq!(status["registry"]["state"], "running", "{status:#}");
    assert_eq!(status["registry"]["data"]["volume"], "registry_data");

    // What the seed's user sees from the manager: the stack's service 1/1, with its labels.
    let manager = lab.container("manager");
    let ls = node_exec(&manager, &["docker", "service", "ls", "--format", "{{.Name}} {{.Replicas}}"]).ok("service ls");
    assert!(ls.stdout.contains("registry_registry 1/1"), "{}", ls.stdout);
    for (kind, name) in [("service", "registry_registry"), ("network", "registry_default")] {
        let ns = node_exec(
            &manager,
            &["docker", kind, "inspect", "--format", "{{index .Spec.Labels \"com.docker.stack.namespace\"}}", name],
        );
        let ns = if kind == "network" {
            node_exec(
                &manager,
                &["docker", kind, "inspect", "--format", "{{index .Labels \"com.docker.stack.namespace\"}}", name],
            )
        } else {
            ns
        };
        assert_eq!(ns.stdout.trim(), "registry", "{kind} {name}: {}", ns.all());
    }
    let ps = node_exec(&manager, &["docker", "stack", "ps", "registry", "--format", "{{.Node}} {{.CurrentState}}"])
        .ok("stack ps");
    assert!(ps.stdout.starts_with("worker1 Running"), "registry not pinned to worker1: {}", ps.stdout);
    let secrets = node_exec(
        &manager,
        &[
            "docker",
            "service",
            "inspect",
            "--format",
            "{{range .Spec.TaskTemplate.ContainerSpec.Secrets}}{{.SecretName}}{{end}}",
            "registry_registry",
        ],
    );
    assert_eq!(secrets.stdout.trim(), "lab-registry-http-secret", "{}", secrets.all());
    let logs = node_exec(&manager, &["docker", "service", "logs", "registry_registry"]);
    assert!(!logs.all().contains("No HTTP secret provided"), "{}", logs.all());

    // The seed's check, from inside every node, for both spellings.
    for node in NODES {
        for url in ["http://127.0.0.1:5000/v2/", "http://localhost:5000/v2/"] {
            wait_for(&format!("{{}} from {url} on {node}"), Duration::from_secs(30), || {
                let r = node_exec(&lab.container(node), &["curl", "-s", "-m", "5", url]);
                if r.stdout.trim() == "{}" {
                    Ok(())
                } else {
                    Err(r.all())
                }
            });
        }
    }

    lab_tests::image_made_on_manager_runs_on(&manager, &lab.container("worker2"), "worker2");

    // A second `up` plans nothing and changes nothing.
    let ids = |lab: &lab_tests::Lab| {
        docker(&["ps", "-q", "--no-trunc", "--filter", &format!("label=lab.cluster={}", lab.cluster)]).stdout
    };
    let before = ids(&lab);
    let plan = lab.on(&["plan"]).ok("lab plan");
    assert!(plan.stdout.contains("nothing to do"), "{}", plan.stdout);
    assert_eq!(json(&lab.on(&["plan", "--output", "json"]))["steps"], serde_json::json!([]));
    let again = lab.on(&["up"]).ok("second lab up");
    assert!(again.stderr.contains("nothing to change"), "{}", again.stderr);
    assert_eq!(ids(&lab), before, "the second up changed the node containers");

    // `check` explains a broken node, `plan` shows the repair, `up` does it.
    node_exec(&lab.container("worker2"), &["docker", "stop", "lab-registry-forwarder"]).ok("stop the forwarder");
    let check = lab.on(&["check"]);
    assert_eq!(check.code, 1, "{}", check.all());
    // The check failed whoever reads it.
    quiet_with_nobody_reading(&lab, &["check"], 1);
    quiet_with_nobody_reading(&lab, &["check", "--output", "json"], 1);
    assert!(
        check.stdout.contains("worker2: the forwarder container lab-registry-forwarder is not running"),
        "{}",
        check.stdout
    );
    let plan = lab.on(&["plan"]).ok("plan after damage");
    assert!(plan.stdout.contains("point localhost:5000 on worker2 at the registry"), "{}", plan.stdout);
    assert_eq!(plan.stdout.lines().count(), 2, "only the forwarder is replanned:\n{}", plan.stdout);
    lab.on(&["up"]).ok("repairing up");
    let check = lab.on(&["check"]).ok("lab check");
    // Three nodes, each with two URLs and its dockerd; and every manager answering.
    assert_eq!(check.stdout.matches("   ok   ").count(), 10, "{}", check.stdout);
    assert!(check.stdout.contains("every manager answers"), "{}", check.stdout);
    for args in [
        &["status"][..],
        &["status", "--output", "json"],
        &["plan"],
        &["plan", "--workers", "3"],
        &["plan", "--output", "json"],
        &["check"],
        &["env"],
        &["env", "--shell", "fish"],
        &["images"],
        &["images", "--output", "json"],
        &["up"],
    ] {
        quiet_with_nobody_reading(&lab, args, 0);
    }

    // `env` points a docker client at the manager.
    let env = lab.on(&["env", "--shell", "bash"]).ok("lab env");
    let host = env
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("export DOCKER_HOST="))
        .expect("DOCKER_HOST")
        .trim_matches('\'')
        .to_string();
    let info =
        docker(&["-H", &host, "info", "--format", "{{.Swarm.ControlAvailable}} {{.Name}}"]).ok("docker via lab env");
    assert_eq!(info.stdout.trim(), "true manager");

    // The state file is 0600 in a 0700 directory; the swarm's tokens and the registry's
    // secret (which only the swarm and the registry's task know) never reach lab's output.
    let dir = lab.state_home().join("lab/clusters").join(&lab.cluster);
    let token = node_exec(&manager, &["docker", "swarm", "join-token", "-q", "worker"]).ok("join-token").stdout;
    let token = token.trim().to_string();
    assert!(token.starts_with("SWMTKN-"));
    let task = node_exec(
        &lab.container("worker1"),
        &["docker", "ps", "-q", "--filter", "label=com.docker.swarm.service.name=registry_registry"],
    )
    .ok("find the registry's task")
    .stdout;
    let secret = node_exec(
        &lab.container("worker1"),
        &["docker", "exec", task.trim(), "cat", "/run/secrets/lab-registry-http-secret"],
    )
    .ok("read the secret inside the registry's task")
    .stdout;
    assert_eq!(secret.len(), 64, "{secret:?}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
    assert_eq!(std::fs::metadata(dir.join("state.json")).unwrap().permissions().mode() & 0o777, 0o600);
    let verbose = lab.on(&["-vv", "up"]).ok("verbose up");
    for out in [&up, &again, &verbose, &lab.on(&["status", "--output", "json"]), &lab.on(&["plan", "--output", "json"])]
    {
        assert!(!out.all().contains(&token), "a join token reached lab's output");
        assert!(!out.all().contains(&secret), "the registry secret reached lab's output");
    }
    assert!(lab.run(&["ls"]).stdout.contains(&lab.cluster));

    // `down` leaves nothing labelled with the cluster.
    lab.on(&["down"]).ok("lab down");
    assert_eq!(labelled(&lab.cluster), Vec::<String>::new(), "down left these behind");
    assert!(!lab.run(&["ls"]).stdout.contains(&lab.cluster));
    assert!(!dir.exists(), "down left the state directory");
}

/// An `up` killed half-way resumes where it stopped; a concurrent `up` is refused while the
/// first holds the lock.
#[test]
fn interrupted_up_resumes_and_concurrent_up_is_refused() {
    ensure_images();
    let lab = lab("resume");
    let mut child = lab
        .command(&[
            "up",
            "--cluster",
            &lab.cluster,
            "--node-image",
            lab_tests::NODE_IMAGE,
            "--registry-image",
            REGISTRY_IMAGE,
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn lab up");
    wait_for("three running node containers", Duration::from_secs(60), || {
        let r = docker(&["ps", "-q", "--filter", &format!("label=lab.cluster={}", lab.cluster)]);
        if r.stdout.lines().count() == 3 {
            Ok(())
        } else {
            Err(r.stdout)
        }
    });
    let busy = lab.up(&[]);
    assert_eq!(busy.code, 1, "{}", busy.all());
    assert!(busy.stderr.contains("is busy: lab up (pid"), "{}", busy.stderr);
    child.kill().expect("kill lab up");
    let _ = child.wait();

    let plan = lab.on(&["plan"]).ok("plan after interruption");
    assert!(!plan.stdout.contains("create node"), "nodes made before the interruption are replanned:\n{}", plan.stdout);
    lab.on(&["up"]).ok("resumed up");
    assert!(lab.on(&["plan"]).stdout.contains("nothing to do"));
}

/// `kill -9` the moment the manager is in a swarm, before `up` has recorded it or labelled a
/// node: the next `up` knows that swarm for the cluster's and finishes the job.
#[test]
fn up_killed_right_after_swarm_init_resumes_with_that_swarm() {
    ensure_images();
    let lab = lab("initkill");
    let mut child = lab
        .command(&[
            "up",
            "--cluster",
            &lab.cluster,
            "--workers",
            "1",
            "--node-image",
            lab_tests::NODE_IMAGE,
            "--registry-image",
            REGISTRY_IMAGE,
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn lab up");
    let manager = format!("{}-manager", lab.cluster);
    let swarm = wait_for("the manager in a swarm", Duration::from_secs(120), || {
        let r = docker(&[
            "exec",
            &manager,
            "docker",
            "info",
            "--format",
            "{{if .Swarm.Cluster}}{{.Swarm.Cluster.ID}}{{end}}",
        ]);
        let id = r.stdout.trim().to_string();
        if r.code == 0 && !id.is_empty() {
            Ok(id)
        } else {
            Err(r.all())
        }
    });
    child.kill().expect("kill lab up");
    let _ = child.wait();
    let labels = node_exec(&manager, &["docker", "node", "inspect", "self", "--format", "{{json .Spec.Labels}}"]);
    eprintln!("killed with the manager in swarm {swarm}, its node labels {}", labels.stdout.trim());

    lab.on(&["up"]).ok("up after the kill");
    let after = node_exec(&manager, &["docker", "info", "--format", "{{.Swarm.Cluster.ID}}"]).ok("docker info");
    assert_eq!(after.stdout.trim(), swarm, "the next up made another swarm instead of finishing this one");
    assert!(lab.on(&["plan"]).ok("plan").stdout.contains("nothing to do"));
}

/// An image no node has and none can pull fails `up` naming the image and what it is for,
/// before any node is made (issue 18, item 13: it was found at the load, once every node had
/// been made and had joined).
#[test]
fn missing_registry_image_names_node_and_image() {
    ensure_images();
    let lab = lab("noimg");
    let r = lab.on(&[
        "up",
        "--workers",
        "1",
        "--node-image",
        lab_tests::NODE_IMAGE,
        "--registry-image",
        "lab-offline/absent:1",
    ]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stderr.contains("lab: error: ") && r.stderr.contains("lab-offline/absent:1"), "{}", r.stderr);
    assert!(r.stderr.contains("the registry image") && r.stderr.contains("nothing was made"), "{}", r.stderr);
    assert_eq!(labelled(&lab.cluster), Vec::<String>::new(), "up made these");
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
}

/// Issue 18, item 14: on nodes whose kernel has no IPVS (this machine's, whose kernel the
/// dind nodes share), swarm services get no virtual IP and no ingress-published port. `up`
/// and `status` say so, with how to deploy anyway (`endpoint_mode: dnsrr`, host-mode ports),
/// and `lab check` has a row per node saying what works, without failing on it (the registry
/// does without). Where the kernel has IPVS, the rows say so and nothing is advised.
#[test]
fn nodes_without_ipvs_are_told_to_deploy_with_dnsrr() {
    ensure_images();
    let lab = lab("ipvs");
    let ipvs = std::path::Path::new("/proc/net/ip_vs").exists();
    let up = lab.up(&["--workers", "1"]).ok("lab up");
    let advice = |out: &str| out.lines().find(|l| l.starts_with("services: ")).map(str::to_string);
    let status = lab.on(&["status"]).ok("lab status");
    let check = lab.on(&["check"]).ok("lab check: a node without IPVS does not fail it");
    for (what, out) in [("up", &up.stdout), ("status", &status.stdout), ("check", &check.stdout)] {
        match (ipvs, advice(out)) {
            (true, None) => {}
            (true, Some(a)) => panic!("lab {what} advises on a kernel with IPVS: {a}"),
            (false, None) => panic!("lab {what} does not say the nodes lack IPVS:\n{out}"),
            (false, Some(a)) => {
                for needle in
                    ["nodes manager, worker1 have no IPVS", "no virtual IP", "endpoint_mode: dnsrr", "mode: host"]
                {
                    assert!(a.contains(needle), "lab {what}: {needle} not in: {a}");
                }
            }
        }
    }
    for node in ["manager", "worker1"] {
        let row = check
            .stdout
            .lines()
            .find(|l| l.starts_with(node) && l.contains("service VIPs (IPVS)"))
            .unwrap_or_else(|| panic!("no service VIP row for {node}:\n{}", check.stdout));
        let want = if ipvs { " yes " } else { " no " };
        assert!(row.contains(want) && row.contains("dnsrr") != ipvs, "{row}");
    }
    let v = json(&lab.on(&["check", "--output", "json"]).ok("lab check --output json"));
    assert_eq!(v["ok"], true, "{v:#}");
    for n in v["service_vips"]["nodes"].as_array().expect("service_vips.nodes") {
        assert_eq!(n["ipvs"], ipvs, "{n}");
    }
    let s = json(&lab.on(&["status", "--output", "json"]).ok("lab status --output json"));
    assert_eq!(s["service_vips"]["advice"].is_null(), ipvs, "{s:#}");
}
