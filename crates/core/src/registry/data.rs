//! The registry's data when its node changes: moved from volume to volume through the
//! engines' archive API, never counted where it is until the copy is whole.

use std::collections::HashMap;
use std::time::Duration;

use bollard::models::{
    ContainerCreateBody, HostConfig, Mount, MountType, MountVolumeOptions, ServiceSpecMode, ServiceSpecModeReplicated,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, DownloadFromContainerOptionsBuilder, InspectServiceOptions,
    ListContainersOptionsBuilder, RemoveContainerOptionsBuilder, RemoveVolumeOptionsBuilder,
    UpdateServiceOptionsBuilder, UploadToContainerOptionsBuilder,
};
use bollard::Docker;
use futures_util::StreamExt;

use crate::cluster::Nodes;
use crate::error::{engine_message, Error, Result};
use crate::registry::namespace;
use crate::registry::task_filter;
use crate::registry::wait_tasks_gone;
use crate::registry::SERVICE;
use crate::registry::VOLUME;

/// Label on the stopped helper containers a data move makes (`lab-registry-move-*`): [`INCOMING`]
/// on the destination, [`OUTGOING`] on the source.
pub const MOVE_LABEL: &str = "lab.registry.move";
/// The destination's helper: it is made first, with the volume, and removed only once the copy
/// is complete, so while it exists the volume beside it holds a partial copy.
pub const INCOMING: &str = "incoming";
/// The source's helper: nothing depends on it; a leftover is removed.
pub const OUTGOING: &str = "outgoing";

/// What a node holds of the registry's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Data {
    /// No `registry_data` volume.
    None,
    /// The volume, under the marker of a move that never finished: a partial copy, which never
    /// counts as the registry's data.
    Partial,
    /// The volume, whole.
    Complete,
}

/// What the node holds of the registry's data: a `registry_data` volume counts only when no
/// incoming move helper marks it as a copy still under way.
pub async fn data_on(docker: &Docker) -> Data {
    if docker.inspect_volume(VOLUME).await.is_err() {
        return Data::None;
    }
    if move_helpers(docker, Some(INCOMING)).await.is_empty() {
        Data::Complete
    } else {
        Data::Partial
    }
}

/// The move helpers on a node (of one kind, or both), by name.
pub(crate) async fn move_helpers(docker: &Docker, kind: Option<&str>) -> Vec<String> {
    let label = match kind {
        Some(k) => format!("{MOVE_LABEL}={k}"),
        None => MOVE_LABEL.to_string(),
    };
    let filters = HashMap::from([("label", vec![label])]);
    let opts = ListContainersOptionsBuilder::new().all(true).filters(&filters).build();
    docker
        .list_containers(Some(opts))
        .await
        .unwrap_or_default()
        .into_iter()
        .filter_map(|c| c.names.and_then(|n| n.first().map(|n| n.trim_start_matches('/').to_string())))
        .collect()
}

/// Removes the move helpers of `kind` (both kinds: `None`) on a node. An incoming one goes only
/// where its partial copy goes too, or where a move that finished made it whole.
pub async fn remove_move_helpers(node: &str, docker: &Docker, kind: Option<&str>) -> Result<()> {
    for name in move_helpers(docker, kind).await {
        let opts = RemoveContainerOptionsBuilder::new().force(true).v(true).build();
        match docker.remove_container(&name, Some(opts)).await {
            Ok(()) | Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => {}
            Err(e) => return Err(Error::engine(node, format!("remove the data move's helper {name}"), e)),
        }
    }
    Ok(())
}

