//! The qemu driver: each swarm node is a QEMU VM on this Linux machine, booted from lab's
//! own Debian image (what boot2docker's ISO was to docker-machine).
//!
//! - **Image.** `scripts/qemu-image.sh` builds `vmlinuz`, `initrd.img` and `base.qcow2` into a
//!   cache directory; each node boots a copy-on-write overlay of `base.qcow2`, kernel and
//!   initramfs direct (no firmware, no bootloader).
//! - **Acceleration.** KVM when a bounded probe shows a KVM guest runs (the verdict is kept per
//!   kernel and QEMU version), TCG otherwise (`accel = "auto" | "kvm" | "tcg"`).
//! - **Network, without root.** NIC 1: QEMU's user-mode network with `restrict=on` (no way
//!   out), forwarding only from 127.0.0.1 to the VM's sshd and dockerd. NIC 2: the cluster
//!   segment, a per-cluster `vde_switch` (a unix socket directory in the state directory), with
//!   addresses lab assigns (`192.168.77.10+i`); the swarm advertises these.
//! - **Engines.** dockerd listens with TLS on 2376 and trusts only client certificates signed
//!   by the cluster's CA, which lab makes (as docker-machine did); lab and `lab env` reach it at
//!   the forwarded `tcp://127.0.0.1:PORT`. Commands (`exec`) and `lab ssh` go over SSH with a
//!   key lab makes, to a host key lab makes and installs before the first boot, checked
//!   strictly ([`lab_ssh`], shared with the ssh driver): nothing is trusted on first use.
//! - **Lifecycle.** QEMU runs detached with a pidfile, a QMP socket and a serial console log
//!   per node; a VM whose QEMU is gone (killed, or the host rebooted) is Stopped and `start`
//!   boots it again from its overlay; `destroy` quits QEMU and removes the node's files;
//!   `teardown` stops the switch and removes the rest.
#![deny(missing_docs)]

mod config;
mod driver;
mod error;
mod host;
mod pki;
mod vm;

pub use config::{Accel, QemuConfig, Resources, RoleConfig};
pub use driver::QemuDriver;

use lab_core::driver::{DriverOption, OptionKind};

/// The `[drivers.qemu]` settings, for `lab up --help` and `lab drivers --long` (per-role VM
/// sizes sit in `[drivers.qemu.manager]` and `.worker`: `--driver-opt worker.memory=2048`).
const OPTIONS: &[DriverOption] = &[
    DriverOption::new(
        "image",
        OptionKind::Path,
        "the image directory scripts/qemu-image.sh built (default ~/.cache/lab/qemu)",
    ),
    DriverOption::new(
        "accel",
        OptionKind::Choice(&["auto", "kvm", "tcg"]),
        "KVM, software emulation, or KVM when a bounded probe shows it works (auto)",
    )
    .flag("accel"),
    DriverOption::new("boot_timeout", OptionKind::Integer, "seconds from QEMU's start to dockerd answering (300)"),
];

lab_core::register_driver!(
    "qemu",
    "QEMU VMs on this Linux machine, booted from lab's Debian image (scripts/qemu-image.sh)",
    QemuDriver::boxed,
    options = OPTIONS
);
