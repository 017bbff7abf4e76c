//! End-to-end: what a cluster was made with is kept by later commands given only
//! `--cluster`, and no log level makes lab print a secret (issue 7, items 3 and 6).

use lab_tests::{ensure_images, node_exec, Lab};

fn lab(tag: &str) -> Lab {
    Lab::new(tag, env!("CARGO_BIN_EXE_lab-e2e"))
}

/// The swarm labels of `node`, as the manager sees them, as `{"k":"v"}` JSON.
fn labels(lab: &Lab, node: &str) -> String {
    node_exec(&lab.container("manager"), &["docker", "node", "inspect", "--format", "{{json .Spec.Labels}}", node])
        .ok("docker node inspect")
        .stdout
}

/// Issue 7, item 3: `up --worker-label tier=gpu`, then `plan` and `up` with only
/// `--cluster`: nothing to do, and the workers keep the label.
#[test]
fn plain_up_keeps_labels_given_once() {
    ensure_images();
    let lab = lab("keep");
    lab.up(&["--worker-label", "tier=gpu", "--workers", "1"]).ok("lab up --worker-label tier=gpu");
    assert!(labels(&lab, "worker1").contains("\"tier\":\"gpu\""), "{}", labels(&lab, "worker1"));

    let plan = lab.on(&["plan"]).ok("lab plan --cluster");
    assert!(plan.stdout.contains("nothing to do"), "a plain plan wants changes:\n{}", plan.stdout);
    let up = lab.on(&["up"]).ok("lab up --cluster");
    assert!(up.stderr.contains("nothing to change"), "a plain up changed things:\n{}", up.stderr);
    assert!(labels(&lab, "worker1").contains("\"tier\":\"gpu\""), "label dropped: {}", labels(&lab, "worker1"));

    // Issue 18, item 7: a lab.toml that does not name the cluster cannot change how it is
    // reached or secured: its registry TLS and engine are ignored, each with a warning, while
    // a flag is explicit and `plan` shows the change it would make.
    std::fs::write(
        lab.cwd().join("lab.toml"),
        "[registry]\ntls = \"mutual\"\n[drivers.docker]\nhost = \"unix:///nowhere/docker.sock\"\n",
    )
    .unwrap();
    let plan = lab.on(&["plan"]).ok("lab plan with an unnamed lab.toml");
    assert!(plan.stdout.contains("nothing to do"), "an unnamed lab.toml changed the plan:\n{}", plan.all());
    for key in ["registry.tls", "drivers.docker.host"] {
        assert!(plan.stderr.contains(&format!("lab: warning: lab.toml: ignored {key}: ")), "{key}: {}", plan.stderr);
    }
    let plan = lab.on(&["plan", "--registry-tls", "mutual"]).ok("lab plan --registry-tls mutual");
    assert!(plan.stdout.contains(r#"registry.tls: "open" -> "mutual""#), "{}", plan.all());
    std::fs::remove_file(lab.cwd().join("lab.toml")).unwrap();

    // A flag of another driver, or another driver, is refused rather than ignored.
    let bad = lab.on(&["plan", "--hosts", "h.toml"]);
    assert_eq!(bad.code, 2, "{}", bad.all());
    assert!(bad.stderr.contains("--hosts") && bad.stderr.contains("docker"), "{}", bad.stderr);
    let bad = lab.on(&["up", "--driver", "ssh"]);
    assert_eq!(bad.code, 2, "{}", bad.all());
    assert!(bad.stderr.contains("--driver") && bad.stderr.contains("\"docker\""), "{}", bad.stderr);
}

/// Every secret-looking string value in the cluster's state file (join tokens, the registry
/// secret), the registry's `REGISTRY_HTTP_SECRET` if its service spec carries one, and the
/// registry's HTTP secret itself, as its task reads it. The last is always there, so the
/// search for secrets in lab's output always has something to look for.
fn secrets(lab: &Lab) -> Vec<String> {
    fn walk(v: &serde_json::Value, key: &str, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => m.iter().for_each(|(k, v)| walk(v, k, out)),
            serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, key, out)),
            serde_json::Value::String(s) => {
                let k = key.to_lowercase();
                if (k.contains("secret") || k.contains("token") || k.contains("key")) && s.len() >= 16 {
                    out.push(s.clone());
                }
            }
            _ => {}
        }
    }
    let path = lab.state_home().join("lab/clusters").join(&lab.cluster).join("state.json");
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("state file")).expect("state JSON");
    let mut out = Vec::new();
    walk(&state, "", &mut out);
    let env = node_exec(
        &lab.container("manager"),
        &[
            "docker",
            "service",
            "inspect",
            "--format",
            "{{json .Spec.TaskTemplate.ContainerSpec.Env}}",
            "registry_registry",
        ],
    )
    .ok("inspect the registry service's environment");
    let vars: Vec<String> = serde_json::from_str(env.stdout.trim())
        .unwrap_or_else(|e| panic!("the service's environment is not a JSON list ({e}): {}", env.stdout));
    out.extend(vars.iter().filter_map(|v| v.strip_prefix("REGISTRY_HTTP_SECRET=")).map(str::to_string));
    // The secret's value, from inside the registry's task on worker1 (the registry's node).
    let value = lab.registry_secret("worker1");
    assert!(value.len() >= 32, "the registry's secret is too short: {value:?}");
    out.push(value);
    out
}

/// Issue 7, item 6: `lab up` under `RUST_LOG=trace` and `RUST_LOG=bollard::docker=debug`
/// (each run joining a worker, so a join token is sent) prints no join token, no registry
/// secret and no private key.
#[test]
fn no_rust_log_prints_a_secret() {
    ensure_images();
    let lab = lab("nolog");
    let mut printed = Vec::new();
    for (rust_log, workers) in [("trace", "1"), ("bollard::docker=debug", "2"), ("debug,bollard=trace", "3")] {
        let out = lab
            .command(&[
                "up",
                "--node-image",
                lab_tests::NODE_IMAGE,
                "--registry-image",
                lab_tests::REGISTRY_IMAGE,
                "--workers",
                workers,
                "--cluster",
                &lab.cluster,
            ])
            .env("RUST_LOG", rust_log)
            .output()
            .expect("run lab up");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "RUST_LOG={rust_log} lab up failed:\n{text}");
        printed.push((rust_log, text));
    }
    let secrets = secrets(&lab);
    for (rust_log, text) in &printed {
        for needle in ["SWMTKN-", "REGISTRY_HTTP_SECRET=", "PRIVATE KEY"] {
            let line = text.lines().find(|l| l.contains(needle));
            assert!(line.is_none(), "RUST_LOG={rust_log} printed {needle}: {}", line.unwrap_or_default());
        }
        for s in &secrets {
            assert!(!text.contains(s.as_str()), "RUST_LOG={rust_log} printed a secret from the state or the spec");
        }
    }
}
