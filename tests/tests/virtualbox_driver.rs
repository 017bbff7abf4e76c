//! End-to-end: the virtualbox driver, for real up to the hypervisor. docker-machine is the
//! stand-in `tests/docker-machine` (see `lab_tests::machine`): every "VM" is a
//! Docker-in-Docker container serving its engine over TLS on 2376, with docker-machine's
//! certificates. Each test has its own cluster and docker-machine store and removes both.

use std::time::Duration;

use lab_tests::machine::VirtualBoxLab;
use lab_tests::{docker, ensure_images, node_exec, wait_for, Run};
use serde_json::Value;

fn vbox(tag: &str) -> VirtualBoxLab {
    VirtualBoxLab::new(tag, env!("CARGO_BIN_EXE_lab-e2e"))
}

fn json(run: &Run) -> Value {
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", run.stdout))
}

/// The seed's create line for `machine`, with `memory` MB.
fn seed_create(memory: u32, machine: &str) -> String {
    format!(
        "docker-machine create -d virtualbox --engine-storage-driver overlay2 --virtualbox-memory {memory} \
         --virtualbox-nat-nictype Am79C973 --virtualbox-cpu-count 1 {machine}"
    )
}

/// The recorded invocations of one subcommand (`create`, `rm`, ...), in order.
fn calls(v: &VirtualBoxLab, sub: &str, since: usize) -> Vec<String> {
    let prefix = format!("docker-machine {sub} ");
    v.machines.invocations().into_iter().skip(since).filter(|l| l.starts_with(&prefix)).collect()
}

fn container_id(name: &str) -> String {
    docker(&["inspect", "-f", "{{.Id}}", name]).ok("inspect").stdout.trim().to_string()
}

fn answers_everywhere(v: &VirtualBoxLab, nodes: &[&str]) {
    for node in nodes {
        for url in ["http://127.0.0.1:5000/v2/", "http://localhost:5000/v2/"] {
            wait_for(&format!("{{}} from {url} on {node}"), Duration::from_secs(30), || {
                let r = node_exec(&v.machine(node), &["curl", "-s", "-m", "5", url]);
                if r.stdout.trim() == "{}" {
                    Ok(())
                } else {
                    Err(r.all())
                }
            });
        }
    }
}

