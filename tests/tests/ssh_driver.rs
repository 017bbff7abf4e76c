//! End-to-end: the ssh driver against "existing hosts" (containers running sshd and dockerd,
//! see `lab_tests::ssh`), as a user would drive it. Each test makes its own uniquely named
//! cluster and hosts and removes them, even when it fails.

use std::time::{Duration, Instant};

use lab_tests::ssh::{keygen, SshBed};
use lab_tests::{docker, node_exec, wait_for, REGISTRY_IMAGE};
use serde_json::Value;

fn lab(tag: &str) -> lab_tests::Lab {
    lab_tests::Lab::new(tag, env!("CARGO_BIN_EXE_lab-e2e"))
}

fn json(run: &lab_tests::Run) -> Value {
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", run.stdout))
}

/// `lab up --driver ssh` with the bed's hosts file and known-hosts file, plus `extra`.
fn up(lab: &lab_tests::Lab, bed: &SshBed, hosts: &std::path::Path, extra: &[&str]) -> lab_tests::Run {
    let hosts = hosts.to_string_lossy().into_owned();
    let known = bed.known_hosts().to_string_lossy().into_owned();
    let mut a =
        vec!["up", "--driver", "ssh", "--hosts", &hosts, "--known-hosts", &known, "--registry-image", REGISTRY_IMAGE];
    a.extend_from_slice(extra);
    lab.on(&a)
}

/// Puts this machine's copy of the registry image into every host's engine (the hosts cannot
/// pull).
fn load_registry_image(bed: &SshBed) {
    let r = docker(&["save", REGISTRY_IMAGE, "-o", &bed.path("reg.tar").to_string_lossy()]);
    assert_eq!(r.code, 0, "{}", r.all());
    for h in &bed.hosts {
        docker(&["cp", &bed.path("reg.tar").to_string_lossy(), &format!("{}:/tmp/reg.tar", h.container)])
            .ok("copy image");
        node_exec(&h.container, &["docker", "load", "-q", "-i", "/tmp/reg.tar"]).ok("load image");
    }
}

fn swarm_state(container: &str) -> String {
    node_exec(container, &["docker", "info", "--format", "{{.Swarm.LocalNodeState}}"]).stdout.trim().to_string()
}

/// Issue 19, item 1 on the ssh driver, "with enough hosts": three manager hosts and a worker
/// form one Raft cluster of three drained managers, and `status` and `check` say the quorum.
#[test]
fn three_manager_hosts_form_one_raft_that_tolerates_one_failure() {
    lab_tests::ensure_images();
    let lab = lab("sshha");
    let bed = SshBed::new(&lab.cluster, &[("m1", "manager"), ("m2", "manager"), ("m3", "manager"), ("w1", "worker")]);
    let hosts = bed.write_hosts(&bed.hosts_toml());
    load_registry_image(&bed);
    up(&lab, &bed, &hosts, &[]).ok("lab up --driver ssh with three manager hosts");
    let status = lab.on(&["status"]).ok("lab status");
    assert!(status.stdout.contains("swarm: 3 managers, 3 reachable: tolerates 1 failure"), "{}", status.stdout);
    let ls = node_exec(
        &bed.hosts[0].container,
        &["docker", "node", "ls", "--format", "{{.Availability}} {{.ManagerStatus}}"],
    )
    .ok("docker node ls");
    let managers: Vec<&str> = ls.stdout.lines().filter(|l| l.contains("Leader") || l.contains("Reachable")).collect();
    assert_eq!(managers.len(), 3, "{}", ls.stdout);
    assert!(managers.iter().all(|l| l.starts_with("Drain")), "every manager drained: {}", ls.stdout);
    let check = lab.on(&["check"]).ok("lab check");
    assert!(check.stdout.contains("every manager answers"), "{}", check.stdout);
    lab.on(&["down"]).ok("lab down");
}

