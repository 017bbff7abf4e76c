//! End-to-end: day-two operations on the swarm and its registry, on the docker driver, as a
//! user would do them: rotating join tokens, scaling so that the registry moves, looking for
//! secrets where anyone with the swarm's API could read them, and reaching the forwarders
//! from outside their node. Each test makes its own uniquely named cluster and removes it.

use std::time::{Duration, Instant};

use lab_tests::{docker, ensure_images, node_exec, wait_for, Lab, REGISTRY_IMAGE};
use serde_json::Value;

fn lab(tag: &str) -> Lab {
    Lab::new(tag, env!("CARGO_BIN_EXE_lab-e2e"))
}

fn json(run: &lab_tests::Run) -> Value {
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", run.all()))
}

/// Pushes a small image made on `node` to its `localhost:5000`, as the seed's user does.
fn push_from(lab: &Lab, node: &str, repo: &str) {
    let c = lab.container(node);
    node_exec(&c, &["docker", "rm", "-f", "e2e-src"]);
    node_exec(
        &c,
        &["docker", "run", "--name", "e2e-src", "--entrypoint", "sh", REGISTRY_IMAGE, "-c", "echo kept > /m"],
    )
    .ok("make the image's content");
    let tag = format!("localhost:5000/{repo}:1");
    node_exec(&c, &["docker", "commit", "e2e-src", &tag]).ok("commit");
    node_exec(&c, &["docker", "push", &tag]).ok(&format!("docker push {tag} on {node}"));
    node_exec(&c, &["docker", "rm", "-f", "e2e-src"]);
}

/// Whether `repo:1` can be pulled through `localhost:5000` on `node` (removing any local copy
/// first, so the registry must serve it).
fn pull_on(lab: &Lab, node: &str, repo: &str) -> lab_tests::Run {
    let c = lab.container(node);
    let tag = format!("localhost:5000/{repo}:1");
    node_exec(&c, &["docker", "image", "rm", "-f", &tag]);
    node_exec(&c, &["docker", "pull", &tag])
}

fn swarm_nodes(lab: &Lab) -> Vec<String> {
    let r = node_exec(&lab.container("manager"), &["docker", "node", "ls", "--format", "{{.Hostname}} {{.Status}}"]);
    let mut v: Vec<String> = r.stdout.lines().map(str::to_string).collect();
    v.sort();
    v
}

/// Item 2: `docker swarm join-token --rotate` is a routine security step; lab must read the
/// current token when a node joins, not reuse one it stored.
#[test]
fn a_rotated_join_token_does_not_stop_scaling_up() {
    ensure_images();
    let lab = lab("rotate");
    lab.up(&["--workers", "1"]).ok("lab up");
    let manager = lab.container("manager");
    node_exec(&manager, &["docker", "swarm", "join-token", "--rotate", "-q", "worker"]).ok("rotate the worker token");
    node_exec(&manager, &["docker", "swarm", "join-token", "--rotate", "-q", "manager"]).ok("rotate the manager token");
    let up = lab.on(&["up", "--workers", "2"]);
    assert_eq!(up.code, 0, "up after a token rotation failed:\n{}", up.all());
    assert_eq!(swarm_nodes(&lab), vec!["manager Ready", "worker1 Ready", "worker2 Ready"]);
    // No token is kept anywhere in lab's state; the walk must at least find the cluster's
    // state file, or it looked in the wrong place.
    let dir = lab.state_home().join("lab");
    let files = walk(&dir);
    let state = dir.join("clusters").join(&lab.cluster).join("state.json");
    assert!(files.contains(&state), "{} is not among the files of {}: {files:?}", state.display(), dir.display());
    for entry in files {
        let text = std::fs::read(&entry).unwrap_or_else(|e| panic!("read {}: {e}", entry.display()));
        assert!(!String::from_utf8_lossy(&text).contains("SWMTKN-"), "{} holds a join token", entry.display());
    }
    assert!(lab.on(&["plan"]).ok("plan").stdout.contains("nothing to do"));
}

