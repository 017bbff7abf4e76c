//! The ssh driver: existing hosts that run Docker become the swarm, reached over SSH.
//!
//! The hosts come from a hosts file ([`hosts`]), validated completely before any connection.
//! The driver never creates or deletes a host: `create` and `start` only confirm a host
//! answers, and `down` (core's `teardown::dismantle`) leaves every host as it was apart from
//! what lab deployed. Each host's Docker engine is reached through a local unix socket that
//! leads over SSH (libssh2, on std threads) to the host's `/var/run/docker.sock`
//! ([`lab_ssh`], shared with the qemu driver), so the core drives it with bollard exactly as it drives a local engine, and
//! no command string built from the hosts file ever reaches a remote shell. Host keys are
//! checked against OpenSSH's known-hosts file on every connection.
#![deny(missing_docs)]

mod config;
mod driver;
pub mod hosts;

pub use config::SshConfig;
pub use driver::SshDriver;
pub use lab_ssh::HostKeyPolicy;

use lab_core::driver::{DriverOption, OptionKind};

/// The `[drivers.ssh]` settings, for `lab up --help` and `lab drivers --long`.
const OPTIONS: &[DriverOption] = &[
    DriverOption::new("hosts", OptionKind::Path, "the hosts file (required)").flag("hosts"),
    DriverOption::new("known_hosts", OptionKind::Path, "known-hosts file (default ~/.ssh/known_hosts)")
        .flag("known-hosts"),
    DriverOption::new(
        "host_key_policy",
        OptionKind::Choice(&["accept-new", "strict"]),
        "what to do with an unknown host key (default accept-new)",
    )
    .flag("host-key-policy"),
    DriverOption::new(
        "global_known_hosts",
        OptionKind::Path,
        "global known-hosts file, read only (default /etc/ssh/ssh_known_hosts)",
    ),
    DriverOption::new("connect_timeout", OptionKind::Integer, "seconds to reach a host and get its SSH greeting (10)"),
    DriverOption::new("operation_timeout", OptionKind::Integer, "seconds one later SSH step may take (30)"),
];

lab_core::register_driver!(
    "ssh",
    "existing hosts that run Docker, reached over SSH (--hosts hosts.toml)",
    SshDriver::boxed,
    options = OPTIONS
);

/// Hooks for lab's end-to-end suite, which compares lab's host key verdicts with OpenSSH's.
/// Not part of lab's interface.
#[doc(hidden)]
pub mod testing {
    use std::path::Path;
    use std::time::Duration;

    /// lab's verdict (`accept`, `unknown`, `changed` or `revoked`) on the host key that the
    /// SSH server at `address`:`port` presents, looked up as host `name` in `user_file` and
    /// `global_file`, as `--host-key-policy strict` would judge it. Writes nothing.
    pub fn host_key_verdict(
        address: &str,
        port: u16,
        name: &str,
        user_file: &Path,
        global_file: &Path,
    ) -> Result<&'static str, String> {
        let files = lab_ssh::known_hosts::KnownHostsFiles {
            user: user_file.to_path_buf(),
            global: vec![global_file.to_path_buf()],
        };
        lab_ssh::known_hosts::probe(address, port, name, &files, Duration::from_secs(10))
    }
}