/// Moves the registry's data from `from` to the registry's node (`to`), through the engines'
/// archive API: the service is scaled to zero so nothing writes, `registry_data` on `from` is
/// read as a tar stream by a stopped helper container and written into `registry_data` on
/// `to` the same way. Returns what it moved.
///
/// An interrupted move (lab killed, a node lost) must never pass for a finished one: the
/// destination's helper, labelled [`INCOMING`], is made first, together with the volume it
/// mounts, and removed only once the copy is complete. While it exists, observation counts the
/// destination's volume as a partial copy ([`Data::Partial`]), so the planner moves the data
/// again from `from`, which keeps the only complete copy until then; `from`'s volume is
/// removed last of all.
///
/// The data is added to what `to` has, never put in its place. A registry's storage is
/// content-addressed blobs plus small link files per repository and tag, so the union of two
/// is a registry serving both. That is what a user expects when the task ran on `from` behind
/// lab's back (its pin moved by hand) while `to` kept every image pushed before: the images
/// pushed meanwhile join them, and a tag pushed on both ends as it was last pushed, on
/// `from`. Where `to` has nothing (a new node), adding is copying.
pub async fn move_data(rt: &dyn Nodes, from: &str, to: &str) -> Result<String> {
    let step = format!("move registry data from {from} to {to}");
    let src = rt.engine(from).await?.docker;
    let dst = rt.engine(to).await?.docker;
    // Nothing may write while the data travels.
    stop_service(rt).await?;
    wait_tasks_gone(from, &src, false, "the registry task to stop before its data moves", Duration::from_secs(60))
        .await?;
    let helper = Helper {
        name: format!("lab-registry-move-{}", crate::driver::support::random_suffix()),
        image: rt.desired().registry_image.clone(),
        cluster: rt.desired().topology.cluster.to_string(),
    };
    // Helpers an interrupted move left: the source's go; the destination's stays until this
    // move completes, since its volume may still be a partial copy.
    remove_move_helpers(from, &src, Some(OUTGOING)).await?;
    let had = data_on(&dst).await == Data::Complete;
    helper.make(&dst, INCOMING).await.map_err(|e| Error::engine(to, &step, e))?;
    let copied = async {
        helper.make(&src, OUTGOING).await.map_err(|e| Error::engine(from, &step, e))?;
        helper.copy(&src, &dst).await.map_err(|e| Error::engine(to, &step, e))
    };
    let bytes = match copied.await {
        Ok(bytes) => bytes,
        Err(e) => {
            // `from` keeps the only complete copy; the destination's marker stays.
            let _ = remove_move_helpers(from, &src, Some(OUTGOING)).await;
            return Err(e);
        }
    };
    // The copy is whole: only now does the destination hold the registry's data.
    remove_move_helpers(to, &dst, Some(INCOMING)).await?;
    // The old copy goes, so that it is never taken for the registry's data again; if lab is
    // stopped before that, the source's helper says so to the next deploy ([`sweep_moves`]).
    // A copy that will not go is left (the registry's node now has the data, which is what
    // counts) and said.
    if let Err(e) = drop_old_copy(from, &src).await {
        tracing::warn!("the old copy of the registry's data stays: {e}");
    }
    let mut what = format!("moved {:.1} MB of registry data from {from} to {to}", bytes as f64 / 1e6);
    if had {
        what.push_str(&format!(", added to the data {to} had"));
    }
    rt.progress().note(&what);
    Ok(what)
}

/// Scales the registry service to zero, if a manager answers and the service exists.
async fn stop_service(rt: &dyn Nodes) -> Result<()> {
    let Ok((mgr_name, mgr)) = rt.manager().await else { return Ok(()) };
    let Ok(svc) = mgr.inspect_service(SERVICE, None::<InspectServiceOptions>).await else { return Ok(()) };
    let version = svc.version.and_then(|v| v.index).unwrap_or_default();
    let Some(mut spec) = svc.spec else { return Ok(()) };
    spec.mode = Some(ServiceSpecMode {
        replicated: Some(ServiceSpecModeReplicated { replicas: Some(0) }),
        ..Default::default()
    });
    mgr.update_service(SERVICE, spec, UpdateServiceOptionsBuilder::new().version(version as i32).build(), None)
        .await
        .map(drop)
        .map_err(|e| Error::engine(&mgr_name, format!("stop service {SERVICE}"), e))
}

/// The stopped helper container a move makes on each end, mounting `registry_data`: the
/// archive API reads and writes the volume through it.
struct Helper {
    name: String,
    image: String,
    cluster: String,
}

