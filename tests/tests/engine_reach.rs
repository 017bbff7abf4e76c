//! End-to-end: `lab check` and `lab up` ask each node's dockerd to reach `localhost:5000`,
//! not only curl (issue 8). On a node whose `[::1]:5000` accepts connections and never
//! answers (dockerd's ingress listener before Docker 29.8, moby issue 53091), curl falls back
//! to 127.0.0.1 and says `{}`, while dockerd dials `::1` first and `docker push` and `pull`
//! time out. lab must fail there, naming the node and `::1`, and leave a healthy node ok.

use lab_tests::{ensure_images, node_exec, REGISTRY_IMAGE};

fn lab(tag: &str) -> lab_tests::Lab {
    lab_tests::Lab::new(tag, env!("CARGO_BIN_EXE_lab-e2e"))
}

/// A container on the node (removed with the node) whose port is published on the node's
/// `[::1]:5000`: docker-proxy accepts each connection and hands it to busybox `nc`, which
/// accepts it and runs `sleep`, so nothing ever answers.
const HOLE: &str = "lab-e2e-v6-hole";

#[test]
fn a_node_whose_ipv6_loopback_hangs_fails_the_engine_check() {
    ensure_images();
    let lab = lab("v6hole");
    lab.up(&["--workers", "1"]).ok("lab up");
    // The registry runs on worker1; the manager reaches it through lab's forwarder, which
    // publishes 127.0.0.1:5000 only, because dind nodes start with IPv6 off on loopback.
    // Turn it on, as on a VM, and put the hole where the forwarder's [::1] publication
    // would be.
    let manager = lab.container("manager");
    node_exec(&manager, &["sysctl", "-w", "net.ipv6.conf.lo.disable_ipv6=0"]).ok("IPv6 on the manager's loopback");
    node_exec(
        &manager,
        &[
            "docker",
            "run",
            "-d",
            "--name",
            HOLE,
            "-p",
            "[::1]:5000:5000",
            "--entrypoint",
            "sh",
            REGISTRY_IMAGE,
            "-c",
            "exec nc -ll -p 5000 -e sleep 3600",
        ],
    )
    .ok("a listener on the manager's [::1]:5000 that never answers");

    // The symptom, from outside lab: curl on the node still says {} for localhost, while
    // the node's own dockerd cannot pull from localhost:5000. The pull takes dockerd's own
    // timeouts (25 s on Docker 20.10), so it runs while lab checks.
    let curl = node_exec(&manager, &["curl", "-s", "-m", "5", "http://localhost:5000/v2/"]);
    assert_eq!(curl.stdout.trim(), "{}", "curl does not fall back to 127.0.0.1:\n{}", curl.all());
    let pull = {
        let manager = manager.clone();
        std::thread::spawn(move || node_exec(&manager, &["docker", "pull", "localhost:5000/e2e/none:1"]))
    };

    let check = lab.on(&["check"]);
    let pull = pull.join().expect("the pull thread");
    assert_ne!(pull.code, 0, "dockerd on the manager pulled through the hole:\n{}", pull.all());
    // Go words a timeout in several ways, depending on which of dockerd's deadlines fires
    // first: the HTTP client's ("Client.Timeout exceeded"), a request context's ("context
    // deadline exceeded") or a dial's ("i/o timeout").
    assert!(
        ["Client.Timeout exceeded", "context deadline exceeded", "timeout"].iter().any(|t| pull.stderr.contains(t)),
        "the pull did not time out, so the hole does not reproduce issue 8:\n{}",
        pull.stderr
    );

    assert_eq!(check.code, 1, "lab check passed a node whose dockerd cannot reach the registry:\n{}", check.all());
    let explained = check
        .stdout
        .lines()
        .find(|l| l.starts_with("manager: "))
        .unwrap_or_else(|| panic!("lab check explains nothing for manager:\n{}", check.stdout));
    assert!(
        explained.contains("dockerd cannot reach localhost:5000") && explained.contains("[::1]:5000"),
        "the explanation does not name dockerd and ::1: {explained}\n{}",
        check.stdout
    );
    assert!(explained.contains("127.0.0.1:5000 works"), "{explained}");
    // curl's rows on the manager still pass: only the engine's row fails.
    let manager_rows: Vec<&str> = check.stdout.lines().filter(|l| l.starts_with("manager ")).collect();
    assert_eq!(manager_rows.iter().filter(|l| l.contains("   ok   ")).count(), 2, "{}", check.stdout);
    assert!(manager_rows.iter().any(|l| l.contains("dockerd") && l.contains("FAIL")), "{}", check.stdout);
    // The healthy node stays healthy, on every row, the engine's included.
    // (Its service VIP row says what its kernel offers, and is no check of the registry.)
    let worker_rows: Vec<&str> =
        check.stdout.lines().filter(|l| l.starts_with("worker1 ") && !l.contains("service VIPs")).collect();
    assert_eq!(worker_rows.len(), 3, "{}", check.stdout);
    assert!(worker_rows.iter().all(|l| l.contains("   ok   ")), "{}", check.stdout);
    assert!(!check.stdout.contains("worker1: "), "worker1 is explained as failing:\n{}", check.stdout);

    // `up` on the cluster as it is: nothing to change, yet it fails, saying why.
    let up = lab.up(&["--workers", "1"]);
    assert_eq!(up.code, 1, "lab up passed a node whose dockerd cannot reach the registry:\n{}", up.all());
    assert!(
        up.stderr.contains("manager") && up.stderr.contains("[::1]:5000") && up.stderr.contains("localhost:5000"),
        "up's error does not name the node and ::1:\n{}",
        up.stderr
    );
    assert!(!up.stderr.contains("panicked"), "{}", up.stderr);

    // Without the hole, dockerd reaches the registry again.
    node_exec(&manager, &["docker", "rm", "-f", HOLE]).ok("remove the hole");
    let check = lab.on(&["check"]).ok("lab check without the hole");
    // Every node's registry checks (the cluster-wide rows, such as the managers', start with -).
    let node_oks = check.stdout.lines().filter(|l| !l.starts_with('-') && l.contains("   ok   ")).count();
    assert_eq!(node_oks, 6, "{}", check.stdout);
}
