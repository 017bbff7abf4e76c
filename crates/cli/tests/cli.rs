//! The real `lab` binary on bad input: exit status 2, one message naming the flag, file,
//! field or variable and the value, and nothing created (no state, no containers).

use std::path::Path;
use std::process::{Command, Output};

struct Env {
    state: tempfile::TempDir,
    cwd: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        Env { state: tempfile::tempdir().unwrap(), cwd: tempfile::tempdir().unwrap() }
    }

    fn lab(&self, args: &[&str], vars: &[(&str, &str)]) -> Output {
        let mut c = Command::new(env!("CARGO_BIN_EXE_lab"));
        c.args(args).current_dir(self.cwd.path()).env("XDG_STATE_HOME", self.state.path());
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("LAB_") {
                c.env_remove(k);
            }
        }
        for (k, v) in vars {
            c.env(k, v);
        }
        c.output().unwrap()
    }

    fn write(&self, name: &str, text: &str) {
        std::fs::write(self.cwd.path().join(name), text).unwrap();
    }

    /// Asserts exit 2, a single `lab: error:` line containing every `needle`, and that no
    /// state was written.
    fn bad(&self, args: &[&str], vars: &[(&str, &str)], needles: &[&str]) {
        let out = self.lab(args, vars);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "lab {args:?}: {stderr}");
        let line = stderr
            .lines()
            .find(|l| l.starts_with("lab: error: ") || l.starts_with("error: "))
            .unwrap_or_else(|| panic!("no error line: {stderr}"));
        for n in needles {
            assert!(line.contains(n), "lab {args:?}: {line:?} lacks {n:?}");
        }
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(!self.state.path().join("lab").exists(), "lab {args:?} wrote state");
    }
}

#[test]
fn bad_flags_exit_2_naming_flag_and_value() {
    let e = Env::new();
    e.bad(&["up", "--cluster", "Bad_Name"], &[], &["--cluster", "\"Bad_Name\""]);
    e.bad(&["up", "--cluster", &"a".repeat(33)], &[], &["--cluster", "longer than 32"]);
    e.bad(&["up", "--driver", "nope"], &[], &["--driver", "\"nope\"", "docker, ssh, virtualbox"]);
    e.bad(&["up", "--managers", "0"], &[], &["managers", "0"]);
    e.bad(&["up", "--workers", "500"], &[], &["workers", "500"]);
    e.bad(&["up", "--workers", "two"], &[], &["--workers", "two"]);
    e.bad(&["up", "--worker-label", "zone"], &[], &["--worker-label", "zone"]);
    e.bad(&["up", "--worker-label", "lab.role=x"], &[], &["--worker-label", "lab.role"]);
    e.bad(&["up", "--registry-mode", "magic"], &[], &["--registry-mode", "magic"]);
    e.bad(&["up", "--config", "missing.toml"], &[], &["--config", "missing.toml"]);
    e.bad(&["status", "--cluster", "nothere"], &[], &["--cluster", "nothere", "lab ls"]);
    e.bad(&["frobnicate"], &[], &["frobnicate"]);
}

#[test]
fn bad_config_exits_2_naming_file_field_and_value() {
    let e = Env::new();
    e.write("lab.toml", "wrokers = 3\n");
    e.bad(&["up"], &[], &["lab.toml", "wrokers"]);
    e.write("lab.toml", "workers = \"many\"\n");
    e.bad(&["plan"], &[], &["lab.toml", "workers", "many"]);
    e.write("lab.toml", "[drivers.docker]\nnode_imgae = \"x\"\n");
    e.bad(&["up"], &[], &["lab.toml", "drivers.docker", "node_imgae"]);
    e.write("lab.toml", "cluster = \"UPPER\"\n");
    e.bad(&["up"], &[], &["lab.toml", "cluster", "UPPER"]);
    e.write("lab.toml", "workers = [\n");
    e.bad(&["up"], &[], &["lab.toml"]);
    std::fs::remove_file(e.cwd.path().join("lab.toml")).unwrap();
    e.bad(&["up"], &[("LAB_WORKERS", "lots")], &["LAB_WORKERS", "lots"]);
    e.bad(&["up"], &[("LAB_REGISTRY__MODE", "sideways")], &["LAB_REGISTRY__MODE", "sideways"]);
}

#[test]
fn drivers_lists_every_bundled_driver() {
    let out = Env::new().lab(&["drivers"], &[]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let names: Vec<&str> = text.lines().filter_map(|l| l.split_whitespace().next()).collect();
    assert_eq!(names, ["docker", "ssh", "virtualbox"], "{text}");
}

#[test]
fn ssh_without_a_hosts_file_is_bad_input() {
    let e = Env::new();
    e.bad(&["up", "--driver", "ssh"], &[], &["--hosts"]);
    e.bad(&["up", "--driver", "ssh", "--hosts", "nowhere.toml"], &[], &["nowhere.toml"]);
}

#[test]
fn ls_with_no_clusters_is_an_empty_table_and_json_list() {
    let e = Env::new();
    let out = e.lab(&["ls", "--output", "json"], &[]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]");
    let out = e.lab(&["ls"], &[]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1, "header only");
}

#[test]
fn even_managers_warn_about_quorum() {
    let e = Env::new();
    // `plan` reads but never writes: the warning shows and nothing is created.
    let out = e.lab(&["plan", "--managers", "2", "--cluster", "quorum-warn-test"], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("warning: 2 managers"), "{stderr}");
    assert!(!e.state.path().join("lab").exists());
}

/// Issue 7, item 3: a flag of another driver is refused, not silently ignored.
#[test]
fn flags_of_another_driver_exit_2_naming_flag_and_driver() {
    let e = Env::new();
    e.bad(&["up", "--hosts", "hosts.toml"], &[], &["--hosts", "ssh driver", "docker"]);
    e.bad(&["plan", "--force"], &[], &["--force", "ssh driver", "docker"]);
    e.bad(&["up", "--driver", "ssh", "--node-image", "x"], &[], &["--node-image", "docker driver", "ssh"]);
}
