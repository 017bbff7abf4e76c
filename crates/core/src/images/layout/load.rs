//! `lab images load`: a layout [`open`]ed and checked whole is put into the registry, the
//! blobs each repository lacks first, checked against their digests as they are sent, then the
//! manifests, each tag last (the module comment of [`super`] says why in that order).

use super::*;

/// What `load` did.
#[derive(Debug, Clone, Serialize)]
pub struct Loaded {
    /// The directory.
    pub dir: PathBuf,
    /// Every tag put.
    pub images: Vec<Tagged>,
    /// Blobs sent.
    pub sent: usize,
    /// Their bytes.
    pub sent_bytes: u64,
    /// Blobs the repository had already.
    pub skipped: usize,
    /// Blobs another repository had, linked without sending.
    pub mounted: usize,
    /// How long it took.
    pub seconds: f64,
}

/// A file's bytes as they are sent, hashed on the way. The last chunk is held back until the
/// end of the file: if the bytes are not `digest`, the stream fails instead of giving it, so
/// the upload never completes with bytes that are not what the layout says.
pub(super) struct Verified<S> {
    pub(super) inner: S,
    pub(super) hasher: Option<Hasher>,
    pub(super) held: Option<Bytes>,
    pub(super) digest: String,
    pub(super) size: u64,
    /// What was wrong, for the caller to report.
    pub(super) bad: Arc<Mutex<Option<String>>>,
    pub(super) events: Arc<dyn Events>,
}

impl<S: Stream<Item = io::Result<Bytes>> + Unpin> Stream for Verified<S> {
    type Item = io::Result<Bytes>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            let Some(h) = this.hasher.as_mut() else { return Poll::Ready(this.held.take().map(Ok)) };
            match std::task::ready!(Pin::new(&mut this.inner).poll_next(cx)) {
                Some(Ok(chunk)) => {
                    h.update(&chunk);
                    this.events.sent(chunk.len() as u64);
                    if let Some(previous) = this.held.replace(chunk) {
                        return Poll::Ready(Some(Ok(previous)));
                    }
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => {
                    let h = this.hasher.take().expect("checked above");
                    if let Err(why) = h.check(&this.digest, Some(this.size)) {
                        this.held = None;
                        *this.bad.lock().expect("not poisoned") = Some(why.clone());
                        return Poll::Ready(Some(Err(io::Error::other(why))));
                    }
                }
            }
        }
    }
}

/// Sends blob `blob` of the layout at `root` into `repo`, checked as it goes (a corrupt file
/// is bad input naming it).
async fn send_blob(client: &Client, root: &Path, repo: &str, blob: &Child, events: Arc<dyn Events>) -> Result<()> {
    let path = blob_path(root, &blob.digest).map_err(|why| bad(root, why))?;
    let f = tokio::fs::File::open(&path).await.map_err(|e| bad(&path, format!("cannot be read: {e}")))?;
    events.to_send(blob.size);
    let wrong = Arc::new(Mutex::new(None));
    let body = Verified {
        inner: tokio_util::io::ReaderStream::with_capacity(f, 256 * 1024),
        hasher: Some(Hasher::default()),
        held: None,
        digest: blob.digest.clone(),
        size: blob.size,
        bad: wrong.clone(),
        events,
    };
    let sent = client.upload(repo, &blob.digest, blob.size, distribution::streamed(body)).await;
    if let Some(why) = wrong.lock().expect("not poisoned").take() {
        return Err(bad(&path, format!("{why}: it is corrupt; no tag was put")));
    }
    sent
}

