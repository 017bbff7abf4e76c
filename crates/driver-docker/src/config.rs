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
    /// The Docker engine to make a new cluster on (`unix:///...` or `tcp://...`), instead of
    /// `DOCKER_HOST` or the default socket. Naming it is also saying explicitly that a node
    /// of another lab cluster is meant. An existing cluster stays on the engine recorded
    /// when it was made.
    pub host: Option<String>,
    /// Let a new cluster be made inside a node of another lab cluster when `DOCKER_HOST`
    /// points there (as `eval "$(lab env)"` leaves it). Off: that is refused, because it is
    /// almost always a shell that `lab env` pointed at a manager.
    pub allow_nested: bool,
}

impl Default for DockerConfig {
    fn default() -> Self {
        DockerConfig {
            node_image: DEFAULT_NODE_IMAGE.into(),
            privileged: PrivilegedMode::Auto,
            host: None,
            allow_nested: false,
        }
    }
}
