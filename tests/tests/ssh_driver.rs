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

fn swarm_state(container: &str) -> String {
    node_exec(container, &["docker", "info", "--format", "{{.Swarm.LocalNodeState}}"]).stdout.trim().to_string()
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
    let r = docker(&["save", REGISTRY_IMAGE, "-o", &bed.path("reg.tar").to_string_lossy()]);
    assert_eq!(r.code, 0, "{}", r.all());
    for h in &bed.hosts {
        docker(&["cp", &bed.path("reg.tar").to_string_lossy(), &format!("{}:/tmp/reg.tar", h.container)])
            .ok("copy image");
        node_exec(&h.container, &["docker", "load", "-q", "-i", "/tmp/reg.tar"]).ok("load image");
        node_exec(
            &h.container,
            &["docker", "run", "-d", "--name", "owners-own", "--entrypoint", "sleep", REGISTRY_IMAGE, "3600"],
        )
        .ok("start an unrelated container");
    }

    let first = up(&lab, &bed, &hosts, &[]).ok("lab up --driver ssh");
    assert!(first.stderr.contains("registry mode:"), "{}", first.stderr);

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
    assert_eq!(check.stdout.matches("   ok   ").count(), 6, "{}", check.stdout);
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
    assert_eq!(r.code, 1, "{}", r.all());
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
