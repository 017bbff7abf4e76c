//! `[drivers.docker]` in lab.toml.

use serde::{Deserialize, Serialize};

/// The default node image: the official Docker-in-Docker image.
pub const DEFAULT_NODE_IMAGE: &str = "docker:dind";

/// Whether node containers run privileged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PrivilegedMode {
    /// Privileged where the engine allows it; otherwise every capability the engine can
    /// grant, with seccomp, AppArmor and system paths unconfined.
    #[default]
    Auto,
    /// Always privileged; fail if the engine refuses.
    Always,
    /// Never privileged: always the explicit capability set.
    Never,
}

/// The docker driver's settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DockerConfig {
    /// Any image with `dockerd` on its PATH (`--node-image`).
    pub node_image: String,
    /// See [`PrivilegedMode`].
    pub privileged: PrivilegedMode,
}

impl Default for DockerConfig {
    fn default() -> Self {
        DockerConfig { node_image: DEFAULT_NODE_IMAGE.into(), privileged: PrivilegedMode::Auto }
    }
}
