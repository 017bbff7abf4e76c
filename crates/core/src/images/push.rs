//! `lab push`: images from this machine's engine into the cluster's registry, sending only
//! the blobs the registry does not have.
//!
//! For each image, lab first asks the registry, by digest, for the image's config and layers
//! (an image's layers, as `docker save` writes them on these engines, are its uncompressed
//! layer tars, whose digests are the layer IDs `docker image inspect` lists). Blobs another
//! repository of the registry has are mounted, not sent. If every blob is there, only the
//! manifest travels. Otherwise the image's `docker save` archive is read as it streams from
//! the local engine: each file is hashed (and, if it is to be sent, spooled to a private
//! temporary directory), and the blobs the registry lacks are sent as soon as they are known,
//! beside the rest of the export. A blob one image of the call sent is mounted for the next.
//! Manifests are put last, once every image's blobs are in, so a push that fails half-way tags
//! nothing.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bollard::Docker;
use bytes::Bytes;
use futures_util::StreamExt;
use serde::Serialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, Semaphore};

use crate::error::{engine_message, Error, Result};
use crate::images::distribution::{self, Client, DOCKER_MANIFEST, OCI_MANIFEST};

/// One image to push: where it is locally and what it is called in the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// The image as the local engine names it (`myapp:1`, an ID, ...).
    pub source: String,
    /// The repository in the cluster's registry (`myapp`).
    pub repo: String,
    /// The tag (`1`).
    pub tag: String,
}

impl Item {
    /// The reference the nodes use: `localhost:5000/<repo>:<tag>`.
    pub fn reference(&self) -> String {
        format!("localhost:{}/{}:{}", crate::registry::PORT, self.repo, self.tag)
    }
}

/// Parses `NAME[:TAG]` as a registry target: the repository and tag a local image reference
/// gets in the cluster's registry (`ghcr.io/me/app:1` becomes `me/app:1`, `app` becomes
/// `app:latest`). An image named by digest or ID has no name to keep: it needs `--as`.
pub fn target_of(reference: &str) -> std::result::Result<(String, String), String> {
    if reference.contains('@') || reference.starts_with("sha256:") {
        return Err(format!("{reference:?} has no name to keep in the registry: give one with --as NAME:TAG"));
    }
    let (mut name, tag) = match reference.rsplit_once(':') {
        Some((n, t)) if !t.contains('/') => (n.to_string(), t.to_string()),
        _ => (reference.to_string(), "latest".to_string()),
    };
    // A first component that looks like a registry host is not part of the repository.
    if let Some((first, rest)) = name.split_once('/') {
        if first.contains('.') || first.contains(':') || first == "localhost" {
            name = rest.to_string();
        }
    }
    // Docker Hub's official images live under `library/`; in lab's registry, `nginx` is `nginx`.
    if let Some(rest) = name.strip_prefix("library/") {
        if !rest.contains('/') {
            name = rest.to_string();
        }
    }
    check_repo(&name).map_err(|why| format!("{reference:?}: {why}"))?;
    check_tag(&tag).map_err(|why| format!("{reference:?}: {why}"))?;
    Ok((name, tag))
}

/// A repository name the distribution API accepts: lowercase path components of letters and
/// digits, separated by `.`, `_`, `__` or `-`.
pub(crate) fn check_repo(name: &str) -> std::result::Result<(), String> {
    let component_ok = |c: &str| {
        !c.is_empty()
            && c.chars().all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || "._-".contains(ch))
            && c.starts_with(|ch: char| ch.is_ascii_alphanumeric())
            && c.ends_with(|ch: char| ch.is_ascii_alphanumeric())
    };
    if name.len() > 255 || !name.split('/').all(component_ok) {
        return Err(format!(
            "the repository name {name:?} is not one a registry accepts (lowercase letters, digits and . _ - \
             between them, components separated by /)"
        ));
    }
    Ok(())
}

pub(crate) fn check_tag(tag: &str) -> std::result::Result<(), String> {
    let ok = !tag.is_empty()
        && tag.len() <= 128
        && tag.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
        && tag.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!("the tag {tag:?} is not one a registry accepts (letters, digits, _ . -, at most 128)"))
    }
}

/// What happened to one blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Fate {
    /// Sent.
    Sent,
    /// The repository had it already.
    Present,
    /// Another repository of the registry had it; linked without sending.
    Mounted,
}

/// What a push did for one image.
#[derive(Debug, Clone, Serialize)]
pub struct Pushed {
    /// The local image.
    pub source: String,
    /// `localhost:5000/<repo>:<tag>`.
    pub reference: String,
    /// The manifest's digest.
    pub digest: String,
    /// Each blob (config first, then the layers), its size and what became of it.
    pub blobs: Vec<(String, u64, Fate)>,
}

