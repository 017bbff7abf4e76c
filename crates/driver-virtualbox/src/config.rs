//! `[drivers.virtualbox]` in lab.toml (and `--driver-opt KEY=VALUE`, e.g.
//! `--driver-opt worker.memory=8192`).
//!
//! Defaults are the seed's `docker-machine create` flags: managers get 1024 MB, workers
//! 6144 MB, one CPU each, the PCnet-FAST III NAT adapter (`Am79C973`) and overlay2.

use std::path::PathBuf;

use lab_core::driver::support;
use lab_core::{Error, Result, Role};
use serde::{Deserialize, Serialize};

/// Creations that may run at once after the first (which always runs alone).
pub const DEFAULT_CONCURRENCY: u32 = 2;
/// The seed's NAT adapter type: PCnet-FAST III.
pub const NIC_TYPE: &str = "Am79C973";
/// The seed's engine storage driver.
pub const STORAGE_DRIVER: &str = "overlay2";

/// The virtualbox driver's settings.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct VirtualBoxConfig {
    /// The docker-machine program; found on PATH when unset.
    pub docker_machine: Option<PathBuf>,
    /// How many `docker-machine create` run at once after the first; default 2.
    pub concurrency: Option<u32>,
    /// Machines made for managers.
    pub manager: RoleConfig,
    /// Machines made for workers.
    pub worker: RoleConfig,
}

/// How the machines of one role are made: `memory` (`--virtualbox-memory`, MB) and `cpus`
/// (`--virtualbox-cpu-count`) as every machine-making driver takes them, and docker-machine's
/// own [`MachineOptions`]. Unset fields take the seed's values.
pub type RoleConfig = support::RoleConfig<MachineOptions>;

/// The `create` settings of one role that only docker-machine has.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct MachineOptions {
    /// `--virtualbox-disk-size`, in MB; docker-machine's own default (20000) when unset.
    pub disk_size: Option<u32>,
    /// `--virtualbox-nat-nictype`.
    pub nic_type: Option<String>,
    /// `--engine-storage-driver`.
    pub storage_driver: Option<String>,
    /// More `docker-machine create` arguments, each one argument (no shell), placed before
    /// the machine name, e.g. `["--virtualbox-no-share"]`.
    pub extra_flags: Vec<String>,
}

/// The resolved `create` settings for one role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateOptions {
    /// MB of memory.
    pub memory: u32,
    /// CPUs.
    pub cpus: u32,
    /// Disk MB, if set.
    pub disk_size: Option<u32>,
    /// NAT adapter type.
    pub nic_type: String,
    /// Engine storage driver.
    pub storage_driver: String,
    /// Extra arguments.
    pub extra_flags: Vec<String>,
}

impl CreateOptions {
    /// `docker-machine create` arguments for machine `name`, the seed's order:
    /// `create -d virtualbox --engine-storage-driver overlay2 --virtualbox-memory 1024
    /// --virtualbox-nat-nictype Am79C973 --virtualbox-cpu-count 1 NAME`.
    pub fn create_args(&self, name: &str) -> Vec<String> {
        let mut a: Vec<String> = vec![
            "create".into(),
            "-d".into(),
            "virtualbox".into(),
            "--engine-storage-driver".into(),
            self.storage_driver.clone(),
            "--virtualbox-memory".into(),
            self.memory.to_string(),
            "--virtualbox-nat-nictype".into(),
            self.nic_type.clone(),
            "--virtualbox-cpu-count".into(),
            self.cpus.to_string(),
        ];
        if let Some(d) = self.disk_size {
            a.extend(["--virtualbox-disk-size".into(), d.to_string()]);
        }
        a.extend(self.extra_flags.iter().cloned());
        a.push(name.to_string());
        a
    }
}