/// Every file under `dir`; a directory that cannot be read fails the test.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read the directory {}: {e}", dir.display()));
    for e in entries {
        let p = e.unwrap_or_else(|e| panic!("read an entry of {}: {e}", dir.display())).path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else if p.is_file() {
            out.push(p);
        }
    }
    out
}

/// Item 7: the registry's HTTP secret is a swarm secret: no service spec, no state file and no
/// output carries it, and it stays the same across redeploys.
#[test]
fn the_registry_secret_is_a_swarm_secret_in_no_spec() {
    ensure_images();
    let lab = lab("regsec");
    let up = lab.up(&["--workers", "1"]).ok("lab up");
    let manager = lab.container("manager");
    let spec = node_exec(&manager, &["docker", "service", "inspect", "registry_registry"]).ok("service inspect");
    // The value, as the registry's own task sees it.
    let worker1 = lab.container("worker1");
    let task = node_exec(
        &worker1,
        &["docker", "ps", "-q", "--filter", "label=com.docker.swarm.service.name=registry_registry"],
    )
    .ok("find the registry's task")
    .stdout;
    let value = node_exec(&worker1, &["docker", "exec", task.trim(), "cat", "/run/secrets/lab-registry-http-secret"])
        .ok("read the secret inside the registry's task")
        .stdout;
    assert!(value.len() >= 32, "the registry's secret is too short: {} bytes", value.len());
    assert!(!spec.stdout.contains(value.trim()), "the secret's value is in the service spec:\n{}", spec.stdout);
    let env = node_exec(
        &manager,
        &[
            "docker",
            "service",
            "inspect",
            "--format",
            "{{json .Spec.TaskTemplate.ContainerSpec.Env}}",
            "registry_registry",
        ],
    );
    assert!(
        !env.stdout.contains("REGISTRY_HTTP_SECRET"),
        "the secret is an environment variable of the spec: {}",
        env.stdout
    );
    // And the registry process has it in its environment (what distribution reads).
    let environ = node_exec(&worker1, &["docker", "exec", task.trim(), "sh", "-c", "tr '\\0' '\\n' < /proc/1/environ"]);
    assert!(
        environ.stdout.contains(&format!("REGISTRY_HTTP_SECRET={}", value.trim())),
        "the registry process lacks the secret"
    );
    let secrets = node_exec(&manager, &["docker", "secret", "ls", "--format", "{{.ID}} {{.Name}}"]).ok("secret ls");
    let secret_line = secrets
        .stdout
        .lines()
        .find(|l| l.ends_with(" lab-registry-http-secret"))
        .unwrap_or_else(|| panic!("no swarm secret lab-registry-http-secret:\n{}", secrets.stdout))
        .to_string();
    assert!(spec.stdout.contains("lab-registry-http-secret"), "the service does not use the secret:\n{}", spec.stdout);
    // The registry got it: distribution logs a warning when it has no secret.
    let logs = node_exec(&manager, &["docker", "service", "logs", "registry_registry"]);
    assert!(!logs.all().contains("No HTTP secret provided"), "{}", logs.all());
    let st = std::fs::read_to_string(lab.state_home().join("lab/clusters").join(&lab.cluster).join("state.json"))
        .expect("state file");
    assert!(!st.contains("secret\""), "the state file still keeps a secret:\n{st}");
    assert!(!st.contains(value.trim()), "the state file has the secret's value");
    // A redeploy (the service removed behind lab's back, and made again) keeps the same secret.
    node_exec(&manager, &["docker", "service", "rm", "registry_registry"]).ok("remove the service");
    lab.on(&["up"]).ok("redeploy");
    let again = node_exec(&manager, &["docker", "secret", "ls", "--format", "{{.ID}} {{.Name}}"]).ok("secret ls");
    assert!(again.stdout.contains(&secret_line), "the secret changed:\n{}\nvs\n{secret_line}", again.stdout);
    assert!(!up.all().contains(value.trim()), "lab printed the secret's value");
}

