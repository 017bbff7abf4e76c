//! lab's SSH transport: how a driver reaches a machine's Docker engine and runs commands on it
//! over SSH. Shared by the ssh driver (hosts that exist), the qemu driver (VMs lab makes) and
//! the virtualbox driver (commands on docker-machine's machines, and `lab ssh`).
//!
//! - [`Target`]: one machine and how to reach it, with bounded waits ([`client`]).
//! - Host keys are checked against OpenSSH known-hosts files on every connection
//!   ([`known_hosts`]), under a [`HostKeyPolicy`].
//! - [`Remote`]: a machine's Docker engine as a local unix socket that leads over SSH to its
//!   `/var/run/docker.sock` ([`tunnel`]), so bollard reaches it as it reaches a local engine,
//!   and commands run there from argv, each argument quoted, never a pasted shell string.
//!
//! libssh2 blocks: everything here runs on std threads of its own, never on the async
//! runtime's workers, and every wait is bounded.
#![deny(missing_docs)]

pub mod client;
pub mod known_hosts;
mod remote;
mod tunnel;

pub use client::{shell_quote, SshError, Stage, Target};
pub use known_hosts::KnownHostsFiles;
pub use remote::{Hints, Remote};

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// One machine to reach over SSH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The node's name, as errors and threads name it.
    pub name: String,
    /// IP address or DNS name to connect to.
    pub address: String,
    /// SSH port.
    pub port: u16,
    /// SSH user.
    pub user: String,
    /// Private key to authenticate with; `None`: ssh-agent, then the usual `~/.ssh` keys.
    pub identity_file: Option<PathBuf>,
    /// The name its host key is recorded and looked up under, when that is not its address
    /// (OpenSSH's `HostKeyAlias`): a machine whose address may change keeps its key.
    pub host_key_alias: Option<String>,
}

impl Endpoint {
    /// The name its host key is looked up under: the alias, else the address.
    pub fn host_key_name(&self) -> &str {
        self.host_key_alias.as_deref().unwrap_or(&self.address)
    }
}

/// What to do with a host key that is not in the known-hosts file yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum HostKeyPolicy {
    /// Record an unknown host's key (OpenSSH's `StrictHostKeyChecking=accept-new`); a changed
    /// key is always refused.
    #[default]
    AcceptNew,
    /// Refuse hosts whose key is not recorded already.
    Strict,
}

impl HostKeyPolicy {
    /// The value of OpenSSH's `StrictHostKeyChecking` with the same meaning.
    pub fn openssh(self) -> &'static str {
        match self {
            HostKeyPolicy::AcceptNew => "accept-new",
            HostKeyPolicy::Strict => "yes",
        }
    }
}
