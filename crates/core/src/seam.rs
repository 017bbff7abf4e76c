//! The narrow seam between the executor and the code that works on nodes.
//!
//! The registry ([`crate::registry`]), image ([`crate::images`]), look-inside
//! ([`crate::probe`]), observation ([`crate::observe`]) and teardown ([`crate::teardown`])
//! code needs a few things: the desired cluster, the machines the driver reports, a node's
//! engine (and a manager of the swarm), a command run on a node, and the cluster's recorded
//! state. [`Nodes`] is exactly that. [`crate::exec::Runtime`] implements it; those modules
//! never see the runtime, its driver or its caches, so they do not depend on the executor, and
//! the executor depends on them, not the other way round.
//!
//! Observation and teardown go one step further for their tests: each asks the engines
//! through a small trait of its own whose answers are plain facts, so their logic is checked
//! against canned answers, with no engine.

use std::sync::Arc;
use std::time::Duration;

use bollard::Docker;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use tokio::sync::OnceCell;

use crate::driver::{ExecOutput, Machine, NodeEngine};
use crate::error::{engine_message, Error, Result};
use crate::plan::Desired;
use crate::progress::Progress;
use crate::state::ClusterState;

/// Timeout for one Docker API request (image transfers included).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(600);

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
}

/// Where images come from: the local engine (the one `DOCKER_HOST` names, as for the docker
/// CLI), connected once, and its `docker save` archives, made once per run and shared by every
/// node that needs them.
#[derive(Default)]
pub struct ImageSource {
    local: OnceCell<std::result::Result<Docker, String>>,
    exports: std::sync::Mutex<std::collections::HashMap<String, Arc<OnceCell<Bytes>>>>,
}

impl ImageSource {
    /// The local engine, or why there is none, in the engine's words.
    pub async fn local_engine(&self) -> std::result::Result<Docker, String> {
        self.local
            .get_or_init(|| async {
                let where_ = match std::env::var("DOCKER_HOST") {
                    Ok(h) if !h.is_empty() => format!("the local Docker engine (DOCKER_HOST={h})"),
                    _ => "the local Docker engine".to_string(),
                };
                let docker = Docker::connect_with_local_defaults()
                    .map_err(|e| format!("{where_} could not be reached: {}", engine_message(&e)))?;
                let docker = docker.with_timeout(REQUEST_TIMEOUT);
                docker
                    .negotiate_version()
                    .await
                    .map_err(|e| format!("{where_} could not be reached: {}", engine_message(&e)))
            })
            .await
            .clone()
    }

    /// The local engine's archive of `image`; or why the local engine cannot give it
    /// (unreachable, or it lacks the image).
    pub async fn export(&self, image: &str) -> Result<std::result::Result<Bytes, String>> {
        let local = match self.local_engine().await {
            Ok(d) => d,
            Err(why) => return Ok(Err(why)),
        };
        if let Err(e) = local.inspect_image(image).await {
            return Ok(Err(format!("the local Docker engine does not have it ({})", engine_message(&e))));
        }
        let cell: Arc<OnceCell<Bytes>> =
            self.exports.lock().expect("exports lock").entry(image.to_string()).or_default().clone();
        let archive = cell
            .get_or_try_init(|| async {
                let mut buf = BytesMut::new();
                let mut s = local.export_image(image);
                while let Some(chunk) = s.next().await {
                    buf.extend_from_slice(
                        &chunk.map_err(|e| Error::engine_op(format!("export {image} from the local engine"), e))?,
                    );
                }
                Ok::<_, Error>(buf.freeze())
            })
            .await?;
        Ok(Ok(archive.clone()))
    }
}