/// Item 8: a forwarder serves `localhost:5000` on its own node, and nothing else: from outside
/// the node, its address's port 5000 is closed.
#[test]
fn forwarders_listen_on_loopback_only() {
    ensure_images();
    let lab = lab("fwd");
    lab.up(&["--workers", "1"]).ok("lab up");
    let status = json(&lab.on(&["status", "--output", "json"]).ok("status"));
    let addr = status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "manager")
        .and_then(|n| n["address"].as_str())
        .expect("manager address")
        .to_string();
    // The manager has a forwarder (the registry runs on worker1).
    let inside = node_exec(&lab.container("manager"), &["curl", "-s", "-m", "5", "http://127.0.0.1:5000/v2/"]);
    assert_eq!(inside.stdout.trim(), "{}", "{}", inside.all());
    // From worker1, another machine on the manager's network.
    let url = format!("http://{addr}:5000/v2/_catalog");
    let outside = node_exec(&lab.container("worker1"), &["curl", "-s", "-m", "5", &url]);
    assert_ne!(outside.code, 0, "the manager's forwarder answered {url} from another node: {}", outside.stdout);
    // And from the machine lab runs on.
    let from_host = std::process::Command::new("curl").args(["-s", "-m", "5", &url]).output().expect("curl");
    assert!(!from_host.status.success(), "the forwarder answered {url} from the host");
}

/// Item 4: scaling so that the registry moves to another node keeps every pushed image, and
/// the manager's own forwarder does not block the registry's port there. After each move,
/// both images (one pushed on the manager with `docker push`, one with `lab push`) are pulled
/// by every node's engine, and the second runs as a service (issue 9, "Data that survives").
#[test]
fn scaling_workers_to_zero_and_back_keeps_pushed_images() {
    ensure_images();
    let lab = lab("move");
    lab.up(&["--workers", "1"]).ok("lab up");
    push_from(&lab, "manager", "e2e/kept");
    let pushed = lab_tests::push_image(&lab, &format!("e2e-move-{}:1", std::process::id()), "moved");
    let down = lab.on(&["up", "--workers", "0"]);
    assert_eq!(down.code, 0, "scaling to 0 workers failed:\n{}", down.all());
    assert!(down.stderr.contains("move registry data"), "up did not say it moved the data:\n{}", down.stderr);
    assert!(down.stderr.contains("MB of registry data from worker1 to manager"), "how much moved?\n{}", down.stderr);
    let pulled = pull_on(&lab, "manager", "e2e/kept");
    assert_eq!(pulled.code, 0, "the pushed image was lost when the registry moved:\n{}", pulled.all());
    lab_tests::assert_served(&lab, &["manager"], &["manager"], &[&pushed]);
    assert!(lab.on(&["plan"]).ok("plan").stdout.contains("nothing to do"));
    lab.on(&["check"]).ok("check with 0 workers");
    let back = lab.on(&["up", "--workers", "1"]);
    assert_eq!(back.code, 0, "scaling back to 1 worker failed:\n{}", back.all());
    for node in ["manager", "worker1"] {
        let pulled = pull_on(&lab, node, "e2e/kept");
        assert_eq!(pulled.code, 0, "{node} cannot pull the image after the move back:\n{}", pulled.all());
    }
    lab_tests::assert_served(&lab, &["manager", "worker1"], &["worker1"], &[&pushed]);
    assert!(lab.on(&["plan"]).ok("plan").stdout.contains("nothing to do"));
}

