//! Test bed for the ssh driver: "existing hosts" made as Docker-in-Docker containers from the
//! offline node image, each running sshd and dockerd, reachable on their own network at
//! their own IP address, with a freshly generated client key authorised for root, and a
//! hosts file that lists them.
//!
//! Everything is labelled `lab.cluster=<cluster>` so [`crate::remove_labelled`] (and
//! [`crate::Lab`]'s drop) removes it; the host containers' `/var/lib/docker` is an anonymous
//! volume that goes with them. Keys and known-hosts files live in a temporary directory that
//! goes when the bed is dropped; nothing is ever written to the user's `~/.ssh`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::{docker, node_exec, remove_labelled, wait_for, NODE_IMAGE};

// The docker driver's capability set: engines that refuse `--privileged` lack SYS_RESOURCE.

/// What a host container runs: the authorised key from the environment, host keys, sshd in
/// the background (on port 22, and on 2222 for tests of `[host]:port` known-hosts entries),
/// dockerd in the foreground.
const BOOT: &str = r#"set -e
mkdir -p /root/.ssh /run/sshd
printf '%s\n' "$LAB_AUTHORIZED_KEY" > /root/.ssh/authorized_keys
chmod 700 /root/.ssh && chmod 600 /root/.ssh/authorized_keys
ssh-keygen -A >/dev/null
/usr/sbin/sshd -p 22 -p 2222
exec dockerd --host=unix:///var/run/docker.sock"#;

/// One host of the bed.
#[derive(Debug, Clone)]
pub struct BedHost {
    /// Its name in the hosts file (and its hostname).
    pub name: String,
    /// `manager` or `worker`.
    pub role: String,
    /// Its container.
    pub container: String,
    /// Its IP address on the bed's network.
    pub address: String,
}

/// Hosts with sshd and dockerd, a client key, and an empty known-hosts file.
pub struct SshBed {
    /// The cluster whose label everything carries.
    pub cluster: String,
    /// The hosts, in the order given.
    pub hosts: Vec<BedHost>,
    dir: tempfile::TempDir,
}

/// Runs `ssh-keygen` to make an ed25519 key pair at `path` (and `path.pub`), no passphrase.
pub fn keygen(path: &Path) {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "lab-e2e", "-f"])
        .arg(path)
        .output()
        .expect("run ssh-keygen (package openssh-client)");
    assert!(out.status.success(), "ssh-keygen failed: {}", String::from_utf8_lossy(&out.stderr));
}

impl SshBed {
    /// Starts one host container per `(name, role)`, all at once, and waits until each
    /// answers on port 22 and its dockerd is up. Leftovers labelled with `cluster` are removed
    /// first.
    pub fn new(cluster: &str, hosts: &[(&str, &str)]) -> SshBed {
        remove_labelled(cluster);
        let dir = tempfile::Builder::new().prefix("lab-ssh").tempdir().expect("temp dir");
        keygen(&dir.path().join("id_ed25519"));
        std::fs::write(dir.path().join("known_hosts"), "").expect("known_hosts");
        let public = std::fs::read_to_string(dir.path().join("id_ed25519.pub")).expect("public key");
        let label = format!("lab.cluster={cluster}");
        let network = format!("{cluster}-sshnet");
        docker(&["network", "create", "--label", &label, &network]).ok("create the bed's network");
        let mut bed = SshBed { cluster: cluster.into(), hosts: Vec::new(), dir };
        for (name, role) in hosts {
            let container = format!("{cluster}-{name}");
            let env = format!("LAB_AUTHORIZED_KEY={}", public.trim());
            let mut args: Vec<String> = [
                "run",
                "-d",
                "--name",
                &container,
                "--hostname",
                name,
                "--network",
                &network,
                "--label",
                &label,
                "--label",
                &format!("lab.node={name}"),
                "--env",
                &env,
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            args.extend(crate::dind_run_flags());
            args.extend([NODE_IMAGE.to_string(), "-c".into(), BOOT.into()]);
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            docker(&a).ok(&format!("start host container {container}"));
            let address = docker(&[
                "inspect",
                "--format",
                "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                &container,
            ])
            .ok("inspect host address")
            .stdout
            .trim()
            .to_string();
            bed.hosts.push(BedHost { name: name.to_string(), role: role.to_string(), container, address });
        }
        for h in &bed.hosts {
            wait_for(&format!("sshd and dockerd on {}", h.container), Duration::from_secs(60), || {
                let r = node_exec(&h.container, &["sh", "-c", "docker info >/dev/null && pgrep -x sshd >/dev/null"]);
                if r.code == 0 {
                    Ok(())
                } else {
                    Err(r.all())
                }
            });
        }
        bed
    }

    /// The client's private key (authorised on every host).
    pub fn key(&self) -> PathBuf {
        self.dir.path().join("id_ed25519")
    }

    /// The known-hosts file lab is pointed at (empty at first).
    pub fn known_hosts(&self) -> PathBuf {
        self.dir.path().join("known_hosts")
    }

    /// A path in the bed's temporary directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A hosts file for every host, root with the bed's key.
    pub fn hosts_toml(&self) -> String {
        let mut s = format!("[defaults]\nuser = \"root\"\nidentity_file = \"{}\"\n", self.key().display());
        for h in &self.hosts {
            s.push_str(&format!(
                "\n[[hosts]]\nname = \"{}\"\naddress = \"{}\"\nrole = \"{}\"\n",
                h.name, h.address, h.role
            ));
        }
        s
    }

    /// Writes `text` as a hosts file in the bed's directory and returns its path.
    pub fn write_hosts(&self, text: &str) -> PathBuf {
        let p = self.path("hosts.toml");
        std::fs::write(&p, text).expect("write hosts.toml");
        p
    }

    /// The host called `name`.
    pub fn host(&self, name: &str) -> &BedHost {
        self.hosts.iter().find(|h| h.name == name).unwrap_or_else(|| panic!("no bed host {name}"))
    }
}

impl Drop for SshBed {
    fn drop(&mut self) {
        remove_labelled(&self.cluster);
    }
}
