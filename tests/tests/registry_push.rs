//! End-to-end: `lab push` and `lab images` on the docker driver. An image built on this
//! machine's engine goes into the cluster's registry and runs as a service on every worker.

use std::time::Duration;

use lab_tests::{ensure_images, node_exec, wait_for, HostImage};
use serde_json::Value;

fn lab(tag: &str) -> lab_tests::Lab {
    lab_tests::Lab::new(tag, env!("CARGO_BIN_EXE_lab-e2e"))
}

fn json(run: &lab_tests::Run) -> Value {
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", run.all()))
}

fn sent(run: &lab_tests::Run) -> u64 {
    json(run)["sent_bytes"].as_u64().unwrap_or_else(|| panic!("no sent_bytes:\n{}", run.stdout))
}

/// The seed's point without building on the manager: build here, `lab push`, and Swarm runs
/// the image on every worker; a second push and a new tag send nothing; `lab images` lists
/// what is there and `rm` deletes a tag.
#[test]
fn an_image_built_here_is_pushed_once_and_runs_on_every_worker() {
    ensure_images();
    let lab = lab("push");
    lab.up(&["--workers", "2"]).ok("lab up");
    let name = format!("e2e-push-{}:1", std::process::id());
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

    // Again: nothing is sent. A new name for it: nothing is sent either.
    let again = lab.on(&["push", &image.0, "--output", "json"]).ok("second lab push");
    assert_eq!(sent(&again), 0, "a second push sent layers again:\n{}", again.stdout);
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
    let manager = lab.container("manager");
    node_exec(
        &manager,
        &["docker", "service", "create", "--detach", "--name", "e2e-pushed", "--mode", "global", &reference],
    )
    .ok("service create");
    wait_for("the pushed image running on both workers", Duration::from_secs(180), || {
        let r = node_exec(
            &manager,
            &["docker", "service", "ps", "e2e-pushed", "--format", "{{.Node}} {{.CurrentState}} {{.Error}}"],
        );
        let running = r.stdout.lines().filter(|l| l.contains(" Running ")).count();
        if running == 2 {
            Ok(())
        } else {
            Err(r.all())
        }
    });
    for w in ["worker1", "worker2"] {
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
    drop(image);
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
}
