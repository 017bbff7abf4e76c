//! `lab images save` and `lab images load`: the registry's whole content as an OCI image layout
//! on this machine (a backup, or the way to move images to another cluster), and back.
//!
//! The layout is the OCI image-layout specification's: `DIR/oci-layout`
//! (`{"imageLayoutVersion":"1.0.0"}`), `DIR/blobs/sha256/<hex>` holding every manifest, config
//! and layer by digest, and `DIR/index.json`, an OCI index with one descriptor per tag of the
//! registry. Each descriptor is the tagged manifest's own (its media type, digest and size, as
//! the registry serves it) and carries two annotations:
//! - `org.opencontainers.image.ref.name` = `REPO:TAG` (`me/app:1`), which `load` reads. The
//!   specification lets the value be any reference; lab's is the repository and tag in the
//!   registry, without a host, so the layout does not depend on the cluster it came from
//!   (neither a repository name nor a tag can hold a `:`, so the last `:` splits them).
//! - `io.containerd.image.name` = `localhost:5000/REPO:TAG`, the name the nodes pull by, for
//!   tools that read containerd's annotation. `load` ignores it.
//!
//! Manifests are kept byte for byte with their media type (Docker's schema 2 manifest and
//! manifest list, OCI's manifest and index): a manifest's digest is its bytes' hash, so the
//! images keep their digests from one cluster to the other. An index or list is followed to
//! the manifests it names, which are stored as blobs too, and a manifest to its config and
//! layers. (`subject`, which points from an artifact to another manifest, is not followed, and
//! foreign layers, which registries do not serve, are left out.)
//!
//! Every byte is checked against its digest. `save` writes each blob to a temporary file
//! beside its place, hashes it as it is written, and renames it into place only if its
//! sha256 and size are the ones the manifest gave; a blob `DIR` already has (the file exists,
//! with the right size) is not read again, so a repeat writes only what changed. `index.json`
//! is written last, in one rename, and lists what the registry holds now: tags deleted since
//! the last save leave the index, and their blobs stay in `DIR` (lab deletes nothing there).
//! `load` reads the whole layout before it asks the cluster anything (every manifest hashed,
//! every blob present with its size), then sends only the blobs the registry lacks (a `HEAD`
//! first, a mount where another repository has it), hashing each as it goes: the last chunk
//! is held back until the hash is known, so a corrupt file never completes an upload. The
//! manifests go last, children before the index that names them and each tag last of all, so
//! a load that fails half-way tags nothing new.
//!
//! Neighbours: the registry is spoken to through [`crate::images::distribution`], as `lab
//! push` speaks to it (so both work in open and mutual-TLS mode), and blobs are found or
//! mounted as `push` finds them. The CLI checks `DIR` first ([`save_dir`], [`open`]: bad input,
//! exit 2, before any cluster is asked), then calls [`save`] or [`load`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use serde::Serialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio::sync::Semaphore;

use crate::error::{Error, Result};
use crate::images::distribution::{self, Client, DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST};
use crate::images::push::{self, Events, Fate};

mod load;
pub use load::{load, Loaded};

/// The layout's marker file.
pub const LAYOUT_FILE: &str = "oci-layout";
/// The layout's index.
pub const INDEX_FILE: &str = "index.json";
/// The one layout version there is.
pub const LAYOUT_VERSION: &str = "1.0.0";
/// The annotation holding `REPO:TAG`.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// containerd's annotation for an image's full name; lab writes `localhost:5000/REPO:TAG`.
pub const IMAGE_NAME: &str = "io.containerd.image.name";
/// The largest manifest lab reads from a layout (the registry's own limit is 4 MiB).
const MAX_MANIFEST: u64 = 4 << 20;
/// Blobs moved at once.
const PARALLEL: usize = 3;

/// One tag: a descriptor of `index.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tagged {
    /// The repository in the registry.
    pub repository: String,
    /// The tag.
    pub tag: String,
    /// The manifest's digest.
    pub digest: String,
    /// The manifest's media type.
    pub media_type: String,
    /// The manifest's size in bytes.
    pub size: u64,
}

/// Something a manifest names: a manifest (from an index or list) or a blob (a config or
/// layer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Child {
    /// Its digest.
    pub digest: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its media type.
    pub media_type: String,
    /// Whether it is a manifest (read and put as one) rather than a blob.
    pub manifest: bool,
}

/// The hex part of a `sha256:` digest, if `digest` is one (the only algorithm registries use
/// for content, and the only one lab writes a path for).
pub fn check_digest(digest: &str) -> std::result::Result<&str, String> {
    match digest.strip_prefix("sha256:") {
        Some(hex) if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) => {
            Ok(hex)
        }
        _ => Err(format!("{digest:?} is not a sha256 digest (sha256: and 64 lowercase hex digits)")),
    }
}

/// Where blob `digest` lives in the layout at `root`: `root/blobs/sha256/<hex>`.
pub fn blob_path(root: &Path, digest: &str) -> std::result::Result<PathBuf, String> {
    let hex = check_digest(digest)?;
    Ok(root.join("blobs").join("sha256").join(hex))
}