/// The main story: three existing hosts become a drained 1+2 swarm whose registry
/// answers on every host; a pushed image runs on a worker; a second `up` changes nothing;
/// `down` leaves every host out of the swarm with its own containers untouched.
#[test]
fn hosts_become_a_swarm_with_a_registry_and_down_leaves_them_as_they_were() {
    lab_tests::ensure_images();
    let lab = lab("ssh");
    let bed = SshBed::new(&lab.cluster, &[("manager", "manager"), ("worker1", "worker"), ("worker2", "worker")]);
    let hosts = bed.write_hosts(&bed.hosts_toml());
    // Something of the hosts' owners' own, which lab must leave alone.
    for h in &bed.hosts {
        node_exec(&h.container, &["docker", "load", "-q", "-i", "/dev/null"]); // warm the CLI
    }
    load_registry_image(&bed);
    for h in &bed.hosts {
        node_exec(
            &h.container,
            &["docker", "run", "-d", "--name", "owners-own", "--entrypoint", "sleep", REGISTRY_IMAGE, "3600"],
        )
        .ok("start an unrelated container");
    }

    let first = up(&lab, &bed, &hosts, &[]).ok("lab up --driver ssh");
    assert!(first.stderr.contains("registry mode:"), "{}", first.stderr);
    // Hosts on a real network with an open registry: said once, naming the setting that
    // closes it.
    let warned = first.stderr.lines().filter(|l| l.contains("anyone on the hosts' network")).count();
    assert_eq!(warned, 1, "{}", first.stderr);
    assert!(first.stderr.contains("--registry-tls mutual"), "{}", first.stderr);

    let status = json(&lab.on(&["status", "--output", "json"]).ok("lab status"));
    assert_eq!(status["driver"], "ssh");
    let nodes = status["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 3, "{status:#}");
    for n in nodes {
        assert_eq!(n["engine"], "ready", "{n}");
        assert_eq!(n["swarm"], "ready", "{n}");
        let h = bed.host(n["name"].as_str().unwrap());
        assert_eq!(n["address"], h.address.as_str(), "{n}");
    }
    let mgr = nodes.iter().find(|n| n["name"] == "manager").expect("manager");
    assert_eq!(mgr["availability"], "drain");
    assert_eq!(mgr["manager_status"], "leader");
    assert_eq!(status["registry"]["state"], "running", "{status:#}");

    // The registry answers `{}` on every host, both spellings, from the host itself.
    for h in &bed.hosts {
        for url in ["http://127.0.0.1:5000/v2/", "http://localhost:5000/v2/"] {
            wait_for(&format!("{{}} from {url} on {}", h.name), Duration::from_secs(30), || {
                let r = node_exec(&h.container, &["curl", "-s", "-m", "5", url]);
                if r.stdout.trim() == "{}" {
                    Ok(())
                } else {
                    Err(r.all())
                }
            });
        }
    }

    lab_tests::image_made_on_manager_runs_on(&bed.host("manager").container, &bed.host("worker2").container, "worker2");

    // A second `up` plans nothing and changes nothing; `check` passes; `env` names the host.
    let plan = lab.on(&["plan"]).ok("lab plan");
    assert!(plan.stdout.contains("nothing to do"), "{}", plan.stdout);
    let again = up(&lab, &bed, &hosts, &[]).ok("second lab up");
    assert!(again.stderr.contains("nothing to change"), "{}", again.stderr);
    let again = lab.on(&["up"]).ok("up with only --cluster");
    assert!(again.stderr.contains("nothing to change"), "{}", again.stderr);
    let check = lab.on(&["check"]).ok("lab check");
    // Three nodes, each with two URLs and its dockerd.
    // Every node's registry checks (the cluster-wide rows, such as the managers', start with -).
    let node_oks = check.stdout.lines().filter(|l| !l.starts_with('-') && l.contains("   ok   ")).count();
    assert_eq!(node_oks, 9, "{}", check.stdout);
    let env = lab.on(&["env", "--shell", "bash"]).ok("lab env");
    let want = format!("export DOCKER_HOST='ssh://root@{}'", bed.host("manager").address);
    assert!(env.stdout.contains(&want), "{}", env.stdout);

    // `lab ssh NODE -- CMD` runs CMD there, each argument as one.
    let ssh = lab.run(&[
        "ssh",
        "--cluster",
        &lab.cluster,
        "worker1",
        "--",
        "docker",
        "info",
        "--format",
        "{{.Name}} {{.Swarm.LocalNodeState}}",
    ]);
    assert_eq!(ssh.code, 0, "{}", ssh.all());
    assert_eq!(ssh.stdout.trim(), "worker1 active", "{}", ssh.all());

    // `down` leaves the hosts, out of the swarm, with their own containers running.
    lab.on(&["down"]).ok("lab down");
    for h in &bed.hosts {
        let info = node_exec(&h.container, &["docker", "info"]).ok("docker info");
        assert!(info.stdout.contains("Swarm: inactive"), "{}: {}", h.name, info.stdout);
        let own = node_exec(&h.container, &["docker", "inspect", "--format", "{{.State.Running}}", "owners-own"]);
        assert_eq!(own.stdout.trim(), "true", "{}: the owner's container: {}", h.name, own.all());
        let left = node_exec(&h.container, &["docker", "ps", "-a", "--format", "{{.Names}}"]).ok("ps");
        assert!(
            !left.stdout.contains("lab-registry-forwarder") && !left.stdout.contains("registry_registry"),
            "{}",
            left.stdout
        );
    }
    assert!(!lab.run(&["ls"]).stdout.contains(&lab.cluster));
}

/// Host keys: a changed key is refused naming the host and the way out; strict refuses an
/// unknown host; a wrong client key fails naming the host, the user and what was tried.
/// Nothing is changed on the host in any of these.
#[test]
fn changed_host_keys_unknown_hosts_under_strict_and_wrong_keys_are_refused() {
    lab_tests::ensure_images();
    let lab = lab("sshkeys");
    let bed = SshBed::new(&lab.cluster, &[("solo", "manager")]);
    let hosts = bed.write_hosts(&bed.hosts_toml());
    let host = bed.host("solo");

    // Strict with an empty known-hosts file: refused, nothing recorded.
    let r = up(&lab, &bed, &hosts, &["--host-key-policy", "strict"]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stderr.contains("solo") && r.stderr.contains("host key") && r.stderr.contains("strict"), "{}", r.stderr);
    assert_eq!(std::fs::read_to_string(bed.known_hosts()).unwrap(), "");

    // Accept-new records the key (a plain line for the address) and goes on; reaching the host
    // again matches it. Only the preflight is needed: `plan` stops short of changing anything.
    let plan = lab.on(&[
        "plan",
        "--driver",
        "ssh",
        "--hosts",
        &hosts.to_string_lossy(),
        "--known-hosts",
        &bed.known_hosts().to_string_lossy(),
    ]);
    assert_eq!(plan.code, 0, "{}", plan.all());
    let recorded = std::fs::read_to_string(bed.known_hosts()).unwrap();
    assert!(recorded.starts_with(&format!("{} ssh-ed25519 ", host.address)), "{recorded}");

    // The key changes (the host is "reinstalled"): refused, with the way out.
    let other = bed.path("other_host_key");
    keygen(&other);
    let other_pub = std::fs::read_to_string(other.with_extension("pub")).unwrap();
    let fake: Vec<&str> = other_pub.split_whitespace().take(2).collect();
    std::fs::write(bed.known_hosts(), format!("# mine\n{} {} {}\n", host.address, fake[0], fake[1])).unwrap();
    let r = up(&lab, &bed, &hosts, &[]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stderr.contains("solo"), "the host is not named: {}", r.stderr);
    assert!(r.stderr.contains("host key") && r.stderr.contains("changed"), "{}", r.stderr);
    assert!(r.stderr.contains(&format!("ssh-keygen -R '{}'", host.address)), "{}", r.stderr);
    assert!(std::fs::read_to_string(bed.known_hosts()).unwrap().starts_with("# mine\n"), "the file was rewritten");
    assert_eq!(swarm_state(&host.container), "inactive");

    // A key the host does not authorise.
    std::fs::write(bed.known_hosts(), "").unwrap();
    let stranger = bed.path("stranger");
    keygen(&stranger);
    let text = bed.hosts_toml().replace(&bed.key().to_string_lossy().into_owned(), &stranger.to_string_lossy());
    let wrong = bed.write_hosts(&text);
    let r = up(&lab, &bed, &wrong, &[]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stderr.contains("solo") && r.stderr.contains("authenticate"), "{}", r.stderr);
    assert!(r.stderr.contains("as root") && r.stderr.contains(&*stranger.to_string_lossy()), "{}", r.stderr);
    assert_eq!(swarm_state(&host.container), "inactive");
    let secret = std::fs::read_to_string(&stranger).unwrap();
    let body: String = secret.lines().filter(|l| !l.starts_with("-----")).collect();
    assert!(!r.all().contains(&body[..20]), "private key material in the output");

    // A host in someone else's swarm is refused, naming it and the swarm; --force takes it.
    let hosts = bed.write_hosts(&bed.hosts_toml());
    node_exec(&host.container, &["docker", "swarm", "init", "--advertise-addr", &host.address]).ok("foreign swarm");
    let foreign = node_exec(&host.container, &["docker", "info", "--format", "{{.Swarm.Cluster.ID}}"]).stdout;
    let r = up(&lab, &bed, &hosts, &[]);
    // A plan blocked until --force, like one that would lose the registry's data (issue 10,
    // item 1: the core refuses it now, not the driver's preflight).
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("solo") && r.stderr.contains("another swarm"), "{}", r.stderr);
    assert!(r.stderr.contains(foreign.trim()) && r.stderr.contains("--force"), "{}", r.stderr);
    assert_eq!(
        node_exec(&host.container, &["docker", "info", "--format", "{{.Swarm.Cluster.ID}}"]).stdout,
        foreign,
        "a refused up changed the host's swarm"
    );
    up(&lab, &bed, &hosts, &["--force"]).ok("lab up --force");
    let now = node_exec(&host.container, &["docker", "info", "--format", "{{.Swarm.Cluster.ID}}"]).stdout;
    assert_ne!(now, foreign, "--force did not make the host leave the foreign swarm");
    assert!(up(&lab, &bed, &hosts, &[]).ok("up again").stderr.contains("nothing to change"));
    lab.on(&["down"]).ok("lab down");
    assert_eq!(swarm_state(&host.container), "inactive");
}

/// Hosts that do not answer fail within the connect timeout, every such host named in one
/// error. The hosts are the bed's own, frozen (`docker pause`): their kernels still accept the
/// TCP connection, but sshd never sends its greeting. (The suite talks only to hosts it made.)
#[test]
fn unreachable_hosts_fail_within_the_timeout_all_named_at_once() {
    lab_tests::ensure_images();
    let lab = lab("sshdown");
    let bed = SshBed::new(&lab.cluster, &[("ghost1", "manager"), ("ghost2", "worker")]);
    let hosts = bed.write_hosts(&bed.hosts_toml());
    struct Unpause<'a>(&'a SshBed);
    impl Drop for Unpause<'_> {
        fn drop(&mut self) {
            for h in &self.0.hosts {
                docker(&["unpause", &h.container]);
            }
        }
    }
    for h in &bed.hosts {
        docker(&["pause", &h.container]).ok("pause a host");
    }
    let _unpause = Unpause(&bed);
    let start = Instant::now();
    let r = up(&lab, &bed, &hosts, &["--driver-opt", "connect_timeout=3"]);
    let took = start.elapsed();
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(took < Duration::from_secs(20), "took {took:?} with a 3 s connect timeout");
    for name in ["ghost1", "ghost2"] {
        assert!(r.stderr.contains(&format!("{name}: connect over SSH")), "{name} not named: {}", r.stderr);
    }
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
}