impl Pushed {
    /// Bytes sent for this image.
    pub fn sent_bytes(&self) -> u64 {
        self.blobs.iter().filter(|b| b.2 == Fate::Sent).map(|b| b.1).sum()
    }
}

/// What a push tells the user while it runs.
pub trait Events: Send + Sync {
    /// A note (an image's blobs are all there; an image is being exported).
    fn note(&self, message: &str);
    /// `n` more bytes went to the registry.
    fn sent(&self, n: u64);
    /// `n` more bytes are to be sent (known as the export reveals what is missing).
    fn to_send(&self, n: u64);
}

/// The local engine's facts about one image.
struct Local {
    item: Item,
    /// The config's digest (the image ID on these engines).
    id: String,
    /// The layers' uncompressed digests.
    diff_ids: Vec<String>,
}

/// Looks up every image in the local engine. Any missing is bad input naming all of them,
/// before anything is sent.
async fn inspect_all(local: &Docker, items: &[Item], engine: &str) -> Result<Vec<Local>> {
    let mut out = Vec::new();
    let mut missing = Vec::new();
    for item in items {
        match local.inspect_image(&item.source).await {
            Ok(i) => out.push(Local {
                item: item.clone(),
                id: i.id.unwrap_or_default(),
                diff_ids: i.root_fs.and_then(|r| r.layers).unwrap_or_default(),
            }),
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => {
                missing.push(item.source.clone())
            }
            Err(e) => return Err(Error::engine_op(format!("look up {} in {engine}", item.source), e)),
        }
    }
    if !missing.is_empty() {
        let (what, verb) = if missing.len() == 1 { ("image", "is") } else { ("images", "are") };
        return Err(Error::input(
            "lab push",
            format!("{what} {} {verb} not in {engine}; nothing was sent", missing.join(", ")),
        ));
    }
    Ok(out)
}

/// One file of a `docker save` archive, hashed as it streamed.
struct Entry {
    digest: String,
    size: u64,
    /// The first bytes, to tell a compressed layer from a plain tar.
    magic: [u8; 4],
    data: Data,
}

enum Data {
    Memory(Bytes),
    File(PathBuf),
    /// Hashed and not kept: the registry has it (or was thought to: see [`Skip`]).
    Dropped,
}

/// What the reader keeps of the archive's large files: the registry's blobs, by digest and by
/// size, are not written out (issue 20: the spill to `$TMPDIR`, a tmpfs on many machines,
/// holds only what is being sent).
#[derive(Debug, Default, Clone)]
struct Skip {
    /// The digests the registry has.
    digests: BTreeSet<String>,
    /// Their sizes. On Docker's classic store a layer's file is `<v1 id>/layer.tar`: its digest
    /// is known only once it is read, so a file of a size the registry has a blob of is hashed
    /// without being kept; if its digest turns out to be one the registry lacks (two layers of
    /// one size), a second export keeps it by path.
    sizes: BTreeSet<u64>,
    /// On a second export: the only paths kept.
    paths: Option<BTreeSet<String>>,
}

/// How the reader treats one file of the archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keep {
    Memory,
    Spool,
    HashOnly,
}

/// Whether the file at `path`, of `size` bytes, is kept in memory, spooled, or only hashed.
fn keep(path: &str, size: u64, skip: &Skip) -> Keep {
    if let Some(paths) = &skip.paths {
        return match (paths.contains(path), size > IN_MEMORY) {
            (false, _) => Keep::HashOnly,
            (true, false) => Keep::Memory,
            (true, true) => Keep::Spool,
        };
    }
    if size <= IN_MEMORY {
        return Keep::Memory;
    }
    // An OCI layout's blob (`docker save` of Docker 25 and later) is named by its digest.
    if let Some(hex) = path.strip_prefix("blobs/sha256/") {
        let known = skip.digests.contains(&format!("sha256:{hex}"));
        return if known { Keep::HashOnly } else { Keep::Spool };
    }
    if skip.sizes.contains(&size) {
        Keep::HashOnly
    } else {
        Keep::Spool
    }
}

/// Files this small are kept in memory (configs, manifests); the rest are spooled.
const IN_MEMORY: u64 = 1 << 20;
/// Blobs sent at once.
const PARALLEL: usize = 3;

