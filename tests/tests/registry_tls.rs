//! End-to-end: the registry in mutual TLS (`--registry-tls mutual`) on the docker driver.
//! Every node's engine pushes and pulls through `localhost:5000` and `127.0.0.1:5000` as it
//! would without TLS (no login; lab's relay on the node presents the certificate), swarm
//! services pull from it, `lab push` and `lab images` speak TLS with lab's client
//! certificate, and a client without the certificate is refused, from the host and from a
//! container on the cluster's network.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use lab_tests::{
    assert_served, docker, ensure_images, node_exec, push_image, wait_for, Lab, NODE_IMAGE, REGISTRY_IMAGE,
};
use serde_json::Value;

fn lab(tag: &str) -> Lab {
    Lab::new(tag, env!("CARGO_BIN_EXE_lab-e2e"))
}

fn json(run: &lab_tests::Run) -> Value {
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", run.all()))
}

const NODES: [&str; 3] = ["manager", "worker1", "worker2"];

/// Makes `tag` on `node` (the registry image with a marker file and an entrypoint that prints
/// it and stays up) and pushes it through the node's own engine.
fn push_from(lab: &Lab, node: &str, tag: &str) {
    let c = lab.container(node);
    node_exec(&c, &["docker", "rm", "-f", "e2e-src"]);
    node_exec(
        &c,
        &["docker", "run", "--name", "e2e-src", "--entrypoint", "sh", REGISTRY_IMAGE, "-c", "echo tls > /marker"],
    )
    .ok("make the image's content");
    let entrypoint = "ENTRYPOINT [\"sh\", \"-c\", \"cat /marker; exec sleep 3600\"]";
    node_exec(&c, &["docker", "commit", "--change", entrypoint, "--change", "CMD []", "e2e-src", tag]).ok("commit");
    node_exec(&c, &["docker", "rm", "-f", "e2e-src"]);
    node_exec(&c, &["docker", "push", tag]).ok(&format!("docker push {tag} on {node}"));
}

/// The address the driver gives `node` on the cluster's network.
fn address(lab: &Lab, node: &str) -> String {
    let status = json(&lab.on(&["status", "--output", "json"]).ok("status"));
    status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == node)
        .and_then(|n| n["address"].as_str())
        .unwrap_or_else(|| panic!("no address for {node}: {status:#}"))
        .to_string()
}

/// What a client without the certificate gets from a node at `addr`: nothing. Not from the
/// registry's TLS port (5443, published where the registry runs: in TLS trusting the CA, in
/// TLS trusting anything, in plain HTTP; no upload either), and not from port 5000, which is
/// the node's relay on its loopback only. `curl` runs the given way (on the host, or in a
/// throwaway container); `ca` is the cluster's CA as that curl sees it, so a refusal is the
/// registry's, not a certificate lab's client distrusts.
fn assert_refused(what: &str, curl: &dyn Fn(&[&str]) -> lab_tests::Run, addr: &str, ca: &str) {
    for path in ["/v2/", "/v2/_catalog"] {
        let tls = format!("https://{addr}:5443{path}");
        let r = curl(&["-s", "-m", "5", "--cacert", ca, "--resolve", &format!("localhost:5443:{addr}"), &tls]);
        assert_ne!(r.code, 0, "{what}: {tls} without a client certificate answered: {}", r.all());
        assert!(!r.stdout.contains('{'), "{what}: {tls} served a client without the certificate: {}", r.stdout);
        for url in [format!("https://{addr}:5443{path}"), format!("https://{addr}:5000{path}")] {
            // Not checking the certificate either: still nothing.
            let r = curl(&["-s", "-k", "-m", "5", &url]);
            assert!(
                !r.stdout.contains('{'),
                "{what}: {url} (insecure) served a client without the certificate: {}",
                r.stdout
            );
        }
        for url in [format!("http://{addr}:5443{path}"), format!("http://{addr}:5000{path}")] {
            let r = curl(&["-s", "-m", "5", &url]);
            assert!(!r.stdout.contains('{'), "{what}: {url} answered in plain HTTP: {}", r.all());
        }
    }
    // Port 5000 is the relay's, on the node's loopback only: nothing at all off it.
    let r = curl(&["-s", "-m", "5", &format!("http://{addr}:5000/v2/")]);
    assert_ne!(r.code, 0, "{what}: the relay answered at {addr}:5000: {}", r.all());
    // No push either: starting an upload needs the certificate too.
    let upload = format!("https://{addr}:5443/v2/e2e/evil/blobs/uploads/");
    let r = curl(&["-s", "-k", "-m", "5", "-X", "POST", &upload]);
    assert!(!r.stdout.contains("blobs/uploads") && r.code != 0, "{what}: an upload started: {}", r.all());
}

