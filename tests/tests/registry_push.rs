//! End-to-end: `lab push`, `lab images` and `lab images gc` on the docker driver, with the
//! registry:2 and the registry:3 stand-ins. An image built on this machine's engine goes into
//! the cluster's registry and runs as a service on every worker; a deleted tag's space comes
//! back with `gc`, and the registry takes pushes again afterwards.

use std::time::Duration;

use lab_tests::{ensure_images, node_exec, wait_for, HostImage, REGISTRY3_IMAGE, REGISTRY_IMAGE};
use serde_json::Value;

fn lab(tag: &str) -> lab_tests::Lab {
    lab_tests::Lab::new(tag, env!("CARGO_BIN_EXE_lab-e2e"))
}

fn json(run: &lab_tests::Run) -> Value {
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", run.all()))
}

/// The registry service's environment, as JSON, read through the manager's engine.
fn registry_env(manager: &str) -> String {
    let format = "{{json .Spec.TaskTemplate.ContainerSpec.Env}}";
    node_exec(manager, &["docker", "service", "inspect", "registry_registry", "--format", format])
        .ok("inspect the registry service")
        .stdout
}

fn sent(run: &lab_tests::Run) -> u64 {
    json(run)["sent_bytes"].as_u64().unwrap_or_else(|| panic!("no sent_bytes:\n{}", run.stdout))
}

/// The seed's point without building on the manager, with registry:2: build here, `lab push`,
/// and Swarm runs the image on every worker; a second push and a new tag send nothing; `lab
/// images` lists what is there, `rm` deletes a tag and `gc` reclaims its space.
#[test]
fn an_image_built_here_is_pushed_once_and_runs_on_every_worker() {
    push_images_rm_gc(REGISTRY_IMAGE, "push", 2, &[]);
}

/// The same with the registry:3 stand-in (its configuration at /etc/distribution/config.yml).
#[test]
fn the_same_cycle_works_with_registry_3() {
    push_images_rm_gc(REGISTRY3_IMAGE, "push3", 1, &[]);
}

/// The same in mutual TLS, with registry:3: lab speaks TLS to it, and the workers' engines
/// pull through their relays.
#[test]
fn the_same_cycle_works_in_mutual_tls() {
    push_images_rm_gc(REGISTRY3_IMAGE, "pushtls", 1, &["--registry-tls", "mutual"]);
}