/// Reads a `docker save` archive from `reader`, hashing and keeping each file, and sends each
/// one, by its path in the archive, as soon as it is whole.
/// A file that is spooled and turns out to be a blob the registry has is removed at once.
fn read_archive(
    reader: impl Read,
    dir: PathBuf,
    skip: &Skip,
    tx: mpsc::Sender<(String, Entry)>,
) -> std::io::Result<()> {
    let mut archive = tar::Archive::new(reader);
    for (n, entry) in archive.entries()?.enumerate() {
        let mut entry = entry?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry.path()?.to_string_lossy().into_owned();
        let size = entry.size();
        let how = keep(&path, size, skip);
        let mut hasher = Sha256::new();
        let mut magic = [0u8; 4];
        let mut seen = 0usize;
        let mut buf = vec![0u8; 256 * 1024];
        let mut memory = Vec::new();
        let mut file = if how == Keep::Spool {
            let p = dir.join(format!("{n}"));
            Some((std::io::BufWriter::new(std::fs::File::create(&p)?), p))
        } else {
            None
        };
        loop {
            let k = entry.read(&mut buf)?;
            if k == 0 {
                break;
            }
            let chunk = &buf[..k];
            hasher.update(chunk);
            if seen < 4 {
                let take = (4 - seen).min(k);
                magic[seen..seen + take].copy_from_slice(&chunk[..take]);
                seen += take;
            }
            match (&mut file, how) {
                (Some((f, _)), _) => f.write_all(chunk)?,
                (None, Keep::Memory) => memory.extend_from_slice(chunk),
                (None, _) => {}
            }
        }
        let digest = format!("sha256:{}", hex(&hasher.finalize()));
        let data = match (file, how) {
            (Some((f, p)), _) => {
                drop(f.into_inner().map_err(|e| e.into_error())?);
                if skip.digests.contains(&digest) {
                    std::fs::remove_file(&p)?;
                    Data::Dropped
                } else {
                    Data::File(p)
                }
            }
            (None, Keep::Memory) => Data::Memory(Bytes::from(memory)),
            (None, _) => Data::Dropped,
        };
        if tx.blocking_send((path, Entry { digest, size, magic, data })).is_err() {
            break;
        }
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A layer's media type, from its first bytes.
fn layer_type(magic: [u8; 4], oci: bool) -> &'static str {
    match (magic, oci) {
        ([0x1f, 0x8b, _, _], false) => "application/vnd.docker.image.rootfs.diff.tar.gzip",
        ([0x1f, 0x8b, _, _], true) => "application/vnd.oci.image.layer.v1.tar+gzip",
        ([0x28, 0xb5, 0x2f, 0xfd], _) => "application/vnd.oci.image.layer.v1.tar+zstd",
        (_, false) => "application/vnd.docker.image.rootfs.diff.tar",
        (_, true) => "application/vnd.oci.image.layer.v1.tar",
    }
}

/// The manifest of an image whose config and layers are `config` and `layers` (digest, size,
/// media type); Docker's format, or OCI's if a layer needs it (zstd).
fn manifest(config: (&str, u64), layers: &[(String, u64, &str)]) -> (&'static str, Bytes) {
    let oci = layers.iter().any(|l| l.2.contains("zstd"));
    let (media, config_type) = if oci {
        (OCI_MANIFEST, "application/vnd.oci.image.config.v1+json")
    } else {
        (DOCKER_MANIFEST, "application/vnd.docker.container.image.v1+json")
    };
    let layers: Vec<_> = layers
        .iter()
        .map(|(d, s, t)| {
            let t = if oci {
                t.replace("vnd.docker.image.rootfs.diff.tar", "vnd.oci.image.layer.v1.tar")
            } else {
                t.to_string()
            };
            json!({"mediaType": t, "size": s, "digest": d})
        })
        .collect();
    let m = json!({
        "schemaVersion": 2,
        "mediaType": media,
        "config": {"mediaType": config_type, "size": config.1, "digest": config.0},
        "layers": layers,
    });
    (media, Bytes::from(serde_json::to_vec(&m).expect("json")))
}

/// What the registry already has of one image, by digest: its size and how it got there.
type Known = HashMap<String, (u64, Fate)>;

/// The repositories to mount `digest` into `repo` from, best first: those this push has put
/// it in already (the catalog was read before they had it, or before they existed), then every
/// repository the catalog listed. Without the first, two images sharing a base, pushed in one
/// call, each sent it (issue 20).
fn mount_sources(repo: &str, digest: &str, catalog: &[String], placed: &HashMap<String, Vec<String>>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for r in placed.get(digest).into_iter().flatten().chain(catalog.iter()) {
        if r != repo && !out.contains(r) {
            out.push(r.clone());
        }
    }
    out
}

/// Whether `repo` has `digest`, or another repository does and it can be mounted.
pub(crate) async fn find(client: &Client, repo: &str, digest: &str, others: &[String]) -> Result<Option<(u64, Fate)>> {
    if let Some(size) = client.blob_size(repo, digest).await? {
        return Ok(Some((size, Fate::Present)));
    }
    for from in others.iter().filter(|o| *o != repo) {
        if client.blob_size(from, digest).await?.is_some() && client.mount(repo, digest, from).await? {
            if let Some(size) = client.blob_size(repo, digest).await? {
                return Ok(Some((size, Fate::Mounted)));
            }
        }
    }
    Ok(None)
}

/// Sends `entry` as blob `entry.digest` of `repo`.
async fn send(client: &Client, repo: &str, entry: &Entry, events: Arc<dyn Events>) -> Result<()> {
    events.to_send(entry.size);
    let body = match &entry.data {
        Data::Memory(b) => {
            events.sent(b.len() as u64);
            distribution::full(b.clone())
        }
        Data::File(p) => {
            let f = tokio::fs::File::open(p).await.map_err(|e| Error::io(client.node(), "read a spooled layer", e))?;
            let ev = events.clone();
            let s = tokio_util::io::ReaderStream::with_capacity(f, 256 * 1024).inspect(move |c| {
                if let Ok(c) = c {
                    ev.sent(c.len() as u64);
                }
            });
            distribution::streamed(s)
        }
        // push_archive sends only what was kept; this would be a defect there, said as one.
        Data::Dropped => {
            return Err(Error::op(format!("send {}", entry.digest), "its bytes were not kept from the export"))
        }
    };
    client.upload(repo, &entry.digest, entry.size, body).await
}

/// What pushing one image's blobs gives: the manifest to put (its media type and bytes), and
/// each blob (digest, size) with how it got there.
type Outcome = ((&'static str, Bytes), Vec<(String, u64, Fate)>);

/// Pushes one image whose blobs are not all in the registry: reads its archive from the local
/// engine, sending what is missing as it goes. Returns the manifest to put, and the blobs.
async fn push_archive(
    client: &Arc<Client>,
    local: &Docker,
    image: &Local,
    mut known: Known,
    others: &[String],
    events: Arc<dyn Events>,
) -> Result<Outcome> {
    let repo = image.item.repo.clone();
    let source = &image.item.source;
    let dir = tempfile::Builder::new().prefix("lab-push-").tempdir().map_err(|e| {
        Error::op(format!("push {source}"), format!("cannot make a temporary directory: {e}")).with_source(e)
    })?;
    events.note(&format!("{source}: exporting from the local engine"));
    let skip =
        Skip { digests: known.keys().cloned().collect(), sizes: known.values().map(|k| k.0).collect(), paths: None };
    let mut uploads = Uploads::new(client, &repo, &events);
    // Blobs known to be missing (the image's layer IDs) are sent as soon as they are read.
    let wanted: BTreeSet<String> = std::iter::once(image.id.clone())
        .chain(image.diff_ids.iter().cloned())
        .filter(|d| !known.contains_key(d))
        .collect();
    let entries = export(local, source, dir.path().to_path_buf(), skip, |_, entry| {
        if !matches!(entry.data, Data::Dropped) && wanted.contains(&entry.digest) {
            uploads.start(entry);
        }
    })
    .await?;
    let (config, layers) = named_in_manifest(&entries, source)?;
    // The rest of what the manifest names, unless the registry has it.
    let mut again: BTreeSet<String> = BTreeSet::new();
    for (path, e) in std::iter::once(&config).chain(layers.iter()) {
        if known.contains_key(&e.digest) || uploads.started.contains(&e.digest) {
            continue;
        }
        if let Some(k) = find(client, &repo, &e.digest, others).await? {
            known.insert(e.digest.clone(), k);
            continue;
        }
        if matches!(e.data, Data::Dropped) {
            // Of a size the registry has a blob of, but not that blob: kept on a second export.
            again.insert(path.clone());
            continue;
        }
        uploads.start(e);
    }
    if !again.is_empty() {
        events.note(&format!("{source}: exporting again for {} layers", again.len()));
        let skip = Skip { paths: Some(again.clone()), ..Skip::default() };
        export(local, source, dir.path().to_path_buf(), skip, |path, entry| {
            if again.contains(path) {
                uploads.start(entry);
            }
        })
        .await?;
    }
    uploads.finish(&mut known, source).await?;
    drop(dir);
    Ok(summary(&config.1, &layers, &known))
}

/// Reads `source`'s archive as the local engine exports it, spooling in `spool` the large
/// files `skip` does not drop, and tells `on_entry` of each file (by its path in the archive)
/// as soon as it is whole. Returns every file, by its path.
async fn export(
    local: &Docker,
    source: &str,
    spool: PathBuf,
    skip: Skip,
    mut on_entry: impl FnMut(&str, &Arc<Entry>),
) -> Result<HashMap<String, Arc<Entry>>> {
    // The export's bytes go to a thread that reads the archive.
    let (chunks_tx, chunks_rx) = mpsc::channel::<std::io::Result<Bytes>>(16);
    let (entries_tx, mut entries_rx) = mpsc::channel::<(String, Entry)>(4);
    let reader_task = tokio::task::spawn_blocking(move || {
        let stream = tokio_stream_reader(chunks_rx);
        read_archive(tokio_util::io::SyncIoBridge::new(stream), spool, &skip, entries_tx)
    });
    let mut export = local.export_image(source);
    let exporter = async move {
        while let Some(chunk) = export.next().await {
            let chunk = chunk.map_err(|e| std::io::Error::other(engine_message(&e)));
            let failed = chunk.is_err();
            if chunks_tx.send(chunk).await.is_err() || failed {
                break;
            }
        }
    };
    let mut entries: HashMap<String, Arc<Entry>> = HashMap::new();
    let collect = async {
        while let Some((path, entry)) = entries_rx.recv().await {
            let entry = Arc::new(entry);
            on_entry(&path, &entry);
            entries.insert(path, entry);
        }
    };
    tokio::join!(exporter, collect);
    let read = reader_task.await.map_err(|e| Error::op_caused(format!("export {source}"), e))?;
    read.map_err(|e| Error::op_caused(format!("export {source} from the local engine"), e))?;
    Ok(entries)
}

/// The image's config and its layers, in order, each with its path in the archive, as the
/// archive's own `manifest.json` names them.
#[allow(clippy::type_complexity)]
fn named_in_manifest(
    entries: &HashMap<String, Arc<Entry>>,
    source: &str,
) -> Result<((String, Arc<Entry>), Vec<(String, Arc<Entry>)>)> {
    let index: serde_json::Value = entries
        .get("manifest.json")
        .and_then(|e| match &e.data {
            Data::Memory(b) => serde_json::from_slice(b).ok(),
            Data::File(_) | Data::Dropped => None,
        })
        .ok_or_else(|| Error::op(format!("export {source}"), "the archive has no manifest.json"))?;
    let entry_of = |path: &str| {
        entries.get(path).cloned().map(|e| (path.to_string(), e)).ok_or_else(|| {
            Error::op(format!("export {source}"), format!("the archive lacks {path}, which its manifest names"))
        })
    };
    let config = entry_of(index[0]["Config"].as_str().unwrap_or_default())?;
    let mut layers = Vec::new();
    for l in index[0]["Layers"].as_array().into_iter().flatten() {
        layers.push(entry_of(l.as_str().unwrap_or_default())?);
    }
    Ok((config, layers))
}

/// The manifest to put, and each blob with how it got there (a blob not in `known` was there).
fn summary(config: &Entry, layers: &[(String, Arc<Entry>)], known: &Known) -> Outcome {
    let fate = |d: &str| known.get(d).map(|k| k.1).unwrap_or(Fate::Present);
    let mut blobs = vec![(config.digest.clone(), config.size, fate(&config.digest))];
    let mut described = Vec::new();
    for (_, l) in layers {
        blobs.push((l.digest.clone(), l.size, fate(&l.digest)));
        described.push((l.digest.clone(), l.size, layer_type(l.magic, false)));
    }
    (manifest((&config.digest, config.size), &described), blobs)
}

/// The blobs of one image being sent: each at most once, [`PARALLEL`] at a time.
struct Uploads {
    client: Arc<Client>,
    repo: String,
    events: Arc<dyn Events>,
    gate: Arc<Semaphore>,
    running: tokio::task::JoinSet<Result<(String, u64)>>,
    started: BTreeSet<String>,
}

impl Uploads {
    fn new(client: &Arc<Client>, repo: &str, events: &Arc<dyn Events>) -> Uploads {
        Uploads {
            client: client.clone(),
            repo: repo.to_string(),
            events: events.clone(),
            gate: Arc::new(Semaphore::new(PARALLEL)),
            running: tokio::task::JoinSet::new(),
            started: BTreeSet::new(),
        }
    }

    /// Starts sending `entry`, unless it is already on its way.
    fn start(&mut self, entry: &Arc<Entry>) {
        if !self.started.insert(entry.digest.clone()) {
            return;
        }
        let (c, r, e, ev, g) =
            (self.client.clone(), self.repo.clone(), entry.clone(), self.events.clone(), self.gate.clone());
        self.running.spawn(async move {
            let _permit = g.acquire_owned().await;
            send(&c, &r, &e, ev).await.map(|()| (e.digest.clone(), e.size))
        });
    }

    /// Waits for every blob to be sent, recording each in `known`; the first failure stops the rest.
    async fn finish(mut self, known: &mut Known, source: &str) -> Result<()> {
        while let Some(done) = self.running.join_next().await {
            let (digest, size) = done.map_err(|e| Error::op_caused(format!("push {source}"), e))??;
            known.insert(digest, (size, Fate::Sent));
        }
        Ok(())
    }
}

/// Adapts a channel of chunks into an `AsyncRead`.
fn tokio_stream_reader(
    rx: mpsc::Receiver<std::io::Result<Bytes>>,
) -> tokio_util::io::StreamReader<tokio_stream_like::Receiver, Bytes> {
    tokio_util::io::StreamReader::new(tokio_stream_like::Receiver(rx))
}

mod tokio_stream_like {
    //! A `Stream` over a tokio channel (what `tokio-stream`'s wrapper does, for one use).
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use bytes::Bytes;
    use tokio::sync::mpsc;

    pub struct Receiver(pub mpsc::Receiver<std::io::Result<Bytes>>);

    impl futures_util::Stream for Receiver {
        type Item = std::io::Result<Bytes>;
        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            self.0.poll_recv(cx)
        }
    }
}

/// Pushes `items` from the `local` engine (`engine` names it for messages) into the registry
/// `client` speaks to. Every image is looked up first; manifests are put last.
pub async fn push(
    client: Arc<Client>,
    local: &Docker,
    engine: &str,
    items: &[Item],
    events: Arc<dyn Events>,
) -> Result<(Vec<Pushed>, Duration)> {
    let start = Instant::now();
    let images = inspect_all(local, items, engine).await?;
    client.ping().await?;
    let catalog = client.catalog().await?;
    // Which repositories this push has put each blob in, so that the next image mounts it.
    let mut placed: HashMap<String, Vec<String>> = HashMap::new();
    let mut manifests = Vec::new();
    for image in &images {
        let source = &image.item.source;
        let repo = &image.item.repo;
        // What the registry has already, by the digests the local engine knows.
        let mut known: Known = HashMap::new();
        for d in std::iter::once(&image.id).chain(image.diff_ids.iter()) {
            if let Some(k) = find(&client, repo, d, &mount_sources(repo, d, &catalog, &placed)).await? {
                known.insert(d.clone(), k);
            }
        }
        let all_there = known.contains_key(&image.id) && image.diff_ids.iter().all(|d| known.contains_key(d));
        let (m, blobs) = if all_there {
            events.note(&format!("{source}: every layer is in the registry already"));
            let layers: Vec<(String, u64, &str)> = image
                .diff_ids
                .iter()
                .map(|d| (d.clone(), known[d].0, "application/vnd.docker.image.rootfs.diff.tar"))
                .collect();
            let blobs = std::iter::once(&image.id)
                .chain(image.diff_ids.iter())
                .map(|d| (d.clone(), known[d].0, known[d].1))
                .collect();
            (manifest((&image.id, known[&image.id].0), &layers), blobs)
        } else {
            // Blobs the engine's metadata did not name (a compressed layer) may be anywhere.
            let mut others: Vec<String> = catalog.clone();
            for r in placed.values().flatten() {
                if !others.contains(r) {
                    others.push(r.clone());
                }
            }
            push_archive(&client, local, image, known, &others, events.clone()).await?
        };
        for (digest, _, _) in &blobs {
            let repos = placed.entry(digest.clone()).or_default();
            if !repos.contains(repo) {
                repos.push(repo.clone());
            }
        }
        manifests.push((image, m, blobs));
    }
    let mut out = Vec::new();
    for (image, (media, bytes), blobs) in manifests {
        let digest = client.put_manifest(&image.item.repo, &image.item.tag, media, bytes).await?;
        out.push(Pushed { source: image.item.source.clone(), reference: image.item.reference(), digest, blobs });
    }
    Ok((out, start.elapsed()))
}

/// What `lab images` lists: one row per tag.
#[derive(Debug, Clone, Serialize)]
pub struct Listed {
    /// The repository.
    pub repository: String,
    /// The tag.
    pub tag: String,
    /// The manifest's digest.
    pub digest: String,
    /// The config's and layers' sizes added up (what the image takes in the registry, blobs
    /// shared with other images counted in each).
    pub size: u64,
    /// `localhost:5000/<repository>:<tag>`.
    pub reference: String,
}

/// Everything the registry holds, by repository and tag.
pub async fn list(client: &Client) -> Result<Vec<Listed>> {
    let mut out = Vec::new();
    for repo in client.catalog().await? {
        for tag in client.tags(&repo).await? {
            let Some((digest, _, body)) = client.manifest(&repo, &tag).await? else { continue };
            // A tag `lab images rm` was stopped in the middle of deleting is gone for the user.
            if crate::images::remove::is_placeholder(&body) {
                continue;
            }
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let size = v["config"]["size"].as_u64().unwrap_or(0)
                + v["layers"].as_array().into_iter().flatten().filter_map(|l| l["size"].as_u64()).sum::<u64>()
                + v["manifests"].as_array().into_iter().flatten().filter_map(|l| l["size"].as_u64()).sum::<u64>();
            out.push(Listed {
                reference: format!("localhost:{}/{repo}:{tag}", crate::registry::PORT),
                repository: repo.clone(),
                tag,
                digest,
                size,
            });
        }
    }
    Ok(out)
}

/// Sizes in the units `docker images` uses.
pub fn human(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= 1e9 {
        format!("{:.2} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.1} MB", b / 1e6)
    } else if b >= 1e3 {
        format!("{:.1} kB", b / 1e3)
    } else {
        format!("{bytes} B")
    }
}

/// Blobs by fate, for the summary: how many and how many bytes.
pub fn tally(pushed: &Pushed) -> BTreeMap<&'static str, (usize, u64)> {
    let mut t = BTreeMap::new();
    for (_, size, fate) in &pushed.blobs {
        let k = match fate {
            Fate::Sent => "sent",
            Fate::Present => "already there",
            Fate::Mounted => "mounted",
        };
        let e = t.entry(k).or_insert((0, 0));
        e.0 += 1;
        e.1 += size;
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_names_keep_their_path_and_tag_without_a_registry_host() {
        let t = |r: &str| target_of(r).map(|(n, t)| format!("{n}:{t}"));
        assert_eq!(t("myapp:1").unwrap(), "myapp:1");
        assert_eq!(t("myapp").unwrap(), "myapp:latest");
        assert_eq!(t("ghcr.io/me/app:2").unwrap(), "me/app:2");
        assert_eq!(t("localhost:5000/app").unwrap(), "app:latest");
        assert_eq!(t("docker.io/library/nginx:1.25").unwrap(), "nginx:1.25");
        assert_eq!(t("me/app").unwrap(), "me/app:latest");
        assert!(t("app@sha256:abc").unwrap_err().contains("--as"));
        assert!(t("sha256:abc").unwrap_err().contains("--as"));
        assert!(t("MyApp:1").unwrap_err().contains("repository name"));
        assert!(t("app:-x").unwrap_err().contains("tag"));
    }

    /// A blob an earlier image of the same push put in a repository is mounted from there
    /// first, even though the catalog, read before, does not list that repository.
    #[test]
    fn blobs_this_push_placed_are_mounted_from_where_they_went() {
        let catalog = vec!["old".to_string(), "b".to_string()];
        let mut placed = HashMap::new();
        assert_eq!(mount_sources("b", "sha256:base", &catalog, &placed), vec!["old"]);
        placed.insert("sha256:base".to_string(), vec!["a".to_string()]);
        assert_eq!(mount_sources("b", "sha256:base", &catalog, &placed), vec!["a", "old"]);
        // Never from itself, and each repository once.
        placed.insert("sha256:base".to_string(), vec!["b".to_string(), "old".to_string()]);
        assert_eq!(mount_sources("b", "sha256:base", &catalog, &placed), vec!["old"]);
        assert_eq!(mount_sources("b", "sha256:other", &catalog, &placed), vec!["old"]);
    }

    #[test]
    fn layer_types_follow_the_bytes() {
        assert_eq!(layer_type([0x1f, 0x8b, 8, 0], false), "application/vnd.docker.image.rootfs.diff.tar.gzip");
        assert_eq!(layer_type(*b"usta", false), "application/vnd.docker.image.rootfs.diff.tar");
        assert_eq!(layer_type([0x28, 0xb5, 0x2f, 0xfd], false), "application/vnd.oci.image.layer.v1.tar+zstd");
    }

    #[test]
    fn a_zstd_layer_makes_the_whole_manifest_oci() {
        let (media, bytes) = manifest(
            ("sha256:c", 10),
            &[
                ("sha256:a".into(), 1, "application/vnd.docker.image.rootfs.diff.tar"),
                ("sha256:b".into(), 2, "application/vnd.oci.image.layer.v1.tar+zstd"),
            ],
        );
        assert_eq!(media, OCI_MANIFEST);
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["layers"][0]["mediaType"], "application/vnd.oci.image.layer.v1.tar");
        assert_eq!(v["config"]["mediaType"], "application/vnd.oci.image.config.v1+json");
        let (media, _) =
            manifest(("sha256:c", 10), &[("sha256:a".into(), 1, "application/vnd.docker.image.rootfs.diff.tar")]);
        assert_eq!(media, DOCKER_MANIFEST);
    }

    /// An archive laid out as `docker save` writes it: every file arrives hashed, small ones in
    /// memory and large ones spooled, with the bytes it had.
    #[test]
    fn archive_files_arrive_hashed_and_kept() {
        let mut tar = tar::Builder::new(Vec::new());
        let big = vec![7u8; (IN_MEMORY + 5) as usize];
        for (path, data) in [("abc/layer.tar", big.as_slice()), ("manifest.json", b"[]".as_slice())] {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            tar.append_data(&mut h, path, data).unwrap();
        }
        let bytes = tar.into_inner().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (tx, mut rx) = mpsc::channel(8);
        let d = dir.path().to_path_buf();
        let t = std::thread::spawn(move || read_archive(bytes.as_slice(), d, &Skip::default(), tx));
        let mut got = Vec::new();
        while let Some(e) = rx.blocking_recv() {
            got.push(e);
        }
        t.join().unwrap().unwrap();
        assert_eq!(got.len(), 2);
        let (path, layer) = &got[0];
        assert_eq!(path, "abc/layer.tar");
        assert_eq!(layer.size, big.len() as u64);
        assert_eq!(layer.digest, format!("sha256:{}", hex(&Sha256::digest(&big))));
        assert_eq!(layer.magic, [7, 7, 7, 7]);
        match &layer.data {
            Data::File(p) => assert_eq!(std::fs::read(p).unwrap(), big),
            _ => panic!("a large file is spooled"),
        }
        match &got[1].1.data {
            Data::Memory(b) => assert_eq!(&b[..], b"[]"),
            _ => panic!("a small file stays in memory"),
        }
    }

    /// What the registry has is not written out: a file named by a digest it has, or of a size
    /// one of its blobs has, is only hashed; on a second export only the paths asked for are.
    #[test]
    fn the_reader_keeps_only_what_the_registry_lacks() {
        let big = IN_MEMORY + 512;
        let skip = Skip { digests: ["sha256:aa".to_string()].into(), sizes: [big].into(), paths: None };
        assert_eq!(keep("manifest.json", 2, &skip), Keep::Memory);
        assert_eq!(keep("x/layer.tar", big, &skip), Keep::HashOnly);
        assert_eq!(keep("x/layer.tar", big + 512, &skip), Keep::Spool);
        assert_eq!(keep("blobs/sha256/aa", big + 512, &skip), Keep::HashOnly);
        assert_eq!(keep("blobs/sha256/bb", big, &skip), Keep::Spool);
        let again = Skip { paths: Some(["x/layer.tar".to_string()].into()), ..Skip::default() };
        assert_eq!(keep("x/layer.tar", big, &again), Keep::Spool);
        assert_eq!(keep("y/layer.tar", big + 512, &again), Keep::HashOnly);
        assert_eq!(keep("manifest.json", 2, &again), Keep::HashOnly);
    }

    /// Read through: the registry's layers arrive hashed and dropped, the missing one spooled,
    /// and the spool directory holds only that one (a spooled file whose digest the registry
    /// has, of a size it did not know, is removed as soon as it is hashed).
    #[test]
    fn the_spool_holds_only_what_is_sent() {
        let size = (IN_MEMORY + 5) as usize;
        let (have_by_size, have_by_digest, missing) = (vec![1u8; size], vec![2u8; size + 1], vec![3u8; size + 2]);
        let mut tar = tar::Builder::new(Vec::new());
        for (path, data) in
            [("a/layer.tar", &have_by_size), ("b/layer.tar", &have_by_digest), ("c/layer.tar", &missing)]
        {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            tar.append_data(&mut h, path, data.as_slice()).unwrap();
        }
        let bytes = tar.into_inner().unwrap();
        let digest = |d: &[u8]| format!("sha256:{}", hex(&Sha256::digest(d)));
        let skip = Skip {
            digests: [digest(&have_by_size), digest(&have_by_digest)].into(),
            sizes: [have_by_size.len() as u64].into(),
            paths: None,
        };
        let dir = tempfile::tempdir().unwrap();
        let (tx, mut rx) = mpsc::channel(8);
        let d = dir.path().to_path_buf();
        let t = std::thread::spawn(move || read_archive(bytes.as_slice(), d, &skip, tx));
        let mut got = Vec::new();
        while let Some(e) = rx.blocking_recv() {
            got.push(e);
        }
        t.join().unwrap().unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].1.digest, digest(&have_by_size));
        assert!(matches!(got[0].1.data, Data::Dropped));
        assert_eq!(got[1].1.digest, digest(&have_by_digest));
        assert!(matches!(got[1].1.data, Data::Dropped));
        assert_eq!(got[2].1.digest, digest(&missing));
        match &got[2].1.data {
            Data::File(p) => assert_eq!(std::fs::read(p).unwrap(), missing),
            _ => panic!("the missing layer is spooled"),
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "the spool holds more than the missing layer");
    }
}