impl VirtualBoxConfig {
    /// Checks the values; errors are bad input naming `source`'s field and the value.
    pub fn validate(&self, source: &str) -> Result<()> {
        let field = |f: &str| format!("{source}: [drivers.virtualbox] {f}");
        if self.concurrency == Some(0) {
            return Err(Error::input(field("concurrency"), "must be at least 1, got 0"));
        }
        if let Some(p) = &self.docker_machine {
            if p.as_os_str().is_empty() {
                return Err(Error::input(field("docker_machine"), "is empty; leave it unset to use PATH"));
            }
        }
        for (role, rc) in [("manager", &self.manager), ("worker", &self.worker)] {
            let (sizes, rc) = (rc, &rc.more);
            for (name, v) in [("memory", sizes.memory), ("cpus", sizes.cpus), ("disk_size", rc.disk_size)] {
                if v == Some(0) {
                    return Err(Error::input(field(&format!("{role}.{name}")), "must be at least 1, got 0"));
                }
            }
            for (name, v) in [("nic_type", &rc.nic_type), ("storage_driver", &rc.storage_driver)] {
                if let Some(v) = v {
                    if v.trim().is_empty() || v.starts_with('-') || v.chars().any(char::is_whitespace) {
                        return Err(Error::input(field(&format!("{role}.{name}")), format!("invalid value {v:?}")));
                    }
                }
            }
            if let Some(bad) = rc.extra_flags.iter().find(|f| f.is_empty()) {
                return Err(Error::input(field(&format!("{role}.extra_flags")), format!("empty argument {bad:?}")));
            }
            if let Some(first) = rc.extra_flags.first() {
                if !first.starts_with('-') {
                    return Err(Error::input(
                        field(&format!("{role}.extra_flags")),
                        format!("must start with a flag (e.g. \"--virtualbox-no-share\"), got {first:?}"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Creations allowed at once after the first.
    pub fn concurrency(&self) -> u32 {
        self.concurrency.unwrap_or(DEFAULT_CONCURRENCY)
    }

    /// The `create` settings for `role`.
    pub fn options(&self, role: Role) -> CreateOptions {
        let rc = match role {
            Role::Manager => &self.manager,
            Role::Worker => &self.worker,
        };
        let size = rc.resources(role);
        let rc = &rc.more;
        CreateOptions {
            memory: size.memory,
            cpus: size.cpus,
            disk_size: rc.disk_size,
            nic_type: rc.nic_type.clone().unwrap_or_else(|| NIC_TYPE.into()),
            storage_driver: rc.storage_driver.clone().unwrap_or_else(|| STORAGE_DRIVER.into()),
            extra_flags: rc.extra_flags.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: serde_json::Value) -> std::result::Result<VirtualBoxConfig, String> {
        serde_json::from_value(v).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_the_seeds_flags() {
        let c = VirtualBoxConfig::default();
        assert_eq!(
            c.options(Role::Manager).create_args("lab-manager").join(" "),
            "create -d virtualbox --engine-storage-driver overlay2 --virtualbox-memory 1024 \
             --virtualbox-nat-nictype Am79C973 --virtualbox-cpu-count 1 lab-manager"
        );
        assert_eq!(
            c.options(Role::Worker).create_args("lab-worker1").join(" "),
            "create -d virtualbox --engine-storage-driver overlay2 --virtualbox-memory 6144 \
             --virtualbox-nat-nictype Am79C973 --virtualbox-cpu-count 1 lab-worker1"
        );
        assert_eq!(c.concurrency(), DEFAULT_CONCURRENCY);
    }

    #[test]
    fn a_partial_role_table_keeps_the_other_defaults() {
        let c = parse(serde_json::json!({
            "concurrency": 3,
            "worker": { "memory": 8192, "disk_size": 30000, "extra_flags": ["--virtualbox-no-share"] },
            "manager": { "storage_driver": "aufs", "cpus": 2, "nic_type": "82540EM" },
        }))
        .unwrap();
        c.validate("lab.toml").unwrap();
        assert_eq!(c.concurrency(), 3);
        let w = c.options(Role::Worker);
        assert_eq!((w.memory, w.cpus, w.disk_size, w.nic_type.as_str()), (8192, 1, Some(30000), "Am79C973"));
        assert_eq!(
            w.create_args("c-worker1")[11..].to_vec(),
            ["--virtualbox-disk-size", "30000", "--virtualbox-no-share", "c-worker1"]
        );
        let m = c.options(Role::Manager);
        assert_eq!((m.memory, m.cpus, m.storage_driver.as_str(), m.nic_type.as_str()), (1024, 2, "aufs", "82540EM"));
    }

    #[test]
    fn unknown_and_bad_values_are_refused_with_the_field() {
        assert!(parse(serde_json::json!({ "worker": { "ram": 1 } })).unwrap_err().contains("unknown field `ram`"));
        assert!(parse(serde_json::json!({ "memory": 1 })).unwrap_err().contains("unknown field `memory`"));
        let bad = [
            (serde_json::json!({ "concurrency": 0 }), "concurrency"),
            (serde_json::json!({ "worker": { "memory": 0 } }), "worker.memory"),
            (serde_json::json!({ "manager": { "nic_type": "--x" } }), "manager.nic_type"),
            (serde_json::json!({ "worker": { "storage_driver": "" } }), "worker.storage_driver"),
            (serde_json::json!({ "worker": { "extra_flags": ["oops"] } }), "worker.extra_flags"),
            (serde_json::json!({ "docker_machine": "" }), "docker_machine"),
        ];
        for (v, field) in bad {
            let e = parse(v).unwrap().validate("lab.toml").unwrap_err();
            assert_eq!(e.exit_code(), 2);
            assert!(e.to_string().contains(&format!("lab.toml: [drivers.virtualbox] {field}")), "{e}");
        }
    }
}