/// The whole cycle on a cluster of `workers` workers whose registry runs `registry`, with
/// `extra` flags for `up`.
fn push_images_rm_gc(registry: &str, tag: &str, workers: usize, extra: &[&str]) {
    ensure_images();
    let lab = lab(tag);
    let workers_flag = workers.to_string();
    let up_args: Vec<&str> = ["--workers", workers_flag.as_str()].into_iter().chain(extra.iter().copied()).collect();
    lab.up_with_registry(registry, &up_args).ok("lab up");
    let manager = lab.container("manager");
    registry_is_configured_as_lab_wants(&lab, registry);
    let name = format!("e2e-{tag}-{}:1", std::process::id());
    let image = HostImage::build(&name);
    let repo = name.split(':').next().unwrap().to_string();
    let reference = format!("localhost:5000/{name}");

    // A missing image is bad input, named, and nothing is sent for the other one.
    let missing = lab.on(&["push", &image.0, "e2e-no-such-image:1"]);
    assert_eq!(missing.code, 2, "{}", missing.all());
    assert!(
        missing.stderr.contains("e2e-no-such-image:1") && missing.stderr.contains("nothing was sent"),
        "{}",
        missing.stderr
    );
    let listed = json(&lab.on(&["images", "--output", "json"]).ok("lab images"));
    assert_eq!(listed, serde_json::json!([]), "a refused push left something in the registry");

    // The first push sends every blob and prints the reference to use.
    let first = lab.on(&["push", &image.0]).ok("lab push");
    assert_eq!(first.stdout.trim(), reference, "{}", first.all());
    assert!(first.stderr.contains("sent"), "{}", first.stderr);

    // Again: nothing is exported and nothing is sent; the engine's layer IDs were enough (issue
    // 20). A new name for it: nothing is sent either.
    let again = lab.on(&["push", &image.0, "--output", "json"]).ok("second lab push");
    assert_eq!(sent(&again), 0, "a second push sent layers again:\n{}", again.stdout);
    assert!(
        again.stderr.contains("every layer is in the registry already") && !again.stderr.contains("exporting"),
        "a second push exported the image again:\n{}",
        again.stderr
    );
    let renamed = lab.on(&["push", &image.0, "--as", "e2e-other:2", "--output", "json"]).ok("lab push --as");
    assert_eq!(sent(&renamed), 0, "a new name for a pushed image sent layers:\n{}", renamed.stdout);
    let renamed = json(&renamed);
    let fates: Vec<&str> =
        renamed["images"][0]["blobs"].as_array().unwrap().iter().map(|b| b["fate"].as_str().unwrap()).collect();
    assert!(fates.iter().all(|f| *f == "mounted"), "{fates:?}");

    // `lab images` lists both, with one digest.
    let listed = json(&lab.on(&["images", "--output", "json"]).ok("lab images"));
    let rows = listed.as_array().unwrap();
    let row =
        |r: &str| rows.iter().find(|x| x["repository"] == r).unwrap_or_else(|| panic!("{r} not listed: {listed:#}"));
    assert_eq!(row(&repo)["tag"], "1");
    assert_eq!(row("e2e-other")["digest"], row(&repo)["digest"]);
    assert!(row(&repo)["size"].as_u64().unwrap() > 1_000_000, "{listed:#}");
    let table = lab.on(&["images"]).ok("lab images (table)");
    assert!(table.stdout.starts_with("REPOSITORY") && table.stdout.contains(&repo), "{}", table.stdout);

    // Swarm runs it on every worker, from localhost:5000.
    node_exec(
        &manager,
        &["docker", "service", "create", "--detach", "--name", "e2e-pushed", "--mode", "global", &reference],
    )
    .ok("service create");
    wait_for("the pushed image running on every worker", Duration::from_secs(180), || {
        let r = node_exec(
            &manager,
            &["docker", "service", "ps", "e2e-pushed", "--format", "{{.Node}} {{.CurrentState}} {{.Error}}"],
        );
        let running = r.stdout.lines().filter(|l| l.contains(" Running ")).count();
        if running == workers {
            Ok(())
        } else {
            Err(r.all())
        }
    });
    for w in (1..=workers).map(|i| format!("worker{i}")) {
        let w = w.as_str();
        let ids = node_exec(
            &lab.container(w),
            &["docker", "ps", "-q", "--filter", "label=com.docker.swarm.service.name=e2e-pushed"],
        )
        .ok("docker ps");
        let id = ids.stdout.lines().next().unwrap_or_else(|| panic!("no task container on {w}")).to_string();
        let logs = node_exec(&lab.container(w), &["docker", "logs", &id]).ok("logs");
        assert!(logs.stdout.contains("pushed"), "{w} runs something else: {}", logs.all());
    }
    node_exec(&manager, &["docker", "service", "rm", "e2e-pushed"]).ok("service rm");

    // `rm` deletes a tag; a tag that is not there is bad input.
    lab.on(&["images", "rm", "e2e-other:2"]).ok("lab images rm");
    let listed = json(&lab.on(&["images", "--output", "json"]).ok("lab images"));
    assert!(!listed.as_array().unwrap().iter().any(|x| x["repository"] == "e2e-other"), "{listed:#}");
    let gone = lab.on(&["images", "rm", "e2e-other:2"]);
    assert_eq!(gone.code, 2, "{}", gone.all());
    assert!(gone.stderr.contains("e2e-other:2"), "{}", gone.stderr);

    // `gc` reclaims the space of a deleted tag whose layer no other image has.
    let unique_name = format!("e2e-{tag}-unique-{}:1", std::process::id());
    let unique = HostImage::with_script(&unique_name, "echo pushed > /marker; head -c 3000000 /dev/urandom > /unique");
    let pushed = lab.on(&["push", &unique.0, "--output", "json"]).ok("lab push (unique layer)");
    assert!(sent(&pushed) > 3_000_000, "{}", pushed.stdout);
    lab.on(&["images", "rm", &unique_name]).ok("lab images rm (unique layer)");
    let gc = lab.on(&["images", "gc", "--output", "json"]).ok("lab images gc");
    // What gc said, in the test's output (`--success-output`), for whoever looks.
    eprintln!("lab images gc:\n{}", gc.all());
    // What gc said, in the test's output (`--success-output`), for whoever looks.
    eprintln!("lab images gc:\n{}", gc.all());
    let done = json(&gc);
    let reclaimed = done["reclaimed_bytes"].as_u64().unwrap_or_else(|| panic!("no reclaimed_bytes:\n{}", gc.all()));
    assert!(reclaimed >= 2_900_000, "gc reclaimed only {reclaimed} bytes:\n{}", gc.all());
    assert!(
        done["before_bytes"].as_u64().unwrap() > done["after_bytes"].as_u64().unwrap()
            && done["after_bytes"].as_u64().unwrap() > 1_000_000,
        "{done:#}"
    );
    assert_eq!(done["node"], if workers == 0 { "manager" } else { "worker1" }, "{done:#}");
    assert!(gc.stderr.contains("read-only"), "gc said nothing of the read-only registry:\n{}", gc.stderr);
    // Writable again, and lab's spec again: `lab plan` has nothing to do for the registry.
    registry_is_configured_as_lab_wants(&lab, registry);

    // The image that stayed still pulls and runs, on a node that never had it.
    node_exec(&manager, &["docker", "pull", &reference]).ok("pull the remaining image after gc");
    let ran = node_exec(&manager, &["docker", "run", "--rm", "--entrypoint", "cat", &reference, "/marker"])
        .ok("run the remaining image after gc");
    assert_eq!(ran.stdout.trim(), "pushed", "{}", ran.all());
    // The registry takes pushes again, and knows the collected blobs are gone: they are sent.
    let again = lab.on(&["push", &unique.0, "--output", "json"]).ok("lab push after gc");
    assert!(sent(&again) > 3_000_000, "the collected layer was not sent again:\n{}", again.stdout);
    let listed = json(&lab.on(&["images", "--output", "json"]).ok("lab images after gc"));
    let unique_repo = unique_name.split(':').next().unwrap();
    assert!(listed.as_array().unwrap().iter().any(|x| x["repository"] == unique_repo), "{listed:#}");

    // An interrupted gc leaves the registry read-only: pushes fail, naming the node, and the
    // next `lab up` makes it writable.
    node_exec(
        &manager,
        &[
            "docker",
            "service",
            "update",
            "--detach",
            "--env-add",
            r#"REGISTRY_STORAGE_MAINTENANCE_READONLY={"enabled":true}"#,
            "registry_registry",
        ],
    )
    .ok("make the registry read-only behind lab's back");
    let plan = lab.on(&["plan"]).ok("lab plan");
    assert!(plan.stdout.contains("deploy stack registry"), "a read-only registry counts as deployed:\n{}", plan.all());
    let status = lab.on(&["status"]).ok("lab status");
    assert!(
        status.stdout.contains("registry: read-only"),
        "lab status does not say it is read-only:\n{}",
        status.all()
    );
    let other = HostImage::build(&format!("e2e-{tag}-late-{}:1", std::process::id()));
    let refused = wait_for("pushes refused by the read-only registry", Duration::from_secs(90), || {
        // While the task restarts, the push fails for that reason; then for the read-only one
        // (distribution answers 405 UNSUPPORTED to every write).
        let r = lab.on(&["push", &other.0]);
        if r.code == 1 && r.stderr.contains("405") {
            Ok(r)
        } else {
            Err(r.all())
        }
    });
    let node = if workers == 0 { "manager" } else { "worker1" };
    assert!(refused.stderr.contains(&format!("{node}: ")), "{}", refused.stderr);
    // lab check fails on it too (every node still answers {}), saying what makes it writable.
    let check = lab.on(&["check"]);
    assert_eq!(check.code, 1, "lab check passes a read-only registry:\n{}", check.all());
    assert!(check.stdout.contains("read-only") && check.stdout.contains("lab up"), "{}", check.all());
    lab.up_with_registry(registry, &up_args).ok("lab up after an interrupted gc");
    lab.on(&["check"]).ok("lab check once the registry is writable");
    let status = lab.on(&["status", "--output", "json"]).ok("lab status");
    assert_eq!(json(&status)["registry"]["read_only"], false, "{}", status.stdout);
    registry_is_configured_as_lab_wants(&lab, registry);
    lab.on(&["push", &other.0]).ok("lab push once lab up made the registry writable");
    drop(image);
}