/// A hosts file whose fields carry shell metacharacters is bad input (exit 2) and runs
/// nothing: no connection, no file made by an injected command, no cluster recorded.
#[test]
fn hosts_files_with_shell_metacharacters_run_nothing() {
    let lab = lab("sshinj");
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("pwned");
    let m = marker.display();
    let base = |field: &str, value: &str| {
        let mut h = vec![
            ("name", "\"manager\"".to_string()),
            ("address", "\"127.0.0.1\"".to_string()),
            ("role", "\"manager\"".to_string()),
        ];
        match h.iter_mut().find(|(k, _)| *k == field) {
            Some(e) => e.1 = format!("'{value}'"),
            None => h.push((Box::leak(field.to_string().into_boxed_str()), format!("'{value}'"))),
        }
        let body: String = h.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
        format!("[[hosts]]\n{body}")
    };
    let cases = [
        ("address", format!("$(touch {m})")),
        ("address", format!("127.0.0.1; touch {m}")),
        ("address", format!("-oProxyCommand=touch {m}")),
        ("name", format!("m`touch {m}`")),
        ("user", format!("root$(touch {m})")),
        ("user", format!("-oProxyCommand=touch {m}")),
        ("advertise_address", format!("1.2.3.4 && touch {m}")),
    ];
    for (field, value) in &cases {
        let hosts = dir.path().join("hosts.toml");
        std::fs::write(&hosts, base(field, value)).unwrap();
        let r = lab.on(&["up", "--driver", "ssh", "--hosts", &hosts.to_string_lossy()]);
        assert_eq!(r.code, 2, "{field} = {value:?}: {}", r.all());
        assert!(r.stderr.contains("hosts.toml") && r.stderr.contains(field), "{field}: {}", r.stderr);
        assert!(!marker.exists(), "{field} = {value:?} ran a command");
    }
    // `--driver ssh` without a hosts file.
    let r = lab.on(&["up", "--driver", "ssh"]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("--hosts"), "{}", r.stderr);
    assert!(!lab.run(&["ls"]).stdout.contains(&lab.cluster), "a refused up recorded the cluster");
}

