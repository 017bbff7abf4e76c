//! The registry client against an in-process fake registry: a small HTTP/1.1 server on the
//! other end of a `tokio::io::duplex`, standing where the exec of `nc` stands in real use. It
//! keeps blobs, manifests and tags as the distribution registry does, pages its lists with
//! `Link` headers, refuses a blob whose bytes do not match its digest, and answers whatever a
//! test scripts for a path (401, 404, 5xx, with or without the registry's JSON error body).

use std::collections::BTreeMap;
use std::sync::Mutex;

use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, DuplexStream};

use super::*;

/// One request as the fake registry read it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

/// An answer: status, headers, body.
struct Reply(u16, Vec<(String, String)>, Vec<u8>);

impl Reply {
    fn json(status: u16, body: &str) -> Reply {
        Reply(status, vec![("content-type".into(), "application/json".into())], body.as_bytes().to_vec())
    }

    /// The registry's error body: `{"errors":[{"code":..,"message":..}]}`.
    fn error(status: u16, code: &str, message: &str) -> Reply {
        Reply::json(status, &serde_json::json!({"errors": [{"code": code, "message": message}]}).to_string())
    }

    fn header(mut self, k: &str, v: impl Into<String>) -> Reply {
        self.1.push((k.into(), v.into()));
        self
    }
}

