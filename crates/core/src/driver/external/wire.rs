//! The protocol's messages (`docs/driver-protocol.md`), as serde types: the handshake's
//! hello, machines, engines, command output and errors, and the limits a driver's table sets.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::DEFAULT_CREATE_TIMEOUT;
use super::DEFAULT_TIMEOUT;
use super::LAB_KEYS;
use crate::driver::{Capabilities, Machine, MachineState};
use crate::error::{Error, Result};
use crate::topology::Role;

/// Per-request time limits, from `[drivers.NAME] timeout` and `create_timeout` (seconds).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// The handshake and every request except those below.
    pub timeout: Duration,
    /// `create`, `start`, `destroy` and `teardown`.
    pub create_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { timeout: DEFAULT_TIMEOUT, create_timeout: DEFAULT_CREATE_TIMEOUT }
    }
}

impl Limits {
    /// Reads the limits from a driver's table; a value that is not a positive number of
    /// seconds is bad input naming `source`, the table, the key and the value.
    pub fn from_config(name: &str, config: &Value, source: &str) -> Result<Limits> {
        let read = |key: &str, default: Duration| -> Result<Duration> {
            match config.get(key) {
                None => Ok(default),
                Some(v) => v
                    .as_f64()
                    .filter(|s| s.is_finite() && *s > 0.0 && *s < 1e9)
                    .map(Duration::from_secs_f64)
                    .ok_or_else(|| {
                        Error::input(
                            format!("{source}: [drivers.{name}] {key}"),
                            format!("{v} is not a number of seconds greater than 0"),
                        )
                    }),
            }
        };
        Ok(Limits {
            timeout: read("timeout", DEFAULT_TIMEOUT)?,
            create_timeout: read("create_timeout", DEFAULT_CREATE_TIMEOUT)?,
        })
    }
}

/// The driver's table without lab's own keys ([`LAB_KEYS`]): what the driver is sent.
pub(super) fn driver_table(config: &Value) -> Value {
    match config {
        Value::Object(m) => Value::Object(
            m.iter().filter(|(k, _)| !LAB_KEYS.contains(&k.as_str())).map(|(k, v)| (k.clone(), v.clone())).collect(),
        ),
        Value::Null => json!({}),
        other => other.clone(),
    }
}

/// What a driver says about itself in the handshake.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The protocol version the driver speaks.
    pub lab_protocol: u64,
    /// One line for `lab drivers`.
    #[serde(default)]
    pub description: String,
    /// What the driver can do.
    #[serde(default)]
    pub capabilities: WireCapabilities,
    /// The options the driver takes in its `[drivers.NAME]` table.
    #[serde(default)]
    pub options: Vec<DriverOption>,
}

/// [`Capabilities`] as the protocol spells them; a missing one is false, and ones this lab
/// does not know are ignored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct WireCapabilities {
    /// See [`Capabilities::create`].
    pub create: bool,
    /// See [`Capabilities::destroy`].
    pub destroy: bool,
    /// See [`Capabilities::start`].
    pub start: bool,
    /// See [`Capabilities::exec`].
    pub exec: bool,
    /// See [`Capabilities::shell`].
    pub shell: bool,
}

impl From<WireCapabilities> for Capabilities {
    fn from(c: WireCapabilities) -> Self {
        Capabilities::none().create(c.create).destroy(c.destroy).start(c.start).shell(c.shell).exec(c.exec)
    }
}

/// The type of a driver option's value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptionType {
    /// Text (the default).
    #[default]
    String,
    /// A whole number.
    Integer,
    /// Any number.
    Number,
    /// true or false.
    Boolean,
}

/// One option a driver takes, as it declares it in the handshake. (Issue 10, item 4 builds
/// CLI flags from these; for now lab only carries them.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriverOption {
    /// The key in `[drivers.NAME]`: lowercase letters, digits, `_` and `-`.
    pub name: String,
    /// The value's type.
    #[serde(rename = "type", default)]
    pub kind: OptionType,
    /// One line of help.
    #[serde(default)]
    pub help: String,
    /// The value is a file's path (relative to where it was given).
    #[serde(default)]
    pub path: bool,
    /// The value is secret: lab never prints it.
    #[serde(default)]
    pub secret: bool,
    /// The option may be given more than once (its value is then a list).
    #[serde(default)]
    pub repeatable: bool,
}