/// `index.json` for `images`, sorted by repository and tag.
pub fn index_json(images: &[Tagged]) -> Vec<u8> {
    let mut sorted: Vec<&Tagged> = images.iter().collect();
    sorted.sort_by(|a, b| (&a.repository, &a.tag).cmp(&(&b.repository, &b.tag)));
    let manifests: Vec<Value> = sorted
        .iter()
        .map(|t| {
            let name = format!("{}:{}", t.repository, t.tag);
            json!({
                "mediaType": t.media_type,
                "digest": t.digest,
                "size": t.size,
                "annotations": {
                    REF_NAME: name,
                    IMAGE_NAME: format!("localhost:{}/{name}", crate::registry::PORT),
                },
            })
        })
        .collect();
    let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests});
    let mut out = serde_json::to_vec_pretty(&index).expect("json");
    out.push(b'\n');
    out
}

/// The tags `index.json` holds. The error names the descriptor (`manifests[N]`) and what is
/// wrong with it.
pub fn read_index(bytes: &[u8]) -> std::result::Result<Vec<Tagged>, String> {
    let v: Value = serde_json::from_slice(bytes).map_err(|e| format!("is not JSON: {e}"))?;
    let list = v["manifests"].as_array().ok_or("has no \"manifests\" array")?;
    let mut out: Vec<Tagged> = Vec::new();
    for (i, d) in list.iter().enumerate() {
        let at = |why: String| format!("manifests[{i}]: {why}");
        let field = |k: &str| d[k].as_str().map(String::from).ok_or_else(|| at(format!("has no {k:?}")));
        let digest = field("digest")?;
        check_digest(&digest).map_err(at)?;
        let media_type = field("mediaType")?;
        let size = d["size"].as_u64().ok_or_else(|| at("has no \"size\"".into()))?;
        let name = d["annotations"][REF_NAME]
            .as_str()
            .ok_or_else(|| at(format!("has no {REF_NAME} annotation; lab reads REPO:TAG there")))?;
        let (repository, tag) =
            name.rsplit_once(':').ok_or_else(|| at(format!("{REF_NAME} is {name:?}, not REPO:TAG")))?;
        push::check_repo(repository).map_err(at)?;
        push::check_tag(tag).map_err(at)?;
        if out.iter().any(|t| t.repository == repository && t.tag == tag) {
            return Err(at(format!("{name} is named twice")));
        }
        out.push(Tagged { repository: repository.into(), tag: tag.into(), digest, media_type, size });
    }
    Ok(out)
}

/// What the manifest `bytes` of `media_type` names: the manifests of an index or list, or a
/// manifest's config and layers (foreign layers, which registries do not serve, left out).
/// The media type is the one the registry or the descriptor gave, else the manifest's own.
pub fn children(media_type: &str, bytes: &[u8]) -> std::result::Result<Vec<Child>, String> {
    let v: Value = serde_json::from_slice(bytes).map_err(|e| format!("is not JSON: {e}"))?;
    let kind = if media_type.is_empty() { v["mediaType"].as_str().unwrap_or_default() } else { media_type };
    let descriptor = |d: &Value, manifest: bool, what: &str| -> std::result::Result<Child, String> {
        let digest = d["digest"].as_str().ok_or_else(|| format!("{what} has no digest"))?;
        check_digest(digest).map_err(|why| format!("{what}: {why}"))?;
        Ok(Child {
            digest: digest.to_string(),
            size: d["size"].as_u64().ok_or_else(|| format!("{what} has no size"))?,
            media_type: d["mediaType"].as_str().unwrap_or_default().to_string(),
            manifest,
        })
    };
    match kind {
        OCI_INDEX | DOCKER_LIST => v["manifests"]
            .as_array()
            .ok_or("is an index with no \"manifests\"")?
            .iter()
            .enumerate()
            .map(|(i, d)| descriptor(d, true, &format!("manifests[{i}]")))
            .collect(),
        OCI_MANIFEST | DOCKER_MANIFEST => {
            let mut out = vec![descriptor(&v["config"], false, "config")?];
            for (i, d) in v["layers"].as_array().into_iter().flatten().enumerate() {
                let t = d["mediaType"].as_str().unwrap_or_default();
                if t.contains("foreign") || t.contains("nondistributable") {
                    continue;
                }
                out.push(descriptor(d, false, &format!("layers[{i}]"))?);
            }
            Ok(out)
        }
        other => Err(format!(
            "has the media type {other:?}, which is none of {DOCKER_MANIFEST}, {DOCKER_LIST}, {OCI_MANIFEST}, \
             {OCI_INDEX}"
        )),
    }
}

/// A sha256 and a byte count, taken as bytes go by, to check against a digest.
#[derive(Default)]
pub struct Hasher {
    sha: Sha256,
    size: u64,
}

impl Hasher {
    /// Takes in `chunk`.
    pub fn update(&mut self, chunk: &[u8]) {
        self.sha.update(chunk);
        self.size += chunk.len() as u64;
    }