#[derive(Default)]
struct State {
    /// (repository, digest) to bytes.
    blobs: BTreeMap<(String, String), Bytes>,
    /// (repository, tag or digest) to (media type, bytes).
    manifests: BTreeMap<(String, String), (String, Bytes)>,
    /// Uploads under way: their id to their repository.
    uploads: BTreeMap<String, String>,
    /// Every request, in order.
    seen: Vec<Seen>,
    /// Scripted answers: the first whose (method, path prefix) matches wins.
    scripted: Vec<(&'static str, String, u16, String)>,
    /// How many entries a page of a list holds.
    page: usize,
    connections: usize,
}

/// The fake registry: its state, and in mutual TLS its side of TLS.
#[derive(Clone)]
struct Fake(Arc<Mutex<State>>, Option<Arc<rustls::ServerConfig>>);

fn sha(bytes: &[u8]) -> String {
    let hex: String = Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

impl Fake {
    fn new() -> Fake {
        Fake(Arc::new(Mutex::new(State { page: 2, ..Default::default() })), None)
    }

    /// A registry in mutual TLS, with `tls` as its side of it.
    fn mutual(tls: Arc<rustls::ServerConfig>) -> Fake {
        Fake(Fake::new().0, Some(tls))
    }

    /// A client whose every connection is a new stream to this registry.
    fn client(&self) -> Arc<Client> {
        self.client_over(None)
    }

    /// A client that speaks TLS with `tls`, if given, over each stream.
    fn client_over(&self, tls: Option<Arc<rustls::ClientConfig>>) -> Arc<Client> {
        let docker = bollard::Docker::connect_with_http("http://127.0.0.1:9", 1, bollard::API_DEFAULT_VERSION)
            .expect("a client");
        let at = Endpoint { node: "worker1".into(), docker, container: "lab_registry.1".into(), tls, direct: None };
        let fake = self.clone();
        Arc::new(Client {
            at,
            idle: Arc::new(tokio::sync::Mutex::new(Vec::new())),
            direct_failed: std::sync::atomic::AtomicBool::new(false),
            dial: Some(Box::new(move || fake.connect())),
        })
    }

    fn connect(&self) -> DuplexStream {
        let (ours, theirs) = tokio::io::duplex(64 * 1024);
        self.0.lock().unwrap().connections += 1;
        let fake = self.clone();
        match self.1.clone() {
            None => drop(tokio::spawn(fake.serve(theirs))),
            Some(tls) => drop(tokio::spawn(async move {
                if let Ok(theirs) = tokio_rustls::TlsAcceptor::from(tls).accept(theirs).await {
                    fake.serve(theirs).await;
                }
            })),
        }
        ours
    }

    /// Makes requests of `method` whose path starts with `prefix` answer `status` and `body`.
    fn script(&self, method: &'static str, prefix: &str, status: u16, body: &str) {
        self.0.lock().unwrap().scripted.push((method, prefix.into(), status, body.into()));
    }

    fn seen(&self) -> Vec<Seen> {
        self.0.lock().unwrap().seen.clone()
    }

    fn blob(&self, repo: &str, bytes: &[u8]) -> String {
        let digest = sha(bytes);
        self.0.lock().unwrap().blobs.insert((repo.into(), digest.clone()), Bytes::copy_from_slice(bytes));
        digest
    }

    fn has_blob(&self, repo: &str, digest: &str) -> Option<Bytes> {
        self.0.lock().unwrap().blobs.get(&(repo.to_string(), digest.to_string())).cloned()
    }

    fn tag(&self, repo: &str, tag: &str) {
        let body = Bytes::from(format!("{{\"repo\":\"{repo}\",\"tag\":\"{tag}\"}}"));
        self.0.lock().unwrap().manifests.insert((repo.into(), tag.into()), (DOCKER_MANIFEST.into(), body));
    }

    /// Serves requests on one connection until the client closes it.
    async fn serve<S: AsyncRead + AsyncWrite + Send + 'static>(self, io: S) {
        let (r, mut w) = tokio::io::split(io);
        let mut r = BufReader::new(r);
        while let Some(req) = read_request(&mut r).await {
            let Reply(status, headers, body) = self.answer(req.clone());
            let reason = StatusCode::from_u16(status).unwrap().canonical_reason().unwrap_or("");
            let mut head = format!("HTTP/1.1 {status} {reason}\r\n");
            for (k, v) in &headers {
                head.push_str(&format!("{k}: {v}\r\n"));
            }
            if !headers.iter().any(|(k, _)| k == "content-length") {
                head.push_str(&format!("content-length: {}\r\n", body.len()));
            }
            head.push_str("\r\n");
            let body = if req.method == "HEAD" { Vec::new() } else { body };
            if w.write_all(head.as_bytes()).await.is_err() || w.write_all(&body).await.is_err() {
                return;
            }
        }
    }

    fn answer(&self, req: Seen) -> Reply {
        let mut s = self.0.lock().unwrap();
        s.seen.push(req.clone());
        let scripted = s.scripted.iter().find(|(m, p, ..)| *m == req.method && req.path.starts_with(p.as_str()));
        if let Some((_, _, status, body)) = scripted {
            return Reply::json(*status, body);
        }
        let (path, query) = req.path.split_once('?').unwrap_or((&req.path, ""));
        let q: BTreeMap<&str, &str> = query.split('&').filter_map(|kv| kv.split_once('=')).collect();
        let Some(rest) = path.strip_prefix("/v2/") else { return Reply::error(404, "NOT_FOUND", "not found") };
        if rest.is_empty() {
            return Reply::json(200, "{}");
        }
        if rest == "_catalog" {
            let mut repos: Vec<String> =
                s.manifests.keys().map(|(r, _)| r.clone()).chain(s.blobs.keys().map(|(r, _)| r.clone())).collect();
            repos.sort();
            repos.dedup();
            let (page, next) = paged(&repos, s.page, q.get("last").copied());
            let reply = Reply::json(200, &serde_json::json!({ "repositories": page }).to_string());
            return match next {
                Some(last) => reply.header("link", format!("</v2/_catalog?last={last}&n=1000>; rel=\"next\"")),
                None => reply,
            };
        }
        if let Some(repo) = rest.strip_suffix("/tags/list") {
            let mut tags: Vec<String> = s
                .manifests
                .keys()
                .filter(|(r, t)| r == repo && !t.starts_with("sha256:"))
                .map(|(_, t)| t.clone())
                .collect();
            if tags.is_empty() {
                return Reply::error(404, "NAME_UNKNOWN", "repository name not known to registry");
            }
            tags.sort();
            let (page, next) = paged(&tags, s.page, q.get("last").copied());
            let reply = Reply::json(200, &serde_json::json!({ "name": repo, "tags": page }).to_string());
            return match next {
                Some(last) => reply.header("link", format!("</v2/{repo}/tags/list?last={last}&n=2>; rel=\"next\"")),
                None => reply,
            };
        }
        if let Some((repo, id)) = rest.split_once("/blobs/uploads/") {
            return upload(&mut s, &req, repo, id, &q);
        }
        if let Some((repo, digest)) = rest.split_once("/blobs/") {
            return match (req.method.as_str(), s.blobs.get(&(repo.to_string(), digest.to_string()))) {
                ("HEAD", Some(b)) => Reply(200, vec![("content-length".into(), b.len().to_string())], Vec::new()),
                ("HEAD", None) => Reply(404, Vec::new(), Vec::new()),
                _ => Reply::error(405, "UNSUPPORTED", "The operation is unsupported."),
            };
        }
        if let Some((repo, reference)) = rest.split_once("/manifests/") {
            return manifest(&mut s, &req, repo, reference);
        }
        Reply::error(404, "NOT_FOUND", "not found")
    }
}

/// A page of `all` after `last`, and the last entry of it if more follow.
fn paged(all: &[String], size: usize, last: Option<&str>) -> (Vec<String>, Option<String>) {
    let from = last.map_or(0, |l| all.iter().position(|x| x.as_str() > l).unwrap_or(all.len()));
    let page: Vec<String> = all[from..].iter().take(size).cloned().collect();
    let more = from + page.len() < all.len();
    let next = if more { page.last().cloned() } else { None };
    (page, next)
}

/// `POST` (start, or mount), `PUT` (finish, checking the digest) and `DELETE` (cancel) an upload.
fn upload(s: &mut State, req: &Seen, repo: &str, id: &str, q: &BTreeMap<&str, &str>) -> Reply {
    match req.method.as_str() {
        "POST" => {
            if let (Some(digest), Some(from)) = (q.get("mount"), q.get("from")) {
                if let Some(b) = s.blobs.get(&(from.to_string(), digest.to_string())).cloned() {
                    s.blobs.insert((repo.into(), digest.to_string()), b);
                    return Reply(201, Vec::new(), Vec::new());
                }
            }
            let id = format!("u{}", s.uploads.len() + 1);
            s.uploads.insert(id.clone(), repo.into());
            // A full URL, as the registry gives it, with its own state in the query.
            let location = format!("http://localhost:5000/v2/{repo}/blobs/uploads/{id}?_state=s-{id}");
            Reply(202, vec![("location".into(), location)], Vec::new())
        }
        "PUT" => {
            if s.uploads.remove(id).is_none() {
                return Reply::error(404, "BLOB_UPLOAD_UNKNOWN", "blob upload unknown to registry");
            }
            let digest = q.get("digest").copied().unwrap_or_default();
            if sha(&req.body) != digest {
                return Reply::error(400, "DIGEST_INVALID", "provided digest did not match uploaded content");
            }
            s.blobs.insert((repo.into(), digest.into()), Bytes::from(req.body.clone()));
            Reply(201, vec![("docker-content-digest".into(), digest.into())], Vec::new())
        }
        "DELETE" => {
            s.uploads.remove(id);
            Reply(204, Vec::new(), Vec::new())
        }
        _ => Reply::error(405, "UNSUPPORTED", "The operation is unsupported."),
    }
}

/// `PUT`, `GET` (only as a type the request accepts) and `DELETE` (by digest) a manifest.
fn manifest(s: &mut State, req: &Seen, repo: &str, reference: &str) -> Reply {
    let key = (repo.to_string(), reference.to_string());
    match req.method.as_str() {
        "PUT" => {
            let media = req.headers.get("content-type").cloned().unwrap_or_default();
            let digest = sha(&req.body);
            let body = Bytes::from(req.body.clone());
            s.manifests.insert(key, (media.clone(), body.clone()));
            s.manifests.insert((repo.into(), digest.clone()), (media, body));
            Reply(201, vec![("docker-content-digest".into(), digest)], Vec::new())
        }
        "GET" => {
            let accept = req.headers.get("accept").cloned().unwrap_or_default();
            match s.manifests.get(&key) {
                Some((media, body)) if accept.split(',').any(|a| a.trim() == media) => Reply(
                    200,
                    vec![("content-type".into(), media.clone()), ("docker-content-digest".into(), sha(body))],
                    body.to_vec(),
                ),
                _ => Reply::error(404, "MANIFEST_UNKNOWN", "manifest unknown"),
            }
        }
        "DELETE" => {
            let before = s.manifests.len();
            s.manifests.retain(|(r, _), (_, body)| r != repo || sha(body) != reference);
            if s.manifests.len() == before {
                Reply::error(404, "MANIFEST_UNKNOWN", "manifest unknown")
            } else {
                Reply(202, Vec::new(), Vec::new())
            }
        }
        _ => Reply::error(405, "UNSUPPORTED", "The operation is unsupported."),
    }
}

/// Reads one request: its head, and its body by `content-length` or chunked encoding. `None`
/// when the client has closed the connection.
async fn read_request<R: AsyncRead + Unpin>(r: &mut BufReader<R>) -> Option<Seen> {
    let mut line = String::new();
    if r.read_line(&mut line).await.ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next()?.to_string(), parts.next()?.to_string());
    let mut headers = BTreeMap::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).await.ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
    }
    let mut body = Vec::new();
    if headers.get("transfer-encoding").is_some_and(|t| t.contains("chunked")) {
        loop {
            let mut size = String::new();
            r.read_line(&mut size).await.ok()?;
            let n = usize::from_str_radix(size.trim(), 16).ok()?;
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk).await.ok()?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    } else if let Some(n) = headers.get("content-length").and_then(|l| l.parse::<usize>().ok()) {
        body.resize(n, 0);
        r.read_exact(&mut body).await.ok()?;
    }
    Some(Seen { method, path, headers, body })
}