/// The seed's docker-machine cluster in one command: create with the seed's flags, TLS
/// engines, swarm on the host-only addresses, registry answering everywhere, an image pushed
/// on the manager running on a worker, a second `up` that changes nothing, `env`, `ssh`,
/// and a `down` that removes the cluster's machines and only those.
#[test]
fn up_makes_the_seeds_machines_and_a_working_swarm() {
    ensure_images();
    let v = vbox("vbox");
    let cluster = v.lab.cluster.clone();
    let nodes = ["manager", "worker1", "worker2"];

    // Someone else's machines in the same store: another cluster's, and a broken one.
    let other = format!("{cluster}-x-worker1");
    std::fs::create_dir_all(v.machines.machine_dir(&other)).unwrap();
    std::fs::create_dir_all(v.machines.machine_dir("default")).unwrap();
    std::fs::write(v.machines.machine_dir("default").join("config.json"), "{}").unwrap();

    let up = v.up(&[]).ok("lab up --driver virtualbox");
    assert!(up.stderr.contains("with driver virtualbox"), "{}", up.stderr);

    // The seed's flags, exactly; the version checked once; one create per machine.
    let log = v.machines.invocations();
    assert_eq!(log.iter().filter(|l| l.as_str() == "docker-machine --version").count(), 1, "{log:#?}");
    let mut creates = calls(&v, "create", 0);
    creates.sort();
    let mut want = vec![
        seed_create(1024, &v.machine("manager")),
        seed_create(6144, &v.machine("worker1")),
        seed_create(6144, &v.machine("worker2")),
    ];
    want.sort();
    assert_eq!(creates, want);

    // Every node ready; the manager drained and leading; each advertises its host-only
    // address (`docker-machine ip`), which is also the address lab reports.
    let status = json(&v.on(&["status", "--output", "json"]).ok("lab status"));
    let listed = status["nodes"].as_array().expect("nodes");
    assert_eq!(listed.len(), 3, "{status:#}");
    let manager = v.machine("manager");
    for n in listed {
        let name = n["name"].as_str().unwrap();
        assert_eq!((n["engine"].as_str(), n["swarm"].as_str()), (Some("ready"), Some("ready")), "{n}");
        let ip = v.machines.run(&["ip", &v.machine(name)]).ok("docker-machine ip").stdout.trim().to_string();
        assert_eq!(n["address"], ip.as_str(), "{n}");
        assert_ne!(ip, "10.0.2.15");
        let addr =
            node_exec(&manager, &["docker", "node", "inspect", "--format", "{{.Status.Addr}}", &v.machine(name)])
                .ok("node inspect");
        assert_eq!(addr.stdout.trim(), ip, "{name} advertises another address");
    }
    let mgr = listed.iter().find(|n| n["name"] == "manager").unwrap();
    assert_eq!((mgr["availability"].as_str(), mgr["manager_status"].as_str()), (Some("drain"), Some("leader")));
    // The engines are the TLS ones docker-machine set up.
    let info = node_exec(&manager, &["docker", "info", "--format", "{{.Driver}}"]).ok("docker info");
    assert_eq!(info.stdout.trim(), "overlay2");

    answers_everywhere(&v, &nodes);

    let worker2 = v.machine("worker2");
    lab_tests::image_made_on_manager_runs_on(&manager, &worker2, &worker2);
    // Built on this machine, `lab push`ed, run by Swarm on both workers.
    let pushed =
        lab_tests::Pushed { name: format!("e2e-vbox-push-{}:1", std::process::id()), content: "pushed-to-vbox" };
    let image = lab_tests::HostImage::with_content(&pushed.name, pushed.content);
    let r = v.on(&["push", &image.0]).ok("lab push");
    assert_eq!(r.stdout.trim(), pushed.reference(), "{}", r.all());
    drop(image);
    let exec = |node: &str, argv: &[&str]| node_exec(node, argv);
    lab_tests::pushed_runs_on_workers(&exec, &manager, &[&v.machine("worker1"), &worker2], &pushed);

    // A second `up` plans nothing, changes nothing and creates, starts or removes nothing.
    let ids: Vec<String> = nodes.iter().map(|n| container_id(&v.machine(n))).collect();
    let seen = v.machines.invocations().len();
    assert!(v.on(&["plan"]).ok("lab plan").stdout.contains("nothing to do"));
    let again = v.on(&["up"]).ok("second lab up");
    assert!(again.stderr.contains("nothing to change"), "{}", again.stderr);
    let after: Vec<String> = nodes.iter().map(|n| container_id(&v.machine(n))).collect();
    assert_eq!(after, ids, "the second up changed the machines");
    for sub in ["create", "start", "rm", "stop"] {
        assert_eq!(calls(&v, sub, seen), Vec::<String>::new(), "second up ran docker-machine {sub}");
    }

    // `lab env` prints what `docker-machine env <manager>` would, and a docker client with it
    // reaches the manager over TLS.
    let env = v.on(&["env", "--shell", "bash"]).ok("lab env");
    let exports = lab_tests::exports(&env.stdout, '\'');
    let theirs =
        lab_tests::exports(&v.machines.run(&["env", "--shell", "bash", &manager]).ok("docker-machine env").stdout, '"');
    // docker-machine's own exports, then lab's cluster for the lab commands in that shell.
    let (ours, lab_cluster) = exports.split_at(exports.len() - 1);
    assert_eq!(ours, theirs.as_slice());
    assert_eq!(lab_cluster, [("LAB_CLUSTER".to_string(), cluster.clone())]);
    let keys: Vec<&str> = ours.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["DOCKER_TLS_VERIFY", "DOCKER_HOST", "DOCKER_CERT_PATH", "DOCKER_MACHINE_NAME"]);
    let mut client = std::process::Command::new("docker");
    client.args(["info", "--format", "{{.Swarm.ControlAvailable}} {{.Name}}"]).envs(exports.iter().cloned());
    let out = client.output().expect("docker");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("true {manager}"), "{out:?}");

    // `lab ssh` runs a command there (over ssh with the recorded host key: see
    // `host_keys_are_recorded_at_create_and_checked_on_every_connection`).
    let ssh = v.machines.lab_exactly(
        &v.lab,
        &["ssh", "--cluster", &cluster, "worker1", "--", "docker", "info", "--format", "{{.Swarm.LocalNodeState}}"],
        &[],
    );
    assert_eq!((ssh.code, ssh.stdout.trim()), (0, "active"), "{}", ssh.all());

    // `down` removes the cluster's machines (`rm -y`), and only those.
    v.on(&["down"]).ok("lab down");
    let mut removed = calls(&v, "rm", 0);
    removed.sort();
    let mut want: Vec<String> = nodes.iter().map(|n| format!("docker-machine rm -y {}", v.machine(n))).collect();
    want.sort();
    assert_eq!(removed, want);
    let left = v.machines.listed();
    assert!(nodes.iter().all(|n| !left.contains(&v.machine(n))), "{left:?}");
    assert!(left.contains(&"default".to_string()), "down removed a machine that is not the cluster's: {left:?}");
    assert!(v.machines.machine_dir(&other).is_dir(), "down removed another cluster's machine");
    let containers = docker(&["ps", "-aq", "--filter", &format!("label=lab.cluster={cluster}")]).stdout;
    assert_eq!(containers.trim(), "", "down left VMs behind");
}

