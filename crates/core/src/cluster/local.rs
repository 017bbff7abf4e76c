//! The local Docker engine: the one the docker CLI in this shell would use (`DOCKER_HOST`, a
//! docker context, or the local socket), where images the nodes lack come from and what
//! `lab push` reads.

use std::sync::Arc;

use bollard::Docker;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use tokio::sync::OnceCell;

use super::REQUEST_TIMEOUT;
use crate::error::{engine_message, Error, Result};

/// Where images come from: the local engine (the one `DOCKER_HOST` names, as for the docker
/// CLI), connected once, and its `docker save` archives, made once per run and shared by every
/// node that needs them.
#[derive(Default)]
pub struct ImageSource {
    local: OnceCell<std::result::Result<Docker, Unreachable>>,
    exports: std::sync::Mutex<std::collections::HashMap<String, Arc<OnceCell<Bytes>>>>,
}

impl ImageSource {
    /// The local engine, or why there is none, in the engine's words.
    pub async fn local_engine(&self) -> std::result::Result<Docker, Unreachable> {
        self.local
            .get_or_init(|| async {
                let (host, where_) = local_host().map_err(|message| Unreachable { message, source: None })?;
                let unreachable = |e: bollard::errors::Error| Unreachable {
                    message: format!("{where_} could not be reached: {}", engine_message(&e)),
                    source: Some(Arc::new(e)),
                };
                let docker = Docker::connect_with_host(&host).map_err(unreachable)?;
                docker.with_timeout(REQUEST_TIMEOUT).negotiate_version().await.map_err(unreachable)
            })
            .await
            .clone()
    }

    /// The local engine's archive of `image`; or why the local engine cannot give it
    /// (unreachable, or it lacks the image).
    pub async fn export(&self, image: &str) -> Result<std::result::Result<Bytes, String>> {
        let local = match self.local_engine().await {
            Ok(d) => d,
            Err(why) => return Ok(Err(why.message)),
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

/// Why there is no local engine: the docker context names none, or it could not be reached
/// (bollard's error kept as the cause, shared: the answer is made once and handed to every
/// node that asks).
#[derive(Debug, Clone)]
pub struct Unreachable {
    /// What is wrong, naming the engine.
    pub message: String,
    /// bollard's error, if it came to connecting.
    pub source: Option<Arc<bollard::errors::Error>>,
}

impl std::fmt::Display for Unreachable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

// By hand: the source is the error inside the `Arc`, not the `Arc`.
impl std::error::Error for Unreachable {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// The engine the docker CLI in this environment would use, as `host` for bollard and as
/// words for messages: `DOCKER_HOST`, else the context `DOCKER_CONTEXT` or the docker
/// configuration's `currentContext` names, else the local socket.
pub fn local_host() -> std::result::Result<(String, String), String> {
    if let Ok(h) = std::env::var("DOCKER_HOST") {
        if !h.is_empty() {
            return Ok((h.clone(), format!("the Docker engine DOCKER_HOST names ({h})")));
        }
    }
    let config_dir = std::env::var_os("DOCKER_CONFIG")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".docker")));
    let (context, from) = match std::env::var("DOCKER_CONTEXT") {
        Ok(c) if !c.is_empty() => (Some(c), "DOCKER_CONTEXT".to_string()),
        _ => {
            let file = config_dir.as_ref().map(|d| d.join("config.json"));
            let current = file
                .as_ref()
                .and_then(|f| std::fs::read(f).ok())
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                .and_then(|v| v["currentContext"].as_str().map(String::from))
                .filter(|c| !c.is_empty());
            (current, file.map(|f| format!("{}: currentContext", f.display())).unwrap_or_default())
        }
    };
    match context.filter(|c| c != "default") {
        None => Ok(("unix:///var/run/docker.sock".into(), "the local Docker engine".into())),
        Some(name) => {
            use sha2::Digest;
            let id: String = sha2::Sha256::digest(name.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
            let meta = config_dir.unwrap_or_default().join("contexts/meta").join(id).join("meta.json");
            let host = std::fs::read(&meta)
                .ok()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                .and_then(|v| v["Endpoints"]["docker"]["Host"].as_str().map(String::from))
                .ok_or_else(|| {
                    format!(
                        "{from} names the docker context {name:?}, which has no engine ({} is missing)",
                        meta.display()
                    )
                })?;
            Ok((host.clone(), format!("the Docker engine of context {name} ({host})")))
        }
    }
}