#[test]
fn upload_locations_are_used_by_path_whatever_host_the_registry_names() {
    assert_eq!(upload_path("http://localhost:5000/v2/a/blobs/uploads/u?_state=x"), "/v2/a/blobs/uploads/u?_state=x");
    assert_eq!(upload_path("/v2/a/blobs/uploads/u"), "/v2/a/blobs/uploads/u");
    assert_eq!(upload_path("https://10.0.0.1:5000"), "/");
}

#[tokio::test]
async fn ping_answers_and_a_refusal_names_the_node_and_the_registrys_words() {
    let fake = Fake::new();
    fake.client().ping().await.expect("the fake registry answers");
    assert_eq!(fake.seen()[0].path, "/v2/");
    assert_eq!(fake.seen()[0].headers["host"], "localhost:5000", "the address the nodes use");

    let refusing = Fake::new();
    let body = r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required","detail":null}]}"#;
    refusing.script("GET", "/v2/", 401, body);
    let err = refusing.client().ping().await.unwrap_err().to_string();
    assert_eq!(err, "worker1: ask the registry (GET /v2/): 401 Unauthorized (UNAUTHORIZED: authentication required)");
}

#[tokio::test]
async fn the_catalog_follows_link_headers_across_pages() {
    let fake = Fake::new();
    for repo in ["e", "a", "team/c", "b", "d"] {
        fake.tag(repo, "latest");
    }
    let repos = fake.client().catalog().await.unwrap();
    assert_eq!(repos, ["a", "b", "d", "e", "team/c"]);
    let asked: Vec<String> = fake.seen().into_iter().map(|s| s.path).collect();
    assert_eq!(asked, ["/v2/_catalog?n=1000", "/v2/_catalog?last=b&n=1000", "/v2/_catalog?last=e&n=1000"]);
}

