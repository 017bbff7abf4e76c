//! `[drivers.ssh]` in lab.toml, which the CLI also fills from the flags this driver declares
//! (`--hosts`, `--known-hosts`, `--host-key-policy`; see `lib.rs`).

use std::path::PathBuf;

use lab_ssh::HostKeyPolicy;
use serde::{Deserialize, Serialize};

/// Default seconds to wait for a host's TCP port to accept a connection.
pub const DEFAULT_CONNECT_TIMEOUT: u64 = 10;
/// Default seconds one SSH operation (handshake, authentication, opening a channel, running a
/// command) may take once connected.
pub const DEFAULT_OPERATION_TIMEOUT: u64 = 30;

/// The ssh driver's settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SshConfig {
    /// The hosts file (`--hosts`, or `hosts = "..."` in lab.toml). Required.
    pub hosts: Option<PathBuf>,
    /// OpenSSH known-hosts file; default `~/.ssh/known_hosts`.
    pub known_hosts: Option<PathBuf>,
    /// OpenSSH's global known-hosts file, read but never written; default
    /// `/etc/ssh/ssh_known_hosts` and `/etc/ssh/ssh_known_hosts2`, as for `ssh`.
    pub global_known_hosts: Option<PathBuf>,
    /// See [`HostKeyPolicy`].
    pub host_key_policy: HostKeyPolicy,
    /// Seconds to wait for a TCP connection to a host.
    pub connect_timeout: u64,
    /// Seconds one SSH operation may take.
    pub operation_timeout: u64,
}

impl Default for SshConfig {
    fn default() -> Self {
        SshConfig {
            hosts: None,
            known_hosts: None,
            global_known_hosts: None,
            host_key_policy: HostKeyPolicy::AcceptNew,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            operation_timeout: DEFAULT_OPERATION_TIMEOUT,
        }
    }
}