/// Item 4: a registry whose task does not run is never "nothing to do"; `plan` shows a repair
/// and the error quotes the task's own words.
#[test]
fn a_registry_that_does_not_answer_is_never_converged() {
    ensure_images();
    let lab = lab("stuck");
    lab.up(&["--workers", "1"]).ok("lab up");
    let manager = lab.container("manager");
    // Scale the service to zero behind lab's back: nothing answers at :5000 any more.
    node_exec(&manager, &["docker", "service", "scale", "--detach", "registry_registry=0"]).ok("scale to 0");
    wait_for("the registry task to stop", Duration::from_secs(60), || {
        let r = node_exec(&lab.container("worker1"), &["curl", "-s", "-m", "2", "http://127.0.0.1:5000/v2/"]);
        if r.stdout.trim() == "{}" {
            Err(r.stdout)
        } else {
            Ok(())
        }
    });
    let plan = lab.on(&["plan"]).ok("plan");
    assert!(!plan.stdout.contains("nothing to do"), "plan says nothing to do while the registry is down");
    assert!(plan.stdout.contains("deploy stack registry"), "{}", plan.stdout);
    lab.on(&["up"]).ok("repairing up");
    lab.on(&["check"]).ok("check after repair");

    // A task that cannot start (an image no node has, set behind lab's back): `check` quotes
    // the task's own error, as `docker service ps` shows it, and `up` repairs it.
    node_exec(
        &manager,
        &["docker", "service", "update", "--detach", "--image", "lab-offline/absent:1", "registry_registry"],
    )
    .ok("break the registry's image");
    let check = wait_for("lab check to quote the task's error", Duration::from_secs(60), || {
        let c = lab.on(&["check"]);
        if c.code == 1 && c.stdout.contains("the registry task is not running") && c.stdout.contains("absent:1") {
            Ok(c)
        } else {
            Err(c.all())
        }
    });
    assert!(!check.stdout.contains("is a node labelled"), "the hint blames the label: {}", check.stdout);
    assert!(lab.on(&["plan"]).ok("plan").stdout.contains("deploy stack registry"));
    lab.on(&["up"]).ok("repairing up");
    // Repaired: the service runs its own image again, every node answers, nothing is left to do.
    let image = node_exec(
        &manager,
        &[
            "docker",
            "service",
            "inspect",
            "--format",
            "{{.Spec.TaskTemplate.ContainerSpec.Image}}",
            "registry_registry",
        ],
    )
    .ok("inspect the registry's image");
    assert!(!image.stdout.contains("absent:1"), "up left the broken image: {}", image.stdout);
    let check = lab.on(&["check"]);
    assert_eq!(check.code, 0, "check after repairing the image:\n{}", check.all());
    assert!(lab.on(&["plan"]).ok("plan").stdout.contains("nothing to do"));
}

/// A node stopped behind lab's back, the hard way (`docker kill`, as a crash or a power cut
/// would: dockerd leaves its pid file behind) is started by the next `up`, its dockerd comes
/// back, and the registry's images are still there.
#[test]
fn a_stopped_node_comes_back_with_its_images() {
    ensure_images();
    let lab = lab("stopped");
    lab.up(&["--workers", "1"]).ok("lab up");
    push_from(&lab, "manager", "e2e/stays");
    // worker1 holds the registry; stop it as a crash would. A killed dockerd leaves its pid
    // file, and when the pid in it belongs to a live process after the restart (here, as it
    // often does, the container's init), dockerd refuses to start: "pid file found".
    docker(&["kill", &lab.container("worker1")]).ok("docker kill worker1");
    let pid = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(pid.path(), "1").unwrap();
    let dest = format!("{}:/var/run/docker.pid", lab.container("worker1"));
    docker(&["cp", &pid.path().display().to_string(), &dest]).ok("leave a stale pid file");
    let plan = lab.on(&["plan"]).ok("plan");
    assert!(plan.stdout.contains("start node worker1"), "{}", plan.stdout);
    let up = lab.on(&["up"]);
    assert_eq!(up.code, 0, "up did not bring the stopped node back:\n{}", up.all());
    let pulled = pull_on(&lab, "manager", "e2e/stays");
    assert_eq!(pulled.code, 0, "the image pushed before the stop is gone:\n{}", pulled.all());
    assert!(lab.on(&["plan"]).ok("plan").stdout.contains("nothing to do"));
}

