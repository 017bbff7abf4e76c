//! The narrow seam between the executor and the code that works on nodes.
//!
//! The registry ([`crate::registry`]), image ([`crate::images`]), look-inside
//! ([`crate::cluster::probe`]), observation ([`crate::converge::observe`]) and teardown ([`crate::converge::teardown`])
//! code needs a few things: the desired cluster, the machines the driver reports, a node's
//! engine (and a manager of the swarm), a command run on a node, and the cluster's recorded
//! state. [`Nodes`] is exactly that. [`crate::converge::runtime::Runtime`] implements it; those modules
//! never see the runtime, its driver or its caches, so they do not depend on the executor, and
//! the executor depends on them, not the other way round.
//!
//! Observation and teardown go one step further for their tests: each asks the engines
//! through a small trait of its own whose answers are plain facts, so their logic is checked
//! against canned answers, with no engine.

use std::sync::Arc;
use std::time::Duration;

use bollard::Docker;

use super::ImageSource;
use crate::cluster::Desired;
use crate::cluster::Progress;
use crate::driver::{ExecOutput, Machine, NodeEngine};
use crate::error::Result;
use crate::state::ClusterState;

/// What the node-working code may use.
#[async_trait::async_trait]
pub trait Nodes: Send + Sync {
    /// The desired cluster.
    fn desired(&self) -> &Desired;
    /// A copy of the cluster's recorded state.
    fn state(&self) -> ClusterState;
    /// Where progress goes.
    fn progress(&self) -> Arc<dyn Progress>;
    /// The cluster's machines as the driver reports them now; remembered, so that their
    /// engines can be reached.
    async fn machines(&self) -> Result<Vec<Machine>>;
    /// Remembers which swarm observation decided is the cluster's (`None`: none is). From then
    /// on [`Nodes::manager`] answers only with a manager of that swarm.
    fn set_cluster_swarm(&self, id: Option<String>);
    /// The node's engine, which must answer (within a few seconds).
    async fn engine(&self, node: &str) -> Result<NodeEngine>;
    /// The node's engine, answering within `timeout`.
    async fn try_engine(&self, node: &str, timeout: Duration) -> Result<NodeEngine>;
    /// A manager of this cluster's swarm that answers, with its node name.
    async fn manager(&self) -> Result<(String, Docker)>;
    /// Whether commands can be run on nodes ([`Nodes::exec`]).
    fn can_exec(&self) -> bool;
    /// Runs `argv` on the node, without a shell.
    async fn exec(&self, node: &str, argv: &[String]) -> Result<ExecOutput>;
    /// Where images the nodes lack come from (the local engine, exported once per run).
    fn images(&self) -> &ImageSource;
    /// The cluster's state directory (its registry certificates live under it).
    fn cluster_dir(&self) -> std::path::PathBuf;
}