/// The whole mode on a 1+2 cluster. Docker never presents a client certificate to a registry
/// at a loopback address (moby issue 31326), so every node's `localhost:5000` is lab's relay,
/// which presents the node's certificate to the registry's TLS port. Checked: the certificates
/// on every node; `docker push` from every node's own engine and pulls on the others, with no
/// login; a global service from it on every worker; lab push and lab images over TLS; lab
/// check; the refusal of everyone without the certificate, from the host and from a container
/// on the cluster's network; renewal; and the way back to open.
#[test]
fn mutual_tls_serves_only_clients_with_the_clusters_certificate() {
    ensure_images();
    let lab = lab("tls");
    let up = lab.up(&["--workers", "2", "--registry-tls", "mutual"]).ok("lab up --registry-tls mutual");
    assert!(up.stderr.contains("make the registry's CA and certificates"), "{}", up.stderr);
    assert!(up.stderr.contains("in mutual TLS"), "no relay was started:\n{}", up.stderr);
    assert!(!up.all().contains("PRIVATE KEY"), "a key was printed:\n{}", up.all());
    assert!(!up.stderr.contains("warning:"), "{}", up.stderr);

    // The keys are lab's alone.
    let tls_dir = lab.state_home().join("lab/clusters").join(&lab.cluster).join("tls");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&tls_dir), 0o700);
    for f in ["ca.key", "server.key", "client.key", "ca.crt", "client.cert"] {
        assert_eq!(mode(&tls_dir.join(f)), 0o600, "{f}");
    }
    let plan = lab.on(&["plan"]).ok("plan");
    assert!(plan.stdout.contains("nothing to do"), "a converged mutual-TLS cluster plans:\n{}", plan.stdout);
    let status = lab.on(&["status"]).ok("status");
    assert!(status.stdout.contains("registry TLS: mutual, certificates valid until"), "{}", status.stdout);

    // Every node has the CA and the client pair where its engine looks.
    for node in NODES {
        let c = lab.container(node);
        for dir in ["localhost:5000", "127.0.0.1:5000"] {
            let key = format!("/etc/docker/certs.d/{dir}/client.key");
            let st = node_exec(&c, &["stat", "-c", "%a", &key]).ok(&format!("{key} on {node}"));
            assert_eq!(st.stdout.trim(), "600", "{key} on {node}");
        }
    }
    // What Docker does: every node's own engine pushes through localhost:5000 with no login,
    // and the others pull it, by both names.
    let pid = std::process::id();
    for node in NODES {
        let tag = format!("localhost:5000/e2e/from-{node}-{pid}:1");
        push_from(&lab, node, &tag);
        for other in NODES.iter().filter(|o| **o != node) {
            let c = lab.container(other);
            for reference in [tag.clone(), tag.replace("localhost:", "127.0.0.1:")] {
                node_exec(&c, &["docker", "image", "rm", "-f", &reference]);
                node_exec(&c, &["docker", "pull", &reference]).ok(&format!("docker pull {reference} on {other}"));
            }
        }
    }

    // A container on a node's own bridge network is not the node: the relay is not there for
    // it (it listens on the node's loopback), so port 5000 gives it nothing, neither at the
    // node (the bridge's gateway) nor at any address of the bridge.
    // (`timeout`, not wget's `-T`, on which Debian's busybox wget crashes: a crash would read
    // as nothing served.)
    let scan = "p=$(hostname -i | cut -d. -f1-3); for i in 1 2 3 4 5 6 7 8; do \
                timeout 2 wget -q -O- http://$p.$i:5000/v2/ && exit 0; done; exit 1";
    for node in NODES {
        let r = node_exec(
            &lab.container(node),
            &["docker", "run", "--rm", "--entrypoint", "sh", REGISTRY_IMAGE, "-c", scan],
        );
        assert_ne!(r.code, 0, "a container on {node}'s bridge reached the relay: {}", r.all());
        assert!(!r.stdout.contains('{'), "a container on {node}'s bridge got the registry: {}", r.all());
    }

    // lab push and lab images speak TLS with lab's certificate; Swarm runs the image on every
    // worker, each node's engine pulling it through its relay.
    let pushed = push_image(&lab, &format!("e2e-tls-push-{pid}:1"), "pushed-in-tls");
    let listed = json(&lab.on(&["images", "--output", "json"]).ok("lab images"));
    let repos: Vec<&str> = listed.as_array().unwrap().iter().filter_map(|r| r["repository"].as_str()).collect();
    assert!(repos.contains(&format!("e2e-tls-push-{pid}").as_str()), "{listed:#}");
    assert_served(&lab, &NODES, &["worker1", "worker2"], &[&pushed]);

    // lab check: every engine reaches the registry, and a client without the certificate is
    // refused, asked from every node.
    let check = lab.on(&["check"]).ok("lab check");
    let refused =
        check.stdout.lines().filter(|l| l.contains("without a client certificate") && l.contains(" ok ")).count();
    assert_eq!(refused, NODES.len(), "{}", check.all());
    // Each refusal says in words how it failed (issue 18, item 19), not as a bare exit status.
    for l in check.stdout.lines().filter(|l| l.contains(" refused")) {
        assert!(!l.contains("refused (exit"), "{l}");
        assert!(l.contains("curl: ") || l.contains("only TLS") || l.contains("wget: "), "{l}");
    }

    // From the host: every node refuses a client without the certificate; with lab's client
    // certificate the registry answers, so the refusal is about the certificate.
    let reg = address(&lab, "worker1");
    let ca = tls_dir.join("ca.crt").display().to_string();
    let host_curl = |args: &[&str]| lab_tests::Run::from(Command::new("curl").args(args).output().expect("curl"));
    for node in NODES {
        assert_refused(&format!("from the host, to {node}"), &host_curl, &address(&lab, node), &ca);
    }
    let cert = tls_dir.join("client.cert").display().to_string();
    let key = tls_dir.join("client.key").display().to_string();
    let resolve = format!("localhost:5443:{reg}");
    let with = host_curl(&[
        "-s",
        "-m",
        "5",
        "--cacert",
        &ca,
        "--cert",
        &cert,
        "--key",
        &key,
        "--resolve",
        &resolve,
        "https://localhost:5443/v2/_catalog",
    ]);
    assert!(with.stdout.contains("repositories"), "with the client certificate: {}", with.all());

    // From a throwaway container on the cluster's network, with a copy of the CA only.
    let net = format!("{}-net", lab.cluster);
    let name = format!("{}-outsider", lab.cluster);
    docker(&["rm", "-fv", &name]);
    docker(&[
        "run",
        "-d",
        "--name",
        &name,
        "--label",
        &format!("lab.cluster={}", lab.cluster),
        "--network",
        &net,
        "--entrypoint",
        "sleep",
        NODE_IMAGE,
        "600",
    ])
    .ok("start a container on the cluster's network");
    docker(&["cp", &ca, &format!("{name}:/ca.crt")]).ok("copy the CA");
    let in_container = |args: &[&str]| {
        let mut a = vec!["exec", name.as_str(), "curl"];
        a.extend_from_slice(args);
        docker(&a)
    };
    for node in NODES {
        let what = format!("from a container on the cluster's network, to {node}");
        assert_refused(&what, &in_container, &address(&lab, node), "/ca.crt");
    }
    docker(&["rm", "-fv", &name]);

    // Certificates about to expire are renewed by the next up (same CA): new secrets, the
    // registry redeployed, every node's files replaced; lab and the engines still reach it.
    let spec = |lab: &Lab| {
        node_exec(
            &lab.container("manager"),
            &[
                "docker",
                "service",
                "inspect",
                "--format",
                "{{json .Spec.TaskTemplate.ContainerSpec.Secrets}}",
                "registry_registry",
            ],
        )
        .ok("service inspect")
        .stdout
    };
    let before = spec(&lab);
    let ca_before = std::fs::read_to_string(tls_dir.join("ca.crt")).unwrap();
    let meta_path = tls_dir.join("meta.json");
    let mut meta: Value = serde_json::from_str(&std::fs::read_to_string(&meta_path).unwrap()).unwrap();
    let soon = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 86_400;
    meta["leaf_not_after"] = serde_json::json!(soon);
    std::fs::write(&meta_path, meta.to_string()).unwrap();
    let plan = lab.on(&["plan"]).ok("plan with certificates due");
    for step in ["make the registry's CA and certificates", "deploy stack registry", "give worker2's engine"] {
        assert!(plan.stdout.contains(step), "{step} not planned:\n{}", plan.stdout);
    }
    let renewed = lab.on(&["up"]).ok("up with certificates due");
    assert!(renewed.stderr.contains("make the registry's CA and certificates"), "{}", renewed.all());
    assert!(lab.on(&["plan"]).ok("plan").stdout.contains("nothing to do"));
    assert_ne!(spec(&lab), before, "the registry kept its old certificates");
    assert_eq!(std::fs::read_to_string(tls_dir.join("ca.crt")).unwrap(), ca_before, "the CA changed");
    lab.on(&["images"]).ok("lab images with renewed certificates");
    push_from(&lab, "worker2", &format!("localhost:5000/e2e/renewed-{pid}:1"));

    // A node restarted by hand (`docker restart`, whose engine then stops every container
    // within Docker's stop timeout) comes back with its relay, and its engine pulls again.
    docker(&["restart", &lab.container("worker2")]).ok("docker restart worker2");
    let renewed_tag = format!("localhost:5000/e2e/renewed-{pid}:1");
    wait_for("worker2's engine pulling through its relay after a restart", Duration::from_secs(120), || {
        let c = lab.container("worker2");
        node_exec(&c, &["docker", "image", "rm", "-f", &renewed_tag]);
        let r = node_exec(&c, &["docker", "pull", &renewed_tag]);
        if r.code == 0 {
            Ok(())
        } else {
            Err(format!("{}\n{}", r.all(), docker(&["logs", "--tail", "3", &c]).all()))
        }
    });

    // Back to open: the registry is redeployed without TLS, the relays give way, and the
    // engines push again.
    lab.on(&["up", "--registry-tls", "open"]).ok("lab up --registry-tls open");
    push_from(&lab, "worker2", &format!("localhost:5000/e2e/open-{pid}:1"));
    push_from(&lab, "worker1", &format!("localhost:5000/e2e/open-{pid}:2"));
    assert!(lab.on(&["plan"]).ok("plan").stdout.contains("nothing to do"));
}

