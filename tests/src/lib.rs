//! The test bed for lab's end-to-end suite.
//!
//! - [`ensure_images`] builds the offline node and registry images from Debian packages when
//!   the engine lacks them (`scripts/offline-images.sh`), once per process.
//! - [`Lab`] runs the real `lab` program with its own private state directory, against a
//!   cluster name unique to the run, and on drop removes everything labelled with that
//!   cluster, whatever the test did, so the engine is left as it was found.
//! - [`docker`] and [`node_exec`] look at the engine and the nodes from outside lab, so tests
//!   check what a user would see, not what lab says about itself.

pub mod machine;
pub mod ssh;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The offline node image the suite runs nodes from.
pub const NODE_IMAGE: &str = "lab-offline/node:bookworm";
/// The offline stand-in for `registry:2`.
pub const REGISTRY_IMAGE: &str = "lab-offline/registry:2";
/// The offline stand-in for `registry:3` (distribution v3's layout).
pub const REGISTRY3_IMAGE: &str = "lab-offline/registry:3";

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ is in the workspace").to_path_buf()
}

/// Builds the offline images if the engine lacks them. Panics with the script's output if
/// that fails.
pub fn ensure_images() {
    static DONE: Mutex<bool> = Mutex::new(false);
    let mut done = DONE.lock().unwrap_or_else(|e| e.into_inner());
    if *done {
        return;
    }
    // One build at a time across the test processes nextest runs at once.
    let lock_path = std::env::temp_dir().join("lab-tests-offline-images.lock");
    let lock = std::fs::File::create(&lock_path).expect("create the offline images' lock file");
    lock.lock().expect("lock the offline images' lock file");
    let out = Command::new("bash")
        .arg(root().join("scripts/offline-images.sh"))
        .output()
        .expect("run scripts/offline-images.sh");
    assert!(
        out.status.success(),
        "building the offline images failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    *done = true;
}

/// Builds lab's QEMU image (`scripts/qemu-image.sh`, which keeps what it built before) for
/// the qemu driver's tests, one build at a time across test processes. Panics with the
/// script's output if that fails (it needs root, mmdebstrap and e2fsprogs).
pub fn ensure_qemu_image() {
    let lock_path = std::env::temp_dir().join("lab-tests-qemu-image.lock");
    let lock = std::fs::File::create(&lock_path).expect("create the qemu image's lock file");
    lock.lock().expect("lock the qemu image's lock file");
    let out =
        Command::new("bash").arg(root().join("scripts/qemu-image.sh")).output().expect("run scripts/qemu-image.sh");
    assert!(
        out.status.success(),
        "building lab's QEMU image failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The command lines of the running processes (zombies left out) that contain `needle`: for
/// checking that QEMU and vde_switch processes of a cluster are gone.
pub fn processes_naming(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else { continue };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        let zombie = std::fs::read_to_string(e.path().join("stat"))
            .map(|s| s.rsplit_once(") ").is_some_and(|(_, r)| r.starts_with('Z')))
            .unwrap_or(false);
        if cmd.contains(needle) && !zombie {
            found.push(cmd);
        }
    }
    found
}

/// A cluster name unique to this process and call: `e2e-<pid>-<n>-<tag>`.
pub fn unique_cluster(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let name = format!("e2e{}-{}-{tag}", std::process::id() % 100_000, N.fetch_add(1, Ordering::SeqCst));
    assert!(name.len() <= 32, "cluster name {name} too long");
    name
}

/// The variables a shell's `export NAME=VALUE` lines set (as `lab env` and `docker-machine env`
/// print them), in order, with the value's surrounding `quote` characters removed.
pub fn exports(stdout: &str, quote: char) -> Vec<(String, String)> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches(quote).to_string()))
        .collect()
}

/// What a command printed and how it exited.
#[derive(Debug)]
pub struct Run {
    /// Exit status (-1 if killed by a signal).
    pub code: i32,
    /// stdout.
    pub stdout: String,
    /// stderr.
    pub stderr: String,
}

