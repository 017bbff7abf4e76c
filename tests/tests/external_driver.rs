//! End-to-end: the shipped external driver, `examples/external-driver/lab-driver-static` (a
//! Python program speaking `docs/driver-protocol.md`), found on PATH, brings up a swarm with
//! its registry on Docker engines that lab did not make.
//!
//! The engines are three Docker-in-Docker containers this test starts itself from the offline
//! node image, each with dockerd listening on a unix socket in a directory bind-mounted from
//! a temporary directory, so lab reaches them as `unix:///...` engines exactly as a user's
//! own engines, and the swarm advertises their addresses on the test's own network. Every
//! container, volume and network carries `lab.cluster=<cluster>`, so the test bed's cleanup
//! (and [`Bed`]'s drop) removes them even when the test fails.

use std::path::PathBuf;
use std::time::Duration;

use lab_tests::{docker, node_exec, remove_labelled, wait_for, Lab, Run, NODE_IMAGE, REGISTRY_IMAGE};

const NODES: &[&str] = &["manager", "worker1", "worker2"];

/// What an engine container runs: dockerd on its usual socket (for `docker exec ... docker`)
/// and on the bind-mounted one lab is given.
const BOOT: &str = "exec dockerd --host=unix:///var/run/docker.sock --host=unix:///run/lab/docker.sock";

/// The engines: one container per node, labelled with the cluster, and their socket dirs.
struct Bed {
    cluster: String,
    dir: tempfile::TempDir,
}