/// No log level prints a key: not its PEM, not a line of it, not the base64 the swarm secret
/// is sent as.
#[test]
fn no_log_level_prints_a_key_in_mutual_tls() {
    ensure_images();
    let lab = lab("tlslog");
    let out = lab
        .command(&[
            "up",
            "--node-image",
            NODE_IMAGE,
            "--registry-image",
            REGISTRY_IMAGE,
            "--workers",
            "0",
            "--registry-tls",
            "mutual",
            "--cluster",
            &lab.cluster,
        ])
        .env("RUST_LOG", "trace")
        .output()
        .expect("run lab up");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("make the registry's CA and certificates"), "{text}");
    let tls_dir = lab.state_home().join("lab/clusters").join(&lab.cluster).join("tls");
    for needle in ["PRIVATE KEY", "LS0tLS1CRUdJTi"] {
        let line = text.lines().find(|l| l.contains(needle));
        assert!(line.is_none(), "RUST_LOG=trace printed {needle}: {}", line.unwrap_or_default());
    }
    for key in ["ca.key", "server.key", "client.key"] {
        let pem = std::fs::read_to_string(tls_dir.join(key)).unwrap();
        for line in pem.lines().filter(|l| !l.starts_with("-----") && l.len() > 16) {
            assert!(!text.contains(line), "RUST_LOG=trace printed a line of {key}");
        }
    }
}

