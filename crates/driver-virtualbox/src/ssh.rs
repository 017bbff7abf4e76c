//! SSH to the machines with their host keys checked: what `exec` and `lab ssh` use instead of
//! `docker-machine ssh`, which turns host key checking off.
//!
//! Each machine's host keys are learnt once, right after `docker-machine create` made it, and
//! kept in lab's own known-hosts file for the cluster (`virtualbox/known_hosts` in its state
//! directory), under the machine's name (OpenSSH's `HostKeyAlias`), because its host-only
//! address may change when it restarts. Every later connection checks them strictly: lab's
//! own commands through [`lab_ssh`] (as the ssh and qemu drivers connect), `lab ssh` through
//! OpenSSH with the same file. Everything here blocks (docker-machine runs, libssh2): callers
//! run it on a blocking thread.
//!
//! How the first key is learnt, and why it can be trusted: through `docker-machine ssh NAME`,
//! which reads the public host keys from the machine's own files. That channel checks no
//! host key, but it is the one docker-machine itself provisioned the machine over a moment
//! earlier (for VirtualBox, a port forward on 127.0.0.1 to the VM, with the key
//! docker-machine just made for it), installing the engine's TLS certificates that lab trusts
//! from then on. Whoever could intercept it then could already have handed lab a false engine;
//! reading the keys through it adds nothing lab did not already take on trust from
//! docker-machine. Later connections go to the host-only address, and are checked.

use std::path::Path;
use std::time::Duration;

use lab_core::{Error, Result};
use lab_ssh::{known_hosts, Endpoint, HostKeyPolicy, KnownHostsFiles, Target};

use crate::client;
use crate::error::{failed, not_run};

/// Each docker-machine run here: quick reads.
const QUICK: Duration = Duration::from_secs(60);
/// The machine's public host keys, wherever its sshd keeps them (Debian's `/etc/ssh`,
/// boot2docker's `/usr/local/etc/ssh`). One line for the remote shell.
const READ_HOST_KEYS: &str =
    "for f in /etc/ssh/ssh_host_*_key.pub /usr/local/etc/ssh/ssh_host_*_key.pub; do [ -r \"$f\" ] && cat \"$f\"; done; true";

/// Reads `machine`'s host keys through docker-machine and makes them the only record for it.
pub(crate) fn learn(program: &Path, known: &Path, node: &str, machine: &str) -> Result<()> {
    let step = format!("docker-machine ssh {machine} (read its SSH host keys)");
    let args = vec!["ssh".to_string(), machine.to_string(), READ_HOST_KEYS.to_string()];
    let out = client::run_blocking(program, &args, QUICK).map_err(|e| not_run(node, &step, e))?;
    if !out.success() {
        return Err(failed(node, &step, &out).into());
    }
    let lines = known_hosts::lines_for(machine, &out.stdout);
    if lines.is_empty() {
        return Err(Error::node(node, step, format!("it printed no host key:\n{}", out.stdout.trim())));
    }
    known_hosts::set_host(known, machine, &lines).map_err(|e| Error::caused(node, "record its SSH host keys", e))
}

/// Forgets `machine`'s host keys (it is gone; a new machine of that name has new ones).
pub(crate) fn forget(known: &Path, node: &str, machine: &str) -> Result<()> {
    known_hosts::set_host(known, machine, &[]).map_err(|e| Error::caused(node, "forget its SSH host keys", e))
}

/// How `node`'s machine is reached over SSH: at its host-only address (`docker-machine ip`),
/// as docker-machine's user with docker-machine's key for it (`docker-machine inspect`), its
/// host key checked strictly against the record. A machine with no record (made by a lab that
/// kept none) has its keys learnt first, as at create, with a warning.
pub(crate) fn target(program: &Path, known: &Path, node: &str, machine: &str) -> Result<Target> {
    let read = |args: Vec<String>, step: String| -> Result<String> {
        let out = client::run_blocking(program, &args, QUICK).map_err(|e| not_run(node, &step, e))?;
        if out.success() {
            Ok(out.stdout)
        } else {
            Err(failed(node, &step, &out).into())
        }
    };
    let ip = read(vec!["ip".into(), machine.into()], format!("docker-machine ip {machine}"))?.trim().to_string();
    if ip.parse::<std::net::IpAddr>().is_err() {
        return Err(Error::node(node, format!("docker-machine ip {machine}"), format!("not an IP address: {ip:?}")));
    }
    let step = format!("docker-machine inspect {machine}");
    let config = read(vec!["inspect".into(), machine.into()], step.clone())?;
    let (user, key) = client::ssh_login(&config).map_err(|e| Error::node(node, &step, e))?;
    if !known_hosts::records(known, machine).map_err(|e| Error::caused(node, "read its SSH host keys", e))? {
        tracing::warn!(
            node,
            "no SSH host key of {machine} is recorded (it was made by a lab that kept none); reading it through \
             docker-machine, as at create"
        );
        learn(program, known, node, machine)?;
    }
    let endpoint = Endpoint {
        name: node.to_string(),
        address: ip,
        port: 22,
        user,
        identity_file: Some(key),
        host_key_alias: Some(machine.to_string()),
    };
    Ok(Target::new(
        endpoint,
        KnownHostsFiles { user: known.to_path_buf(), global: Vec::new() },
        HostKeyPolicy::Strict,
        Duration::from_secs(10),
        Duration::from_secs(60),
        None,
    ))
}