impl Bed {
    fn new(cluster: &str) -> Bed {
        remove_labelled(cluster);
        // Short: a unix socket's path must fit in 108 bytes.
        let dir = tempfile::Builder::new().prefix("lab-ext").tempdir_in("/tmp").expect("temp dir");
        let label = format!("lab.cluster={cluster}");
        let network = format!("{cluster}-extnet");
        docker(&["network", "create", "--label", &label, &network]).ok("create the bed's network");
        let bed = Bed { cluster: cluster.to_string(), dir };
        for node in NODES {
            let sockets = bed.dir.path().join(node);
            std::fs::create_dir_all(&sockets).expect("socket dir");
            let mount = format!("{}:/run/lab", sockets.display());
            let container = bed.container(node);
            let mut args: Vec<String> = [
                "run",
                "-d",
                "--name",
                &container,
                "--hostname",
                node,
                "--network",
                &network,
                "--label",
                &label,
                "--label",
                &format!("lab.node={node}"),
                "-v",
                &mount,
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            args.extend(lab_tests::dind_run_flags());
            args.extend([NODE_IMAGE.to_string(), "-c".into(), BOOT.into()]);
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            docker(&a).ok(&format!("start engine container {container}"));
        }
        for node in NODES {
            let container = bed.container(node);
            let socket = bed.socket(node);
            wait_for(&format!("dockerd in {container} on {}", socket.display()), Duration::from_secs(60), || {
                let r = node_exec(&container, &["docker", "-H", "unix:///run/lab/docker.sock", "info"]);
                if r.code == 0 && socket.exists() {
                    Ok(())
                } else {
                    Err(r.all())
                }
            });
        }
        bed
    }

    fn container(&self, node: &str) -> String {
        format!("{}-{node}", self.cluster)
    }

    fn socket(&self, node: &str) -> PathBuf {
        self.dir.path().join(node).join("docker.sock")
    }

    fn address(&self, node: &str) -> String {
        docker(&[
            "inspect",
            "--format",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
            &self.container(node),
        ])
        .ok("inspect an engine's address")
        .stdout
        .trim()
        .to_string()
    }

    /// `[drivers.static]` for every engine.
    fn table(&self) -> String {
        let engines: Vec<String> =
            NODES.iter().map(|n| format!("{n} = \"unix://{}\"", self.socket(n).display())).collect();
        let advertise: Vec<String> = NODES.iter().map(|n| format!("{n} = \"{}\"", self.address(n))).collect();
        format!(
            "[drivers.static]\nengines = {{ {} }}\nadvertise = {{ {} }}\n",
            engines.join(", "),
            advertise.join(", ")
        )
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        remove_labelled(&self.cluster);
    }
}

/// `lab ARGS --cluster CLUSTER` with the shipped driver's folder on PATH.
fn on(lab: &Lab, path: &str, args: &[&str]) -> Run {
    let mut a = args.to_vec();
    a.extend(["--cluster", &lab.cluster]);
    run(lab, path, &a)
}

/// The folder that holds `lab-driver-static`, first on PATH.
fn path_with_driver() -> String {
    let examples = lab_tests::root().join("examples/external-driver");
    format!("{}:{}", examples.display(), std::env::var("PATH").unwrap_or_default())
}

/// `lab ARGS` with the shipped driver's folder on PATH.
fn run(lab: &Lab, path: &str, args: &[&str]) -> Run {
    let o = lab.command(args).env("PATH", path).output().expect("run lab");
    Run {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

fn swarm_state(container: &str) -> String {
    node_exec(container, &["docker", "info", "--format", "{{.Swarm.LocalNodeState}}"]).stdout.trim().to_string()
}

/// Issue 10, item 6: the Python driver brings up a swarm with its registry in CI. Three
/// existing engines become a 1+2 swarm whose registry answers `{}` at `localhost:5000` inside
/// every node; a second `up` has nothing to do; `down` leaves every engine running and out of
/// the swarm.
#[test]
fn the_python_static_driver_brings_up_a_swarm_with_its_registry() {
    lab_tests::ensure_images();
    let lab = Lab::new("ext", env!("CARGO_BIN_EXE_lab-e2e"));
    let bed = Bed::new(&lab.cluster);
    let path = path_with_driver();
    std::fs::write(lab.cwd().join("lab.toml"), format!("driver = \"static\"\n{}", bed.table())).unwrap();

    let listed = run(&lab, &path, &["drivers"]);
    assert!(listed.stdout.lines().any(|l| l.starts_with("static ") && l.contains("lab-driver-static")), "{listed:?}");

    let up =
        on(&lab, &path, &["up", "--workers", "2", "--registry-image", REGISTRY_IMAGE]).ok("lab up --driver static");
    assert!(up.stderr.contains("with driver static"), "{}", up.stderr);
    for node in NODES {
        let container = bed.container(node);
        for url in ["http://127.0.0.1:5000/v2/", "http://localhost:5000/v2/"] {
            let r = node_exec(&container, &["curl", "-sS", "--max-time", "10", url]);
            assert_eq!((r.code, r.stdout.trim()), (0, "{}"), "{container} {url}: {}", r.all());
        }
        assert_eq!(swarm_state(&container), "active", "{container}");
    }
    let managers =
        node_exec(&bed.container("manager"), &["docker", "node", "ls", "--format", "{{.Hostname}} {{.ManagerStatus}}"])
            .ok("docker node ls");
    assert_eq!(managers.stdout.lines().count(), 3, "{}", managers.stdout);
    assert!(managers.stdout.contains("manager Leader"), "{}", managers.stdout);

    let plan = on(&lab, &path, &["plan"]).ok("lab plan");
    assert!(plan.all().contains("nothing to do"), "{}", plan.all());
    let again = on(&lab, &path, &["up"]).ok("second lab up");
    assert!(again.stderr.contains("nothing to change"), "{}", again.stderr);

    // Issue 18, item 7: a lab.toml that does not name the cluster cannot swap its driver's
    // program; one that names it can, and `plan` shows the change before `up` records it.
    let copy = tempfile::tempdir().expect("temp dir");
    let program = copy.path().join("lab-driver-static");
    std::fs::copy(lab_tests::root().join("examples/external-driver/lab-driver-static"), &program).unwrap();
    let table = format!("driver = \"static\"\n{}command = \"{}\"\n", bed.table(), program.display());
    std::fs::write(lab.cwd().join("lab.toml"), &table).unwrap();
    let plan = on(&lab, &path, &["plan"]).ok("lab plan with an unnamed lab.toml");
    assert!(plan.stdout.contains("nothing to do"), "{}", plan.all());
    assert!(plan.stderr.contains("lab: warning: lab.toml: ignored drivers.static.command"), "{}", plan.stderr);
    std::fs::write(lab.cwd().join("lab.toml"), format!("cluster = \"{}\"\n{table}", lab.cluster)).unwrap();
    let plan = on(&lab, &path, &["plan"]).ok("lab plan with a lab.toml naming the cluster");
    let change = format!("drivers.static.command: (unset) -> \"{}\"", program.display());
    assert!(plan.stdout.contains(&change) && plan.stdout.contains("needs no step"), "{}", plan.all());
    assert!(!plan.stderr.contains("warning"), "{}", plan.stderr);
    let up = on(&lab, &path, &["up"]).ok("lab up with a lab.toml naming the cluster");
    assert!(up.stderr.contains(&change), "{}", up.stderr);
    let state = lab.state_home().join(format!("lab/clusters/{}/state.json", lab.cluster));
    let state: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(state).unwrap()).unwrap();
    assert_eq!(state["driver_config"]["command"], program.display().to_string());
    let plan = on(&lab, &path, &["plan"]).ok("lab plan once the change is recorded");
    assert!(plan.stdout.contains("nothing to do") && !plan.stdout.contains("changes how"), "{}", plan.all());
    // A flag is explicit: the registry's TLS, changed by flag, shows in the plan.
    let plan = on(&lab, &path, &["plan", "--registry-tls", "mutual"]).ok("lab plan --registry-tls mutual");
    assert!(plan.stdout.contains(r#"registry.tls: "open" -> "mutual""#), "{}", plan.all());

    on(&lab, &path, &["down"]).ok("lab down");
    for node in NODES {
        let container = bed.container(node);
        assert_eq!(swarm_state(&container), "inactive", "{container} is still in a swarm");
        wait_for(&format!("the containers lab made on {container} to go"), Duration::from_secs(30), || {
            let r = node_exec(&container, &["docker", "ps", "-aq"]);
            if r.code == 0 && r.stdout.trim().is_empty() {
                Ok(())
            } else {
                Err(r.all())
            }
        });
    }
    assert!(!lab.state_home().join(format!("lab/clusters/{}", lab.cluster)).exists(), "down leaves state");
    let cluster = lab.cluster.clone();
    drop(lab);
    drop(bed);
    assert_eq!(lab_tests::labelled(&cluster), Vec::<String>::new(), "the bed is not cleaned up");
}