/// The client key and certificate lab gave `node`'s engine, as its `certs.d` holds them.
fn node_pair(lab: &Lab, node: &str) -> (String, String) {
    let c = lab.container(node);
    let read = |f: &str| {
        let path = format!("/etc/docker/certs.d/localhost:5000/{f}");
        node_exec(&c, &["cat", &path]).ok(&format!("{path} on {node}")).stdout
    };
    (read("client.key"), read("client.cert"))
}

/// `curl` from the host to the registry's TLS port at `reg`, trusting `ca` and presenting
/// `pair` (certificate, key) if given.
fn curl_registry(reg: &str, ca: &str, pair: Option<(&str, &str)>) -> lab_tests::Run {
    let resolve = format!("localhost:5443:{reg}");
    let mut args = vec!["-sS", "-m", "5", "--cacert", ca, "--resolve", &resolve];
    if let Some((cert, key)) = pair {
        args.extend(["--cert", cert, "--key", key]);
    }
    args.push("https://localhost:5443/v2/_catalog");
    lab_tests::Run::from(Command::new("curl").args(&args).output().expect("curl"))
}

/// Asserts that `run` (a [`curl_registry`]) was refused in the TLS handshake by the registry:
/// its alert, not a registry that is down or slow (curl's 7 or 28), and nothing served.
fn assert_tls_refusal(what: &str, run: &lab_tests::Run) {
    assert_ne!(run.code, 0, "{what} still reaches the registry: {}", run.all());
    assert!(!run.stdout.contains("repositories"), "{what}: {}", run.all());
    // The registry's alert, as OpenSSL reports it ("sslv3 alert bad certificate"), not a
    // client certificate curl could not load (58) or a server it distrusts (60). In TLS 1.3
    // the registry checks the client's certificate after curl's side of the handshake is
    // done, so curl, sending its request first, may see the connection reset or already
    // closed instead ("Transport endpoint is not connected", curl's exit 55).
    let refused = run.stderr.contains(" alert ")
        || run.stderr.contains("reset by peer")
        || (run.code == 55 && run.stderr.contains("not connected"));
    assert!(refused, "{what}: not refused by the registry in TLS: {}", run.all());
}

