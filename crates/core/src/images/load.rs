//! Making an image present on a node.
//!
//! If the local Docker engine (the one `DOCKER_HOST` points at) has the image, lab exports it
//! once and streams that archive into every node that lacks it, concurrently: every node then
//! runs the same image, and air-gapped nodes work. Otherwise the node pulls it itself. A node
//! where both fail is an error naming the node and the image.

use std::sync::Arc;

use bollard::query_parameters::{CreateImageOptionsBuilder, ImportImageOptionsBuilder};
use bollard::Docker;
use bytes::Bytes;
use futures_util::{stream, StreamExt, TryStreamExt};

use crate::cluster::Nodes;
use crate::cluster::Step;
use crate::error::{engine_message, Error, Result};

const CHUNK: usize = 1 << 20;

/// Makes `image` present on `node`; returns how (for the progress line).
pub async fn ensure(rt: &dyn Nodes, step: &Step, node: &str, image: &str) -> Result<String> {
    let what = format!("load image {image}");
    let engine = rt.engine(node).await?;
    let docker = &engine.docker;
    if docker.inspect_image(image).await.is_ok() {
        return Ok("already there".into());
    }
    let local = rt.images().export(image).await?;
    if let Ok(archive) = local {
        let total = archive.len() as u64;
        let chunks: Vec<Bytes> =
            (0..archive.len()).step_by(CHUNK).map(|i| archive.slice(i..archive.len().min(i + CHUNK))).collect();
        let progress = rt.progress();
        let step_for_progress = step.clone();
        let mut sent = 0u64;
        let body = stream::iter(chunks).map(move |c| {
            sent += c.len() as u64;
            progress.bytes(&step_for_progress, sent, Some(total));
            Ok::<_, std::io::Error>(c)
        });
        let mut out = docker.import_image_stream(ImportImageOptionsBuilder::new().quiet(true).build(), body, None);
        while let Some(msg) = out.next().await {
            msg.map_err(|e| Error::engine(node, &what, e))?;
        }
        docker.inspect_image(image).await.map_err(|e| {
            let message = format!("the archive loaded but {image} is not there: {}", engine_message(&e));
            Error::Node { node: node.into(), step: what.clone(), message, hint: None, source: Some(Box::new(e)) }
        })?;
        return Ok(format!("copied from the local engine ({} MB)", total / 1_000_000));
    }
    let why_not_local = local.err().unwrap_or_default();
    pull(docker, image).await.map_err(|e| {
        Error::engine(node, &what, e).with_hint(format!(
            "the node cannot pull {image}, and {why_not_local}; \
             get it into the local engine (docker pull or docker load) and run lab up again"
        ))
    })?;
    Ok("pulled by the node".into())
}

async fn pull(docker: &Docker, image: &str) -> std::result::Result<(), bollard::errors::Error> {
    let opts = CreateImageOptionsBuilder::new().from_image(image).build();
    docker.create_image(Some(opts), None, None).try_for_each(|_| async { Ok(()) }).await
}

/// Starts exporting `image` from the local engine in the background, so the archive is ready
/// when the first node's engine is. Errors surface later, from the step that needs it.
pub fn prefetch(rt: Arc<dyn Nodes>, image: String) {
    tokio::spawn(async move {
        let _ = rt.images().export(&image).await;
    });
}
