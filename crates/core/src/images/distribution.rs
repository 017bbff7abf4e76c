//! The cluster registry's HTTP API (the OCI distribution API), spoken from this machine.
//!
//! The bytes travel through the registry node's own Docker engine, which every driver already
//! hands lab: each connection is an exec of `nc 127.0.0.1 5000` in the registry's task
//! container, whose stdin and stdout are the connection. So `lab push` and `lab images` need
//! no port of the node's opened to this machine (none is, on the ssh driver's real networks),
//! work the same on every driver, external ones included, and reach the registry at the very
//! address the nodes use.
//!
//! In mutual TLS mode the stream carries TLS (tokio-rustls, ring), lab checking the registry's
//! certificate against the cluster's CA and presenting the client certificate the nodes'
//! engines present: the registry serves no one else.
//!
//! The API is a handful of requests (check a blob, mount it from another repository, upload
//! it, read it as it streams, put a manifest, list, delete), written here over hyper's
//! HTTP/1.1 connection rather than through an OCI client crate: those speak TCP and TLS
//! themselves and cannot be handed a stream, and this is all lab needs of them.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bollard::exec::{StartExecOptions, StartExecResults};
use bollard::models::ExecConfig;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::Frame;
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::io::StreamReader;

use crate::error::{Error, Result};
use crate::registry::Endpoint;

/// A request or response body.
pub type Body = BoxBody<Bytes, io::Error>;

/// Docker's image manifest (what `docker push` makes on these engines).
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker's list of per-platform manifests.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// The OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// The OCI index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// What a manifest request accepts: every kind lab or docker may have put there.
const ACCEPT: &str = "application/vnd.docker.distribution.manifest.v2+json, \
                      application/vnd.docker.distribution.manifest.list.v2+json, \
                      application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json";

/// One stream through a node's engine to the registry: an exec's stdin and stdout.
struct ExecStream {
    reader: StreamReader<Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>, Bytes>,
    writer: Pin<Box<dyn AsyncWrite + Send>>,
}

impl AsyncRead for ExecStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.reader).poll_read(cx, buf)
    }
}

impl AsyncWrite for ExecStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.writer.as_mut().poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.writer.as_mut().poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.writer.as_mut().poll_shutdown(cx)
    }
}

/// How long a direct connection to the registry's address may take before lab uses the
/// relay through its node's engine.
const DIRECT_CONNECT: std::time::Duration = std::time::Duration::from_millis(500);

/// A client of the registry at one [`Endpoint`], keeping its idle connections for reuse.
pub struct Client {
    at: Endpoint,
    idle: Arc<tokio::sync::Mutex<Vec<SendRequest<Body>>>>,
    /// Whether the direct way ([`Endpoint::direct`]) failed once: then only the relay is used.
    direct_failed: std::sync::atomic::AtomicBool,
    /// In unit tests, the connections come from an in-process fake registry instead.
    #[cfg(test)]
    dial: Option<Box<dyn Fn() -> tokio::io::DuplexStream + Send + Sync>>,
}

/// A response, its body read whole (every answer but a blob's is small; blobs are read as they
/// stream, by [`Client::blob`]).
pub struct Answer {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: hyper::HeaderMap,
    /// The body.
    pub body: Bytes,
}

impl Answer {
    /// A header's value, if it is text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The registry's own words for a failure: its `errors[].message`, or the status.
    pub fn why(&self) -> String {
        let said: Option<Vec<String>> = serde_json::from_slice::<serde_json::Value>(&self.body).ok().and_then(|v| {
            v["errors"].as_array().map(|es| {
                es.iter()
                    .map(|e| {
                        let code = e["code"].as_str().unwrap_or_default();
                        let message = e["message"].as_str().unwrap_or_default();
                        if code.is_empty() {
                            message.to_string()
                        } else {
                            format!("{code}: {message}")
                        }
                    })
                    .collect()
            })
        });
        match said.filter(|s| !s.is_empty()) {
            Some(s) => format!("{} ({})", self.status, s.join("; ")),
            None => self.status.to_string(),
        }
    }
}

/// A blob's bytes as they arrive from the registry.
pub type BlobStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

/// An empty body.
pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// A body of `bytes`.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed()
}