/// Issue 18, item 11: every node has a client key and certificate of its own, and lab has
/// its own (`cmp` tells them apart). A worker that leaves the cluster takes a key the
/// registry trusted; distribution reads no revocation list, so lab makes a new CA and issues
/// the remaining nodes again from it: the departed worker's saved pair is refused by the
/// registry, while the remaining nodes push and pull through localhost:5000 as before.
/// `lab up --renew-certs` does the same on demand, and `lab plan` shows it first.
#[test]
fn each_node_has_its_own_key_and_a_departed_nodes_key_is_refused() {
    ensure_images();
    let lab = lab("mtls-rv");
    lab.up(&["--workers", "2", "--registry-tls", "mutual"]).ok("lab up --registry-tls mutual");
    let tls_dir = lab.state_home().join("lab/clusters").join(&lab.cluster).join("tls");
    let saved = tempfile::tempdir().unwrap();
    let file = |name: &str, body: &str| {
        let p = saved.path().join(name);
        std::fs::write(&p, body).unwrap();
        p.display().to_string()
    };
    // Each node's key and certificate, and lab's, all different.
    let mut keys = vec![tls_dir.join("client.key").display().to_string()];
    let mut certs = vec![tls_dir.join("client.cert").display().to_string()];
    for node in NODES {
        let (key, cert) = node_pair(&lab, node);
        keys.push(file(&format!("{node}.key"), &key));
        certs.push(file(&format!("{node}.cert"), &cert));
    }
    for list in [&keys, &certs] {
        for (i, a) in list.iter().enumerate() {
            for b in &list[i + 1..] {
                let same = Command::new("cmp").args(["-s", a, b]).status().expect("cmp").success();
                assert!(!same, "{a} and {b} are the same file");
            }
        }
    }
    // worker2's pair works against the registry, before it leaves.
    let reg = address(&lab, "worker1");
    let ca = tls_dir.join("ca.crt").display().to_string();
    let (w2_cert, w2_key) = (saved.path().join("worker2.cert"), saved.path().join("worker2.key"));
    let (w2_cert, w2_key) = (w2_cert.to_str().unwrap(), w2_key.to_str().unwrap());
    let ca_before = std::fs::read_to_string(&ca).unwrap();
    let before = curl_registry(&reg, &ca, Some((w2_cert, w2_key)));
    assert!(before.stdout.contains("repositories"), "worker2's own pair, before it left: {}", before.all());

    // worker2 leaves: `lab plan` says what happens, `lab up` does it.
    let plan = lab.on(&["plan", "--workers", "1"]).ok("plan --workers 1");
    for step in [
        "make a new CA for the registry and issue every certificate again from it (worker2 left the cluster)",
        "give worker1's engine the registry's client certificate",
        "give manager's engine the registry's client certificate",
        "deploy stack registry",
    ] {
        assert!(plan.stdout.contains(step), "{step} not planned:\n{}", plan.stdout);
    }
    let down = lab.on(&["up", "--workers", "1"]).ok("lab up --workers 1");
    assert!(down.stderr.contains("worker2 left the cluster"), "{}", down.stderr);
    assert!(lab.on(&["plan"]).ok("plan").stdout.contains("nothing to do"), "a second up would do something");
    let ca_after = std::fs::read_to_string(&ca).unwrap();
    assert_ne!(ca_after, ca_before, "the CA stayed");
    // The registry, checked against the new CA, refuses worker2's saved pair in TLS (and
    // answers lab's new one, so the refusal is about the key).
    let refused = curl_registry(&reg, &ca, Some((w2_cert, w2_key)));
    assert_tls_refusal("worker2's pair from before it left", &refused);
    let cert = tls_dir.join("client.cert").display().to_string();
    let key = tls_dir.join("client.key").display().to_string();
    let with = curl_registry(&reg, &ca, Some((&cert, &key)));
    assert!(with.stdout.contains("repositories"), "lab's new pair: {}", with.all());
    // The remaining nodes push and pull through localhost:5000 as before.
    let pid = std::process::id();
    let tag = format!("localhost:5000/e2e/after-leave-{pid}:1");
    push_from(&lab, "worker1", &tag);
    let m = lab.container("manager");
    node_exec(&m, &["docker", "image", "rm", "-f", &tag]);
    node_exec(&m, &["docker", "pull", &tag]).ok(&format!("docker pull {tag} on manager"));
    let (w1_key, _) = node_pair(&lab, "worker1");
    assert_ne!(w1_key, std::fs::read_to_string(saved.path().join("worker1.key")).unwrap(), "worker1 kept its key");

    // --renew-certs: shown by plan, done by up; a new CA again, and everything still works.
    let plan = lab.on(&["plan", "--renew-certs"]).ok("plan --renew-certs");
    assert!(plan.stdout.contains("issue every certificate again from it (--renew-certs)"), "{}", plan.stdout);
    let (w1_key_before, w1_cert_before) = node_pair(&lab, "worker1");
    let w1_saved = (file("w1.cert", &w1_cert_before), file("w1.key", &w1_key_before));
    lab.on(&["up", "--renew-certs"]).ok("lab up --renew-certs");
    assert_ne!(std::fs::read_to_string(&ca).unwrap(), ca_after, "--renew-certs kept the CA");
    assert!(lab.on(&["plan"]).ok("plan").stdout.contains("nothing to do"));
    let refused = curl_registry(&reg, &ca, Some((&w1_saved.0, &w1_saved.1)));
    assert_tls_refusal("worker1's pair from before --renew-certs", &refused);
    let tag = format!("localhost:5000/e2e/renewed-ca-{pid}:1");
    push_from(&lab, "manager", &tag);
    let w1 = lab.container("worker1");
    node_exec(&w1, &["docker", "image", "rm", "-f", &tag]);
    node_exec(&w1, &["docker", "pull", &tag]).ok(&format!("docker pull {tag} on worker1"));
    lab.on(&["images"]).ok("lab images after --renew-certs");
}
