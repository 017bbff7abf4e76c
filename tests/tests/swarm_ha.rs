//! End-to-end: clusters that fail (issue 19), on the docker driver. Several managers, one of
//! them lost with its disk, then a majority of them; every node stopped and started again in
//! another order (a host's reboot); a node whose network is cut. Each test makes its own
//! uniquely named cluster and goes through the faults in turn on it, so the suite boots as
//! few clusters as it can.

use std::time::Duration;

use lab_tests::{assert_served_via, docker, ensure_images, node_exec, push_image, wait_for, Lab};
use serde_json::Value;

fn lab(tag: &str) -> Lab {
    Lab::new(tag, env!("CARGO_BIN_EXE_lab-e2e"))
}

fn json(run: &lab_tests::Run) -> Value {
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", run.all()))
}

/// `docker node ls` as a manager sees it: `HOSTNAME STATUS AVAILABILITY MANAGER-STATUS`, sorted.
fn node_ls(lab: &Lab, manager: &str) -> Vec<String> {
    let format = "{{.Hostname}} {{.Status}} {{.Availability}} {{.ManagerStatus}}";
    let r = node_exec(&lab.container(manager), &["docker", "node", "ls", "--format", format]);
    assert_eq!(r.code, 0, "docker node ls on {manager}: {}", r.all());
    let mut v: Vec<String> = r.stdout.lines().map(|l| l.trim().to_string()).collect();
    v.sort();
    v
}