/// The registry service runs `registry` with what lab relies on in force, checked from outside
/// lab: the image's own program (naming its own configuration file), deletes enabled, no
/// tracing export, not read-only, the HTTP secret in the registry process's environment, the
/// data on the `registry_data` volume.
fn registry_is_configured_as_lab_wants(lab: &lab_tests::Lab, registry: &str) {
    let manager = lab.container("manager");
    let spec = node_exec(
        &manager,
        &["docker", "service", "inspect", "registry_registry", "--format", "{{json .Spec.TaskTemplate.ContainerSpec}}"],
    )
    .ok("inspect the registry service");
    let cs: Value = serde_json::from_str(&spec.stdout).unwrap_or_else(|e| panic!("{e}: {}", spec.stdout));
    assert_eq!(cs["Image"].as_str().unwrap().split('@').next().unwrap(), registry, "{cs:#}");
    let config =
        if registry == REGISTRY3_IMAGE { "/etc/distribution/config.yml" } else { "/etc/docker/registry/config.yml" };
    assert_eq!(cs["Args"], serde_json::json!(["/entrypoint.sh", config]), "{cs:#}");
    let env: Vec<&str> = cs["Env"].as_array().unwrap().iter().map(|e| e.as_str().unwrap()).collect();
    for want in ["REGISTRY_STORAGE_DELETE_ENABLED=true", "OTEL_TRACES_EXPORTER=none"] {
        assert!(env.contains(&want), "{env:?}");
    }
    assert!(!env.iter().any(|e| e.starts_with("REGISTRY_STORAGE_MAINTENANCE_READONLY")), "{env:?}");
    // The running task: its node's engine shows the volume, and the registry process (PID 1)
    // has the secret (only whether it is there is printed, never its value).
    let plan = lab.on(&["plan", "--output", "json"]).ok("lab plan");
    assert!(
        !plan.stdout.contains("deploy stack registry"),
        "lab's own registry spec is not converged:\n{}",
        plan.stdout
    );
    let node = wait_for("the registry's task running", Duration::from_secs(120), || {
        let r = node_exec(
            &manager,
            &[
                "docker",
                "service",
                "ps",
                "registry_registry",
                "--filter",
                "desired-state=running",
                "--format",
                "{{.Node}} {{.CurrentState}}",
            ],
        );
        match r.stdout.lines().find(|l| l.contains(" Running ")) {
            Some(l) => Ok(l.split_whitespace().next().unwrap().to_string()),
            None => Err(r.all()),
        }
    });
    let container = lab.container(&node);
    let id = node_exec(
        &container,
        &["docker", "ps", "-q", "--filter", "label=com.docker.swarm.service.name=registry_registry"],
    )
    .ok("find the registry's task container");
    let id = id.stdout.lines().next().unwrap_or_else(|| panic!("no registry task container on {node}")).to_string();
    let mounts = node_exec(
        &container,
        &["docker", "inspect", "--format", "{{range .Mounts}}{{.Name}} {{.Destination}};{{end}}", &id],
    )
    .ok("inspect the registry's mounts");
    assert!(mounts.stdout.contains("registry_data /var/lib/registry"), "{}", mounts.stdout);
    node_exec(
        &container,
        &["docker", "exec", &id, "sh", "-c", "tr '\\0' '\\n' < /proc/1/environ | grep -q '^REGISTRY_HTTP_SECRET=.'"],
    )
    .ok("the registry process has its HTTP secret");
}