/// Puts the layout into the registry `client` speaks to: the blobs each repository lacks,
/// then the manifests, each tag last. See the module comment.
pub async fn load(client: Arc<Client>, layout: &Layout, events: Arc<dyn Events>) -> Result<Loaded> {
    let start = Instant::now();
    client.ping().await?;
    let fates = send_blobs(&client, layout, events).await?;
    put_manifests(&client, layout).await?;
    let count = |f: Fate| fates.values().filter(|v| v.1 == f).count();
    let mut images: Vec<Tagged> = layout.images.iter().map(|i| i.tagged.clone()).collect();
    images.sort_by(|a, b| (&a.repository, &a.tag).cmp(&(&b.repository, &b.tag)));
    Ok(Loaded {
        dir: layout.path.clone(),
        images,
        sent: count(Fate::Sent),
        sent_bytes: fates.values().filter(|v| v.1 == Fate::Sent).map(|v| v.0).sum(),
        skipped: count(Fate::Present),
        mounted: count(Fate::Mounted),
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Puts every blob of the layout into each repository that needs it, unless it is there or
/// can be mounted; returns what became of each (repository, digest), with its size.
async fn send_blobs(
    client: &Arc<Client>,
    layout: &Layout,
    events: Arc<dyn Events>,
) -> Result<HashMap<(String, String), (u64, Fate)>> {
    let others = Arc::new(client.catalog().await?);
    // Each blob once per repository. The first repository that needs a blob gets it first,
    // alone, so that the others mount it from there rather than be sent it again.
    let mut first: BTreeMap<String, (String, Child)> = BTreeMap::new();
    let mut rest: Vec<(String, Child)> = Vec::new();
    let mut pairs = HashSet::new();
    for image in &layout.images {
        let repo = &image.tagged.repository;
        for b in &image.blobs {
            if !pairs.insert((repo.clone(), b.digest.clone())) {
                continue;
            }
            if first.contains_key(&b.digest) {
                rest.push((repo.clone(), b.clone()));
            } else {
                first.insert(b.digest.clone(), (repo.clone(), b.clone()));
            }
        }
    }
    let root = Arc::new(layout.path.clone());
    let gate = Arc::new(Semaphore::new(PARALLEL));
    let ensure = |repo: String, blob: Child, from: Arc<Vec<String>>| {
        let (c, ev, g, root) = (client.clone(), events.clone(), gate.clone(), root.clone());
        async move {
            let _permit = g.acquire_owned().await;
            let fate = match push::find(&c, &repo, &blob.digest, &from).await? {
                Some((_, fate)) => fate,
                None => {
                    send_blob(&c, &root, &repo, &blob, ev).await?;
                    Fate::Sent
                }
            };
            Ok::<_, Error>(((repo, blob.digest.clone()), (blob.size, fate)))
        }
    };
    let mut fates = HashMap::new();
    let mut tasks = tokio::task::JoinSet::new();
    for (repo, blob) in first.values().cloned() {
        tasks.spawn(ensure(repo, blob, others.clone()));
    }
    while let Some(done) = tasks.join_next().await {
        let (k, v) = done.map_err(|e| Error::op_caused("lab images load", e))??;
        fates.insert(k, v);
    }
    for (repo, blob) in rest {
        let from: Vec<String> = std::iter::once(first[&blob.digest].0.clone()).chain(others.iter().cloned()).collect();
        tasks.spawn(ensure(repo, blob, Arc::new(from)));
    }
    while let Some(done) = tasks.join_next().await {
        let (k, v) = done.map_err(|e| Error::op_caused("lab images load", e))??;
        fates.insert(k, v);
    }
    Ok(fates)
}

/// Puts every manifest of the layout: those an index names by digest, before the index; each
/// tag last. The registry must store each under the digest the layout gives (its bytes are
/// sent as they are).
async fn put_manifests(client: &Client, layout: &Layout) -> Result<()> {
    let mut put = HashSet::new();
    for image in &layout.images {
        let t = &image.tagged;
        for (digest, media_type, bytes) in &image.manifests {
            let last = *digest == t.digest;
            if !last && !put.insert((t.repository.clone(), digest.clone())) {
                continue;
            }
            let reference = if last { t.tag.as_str() } else { digest.as_str() };
            let got = client.put_manifest(&t.repository, reference, media_type, bytes.clone()).await?;
            if !got.is_empty() && got != *digest {
                return Err(Error::node(
                    client.node(),
                    format!("tag {}:{reference}", t.repository),
                    format!("the registry stored the manifest as {got}, not {digest}"),
                ));
            }
        }
    }
    Ok(())
}
