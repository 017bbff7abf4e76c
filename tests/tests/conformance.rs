//! End-to-end: `lab driver-test NAME` (the conformance suite, `lab_core::conformance`) passes
//! for every driver lab ships, each against the real thing or its test bed: docker (nodes as
//! Docker-in-Docker containers from the offline image), ssh (the sshd+dockerd hosts of
//! `lab_tests::ssh`), virtualbox (the stand-in `tests/docker-machine`), qemu (one real VM) and the external Python
//! driver `examples/external-driver/lab-driver-static`; and it fails, naming the rules, for a
//! driver broken on purpose.
//!
//! `driver-test` makes its own throwaway cluster, `conf-<random>`, and says its name on
//! stderr; each test removes whatever carries that name's label afterwards, and checks first
//! that the suite left nothing behind.

use std::path::{Path, PathBuf};

use lab_tests::machine::Machines;
use lab_tests::ssh::SshBed;
use lab_tests::{ensure_images, labelled, remove_labelled, Lab, Run, NODE_IMAGE};

const BIN: &str = env!("CARGO_BIN_EXE_lab-e2e");

/// Every rule, in the order `driver-test` prints them.
const RULES: &[&str] =
    &["error-kinds", "observe", "create", "engine", "start", "exec", "destroy-missing", "capabilities", "cleanup"];

/// The throwaway cluster a run named on stderr; whatever carries its label is removed on drop.
struct Throwaway(String);

impl Throwaway {
    fn of(run: &Run) -> Throwaway {
        let name = run
            .stderr
            .lines()
            .find_map(|l| l.strip_prefix("lab: testing driver ").and_then(|l| l.split(" throwaway cluster ").nth(1)))
            .unwrap_or_else(|| panic!("driver-test did not name its cluster:\n{}", run.all()))
            .trim()
            .to_string();
        assert!(name.starts_with("conf-"), "{name}");
        Throwaway(name)
    }
}

impl Drop for Throwaway {
    fn drop(&mut self) {
        remove_labelled(&self.0);
    }
}

/// Each rule's word (`ok`, `FAIL`, `skip`), by rule, from the printed lines.
fn verdicts(run: &Run) -> Vec<(String, String)> {
    run.stdout
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            Some((w.next()?.to_string(), w.next()?.to_string()))
        })
        .map(|(word, rule)| (rule, word))
        .collect()
}

/// The run exited 0, printed every rule once, in order, and failed none; `skipped` are the
/// rules that must say `skip` (capabilities the driver does not claim), the rest `ok`.
fn conforms(run: &Run, lab: &Lab, skipped: &[&str]) -> Throwaway {
    let cluster = Throwaway::of(run);
    assert_eq!(run.code, 0, "driver-test failed:\n{}", run.all());
    let got = verdicts(run);
    let want: Vec<(String, String)> =
        RULES.iter().map(|r| (r.to_string(), if skipped.contains(r) { "skip" } else { "ok" }.to_string())).collect();
    assert_eq!(got, want, "{}", run.all());
    assert!(run.stderr.contains("conforms"), "{}", run.stderr);
    assert!(
        !lab.state_home().join("lab/clusters").join(&cluster.0).exists(),
        "driver-test left its state directory:\n{}",
        run.all()
    );
    cluster
}

/// The Docker engine the host's docker CLI uses, as a unix socket URL.
fn host_engine() -> String {
    match std::env::var("DOCKER_HOST") {
        Ok(h) if h.starts_with("unix://") => h,
        _ => "unix:///var/run/docker.sock".to_string(),
    }
}

/// PATH with `dir` first.
fn path_with(dir: &Path) -> String {
    format!("{}:{}", dir.display(), std::env::var("PATH").unwrap_or_default())
}