    /// Whether the bytes were `digest` and, if given, `size` long; the error says what they
    /// were instead.
    pub fn check(self, digest: &str, size: Option<u64>) -> std::result::Result<(), String> {
        let got = format!("sha256:{}", hex(&self.sha.finalize()));
        if got != digest {
            return Err(format!("has the digest {got}, not {digest}"));
        }
        match size {
            Some(s) if s != self.size => Err(format!("is {} bytes, not the {s} its descriptor gives", self.size)),
            _ => Ok(()),
        }
    }
}

/// `bytes`' digest.
pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(bytes)))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bad-input error for `path`.
fn bad(path: &Path, message: impl Into<String>) -> Error {
    Error::input(path.display().to_string(), message)
}

/// Whether `dir` can take new files: a file made there with no name (`O_TMPFILE`, else a
/// named one removed at once), so the check leaves nothing behind.
fn writable(dir: &Path) -> std::result::Result<(), String> {
    tempfile::tempfile_in(dir).map(drop).map_err(|e| format!("cannot be written: {e}"))
}

/// A checked `oci-layout` file in `dir`.
fn check_layout_file(dir: &Path) -> Result<()> {
    let path = dir.join(LAYOUT_FILE);
    let text = std::fs::read(&path).map_err(|e| bad(&path, format!("cannot be read: {e}")))?;
    let v: Value =
        serde_json::from_slice(&text).map_err(|e| bad(&path, format!("is not an OCI layout file (JSON): {e}")))?;
    match v["imageLayoutVersion"].as_str() {
        Some(LAYOUT_VERSION) => Ok(()),
        Some(other) => Err(bad(&path, format!("gives imageLayoutVersion {other:?}; lab reads {LAYOUT_VERSION:?}"))),
        None => Err(bad(&path, "has no imageLayoutVersion; it is not an OCI layout file")),
    }
}

/// Where `save` writes, checked before the cluster is asked anything.
#[derive(Debug, Clone)]
pub struct SaveDir {
    /// The directory.
    pub path: PathBuf,
    /// Whether it exists already (else `save` makes it, once the registry has answered).
    exists: bool,
}

/// Checks `path` for `save`: a layout lab can add to, an empty directory, or a new directory
/// whose parent exists; and writable. Anything else is bad input naming the path, and
/// nothing is created.
pub fn save_dir(path: &Path) -> Result<SaveDir> {
    match std::fs::metadata(path) {
        Ok(m) if !m.is_dir() => Err(bad(path, "is not a directory")),
        Ok(_) => {
            if path.join(LAYOUT_FILE).exists() {
                check_layout_file(path)?;
            } else {
                let mut entries = std::fs::read_dir(path).map_err(|e| bad(path, format!("cannot be read: {e}")))?;
                if entries.next().is_some() {
                    return Err(bad(
                        path,
                        "is not empty and is not an OCI image layout (it has no oci-layout file); give a new or \
                         empty directory, or one `lab images save` wrote",
                    ));
                }
            }
            writable(path).map_err(|why| bad(path, why))?;
            let blobs = path.join("blobs").join("sha256");
            if blobs.is_dir() {
                writable(&blobs).map_err(|why| bad(&blobs, why))?;
            }
            Ok(SaveDir { path: path.to_path_buf(), exists: true })
        }
        Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) => {
            let parent = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            };
            match std::fs::metadata(&parent) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => return Err(bad(path, format!("cannot be made: {} is not a directory", parent.display()))),
                Err(e) => return Err(bad(path, format!("cannot be made in {}: {e}", parent.display()))),
            }
            writable(&parent).map_err(|why| bad(path, format!("cannot be made: {} {why}", parent.display())))?;
            Ok(SaveDir { path: path.to_path_buf(), exists: false })
        }
        Err(e) => Err(bad(path, format!("cannot be read: {e}"))),
    }
}

/// One tag of a layout, read whole: its manifests (children before the manifests that name
/// them, the tagged one last) and the blobs they name.
#[derive(Debug, Clone)]
pub struct Image {
    /// The tag and its manifest's descriptor.
    pub tagged: Tagged,
    /// Each manifest's digest, media type and bytes; the tagged manifest last.
    manifests: Vec<(String, String, Bytes)>,
    /// The configs and layers, each once.
    blobs: Vec<Child>,
}

/// A layout `load` can send: every manifest read and hashed, every blob there with its size.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The directory.
    pub path: PathBuf,
    /// Its tags, in `index.json`'s order.
    pub images: Vec<Image>,
}

/// Reads manifest `child` of the layout at `root`, hashed; `need` names the tag, for errors.
fn read_manifest(root: &Path, child: &Child, need: &str) -> Result<Bytes> {
    let path = blob_path(root, &child.digest).map_err(|why| bad(root, format!("{need}: {why}")))?;
    if child.size > MAX_MANIFEST {
        return Err(bad(&path, format!("is a manifest of {} bytes, more than registries take", child.size)));
    }
    let bytes = std::fs::read(&path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => bad(&path, format!("is missing; {need} needs it")),
        _ => bad(&path, format!("cannot be read: {e}")),
    })?;
    let mut h = Hasher::default();
    h.update(&bytes);
    h.check(&child.digest, Some(child.size)).map_err(|why| bad(&path, format!("{why}: it is corrupt")))?;
    Ok(Bytes::from(bytes))
}