/// Runs `cmd` and returns what it printed, failing the test (after killing it) if it has not
/// exited within `limit`: a hang is the defect some of these tests look for.
fn run_within(mut cmd: std::process::Command, limit: Duration, what: &str) -> lab_tests::Run {
    use std::io::Read;
    cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("run lab");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let o = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let e = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait for lab") {
            break st;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not exit within {}s (killed); stderr so far:\n{}", limit.as_secs(), e.join().unwrap());
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    lab_tests::Run { code: status.code().unwrap_or(-1), stdout: o.join().unwrap(), stderr: e.join().unwrap() }
}

/// Unfreezes the bed's hosts when the test ends, however it ends.
struct Unpause<'a>(&'a SshBed);
impl Drop for Unpause<'_> {
    fn drop(&mut self) {
        for h in &self.0.hosts {
            docker(&["unpause", &h.container]);
        }
    }
}

/// Item 13: `down` with a host out of reach exits 1 naming it, keeps the cluster's record,
/// and a later `down`, once the host is back, finishes: no forwarder, every host out of the
/// swarm, the registry's volume gone, the record gone. First a worker, then the manager is
/// the host out of reach.
#[test]
fn down_with_an_unreachable_host_fails_naming_it_and_a_later_down_finishes() {
    lab_tests::ensure_images();
    let lab = lab("sshdn");
    let bed = SshBed::new(&lab.cluster, &[("manager", "manager"), ("worker1", "worker"), ("worker2", "worker")]);
    let hosts = bed.write_hosts(&bed.hosts_toml());
    up(&lab, &bed, &hosts, &[]).ok("lab up --driver ssh");
    let _unpause = Unpause(&bed);
    docker(&["pause", &bed.host("worker2").container]).ok("pause worker2");
    let r = run_within(lab.command(&["down", "--cluster", &lab.cluster]), Duration::from_secs(120), "lab down");
    assert_eq!(r.code, 1, "down with worker2 unreachable: {}", r.all());
    assert!(r.stderr.contains("worker2"), "worker2 is not named: {}", r.stderr);
    assert!(!r.stderr.contains("worker1 ("), "worker1 was reachable: {}", r.stderr);
    assert!(lab.run(&["ls"]).stdout.contains(&lab.cluster), "the record was dropped: {}", r.all());
    assert!(!r.stderr.contains("worker2 (worker2"), "the node is named twice: {}", r.stderr);
    // Now the manager is the one out of reach: the service cannot be removed, so nothing
    // leaves the swarm; the manager is named and the record stays.
    docker(&["unpause", &bed.host("worker2").container]).ok("unpause worker2");
    docker(&["pause", &bed.host("manager").container]).ok("pause the manager");
    let r = run_within(lab.command(&["down", "--cluster", &lab.cluster]), Duration::from_secs(120), "lab down");
    assert_eq!(r.code, 1, "down with the manager unreachable: {}", r.all());
    assert!(r.stderr.contains("manager"), "the manager is not named: {}", r.stderr);
    assert_eq!(swarm_state(&bed.host("worker2").container), "active", "worker2 left while the service stayed");
    assert!(lab.run(&["ls"]).stdout.contains(&lab.cluster), "the record was dropped: {}", r.all());
    docker(&["unpause", &bed.host("manager").container]).ok("unpause the manager");
    lab.on(&["down"]).ok("last lab down");
    for h in &bed.hosts {
        wait_for(&format!("{} out of the swarm", h.name), Duration::from_secs(30), || {
            let s = swarm_state(&h.container);
            if s == "inactive" {
                Ok(())
            } else {
                Err(s)
            }
        });
        let left = node_exec(&h.container, &["docker", "ps", "-a", "--format", "{{.Names}}"]).ok("ps");
        assert!(!left.stdout.contains("lab-registry-forwarder"), "{}: {}", h.name, left.stdout);
        let vols = node_exec(&h.container, &["docker", "volume", "ls", "--format", "{{.Name}}"]).ok("volumes");
        assert!(!vols.stdout.lines().any(|v| v == "registry_data"), "{}: {}", h.name, vols.stdout);
    }
    assert!(!lab.run(&["ls"]).stdout.contains(&lab.cluster), "the record outlived a finished down");
}

/// Item 12: with the cluster's manager out of reach, `up --force` must not take this
/// cluster's own workers for foreign and make them leave: they stay in the swarm.
#[test]
fn force_with_the_manager_unreachable_leaves_the_clusters_own_workers_alone() {
    lab_tests::ensure_images();
    let lab = lab("sshfrc");
    let bed = SshBed::new(&lab.cluster, &[("manager", "manager"), ("worker1", "worker"), ("worker2", "worker")]);
    let hosts = bed.write_hosts(&bed.hosts_toml());
    up(&lab, &bed, &hosts, &[]).ok("lab up --driver ssh");
    let _unpause = Unpause(&bed);
    docker(&["pause", &bed.host("manager").container]).ok("pause the manager");
    let r = run_within(
        lab.command(&[
            "up",
            "--cluster",
            &lab.cluster,
            "--force",
            "--driver-opt",
            "connect_timeout=3",
            "--registry-image",
            REGISTRY_IMAGE,
        ]),
        Duration::from_secs(120),
        "lab up --force",
    );
    assert_ne!(r.code, 0, "up with the manager unreachable succeeded: {}", r.all());
    assert!(r.stderr.contains("manager"), "{}", r.stderr);
    for w in ["worker1", "worker2"] {
        assert_eq!(swarm_state(&bed.host(w).container), "active", "{w} was made to leave: {}", r.all());
    }
    docker(&["unpause", &bed.host("manager").container]).ok("unpause the manager");
    let again = up(&lab, &bed, &hosts, &[]).ok("up once the manager is back");
    assert!(again.stderr.contains("nothing to change"), "{}", again.stderr);
}

