//! Pieces that more than one driver needs, kept here so that each driver crate holds only
//! what is its own (STYLE.md convention 2).
//!
//! The drivers that make machines (virtualbox through docker-machine, qemu itself) both size
//! them per role from `[drivers.NAME.manager]` and `.worker` tables with the seed's defaults
//! ([`RoleConfig`]), and both reach each machine's engine over TLS with a directory of
//! client certificates laid out as `DOCKER_CERT_PATH` lays them out ([`connect_with_ssl`]).
//! Neighbours: the driver API in [`crate::driver`], whose [`Error`] these return; nothing in
//! here touches a swarm or a registry.

use std::path::Path;

use bollard::Docker;
use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer, Serialize};

use crate::error::{Error, Result};
use crate::topology::Role;

/// The seed's manager memory, in MB.
pub const MANAGER_MEMORY: u32 = 1024;
/// The seed's worker memory, in MB (THREDDS needs 4 GB).
pub const WORKER_MEMORY: u32 = 6144;

/// Memory (MB) and CPUs of one machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// MB of memory.
    pub memory: u32,
    /// CPUs.
    pub cpus: u32,
}

/// How the machines of one role are made (`[drivers.NAME.manager]` or `.worker`): memory and
/// CPUs, which every machine-making driver takes, and `more`, the driver's own settings
/// (docker-machine's disk size and flags, say). Unset fields take the seed's values.
///
/// Unknown keys are refused, as `#[serde(deny_unknown_fields)]` would (which serde does not
/// allow together with a flattened field): `more` is read from what is left once `memory`
/// and `cpus` are taken, and [`NoMore`] takes nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RoleConfig<X = NoMore> {
    /// Memory, in MB.
    pub memory: Option<u32>,
    /// CPUs.
    pub cpus: Option<u32>,
    /// The driver's own settings for the role.
    #[serde(flatten)]
    pub more: X,
}

impl<X> RoleConfig<X> {
    /// The memory and CPUs of a machine for `role`: what is set, else the seed's.
    pub fn resources(&self, role: Role) -> Resources {
        let memory = match role {
            Role::Manager => MANAGER_MEMORY,
            Role::Worker => WORKER_MEMORY,
        };
        Resources { memory: self.memory.unwrap_or(memory), cpus: self.cpus.unwrap_or(1) }
    }
}

impl<'de, X: DeserializeOwned> Deserialize<'de> for RoleConfig<X> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let mut table = serde_json::Map::<String, serde_json::Value>::deserialize(d)?;
        let mut take = |key: &str| match table.remove(key) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(v) => serde_json::from_value::<u32>(v).map(Some).map_err(|e| D::Error::custom(format!("{key}: {e}"))),
        };
        let memory = take("memory")?;
        let cpus = take("cpus")?;
        let more = serde_json::from_value(serde_json::Value::Object(table)).map_err(D::Error::custom)?;
        Ok(RoleConfig { memory, cpus, more })
    }
}

/// No settings beyond memory and CPUs: any other key is refused, naming it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct NoMore {}

impl<'de> Deserialize<'de> for NoMore {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let table = serde_json::Map::<String, serde_json::Value>::deserialize(d)?;
        match table.keys().next() {
            None => Ok(NoMore {}),
            Some(k) => Err(D::Error::custom(format!("unknown field `{k}`, expected `memory` or `cpus`"))),
        }
    }
}

/// A client of `node`'s engine at `host` (`tcp://HOST:PORT`) over TLS, with the client
/// certificate and key and the CA in `certs` under docker's names (`cert.pem`, `key.pem`,
/// `ca.pem`). Not yet negotiated: the core waits for the engine.
pub fn connect_with_ssl(node: &str, host: &str, certs: &Path) -> Result<Docker> {
    Docker::connect_with_ssl(
        host,
        &certs.join("key.pem"),
        &certs.join("cert.pem"),
        &certs.join("ca.pem"),
        120,
        bollard::API_DEFAULT_VERSION,
    )
    .map_err(|e| Error::engine(node, format!("connect to {host} with TLS"), e))
}

/// 12 hex digits from the OS's random source.
pub fn random_suffix() -> String {
    let mut b = [0u8; 6];
    let _ = getrandom::getrandom(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct Disk {
        disk_size: Option<u32>,
    }

    #[test]
    fn roles_take_the_seeds_sizes_unless_set() {
        let c: RoleConfig = serde_json::from_value(serde_json::json!({"memory": 2048})).unwrap();
        assert_eq!(c.resources(Role::Worker), Resources { memory: 2048, cpus: 1 });
        assert_eq!(RoleConfig::<NoMore>::default().resources(Role::Manager), Resources { memory: 1024, cpus: 1 });
        assert_eq!(RoleConfig::<NoMore>::default().resources(Role::Worker), Resources { memory: 6144, cpus: 1 });
    }

    #[test]
    fn a_drivers_own_settings_sit_beside_the_sizes_and_unknown_keys_are_refused() {
        let c: RoleConfig<Disk> = serde_json::from_value(serde_json::json!({"cpus": 2, "disk_size": 9})).unwrap();
        assert_eq!((c.cpus, c.more.disk_size), (Some(2), Some(9)));
        assert_eq!(serde_json::to_value(&c).unwrap(), serde_json::json!({"memory": null, "cpus": 2, "disk_size": 9}));
        let e = serde_json::from_value::<RoleConfig<Disk>>(serde_json::json!({"ram": 1})).unwrap_err();
        assert!(e.to_string().contains("unknown field `ram`"), "{e}");
        let e = serde_json::from_value::<RoleConfig>(serde_json::json!({"disk_size": 1})).unwrap_err();
        assert!(e.to_string().contains("unknown field `disk_size`, expected `memory` or `cpus`"), "{e}");
        let e = serde_json::from_value::<RoleConfig>(serde_json::json!({"memory": "lots"})).unwrap_err();
        assert!(e.to_string().contains("memory") && e.to_string().contains("lots"), "{e}");
    }
}