/// Reads the layout at `path` for `load`, whole, before the cluster is asked anything: the
/// marker, the index, every manifest (hashed) and every blob's presence and size. Anything
/// missing, malformed or corrupt is bad input naming the file.
pub fn open(path: &Path) -> Result<Layout> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(bad(path, "is not a directory")),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(bad(path, "does not exist")),
        Err(e) => return Err(bad(path, format!("cannot be read: {e}"))),
    }
    if !path.join(LAYOUT_FILE).exists() {
        return Err(bad(path, "is not an OCI image layout: it has no oci-layout file"));
    }
    check_layout_file(path)?;
    let index_path = path.join(INDEX_FILE);
    let index = std::fs::read(&index_path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => bad(&index_path, "is missing (a save that did not finish?)"),
        _ => bad(&index_path, format!("cannot be read: {e}")),
    })?;
    let tags = read_index(&index).map_err(|why| bad(&index_path, why))?;
    let images = tags.into_iter().map(|t| read_image(path, t)).collect::<Result<_>>()?;
    Ok(Layout { path: path.to_path_buf(), images })
}

/// Reads what tag `tagged` of the layout at `path` needs: its manifests, read and hashed, and
/// its blobs, each there with its size.
fn read_image(path: &Path, tagged: Tagged) -> Result<Image> {
    let need = format!("{}:{}", tagged.repository, tagged.tag);
    let top = Child {
        digest: tagged.digest.clone(),
        size: tagged.size,
        media_type: tagged.media_type.clone(),
        manifest: true,
    };
    let mut manifests = Vec::new();
    let mut blobs: Vec<Child> = Vec::new();
    // Depth first; a manifest comes back to the stack with its bytes, to be listed after the
    // manifests it names.
    let mut stack: Vec<(Child, Option<Bytes>)> = vec![(top, None)];
    let mut seen = HashSet::new();
    while let Some((child, read)) = stack.pop() {
        if let Some(bytes) = read {
            manifests.push((child.digest, child.media_type, bytes));
            continue;
        }
        let p = blob_path(path, &child.digest).map_err(|why| bad(path, format!("{need}: {why}")))?;
        if !seen.insert(child.digest.clone()) {
            continue;
        }
        if !child.manifest {
            match std::fs::metadata(&p) {
                Ok(m) if m.len() == child.size => blobs.push(child),
                Ok(m) => return Err(bad(&p, format!("is {} bytes, not {}: it is corrupt", m.len(), child.size))),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(bad(&p, format!("is missing; {need} needs it")))
                }
                Err(e) => return Err(bad(&p, format!("cannot be read: {e}"))),
            }
            continue;
        }
        let bytes = read_manifest(path, &child, &need)?;
        let named = children(&child.media_type, &bytes).map_err(|why| bad(&p, why))?;
        stack.push((child, Some(bytes)));
        stack.extend(named.into_iter().rev().map(|c| (c, None)));
    }
    Ok(Image { tagged, manifests, blobs })
}

/// What `save` did.
#[derive(Debug, Clone, Serialize)]
pub struct Saved {
    /// The directory.
    pub dir: PathBuf,
    /// Every tag saved.
    pub images: Vec<Tagged>,
    /// Blobs written (manifests, configs, layers).
    pub written: usize,
    /// Their bytes.
    pub written_bytes: u64,
    /// Blobs the directory had already.
    pub skipped: usize,
    /// How long it took.
    pub seconds: f64,
}

/// What `save` fetches: a manifest (read already) or a blob (streamed from a repository that
/// has it).
enum Want {
    Manifest(Bytes),
    Blob { repo: String },
}

/// How old a temporary file of lab's in a layout must be for [`sweep`] to take it: one that
/// young may belong to a save still running (each write of a download renews its time).
const STALE: std::time::Duration = std::time::Duration::from_secs(600);

/// Removes lab's temporary files (`.lab-*`) from `dir` that nothing has written for `age`:
/// what a save that was killed left (a process that is killed runs no cleanup).
fn sweep(dir: &Path, age: std::time::Duration) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let old = e.metadata().ok().and_then(|m| m.modified().ok()).and_then(|t| t.elapsed().ok());
        if e.file_name().to_string_lossy().starts_with(".lab-") && old.is_some_and(|o| o >= age) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Writes `bytes` as `path`, through a temporary file beside it renamed into place.
fn write_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let dir = path.parent().expect("layout files live in a directory");
    let mut tmp = tempfile::Builder::new().prefix(".lab-").tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Manifest `reference` (a tag, or the digest of `child`, a manifest an index names) of
/// `repo`, its bytes hashed: to `child`'s digest and size, or for a tag to the digest the
/// registry gives (the one the nodes pull by). `None` if the registry has no such manifest.
async fn checked_manifest(
    client: &Client,
    repo: &str,
    reference: &str,
    child: Option<&Child>,
) -> Result<Option<(String, String, Bytes)>> {
    let Some((digest, media_type, bytes)) = client.manifest(repo, reference).await? else { return Ok(None) };
    let digest = match child {
        Some(c) => c.digest.clone(),
        None if digest.is_empty() => digest_of(&bytes),
        None => digest,
    };
    let mut h = Hasher::default();
    h.update(&bytes);
    h.check(&digest, child.map(|c| c.size)).map_err(|why| {
        Error::node(client.node(), format!("read the manifest {repo}:{reference}"), format!("the manifest {why}"))
    })?;
    let media_type = match child {
        Some(c) if media_type.is_empty() => c.media_type.clone(),
        _ => media_type,
    };
    Ok(Some((digest, media_type, bytes)))
}

