//! `[drivers.qemu]` in lab.toml (and `--driver-opt KEY=VALUE`, e.g.
//! `--driver-opt worker.memory=2048`).
//!
//! Per-role defaults are the seed's machines: managers 1024 MB, workers 6144 MB, one CPU.

use std::path::PathBuf;

pub use lab_core::driver::support::{Resources, RoleConfig};
use lab_core::{Error, Result, Role};
use serde::{Deserialize, Serialize};

/// Default seconds a VM may take from QEMU's start to its Docker engine answering.
pub const DEFAULT_BOOT_TIMEOUT: u64 = 300;

/// Which accelerator QEMU uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    /// KVM when a bounded probe shows it works, TCG otherwise.
    #[default]
    Auto,
    /// KVM only.
    Kvm,
    /// Software emulation only.
    Tcg,
}

/// The qemu driver's settings.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct QemuConfig {
    /// The image directory (`vmlinuz`, `initrd.img`, `base.qcow2`), as `scripts/qemu-image.sh`
    /// builds it; default `${XDG_CACHE_HOME:-~/.cache}/lab/qemu` (or `$LAB_QEMU_CACHE`).
    pub image: Option<PathBuf>,
    /// See [`Accel`].
    pub accel: Accel,
    /// Seconds from QEMU's start to the engine answering (default 300).
    pub boot_timeout: Option<u64>,
    /// VMs made for managers.
    pub manager: RoleConfig,
    /// VMs made for workers.
    pub worker: RoleConfig,
}

impl QemuConfig {
    /// Bad values are bad input naming the table, the field and the value.
    pub fn validate(&self, source: &str) -> Result<()> {
        for (role, rc) in [("manager", &self.manager), ("worker", &self.worker)] {
            if let Some(m) = rc.memory {
                if !(256..=1 << 20).contains(&m) {
                    return Err(Error::input(
                        format!("{source}: [drivers.qemu.{role}] memory"),
                        format!("{m} is not a number of MB from 256 to 1048576"),
                    ));
                }
            }
            if let Some(c) = rc.cpus {
                if !(1..=64).contains(&c) {
                    return Err(Error::input(
                        format!("{source}: [drivers.qemu.{role}] cpus"),
                        format!("{c} is not a number of CPUs from 1 to 64"),
                    ));
                }
            }
        }
        if let Some(t) = self.boot_timeout {
            if !(10..=3600).contains(&t) {
                return Err(Error::input(
                    format!("{source}: [drivers.qemu] boot_timeout"),
                    format!("{t} is not a number of seconds from 10 to 3600"),
                ));
            }
        }
        Ok(())
    }

    /// The resources of a VM for `role`.
    pub fn resources(&self, role: Role) -> Resources {
        match role {
            Role::Manager => self.manager.resources(role),
            Role::Worker => self.worker.resources(role),
        }
    }

    /// Seconds a boot may take.
    pub fn boot_timeout(&self) -> u64 {
        self.boot_timeout.unwrap_or(DEFAULT_BOOT_TIMEOUT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_take_the_seeds_sizes_unless_set() {
        let c = QemuConfig::default();
        assert_eq!(c.resources(Role::Manager), Resources { memory: 1024, cpus: 1 });
        assert_eq!(c.resources(Role::Worker), Resources { memory: 6144, cpus: 1 });
        let c: QemuConfig = serde_json::from_value(serde_json::json!({"worker": {"memory": 2048}})).unwrap();
        assert_eq!(c.resources(Role::Worker), Resources { memory: 2048, cpus: 1 });
    }

    #[test]
    fn bad_values_name_the_field_and_value() {
        let c: QemuConfig = serde_json::from_value(serde_json::json!({"manager": {"memory": 12}})).unwrap();
        let e = c.validate("lab.toml").unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("[drivers.qemu.manager] memory") && e.to_string().contains("12"), "{e}");
        let e = serde_json::from_value::<QemuConfig>(serde_json::json!({"accel": "xen"})).unwrap_err();
        assert!(e.to_string().contains("xen"), "{e}");
    }
}
