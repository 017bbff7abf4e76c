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

    // A flag of another driver, or another driver, is refused rather than ignored.
    let bad = lab.on(&["plan", "--hosts", "h.toml"]);
    assert_eq!(bad.code, 2, "{}", bad.all());
    assert!(bad.stderr.contains("--hosts") && bad.stderr.contains("docker"), "{}", bad.stderr);
    let bad = lab.on(&["up", "--driver", "ssh"]);
    assert_eq!(bad.code, 2, "{}", bad.all());
    assert!(bad.stderr.contains("--driver") && bad.stderr.contains("\"docker\""), "{}", bad.stderr);
}