/// What the registry holds: every tag (but the placeholders of a `lab images rm` that was
/// stopped), and every blob to have, each once, in the order found (manifests with their
/// bytes, read and checked as they are found; the others with a repository to read them from).
async fn contents(client: &Client) -> Result<(Vec<Tagged>, Vec<(String, u64, Want)>)> {
    let mut tags = Vec::new();
    let mut wanted = Vec::new();
    let mut known: HashSet<String> = HashSet::new();
    for repo in client.catalog().await? {
        for tag in client.tags(&repo).await? {
            let Some((digest, media_type, bytes)) = checked_manifest(client, &repo, &tag, None).await? else {
                continue;
            };
            if crate::images::remove::is_placeholder(&bytes) {
                continue;
            }
            let size = bytes.len() as u64;
            tags.push(Tagged {
                repository: repo.clone(),
                tag: tag.clone(),
                digest: digest.clone(),
                media_type: media_type.clone(),
                size,
            });
            let mut queue = vec![(digest, media_type, bytes)];
            while let Some((digest, media_type, bytes)) = queue.pop() {
                if !known.insert(digest.clone()) {
                    continue;
                }
                let named = children(&media_type, &bytes).map_err(|why| {
                    Error::node(client.node(), format!("read the manifest {repo}:{tag}"), format!("{digest} {why}"))
                })?;
                wanted.push((digest.clone(), bytes.len() as u64, Want::Manifest(bytes)));
                for c in named {
                    if c.manifest && !known.contains(&c.digest) {
                        let read = checked_manifest(client, &repo, &c.digest, Some(&c)).await?.ok_or_else(|| {
                            Error::node(
                                client.node(),
                                format!("read the manifest {repo}:{tag}"),
                                format!("the registry does not have {}, which {digest} names", c.digest),
                            )
                        })?;
                        queue.push(read);
                    } else if !c.manifest && known.insert(c.digest.clone()) {
                        wanted.push((c.digest, c.size, Want::Blob { repo: repo.clone() }));
                    }
                }
            }
        }
    }
    Ok((tags, wanted))
}