impl Helper {
    /// Makes the helper on `docker`, labelled as the move's `kind` end. A missing volume is
    /// made with the container, in the same request, so that it never exists without the
    /// marker of a copy under way.
    async fn make(&self, docker: &Docker, kind: &str) -> std::result::Result<(), bollard::errors::Error> {
        let labels = HashMap::from([
            (crate::cluster::probe::CLUSTER_LABEL.to_string(), self.cluster.clone()),
            (MOVE_LABEL.to_string(), kind.to_string()),
        ]);
        let body = ContainerCreateBody {
            image: Some(self.image.clone()),
            entrypoint: Some(vec!["true".into()]),
            cmd: Some(vec![]),
            labels: Some(labels),
            host_config: Some(HostConfig {
                mounts: Some(vec![Mount {
                    target: Some("/var/lib/registry".into()),
                    source: Some(VOLUME.into()),
                    typ: Some(MountType::VOLUME),
                    volume_options: Some(MountVolumeOptions { labels: Some(namespace()), ..Default::default() }),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        docker
            .create_container(Some(CreateContainerOptionsBuilder::new().name(&self.name).build()), body)
            .await
            .map(drop)
    }

    /// Streams the volume from `src`'s helper into `dst`'s as a tar archive, adding to what
    /// `dst` has; returns the bytes it carried.
    async fn copy(&self, src: &Docker, dst: &Docker) -> std::result::Result<u64, bollard::errors::Error> {
        let moved = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = moved.clone();
        let tar = src
            .download_from_container(
                &self.name,
                Some(DownloadFromContainerOptionsBuilder::new().path("/var/lib/registry").build()),
            )
            .map(move |chunk| {
                let chunk = chunk.map_err(|e| std::io::Error::other(engine_message(&e)))?;
                counter.fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::Relaxed);
                Ok::<_, std::io::Error>(chunk)
            });
        dst.upload_to_container(
            &self.name,
            Some(UploadToContainerOptionsBuilder::new().path("/var/lib").build()),
            bollard::body_try_stream(tar),
        )
        .await?;
        Ok(moved.load(std::sync::atomic::Ordering::Relaxed))
    }
}

/// Removes the copy of the registry's data a finished move left on `node`: the old task's
/// exited containers the swarm keeps (they still name the volume), the move's source helper,
/// and the volume.
pub(crate) async fn drop_old_copy(node: &str, docker: &Docker) -> Result<()> {
    let history = ListContainersOptionsBuilder::new().all(true).filters(&task_filter()).build();
    for c in docker.list_containers(Some(history)).await.unwrap_or_default() {
        if let Some(id) = c.id {
            let _ = docker.remove_container(&id, None).await;
        }
    }
    remove_move_helpers(node, docker, Some(OUTGOING)).await?;
    match docker.remove_volume(VOLUME, Some(RemoveVolumeOptionsBuilder::new().force(true).build())).await {
        Ok(()) | Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Ok(()),
        Err(e) => Err(Error::engine(node, format!("remove volume {VOLUME}"), e)),
    }
}

/// What an interrupted move left on the nodes other than the registry's: source helpers, and,
/// once the registry's node holds a complete copy, the old copies they mark. A move scales
/// the registry to zero first, so an interrupted one always leaves a deploy to do, which
/// calls this. Best effort: what cannot be removed now is tried again by the next deploy.
pub(crate) async fn sweep_moves(rt: &dyn Nodes) {
    let reg_node = rt.desired().topology.registry_node().name.clone();
    let reg_complete = match rt.try_engine(&reg_node, Duration::from_secs(3)).await {
        Ok(e) => data_on(&e.docker).await == Data::Complete,
        Err(_) => false,
    };
    for node in rt.desired().topology.nodes.iter().filter(|n| n.name != reg_node) {
        let Ok(e) = rt.try_engine(&node.name, Duration::from_secs(3)).await else { continue };
        if move_helpers(&e.docker, Some(OUTGOING)).await.is_empty() {
            continue;
        }
        let swept = if reg_complete {
            drop_old_copy(&node.name, &e.docker).await
        } else {
            remove_move_helpers(&node.name, &e.docker, Some(OUTGOING)).await
        };
        if let Err(err) = swept {
            tracing::warn!("what an interrupted move left on {} stays for now: {err}", node.name);
        }
    }
}
