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

use crate::cluster::Step;
use crate::cluster::{Nodes, Progress};
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
        let body = counted(archive, rt.progress(), step.clone());
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

/// `archive` in chunks of [`CHUNK`] bytes, as they go to a node's engine, telling `progress`
/// how many bytes of the whole have gone as each one does.
fn counted(
    archive: Bytes,
    progress: Arc<dyn Progress>,
    step: Step,
) -> impl futures_util::Stream<Item = std::io::Result<Bytes>> {
    let total = archive.len() as u64;
    let chunks: Vec<Bytes> =
        (0..archive.len()).step_by(CHUNK).map(|i| archive.slice(i..archive.len().min(i + CHUNK))).collect();
    let mut sent = 0u64;
    stream::iter(chunks).map(move |c| {
        sent += c.len() as u64;
        progress.bytes(&step, sent, Some(total));
        Ok::<_, std::io::Error>(c)
    })
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

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;

    /// Keeps every `bytes` event.
    #[derive(Default)]
    struct Counts(Mutex<Vec<(Step, u64, Option<u64>)>>);

    impl Progress for Counts {
        fn started(&self, _: &Step) {}
        fn finished(&self, _: &Step, _: Duration, _: Option<&str>) {}
        fn failed(&self, _: &Step, _: Duration, _: &crate::Error) {}
        fn note(&self, _: &str) {}
        fn bytes(&self, step: &Step, done: u64, total: Option<u64>) {
            self.0.lock().unwrap().push((step.clone(), done, total));
        }
    }

    /// An archive goes in whole, in chunks of at most a MiB, and the step's progress counts
    /// up to its size as each chunk goes, not before.
    #[tokio::test]
    async fn an_archive_goes_in_chunks_and_its_progress_counts_each_as_it_goes() {
        let archive = Bytes::from((0..2 * CHUNK + 10).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
        let step = Step::LoadImage { node: "worker1".into(), image: "registry:2".into() };
        let progress = Arc::new(Counts::default());
        let mut body = Box::pin(counted(archive.clone(), progress.clone(), step.clone()));
        assert!(progress.0.lock().unwrap().is_empty(), "progress before anything went");
        let mut got = Vec::new();
        let mut sizes = Vec::new();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.unwrap();
            sizes.push(chunk.len());
            got.extend_from_slice(&chunk);
            let (s, done, total) = progress.0.lock().unwrap().last().cloned().unwrap();
            assert_eq!((s, done, total), (step.clone(), got.len() as u64, Some(archive.len() as u64)));
        }
        assert_eq!(sizes, [CHUNK, CHUNK, 10]);
        assert_eq!(got, archive);
        assert_eq!(progress.0.lock().unwrap().len(), 3, "one event per chunk");
    }

    #[tokio::test]
    async fn an_empty_archive_sends_nothing_and_says_nothing() {
        let progress = Arc::new(Counts::default());
        let step = Step::LoadImage { node: "m".into(), image: "x".into() };
        let chunks: Vec<_> = counted(Bytes::new(), progress.clone(), step).collect().await;
        assert!(chunks.is_empty());
        assert!(progress.0.lock().unwrap().is_empty());
    }
}