/// The node `lab status` names the swarm's leader.
fn leader(lab: &Lab) -> String {
    let st = json(&lab.on(&["status", "-o", "json"]).ok("lab status"));
    let nodes = st["nodes"].as_array().expect("nodes").clone();
    let leaders: Vec<String> = nodes
        .iter()
        .filter(|n| n["manager_status"] == "leader")
        .map(|n| n["name"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(leaders.len(), 1, "exactly one leader: {st}");
    leaders[0].clone()
}

/// Removes a node's machine for good: its container and its volume, as a lost VM or disk.
fn lose(lab: &Lab, node: &str) {
    let c = lab.container(node);
    docker(&["rm", "-fv", &c]).ok(&format!("remove {c}"));
    let volume = format!("{c}-docker");
    let _ = docker(&["volume", "rm", "-f", &volume]);
}

/// `curl localhost:5000/v2/` on `node` answers `{}`.
fn registry_answers(lab: &Lab, node: &str) -> Result<(), String> {
    let r = node_exec(&lab.container(node), &["curl", "-fsS", "--max-time", "5", "http://localhost:5000/v2/"]);
    if r.code == 0 && r.stdout.trim() == "{}" {
        Ok(())
    } else {
        Err(format!("{node}: {}", r.all()))
    }
}

/// The plan `lab plan --cluster X` prints is empty.
fn plan_is_empty(lab: &Lab) {
    let plan = lab.on(&["plan", "-o", "json"]).ok("lab plan");
    let steps = json(&plan)["steps"].as_array().map(Vec::len).unwrap_or(usize::MAX);
    assert_eq!(steps, 0, "the plan after up is not empty:\n{}", plan.all());
}

/// Items 1, 2 and 3 on one cluster of three managers and a worker:
/// - the swarm forms with one leader, every manager drained, and `status` and `check` say the
///   quorum in words;
/// - the leader's machine goes with its disk: the registry answers on every other node,
///   `status` names the lost manager and `check` fails; a plain `up` makes it again and leaves
///   no `Down` entry, so the swarm counts three managers, not four;
/// - two managers go: `up` refuses, naming survivor, losses and the flag; with
///   `--force-new-cluster` the swarm comes back with its service, its image and three managers;
/// - three managers scale down to one, which keeps its name and the swarm its quorum.
#[test]
fn three_managers_lose_their_leader_then_their_quorum_and_up_brings_them_back() {
    ensure_images();
    let lab = lab("ha");
    let up = lab.up(&["--managers", "3", "--workers", "1"]).ok("lab up --managers 3");
    assert!(up.stdout.contains("manager3"), "{}", up.all());
    let ls = node_ls(&lab, "manager1");
    assert_eq!(ls.len(), 4, "{ls:?}");
    assert_eq!(ls.iter().filter(|l| l.contains(" Drain ")).count(), 3, "every manager drained: {ls:?}");
    assert_eq!(ls.iter().filter(|l| l.ends_with("Leader")).count(), 1, "{ls:?}");
    assert_eq!(ls.iter().filter(|l| l.ends_with("Reachable")).count(), 2, "{ls:?}");
    let status = lab.on(&["status"]).ok("lab status");
    assert!(status.stdout.contains("swarm: 3 managers, 3 reachable: tolerates 1 failure"), "{}", status.stdout);
    let st = json(&lab.on(&["status", "-o", "json"]).ok("lab status -o json"));
    assert_eq!((st["swarm"]["managers"].as_u64(), st["swarm"]["tolerates"].as_u64()), (Some(3), Some(1)), "{st}");
    let check = lab.on(&["check"]).ok("lab check on a healthy cluster");
    assert!(check.stdout.contains("every manager answers"), "{}", check.stdout);
    let image = push_image(&lab, "e2e-ha:1", "served after every fault");
    node_exec(
        &lab.container("manager1"),
        &["docker", "service", "create", "--detach", "--name", "e2e-keep", "--replicas", "1", REGISTRY_SERVICE_IMAGE],
    )
    .ok("a service of the user's");

    // The leader goes, with its disk.
    let first = leader(&lab);
    lose(&lab, &first);
    let others: Vec<&str> = ["manager1", "manager2", "manager3"].into_iter().filter(|m| *m != first).collect();
    for node in others.iter().copied().chain(["worker1"]) {
        wait_for(&format!("the registry answering on {node} without {first}"), Duration::from_secs(60), || {
            registry_answers(&lab, node)
        });
    }
    let degraded = format!("degraded: 2 of 3 reachable, tolerates 0 more (unreachable: {first})");
    let status = wait_for(&format!("lab status saying {degraded:?}"), Duration::from_secs(60), || {
        let s = lab.on(&["status"]);
        if s.stdout.contains(&degraded) {
            Ok(s)
        } else {
            Err(s.all())
        }
    });
    assert!(status.stdout.contains(&format!("{first}: gone:")), "{}", status.stdout);
    let check = lab.on(&["check"]);
    assert_eq!(check.code, 1, "check fails with a manager lost: {}", check.all());
    assert!(check.stdout.contains(&degraded), "{}", check.stdout);
    // The shell `eval "$(lab env)"` leaves reaches a manager that answers.
    let env = lab.on(&["env"]).ok("lab env with the leader lost");
    let mut info = std::process::Command::new("docker");
    info.args(["node", "ls", "--format", "{{.Hostname}}"]);
    for (k, v) in lab_tests::exports(&env.stdout, '\'') {
        info.env(k, v);
    }
    let info = lab_tests::Run::from(info.output().expect("docker node ls"));
    assert_eq!(info.code, 0, "the docker client from lab env: {}", info.all());

    lab.on(&["up"]).ok("a plain lab up after losing the leader");
    let ls = node_ls(&lab, others[0]);
    assert_eq!(ls.len(), 4, "no entry of the lost leader is left: {ls:?}");
    assert!(!ls.iter().any(|l| l.contains(" Down ")), "{ls:?}");
    assert_eq!(ls.iter().filter(|l| l.ends_with("Leader") || l.ends_with("Reachable")).count(), 3, "{ls:?}");
    let status = lab.on(&["status"]).ok("lab status");
    assert!(status.stdout.contains("swarm: 3 managers, 3 reachable: tolerates 1 failure"), "{}", status.stdout);
    plan_is_empty(&lab);

    // A majority goes: only `first`, made again, survives.
    let survivor = first.clone();
    for m in &others {
        lose(&lab, m);
    }
    let refused = lab.on(&["up"]);
    assert_eq!(refused.code, 1, "up without a quorum: {}", refused.all());
    let said = refused.stderr.clone();
    assert!(said.contains(&format!("lost its quorum: 1 of 3 managers answers ({survivor})")), "{said}");
    assert!(said.contains(&format!("lost: {}, {}", others[0], others[1])), "{said}");
    assert!(said.contains("--force-new-cluster"), "{said}");
    assert!(node_exec(&lab.container(&survivor), &["docker", "node", "ls"]).code != 0, "no new cluster was forced");

    let forced = lab.on(&["up", "--force-new-cluster"]).ok("lab up --force-new-cluster");
    assert!(forced.stderr.contains(&format!("forcing a new cluster on {survivor}")), "{}", forced.all());
    let ls = node_ls(&lab, &survivor);
    assert_eq!(ls.len(), 4, "{ls:?}");
    assert!(!ls.iter().any(|l| l.contains(" Down ")), "{ls:?}");
    assert_eq!(ls.iter().filter(|l| l.ends_with("Leader") || l.ends_with("Reachable")).count(), 3, "{ls:?}");
    let services = node_exec(&lab.container(&survivor), &["docker", "service", "ls", "--format", "{{.Name}}"]);
    assert!(services.stdout.contains("e2e-keep"), "the user's service survives: {}", services.all());
    assert_served_via(&lab, &survivor, &["manager1", "manager2", "manager3", "worker1"], &["worker1"], &[&image]);
    plan_is_empty(&lab);

    // Three managers down to one: the one kept keeps its name and the swarm its quorum.
    lab.on(&["up", "--managers", "1"]).ok("lab up --managers 1");
    let ls = node_ls(&lab, "manager1");
    assert_eq!(ls.len(), 2, "{ls:?}");
    assert!(ls.iter().any(|l| l.starts_with("manager1 ") && l.ends_with("Leader")), "{ls:?}");
    plan_is_empty(&lab);
}

/// The image the user's service runs: the registry image is on every node already.
const REGISTRY_SERVICE_IMAGE: &str = lab_tests::REGISTRY_IMAGE;

/// Items 5 and 6 on one cluster of a manager and two workers:
/// - a worker's network is cut: `status` says it is unreachable, and why, apart from stopped
///   and gone; once reconnected, a plain `up` converges without making it again;
/// - every node is stopped, then started in reverse order (a host's reboot): each keeps its
///   address, and a plain `up` finds the cluster whole, the pushed image served everywhere.
#[test]
fn every_node_stopped_and_started_in_another_order_comes_back() {
    ensure_images();
    let lab = lab("reboot");
    lab.up(&[]).ok("lab up");
    let image = push_image(&lab, "e2e-reboot:1", "served after a reboot");
    let nodes = ["manager", "worker1", "worker2"];
    let address = |node: &str| {
        let net = format!("{}-net", lab.cluster);
        let f = format!("{{{{(index .NetworkSettings.Networks \"{net}\").IPAddress}}}}");
        docker(&["inspect", "-f", &f, &lab.container(node)]).stdout.trim().to_string()
    };
    let before: Vec<String> = nodes.iter().map(|n| address(n)).collect();
    let id = |node: &str| docker(&["inspect", "-f", "{{.Id}}", &lab.container(node)]).stdout.trim().to_string();
    let worker2 = id("worker2");

    // The network cut.
    let net = format!("{}-net", lab.cluster);
    docker(&["network", "disconnect", &net, &lab.container("worker2")]).ok("cut worker2's network");
    let status = lab.on(&["status"]).ok("lab status");
    assert!(status.stdout.contains("worker2: unreachable: its machine runs"), "{}", status.stdout);
    assert!(status.stdout.contains("its network is cut"), "{}", status.stdout);
    let st = json(&lab.on(&["status", "-o", "json"]).ok("lab status -o json"));
    let reach: Vec<&str> = st["nodes"].as_array().unwrap().iter().map(|n| n["reach"].as_str().unwrap_or("")).collect();
    assert_eq!(reach, ["ok", "ok", "unreachable"], "{st}");
    docker(&["network", "connect", "--ip", &before[2], &net, &lab.container("worker2")]).ok("mend worker2's network");
    wait_for("worker2 Ready again in the swarm", Duration::from_secs(90), || {
        let ls = node_ls(&lab, "manager");
        if ls.iter().all(|l| l.contains(" Ready ")) {
            Ok(())
        } else {
            Err(format!("{ls:?}"))
        }
    });
    lab.on(&["up"]).ok("lab up after the network is mended");
    assert_eq!(id("worker2"), worker2, "worker2 was not made again");
    plan_is_empty(&lab);

    // The reboot: every node stopped, then started in reverse order.
    for n in nodes {
        docker(&["stop", "-t", "20", &lab.container(n)]).ok(&format!("stop {n}"));
    }
    let status = lab.on(&["status"]).ok("lab status with every node stopped");
    assert!(status.stdout.contains("worker1: stopped: its machine exists but does not run"), "{}", status.stdout);
    for n in nodes.iter().rev() {
        docker(&["start", &lab.container(n)]).ok(&format!("start {n}"));
    }
    let after: Vec<String> = nodes.iter().map(|n| address(n)).collect();
    assert_eq!(after, before, "every node keeps its address");
    // At once, while the dockerds may still be starting: a plan made before the manager
    // answers must not take its swarm for none (it planned `initialise the swarm on manager`,
    // which the manager refused, in bench/faults.sh's run).
    let up = lab.on(&["up"]).ok("a plain lab up after the reboot");
    assert!(!up.stderr.contains("initialise the swarm"), "a new swarm was planned over the old: {}", up.all());
    let ls = node_ls(&lab, "manager");
    assert_eq!(ls.len(), 3, "{ls:?}");
    assert!(ls.iter().all(|l| l.contains(" Ready ")), "{ls:?}");
    for n in nodes {
        registry_answers(&lab, n).unwrap_or_else(|e| panic!("after the reboot: {e}"));
    }
    assert_served_via(&lab, "manager", &nodes, &["worker1", "worker2"], &[&image]);
    plan_is_empty(&lab);
}

/// Item 4: the registry's node goes with its disk, and with it every image. `status`, `check`
/// and `up` say so in numbers before `up` deploys an empty registry, and `up` says after that
/// it is empty.
#[test]
fn losing_the_registrys_node_is_said_in_numbers() {
    ensure_images();
    let lab = lab("regloss");
    lab.up(&["--workers", "1"]).ok("lab up");
    push_image(&lab, "e2e-lost-a:1", "lost a");
    push_image(&lab, "e2e-lost-b:1", "lost b");
    lose(&lab, "worker1");
    let said = "the registry's node worker1 is gone with its data: the 2 repositories lab last saw in it \
                (e2e-lost-a, e2e-lost-b) are lost unless the node's disk comes back";
    let status = lab.on(&["status"]).ok("lab status");
    assert!(status.stdout.contains(said), "{}", status.stdout);
    let st = json(&lab.on(&["status", "-o", "json"]).ok("lab status -o json"));
    assert_eq!(st["registry_lost"]["repositories"].as_array().map(Vec::len), Some(2), "{st}");
    let check = lab.on(&["check"]);
    assert_eq!(check.code, 1, "{}", check.all());
    assert!(check.stdout.contains(said), "{}", check.stdout);
    let up = lab.on(&["up"]).ok("lab up after losing the registry's node");
    let warned = up.stderr.find(said).unwrap_or_else(|| panic!("up does not say it: {}", up.all()));
    let made = up.stderr.find("create node worker1").unwrap_or_else(|| panic!("{}", up.all()));
    assert!(warned < made, "said before anything is made: {}", up.all());
    assert!(up.stderr.contains("the registry is empty: it held 2 repositories"), "{}", up.all());
    let images = json(&lab.on(&["images", "-o", "json"]).ok("lab images"));
    assert_eq!(images.as_array().map(Vec::len), Some(0), "{images}");
    plan_is_empty(&lab);
}

/// After a recovery of the quorum: one leader and three reachable managers, no entry left of
/// the lost ones, an empty plan, and `image` pulls on every node.
fn recovered(lab: &Lab, survivor: &str, image: &lab_tests::Pushed, after: &str) {
    // A worker reads Unknown until its session finds the new leader (seconds).
    let ls = wait_for(&format!("every node Ready in the swarm, {after}"), Duration::from_secs(60), || {
        let ls = node_ls(lab, survivor);
        if ls.iter().all(|l| l.contains(" Ready ")) {
            Ok(ls)
        } else {
            Err(format!("{ls:?}"))
        }
    });
    assert_eq!(ls.len(), 4, "{after}: {ls:?}");
    assert_eq!(ls.iter().filter(|l| l.ends_with("Leader")).count(), 1, "{after}: {ls:?}");
    assert_eq!(ls.iter().filter(|l| l.ends_with("Reachable")).count(), 2, "{after}: {ls:?}");
    let status = lab.on(&["status"]).ok("lab status");
    assert!(
        status.stdout.contains("swarm: 3 managers, 3 reachable: tolerates 1 failure"),
        "{after}: {}",
        status.stdout
    );
    plan_is_empty(lab);
    let reference = image.reference();
    for n in ["manager1", "manager2", "manager3", "worker1"] {
        let c = lab.container(n);
        node_exec(&c, &["docker", "image", "rm", "-f", &reference]);
        let pulled = node_exec(&c, &["docker", "pull", "-q", &reference]);
        assert_eq!(pulled.code, 0, "{after}: {n} cannot pull {reference}:\n{}", pulled.all());
    }
}

/// Loses every manager but `survivor`, with their disks.
fn lose_all_but(lab: &Lab, survivor: &str) {
    for m in ["manager1", "manager2", "manager3"].into_iter().filter(|m| *m != survivor) {
        lose(lab, m);
    }
}

/// Item 7 for the recovery of a lost quorum (`lab up --force-new-cluster`): wherever it is
/// interrupted, lab takes it up again. One cluster of three managers and a worker loses two
/// managers three times over:
/// - at once after the loss, while the survivor still leads (a leader steps down only once an
///   election timeout passes without hearing from a majority, and until then lists the lost
///   managers as unreachable): a plain `up` refuses, and `up --force-new-cluster` recovers
///   instead of taking the swarm for one that holds;
/// - the state a recovery killed right after its `swarm init --force-new-cluster` leaves (made
///   with the same engine call): a plain `up` makes and joins the lost managers;
/// - a recovery killed once a lost manager made again has joined: a plain `up` ends it.
///
/// Each time: one leader, three managers reachable, no entry of the lost ones, an empty plan,
/// and the pushed image pulls on every node.
#[test]
fn a_recovery_of_the_quorum_interrupted_anywhere_is_taken_up_again() {
    ensure_images();
    let lab = lab("fnc");
    lab.up(&["--managers", "3", "--workers", "1"]).ok("lab up --managers 3");
    let image = push_image(&lab, "e2e-fnc:1", "pulled after every recovery");

    // The leader survives: for a few seconds it still leads, and lists the others unreachable.
    let survivor = leader(&lab);
    lose_all_but(&lab, &survivor);
    let refused = lab.on(&["up"]);
    assert_eq!(refused.code, 1, "a plain up while the leader reaches 1 of 3 managers: {}", refused.all());
    assert!(
        refused.stderr.contains("lost its quorum") && refused.stderr.contains("--force-new-cluster"),
        "{}",
        refused.all()
    );
    let forced = lab.on(&["up", "--force-new-cluster"]).ok("lab up --force-new-cluster while the survivor leads");
    assert!(forced.stderr.contains(&format!("forcing a new cluster on {survivor}")), "{}", forced.all());
    recovered(&lab, &survivor, &image, "the recovery on the leader");

    // Killed right after `swarm init --force-new-cluster`, on a manager that does not lead.
    let survivor = ["manager1", "manager2", "manager3"].into_iter().find(|m| *m != leader(&lab)).unwrap().to_string();
    lose_all_but(&lab, &survivor);
    let net = format!("{}-net", lab.cluster);
    let f = format!("{{{{(index .NetworkSettings.Networks \"{net}\").IPAddress}}}}");
    let address = docker(&["inspect", "-f", &f, &lab.container(&survivor)]).stdout.trim().to_string();
    node_exec(
        &lab.container(&survivor),
        &["docker", "swarm", "init", "--force-new-cluster", "--advertise-addr", &format!("{address}:2377")],
    )
    .ok("swarm init --force-new-cluster by hand");
    lab.on(&["up"]).ok("a plain lab up after a recovery killed right after its swarm init");
    recovered(&lab, &survivor, &image, "a recovery killed after its swarm init");

    // Killed once a manager made again has joined.
    let survivor = leader(&lab);
    lose_all_but(&lab, &survivor);
    let mut child = lab
        .command(&["up", "--force-new-cluster", "--cluster", &lab.cluster])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run lab up --force-new-cluster");
    let joined =
        wait_for("a lost manager made again and joined, while the recovery runs", Duration::from_secs(120), || {
            if let Some(status) = child.try_wait().expect("wait for lab") {
                return Ok(Err(status));
            }
            let format = "{{.Hostname}} {{.ManagerStatus}}";
            let r = node_exec(&lab.container(&survivor), &["docker", "node", "ls", "--format", format]);
            let line = r.stdout.lines().find(|l| !l.starts_with(&format!("{survivor} ")) && l.ends_with(" Reachable"));
            match line {
                Some(l) => Ok(Ok(l.to_string())),
                None => Err(r.all()),
            }
        });
    let _ = child.kill();
    let status = child.wait().expect("wait for the killed lab");
    let joined = joined.unwrap_or_else(|s| panic!("the recovery ended ({s}) before a manager was seen joined"));
    assert!(status.code().is_none(), "killed after {joined} joined: {status}");
    lab.on(&["up"]).ok("a plain lab up after a recovery killed once a manager joined");
    recovered(&lab, &survivor, &image, "a recovery killed once a manager joined");
}

/// Item 1 with five managers: they form one Raft with one leader, all drained, and `status`
/// says it tolerates 2 failures; two managers go with their disks (the leader among them), the
/// swarm goes on with 3 of 5, `status` says "tolerates 0 more", the registry answers on every
/// other node; a plain `up` makes both again with no `Down` entry left.
#[test]
fn five_managers_take_two_failures_and_up_makes_both_again() {
    ensure_images();
    let lab = lab("five");
    lab.up(&["--managers", "5", "--workers", "1"]).ok("lab up --managers 5");
    let ls = node_ls(&lab, "manager1");
    assert_eq!(ls.len(), 6, "{ls:?}");
    assert_eq!(ls.iter().filter(|l| l.contains(" Drain ")).count(), 5, "every manager drained: {ls:?}");
    assert_eq!(ls.iter().filter(|l| l.ends_with("Leader")).count(), 1, "{ls:?}");
    assert_eq!(ls.iter().filter(|l| l.ends_with("Reachable")).count(), 4, "{ls:?}");
    let status = lab.on(&["status"]).ok("lab status");
    assert!(status.stdout.contains("swarm: 5 managers, 5 reachable: tolerates 2 failures"), "{}", status.stdout);
    let image = push_image(&lab, "e2e-five:1", "served with two managers lost");

    let first = leader(&lab);
    let second = if first == "manager5" { "manager4" } else { "manager5" }.to_string();
    lose(&lab, &first);
    lose(&lab, &second);
    let others: Vec<&str> = ["manager1", "manager2", "manager3", "manager4", "manager5"]
        .into_iter()
        .filter(|m| *m != first && *m != second)
        .collect();
    let status = wait_for("lab status saying 3 of 5 reachable, tolerates 0 more", Duration::from_secs(90), || {
        let s = lab.on(&["status"]);
        if s.stdout.contains("degraded: 3 of 5 reachable, tolerates 0 more") {
            Ok(s)
        } else {
            Err(s.all())
        }
    });
    assert!(status.stdout.contains(&format!("{first}: gone")) && status.stdout.contains(&format!("{second}: gone")));
    for node in others.iter().copied().chain(["worker1"]) {
        wait_for(&format!("the registry answering on {node}"), Duration::from_secs(60), || {
            registry_answers(&lab, node)
        });
    }
    lab.on(&["up"]).ok("a plain lab up after two of five managers were lost");
    let ls = node_ls(&lab, others[0]);
    assert_eq!(ls.len(), 6, "no entry of the lost managers is left: {ls:?}");
    assert!(!ls.iter().any(|l| l.contains(" Down ")), "{ls:?}");
    assert_eq!(ls.iter().filter(|l| l.ends_with("Leader") || l.ends_with("Reachable")).count(), 5, "{ls:?}");
    let status = lab.on(&["status"]).ok("lab status");
    assert!(status.stdout.contains("swarm: 5 managers, 5 reachable: tolerates 2 failures"), "{}", status.stdout);
    assert_served_via(&lab, others[0], &["manager1", "manager3", "worker1"], &["worker1"], &[&image]);
    plan_is_empty(&lab);
}