/// Issue 18, item 16: a host whose key is `@revoked`, or has changed, is not just "not
/// answering": `lab status` (the table and its JSON), `lab check` and `lab down` give the
/// cause, in a few words the user can act on, each within a bound.
#[test]
fn a_revoked_or_changed_host_key_is_the_cause_status_and_check_give() {
    lab_tests::ensure_images();
    let lab = lab("sshrev");
    let bed = SshBed::new(&lab.cluster, &[("solo", "manager")]);
    let hosts = bed.write_hosts(&bed.hosts_toml());
    up(&lab, &bed, &hosts, &[]).ok("lab up --driver ssh");
    let recorded = std::fs::read_to_string(bed.known_hosts()).unwrap();
    let key: String = recorded.split_whitespace().skip(1).take(2).collect::<Vec<_>>().join(" ");
    keygen(&bed.path("other"));
    let other = std::fs::read_to_string(bed.path("other.pub")).unwrap();
    let other: String = other.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
    let address = &bed.host("solo").address;
    let bounded = |args: &[&str], what: &str| {
        let mut a = args.to_vec();
        a.extend(["--cluster", &lab.cluster]);
        run_within(lab.command(&a), Duration::from_secs(90), what)
    };
    for (known, cause) in [
        (format!("{recorded}@revoked * {key}\n"), "host key revoked"),
        (format!("{address} {other}\n"), "host key changed"),
    ] {
        std::fs::write(bed.known_hosts(), &known).unwrap();
        let status = bounded(&["status"], "lab status");
        assert_eq!(status.code, 0, "{}", status.all());
        assert!(status.stdout.contains("not answering"), "{}", status.stdout);
        let said =
            status.stdout.lines().find(|l| l.contains(cause)).unwrap_or_else(|| panic!("{cause}: {}", status.stdout));
        assert!(said.starts_with("solo"), "the node is not named: {said}");
        let status = json(&bounded(&["status", "--output", "json"], "lab status --output json").ok("status json"));
        let node = &status["nodes"][0];
        assert_eq!(node["engine"], "not answering", "{node}");
        assert!(node["engine_error"].as_str().unwrap_or_default().contains(cause), "{cause}: {node}");
        let check = bounded(&["check"], "lab check");
        assert_eq!(check.code, 1, "{}", check.all());
        assert!(check.all().contains(cause), "{cause}: {}", check.all());
        let down = bounded(&["down"], "lab down");
        assert_eq!(down.code, 1, "{}", down.all());
        assert!(down.stderr.contains(cause), "{cause}: {}", down.stderr);
        assert_eq!(std::fs::read_to_string(bed.known_hosts()).unwrap(), known, "the known-hosts file was changed");
    }
    std::fs::write(bed.known_hosts(), &recorded).unwrap();
    lab.on(&["down"]).ok("lab down once the key is right again");
}

/// Item 11: one machine listed twice (port 22 and port 2222 of one address) is refused with
/// exit 2 naming both entries, before anything changes.
#[test]
fn one_engine_listed_twice_is_refused_naming_both_entries() {
    lab_tests::ensure_images();
    let lab = lab("sshdup");
    let bed = SshBed::new(&lab.cluster, &[("manager", "manager")]);
    let h = bed.host("manager");
    let text = format!(
        "{}\n[[hosts]]\nname = \"again\"\naddress = \"{}\"\nport = 2222\nadvertise_address = \"10.255.0.1\"\nrole = \"worker\"\n",
        bed.hosts_toml(),
        h.address
    );
    let hosts = bed.write_hosts(&text);
    let r = up(&lab, &bed, &hosts, &[]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("manager") && r.stderr.contains("again"), "both entries not named: {}", r.stderr);
    assert!(r.stderr.contains("hosts.toml"), "the file is not named: {}", r.stderr);
    assert_eq!(swarm_state(&h.container), "inactive", "a refused up changed the host");
    assert!(!lab.run(&["ls"]).stdout.contains(&lab.cluster), "a refused up recorded the cluster");
}

/// Item 14: an ssh-agent that accepts connections and never answers makes `up` fail within a
/// bound, naming the agent, instead of hanging.
#[test]
fn an_agent_that_never_answers_fails_naming_it_instead_of_hanging() {
    lab_tests::ensure_images();
    let lab = lab("sshagt");
    let bed = SshBed::new(&lab.cluster, &[("solo", "manager")]);
    let text = bed.hosts_toml().replace(&format!("identity_file = \"{}\"\n", bed.key().display()), "");
    let hosts = bed.write_hosts(&text);
    let sock = bed.path("agent.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).expect("bind the fake agent");
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in listener.incoming().flatten() {
            held.push(c); // accepted, never answered
        }
    });
    let home = bed.path("home");
    std::fs::create_dir_all(&home).unwrap();
    let mut cmd = lab.command(&[
        "up",
        "--cluster",
        &lab.cluster,
        "--driver",
        "ssh",
        "--hosts",
        &hosts.to_string_lossy(),
        "--known-hosts",
        &bed.known_hosts().to_string_lossy(),
        "--driver-opt",
        "operation_timeout=5",
    ]);
    cmd.env("SSH_AUTH_SOCK", &sock).env("HOME", &home);
    let start = Instant::now();
    let r = run_within(cmd, Duration::from_secs(60), "lab up with an agent that never answers");
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(start.elapsed() < Duration::from_secs(40), "took {:?}", start.elapsed());
    assert!(r.stderr.contains("solo") && r.stderr.contains("ssh-agent"), "the agent is not named: {}", r.stderr);
    assert_eq!(swarm_state(&bed.host("solo").container), "inactive");
}

