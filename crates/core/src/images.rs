//! Making an image present on a node.
//!
//! If the local Docker engine (the one `DOCKER_HOST` points at) has the image, lab exports it
//! once and streams that archive into every node that lacks it, concurrently: every node then
//! runs the same image, and air-gapped nodes work. Otherwise the node pulls it itself. A node
//! where both fail is an error naming the node and the image.

use std::sync::Arc;

use bollard::query_parameters::{CreateImageOptionsBuilder, ImportImageOptionsBuilder};
use bollard::Docker;
use bytes::{Bytes, BytesMut};
use futures_util::{stream, StreamExt, TryStreamExt};
use tokio::sync::OnceCell;

use crate::error::{engine_message, Error, Result};
use crate::exec::Runtime;
use crate::plan::Step;

const CHUNK: usize = 1 << 20;

/// Makes `image` present on `node`; returns how (for the progress line).
pub async fn ensure(rt: &Runtime, step: &Step, node: &str, image: &str) -> Result<String> {
    let what = format!("load image {image}");
    let engine = rt.engine(node).await?;
    let docker = &engine.docker;
    if docker.inspect_image(image).await.is_ok() {
        return Ok("already there".into());
    }
    if let Some(archive) = local_export(rt, image).await? {
        let total = archive.len() as u64;
        let chunks: Vec<Bytes> =
            (0..archive.len()).step_by(CHUNK).map(|i| archive.slice(i..archive.len().min(i + CHUNK))).collect();
        let progress = rt.progress.clone();
        let step_for_progress = step.clone();
        let mut sent = 0u64;
        let body = stream::iter(chunks).map(move |c| {
            sent += c.len() as u64;
            progress.bytes(&step_for_progress, sent, Some(total));
            Ok::<_, std::io::Error>(c)
        });
        let mut out = docker.import_image_stream(ImportImageOptionsBuilder::new().quiet(true).build(), body, None);
        while let Some(msg) = out.next().await {
            msg.map_err(|e| Error::node(node, &what, engine_message(&e)))?;
        }
        docker.inspect_image(image).await.map_err(|e| {
            Error::node(node, &what, format!("the archive loaded but {image} is not there: {}", engine_message(&e)))
        })?;
        return Ok(format!("copied from the local engine ({} MB)", total / 1_000_000));
    }
    pull(docker, image).await.map_err(|cause| {
        Error::node(node, &what, cause).with_hint(format!(
            "the node cannot pull {image} and the local Docker engine does not have it; \
             get it into the local engine (docker pull or docker load) and run lab up again"
        ))
    })?;
    Ok("pulled by the node".into())
}

async fn pull(docker: &Docker, image: &str) -> std::result::Result<(), String> {
    let opts = CreateImageOptionsBuilder::new().from_image(image).build();
    docker.create_image(Some(opts), None, None).try_for_each(|_| async { Ok(()) }).await.map_err(|e| engine_message(&e))
}

/// The local engine, connected once; `None` if there is none.
pub async fn local_engine(rt: &Runtime) -> Option<Docker> {
    rt.local
        .get_or_init(|| async {
            let docker = Docker::connect_with_local_defaults().ok()?;
            let docker = docker.with_timeout(crate::exec::REQUEST_TIMEOUT);
            docker.negotiate_version().await.ok()
        })
        .await
        .clone()
}

/// Starts exporting `image` from the local engine in the background, so the archive is ready
/// when the first node's engine is. Errors surface later, from the step that needs it.
pub fn prefetch(rt: std::sync::Arc<Runtime>, image: String) {
    tokio::spawn(async move {
        let _ = local_export(&rt, &image).await;
    });
}

/// The local engine's `docker save` archive of `image`, made once per run and shared by
/// every node that needs it. `None` if there is no local engine or it lacks the image.
async fn local_export(rt: &Runtime, image: &str) -> Result<Option<Bytes>> {
    let Some(local) = local_engine(rt).await else { return Ok(None) };
    if local.inspect_image(image).await.is_err() {
        return Ok(None);
    }
    let cell: Arc<OnceCell<Bytes>> =
        rt.exports.lock().expect("exports lock").entry(image.to_string()).or_default().clone();
    let archive = cell
        .get_or_try_init(|| async {
            let mut buf = BytesMut::new();
            let mut s = local.export_image(image);
            while let Some(chunk) = s.next().await {
                buf.extend_from_slice(
                    &chunk
                        .map_err(|e| Error::op(format!("export {image} from the local engine"), engine_message(&e)))?,
                );
            }
            Ok::<_, Error>(buf.freeze())
        })
        .await?;
    Ok(Some(archive.clone()))
}