/// Saves everything the registry `client` speaks to holds into `dir`: every repository, every
/// tag (but the placeholders of a `lab images rm` that was stopped). See the module comment
/// for what is written, and when.
pub async fn save(client: Arc<Client>, dir: &SaveDir, events: Arc<dyn Events>) -> Result<Saved> {
    let start = Instant::now();
    client.ping().await?;
    let node = client.node().to_string();
    let (mut tags, wanted) = contents(&client).await?;
    // The registry has answered: the directory is made now, not before.
    let root = &dir.path;
    let made = |e: io::Error, p: &Path| Error::op_caused(format!("write {}", p.display()), e);
    if !dir.exists {
        std::fs::create_dir(root).map_err(|e| made(e, root))?;
    }
    let blobs = root.join("blobs").join("sha256");
    std::fs::create_dir_all(&blobs).map_err(|e| made(e, &blobs))?;
    let marker = root.join(LAYOUT_FILE);
    if !marker.exists() {
        let text = format!("{{\"imageLayoutVersion\":\"{LAYOUT_VERSION}\"}}\n");
        write_file(&marker, text.as_bytes()).map_err(|e| made(e, &marker))?;
    }
    sweep(&blobs, STALE);
    sweep(root, STALE);
    let (mut written, mut written_bytes, mut skipped) = (0, 0, 0);
    let gate = Arc::new(Semaphore::new(PARALLEL));
    let mut downloads = tokio::task::JoinSet::new();
    for (digest, size, want) in wanted {
        let path = blob_path(root, &digest).map_err(|why| Error::node(&node, "save", why))?;
        if std::fs::metadata(&path).is_ok_and(|m| m.len() == size) {
            skipped += 1;
            continue;
        }
        written += 1;
        written_bytes += size;
        match want {
            // Checked against its digest when it was read.
            Want::Manifest(bytes) => {
                write_file(&path, &bytes).map_err(|e| made(e, &path))?;
                events.sent(size);
            }
            Want::Blob { repo } => {
                let (c, ev, g) = (client.clone(), events.clone(), gate.clone());
                downloads.spawn(async move {
                    let _permit = g.acquire_owned().await;
                    download(&c, &repo, &digest, size, &path, ev).await
                });
            }
        }
    }
    while let Some(done) = downloads.join_next().await {
        done.map_err(|e| Error::op_caused("lab images save", e))??;
    }
    let index = root.join(INDEX_FILE);
    write_file(&index, &index_json(&tags)).map_err(|e| made(e, &index))?;
    tags.sort_by(|a, b| (&a.repository, &a.tag).cmp(&(&b.repository, &b.tag)));
    Ok(Saved {
        dir: root.clone(),
        images: tags,
        written,
        written_bytes,
        skipped,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Streams blob `digest` of `repo` into `path`: into a temporary file beside it, hashed as it
/// is written, renamed into place only if it is `digest` and `size` bytes.
async fn download(
    client: &Client,
    repo: &str,
    digest: &str,
    size: u64,
    path: &Path,
    events: Arc<dyn Events>,
) -> Result<()> {
    let node = client.node();
    let step = format!("read blob {digest} of {repo}");
    let write = |e: io::Error| Error::op_caused(format!("write {}", path.display()), e);
    events.to_send(size);
    let (_, mut stream) = client
        .blob(repo, digest)
        .await?
        .ok_or_else(|| Error::node(node, &step, "the registry does not have it, though a manifest names it"))?;
    let dir = path.parent().expect("blobs live in a directory");
    let tmp = tempfile::Builder::new().prefix(".lab-").tempfile_in(dir).map_err(write)?;
    let mut file = tokio::fs::File::from_std(tmp.as_file().try_clone().map_err(write)?);
    let mut h = Hasher::default();
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|e| Error::node(node, &step, format!("the registry stopped sending: {e}")).with_source(e))?;
        h.update(&chunk);
        file.write_all(&chunk).await.map_err(write)?;
        events.sent(chunk.len() as u64);
    }
    file.flush().await.map_err(write)?;
    file.sync_all().await.map_err(write)?;
    h.check(digest, Some(size)).map_err(|why| Error::node(node, &step, format!("what came {why}; it was not kept")))?;
    tmp.persist(path).map_err(|e| write(e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::load::Verified;
    use super::*;

    fn d(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    fn tagged(repo: &str, tag: &str, c: char) -> Tagged {
        Tagged { repository: repo.into(), tag: tag.into(), digest: d(c), media_type: DOCKER_MANIFEST.into(), size: 42 }
    }

    #[test]
    fn the_index_names_each_tag_repo_colon_tag_and_reads_back() {
        let tags = vec![tagged("me/app", "2", 'b'), tagged("base", "latest", 'a'), tagged("me/app", "1", 'a')];
        let bytes = index_json(&tags);
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["schemaVersion"], 2);
        assert_eq!(v["mediaType"], OCI_INDEX);
        assert_eq!(v["manifests"][0]["annotations"][REF_NAME], "base:latest");
        assert_eq!(v["manifests"][1]["annotations"][REF_NAME], "me/app:1");
        assert_eq!(v["manifests"][2]["annotations"][IMAGE_NAME], "localhost:5000/me/app:2");
        assert_eq!(v["manifests"][2]["mediaType"], DOCKER_MANIFEST);
        assert_eq!(v["manifests"][2]["size"], 42);
        let back = read_index(&bytes).unwrap();
        let mut sorted = tags.clone();
        sorted.sort_by(|a, b| (&a.repository, &a.tag).cmp(&(&b.repository, &b.tag)));
        assert_eq!(back, sorted);
        assert_eq!(read_index(&index_json(&[])).unwrap(), vec![]);
    }

    #[test]
    fn a_bad_index_is_named_by_descriptor_and_field() {
        let one = |desc: Value| read_index(&serde_json::to_vec(&json!({"manifests": [desc]})).unwrap()).unwrap_err();
        let good = json!({"mediaType": OCI_MANIFEST, "digest": d('a'), "size": 1, "annotations": {REF_NAME: "app:1"}});
        let with = |k: &str, v: Value| {
            let mut g = good.clone();
            g[k] = v;
            g
        };
        assert!(read_index(b"{").unwrap_err().contains("not JSON"));
        assert!(read_index(b"{}").unwrap_err().contains("manifests"));
        let e = one(with("annotations", json!({})));
        assert!(e.starts_with("manifests[0]") && e.contains(REF_NAME) && e.contains("REPO:TAG"), "{e}");
        // What `skopeo copy ... oci:DIR:1` writes: a tag without a repository.
        let e = one(with("annotations", json!({REF_NAME: "1"})));
        assert!(e.contains("\"1\"") && e.contains("REPO:TAG"), "{e}");
        assert!(one(with("annotations", json!({REF_NAME: "App:1"}))).contains("repository name"));
        assert!(one(with("digest", json!("sha256:xyz"))).contains("not a sha256 digest"));
        assert!(one(with("size", json!("big"))).contains("size"));
        let twice = json!({"manifests": [good.clone(), good]});
        assert!(read_index(&serde_json::to_vec(&twice).unwrap()).unwrap_err().contains("app:1 is named twice"));
    }

    #[test]
    fn blobs_live_under_blobs_sha256_by_hex_and_nothing_else_makes_a_path() {
        let root = Path::new("/backup");
        assert_eq!(blob_path(root, &d('a')).unwrap(), root.join("blobs/sha256").join("a".repeat(64)));
        for wrong in ["sha256:../../etc/passwd", "sha512:aa", &d('A'), "sha256:abc", &format!("{}0", d('a'))] {
            assert!(blob_path(root, wrong).is_err(), "{wrong}");
        }
    }

    #[test]
    fn digests_are_checked_with_the_size() {
        let mut h = Hasher::default();
        h.update(b"hello ");
        h.update(b"world");
        let right = digest_of(b"hello world");
        assert_eq!(right, "sha256:b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9");
        let check = |digest: &str, size| {
            let mut h = Hasher::default();
            h.update(b"hello world");
            h.check(digest, size)
        };
        assert_eq!(check(&right, Some(11)), Ok(()));
        assert_eq!(check(&right, None), Ok(()));
        assert!(check(&right, Some(12)).unwrap_err().contains("11 bytes, not the 12"));
        assert!(check(&d('a'), Some(11)).unwrap_err().contains(&right));
        assert!(h.check(&right, Some(11)).is_ok());
    }

    #[test]
    fn children_of_each_kind_of_manifest() {
        let m = json!({
            "schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": d('c'), "size": 3},
            "layers": [
                {"mediaType": "application/vnd.docker.image.rootfs.diff.tar", "digest": d('a'), "size": 10},
                {"mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", "digest": d('f'), "size": 9},
                {"mediaType": "application/vnd.docker.image.rootfs.diff.tar", "digest": d('b'), "size": 20},
            ],
        });
        let bytes = serde_json::to_vec(&m).unwrap();
        let got: Vec<(String, u64, bool)> =
            children(DOCKER_MANIFEST, &bytes).unwrap().into_iter().map(|c| (c.digest, c.size, c.manifest)).collect();
        assert_eq!(got, vec![(d('c'), 3, false), (d('a'), 10, false), (d('b'), 20, false)]);
        // The manifest's own media type when none is given; OCI alike.
        assert_eq!(children("", &bytes).unwrap().len(), 3);
        let mut oci = m.clone();
        oci["mediaType"] = json!(OCI_MANIFEST);
        assert_eq!(children(OCI_MANIFEST, &serde_json::to_vec(&oci).unwrap()).unwrap().len(), 3);
        for kind in [OCI_INDEX, DOCKER_LIST] {
            let index = json!({"schemaVersion": 2, "mediaType": kind, "manifests": [
                {"mediaType": DOCKER_MANIFEST, "digest": d('1'), "size": 500, "platform": {"os": "linux"}},
                {"mediaType": OCI_MANIFEST, "digest": d('2'), "size": 600},
            ]});
            let c = children(kind, &serde_json::to_vec(&index).unwrap()).unwrap();
            assert_eq!(c.len(), 2);
            assert!(c.iter().all(|c| c.manifest));
            assert_eq!(
                (c[1].digest.as_str(), c[1].media_type.as_str(), c[1].size),
                (d('2').as_str(), OCI_MANIFEST, 600)
            );
        }
        assert!(children("application/x-other", b"{}").unwrap_err().contains("application/x-other"));
        let no_config = json!({"schemaVersion": 2, "layers": []});
        assert!(children(OCI_MANIFEST, &serde_json::to_vec(&no_config).unwrap()).unwrap_err().contains("config"));
    }

    #[test]
    fn save_takes_a_new_an_empty_or_a_layout_directory_and_nothing_else() {
        let t = tempfile::tempdir().unwrap();
        let new = t.path().join("new");
        assert!(!save_dir(&new).unwrap().exists);
        assert!(!new.exists(), "checking made the directory");
        assert!(save_dir(t.path()).unwrap().exists);
        let e = save_dir(&t.path().join("a/b")).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("a/b") && e.to_string().contains("cannot be made"), "{e}");
        std::fs::write(t.path().join("file"), "x").unwrap();
        let e = save_dir(&t.path().join("file")).unwrap_err().to_string();
        assert!(e.contains("is not a directory"), "{e}");
        let e = save_dir(&t.path().join("file/sub")).unwrap_err().to_string();
        assert!(e.contains("is not a directory"), "{e}");
        // Not empty, not a layout: refused.
        let e = save_dir(t.path()).unwrap_err().to_string();
        assert!(e.contains("not empty") && e.contains("oci-layout"), "{e}");
        std::fs::write(t.path().join(LAYOUT_FILE), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        assert!(save_dir(t.path()).is_ok());
        std::fs::write(t.path().join(LAYOUT_FILE), r#"{"imageLayoutVersion":"9"}"#).unwrap();
        let e = save_dir(t.path()).unwrap_err().to_string();
        assert!(e.contains("oci-layout") && e.contains("\"9\""), "{e}");
        // Nothing was left behind by the checks.
        let names: Vec<String> =
            std::fs::read_dir(t.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    #[test]
    fn a_killed_saves_temporary_files_are_swept_and_nothing_else() {
        let t = tempfile::tempdir().unwrap();
        for name in [".lab-abc", "keep", ".other"] {
            std::fs::write(t.path().join(name), "x").unwrap();
        }
        sweep(t.path(), std::time::Duration::from_secs(3600));
        assert!(t.path().join(".lab-abc").exists(), "a young temporary file may be a running save's");
        sweep(t.path(), std::time::Duration::ZERO);
        let mut names: Vec<String> =
            std::fs::read_dir(t.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
        names.sort();
        assert_eq!(names, [".other", "keep"]);
    }

    /// A layout on disk with one tagged index, naming one manifest of one config and layer.
    fn layout_on_disk(root: &Path) -> (String, String, String) {
        let blobs = root.join("blobs/sha256");
        std::fs::create_dir_all(&blobs).unwrap();
        let put = |bytes: &[u8]| {
            let digest = digest_of(bytes);
            std::fs::write(blob_path(root, &digest).unwrap(), bytes).unwrap();
            (digest, bytes.len() as u64)
        };
        let (config, config_size) = put(b"{}");
        let (layer, layer_size) = put(b"layer bytes");
        let manifest = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": config_size},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer, "size": layer_size}]}))
        .unwrap();
        let (m, m_size) = put(&manifest);
        let index = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_INDEX,
            "manifests": [{"mediaType": OCI_MANIFEST, "digest": m, "size": m_size}]}))
        .unwrap();
        let (i, i_size) = put(&index);
        std::fs::write(root.join(LAYOUT_FILE), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        let t = Tagged {
            repository: "app".into(),
            tag: "1".into(),
            digest: i.clone(),
            media_type: OCI_INDEX.into(),
            size: i_size,
        };
        std::fs::write(root.join(INDEX_FILE), index_json(&[t])).unwrap();
        (i, m, layer)
    }

    #[test]
    fn a_layout_is_read_whole_children_before_what_names_them() {
        let t = tempfile::tempdir().unwrap();
        let (index, manifest, layer) = layout_on_disk(t.path());
        let l = open(t.path()).unwrap();
        assert_eq!(l.images.len(), 1);
        let i = &l.images[0];
        let order: Vec<&str> = i.manifests.iter().map(|m| m.0.as_str()).collect();
        assert_eq!(order, [manifest.as_str(), index.as_str()]);
        assert_eq!(i.manifests[0].1, OCI_MANIFEST);
        assert_eq!(i.blobs.len(), 2);
        assert_eq!(i.blobs[1].digest, layer);

        // A missing blob, a blob of the wrong size, a corrupt manifest: named, exit 2.
        let layer_path = blob_path(t.path(), &layer).unwrap();
        std::fs::write(&layer_path, b"layer byteZ!").unwrap();
        let e = open(t.path()).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains(&layer[7..]) && e.to_string().contains("12 bytes, not 11"), "{e}");
        std::fs::remove_file(&layer_path).unwrap();
        let e = open(t.path()).unwrap_err().to_string();
        assert!(e.contains(&layer[7..]) && e.contains("is missing; app:1 needs it"), "{e}");
        std::fs::write(&layer_path, b"layer bytes").unwrap();
        let m_path = blob_path(t.path(), &manifest).unwrap();
        let mut bytes = std::fs::read(&m_path).unwrap();
        bytes[0] = b' ';
        std::fs::write(&m_path, &bytes).unwrap();
        let e = open(t.path()).unwrap_err().to_string();
        assert!(e.contains(&manifest[7..]) && e.contains("corrupt"), "{e}");
    }

    #[test]
    fn what_is_not_a_layout_is_named() {
        let t = tempfile::tempdir().unwrap();
        let e = open(&t.path().join("none")).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("none: does not exist"), "{e}");
        let e = open(t.path()).unwrap_err().to_string();
        assert!(e.contains("no oci-layout file"), "{e}");
        std::fs::write(t.path().join(LAYOUT_FILE), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        let e = open(t.path()).unwrap_err().to_string();
        assert!(e.contains("index.json: is missing"), "{e}");
        std::fs::write(t.path().join(INDEX_FILE), "[]").unwrap();
        let e = open(t.path()).unwrap_err().to_string();
        assert!(e.contains("index.json: has no \"manifests\""), "{e}");
    }

    /// The sending side: the bytes go through whole when they are the digest; when they are
    /// not, the stream fails before giving the last chunk, so no upload completes.
    #[test]
    fn a_corrupt_file_never_gives_its_last_chunk() {
        struct Quiet;
        impl Events for Quiet {
            fn note(&self, _: &str) {}
            fn sent(&self, _: u64) {}
            fn to_send(&self, _: u64) {}
        }
        let run = |digest: String| {
            let chunks: Vec<io::Result<Bytes>> = vec![Ok(Bytes::from("hello ")), Ok(Bytes::from("world"))];
            let wrong = Arc::new(Mutex::new(None));
            let s = Verified {
                inner: futures_util::stream::iter(chunks),
                hasher: Some(Hasher::default()),
                held: None,
                digest,
                size: 11,
                bad: wrong.clone(),
                events: Arc::new(Quiet),
            };
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let got: Vec<io::Result<Bytes>> = rt.block_on(s.collect());
            let wrong = wrong.lock().unwrap().clone();
            (got.into_iter().map(|r| r.map_err(|e| e.to_string())).collect::<Vec<_>>(), wrong)
        };
        let (got, wrong) = run(digest_of(b"hello world"));
        assert_eq!(got, vec![Ok(Bytes::from("hello ")), Ok(Bytes::from("world"))]);
        assert_eq!(wrong, None);
        let (got, wrong) = run(d('a'));
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0], Ok(Bytes::from("hello ")));
        assert!(got[1].as_ref().unwrap_err().contains("has the digest"), "{got:?}");
        assert!(wrong.unwrap().contains(&d('a')));
    }
}