/// Without docker-machine, `up` stops before creating anything, exit 1, saying what to
/// install; a configured path that does not exist and bad settings are bad input (exit 2).
#[test]
fn missing_docker_machine_and_bad_settings_are_refused_before_anything_is_made() {
    let v = vbox("vbnodm");
    let mut c = v.lab.command(&["up", "--driver", "virtualbox", "--cluster", &v.lab.cluster]);
    c.env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin").env("MACHINE_STORAGE_PATH", v.machines.store());
    let o = c.output().expect("run lab");
    let (code, stderr) = (o.status.code(), String::from_utf8_lossy(&o.stderr).into_owned());
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("docker-machine is not on PATH"), "{stderr}");
    assert!(stderr.contains("install docker-machine"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    let r = v.up(&["--driver-opt", "docker_machine=/nonexistent/docker-machine"]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr.contains("[drivers.virtualbox] docker_machine") && r.stderr.contains("/nonexistent"),
        "{}",
        r.stderr
    );

    for (opt, field) in [("worker.memory=0", "worker.memory"), ("worker.ram=1", "unknown field `ram`")] {
        let r = v.up(&["--driver-opt", opt]);
        assert_eq!(r.code, 2, "{opt}: {}", r.all());
        assert!(r.stderr.contains(field), "{opt}: {}", r.stderr);
    }
    assert_eq!(calls(&v, "create", 0), Vec::<String>::new());
}

/// A worker whose create fails: the error names it with docker-machine's own words, the
/// other machines are kept, and the next `up` removes the half-made machine, makes it again
/// and finishes. Role settings from lab.toml and --driver-opt reach `create`.
#[test]
fn a_failed_worker_create_is_named_and_the_next_up_finishes_the_job() {
    ensure_images();
    let v = vbox("vbfail");
    std::fs::write(v.lab.cwd().join("lab.toml"), "[drivers.virtualbox.manager]\ncpus = 2\n").unwrap();
    let opts = ["--driver-opt", "worker.memory=2048", "--driver-opt", "worker.extra_flags=[\"--virtualbox-no-share\"]"];
    let worker2 = v.machine("worker2");
    let failed = v.up_with(&opts, &[("FAKE_MACHINE_FAIL_CREATE", &worker2)]);
    assert_eq!(failed.code, 1, "{}", failed.all());
    assert!(failed.stderr.contains(&format!("worker2: docker-machine create {worker2}")), "{}", failed.stderr);
    assert!(failed.stderr.contains("The host-only adapter we just created is not visible"), "{}", failed.stderr);
    assert!(!failed.stderr.contains("panicked"), "{}", failed.stderr);

    let creates = calls(&v, "create", 0);
    assert!(
        creates.contains(&format!(
            "docker-machine create -d virtualbox --engine-storage-driver overlay2 --virtualbox-memory 1024 \
             --virtualbox-nat-nictype Am79C973 --virtualbox-cpu-count 2 {}",
            v.machine("manager")
        )),
        "{creates:#?}"
    );
    assert!(
        creates.contains(&format!(
            "docker-machine create -d virtualbox --engine-storage-driver overlay2 --virtualbox-memory 2048 \
             --virtualbox-nat-nictype Am79C973 --virtualbox-cpu-count 1 --virtualbox-no-share {worker2}"
        )),
        "{creates:#?}"
    );
    // The others are kept; the failed one is half-made (docker-machine lists it as Stopped).
    let kept = ["manager", "worker1"].map(|n| container_id(&v.machine(n)));
    let listed = v.machines.run(&["ls", "--format", "{{.Name}} {{.State}}"]).ok("ls").stdout;
    assert!(listed.contains(&format!("{worker2} Stopped")), "{listed}");

    let status = json(&v.on(&["status", "--output", "json"]).ok("status"));
    let w2 = status["nodes"].as_array().unwrap().iter().find(|n| n["name"] == "worker2").cloned().unwrap();
    assert_eq!(w2["engine"], "broken", "{w2}");
    let plan = v.on(&["plan"]).ok("plan");
    assert!(plan.stdout.contains("worker2"), "{}", plan.stdout);
    assert!(!plan.stdout.contains("start node worker2"), "a half-made machine is planned to start:\n{}", plan.stdout);

    let seen = v.machines.invocations().len();
    v.up(&opts).ok("the next up");
    assert_eq!(calls(&v, "rm", seen), vec![format!("docker-machine rm -y {worker2}")]);
    let again: Vec<String> = calls(&v, "create", seen);
    assert_eq!(again.len(), 1, "{again:#?}");
    assert!(again[0].ends_with(&worker2), "{again:#?}");
    assert_eq!(["manager", "worker1"].map(|n| container_id(&v.machine(n))), kept, "kept machines were remade");
    answers_everywhere(&v, &["manager", "worker1", "worker2"]);
}

/// A machine docker-machine reports as Stopped is started, not recreated.
#[test]
fn a_stopped_machine_is_started_not_recreated() {
    ensure_images();
    let v = vbox("vbstop");
    v.up(&["--workers", "1"]).ok("lab up");
    let worker1 = v.machine("worker1");
    let id = container_id(&worker1);
    v.machines.run(&["stop", &worker1]).ok("docker-machine stop");
    assert_eq!(v.machines.run(&["status", &worker1]).stdout.trim(), "Stopped");

    let status = json(&v.on(&["status", "--output", "json"]).ok("status"));
    let w = status["nodes"].as_array().unwrap().iter().find(|n| n["name"] == "worker1").cloned().unwrap();
    assert_eq!(w["engine"], "stopped", "{w}");
    let plan = v.on(&["plan"]).ok("plan").stdout;
    assert!(plan.contains("start node worker1"), "{plan}");
    assert!(!plan.contains("create node"), "{plan}");

    let seen = v.machines.invocations().len();
    v.on(&["up"]).ok("lab up after stop");
    assert_eq!(calls(&v, "start", seen), vec![format!("docker-machine start {worker1}")]);
    assert_eq!(calls(&v, "create", seen), Vec::<String>::new());
    assert_eq!(calls(&v, "rm", seen), Vec::<String>::new());
    assert_eq!(container_id(&worker1), id, "the stopped machine was recreated");
    assert_eq!(v.machines.run(&["status", &worker1]).stdout.trim(), "Running");
    answers_everywhere(&v, &["manager", "worker1"]);
}

/// Issue 19, item 1 on the virtualbox driver: three managers (no workers, so none drained)
/// form one Raft cluster; a manager's machine stopped degrades the quorum in `status` and
/// `check`, and a plain `up` starts it (not makes it again) and the swarm counts three again.
#[test]
fn three_managers_form_and_a_stopped_one_is_started_back_into_the_quorum() {
    ensure_images();
    let v = vbox("vbha");
    v.up(&["--managers", "3", "--workers", "0"]).ok("lab up --managers 3");
    let status = v.on(&["status"]).ok("status");
    assert!(status.stdout.contains("swarm: 3 managers, 3 reachable: tolerates 1 failure"), "{}", status.stdout);
    let st = json(&v.on(&["status", "--output", "json"]).ok("status"));
    let nodes = st["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 3, "{st:#}");
    assert!(nodes.iter().all(|n| n["role"] == "manager" && n["availability"] == "active"), "{st:#}");
    let manager2 = v.machine("manager2");
    v.machines.run(&["stop", &manager2]).ok("docker-machine stop");
    let degraded = wait_for("status saying the quorum is degraded", Duration::from_secs(60), || {
        let s = v.on(&["status"]);
        if s.stdout.contains("degraded: 2 of 3 reachable, tolerates 0 more (unreachable: manager2)") {
            Ok(s)
        } else {
            Err(s.all())
        }
    });
    assert!(degraded.stdout.contains("manager2: stopped"), "{}", degraded.stdout);
    let check = v.on(&["check"]);
    assert_eq!(check.code, 1, "{}", check.all());
    let seen = v.machines.invocations().len();
    v.on(&["up"]).ok("lab up after a manager stopped");
    assert_eq!(calls(&v, "create", seen), Vec::<String>::new(), "no machine made again");
    let back = wait_for("three managers reachable again", Duration::from_secs(60), || {
        let s = v.on(&["status"]);
        if s.stdout.contains("swarm: 3 managers, 3 reachable") {
            Ok(s)
        } else {
            Err(s.all())
        }
    });
    assert!(!back.stdout.contains("Down"), "{}", back.stdout);
    answers_everywhere(&v, &["manager1", "manager2", "manager3"]);
}

/// Issue 18, item 21: lab records each machine's host key when it makes the machine, and
/// checks it on every later connection: `lab ssh` and the commands lab runs on a machine go
/// over SSH against that record, strictly, and never through `docker-machine ssh`, which
/// checks no host key. A machine whose key changed is refused, with the cause.
#[test]
fn host_keys_are_recorded_at_create_and_checked_on_every_connection() {
    ensure_images();
    let v = vbox("vbkeys");
    v.up(&["--workers", "0"]).ok("lab up");
    let manager = v.machine("manager");
    let known = v.lab.state_home().join("lab/clusters").join(&v.lab.cluster).join("virtualbox/known_hosts");
    let recorded = std::fs::read_to_string(&known).unwrap_or_else(|e| panic!("{}: {e}", known.display()));
    let ed = node_exec(&manager, &["cat", "/etc/ssh/ssh_host_ed25519_key.pub"]).ok("the host key").stdout;
    let ed: String = ed.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
    assert!(recorded.lines().any(|l| l == format!("{manager} {ed}")), "{recorded}");

    // Every later connection is lab's own, checked: none goes through `docker-machine ssh`.
    let seen = v.machines.invocations().len();
    let ssh = |args: &[&str], env: &[(&str, &str)]| {
        let mut a = vec!["ssh", "--cluster", &v.lab.cluster, "manager", "--"];
        a.extend_from_slice(args);
        v.machines.lab_exactly(&v.lab, &a, env)
    };
    let me = ssh(&["id", "-un"], &[]);
    assert_eq!((me.code, me.stdout.trim()), (0, "docker"), "{}", me.all());
    let quoted = ssh(&["printf", "%s|", "a b", "it's", "$HOME", ""], &[]);
    assert_eq!((quoted.code, quoted.stdout.as_str()), (0, "a b|it's|$HOME||"), "{}", quoted.all());
    v.on(&["check"]).ok("lab check");
    assert_eq!(calls(&v, "ssh", seen), Vec::<String>::new(), "lab went through docker-machine ssh");

    // The machine's host keys change: `lab ssh` and lab's own commands refuse it.
    node_exec(&manager, &["sh", "-c", "rm -f /etc/ssh/ssh_host_* && ssh-keygen -A && kill -HUP $(cat /run/sshd.pid)"])
        .ok("new host keys");
    // sshd re-executes itself on SIGHUP, and its port is closed for that moment (CI, loaded:
    // "Connection refused").
    let refused = wait_for("sshd listening again after its SIGHUP", Duration::from_secs(30), || {
        let r = ssh(&["true"], &[]);
        if r.stderr.contains("Connection refused") {
            Err(r.all())
        } else {
            Ok(r)
        }
    });
    assert_ne!(refused.code, 0, "{}", refused.all());
    assert!(refused.stderr.contains("REMOTE HOST IDENTIFICATION HAS CHANGED"), "{}", refused.stderr);
    let check = v.machines.lab(&v.lab, &["check"], &[("RUST_LOG", "lab_driver_virtualbox=debug")]);
    assert!(check.stderr.contains("host key changed"), "{}", check.all());
    assert_eq!(std::fs::read_to_string(&known).unwrap(), recorded, "the record was changed");
    assert_eq!(calls(&v, "ssh", seen), Vec::<String>::new(), "lab went through docker-machine ssh");
}
