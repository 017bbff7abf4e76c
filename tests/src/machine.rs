//! Test bed for the virtualbox driver: the stand-in docker-machine (`tests/docker-machine`).
//!
//! docker-machine and VirtualBox cannot be installed where the suite runs, so
//! `tests/docker-machine` stands in for docker-machine 0.16.2: the subcommands lab uses, with
//! the real tool's output formats and exit statuses, and behind each "machine" a
//! Docker-in-Docker container whose dockerd serves TLS on 2376 with certificates kept where
//! docker-machine keeps them. Everything above the hypervisor is real.
//!
//! [`Machines`] gives each test its own docker-machine store (`MACHINE_STORAGE_PATH`) and a
//! directory holding only `docker-machine`, put first on PATH of the `lab` commands it
//! prepares; the stand-in records every invocation in the store's `invocations.log`.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::{root, Lab, Run};

/// A docker-machine store and the stand-in on PATH, for one test.
pub struct Machines {
    store: tempfile::TempDir,
    bin: tempfile::TempDir,
}

impl Default for Machines {
    fn default() -> Self {
        Self::new()
    }
}

impl Machines {
    /// A new, empty store.
    pub fn new() -> Machines {
        let store = tempfile::Builder::new().prefix("lab-dm").tempdir().expect("temp machine store");
        let bin = tempfile::Builder::new().prefix("lab-dm-bin").tempdir().expect("temp bin dir");
        symlink(root().join("tests/docker-machine"), bin.path().join("docker-machine")).expect("link the stand-in");
        Machines { store, bin }
    }

    /// `$MACHINE_STORAGE_PATH`.
    pub fn store(&self) -> &Path {
        self.store.path()
    }

    /// The directory docker-machine keeps machine `name` in.
    pub fn machine_dir(&self, name: &str) -> PathBuf {
        self.store().join("machines").join(name)
    }

    /// The directory that holds the stand-in, to put first on PATH.
    pub fn bin_dir(&self) -> &Path {
        self.bin.path()
    }

    /// PATH with the stand-in first.
    pub fn path_var(&self) -> std::ffi::OsString {
        let mut dirs = vec![self.bin_dir().to_path_buf()];
        if let Some(p) = std::env::var_os("PATH") {
            dirs.extend(std::env::split_paths(&p));
        }
        std::env::join_paths(dirs).expect("PATH")
    }

    /// Points `cmd` at this store and puts the stand-in first on its PATH.
    pub fn apply<'a>(&self, cmd: &'a mut Command) -> &'a mut Command {
        cmd.env("PATH", self.path_var()).env("MACHINE_STORAGE_PATH", self.store()).env_remove("FAKE_MACHINE_LOG")
    }

    /// Runs the stand-in itself (as a user would run docker-machine).
    pub fn run(&self, args: &[&str]) -> Run {
        let mut c = Command::new(self.bin_dir().join("docker-machine"));
        c.args(args).stdin(Stdio::null());
        self.apply(&mut c);
        output(&mut c)
    }

    /// Every recorded invocation, one line each, argv shell-quoted:
    /// `docker-machine create -d virtualbox ... e2e1-0-vbox-manager`.
    pub fn invocations(&self) -> Vec<String> {
        std::fs::read_to_string(self.store().join("invocations.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// `lab ARGS --cluster <cluster>` with this store and the stand-in, plus `env`.
    pub fn lab(&self, lab: &Lab, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut a = args.to_vec();
        a.extend(["--cluster", &lab.cluster]);
        self.lab_exactly(lab, &a, env)
    }

    /// `lab ARGS` (nothing added) with this store and the stand-in, plus `env`.
    pub fn lab_exactly(&self, lab: &Lab, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut c = lab.command(args);
        self.apply(&mut c);
        for (k, v) in env {
            c.env(k, v);
        }
        output(&mut c)
    }

    /// The names `docker-machine ls -q` lists.
    pub fn listed(&self) -> Vec<String> {
        self.run(&["ls", "-q"]).stdout.lines().map(str::to_string).collect()
    }
}

fn output(c: &mut Command) -> Run {
    let o = c.output().expect("run a command");
    Run {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// A [`Lab`] driving the virtualbox driver against its own [`Machines`]. On drop it runs
/// `lab down` with the stand-in (so the machines go the way a user's would), before the
/// [`Lab`]'s own cleanup removes anything labelled with the cluster.
pub struct VirtualBoxLab {
    /// The lab under test (dropped after `down`).
    pub lab: Lab,
    /// Its docker-machine store and stand-in.
    pub machines: Machines,
}

impl VirtualBoxLab {
    /// A new cluster `e2e...-<tag>` and an empty store; `bin` is the lab binary.
    pub fn new(tag: &str, bin: &str) -> VirtualBoxLab {
        VirtualBoxLab { lab: Lab::new(tag, bin), machines: Machines::new() }
    }

    /// The machine of `node`: `<cluster>-<node>` (also its container's name).
    pub fn machine(&self, node: &str) -> String {
        format!("{}-{node}", self.lab.cluster)
    }

    /// `lab ARGS --cluster <cluster>` with the stand-in.
    pub fn on(&self, args: &[&str]) -> Run {
        self.machines.lab(&self.lab, args, &[])
    }

    /// `lab up --driver virtualbox` with the offline registry image and `extra` flags.
    pub fn up(&self, extra: &[&str]) -> Run {
        self.up_with(extra, &[])
    }

    /// [`VirtualBoxLab::up`] with extra environment (e.g. `FAKE_MACHINE_FAIL_CREATE`).
    pub fn up_with(&self, extra: &[&str], env: &[(&str, &str)]) -> Run {
        let mut a = vec!["up", "--driver", "virtualbox", "--registry-image", crate::REGISTRY_IMAGE];
        a.extend_from_slice(extra);
        self.machines.lab(&self.lab, &a, env)
    }
}

impl Drop for VirtualBoxLab {
    fn drop(&mut self) {
        let _ = self.on(&["down"]);
    }
}