/// Two images sharing a base, pushed in one call (issue 20 item 3): each blob of the base is
/// sent once, for the first image, and mounted for the second; the bytes sent are the base's
/// and the two small layers', not the base's twice.
#[test]
fn layers_two_images_share_are_sent_once_in_one_push() {
    ensure_images();
    let lab = lab("pushshared");
    lab.up(&["--workers", "0"]).ok("lab up");
    let pid = std::process::id();
    let base = HostImage::with_script(
        &format!("e2e-pushshared-base-{pid}:1"),
        "echo base > /marker; head -c 8000000 /dev/urandom > /base",
    );
    let a = HostImage::on_top(&format!("e2e-pushshared-a-{pid}:1"), &base.0, "echo a > /marker");
    let b = HostImage::on_top(&format!("e2e-pushshared-b-{pid}:1"), &base.0, "echo b > /marker");
    let run = lab.on(&["push", &a.0, &b.0, "--output", "json"]).ok("lab push a b");
    let out = json(&run);
    let images = out["images"].as_array().unwrap_or_else(|| panic!("no images:\n{}", run.stdout));
    assert_eq!(images.len(), 2, "{}", run.stdout);
    let blobs = |i: usize| -> Vec<(String, u64, String)> {
        images[i]["blobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| {
                (
                    b["digest"].as_str().unwrap().to_string(),
                    b["size"].as_u64().unwrap(),
                    b["fate"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let (first, second) = (blobs(0), blobs(1));
    // Every blob the two share: sent for the first, not for the second.
    let shared: Vec<_> = second.iter().filter(|s| first.iter().any(|f| f.0 == s.0)).collect();
    assert!(shared.len() >= 2, "the images share no layers:\n{}", run.stdout);
    assert!(shared.iter().any(|s| s.1 > 8_000_000), "the 8 MB base layer is not shared:\n{}", run.stdout);
    for s in &shared {
        assert_ne!(s.2, "sent", "{} was sent again for the second image:\n{}", s.0, run.stdout);
    }
    // The bytes sent are the distinct blobs' sizes, once each.
    let mut distinct: Vec<_> = first.iter().chain(second.iter()).map(|b| (b.0.clone(), b.1)).collect();
    distinct.sort();
    distinct.dedup();
    let once: u64 = distinct.iter().map(|b| b.1).sum();
    assert_eq!(sent(&run), once, "sent_bytes is not each blob once:\n{}", run.stdout);
    // Both run from the registry.
    let manager = lab.container("manager");
    for (image, marker) in [(&a, "a"), (&b, "b")] {
        let reference = format!("localhost:5000/{}", image.0);
        node_exec(&manager, &["docker", "pull", &reference]).ok("pull a pushed image");
        let ran = node_exec(&manager, &["docker", "run", "--rm", "--entrypoint", "cat", &reference, "/marker"])
            .ok("run a pushed image");
        assert_eq!(ran.stdout.trim(), marker, "{}", ran.all());
    }
}

/// A registry whose task does not run: `lab push` exits 1 naming the node and the cause.
#[test]
fn push_to_a_registry_that_does_not_run_names_the_cause() {
    ensure_images();
    let lab = lab("pushdown");
    lab.up(&["--workers", "0"]).ok("lab up");
    let manager = lab.container("manager");
    node_exec(&manager, &["docker", "service", "scale", "-d", "registry_registry=0"]).ok("scale the registry to 0");
    wait_for("the registry's task gone", Duration::from_secs(60), || {
        let r = node_exec(
            &manager,
            &["docker", "ps", "-q", "--filter", "label=com.docker.swarm.service.name=registry_registry"],
        );
        if r.stdout.trim().is_empty() {
            Ok(())
        } else {
            Err(r.all())
        }
    });
    let name = format!("e2e-pushdown-{}:1", std::process::id());
    let _image = HostImage::build(&name);
    let r = lab.on(&["push", &name]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stderr.contains("manager: find the cluster's registry"), "{}", r.stderr);
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    // `gc` too, and it changes nothing (the service is not made read-only).
    let r = lab.on(&["images", "gc"]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stderr.contains("manager: find the cluster's registry"), "{}", r.stderr);
    let env = registry_env(&manager);
    assert!(!env.contains("READONLY"), "{env}");
}

/// A collection that fails is exit 1 naming the registry's node and saying what the tool said,
/// and the registry is writable again afterwards.
#[test]
fn a_failing_gc_is_named_and_leaves_the_registry_writable() {
    ensure_images();
    let lab = lab("gcfail");
    lab.up(&["--workers", "0"]).ok("lab up");
    let manager = lab.container("manager");
    let name = format!("e2e-gcfail-{}:1", std::process::id());
    let image = HostImage::build(&name);
    lab.on(&["push", &image.0]).ok("lab push");
    // A manifest revision that names a layer: the collection cannot read it as a manifest
    // and stops.
    let repo = name.split(':').next().unwrap();
    let task = node_exec(
        &manager,
        &["docker", "ps", "-q", "--filter", "label=com.docker.swarm.service.name=registry_registry"],
    )
    .ok("find the registry's task");
    let task = task.stdout.trim().to_string();
    let script = r#"blob=$(ls -S /var/lib/registry/docker/registry/v2/blobs/sha256/*/*/data | head -n 1)
hex=$(basename "$(dirname "$blob")")
dir="/var/lib/registry/docker/registry/v2/repositories/$1/_manifests/revisions/sha256/$hex"
mkdir -p "$dir" && printf 'sha256:%s' "$hex" > "$dir/link" && printf 'sha256:%s' "$hex""#;
    let fake = node_exec(&manager, &["docker", "exec", &task, "sh", "-c", script, "sh", repo])
        .ok("make a broken revision")
        .stdout;
    assert!(fake.starts_with("sha256:") && fake.len() == 71, "{fake}");
    let r = lab.on(&["images", "gc"]);
    eprintln!("lab images gc:\n{}", r.all());
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stderr.contains("manager: run registry garbage-collect"), "{}", r.stderr);
    assert!(r.stderr.contains(&fake), "the tool's own words are missing:\n{}", r.stderr);
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    // Writable again: lab's spec, and a push goes through.
    let env = registry_env(&manager);
    assert!(!env.contains("READONLY"), "{env}");
    lab.on(&["push", &image.0, "--as", "e2e-gcfail-after:1"]).ok("lab push after a failed gc");
}

/// `lab images gc` stopped by SIGTERM (or Ctrl-C) while the registry is read-only makes it
/// writable again before it exits.
#[test]
fn an_interrupted_gc_makes_the_registry_writable_before_it_stops() {
    let out = interrupt_gc("gcint", "TERM", false);
    assert!(out.stderr.contains("interrupted"), "{}", out.stderr);
}

/// Issue 18, item 3: a closed terminal (SIGHUP, and nobody left to read what lab prints) in the
/// middle of `lab images gc` on a registry with garbage leaves the registry writable: lab
/// restores it, exits 1, and the registry takes a push.
#[test]
fn a_hangup_during_gc_leaves_the_registry_writable() {
    interrupt_gc("gchup", "HUP", true);
}

/// Ctrl-C (SIGINT) too.
#[test]
fn a_ctrl_c_during_gc_leaves_the_registry_writable() {
    let out = interrupt_gc("gcctrlc", "INT", false);
    assert!(out.stderr.contains("interrupted"), "{}", out.stderr);
}

/// Starts `lab images gc` on a one-node cluster whose registry has garbage (a deleted tag),
/// sends it `signal` while it waits for the read-only task (with `hangup`, after closing the
/// pipes its output goes to, as a closed terminal does), and checks that it exits 1 with the
/// registry writable and taking pushes. Returns what it printed (nothing, with `hangup`).
fn interrupt_gc(tag: &str, signal: &str, hangup: bool) -> lab_tests::Run {
    ensure_images();
    let lab = lab(tag);
    lab.up(&["--workers", "0"]).ok("lab up");
    let manager = lab.container("manager");
    let env = || registry_env(&manager);
    let garbage = format!("e2e-{tag}-garbage-{}:1", std::process::id());
    let garbage_image = HostImage::with_script(&garbage, "head -c 1000000 /dev/urandom > /garbage");
    lab.on(&["push", &garbage_image.0]).ok("lab push (to delete)");
    lab.on(&["images", "rm", &garbage]).ok("lab images rm (garbage for gc)");
    let mut gc = lab
        .command(&["images", "gc", "--cluster", &lab.cluster])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start lab images gc");
    // While it waits for the read-only task: stop it.
    wait_for("lab images gc making the registry read-only", Duration::from_secs(60), || {
        let e = env();
        if e.contains("READONLY") {
            Ok(())
        } else {
            Err(e)
        }
    });
    if hangup {
        // The terminal is gone: whatever lab writes from now on meets a closed pipe.
        drop(gc.stdout.take());
        drop(gc.stderr.take());
    }
    let pid = gc.id().to_string();
    std::process::Command::new("kill").args([&format!("-{signal}"), &pid]).status().expect("kill");
    wait_for(&format!("lab images gc to exit after SIG{signal}"), Duration::from_secs(180), || match gc.try_wait() {
        Ok(Some(_)) => Ok(()),
        other => Err(format!("{other:?}")),
    });
    let out = lab_tests::Run::from(gc.wait_with_output().expect("lab images gc's output"));
    // 1, not death by the signal (-1 here) nor a panic on the closed pipe (101).
    assert_eq!(out.code, 1, "lab images gc ended otherwise after SIG{signal}:\n{}", out.all());
    assert!(!env().contains("READONLY"), "the registry stayed read-only after SIG{signal}: {}", env());
    let name = format!("e2e-{tag}-{}:1", std::process::id());
    let image = HostImage::build(&name);
    lab.on(&["push", &image.0]).ok(&format!("lab push after SIG{signal} during gc"));
    out
}

/// Issue 18, item 2: `lab images rm NAME:TAG` deletes that tag alone, also when other tags
/// name the same manifest; `--all-tags` deletes them all; several tags go in one call, and one
/// that is not there is bad input with nothing deleted.
#[test]
fn images_rm_deletes_only_the_tag_it_names() {
    ensure_images();
    let lab = lab("rmtag");
    lab.up(&["--workers", "0"]).ok("lab up");
    let manager = lab.container("manager");
    let repo = format!("e2e-rmtag-{}", std::process::id());
    let image = HostImage::build(&format!("{repo}:1"));
    for t in ["1", "latest", "2", "3", "4"] {
        lab.on(&["push", &image.0, "--as", &format!("{repo}:{t}")]).ok("lab push");
    }
    let tags = || -> Vec<(String, String)> {
        let listed = json(&lab.on(&["images", "--output", "json"]).ok("lab images"));
        let mut t: Vec<(String, String)> = listed
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["repository"] == repo.as_str())
            .map(|r| (r["tag"].as_str().unwrap().to_string(), r["digest"].as_str().unwrap().to_string()))
            .collect();
        t.sort();
        t
    };
    let before = tags();
    assert_eq!(before.len(), 5, "{before:?}");
    let digest = before[0].1.clone();
    assert!(before.iter().all(|(_, d)| *d == digest), "one image, one digest: {before:?}");

    // One tag goes; the others stay, on the same digest, and still pull.
    let rm = lab.on(&["images", "rm", &format!("{repo}:1")]).ok("lab images rm");
    assert!(rm.stdout.contains(&format!("deleted {repo}:1")), "{}", rm.all());
    let names = |t: &[(String, String)]| t.iter().map(|(t, _)| t.clone()).collect::<Vec<_>>();
    assert_eq!(names(&tags()), ["2", "3", "4", "latest"], "rm of one tag took others with it");
    assert!(tags().iter().all(|(_, d)| *d == digest), "{:?}", tags());
    node_exec(&manager, &["docker", "pull", &format!("localhost:5000/{repo}:latest")]).ok("pull a tag that stayed");

    // A tag that is not there, among others: bad input naming it, and nothing deleted.
    let bad = lab.on(&["images", "rm", &format!("{repo}:2"), &format!("{repo}:nope")]);
    assert_eq!(bad.code, 2, "{}", bad.all());
    assert!(bad.stderr.contains(&format!("{repo}:nope")), "{}", bad.stderr);
    assert_eq!(names(&tags()), ["2", "3", "4", "latest"], "a refused rm deleted something");

    // Several in one call.
    let rm = lab.on(&["images", "rm", &format!("{repo}:2"), &format!("{repo}:3"), "--output", "json"]).ok("rm two");
    let out = json(&rm);
    let deleted: Vec<String> = out["deleted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| format!("{}:{}", d["repository"].as_str().unwrap(), d["tag"].as_str().unwrap()))
        .collect();
    assert_eq!(deleted, [format!("{repo}:2"), format!("{repo}:3")], "{}", rm.stdout);
    assert_eq!(names(&tags()), ["4", "latest"]);

    // --all-tags: the manifest and every tag naming it.
    let rm = lab.on(&["images", "rm", "--all-tags", &format!("{repo}:4")]).ok("lab images rm --all-tags");
    assert!(rm.stdout.contains(&format!("{repo}:latest")), "--all-tags does not say what went:\n{}", rm.all());
    assert_eq!(tags(), [], "--all-tags left tags");
    let gone = node_exec(&manager, &["docker", "pull", &format!("localhost:5000/{repo}:latest")]);
    assert_ne!(gone.code, 0, "{}", gone.all());
}

/// Issue 18, item 20: skopeo reaches the registry the way `lab registry` prints it, in open
/// mode (the registry node's address, plain HTTP).
#[test]
fn skopeo_reaches_the_registry_the_way_lab_registry_prints_it() {
    skopeo_cycle("skopeo", &[]);
}

/// The same in mutual TLS: the CA and client certificate `lab registry` names, through `lab
/// registry forward` (skopeo cannot connect to one address while checking the name
/// localhost); without the certificate, nothing.
#[test]
fn skopeo_reaches_a_mutual_tls_registry_the_way_lab_registry_prints_it() {
    skopeo_cycle("skopeotls", &["--registry-tls", "mutual"]);
}

/// Pushes an image, reads `lab registry`, and runs `skopeo list-tags`, `inspect` and `copy`
/// against the registry from what it printed. Skipped, saying so, where skopeo is not installed
/// (scripts/test.sh installs it).
fn skopeo_cycle(tag: &str, extra: &[&str]) {
    if std::process::Command::new("skopeo").arg("--version").output().is_err() {
        eprintln!("skipped: skopeo is not installed (scripts/test.sh installs it)");
        return;
    }
    ensure_images();
    let lab = lab(tag);
    let up_args: Vec<&str> = ["--workers", "0"].into_iter().chain(extra.iter().copied()).collect();
    lab.up(&up_args).ok("lab up");
    let manager = lab.container("manager");
    let repo = format!("e2e-{tag}-{}", std::process::id());
    let image = HostImage::build(&format!("{repo}:1"));
    lab.on(&["push", &image.0]).ok("lab push");
    let digest =
        json(&lab.on(&["images", "--output", "json"]).ok("lab images"))[0]["digest"].as_str().unwrap().to_string();

    let shown = lab.on(&["registry"]).ok("lab registry");
    let way = json(&lab.on(&["registry", "--output", "json"]).ok("lab registry --output json"));
    let url = way["url"].as_str().unwrap_or_else(|| panic!("no url: {way:#}")).to_string();
    assert!(shown.stdout.contains(&url), "the table lacks the URL:\n{}", shown.all());
    let mutual = !extra.is_empty();
    // What skopeo is given: the registry's host:port and the flags for its TLS.
    let mut forward = None;
    let (base, tls): (String, Vec<String>) = if !mutual {
        let address = way["address"].as_str().unwrap().to_string();
        assert_eq!(url, format!("http://{address}"), "{way:#}");
        assert_eq!(way["tls"], "open");
        (address, vec!["--tls-verify=false".into()])
    } else {
        assert_eq!(url, "https://localhost:5443", "{way:#}");
        assert_eq!(way["tls"], "mutual");
        let files = &way["files"];
        for k in ["ca", "cert", "key"] {
            let p = files[k].as_str().unwrap_or_else(|| panic!("no {k}: {way:#}"));
            assert!(std::path::Path::new(p).is_file(), "{k}: {p} is not a file");
            assert!(shown.stdout.contains(p), "the table lacks the {k} path:\n{}", shown.all());
        }
        // curl, as the documentation says: the address, checking the name localhost.
        let address = way["address"].as_str().unwrap();
        let host = address.rsplit_once(':').unwrap().0;
        let catalog = std::process::Command::new("curl")
            .args(["-sS", "--max-time", "20", "--cacert", files["ca"].as_str().unwrap()])
            .args(["--cert", files["cert"].as_str().unwrap(), "--key", files["key"].as_str().unwrap()])
            .args(["--resolve", &format!("localhost:5443:{host}"), "https://localhost:5443/v2/_catalog"])
            .output()
            .expect("run curl");
        let catalog = lab_tests::Run::from(catalog);
        assert!(catalog.code == 0 && catalog.stdout.contains(&repo), "curl --resolve: {}", catalog.all());
        let cert_dir = files["cert_dir"].as_str().unwrap().to_string();
        let mut names: Vec<String> = std::fs::read_dir(&cert_dir)
            .unwrap_or_else(|e| panic!("{cert_dir}: {e}"))
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["ca.crt", "client.cert", "client.key"], "{cert_dir}");
        let mut child = lab
            .command(&["registry", "forward", "--listen", "127.0.0.1:0", "--cluster", &lab.cluster])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start lab registry forward");
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line)
            .expect("read the forward's URL");
        let base = line.trim().strip_prefix("https://").unwrap_or_else(|| panic!("not a URL: {line:?}")).to_string();
        assert!(base.starts_with("localhost:"), "{line}");
        forward = Some(child);
        // Without the cluster's certificates, skopeo gets nothing.
        let refused =
            skopeo(&["list-tags", &format!("docker://{base}/{repo}")]).expect_err("skopeo without certificates");
        assert!(refused.contains("certificate"), "{refused}");
        (base, vec![format!("--cert-dir={cert_dir}")])
    };
    let with = |args: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        v.splice(1..1, tls.iter().cloned());
        v
    };
    let run = |args: Vec<String>| {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        skopeo(&a).unwrap_or_else(|e| panic!("skopeo {args:?}: {e}"))
    };
    let tags: Value = serde_json::from_str(&run(with(&["list-tags", &format!("docker://{base}/{repo}")]))).unwrap();
    assert_eq!(tags["Tags"], serde_json::json!(["1"]), "{tags:#}");
    let inspected: Value =
        serde_json::from_str(&run(with(&["inspect", &format!("docker://{base}/{repo}:1")]))).unwrap();
    assert_eq!(inspected["Digest"], digest.as_str(), "{inspected:#}");
    let src_tls: Vec<String> = tls.iter().map(|f| f.replacen("--", "--src-", 1)).collect();
    let dest_tls: Vec<String> = tls.iter().map(|f| f.replacen("--", "--dest-", 1)).collect();
    let mut copy = vec!["--insecure-policy".to_string(), "copy".into()];
    copy.extend(src_tls.into_iter().chain(dest_tls));
    copy.extend([format!("docker://{base}/{repo}:1"), format!("docker://{base}/{repo}:copied")]);
    run(copy);
    // The copy is in the registry, and the nodes pull it.
    let listed = json(&lab.on(&["images", "--output", "json"]).ok("lab images"));
    assert!(
        listed.as_array().unwrap().iter().any(|r| r["repository"] == repo.as_str() && r["tag"] == "copied"),
        "{listed:#}"
    );
    node_exec(&manager, &["docker", "pull", &format!("localhost:5000/{repo}:copied")]).ok("pull skopeo's copy");
    if let Some(mut child) = forward {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Runs skopeo; its stdout, or what it said when it failed.
fn skopeo(args: &[&str]) -> Result<String, String> {
    let out = std::process::Command::new("skopeo").args(args).output().expect("run skopeo");
    let run = lab_tests::Run::from(out);
    if run.code == 0 {
        Ok(run.stdout)
    } else {
        Err(run.all())
    }
}