/// A body streamed from `chunks`.
pub fn streamed(chunks: impl Stream<Item = io::Result<Bytes>> + Send + Sync + 'static) -> Body {
    BodyExt::boxed(StreamBody::new(chunks.map(|c| c.map(Frame::data))))
}

impl Client {
    /// A client of the registry at `at`. Connects lazily.
    pub fn new(at: Endpoint) -> Arc<Self> {
        Arc::new(Client {
            at,
            idle: Arc::new(tokio::sync::Mutex::new(Vec::new())),
            direct_failed: std::sync::atomic::AtomicBool::new(false),
            #[cfg(test)]
            dial: None,
        })
    }

    /// The registry's node.
    pub fn node(&self) -> &str {
        &self.at.node
    }

    fn fail(&self, step: impl Into<String>, message: impl std::fmt::Display) -> Error {
        Error::node(&self.at.node, step, message)
    }

    /// `step` failed because of `err`, kept as the cause.
    fn failed<E: std::error::Error + Send + Sync + 'static>(&self, step: impl Into<String>, err: E) -> Error {
        Error::caused(&self.at.node, step, err)
    }

    /// A new connection: `nc 127.0.0.1 5000` in the registry's container.
    async fn connect(&self) -> Result<SendRequest<Body>> {
        let step = "connect to the registry through its node's engine";
        #[cfg(test)]
        if let Some(dial) = &self.dial {
            return self.speak(dial(), step).await;
        }
        if let Some(s) = self.direct().await {
            return self.speak(s, step).await;
        }
        let io = self.stream().await?;
        self.speak(io, step).await
    }

    /// A TCP connection to [`Endpoint::direct`], if it connects within [`DIRECT_CONNECT`];
    /// after one failure the relay alone is used. Bytes go straight to the registry instead of
    /// through an exec in its container (on the docker driver, a first push of 104 MB took
    /// 1.30 s through the relay against skopeo's 1.06 s straight to the address).
    async fn direct(&self) -> Option<tokio::net::TcpStream> {
        use std::sync::atomic::Ordering;
        let addr = self.at.direct?;
        if self.direct_failed.load(Ordering::Relaxed) {
            return None;
        }
        match tokio::time::timeout(DIRECT_CONNECT, tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                Some(s)
            }
            Ok(Err(e)) => {
                tracing::debug!(%addr, error = %e, "the registry's address does not connect from here; using its engine's relay");
                self.direct_failed.store(true, Ordering::Relaxed);
                None
            }
            Err(_) => {
                tracing::debug!(%addr, "the registry's address did not connect in time; using its engine's relay");
                self.direct_failed.store(true, Ordering::Relaxed);
                None
            }
        }
    }

    /// HTTP/1.1 to the registry over `io`, inside TLS in mutual mode.
    async fn speak<T>(&self, io: T, step: &str) -> Result<SendRequest<Body>>
    where
        T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        match &self.at.tls {
            None => self.handshake(io, step).await,
            Some(cfg) => {
                // The registry's certificate is checked against the cluster's CA for the name
                // the nodes use, and lab presents the client certificate the nodes have.
                let name = rustls_pki_types::ServerName::try_from(crate::tls::SERVER_NAME).expect("a valid name");
                let tls = tokio_rustls::TlsConnector::from(cfg.clone())
                    .connect(name, io)
                    .await
                    .map_err(|e| self.fail(step, format!("TLS with the registry failed: {e}")).with_source(e))?;
                self.handshake(tls, step).await
            }
        }
    }

    /// A byte stream to the registry's port, as the registry speaks it (TLS in mutual mode):
    /// an exec of `nc 127.0.0.1 5000` in its task container, through its node's engine.
    pub async fn stream(&self) -> Result<impl AsyncRead + AsyncWrite + Send + Unpin + 'static> {
        let step = "connect to the registry through its node's engine";
        let argv = ["nc", "127.0.0.1", "5000"].map(String::from).to_vec();
        let cfg = ExecConfig {
            attach_stdin: Some(true),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            cmd: Some(argv),
            ..Default::default()
        };
        let docker = &self.at.docker;
        let created =
            docker.create_exec(&self.at.container, cfg).await.map_err(|e| Error::engine(&self.at.node, step, e))?;
        let started = docker
            .start_exec(&created.id, Some(StartExecOptions { detach: false, ..Default::default() }))
            .await
            .map_err(|e| Error::engine(&self.at.node, step, e))?;
        let StartExecResults::Attached { output, input } = started else {
            return Err(self.fail(step, "the engine did not attach to the relay"));
        };
        let node = self.at.node.clone();
        let stdout: Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>> = Box::pin(output.filter_map(move |r| {
            let node = node.clone();
            async move {
                match r {
                    Ok(bollard::container::LogOutput::StdOut { message }) => Some(Ok(message)),
                    Ok(bollard::container::LogOutput::StdErr { message }) => {
                        tracing::debug!(%node, said = %String::from_utf8_lossy(&message), "registry relay");
                        None
                    }
                    Ok(other) => Some(Ok(other.into_bytes())),
                    Err(e) => Some(Err(io::Error::other(e))),
                }
            }
        }));
        Ok(ExecStream { reader: StreamReader::new(stdout), writer: input })
    }

    /// HTTP/1.1 over `io`; the connection runs in a task of its own.
    async fn handshake<T>(&self, io: T, step: &str) -> Result<SendRequest<Body>>
    where
        T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let (sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(io)).await.map_err(|e| self.failed(step, e))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "registry connection ended");
            }
        });
        Ok(sender)
    }

    /// Sends a request for `path` (`/v2/...`, with its query) and reads the answer whole.
    /// `step` names what lab was doing, for errors.
    pub async fn send(
        &self,
        step: &str,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Body,
    ) -> Result<Answer> {
        let (sender, resp) = self.request(step, method, path, headers, body).await?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.map_err(|e| self.failed(step, e))?.to_bytes();
        self.idle.lock().await.push(sender);
        Ok(Answer { status: parts.status, headers: parts.headers, body })
    }

    /// Sends a request on an idle connection, or a new one; returns the connection with the
    /// response, whose body is still to be read.
    async fn request(
        &self,
        step: &str,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Body,
    ) -> Result<(SendRequest<Body>, hyper::Response<hyper::body::Incoming>)> {
        let mut sender = loop {
            let pooled = self.idle.lock().await.pop();
            match pooled {
                Some(mut s) => {
                    if s.ready().await.is_ok() {
                        break s;
                    }
                }
                None => {
                    let mut s = self.connect().await?;
                    s.ready().await.map_err(|e| self.failed(step, e))?;
                    break s;
                }
            }
        };
        let mut req = Request::builder().method(method).uri(path).header("host", "localhost:5000");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(body).map_err(|e| self.failed(step, e))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| self.fail(step, format!("the registry did not answer: {e}")).with_source(e))?;
        Ok((sender, resp))
    }

    /// Blob `digest` of `repo`, read as it streams: the size the registry gives and its bytes,
    /// unchecked (the caller hashes them); `None` if `repo` does not have it. The connection
    /// goes back to the pool once the bytes are all read.
    pub async fn blob(&self, repo: &str, digest: &str) -> Result<Option<(Option<u64>, BlobStream)>> {
        let step = format!("read blob {digest} of {repo}");
        let (sender, resp) =
            self.request(&step, Method::GET, &format!("/v2/{repo}/blobs/{digest}"), &[], empty()).await?;
        let status = resp.status();
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            // The registry's words are in the (small) body; a redirect, which a registry with
            // another storage driver may answer, is not followed: lab's registry keeps its
            // blobs on the node's volume.
            let (parts, body) = resp.into_parts();
            let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            let a = Answer { status: parts.status, headers: parts.headers, body };
            return Err(self.fail(step, a.why()));
        }
        let size = resp.headers().get("content-length").and_then(|v| v.to_str().ok()).and_then(|l| l.parse().ok());
        let idle = self.idle.clone();
        let data = resp.into_body().into_data_stream().map(|r| r.map_err(io::Error::other));
        // After the last chunk, the connection is idle again (after an error it is broken,
        // and `request` drops it when it finds it not ready).
        let back = futures_util::stream::once(async move {
            idle.lock().await.push(sender);
        })
        .filter_map(|()| async { None::<io::Result<Bytes>> });
        Ok(Some((size, Box::pin(data.chain(back)))))
    }

    /// `GET /v2/`: whether the registry answers as a registry.
    pub async fn ping(&self) -> Result<()> {
        let step = "ask the registry (GET /v2/)";
        let a = self.send(step, Method::GET, "/v2/", &[], empty()).await?;
        if a.status.is_success() {
            Ok(())
        } else {
            Err(self.fail(step, a.why()))
        }
    }

    /// The size of blob `digest` in `repo`, if `repo` has it.
    pub async fn blob_size(&self, repo: &str, digest: &str) -> Result<Option<u64>> {
        let step = format!("look for blob {digest} in {repo}");
        let a = self.send(&step, Method::HEAD, &format!("/v2/{repo}/blobs/{digest}"), &[], empty()).await?;
        match a.status {
            StatusCode::OK => Ok(a.header("content-length").and_then(|l| l.parse().ok())),
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(self.fail(step, a.why())),
        }
    }

    /// Links blob `digest` of repository `from` into `repo` without sending it; whether the
    /// registry did.
    pub async fn mount(&self, repo: &str, digest: &str, from: &str) -> Result<bool> {
        let step = format!("mount blob {digest} from {from} into {repo}");
        let path = format!("/v2/{repo}/blobs/uploads/?mount={digest}&from={from}");
        let a = self.send(&step, Method::POST, &path, &[("content-length", "0")], empty()).await?;
        match a.status {
            StatusCode::CREATED => Ok(true),
            StatusCode::ACCEPTED => {
                // An upload was started instead: cancel it.
                if let Some(loc) = a.header("location").map(upload_path) {
                    let _ = self.send(&step, Method::DELETE, &loc, &[], empty()).await;
                }
                Ok(false)
            }
            _ => Err(self.fail(step, a.why())),
        }
    }

    /// Uploads blob `digest` of `size` bytes into `repo`, its bytes from `body`.
    pub async fn upload(&self, repo: &str, digest: &str, size: u64, body: Body) -> Result<()> {
        let step = format!("send blob {digest} to {repo}");
        let a = self
            .send(&step, Method::POST, &format!("/v2/{repo}/blobs/uploads/"), &[("content-length", "0")], empty())
            .await?;
        if a.status != StatusCode::ACCEPTED {
            return Err(self.fail(step, a.why()));
        }
        let loc = a
            .header("location")
            .map(upload_path)
            .ok_or_else(|| self.fail(&step, "the registry gave no upload location"))?;
        let sep = if loc.contains('?') { '&' } else { '?' };
        let put = format!("{loc}{sep}digest={digest}");
        let len = size.to_string();
        let headers = [("content-length", len.as_str()), ("content-type", "application/octet-stream")];
        let a = self.send(&step, Method::PUT, &put, &headers, body).await?;
        if a.status == StatusCode::CREATED {
            Ok(())
        } else {
            Err(self.fail(step, a.why()))
        }
    }

    /// Puts manifest `bytes` (of `media_type`) as `repo:tag`; returns its digest.
    pub async fn put_manifest(&self, repo: &str, tag: &str, media_type: &str, bytes: Bytes) -> Result<String> {
        let step = format!("tag {repo}:{tag}");
        let len = bytes.len().to_string();
        let headers = [("content-type", media_type), ("content-length", len.as_str())];
        let a = self.send(&step, Method::PUT, &format!("/v2/{repo}/manifests/{tag}"), &headers, full(bytes)).await?;
        if a.status == StatusCode::CREATED {
            Ok(a.header("docker-content-digest").unwrap_or_default().to_string())
        } else {
            Err(self.fail(step, a.why()))
        }
    }

    /// The repositories the registry holds.
    pub async fn catalog(&self) -> Result<Vec<String>> {
        let step = "list the registry's repositories";
        let mut out = Vec::new();
        let mut path = "/v2/_catalog?n=1000".to_string();
        loop {
            let a = self.send(step, Method::GET, &path, &[], empty()).await?;
            if !a.status.is_success() {
                return Err(self.fail(step, a.why()));
            }
            let v: serde_json::Value = serde_json::from_slice(&a.body).map_err(|e| self.failed(step, e))?;
            out.extend(v["repositories"].as_array().into_iter().flatten().filter_map(|r| r.as_str().map(String::from)));
            match next_page(&a) {
                Some(next) => path = next,
                None => return Ok(out),
            }
        }
    }

    /// The tags of `repo` (none if the repository is not there), every page of them: a
    /// registry may page the list as it pages the catalog.
    pub async fn tags(&self, repo: &str) -> Result<Vec<String>> {
        let step = format!("list the tags of {repo}");
        let mut tags: Vec<String> = Vec::new();
        let mut path = format!("/v2/{repo}/tags/list");
        loop {
            let a = self.send(&step, Method::GET, &path, &[], empty()).await?;
            match a.status {
                StatusCode::NOT_FOUND => return Ok(Vec::new()),
                s if s.is_success() => {
                    let v: serde_json::Value = serde_json::from_slice(&a.body).map_err(|e| self.failed(&step, e))?;
                    tags.extend(
                        v["tags"].as_array().into_iter().flatten().filter_map(|t| t.as_str().map(String::from)),
                    );
                    match next_page(&a) {
                        Some(next) => path = next,
                        None => break,
                    }
                }
                _ => return Err(self.fail(step, a.why())),
            }
        }
        tags.sort();
        Ok(tags)
    }

    /// The manifest `reference` (a tag or digest) of `repo`: its digest, media type and bytes;
    /// `None` if there is none.
    pub async fn manifest(&self, repo: &str, reference: &str) -> Result<Option<(String, String, Bytes)>> {
        let step = format!("read the manifest {repo}:{reference}");
        let a = self
            .send(&step, Method::GET, &format!("/v2/{repo}/manifests/{reference}"), &[("accept", ACCEPT)], empty())
            .await?;
        match a.status {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => Ok(Some((
                a.header("docker-content-digest").unwrap_or_default().to_string(),
                a.header("content-type").unwrap_or_default().to_string(),
                a.body.clone(),
            ))),
            _ => Err(self.fail(step, a.why())),
        }
    }

    /// Deletes the manifest `digest` of `repo` (every tag naming it goes with it).
    pub async fn delete_manifest(&self, repo: &str, digest: &str) -> Result<()> {
        let step = format!("delete {repo}@{digest}");
        let a = self.send(&step, Method::DELETE, &format!("/v2/{repo}/manifests/{digest}"), &[], empty()).await?;
        if a.status.is_success() {
            Ok(())
        } else {
            Err(self.fail(step, a.why()))
        }
    }
}