/// OpenSSH's verdict on the bed host at `address`:`port`, looked up as `alias` (or as the
/// address itself when `None`), with exactly these known-hosts files and strict checking.
fn openssh_verdict(bed: &SshBed, address: &str, port: u16, alias: Option<&str>, user: &str, global: &str) -> String {
    let (u, g) = (bed.path("ossh_user"), bed.path("ossh_global"));
    std::fs::write(&u, user).unwrap();
    std::fs::write(&g, global).unwrap();
    let mut cmd = std::process::Command::new("ssh");
    cmd.args(["-F", "/dev/null", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-o", "CheckHostIP=no"])
        .args(["-o", "UpdateHostKeys=no", "-o", "IdentityAgent=none", "-o", "IdentitiesOnly=yes"])
        .args(["-o", "ConnectTimeout=10", "-o"])
        .arg(format!("UserKnownHostsFile={}", u.display()))
        .arg("-o")
        .arg(format!("GlobalKnownHostsFile={}", g.display()))
        .arg("-i")
        .arg(bed.key())
        .args(["-p", &port.to_string()]);
    if let Some(a) = alias {
        cmd.arg("-o").arg(format!("HostKeyAlias={a}"));
    }
    cmd.arg(format!("root@{address}")).arg("true").stdin(std::process::Stdio::null());
    let out = cmd.output().expect("run ssh (package openssh-client)");
    let err = String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        "accept".into()
    } else if err.contains("REVOKED HOST KEY") {
        "revoked".into()
    } else if err.contains("REMOTE HOST IDENTIFICATION HAS CHANGED") {
        "changed".into()
    } else if err.contains("host key is known for") {
        "unknown".into()
    } else {
        panic!("ssh gave no verdict lab's table knows ({}): {err}", out.status)
    }
}

/// Item 10: lab judges host keys as OpenSSH does. For each row (known-hosts file, global
/// known-hosts file, the host's name, port), lab's verdict equals that of real `ssh` with
/// strict checking against the bed's sshd: every matching line counts and `@revoked` wins
/// wherever it is, `@cert-authority` never vouches for a plain key, host names compare
/// without case, `*`/`?`/`!` patterns, hashed names, `[host]:port`, and the global file.
#[test]
fn host_key_verdicts_equal_openssh_for_a_table_of_known_hosts_files() {
    lab_tests::ensure_images();
    let lab = lab("sshkh");
    let bed = SshBed::new(&lab.cluster, &[("node1", "manager")]);
    let h = bed.host("node1");
    let read_key = |t: &str| -> String {
        let k = node_exec(&h.container, &["cat", &format!("/etc/ssh/ssh_host_{t}_key.pub")]).ok("host key").stdout;
        k.split_whitespace().take(2).collect::<Vec<_>>().join(" ")
    };
    let (ed, ec) = (read_key("ed25519"), read_key("ecdsa"));
    keygen(&bed.path("other"));
    let other = std::fs::read_to_string(bed.path("other.pub")).unwrap();
    let other: String = other.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
    // A hashed name, as `ssh-keygen -H` writes it.
    let hash = |name: &str| -> String {
        let f = bed.path("to_hash");
        std::fs::write(&f, format!("{name} {ed}\n")).unwrap();
        let out = std::process::Command::new("ssh-keygen").arg("-H").arg("-f").arg(&f).output().unwrap();
        assert!(out.status.success(), "ssh-keygen -H: {}", String::from_utf8_lossy(&out.stderr));
        std::fs::read_to_string(&f).unwrap().split_whitespace().next().unwrap().to_string()
    };
    let hashed = hash("node1.example.com");
    let ip = h.address.as_str();
    // (user file, global file, name looked up (None: the address), port, what OpenSSH says
    // today, kept only so a failure shows which way each side went)
    let n = "node1.example.com";
    let rows: Vec<(String, String, Option<&str>, u16)> = vec![
        (String::new(), String::new(), Some(n), 22),
        (format!("{n} {ed}\n"), String::new(), Some(n), 22),
        (format!("Node1.Example.COM {ed}\n"), String::new(), Some(n), 22),
        (format!("{n} {ed}\n"), String::new(), Some("Node1.Example.com"), 22),
        (format!("{n} {other}\n"), String::new(), Some(n), 22),
        (format!("{n} {ed}\n@revoked * {ed}\n"), String::new(), Some(n), 22),
        (format!("@revoked node2.example.com {ed}\n{n} {ed}\n"), String::new(), Some(n), 22),
        (format!("@revoked * {ed}\n"), String::new(), Some(n), 22),
        (format!("@cert-authority *.example.com {ed}\n"), String::new(), Some(n), 22),
        (format!("@cert-authority *.example.com {other}\n{n} {ed}\n"), String::new(), Some(n), 22),
        (format!("@cert-authority {n} {ed}\n{n} {other}\n"), String::new(), Some(n), 22),
        (format!("*.example.com {ed}\n"), String::new(), Some(n), 22),
        (format!("node?.example.com {ed}\n"), String::new(), Some(n), 22),
        (format!("node?.example.com {ed}\n"), String::new(), Some("node10.example.com"), 22),
        (format!("!{n},*.example.com {ed}\n"), String::new(), Some(n), 22),
        (format!("!{n},*.example.com {other}\n"), String::new(), Some(n), 22),
        (format!("other.example.com,{n} {ed}\n"), String::new(), Some(n), 22),
        (format!("{hashed} {ed}\n"), String::new(), Some(n), 22),
        (format!("{hashed} {other}\n"), String::new(), Some(n), 22),
        (format!("{hashed} {ed}\n"), String::new(), Some("NODE1.example.com"), 22),
        (format!("{n} {other}\n{n} {ed}\n"), String::new(), Some(n), 22),
        (format!("{n} {ec}\n"), String::new(), Some(n), 22),
        (format!("@bogus {n} {other}\n{n} {ed}\n"), String::new(), Some(n), 22),
        (String::new(), format!("{n} {ed}\n"), Some(n), 22),
        (String::new(), format!("{n} {other}\n"), Some(n), 22),
        (format!("{n} {ed}\n"), format!("@revoked * {ed}\n"), Some(n), 22),
        (format!("{n} {other}\n"), format!("{n} {ed}\n"), Some(n), 22),
        (format!("[{ip}]:2222 {ed}\n"), String::new(), None, 2222),
        (format!("{ip} {ed}\n"), String::new(), None, 2222),
        (format!("[{ip}]:2222 {other}\n"), String::new(), None, 2222),
        (format!("* {other}\n"), String::new(), None, 2222),
        (format!("[{ip}]:* {ed}\n"), String::new(), None, 2222),
        (format!("{ip} {ed}\n"), String::new(), None, 22),
    ];
    let mut wrong = Vec::new();
    for (user, global, alias, port) in &rows {
        let want = openssh_verdict(&bed, ip, *port, *alias, user, global);
        let (u, g) = (bed.path("lab_user"), bed.path("lab_global"));
        std::fs::write(&u, user).unwrap();
        std::fs::write(&g, global).unwrap();
        let name = alias.unwrap_or(ip);
        let got = lab_driver_ssh::testing::host_key_verdict(ip, *port, name, &u, &g).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(std::fs::read_to_string(&u).unwrap(), *user, "lab wrote to the known-hosts file");
        if got != want {
            wrong.push(format!("name {name} port {port}: lab {got}, ssh {want}\n  user:\n{user}  global:\n{global}"));
        }
    }
    assert!(wrong.is_empty(), "{} of {} rows differ from OpenSSH:\n{}", wrong.len(), rows.len(), wrong.join("\n"));

    // Through lab itself, under accept-new (the default): a key revoked in the global file,
    // or changed there, is refused and nothing is recorded; an unknown one is recorded, in
    // lower case as ssh records it.
    let hosts = bed.write_hosts(&bed.hosts_toml());
    let global = bed.path("global_known_hosts");
    // `up` stops at the preflight when a key is refused; `plan` reports an engine it cannot
    // reach as a step to wait for, so it shows only that an accepted key was recorded.
    let run = |command: &str, global_text: &str| {
        std::fs::write(bed.known_hosts(), "").unwrap();
        std::fs::write(&global, global_text).unwrap();
        let known = bed.known_hosts().to_string_lossy().into_owned();
        let hosts = hosts.to_string_lossy().into_owned();
        let g = format!("global_known_hosts={}", global.display());
        let args = [command, "--cluster", &lab.cluster, "--driver", "ssh", "--hosts", &hosts, "--known-hosts", &known];
        let mut cmd = lab.command(&args);
        cmd.args(["--driver-opt", &g, "--registry-image", REGISTRY_IMAGE]);
        run_within(cmd, Duration::from_secs(60), command)
    };
    let r = run("up", &format!("@revoked * {ed}\n"));
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stderr.contains("node1") && r.stderr.contains("@revoked") && r.stderr.contains("line 1"), "{}", r.stderr);
    assert_eq!(std::fs::read_to_string(bed.known_hosts()).unwrap(), "", "a revoked key was recorded");
    let r = run("up", &format!("{ip} {other}\n"));
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stderr.contains("node1") && r.stderr.contains("host key changed"), "{}", r.stderr);
    assert!(r.stderr.contains(&*global.to_string_lossy()), "the global file is not named: {}", r.stderr);
    assert_eq!(std::fs::read_to_string(bed.known_hosts()).unwrap(), "", "a changed key was recorded");
    assert_eq!(swarm_state(&h.container), "inactive", "a refused up changed the host");
    let r = run("plan", &format!("@cert-authority * {ed}\n"));
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(std::fs::read_to_string(bed.known_hosts()).unwrap(), format!("{ip} {ed}\n"));
}