/// `lab ARGS` with PATH set to `path`.
fn run_with_path(lab: &Lab, path: &str, args: &[&str]) -> Run {
    let o = lab.command(args).env("PATH", path).output().expect("run lab");
    Run {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// Issue 10, item 7: the docker driver conforms, claiming everything, and leaves nothing
/// labelled with the throwaway cluster.
#[test]
fn the_docker_driver_conforms() {
    ensure_images();
    let lab = Lab::new("cdock", BIN);
    let run = lab.run(&["driver-test", "docker", "--node-image", NODE_IMAGE]);
    let cluster = conforms(&run, &lab, &[]);
    assert_eq!(labelled(&cluster.0), Vec::<String>::new(), "the suite left these:\n{}", run.all());
}

/// The qemu driver conforms, claiming everything, with one real VM (booted from lab's image,
/// which `.ci/run` builds), and leaves no QEMU or switch process behind.
#[test]
fn the_qemu_driver_conforms() {
    lab_tests::ensure_qemu_image();
    let lab = Lab::new("cqemu", BIN);
    let run =
        lab.run(&["driver-test", "qemu", "--driver-opt", "manager.memory=768", "--driver-opt", "worker.memory=768"]);
    let cluster = conforms(&run, &lab, &[]);
    let left: Vec<String> = lab_tests::processes_naming(&cluster.0)
        .into_iter()
        .filter(|c| c.contains("qemu-system") || c.contains("vde_switch"))
        .collect();
    assert!(left.is_empty(), "driver-test left these running: {left:?}\n{}", run.all());
}

/// The ssh driver conforms on one host of the ssh test bed: it cannot create, start or
/// destroy hosts, and says so.
#[test]
fn the_ssh_driver_conforms() {
    ensure_images();
    let lab = Lab::new("cssh", BIN);
    let bed = SshBed::new(&lab.cluster, &[("manager", "manager")]);
    let hosts = bed.write_hosts(&bed.hosts_toml());
    let known = bed.known_hosts();
    let run = lab.run(&[
        "driver-test",
        "ssh",
        "--hosts",
        &hosts.to_string_lossy(),
        "--known-hosts",
        &known.to_string_lossy(),
    ]);
    conforms(&run, &lab, &["start", "destroy-missing", "cleanup"]);
}

/// The virtualbox driver conforms against the stand-in docker-machine, and every machine it
/// made is gone from the store.
#[test]
fn the_virtualbox_driver_conforms() {
    ensure_images();
    let lab = Lab::new("cvbox", BIN);
    let machines = Machines::new();
    let mut cmd = lab.command(&["driver-test", "virtualbox"]);
    machines.apply(&mut cmd);
    let o = cmd.output().expect("run lab");
    let run = Run {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    };
    let cluster = conforms(&run, &lab, &[]);
    assert_eq!(machines.listed(), Vec::<String>::new(), "machines left in the store:\n{}", run.all());
    // The host-only network stays, as VirtualBox keeps its host-only adapter after
    // `docker-machine rm`; the stand-in models that, and the test's cleanup removes it.
    let host_only = format!("network {}-vboxnet0", cluster.0);
    let left: Vec<String> = labelled(&cluster.0).into_iter().filter(|l| *l != host_only).collect();
    assert_eq!(left, Vec::<String>::new(), "the stand-in left these:\n{}", run.all());
    let log = machines.invocations();
    assert!(log.iter().any(|l| l.starts_with("docker-machine create ")), "{log:#?}");
    assert!(log.iter().any(|l| l.starts_with("docker-machine rm ")), "{log:#?}");
}

/// The shipped external driver conforms, found on PATH, with this machine's own engine as
/// its one node: once with `local` (it claims exec, and runs commands here), once without
/// (exec is not claimed and answers unsupported).
#[test]
fn the_shipped_python_driver_conforms() {
    let lab = Lab::new("cstatic", BIN);
    let path = path_with(&lab_tests::root().join("examples/external-driver"));
    let engines = format!("engines={{manager=\"{}\"}}", host_engine());
    let base = ["driver-test", "static", "--driver-opt", &engines, "--driver-opt", "advertise={manager=\"127.0.0.1\"}"];
    let mut local = base.to_vec();
    local.extend(["--driver-opt", "local=[\"manager\"]"]);
    let run = run_with_path(&lab, &path, &local);
    conforms(&run, &lab, &["start", "destroy-missing", "cleanup"]);
    let run = run_with_path(&lab, &path, &base);
    conforms(&run, &lab, &["start", "exec", "destroy-missing", "cleanup"]);
}

/// An external driver broken on purpose, the way a plugin could be: its `create` makes a
/// second machine when asked again, and its `exec` runs argv through a shell. Everything
/// else it does right.
const BROKEN: &str = r#"#!/usr/bin/env python3
import json, subprocess, sys

def send(m):
    sys.stdout.write(json.dumps(m) + "\n")
    sys.stdout.flush()

caps = {"create": True, "destroy": True, "start": False, "exec": True, "shell": False}
hello = json.loads(sys.stdin.readline())
answer = {"lab_protocol": 1, "description": "broken on purpose", "capabilities": caps}
if hello.get("cluster") is None:
    send({"ok": answer})
    sys.exit(0)
config = hello.get("config") or {}
unknown = sorted(set(config) - {"engine"})
if unknown:
    send({"error": {"kind": "input", "message": "unknown key %r" % unknown[0], "field": unknown[0]}})
    sys.exit(0)
send({"ok": answer})
machines = []
for line in sys.stdin:
    req = json.loads(line)
    op, rid = req["op"], req["id"]
    if op == "observe":
        ok = [{"name": n, "state": "running", "address": "127.0.0.1"} for n in machines]
    elif op == "create":
        name = req["node"]["name"]
        machines.append(name if name not in machines else "%s-%d" % (name, len(machines) + 1))
        ok = {"name": name, "state": "running", "address": "127.0.0.1"}
    elif op == "destroy":
        machines = [m for m in machines if m != req["node"]]
        ok = None
    elif op == "teardown":
        ok = None
    elif op == "engine":
        ok = {"host": config["engine"], "advertise_addr": "127.0.0.1"}
    elif op == "exec":
        p = subprocess.run(" ".join(req["argv"]), shell=True, capture_output=True, text=True)
        ok = {"status": p.returncode, "stdout": p.stdout, "stderr": p.stderr}
    else:
        send({"id": rid, "error": {"kind": "unsupported", "message": "no " + op}})
        continue
    send({"id": rid, "ok": ok})
"#;

/// Writes [`BROKEN`] as `lab-driver-broken` in `dir`.
fn broken_driver(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("lab-driver-broken");
    std::fs::write(&path, BROKEN).expect("write the broken driver");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

/// A driver that breaks two rules makes `driver-test` exit 1 naming exactly those, while
/// the rules it keeps pass.
#[test]
fn a_broken_external_driver_fails_naming_each_broken_rule() {
    let lab = Lab::new("cbroken", BIN);
    let dir = tempfile::tempdir().expect("temp dir");
    broken_driver(dir.path());
    let engine = format!("engine={}", host_engine());
    let run = run_with_path(&lab, &path_with(dir.path()), &["driver-test", "broken", "--driver-opt", &engine]);
    let _cluster = Throwaway::of(&run);
    assert_eq!(run.code, 1, "{}", run.all());
    let got = verdicts(&run);
    let word = |rule: &str| got.iter().find(|(r, _)| r == rule).map(|(_, w)| w.as_str()).unwrap_or("missing");
    for rule in ["create", "exec"] {
        assert_eq!(word(rule), "FAIL", "{rule}:\n{}", run.all());
    }
    for rule in ["error-kinds", "observe", "engine", "destroy-missing", "capabilities", "cleanup"] {
        assert_eq!(word(rule), "ok", "{rule}:\n{}", run.all());
    }
    assert_eq!(word("start"), "skip", "{}", run.all());
    assert!(run.stdout.contains("two creates of manager made 2 machines"), "{}", run.stdout);
    assert!(run.stderr.contains("driver broken: does not conform: rules broken: create, exec"), "{}", run.stderr);
    // Bad input is still exit 2, naming the field: the driver refuses the unknown key.
    let bad = run_with_path(&lab, &path_with(dir.path()), &["driver-test", "broken", "--driver-opt", "colour=blue"]);
    assert_eq!(bad.code, 2, "{}", bad.all());
    assert!(bad.stderr.contains("[drivers.broken] colour"), "{}", bad.stderr);
}

/// Bad input is exit 2 naming what is wrong, before anything is made: an unknown driver (with
/// the known ones listed), another driver's flag, a bad value in the driver's table. And
/// `--output json` carries every rule's verdict.
#[test]
fn bad_input_is_exit_2_and_json_carries_every_rule() {
    let lab = Lab::new("cinput", BIN);
    let r = lab.run(&["driver-test", "nosuch"]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr.contains("unknown driver \"nosuch\"") && r.stderr.contains("docker, qemu, ssh, virtualbox"),
        "{}",
        r.stderr
    );
    let r = lab.run(&["driver-test", "docker", "--hosts", "hosts.toml"]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("--hosts: is an option of the ssh driver, not of \"docker\""), "{}", r.stderr);
    let r = lab.run(&["driver-test", "docker", "--driver-opt", "privileged=sometimes"]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("[drivers.docker]") && r.stderr.contains("sometimes"), "{}", r.stderr);
    assert!(r.stdout.is_empty(), "{}", r.stdout);
    assert!(
        !lab.state_home().join("lab/clusters").exists()
            || std::fs::read_dir(lab.state_home().join("lab/clusters")).unwrap().next().is_none()
    );

    let path = path_with(&lab_tests::root().join("examples/external-driver"));
    let engines = format!("engines={{manager=\"{}\"}}", host_engine());
    let r = run_with_path(
        &lab,
        &path,
        &[
            "driver-test",
            "static",
            "--output",
            "json",
            "--driver-opt",
            &engines,
            "--driver-opt",
            "advertise={manager=\"127.0.0.1\"}",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.all());
    let v: serde_json::Value =
        serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", r.stdout));
    assert_eq!(v["driver"], "static");
    assert_eq!(v["conforms"], true);
    let rules: Vec<&str> = v["rules"].as_array().unwrap().iter().map(|r| r["rule"].as_str().unwrap()).collect();
    assert_eq!(rules, RULES);
    assert!(
        v["rules"].as_array().unwrap().iter().all(|r| r["verdict"] == "passed" || r["verdict"] == "skipped"),
        "{v:#}"
    );
}