/// Relays every connection `listener` takes to the registry, bytes untouched, each through a
/// [`Client::stream`] of its own (so TLS, in mutual mode, runs between the connecting client and
/// the registry), until the future is dropped. A connection that fails is told to `note` and
/// does not stop the others. This is `lab registry forward`, for clients that cannot reach the
/// registry's address while checking the name `localhost` ([`crate::registry::clients`]).
pub async fn forward(
    client: Arc<Client>,
    listener: tokio::net::TcpListener,
    note: impl Fn(String) + Send + Sync + 'static,
) -> Result<()> {
    let note = Arc::new(note);
    loop {
        let (mut conn, peer) = listener
            .accept()
            .await
            .map_err(|e| Error::op("relay to the registry", format!("accept: {e}")).with_source(e))?;
        let (client, note) = (client.clone(), note.clone());
        tokio::spawn(async move {
            match client.stream().await {
                Ok(mut registry) => {
                    if let Err(e) = tokio::io::copy_bidirectional(&mut conn, &mut registry).await {
                        tracing::debug!(%peer, error = %e, "relayed connection ended");
                    }
                }
                Err(e) => note(format!("{peer}: {e}")),
            }
        });
    }
}

/// The next page of a list, from its `Link: </v2/_catalog?last=x&n=1000>; rel="next"`, while
/// there are more.
fn next_page(a: &Answer) -> Option<String> {
    let (_, rest) = a.header("link")?.split_once('<')?;
    rest.split_once('>').map(|(next, _)| next.to_string())
}

/// The path and query of an upload `Location`, which the registry may give as a full URL.
fn upload_path(location: &str) -> String {
    match location.split_once("://") {
        Some((_, rest)) => rest.find('/').map(|i| rest[i..].to_string()).unwrap_or_else(|| "/".into()),
        None => location.to_string(),
    }
}

#[cfg(test)]
mod tests;