/// Mutual TLS on hosts given over SSH: the certificates reach every host through its engine,
/// every host's own dockerd pushes and pulls through `localhost:5000` (lab's relay on the host
/// presents the certificate), lab push speaks TLS, a client without the certificate is
/// refused from this machine, and `down` takes lab's certificates and relays away again.
#[test]
fn mutual_tls_on_ssh_hosts_refuses_clients_without_the_certificate_and_down_removes_it() {
    lab_tests::ensure_images();
    let lab = lab("sshtls");
    let bed = SshBed::new(&lab.cluster, &[("manager", "manager"), ("worker1", "worker")]);
    let hosts = bed.write_hosts(&bed.hosts_toml());
    let first = up(&lab, &bed, &hosts, &["--registry-tls", "mutual"]).ok("lab up --registry-tls mutual");
    assert!(!first.stderr.contains("anyone on the hosts' network"), "warned about an open registry: {}", first.stderr);
    assert!(lab.on(&["plan"]).ok("plan").stdout.contains("nothing to do"));
    let certs = ["/etc/docker/certs.d/localhost:5000/client.key", "/etc/docker/certs.d/127.0.0.1:5000/client.key"];
    for h in &bed.hosts {
        for f in certs {
            let st = node_exec(&h.container, &["stat", "-c", "%a", f]).ok(&format!("{f} on {}", h.name));
            assert_eq!(st.stdout.trim(), "600", "{f} on {}", h.name);
        }
    }
    // Each host's own engine: a push from the manager, a pull on the worker.
    let tag = format!("localhost:5000/e2e/ssh-tls-engine-{}:1", std::process::id());
    let manager = &bed.host("manager").container;
    node_exec(manager, &["docker", "tag", REGISTRY_IMAGE, &tag]).ok("docker tag on the manager");
    node_exec(manager, &["docker", "push", &tag]).ok("docker push from the manager's engine");
    node_exec(&bed.host("worker1").container, &["docker", "pull", &tag]).ok("docker pull on the worker's engine");
    // lab push speaks TLS with lab's certificate.
    let pushed = lab.on(&["push", REGISTRY_IMAGE, "--as", "e2e/ssh-tls:1"]).ok("lab push");
    assert_eq!(pushed.stdout.trim(), "localhost:5000/e2e/ssh-tls:1", "{}", pushed.all());
    // From this machine, no host serves a client without the certificate: not the
    // registry's TLS port, not the relays' port 5000.
    for h in &bed.hosts {
        let a = &h.address;
        for url in [
            format!("https://{a}:5443/v2/_catalog"),
            format!("http://{a}:5443/v2/_catalog"),
            format!("https://{a}:5000/v2/_catalog"),
            format!("http://{a}:5000/v2/_catalog"),
        ] {
            let r = std::process::Command::new("curl").args(["-s", "-k", "-m", "5", &url]).output().expect("curl");
            let body = String::from_utf8_lossy(&r.stdout);
            assert!(!body.contains("repositories"), "{url} served a client without the certificate: {body}");
        }
    }
    lab.on(&["down"]).ok("lab down");
    for h in &bed.hosts {
        for f in certs {
            let gone = node_exec(&h.container, &["test", "-e", f]);
            assert_ne!(gone.code, 0, "{f} is still on {} after down", h.name);
        }
        let relay = node_exec(&h.container, &["docker", "ps", "-aq", "--filter", "name=lab-registry-forwarder"]);
        assert_eq!(relay.stdout.trim(), "", "the relay is still on {} after down", h.name);
    }
}

