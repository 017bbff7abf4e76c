//! End-to-end: interrupted anywhere (issue 19, item 7), on the docker driver.
//!
//! `lab up` (growing and shrinking the workers, which moves the registry's data when its node
//! goes), `lab down`, `lab images gc`, `lab push` and the recovery of a lost quorum (`lab up
//! --force-new-cluster`) are each killed with SIGKILL at a random moment: a fraction of that
//! command's measured duration, so the kill lands inside the work. After each kill a plain
//! `lab up` must exit 0, `lab plan` must be empty, no `lab` process of the cluster may be left,
//! and every image pushed (and not deleted by a `down`) must be listed by `lab images` and pull
//! on a node.
//!
//! The schedule is seeded: the seed is printed at the start and in every failure message, and
//! `LAB_KILL_SEED=N` runs the same schedule again (which command, which fraction of its
//! duration; the moment itself still moves with the machine's speed). `LAB_KILLS=N` sets how
//! many kills (default 20, the count: about 5 minutes on CI's two cores). The first
//! kills are the commands in a seeded order, so every run covers a data move.
//!
//! The default seed is 1, so CI's runs are comparable; `LAB_KILL_SEED=clock` draws one from the
//! clock (printed) to explore. The recovery of a lost quorum is killed at most twice;
//! `LAB_KILL_RECOVERY=0` leaves it out (its cluster of four nodes is the run's largest).
//!
//! One cluster (a manager and up to two workers) takes every kill but the recovery's; a second
//! one of three managers and a worker, made at the first recovery kill, takes those.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use lab_tests::{docker, ensure_images, node_exec, processes_naming, HostImage, Lab};
use serde_json::Value;

/// A tiny seeded generator (splitmix64): the schedule needs no more, and no new crate.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// A fraction in `[lo, hi)`.
    fn fraction(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * ((self.next() >> 11) as f64 / (1u64 << 53) as f64)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    /// `lab up --workers N`, N other than the current count.
    Up,
    Down,
    Gc,
    Push,
    /// `lab up --force-new-cluster` on the cluster of three managers, two of them lost.
    ForceNewCluster,
}

const KINDS: [Kind; 5] = [Kind::Up, Kind::Down, Kind::Gc, Kind::Push, Kind::ForceNewCluster];

/// One kill of the schedule: the command, and when (a fraction of its measured duration).
#[derive(Debug)]
struct Kill {
    kind: Kind,
    fraction: f64,
    /// For `Up`: picks the new worker count among those that differ from the current one.
    pick: usize,
}

/// The schedule of `count` kills for `seed`: the five kinds first, in a seeded order, then
/// seeded picks; `ForceNewCluster` at most twice, `Down` at most a quarter of the kills.
fn schedule(seed: u64, count: usize, recovery: bool) -> Vec<Kill> {
    let mut rng = Rng(seed);
    let all: Vec<Kind> = KINDS.iter().copied().filter(|k| recovery || *k != Kind::ForceNewCluster).collect();
    let mut kinds = all.clone();
    for i in (1..kinds.len()).rev() {
        kinds.swap(i, rng.below(i + 1));
    }
    while kinds.len() < count {
        let k = all[rng.below(all.len())];
        let n = kinds.iter().filter(|x| **x == k).count();
        let cap = match k {
            Kind::ForceNewCluster => 2,
            Kind::Down => count.div_ceil(4),
            _ => count,
        };
        if n < cap {
            kinds.push(k);
        }
    }
    kinds.truncate(count);
    kinds.into_iter().map(|kind| Kill { kind, fraction: rng.fraction(0.05, 0.9), pick: rng.below(2) }).collect()
}

fn env_number(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    Some(v.trim().parse().unwrap_or_else(|_| panic!("{name}={v:?} is not a number")))
}

fn json(run: &lab_tests::Run) -> Value {
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", run.all()))
}

/// What the test knows about one cluster: the images it must keep, and its nodes.
struct Cluster {
    lab: Lab,
    /// `NAME:TAG` of each image pushed to it and not deleted by a `down` since.
    images: Vec<String>,
    /// The node images are pulled on after a kill.
    pull_on: Vec<String>,
}

/// The run: the seed (in every failure message), the schedule's log so far, the durations
/// measured.
struct Run {
    seed: u64,
    log: String,
    /// The last duration measured of each command that ran to its end (seeded with figures
    /// measured on CI's machine, for commands this run has not yet seen end).
    took: BTreeMap<&'static str, Duration>,
    pushes: usize,
    /// Kills that came after their command had ended (it was faster than measured).
    late: usize,
}