impl Run {
    /// What a finished command printed.
    pub fn from(o: Output) -> Run {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    /// Panics, showing the output, unless the command exited 0.
    pub fn ok(self, what: &str) -> Run {
        assert_eq!(self.code, 0, "{what} failed:\nstdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        self
    }

    /// stdout and stderr together.
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// The `lab` program under test, with a private state directory and one cluster.
pub struct Lab {
    /// The cluster this instance drives.
    pub cluster: String,
    bin: PathBuf,
    state: tempfile::TempDir,
    cwd: tempfile::TempDir,
}

impl Lab {
    /// A new cluster name and empty state, driving the `lab` binary at `bin` (an integration
    /// test passes `env!("CARGO_BIN_EXE_lab-e2e")`). Removes leftovers of a cluster by that name.
    pub fn new(tag: &str, bin: &str) -> Lab {
        let lab = Lab {
            cluster: unique_cluster(tag),
            bin: PathBuf::from(bin),
            state: tempfile::Builder::new().prefix("lab-st").tempdir().expect("temp state dir"),
            cwd: tempfile::tempdir().expect("temp cwd"),
        };
        remove_labelled(&lab.cluster);
        lab
    }

    /// The state root lab uses (`$XDG_STATE_HOME`).
    pub fn state_home(&self) -> &Path {
        self.state.path()
    }

    /// The directory lab runs in (where a `lab.toml` would be read from).
    pub fn cwd(&self) -> &Path {
        self.cwd.path()
    }

    /// A `lab` command with this instance's environment; no `LAB_*` variables leak in.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.args(args).current_dir(self.cwd.path()).env("XDG_STATE_HOME", self.state.path()).env("CI", "true");
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("LAB_") {
                c.env_remove(k);
            }
        }
        c.stdin(Stdio::null());
        c
    }

    /// Runs `lab ARGS`.
    pub fn run(&self, args: &[&str]) -> Run {
        Run::from(self.command(args).output().expect("run lab"))
    }

    /// Runs `lab ARGS` with extra environment variables (e.g. the `DOCKER_HOST` that
    /// `eval "$(lab env)"` leaves in a user's shell).
    pub fn run_env(&self, vars: &[(&str, &str)], args: &[&str]) -> Run {
        let mut c = self.command(args);
        for (k, v) in vars {
            c.env(k, v);
        }
        Run::from(c.output().expect("run lab"))
    }

    /// Runs `lab ARGS --cluster <this cluster>`.
    pub fn on(&self, args: &[&str]) -> Run {
        let mut a = args.to_vec();
        a.extend(["--cluster", &self.cluster]);
        self.run(&a)
    }

    /// `lab up` with the offline images and the given extra flags.
    pub fn up(&self, extra: &[&str]) -> Run {
        self.up_with_registry(REGISTRY_IMAGE, extra)
    }

    /// `lab up` with the offline node image, the registry image `registry` and the given
    /// extra flags.
    pub fn up_with_registry(&self, registry: &str, extra: &[&str]) -> Run {
        let mut a = vec!["up", "--node-image", NODE_IMAGE, "--registry-image", registry];
        a.extend_from_slice(extra);
        self.on(&a)
    }

    /// The node container of `node`.
    pub fn container(&self, node: &str) -> String {
        format!("{}-{node}", self.cluster)
    }

    /// The registry's HTTP secret as its task reads it (the swarm secret's file, inside the
    /// task's container on `node`, the registry's node), so a test can look for it where it
    /// must not be. Fails the test when the task or the file is not there.
    pub fn registry_secret(&self, node: &str) -> String {
        let c = self.container(node);
        let filter = "label=com.docker.swarm.service.name=registry_registry";
        let task = node_exec(&c, &["docker", "ps", "-q", "--filter", filter]).ok("find the registry's task").stdout;
        node_exec(&c, &["docker", "exec", task.trim(), "cat", "/run/secrets/lab-registry-http-secret"])
            .ok("read the secret inside the registry's task")
            .stdout
            .trim()
            .to_string()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = self.on(&["down"]);
        remove_labelled(&self.cluster);
    }
}

/// The `docker run` flags that let a container of the offline node image run its own dockerd
/// on this machine, the way the docker driver runs its nodes: every capability the driver
/// grants (`--privileged` fails here), seccomp, AppArmor and system paths unconfined, the
/// cgroup file system writable, an anonymous volume on `/var/lib/docker`, and `sh` as the
/// entrypoint (the caller adds the image and the boot script).
pub fn dind_run_flags() -> Vec<String> {
    let mut flags: Vec<String> = [
        "-v",
        "/var/lib/docker",
        "--security-opt",
        "seccomp=unconfined",
        "--security-opt",
        "apparmor=unconfined",
        "--security-opt",
        "systempaths=unconfined",
        "-v",
        "/sys/fs/cgroup:/sys/fs/cgroup:rw",
        "--entrypoint",
        "sh",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for c in lab_driver_docker::CAPS {
        flags.extend(["--cap-add".to_string(), c.to_string()]);
    }
    flags
}

/// Runs the host's `docker` CLI.
pub fn docker(args: &[&str]) -> Run {
    Run::from(Command::new("docker").args(args).stdin(Stdio::null()).output().expect("run docker"))
}

/// Runs `argv` inside a node container (the node itself, not a container on it).
pub fn node_exec(container: &str, argv: &[&str]) -> Run {
    let mut a = vec!["exec", container];
    a.extend_from_slice(argv);
    docker(&a)
}

/// Every container, volume and network labelled `lab.cluster=<cluster>`, as `kind name` lines.
pub fn labelled(cluster: &str) -> Vec<String> {
    let filter = format!("label=lab.cluster={cluster}");
    let mut out = Vec::new();
    for (kind, args) in [
        ("container", vec!["ps", "-a", "--filter", &filter, "--format", "{{.Names}}"]),
        ("volume", vec!["volume", "ls", "--filter", &filter, "--format", "{{.Name}}"]),
        ("network", vec!["network", "ls", "--filter", &filter, "--format", "{{.Name}}"]),
    ] {
        for line in docker(&args).stdout.lines().filter(|l| !l.trim().is_empty()) {
            out.push(format!("{kind} {line}"));
        }
    }
    out
}

/// Removes everything labelled with `cluster`, by ID (the test bed's own cleanup).
pub fn remove_labelled(cluster: &str) {
    let filter = format!("label=lab.cluster={cluster}");
    let ids = |args: &[&str]| -> Vec<String> { docker(args).stdout.split_whitespace().map(str::to_string).collect() };
    let c = ids(&["ps", "-aq", "--filter", &filter]);
    if !c.is_empty() {
        let mut a = vec!["rm", "-fv"];
        a.extend(c.iter().map(String::as_str));
        docker(&a);
    }
    let v = ids(&["volume", "ls", "-q", "--filter", &filter]);
    if !v.is_empty() {
        let mut a = vec!["volume", "rm", "-f"];
        a.extend(v.iter().map(String::as_str));
        docker(&a);
    }
    let n = ids(&["network", "ls", "-q", "--filter", &filter]);
    if !n.is_empty() {
        let mut a = vec!["network", "rm"];
        a.extend(n.iter().map(String::as_str));
        docker(&a);
    }
}

/// An image on the host engine (the engine `lab push` reads by default), removed when dropped.
pub struct HostImage(pub String);

impl HostImage {
    /// `name`, made on the host engine: the registry stand-in with a file of its own on top
    /// (`/marker`, holding `content`), and an entrypoint that prints it and stays up.
    pub fn build(name: &str) -> Self {
        Self::with_content(name, "pushed")
    }

    /// [`HostImage::build`] with `content` in its marker file, so images told apart by their
    /// logs have layers of their own.
    pub fn with_content(name: &str, content: &str) -> Self {
        Self::with_script(name, &format!("echo {content} > /marker"))
    }

    /// `name`, whose content `script` makes (run by `sh` in the registry stand-in); it must
    /// write `/marker`, which the image prints when it runs.
    pub fn with_script(name: &str, script: &str) -> Self {
        Self::on_top(name, REGISTRY_IMAGE, script)
    }

    /// [`HostImage::with_script`] on top of `base` (an image on the host engine with `sh`), so
    /// that images share `base`'s layers.
    pub fn on_top(name: &str, base: &str, script: &str) -> Self {
        let src = format!("{}-src", name.replace([':', '/'], "-"));
        docker(&["rm", "-fv", &src]);
        docker(&["run", "--name", &src, "--entrypoint", "sh", base, "-c", script])
            .ok("make the image's content on the host");
        let entrypoint = "ENTRYPOINT [\"sh\", \"-c\", \"cat /marker; exec sleep 3600\"]";
        docker(&["commit", "--change", entrypoint, "--change", "CMD []", &src, name]).ok("commit on the host");
        docker(&["rm", "-fv", &src]);
        HostImage(name.to_string())
    }
}

impl Drop for HostImage {
    fn drop(&mut self) {
        docker(&["rmi", "-f", &self.0]);
    }
}

/// An image a test put in with `lab push`, and what its task prints (its marker file).
pub struct Pushed {
    /// `NAME:TAG` in the registry.
    pub name: String,
    /// What the image prints when it runs.
    pub content: &'static str,
}

impl Pushed {
    /// The reference the nodes use.
    pub fn reference(&self) -> String {
        format!("localhost:5000/{}", self.name)
    }
}

/// Builds `name` on the host engine with `content` in it and puts it in with `lab push`.
pub fn push_image(lab: &Lab, name: &str, content: &'static str) -> Pushed {
    let image = HostImage::with_content(name, content);
    let r = lab.on(&["push", &image.0]).ok(&format!("lab push {name}"));
    assert_eq!(r.stdout.trim(), format!("localhost:5000/{name}"), "{}", r.all());
    Pushed { name: name.to_string(), content }
}

/// Every image in `images` can be pulled from `localhost:5000` by the engine of every node in
/// `nodes` (its local copy removed first, so the registry must serve it), and runs as a
/// global service on every node in `run_on` (where Swarm puts one: the workers, or the
/// manager when there are none), printing its own content.
pub fn assert_served(lab: &Lab, nodes: &[&str], run_on: &[&str], images: &[&Pushed]) {
    assert_served_via(lab, "manager", nodes, run_on, images)
}

/// [`assert_served`], with the services made through the manager `manager` (`manager1` of a
/// cluster with several).
pub fn assert_served_via(lab: &Lab, manager: &str, nodes: &[&str], run_on: &[&str], images: &[&Pushed]) {
    for img in images {
        let reference = img.reference();
        for n in nodes {
            let c = lab.container(n);
            node_exec(&c, &["docker", "image", "rm", "-f", &reference]);
            let pulled = node_exec(&c, &["docker", "pull", &reference]);
            assert_eq!(pulled.code, 0, "{n} cannot pull {reference}:\n{}", pulled.all());
            // And gone again, so the service below pulls it too.
            node_exec(&c, &["docker", "image", "rm", "-f", &reference]).ok("remove the pulled copy");
        }
        let manager = lab.container(manager);
        let svc = format!("e2e-served-{}", std::process::id());
        node_exec(&manager, &["docker", "service", "rm", &svc]);
        node_exec(
            &manager,
            &["docker", "service", "create", "--detach", "--name", &svc, "--mode", "global", &reference],
        )
        .ok(&format!("service create {reference}"));
        wait_for(&format!("{reference} running on every node it should"), Duration::from_secs(180), || {
            let r = node_exec(
                &manager,
                &["docker", "service", "ps", &svc, "--format", "{{.Node}} {{.CurrentState}} {{.Error}}"],
            );
            let running = r.stdout.lines().filter(|l| l.contains(" Running ")).count();
            if running == run_on.len() {
                Ok(())
            } else {
                Err(r.all())
            }
        });
        for w in run_on {
            let filter = format!("label=com.docker.swarm.service.name={svc}");
            let ids = node_exec(&lab.container(w), &["docker", "ps", "-q", "--filter", &filter]).ok("docker ps");
            let id = ids.stdout.lines().next().unwrap_or_else(|| panic!("no task of {svc} on {w}")).to_string();
            let logs = wait_for(&format!("{reference} printing its content on {w}"), Duration::from_secs(30), || {
                let logs = node_exec(&lab.container(w), &["docker", "logs", &id]);
                if logs.stdout.contains(img.content) {
                    Ok(logs)
                } else {
                    Err(logs.all())
                }
            });
            assert!(logs.stdout.contains(img.content), "{w} runs something else than {reference}: {}", logs.all());
        }
        node_exec(&manager, &["docker", "service", "rm", &svc]).ok("service rm");
        let filter = format!("label=com.docker.swarm.service.name={svc}");
        for w in run_on {
            wait_for(&format!("{svc}'s task gone from {w}"), Duration::from_secs(60), || {
                let r = node_exec(&lab.container(w), &["docker", "ps", "-aq", "--filter", &filter]);
                if r.stdout.trim().is_empty() {
                    Ok(())
                } else {
                    Err(r.all())
                }
            });
        }
    }
}

/// Polls `probe` every 500 ms until it returns `Some`, for at most `limit`; panics saying
/// what never happened, with the last value seen.
pub fn wait_for<T>(what: &str, limit: Duration, mut probe: impl FnMut() -> Result<T, String>) -> T {
    let start = Instant::now();
    loop {
        match probe() {
            Ok(v) => return v,
            Err(last) if start.elapsed() >= limit => {
                panic!("{what} did not happen within {}s; last seen: {last}", limit.as_secs())
            }
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}

/// The seed's whole point, checked from outside lab: an image made on the manager, pushed to
/// `127.0.0.1:5000`, runs as a swarm service on a worker that never had it. `manager` and
/// `worker` are the containers that are those nodes (for every driver's test bed, nodes are
/// containers); `worker_hostname` is the worker's swarm hostname.
pub fn image_made_on_manager_runs_on(manager: &str, worker: &str, worker_hostname: &str) {
    image_made_on_manager_runs_on_with(&|c: &str, argv: &[&str]| node_exec(c, argv), manager, worker, worker_hostname)
}

/// [`image_made_on_manager_runs_on`], with `exec(node, argv)` running a command on a node
/// (for nodes that are VMs, `lab ssh NODE -- ARGV`).
pub fn image_made_on_manager_runs_on_with(
    exec: &dyn Fn(&str, &[&str]) -> Run,
    manager: &str,
    worker: &str,
    worker_hostname: &str,
) {
    let node_exec = exec;
    let repo = format!("127.0.0.1:5000/e2e/hello-{}", std::process::id());
    let tag = format!("{repo}:1");
    node_exec(manager, &["docker", "rm", "-f", "e2e-src"]);
    node_exec(
        manager,
        &["docker", "run", "--name", "e2e-src", "--entrypoint", "sh", REGISTRY_IMAGE, "-c", "echo made > /marker"],
    )
    .ok("make the image's content on the manager");
    let entrypoint = "ENTRYPOINT [\"sh\", \"-c\", \"cat /marker; exec sleep 3600\"]";
    node_exec(manager, &["docker", "commit", "--change", entrypoint, "--change", "CMD []", "e2e-src", &tag])
        .ok("commit the image on the manager");
    assert_ne!(
        node_exec(worker, &["docker", "image", "inspect", &tag]).code,
        0,
        "{worker} has the image before the push"
    );
    node_exec(manager, &["docker", "push", &tag]).ok("push to 127.0.0.1:5000");
    let constraint = format!("node.hostname=={worker_hostname}");
    node_exec(
        manager,
        &["docker", "service", "create", "--detach", "--name", "e2e-hello", "--constraint", &constraint, &tag],
    )
    .ok("service create");
    let running = format!("{worker_hostname} Running");
    wait_for(&format!("service e2e-hello running on {worker_hostname}"), Duration::from_secs(240), || {
        let r = node_exec(
            manager,
            &["docker", "service", "ps", "e2e-hello", "--format", "{{.Node}} {{.CurrentState}} {{.Error}}"],
        );
        if r.stdout.lines().any(|l| l.starts_with(&running)) {
            Ok(())
        } else {
            Err(r.all())
        }
    });
    // Swarm pulls by digest, so the worker's copy may carry no tag: look for the repository.
    let pulled = node_exec(worker, &["docker", "image", "ls", "-q", &repo]).ok("image ls on the worker");
    assert!(!pulled.stdout.trim().is_empty(), "{worker} runs the service but has no {repo} image");
    node_exec(manager, &["docker", "service", "rm", "e2e-hello"]).ok("service rm");
}

/// `image`, put in with `lab push`, runs as a global service on the `workers` (every node
/// Swarm schedules on), each printing its content: the service is made through `manager`
/// with `exec` (a node's command runner, for drivers whose nodes are not this engine's
/// containers), and removed again.
pub fn pushed_runs_on_workers(exec: &dyn Fn(&str, &[&str]) -> Run, manager: &str, workers: &[&str], image: &Pushed) {
    let svc = format!("e2e-pushed-{}", std::process::id());
    let reference = image.reference();
    exec(manager, &["docker", "service", "rm", &svc]);
    exec(manager, &["docker", "service", "create", "--detach", "--name", &svc, "--mode", "global", &reference])
        .ok(&format!("service create {reference}"));
    wait_for(&format!("{reference} running on {workers:?}"), Duration::from_secs(300), || {
        let r = exec(manager, &["docker", "service", "ps", &svc, "--format", "{{.Node}} {{.CurrentState}} {{.Error}}"]);
        let running = r.stdout.lines().filter(|l| l.contains(" Running ")).count();
        if running == workers.len() {
            Ok(())
        } else {
            Err(r.all())
        }
    });
    let logs = wait_for(&format!("{svc} printing {}", image.content), Duration::from_secs(60), || {
        let r = exec(manager, &["docker", "service", "logs", "--raw", &svc]);
        if r.stdout.matches(image.content).count() >= workers.len() {
            Ok(r)
        } else {
            Err(r.all())
        }
    });
    assert!(logs.stdout.contains(image.content), "{}", logs.all());
    exec(manager, &["docker", "service", "rm", &svc]).ok("service rm");
}

/// The record `lab up --timings DIR` wrote into its one page in `dir` (the JSON the page
/// carries for tools), and the page's path. Fails the test if there is not exactly one page.
pub fn timings_record(dir: &Path) -> (serde_json::Value, PathBuf) {
    let pages: Vec<PathBuf> =
        std::fs::read_dir(dir).expect("read the timings directory").flatten().map(|e| e.path()).collect();
    assert_eq!(pages.len(), 1, "lab up --timings wrote {} pages in {}", pages.len(), dir.display());
    let page = std::fs::read_to_string(&pages[0]).expect("read the timings page");
    let open = "<script type=\"application/json\" id=\"lab-timings\">";
    let start = page.find(open).map(|i| i + open.len()).expect("the page carries its record");
    let end = start + page[start..].find("</script>").expect("the record ends");
    let record = serde_json::from_str(&page[start..end]).expect("the record is JSON");
    (record, pages[0].clone())
}

/// A bar of a timings record, by its label (a step as `lab plan` prints it, or a phase):
/// `(start, end)` in seconds from the start of the command. Fails the test if it is not
/// there, or never ended.
pub fn timings_span(record: &serde_json::Value, label: &str) -> (f64, f64) {
    let spans = record["spans"].as_array().expect("spans");
    let s = spans
        .iter()
        .find(|s| s["label"] == label)
        .unwrap_or_else(|| panic!("no bar {label:?} in the timings: {spans:#?}"));
    (s["start"].as_f64().expect("start"), s["end"].as_f64().unwrap_or_else(|| panic!("{label:?} never ended")))
}

/// The seconds of a run that no bar of its timings record covers: time lab spent that its
/// steps and phases do not show.
pub fn timings_uncovered(record: &serde_json::Value) -> f64 {
    let mut bars: Vec<(f64, f64)> = record["spans"]
        .as_array()
        .expect("spans")
        .iter()
        .filter_map(|s| Some((s["start"].as_f64()?, s["end"].as_f64()?)))
        .collect();
    bars.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = record["total"].as_f64().expect("total");
    let (mut covered_to, mut gaps) = (0.0_f64, 0.0_f64);
    for (start, end) in bars {
        if start > covered_to {
            gaps += start - covered_to;
        }
        covered_to = covered_to.max(end);
    }
    gaps + (total - covered_to).max(0.0)
}