/// Issue 18, item 11: a host dropped from the hosts file kept its relay and its client key,
/// and they kept working. lab cannot reach such a host any more (its address and login were
/// in that file), so `up` makes a new CA and issues the hosts that stay again from it: the
/// dropped host's relay, and its key used from this machine, are refused by the registry,
/// while the others pull as before.
#[test]
fn a_host_dropped_from_the_hosts_file_loses_the_registrys_trust() {
    lab_tests::ensure_images();
    let lab = lab("sshrv");
    let bed = SshBed::new(&lab.cluster, &[("manager", "manager"), ("worker1", "worker"), ("worker2", "worker")]);
    let hosts = bed.write_hosts(&bed.hosts_toml());
    up(&lab, &bed, &hosts, &["--registry-tls", "mutual"]).ok("lab up --registry-tls mutual");
    let tag = format!("localhost:5000/e2e/ssh-dropped-{}:1", std::process::id());
    let manager = &bed.host("manager").container;
    node_exec(manager, &["docker", "tag", REGISTRY_IMAGE, &tag]).ok("docker tag on the manager");
    node_exec(manager, &["docker", "push", &tag]).ok("docker push from the manager's engine");
    let pull = |host: &str| {
        let c = &bed.host(host).container;
        node_exec(c, &["docker", "image", "rm", "-f", &tag]);
        node_exec(c, &["timeout", "60", "docker", "pull", &tag])
    };
    pull("worker2").ok("docker pull on worker2 before it is dropped");
    let w2 = &bed.host("worker2").container;
    let saved = tempfile::tempdir().unwrap();
    for f in ["client.cert", "client.key"] {
        let body = node_exec(w2, &["cat", &format!("/etc/docker/certs.d/localhost:5000/{f}")]).ok(f).stdout;
        std::fs::write(saved.path().join(f), body).unwrap();
    }

    // worker2 leaves the hosts file.
    let kept: String = bed
        .hosts_toml()
        .split("\n[[hosts]]")
        .filter(|b| !b.contains("\"worker2\""))
        .collect::<Vec<_>>()
        .join("\n[[hosts]]");
    let hosts = bed.write_hosts(&kept);
    let hosts_arg = hosts.to_string_lossy().into_owned();
    let plan = lab.on(&["plan", "--hosts", &hosts_arg]).ok("plan without worker2");
    assert!(
        plan.stdout.contains("issue every certificate again from it (worker2 left the cluster)"),
        "{}",
        plan.stdout
    );
    up(&lab, &bed, &hosts, &[]).ok("lab up without worker2");
    assert!(lab.on(&["plan"]).ok("plan").stdout.contains("nothing to do"));
    // Its relay is still there, presenting a key the registry no longer trusts.
    let r = pull("worker2");
    assert_ne!(r.code, 0, "worker2, dropped, still pulls through its relay: {}", r.all());
    // Its key, from this machine, against the registry checked with the new CA.
    let tls_dir = lab.state_home().join("lab/clusters").join(&lab.cluster).join("tls");
    let resolve = format!("localhost:5443:{}", bed.host("worker1").address);
    let path = |p: std::path::PathBuf| p.to_string_lossy().into_owned();
    let (ca, cert, key) =
        (path(tls_dir.join("ca.crt")), path(saved.path().join("client.cert")), path(saved.path().join("client.key")));
    let curl = |cert: &str, key: &str| {
        let r = std::process::Command::new("curl")
            .args(["-sS", "-m", "5", "--cacert", &ca, "--cert", cert, "--key", key, "--resolve", &resolve])
            .arg("https://localhost:5443/v2/_catalog")
            .output()
            .expect("curl");
        lab_tests::Run::from(r)
    };
    let r = curl(&cert, &key);
    // With lab's own pair it answers: the refusal is about the key.
    let with = curl(&path(tls_dir.join("client.cert")), &path(tls_dir.join("client.key")));
    assert!(with.stdout.contains("repositories"), "lab's own pair: {}", with.all());
    // In TLS 1.3 the registry checks the client's certificate after curl's side of the
    // handshake is done: curl reads its alert, or, sending its request first, finds the
    // connection reset or already closed ("Transport endpoint is not connected", curl's exit
    // 55). A timeout or a refused connection would prove nothing, and is not taken.
    let refused = r.stderr.contains(" alert ")
        || r.stderr.contains("reset by peer")
        || (r.code == 55 && r.stderr.contains("not connected"));
    assert!(r.code != 0 && refused, "worker2's key was not refused by the registry: {}", r.all());
    // The hosts that stay pull as before.
    pull("worker1").ok("docker pull on worker1 after worker2 left");
}