impl Run {
    fn fail(&self, what: &str) -> ! {
        panic!("LAB_KILL_SEED={}: {what}\nthe kills so far:\n{}", self.seed, self.log)
    }

    fn note(&mut self, line: &str) {
        eprintln!("[seed {}] {line}", self.seed);
        let _ = writeln!(self.log, "  {line}");
    }

    fn ok(&self, r: lab_tests::Run, what: &str) -> lab_tests::Run {
        if r.code != 0 {
            self.fail(&format!("{what} exited {}:\n{}", r.code, r.all()));
        }
        r
    }

    /// Runs `lab ARGS --cluster X` to its end, bounded (a hang is a defect too), measured
    /// under `key` if given.
    fn lab(&mut self, c: &Cluster, args: &[&str], key: Option<&'static str>) -> lab_tests::Run {
        let mut a = args.to_vec();
        a.extend(["--cluster", &c.lab.cluster]);
        let start = Instant::now();
        let out = tempfile::tempfile().expect("temp file");
        let err = tempfile::tempfile().expect("temp file");
        let mut child = c
            .lab
            .command(&a)
            .stdout(out.try_clone().unwrap())
            .stderr(err.try_clone().unwrap())
            .spawn()
            .expect("run lab");
        let limit = Duration::from_secs(300);
        let status = loop {
            if let Some(s) = child.try_wait().expect("wait for lab") {
                break s;
            }
            if start.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                self.fail(&format!("lab {} did not end within {}s: {}", a.join(" "), limit.as_secs(), read(out, err)));
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        if let (Some(k), true) = (key, status.success()) {
            self.took.insert(k, start.elapsed());
        }
        let (stdout, stderr) = read2(out, err);
        lab_tests::Run { code: status.code().unwrap_or(-1), stdout, stderr }
    }

    /// Runs `lab ARGS --cluster X` and SIGKILLs it after `fraction` of the duration measured
    /// under `key`; checks that it died and that no `lab` process of the cluster is left.
    fn kill(&mut self, c: &Cluster, args: &[&str], key: &'static str, fraction: f64) {
        let mut a = args.to_vec();
        a.extend(["--cluster", &c.lab.cluster]);
        let took = self.took[key];
        let delay = took.mul_f64(fraction);
        let out = tempfile::tempfile().expect("temp file");
        let err = tempfile::tempfile().expect("temp file");
        let start = Instant::now();
        let mut child = c
            .lab
            .command(&a)
            .stdout(out.try_clone().unwrap())
            .stderr(err.try_clone().unwrap())
            .spawn()
            .expect("run lab");
        std::thread::sleep(delay);
        let ended_before = child.try_wait().expect("wait for lab");
        let _ = child.kill();
        let status = child.wait().expect("wait for the killed lab");
        let line = format!(
            "lab {} killed at {:.0}% of {:.1}s ({} ms)",
            args.join(" "),
            fraction * 100.0,
            took.as_secs_f64(),
            delay.as_millis()
        );
        match ended_before {
            None if status.signal() == Some(9) => self.note(&line),
            _ => {
                // It ended first: the kill came late. Measure it again for the next one.
                self.late += 1;
                let (stdout, stderr) = read2(out, err);
                self.note(&format!("{line}: it had ended first ({status}), in under {:?}", start.elapsed()));
                if status.success() {
                    self.took.insert(key, start.elapsed());
                } else {
                    self.fail(&format!("lab {} failed before the kill:\n{stdout}{stderr}", a.join(" ")));
                }
            }
        }
        // SIGKILL leaves no handler to run; what lab started outside itself must not linger.
        let cluster = c.lab.cluster.clone();
        let start = Instant::now();
        loop {
            let left: Vec<String> = processes_naming(&cluster).into_iter().filter(|p| p.contains("lab-e2e")).collect();
            if left.is_empty() {
                break;
            }
            if start.elapsed() > Duration::from_secs(10) {
                self.fail(&format!("lab processes of {cluster} left after the kill: {left:?}"));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Builds an image on the host and pushes it (to its end); it then counts as pushed.
    fn push(&mut self, c: &mut Cluster, rng: &mut Rng) {
        self.pushes += 1;
        let name = format!("e2e-kill-{}-{}:1", std::process::id(), self.pushes);
        let image = HostImage::with_content(&name, &format!("pushed-{}-{}", self.pushes, rng.next()));
        let r = self.lab(c, &["push", &image.0], Some("push"));
        self.ok(r, &format!("lab push {name}"));
        c.images.push(name);
    }

    /// After a kill: a plain `lab up` converges, the plan is empty, no helper container is
    /// left on this machine's engine, and every image pushed is listed and pulls on a node.
    fn converges(&mut self, c: &mut Cluster, rng: &mut Rng, after: &str) {
        let start = Instant::now();
        let r = self.lab(c, &["up", "--node-image", lab_tests::NODE_IMAGE, "--registry-image", REGISTRY], None);
        let r = if r.code == 1 && r.stderr.contains("lost its quorum") {
            // Killed before the recovery forced the new cluster: plain `up` must refuse and
            // name the way back, which is the recovery run again.
            if !r.stderr.contains("--force-new-cluster") {
                self.fail(&format!("after {after}, up refuses without naming --force-new-cluster:\n{}", r.all()));
            }
            self.note("  plain up: the quorum is still lost, so the recovery runs again");
            let forced = self.lab(c, &["up", "--force-new-cluster"], None);
            self.ok(forced, &format!("after {after}, lab up --force-new-cluster"));
            self.lab(c, &["up"], None)
        } else {
            r
        };
        self.ok(r, &format!("after {after}, a plain lab up"));
        let up_took = start.elapsed();
        let plan = self.lab(c, &["plan", "-o", "json"], None);
        let plan = self.ok(plan, &format!("after {after}, lab plan"));
        let steps = json(&plan)["steps"].as_array().map(Vec::len);
        if steps != Some(0) {
            self.fail(&format!("after {after} and a plain up, the plan is not empty:\n{}", plan.all()));
        }
        let status = self.lab(c, &["status", "-o", "json"], None);
        let status = json(&self.ok(status, "lab status"));
        let nodes: Vec<String> = status["nodes"]
            .as_array()
            .map(|a| a.iter().filter_map(|n| n["name"].as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        let stray: Vec<String> = lab_tests::labelled(&c.lab.cluster)
            .into_iter()
            .filter(|l| l.starts_with("container "))
            .filter(|l| !nodes.iter().any(|n| *l == format!("container {}", c.lab.container(n))))
            .collect();
        if !stray.is_empty() {
            self.fail(&format!("after {after}, containers besides the nodes {nodes:?}: {stray:?}"));
        }
        c.pull_on = nodes;
        let listed = self.lab(c, &["images", "-o", "json"], None);
        let listed = json(&self.ok(listed, "lab images"));
        let have: Vec<String> = listed
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|r| format!("{}:{}", r["repository"].as_str().unwrap_or(""), r["tag"].as_str().unwrap_or("")))
                    .collect()
            })
            .unwrap_or_default();
        let lost: Vec<&String> = c.images.iter().filter(|i| !have.contains(i)).collect();
        if !lost.is_empty() {
            self.fail(&format!("after {after}, pushed images are no longer listed: {lost:?} (listed: {have:?})"));
        }
        let node = c.pull_on[rng.below(c.pull_on.len())].clone();
        let container = c.lab.container(&node);
        for image in &c.images {
            let reference = format!("localhost:5000/{image}");
            node_exec(&container, &["docker", "image", "rm", "-f", &reference]);
            let pulled = node_exec(&container, &["docker", "pull", "-q", &reference]);
            if pulled.code != 0 {
                self.fail(&format!("after {after}, {node} cannot pull {reference}:\n{}", pulled.all()));
            }
        }
        self.note(&format!(
            "  converged: up in {:.1}s, {} nodes, {} images pull on {node}",
            up_took.as_secs_f64(),
            c.pull_on.len(),
            c.images.len()
        ));
    }
}

const REGISTRY: &str = lab_tests::REGISTRY_IMAGE;

fn read(out: std::fs::File, err: std::fs::File) -> String {
    let (o, e) = read2(out, err);
    format!("{o}{e}")
}

fn read2(mut out: std::fs::File, mut err: std::fs::File) -> (String, String) {
    use std::io::{Read, Seek};
    let mut o = String::new();
    let mut e = String::new();
    let _ = out.rewind().and_then(|_| out.read_to_string(&mut o));
    let _ = err.rewind().and_then(|_| err.read_to_string(&mut e));
    (o, e)
}

/// Removes a node's machine for good: its container and its volume, as a lost VM or disk.
fn lose(c: &Cluster, node: &str) {
    let container = c.lab.container(node);
    docker(&["rm", "-fv", &container]).ok(&format!("remove {container}"));
    let _ = docker(&["volume", "rm", "-f", &format!("{container}-docker")]);
}

#[test]
fn killed_at_random_moments_a_plain_up_converges_and_keeps_every_pushed_image() {
    ensure_images();
    let seed = match std::env::var("LAB_KILL_SEED").ok().as_deref() {
        Some("clock") => {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
            now.as_nanos() as u64 ^ u64::from(std::process::id())
        }
        _ => env_number("LAB_KILL_SEED").unwrap_or(1),
    };
    let count = env_number("LAB_KILLS").unwrap_or(20) as usize;
    let recovery = std::env::var("LAB_KILL_RECOVERY").map_or(true, |v| v != "0");
    let kills = schedule(seed, count, recovery);
    eprintln!("LAB_KILL_SEED={seed} LAB_KILLS={count}: {:?}", kills.iter().map(|k| k.kind).collect::<Vec<_>>());
    let mut rng = Rng(seed ^ 0x5eed);
    // Figures measured on CI's machine; every command that runs to its end measures its own.
    let took = [("up", 6.0), ("down", 1.5), ("gc", 13.0), ("push", 1.4), ("force", 20.0)];
    let mut run = Run {
        seed,
        log: String::new(),
        took: took.into_iter().map(|(k, s)| (k, Duration::from_secs_f64(s))).collect(),
        pushes: 0,
        late: 0,
    };
    let started = Instant::now();

    let mut one = Cluster { lab: Lab::new("kill", env!("CARGO_BIN_EXE_lab-e2e")), images: vec![], pull_on: vec![] };
    let r = run.lab(
        &one,
        &["up", "--node-image", lab_tests::NODE_IMAGE, "--registry-image", REGISTRY, "--workers", "1"],
        None,
    );
    run.ok(r, "lab up --workers 1");
    let mut workers = 1;
    run.push(&mut one, &mut rng);
    let mut ha: Option<Cluster> = None;

    for (i, kill) in kills.iter().enumerate() {
        let what = format!("kill {} of {count} ({:?})", i + 1, kill.kind);
        run.note(&what);
        match kill.kind {
            Kind::Up => {
                let others: Vec<usize> = (0..=2).filter(|n| *n != workers).collect();
                let n = others[kill.pick % others.len()].to_string();
                let args = ["up", "--node-image", lab_tests::NODE_IMAGE, "--registry-image", REGISTRY, "--workers", &n];
                run.kill(&one, &args, "up", kill.fraction);
            }
            Kind::Down => {
                run.kill(&one, &["down"], "down", kill.fraction);
                // `down` deletes: the images it took are not lost, they were removed.
                one.images.clear();
            }
            Kind::Gc => run.kill(&one, &["images", "gc"], "gc", kill.fraction),
            Kind::Push => {
                run.pushes += 1;
                let name = format!("e2e-kill-{}-{}:1", std::process::id(), run.pushes);
                let image = HostImage::with_content(&name, &format!("pushed-{}-{}", run.pushes, rng.next()));
                run.kill(&one, &["push", &image.0], "push", kill.fraction);
                run.converges(&mut one, &mut rng, &what);
                // The killed push, pushed again, goes through and counts.
                let r = run.lab(&one, &["push", &image.0], Some("push"));
                run.ok(r, &format!("after {what}, lab push {name} again"));
                one.images.push(name);
                continue;
            }
            Kind::ForceNewCluster => {
                let c = ha.get_or_insert_with(|| {
                    let c = Cluster {
                        lab: Lab::new("killha", env!("CARGO_BIN_EXE_lab-e2e")),
                        images: vec![],
                        pull_on: vec![],
                    };
                    let up = [
                        "up",
                        "--node-image",
                        lab_tests::NODE_IMAGE,
                        "--registry-image",
                        REGISTRY,
                        "--managers",
                        "3",
                        "--workers",
                        "1",
                    ];
                    let r = run.lab(&c, &up, None);
                    run.ok(r, "lab up --managers 3 --workers 1");
                    c
                });
                if c.images.is_empty() {
                    run.push(c, &mut rng);
                }
                let survivor = ["manager1", "manager2", "manager3"][rng.below(3)];
                for m in ["manager1", "manager2", "manager3"].into_iter().filter(|m| *m != survivor) {
                    lose(c, m);
                }
                run.note(&format!("  lost every manager but {survivor}"));
                run.kill(c, &["up", "--force-new-cluster"], "force", kill.fraction);
                run.converges(c, &mut rng, &what);
                continue;
            }
        }
        run.converges(&mut one, &mut rng, &what);
        workers = one.pull_on.iter().filter(|n| n.starts_with("worker")).count();
        if one.images.is_empty() {
            run.push(&mut one, &mut rng);
        }
    }
    eprintln!(
        "LAB_KILL_SEED={seed}: {count} kills ({} after their command had ended) in {:.0}s; every one converged",
        run.late,
        started.elapsed().as_secs_f64()
    );
}