/// A machine as the protocol spells it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct WireMachine {
    pub(super) name: String,
    /// Optional: when absent, lab's topology decides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) role: Option<Role>,
    pub(super) state: WireState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) address: Option<String>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum WireState {
    Running,
    Stopped,
    Broken,
}

impl From<&Machine> for WireMachine {
    fn from(m: &Machine) -> Self {
        let (state, reason) = match &m.state {
            MachineState::Running => (WireState::Running, None),
            MachineState::Stopped => (WireState::Stopped, None),
            MachineState::Broken(r) => (WireState::Broken, Some(r.clone())),
        };
        WireMachine { name: m.name.clone(), role: m.role, state, reason, address: m.address.clone() }
    }
}

impl From<WireMachine> for Machine {
    fn from(w: WireMachine) -> Self {
        let state = match w.state {
            WireState::Running => MachineState::Running,
            WireState::Stopped => MachineState::Stopped,
            WireState::Broken => {
                MachineState::Broken(w.reason.unwrap_or_else(|| "the driver says it is broken".into()))
            }
        };
        Machine { name: w.name, role: w.role, state, address: w.address }
    }
}

/// The answer to `engine`.
#[derive(Debug, Clone, Deserialize)]
pub(super) struct WireEngine {
    /// `unix:///path`, `tcp://host:port` or `ssh://[user@]host[:port]`.
    pub(super) host: String,
    /// TLS files for a `tcp://` engine.
    #[serde(default)]
    pub(super) tls: Option<WireTls>,
    pub(super) advertise_addr: String,
    /// What `lab env` exports; default `DOCKER_HOST` (and the TLS variables) from the above.
    #[serde(default)]
    pub(super) env: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Deserialize)]
pub(super) struct WireTls {
    pub(super) ca: PathBuf,
    pub(super) cert: PathBuf,
    pub(super) key: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
pub(super) struct WireExec {
    #[serde(default)]
    pub(super) status: Option<i64>,
    #[serde(default)]
    pub(super) stdout: String,
    #[serde(default)]
    pub(super) stderr: String,
}

/// An error a driver answered with.
#[derive(Debug, Clone, Deserialize)]
pub(super) struct WireError {
    pub(super) kind: String,
    pub(super) message: String,
    #[serde(default)]
    pub(super) node: Option<String>,
    /// For `input` errors: the key of the driver's table at fault (e.g. `engines.manager`).
    #[serde(default)]
    pub(super) field: Option<String>,
}

#[cfg(test)]
mod tests {
    use crate::driver::external::PROTOCOL_VERSION;

    use super::*;

    /// The schema in docs/ names exactly the requests this adapter sends, and the error kinds
    /// it maps.
    #[test]
    fn the_schema_matches_the_adapter() {
        let schema: Value =
            serde_json::from_str(include_str!("../../../../../docs/driver-protocol.schema.json")).unwrap();
        let mut ops: Vec<&str> = schema["$defs"]["request"]["oneOf"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["properties"]["op"]["const"].as_str().unwrap())
            .collect();
        ops.sort();
        let mut sent = [
            "preflight",
            "fixed_nodes",
            "observe",
            "create",
            "start",
            "destroy",
            "teardown",
            "engine",
            "exec",
            "shell_command",
        ];
        sent.sort();
        assert_eq!(ops, sent);
        let results: Vec<&String> = schema["$defs"]["results"]["properties"].as_object().unwrap().keys().collect();
        assert_eq!(results.len(), sent.len(), "{results:?}");
        assert_eq!(schema["$defs"]["handshake"]["properties"]["lab_protocol"]["const"], PROTOCOL_VERSION);
        assert_eq!(schema["$defs"]["error"]["properties"]["kind"]["enum"], json!(["input", "failed", "unsupported"]));
        for key in LAB_KEYS {
            assert!(include_str!("../../../../../docs/driver-protocol.md").contains(&format!("`{key}`")), "{key}");
        }
    }
}