#[tokio::test]
async fn tags_follow_link_headers_and_a_missing_repository_has_none() {
    let fake = Fake::new();
    for tag in ["v3", "v1", "latest", "v2", "v10"] {
        fake.tag("team/app", tag);
    }
    let client = fake.client();
    assert_eq!(client.tags("team/app").await.unwrap(), ["latest", "v1", "v10", "v2", "v3"]);
    assert_eq!(client.tags("nothing").await.unwrap(), Vec::<String>::new());
}

#[tokio::test]
async fn manifests_go_up_and_come_back_with_their_content_type_and_digest() {
    let fake = Fake::new();
    let client = fake.client();
    let image = Bytes::from_static(
        br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json"}"#,
    );
    let index = Bytes::from_static(br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json"}"#);
    let d1 = client.put_manifest("app", "v1", DOCKER_MANIFEST, image.clone()).await.unwrap();
    let d2 = client.put_manifest("app", "multi", OCI_INDEX, index.clone()).await.unwrap();
    assert_eq!(d1, sha(&image), "the digest the registry gave");
    let put = &fake.seen()[0];
    assert_eq!((put.method.as_str(), put.path.as_str()), ("PUT", "/v2/app/manifests/v1"));
    assert_eq!(put.headers["content-type"], DOCKER_MANIFEST);
    assert_eq!(put.headers["content-length"], image.len().to_string());

    let (digest, media, bytes) = client.manifest("app", "v1").await.unwrap().expect("v1 is there");
    assert_eq!((digest.as_str(), media.as_str(), &bytes), (d1.as_str(), DOCKER_MANIFEST, &image));
    let (digest, media, bytes) = client.manifest("app", &d2).await.unwrap().expect("by digest too");
    assert_eq!((digest.as_str(), media.as_str(), &bytes), (d2.as_str(), OCI_INDEX, &index));
    // Every kind lab or docker may have put there is accepted.
    let accept = fake.seen().last().unwrap().headers["accept"].clone();
    for kind in [DOCKER_MANIFEST, DOCKER_LIST, OCI_MANIFEST, OCI_INDEX] {
        assert!(accept.contains(kind), "{kind} not in {accept}");
    }
    assert!(client.manifest("app", "v9").await.unwrap().is_none(), "a missing tag is none, not an error");

    client.delete_manifest("app", &d1).await.unwrap();
    assert!(client.manifest("app", "v1").await.unwrap().is_none(), "the tag went with its digest");
    let err = client.delete_manifest("app", &d1).await.unwrap_err().to_string();
    assert!(err.ends_with("404 Not Found (MANIFEST_UNKNOWN: manifest unknown)"), "{err}");
}

#[tokio::test]
async fn a_blob_head_says_its_size_or_that_it_is_missing() {
    let fake = Fake::new();
    let digest = fake.blob("app", b"layer bytes");
    let client = fake.client();
    assert_eq!(client.blob_size("app", &digest).await.unwrap(), Some(11));
    assert_eq!(client.blob_size("other", &digest).await.unwrap(), None, "blobs are per repository");
    let head = &fake.seen()[0];
    assert_eq!((head.method.as_str(), head.path.clone()), ("HEAD", format!("/v2/app/blobs/{digest}")));
}

#[tokio::test]
async fn a_monolithic_upload_sends_the_bytes_once_to_the_location_the_registry_gave() {
    let fake = Fake::new();
    let client = fake.client();
    let bytes = b"a layer, whole".to_vec();
    let digest = sha(&bytes);
    client.upload("team/app", &digest, bytes.len() as u64, full(bytes.clone())).await.unwrap();
    assert_eq!(fake.has_blob("team/app", &digest).as_deref(), Some(&bytes[..]));
    let seen = fake.seen();
    let (start, put) = (&seen[0], &seen[1]);
    assert_eq!((start.method.as_str(), start.path.as_str()), ("POST", "/v2/team/app/blobs/uploads/"));
    // The full URL the registry gave is used by path, its query kept and the digest added.
    assert_eq!(put.method, "PUT");
    assert_eq!(put.path, format!("/v2/team/app/blobs/uploads/u1?_state=s-u1&digest={digest}"));
    assert_eq!(put.headers["content-type"], "application/octet-stream");
    assert_eq!(put.headers["content-length"], bytes.len().to_string());
    assert_eq!(seen.len(), 2);
}

#[tokio::test]
async fn a_streamed_upload_arrives_whole_from_its_chunks() {
    let fake = Fake::new();
    let client = fake.client();
    let chunks = [&b"first chunk, "[..], b"second, ", b"and the last"];
    let whole: Vec<u8> = chunks.concat();
    let digest = sha(&whole);
    let body = streamed(futures_util::stream::iter(chunks.map(|c| Ok(Bytes::from_static(c)))));
    client.upload("app", &digest, whole.len() as u64, body).await.unwrap();
    assert_eq!(fake.has_blob("app", &digest).as_deref(), Some(&whole[..]));
    let put = &fake.seen()[1];
    assert_eq!(put.headers["content-length"], whole.len().to_string(), "sent with its size, not chunked");
    assert!(!put.headers.contains_key("transfer-encoding"));
}

#[tokio::test]
async fn an_upload_whose_bytes_do_not_match_its_digest_is_refused_in_the_registrys_words() {
    let fake = Fake::new();
    let client = fake.client();
    let digest = sha(b"what the manifest says");
    let err = client.upload("app", &digest, 9, full(&b"corrupted"[..])).await.unwrap_err().to_string();
    assert_eq!(
        err,
        format!(
            "worker1: send blob {digest} to app: \
             400 Bad Request (DIGEST_INVALID: provided digest did not match uploaded content)"
        )
    );
    assert_eq!(fake.has_blob("app", &digest), None);
}

#[tokio::test]
async fn a_mount_links_a_blob_the_registry_has_and_cancels_the_upload_it_starts_otherwise() {
    let fake = Fake::new();
    let digest = fake.blob("base", b"shared layer");
    let client = fake.client();
    assert!(client.mount("app", &digest, "base").await.unwrap());
    assert_eq!(fake.has_blob("app", &digest).as_deref(), Some(&b"shared layer"[..]));
    assert_eq!(fake.seen()[0].path, format!("/v2/app/blobs/uploads/?mount={digest}&from=base"));

    let missing = sha(b"nowhere");
    assert!(!client.mount("app", &missing, "base").await.unwrap());
    let cancel = fake.seen().pop().unwrap();
    assert_eq!((cancel.method.as_str(), cancel.path.as_str()), ("DELETE", "/v2/app/blobs/uploads/u1?_state=s-u1"));
    assert!(fake.0.lock().unwrap().uploads.is_empty(), "no upload left open");
}

#[tokio::test]
async fn failures_name_the_registrys_own_message_or_else_its_status() {
    let fake = Fake::new();
    fake.script(
        "GET",
        "/v2/_catalog",
        401,
        r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
    );
    fake.script("GET", "/v2/app/tags/list", 500, "<html>internal error</html>");
    fake.script("HEAD", "/v2/app/blobs/", 503, "");
    fake.script("POST", "/v2/app/blobs/uploads/", 404, r#"{"errors":[{"code":"NAME_UNKNOWN","message":"repository name not known to registry"},{"message":"and a second"}]}"#);
    fake.script(
        "DELETE",
        "/v2/app/manifests/",
        405,
        r#"{"errors":[{"code":"UNSUPPORTED","message":"The operation is unsupported."}]}"#,
    );
    let client = fake.client();
    fn err<T>(r: Result<T>) -> String {
        r.map(|_| ()).unwrap_err().to_string()
    }

    assert_eq!(
        err(client.catalog().await),
        "worker1: list the registry's repositories: 401 Unauthorized (UNAUTHORIZED: authentication required)"
    );
    assert_eq!(err(client.tags("app").await), "worker1: list the tags of app: 500 Internal Server Error");
    assert_eq!(
        err(client.blob_size("app", "sha256:00").await),
        "worker1: look for blob sha256:00 in app: 503 Service Unavailable"
    );
    assert_eq!(
        err(client.upload("app", "sha256:00", 1, full(&b"x"[..])).await),
        "worker1: send blob sha256:00 to app: \
         404 Not Found (NAME_UNKNOWN: repository name not known to registry; and a second)"
    );
    assert_eq!(
        err(client.delete_manifest("app", "sha256:00").await),
        "worker1: delete app@sha256:00: 405 Method Not Allowed (UNSUPPORTED: The operation is unsupported.)"
    );
}

#[tokio::test]
async fn requests_one_after_another_share_one_connection() {
    let fake = Fake::new();
    fake.tag("app", "v1");
    let client = fake.client();
    for _ in 0..5 {
        client.ping().await.unwrap();
        client.tags("app").await.unwrap();
    }
    assert_eq!(fake.0.lock().unwrap().connections, 1, "each request made a connection of its own");
}

/// Mutual TLS: lab checks the registry's certificate against the cluster's CA and presents its
/// own; over that, the API is the same. A registry with another cluster's certificate is
/// refused before a request is sent, and the registry refuses another cluster's client.
#[tokio::test]
async fn in_mutual_tls_each_side_checks_the_other_against_the_clusters_ca() {
    use crate::tls::pki::{client_config, ensure, server_config};
    let tmp = tempfile::tempdir().unwrap();
    let (ours, _) = ensure(&crate::tls::dir(tmp.path()), "c1").unwrap();
    let (theirs, _) = ensure(&tmp.path().join("other"), "c2").unwrap();

    let fake = Fake::mutual(server_config(&ours));
    fake.tag("app", "v1");
    let client = fake.client_over(Some(client_config(&ours).unwrap()));
    client.ping().await.expect("the cluster's own registry answers");
    assert_eq!(client.tags("app").await.unwrap(), ["v1"]);

    let impostor = Fake::mutual(server_config(&theirs));
    let err = impostor.client_over(Some(client_config(&ours).unwrap())).ping().await.unwrap_err().to_string();
    assert!(
        err.starts_with("worker1: connect to the registry through its node's engine: TLS with the registry failed: "),
        "{err}"
    );
    assert!(impostor.seen().is_empty(), "a request went to a registry lab does not trust");

    let stranger = fake.client_over(Some(client_config(&theirs).unwrap()));
    let err = stranger.ping().await.unwrap_err().to_string();
    assert!(err.starts_with("worker1: "), "{err}");
    assert_eq!(fake.seen().len(), 2, "the registry answered a client of another cluster");
}