/// Issue 18, item 15: the registry's node stopped (`docker stop`, as a user or a reboot
/// would). `lab check` answers within a few seconds and names the cause once per node;
/// `lab push` says the registry's node is stopped (not that lab up must deploy the registry);
/// `lab up` starts the node about as fast as it made the cluster, and every second it spends
/// shows in its steps and phases.
#[test]
fn a_stopped_registry_node_is_named_and_started_quickly() {
    ensure_images();
    let lab = lab("regstop");
    let t = Instant::now();
    lab.up(&["--workers", "1"]).ok("lab up");
    let made_in = t.elapsed();
    docker(&["stop", &lab.container("worker1")]).ok("docker stop worker1");

    let t = Instant::now();
    let check = lab.on(&["check"]);
    let took = t.elapsed();
    assert_eq!(check.code, 1, "lab check with the registry's node stopped:\n{}", check.all());
    assert!(took < Duration::from_secs(15), "lab check took {}s:\n{}", took.as_secs(), check.all());
    assert!(check.stdout.lines().any(|l| l == "worker1: stopped"), "{}", check.all());
    assert!(
        check.stdout.lines().any(|l| l.starts_with("manager: ") && l.contains("worker1") && l.contains("stopped")),
        "the manager's line does not say the registry's node is stopped:\n{}",
        check.all()
    );
    assert!(!check.all().contains("worker1: worker1"), "{}", check.all());
    let json = lab.on(&["check", "--output", "json"]);
    let v: Value = serde_json::from_str(&json.stdout).unwrap_or_else(|e| panic!("{e}: {}", json.all()));
    assert_eq!(v["ok"], false);

    let image = lab_tests::HostImage::build(&format!("e2e-regstop-{}:1", std::process::id()));
    let push = lab.on(&["push", &image.0]);
    assert_eq!(push.code, 1, "{}", push.all());
    assert!(push.stderr.contains("worker1") && push.stderr.contains("stopped"), "{}", push.stderr);
    assert_eq!(push.stderr.matches("worker1").count(), 1, "a node named twice: {}", push.stderr);
    assert!(!push.stderr.contains("pending") && !push.stderr.contains("deploys it"), "{}", push.stderr);

    let dir = tempfile::tempdir().expect("a directory for the timings");
    let t = Instant::now();
    let up = lab.on(&["up", "--timings", &dir.path().display().to_string()]);
    let restarted_in = t.elapsed();
    assert_eq!(up.code, 0, "{}", up.all());
    let (record, _) = lab_tests::timings_record(dir.path());
    lab_tests::timings_span(&record, "start node worker1");
    let hidden = lab_tests::timings_uncovered(&record);
    assert!(hidden < 5.0, "{hidden:.1}s of up are in no step or phase: {record:#}");
    assert!(
        restarted_in <= made_in + Duration::from_secs(10),
        "up took {}s to start the stopped node, {}s to make the cluster",
        restarted_in.as_secs(),
        made_in.as_secs()
    );
    lab.on(&["check"]).ok("lab check after up");
    lab.on(&["push", &image.0]).ok("lab push after up");
}

/// Issue 18, item 18: scaling down destroys the nodes that go side by side, as scaling up
/// makes them: from 1+3 to 1+0, worker2's and worker3's destroys each start before the other
/// ends (read from `lab up --timings`, not from a clock here); worker1, which holds the
/// registry's data, goes once the data has moved.
#[test]
fn scale_down_destroys_run_side_by_side() {
    ensure_images();
    let lab = lab("scaledown");
    lab.up(&["--workers", "3"]).ok("lab up");
    let dir = tempfile::tempdir().expect("a directory for the timings");
    lab.on(&["up", "--workers", "0", "--timings", &dir.path().display().to_string()]).ok("lab up --workers 0");
    let (record, _) = lab_tests::timings_record(dir.path());
    let destroy = |n: &str| lab_tests::timings_span(&record, &format!("destroy node {n} (not in the topology)"));
    let (w2, w3) = (destroy("worker2"), destroy("worker3"));
    assert!(w2.0 < w3.1 && w3.0 < w2.1, "the destroys ran one after another: worker2 {w2:?}, worker3 {w3:?}");
    let moved = lab_tests::timings_span(&record, "move registry data from worker1 to manager");
    assert!(destroy("worker1").0 >= moved.1, "worker1 went before its data moved: {record:#}");
    let left =
        docker(&["ps", "-a", "--filter", &format!("label=lab.cluster={}", lab.cluster), "--format", "{{.Names}}"]);
    assert_eq!(left.stdout.trim(), lab.container("manager"), "{}", left.all());
}
