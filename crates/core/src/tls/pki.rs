//! The cluster's CA and its certificates, made with rcgen and ring, kept in the cluster's
//! state directory, fingerprinted, and turned into a rustls client configuration.
//!
//! Each node gets a client certificate and key of its own ([`issue_node`]), and lab has its
//! own (`client.cert`, `client.key`). The nodes' are kept in `nodes/<set>/<node>.{crt,key}`,
//! `<set>` being the registry fingerprint of the CA and server certificate they were issued
//! with: that directory is the record of which nodes hold a key the current CA signed, which
//! the planner reads to know when one that left the cluster makes a new CA necessary. A
//! renewal starts a new, empty set, so a node's pair from an older one is never handed out
//! again.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::state::{make_private_dir, now, write_atomic};
use crate::tls::CA_LIFE;
use crate::tls::CERTS_DIRS;
use crate::tls::LEAF_LIFE;
use crate::tls::RENEW_BEFORE;
use crate::tls::SERVER_NAMES;

/// What lab keeps about the certificates besides the PEM files.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Meta {
    /// When the CA expires (seconds since the Unix epoch).
    pub ca_not_after: u64,
    /// When the server and client certificates expire.
    pub leaf_not_after: u64,
}

/// The cluster's certificates, as PEM.
#[derive(Clone)]
pub struct Material {
    /// The CA's certificate.
    pub ca_cert: String,
    ca_key: String,
    /// The registry's certificate.
    pub server_cert: String,
    server_key: String,
    /// lab's own client certificate (`lab push`, `lab images`, `lab check`).
    pub client_cert: String,
    client_key: String,
    /// The client pairs issued to nodes with these certificates, by node.
    pub nodes: BTreeMap<String, NodePair>,
    /// Expiry dates.
    pub meta: Meta,
}

/// A node's own client certificate and key.
#[derive(Clone)]
pub struct NodePair {
    /// The certificate.
    pub cert: String,
    key: String,
}

impl std::fmt::Debug for Material {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Material")
            .field("registry", &self.registry_fingerprint())
            .field("nodes", &self.nodes.keys().map(|n| (n, self.node_fingerprint(n))).collect::<Vec<_>>())
            .field("meta", &self.meta)
            .finish_non_exhaustive()
    }
}

/// The first 12 hex digits of the SHA-256 of `parts`, each length-prefixed.
pub fn fingerprint(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p);
    }
    h.finalize().iter().take(6).map(|b| format!("{b:02x}")).collect()
}

impl Material {
    /// Names what the registry is deployed with: its certificate and the CA it trusts.
    pub fn registry_fingerprint(&self) -> String {
        fingerprint(&[self.ca_cert.as_bytes(), self.server_cert.as_bytes()])
    }

    /// Names what `node`'s engine gets: the CA and the node's own client pair, if issued.
    pub fn node_fingerprint(&self, node: &str) -> Option<String> {
        let p = self.nodes.get(node)?;
        Some(node_fingerprint(self.ca_cert.as_bytes(), p.cert.as_bytes(), p.key.as_bytes()))
    }

    /// The registry's key (for its swarm secret only).
    pub fn server_key(&self) -> &str {
        &self.server_key
    }

    /// Whether the leaf certificates are to be renewed at `at`.
    pub fn due(&self, at: u64) -> bool {
        self.meta.leaf_not_after <= at + RENEW_BEFORE || self.meta.ca_not_after <= at + RENEW_BEFORE
    }

    /// The files `node`'s engine gets (if it was issued a pair), as a tar archive for the
    /// archive API, to unpack in the node's `/etc`: for each of [`CERTS_DIRS`],
    /// `docker/certs.d/DIR/` with `ca.crt`, `client.cert` and `client.key` (0600), owned by
    /// root.
    pub fn node_archive(&self, node: &str) -> Option<Vec<u8>> {
        let pair = self.nodes.get(node)?;
        let mut b = tar::Builder::new(Vec::new());
        for dir in CERTS_DIRS {
            let dir = format!("docker/certs.d/{dir}");
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
            h.set_size(0);
            h.set_mtime(now());
            b.append_data(&mut h, &dir, std::io::empty()).expect("tar in memory");
            for (name, body, mode) in
                [("ca.crt", &self.ca_cert, 0o644), ("client.cert", &pair.cert, 0o644), ("client.key", &pair.key, 0o600)]
            {
                let mut h = tar::Header::new_gnu();
                h.set_mode(mode);
                h.set_size(body.len() as u64);
                h.set_mtime(now());
                h.set_uid(0);
                h.set_gid(0);
                b.append_data(&mut h, format!("{dir}/{name}"), body.as_bytes()).expect("tar in memory");
            }
        }
        Some(b.into_inner().expect("tar in memory"))
    }
}

/// The fingerprint of a node's certificates, from the files' contents.
pub fn node_fingerprint(ca: &[u8], cert: &[u8], key: &[u8]) -> String {
    fingerprint(&[ca, cert, key])
}

/// What a node's `/etc/docker/certs.d` holds, read from an archive of it (the archive API's
/// answer for that directory, its entries under `certs.d/`): the fingerprint of the
/// certificates, if every one of [`CERTS_DIRS`] has the same complete set.
pub fn observed_node_fingerprint(archive: &[u8]) -> Option<String> {
    let mut files: std::collections::BTreeMap<String, Vec<u8>> = Default::default();
    let mut a = tar::Archive::new(archive);
    for e in a.entries().ok()? {
        let mut e = e.ok()?;
        if !e.header().entry_type().is_file() {
            continue;
        }
        let path = e.path().ok()?.to_string_lossy().trim_start_matches("./").to_string();
        let Some(path) = path.strip_prefix("certs.d/").map(str::to_string) else { continue };
        let mut body = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut body).ok()?;
        files.insert(path, body);
    }
    let mut found = None;
    for dir in CERTS_DIRS {
        let get = |n: &str| files.get(&format!("{dir}/{n}"));
        let fp = node_fingerprint(get("ca.crt")?, get("client.cert")?, get("client.key")?);
        if found.as_ref().is_some_and(|f| *f != fp) {
            return None;
        }
        found = Some(fp);
    }
    found
}

pub(crate) fn state_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::State {
        path: path.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()),
    }
}

/// Reads the certificates in `dir`, if lab made them.
pub fn load(dir: &Path) -> Result<Option<Material>> {
    let read = |name: &str| -> Result<Option<String>> {
        let p = dir.join(name);
        match fs::read_to_string(&p) {
            Ok(t) => Ok(Some(t)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(Error::State { path: p, source }),
        }
    };
    let Some(meta) = read("meta.json")? else { return Ok(None) };
    let meta: Meta = serde_json::from_str(&meta).map_err(|e| state_err(&dir.join("meta.json"), e))?;
    let mut pems = Vec::new();
    for name in ["ca.crt", "ca.key", "server.crt", "server.key", "client.cert", "client.key"] {
        match read(name)? {
            Some(t) => pems.push(t),
            None => return Ok(None),
        }
    }
    let [ca_cert, ca_key, server_cert, server_key, client_cert, client_key]: [String; 6] =
        pems.try_into().expect("six files");
    let mut m =
        Material { ca_cert, ca_key, server_cert, server_key, client_cert, client_key, nodes: BTreeMap::new(), meta };
    m.nodes = load_nodes(&nodes_dir(dir, &m))?;
    Ok(Some(m))
}

/// Where the pairs issued to nodes with `m`'s CA and server certificate are.
fn nodes_dir(dir: &Path, m: &Material) -> std::path::PathBuf {
    dir.join("nodes").join(m.registry_fingerprint())
}

/// The pairs in `set`: every `<node>.crt` with its `<node>.key`.
fn load_nodes(set: &Path) -> Result<BTreeMap<String, NodePair>> {
    let mut out = BTreeMap::new();
    let entries = match fs::read_dir(set) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(source) => return Err(Error::State { path: set.to_path_buf(), source }),
    };
    for e in entries {
        let path = e.map_err(|source| Error::State { path: set.to_path_buf(), source })?.path();
        let (Some(node), Some("crt")) =
            (path.file_stem().and_then(|s| s.to_str()), path.extension().and_then(|s| s.to_str()))
        else {
            continue;
        };
        let read = |p: &Path| fs::read_to_string(p).map_err(|source| Error::State { path: p.to_path_buf(), source });
        let key_path = path.with_extension("key");
        // The key is written first: a certificate without one is not there.
        if key_path.is_file() {
            out.insert(node.to_string(), NodePair { cert: read(&path)?, key: read(&key_path)? });
        }
    }
    Ok(out)
}

/// Makes sure `dir` holds certificates good for at least [`RENEW_BEFORE`]: the CA is made once
/// (and again only when it is itself about to expire); the server and lab's client
/// certificates are made with it, and made again when due, with an empty set of nodes' pairs.
/// Returns them, and whether anything was made.
pub fn ensure(dir: &Path, cluster: &str) -> Result<(Material, bool)> {
    let old = load(dir)?;
    if let Some(m) = old.as_ref().filter(|m| !m.due(now())) {
        return Ok((m.clone(), false));
    }
    let keep = old.filter(|m| m.meta.ca_not_after > now() + RENEW_BEFORE);
    Ok((make(dir, cluster, keep.as_ref())?, true))
}

/// Makes a new CA in `dir`, and the server and lab's client certificates with it. No node's
/// pair is carried over: each is issued again ([`issue_node`]), and a key issued before,
/// the departed node's among them, is no longer trusted by the registry once it is
/// redeployed with the new CA.
pub fn renew_ca(dir: &Path, cluster: &str) -> Result<Material> {
    make(dir, cluster, None)
}

/// The certificates made anew, with `keep`'s CA, or a new one.
fn make(dir: &Path, cluster: &str, keep: Option<&Material>) -> Result<Material> {
    let at = now();
    make_private_dir(dir)?;
    let err = |e: rcgen::Error| state_err(dir, format!("make the registry's certificates: {e}"));
    let (ca_key, ca_cert_pem, ca_not_after) = match keep {
        Some(m) => (KeyPair::from_pem(&m.ca_key).map_err(err)?, m.ca_cert.clone(), m.meta.ca_not_after),
        None => {
            let key = KeyPair::generate().map_err(err)?;
            let cert = ca_params(cluster, at).self_signed(&key).map_err(err)?;
            (key, cert.pem(), at + CA_LIFE)
        }
    };
    let (server_cert, server_key) =
        leaf(dir, cluster, &ca_key, "lab registry", SERVER_NAMES, ExtendedKeyUsagePurpose::ServerAuth, at)?;
    let (client_cert, client_key) =
        leaf(dir, cluster, &ca_key, &format!("lab {cluster} lab"), &[], ExtendedKeyUsagePurpose::ClientAuth, at)?;
    let m = Material {
        ca_cert: ca_cert_pem,
        ca_key: ca_key.serialize_pem(),
        server_cert,
        server_key,
        client_cert,
        client_key,
        nodes: BTreeMap::new(),
        meta: Meta { ca_not_after, leaf_not_after: at + LEAF_LIFE },
    };
    // The keys and certificates first, the metadata last: an interrupted write leaves either
    // the old set's metadata (so the next `up` makes them again) or a complete new set.
    for (name, body) in [
        ("ca.key", &m.ca_key),
        ("ca.crt", &m.ca_cert),
        ("server.key", &m.server_key),
        ("server.crt", &m.server_cert),
        ("client.key", &m.client_key),
        ("client.cert", &m.client_cert),
    ] {
        write_atomic(&dir.join(name), body.as_bytes())?;
    }
    write_atomic(&dir.join("meta.json"), &serde_json::to_vec_pretty(&m.meta).expect("meta serialises"))?;
    // The nodes' pairs of older sets are trusted by nothing lab deploys any more.
    let current = nodes_dir(dir, &m);
    if let Ok(sets) = fs::read_dir(dir.join("nodes")) {
        for set in sets.flatten().map(|e| e.path()).filter(|p| *p != current) {
            let _ = fs::remove_dir_all(set);
        }
    }
    Ok(m)
}

/// A leaf certificate named `cn`, valid for `names`, signed by the cluster's CA (`ca_key`).
fn leaf(
    dir: &Path,
    cluster: &str,
    ca_key: &KeyPair,
    cn: &str,
    names: &[&str],
    usage: ExtendedKeyUsagePurpose,
    at: u64,
) -> Result<(String, String)> {
    let err = |e: rcgen::Error| state_err(dir, format!("make the registry's certificates: {e}"));
    // rcgen signs with the issuer's name, key identifier method and key only: the CA made
    // again from the same parameters and key signs exactly as the stored one did.
    let issuer = ca_params(cluster, at).self_signed(ca_key).map_err(err)?;
    let mut p = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).map_err(err)?;
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.not_before = time_at(at.saturating_sub(3600));
    p.not_after = time_at(at + LEAF_LIFE);
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    p.extended_key_usages = vec![usage];
    p.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate().map_err(err)?;
    let cert = p.signed_by(&key, &issuer, ca_key).map_err(err)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// `node`'s own client pair, issued with the current certificates in `dir` if it has none
/// yet (its key written before its certificate), and the material with it.
pub fn issue_node(dir: &Path, cluster: &str, node: &str) -> Result<Material> {
    let mut m = load(dir)?.ok_or_else(|| state_err(dir, "lab has made no certificates for the registry yet"))?;
    if m.nodes.contains_key(node) {
        return Ok(m);
    }
    // Node names become file names here: lab's own names never hold these.
    if node.is_empty() || node.starts_with('.') || node.contains(['/', '\\', '\0']) {
        return Err(state_err(dir, format!("node name {node:?} cannot name a certificate file")));
    }
    let err = |e: rcgen::Error| state_err(dir, format!("make {node}'s client certificate: {e}"));
    let ca_key = KeyPair::from_pem(&m.ca_key).map_err(err)?;
    let cn = format!("lab {cluster} node {node}");
    let (cert, key) = leaf(dir, cluster, &ca_key, &cn, &[], ExtendedKeyUsagePurpose::ClientAuth, now())?;
    let set = nodes_dir(dir, &m);
    make_private_dir(&set)?;
    write_atomic(&set.join(format!("{node}.key")), key.as_bytes())?;
    write_atomic(&set.join(format!("{node}.crt")), cert.as_bytes())?;
    m.nodes.insert(node.to_string(), NodePair { cert, key });
    Ok(m)
}

pub(crate) fn ca_params(cluster: &str, at: u64) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, format!("lab {cluster} registry CA"));
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    p.not_before = time_at(at.saturating_sub(3600));
    p.not_after = time_at(at + CA_LIFE);
    p
}

/// `secs` since the Unix epoch as a UTC date, `YYYY-MM-DD`.
pub fn date(secs: u64) -> String {
    let (y, m, d) = time_at(secs).to_calendar_date();
    format!("{y:04}-{:02}-{d:02}", m as u8)
}

pub(crate) fn time_at(secs: u64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(secs as i64).unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

/// Why lab's TLS client configuration could not be made from the cluster's PEM files: which
/// part, what was wrong, and the parser's or rustls's error as the cause. Never the key's
/// bytes: for the key, only that it could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{part}: {detail}")]
pub struct ClientConfigError {
    /// The part at fault: `the cluster's CA certificate`, `the client certificate`, ...
    pub part: &'static str,
    /// What was wrong with it.
    pub detail: String,
    /// The error that said so, if it can be shown.
    #[source]
    pub source: Option<crate::error::BoxError>,
}

impl ClientConfigError {
    fn new<E: std::error::Error + Send + Sync + 'static>(part: &'static str, detail: String, e: E) -> Self {
        ClientConfigError { part, detail, source: Some(Box::new(e)) }
    }
}

/// The rustls configuration lab speaks to the registry with: it trusts only the cluster's CA
/// and presents the client pair. ring is the provider, as for the rest of the tree.
pub fn client_config(m: &Material) -> std::result::Result<Arc<rustls::ClientConfig>, ClientConfigError> {
    client_config_pem(&m.ca_cert, &m.client_cert, &m.client_key)
}

/// [`client_config`] from the PEM texts of the CA, the client certificate and its key.
pub fn client_config_pem(
    ca: &str,
    cert: &str,
    key: &str,
) -> std::result::Result<Arc<rustls::ClientConfig>, ClientConfigError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    const CA: &str = "the cluster's CA certificate";
    const CERT: &str = "the client certificate";
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca.as_bytes()) {
        let c = c.map_err(|e| ClientConfigError::new(CA, format!("{e:?}"), e))?;
        roots.add(c).map_err(|e| ClientConfigError::new(CA, e.to_string(), e))?;
    }
    let chain = CertificateDer::pem_slice_iter(cert.as_bytes())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| ClientConfigError::new(CERT, format!("{e:?}"), e))?;
    // Never the key's bytes in an error: only that it could not be read.
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(|_| ClientConfigError {
        part: "the client key",
        detail: "it could not be read".into(),
        source: None,
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientConfigError::new("TLS versions", e.to_string(), e))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| ClientConfigError::new(CERT, e.to_string(), e))?;
    Ok(Arc::new(cfg))
}

/// The registry's side of mutual TLS, as its configuration sets it up: `m`'s server
/// certificate, and a client certificate from `m`'s CA required. For tests that stand in for
/// the registry.
#[cfg(test)]
pub(crate) fn server_config(m: &Material) -> Arc<rustls::ServerConfig> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(m.ca_cert.as_bytes()).unwrap()).unwrap();
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build().unwrap();
    let chain = vec![CertificateDer::from_pem_slice(m.server_cert.as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(m.server_key().as_bytes()).unwrap();
    Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .unwrap(),
    )
}

#[cfg(test)]
mod tests {
    use crate::tls::dir;
    use std::os::unix::fs::PermissionsExt;

    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, ServerName};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// Issue 21, item 3: a configuration that cannot be made names the part at fault and keeps
    /// the parser's or rustls's error as the cause; a bad key says only that.
    #[test]
    fn a_bad_pem_names_the_part_and_keeps_the_cause() {
        let tmp = tempfile::tempdir().unwrap();
        let (m, _) = ensure(&dir(tmp.path()), "c1").unwrap();
        let garbled = "-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n";
        let e = client_config_pem(garbled, &m.client_cert, &m.client_key).unwrap_err();
        assert!(e.to_string().starts_with("the cluster's CA certificate: "), "{e}");
        assert!(std::error::Error::source(&e).is_some(), "{e:?}");
        let e =
            client_config_pem(&m.ca_cert, &m.client_cert, "-----BEGIN PRIVATE KEY-----\nSECRETBYTES\n").unwrap_err();
        assert_eq!(e.to_string(), "the client key: it could not be read");
        assert!(std::error::Error::source(&e).is_none() && !format!("{e:?}").contains("SECRETBYTES"), "{e:?}");
    }

    /// A TLS conversation in memory: the registry's side with `m`'s server certificate,
    /// requiring a client certificate from the CA; the client's with `client`, asking for
    /// `name`. Whether a byte made it through both ways.
    async fn talk(m: &Material, client: Arc<rustls::ClientConfig>, name: &str) -> std::result::Result<(), String> {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let acceptor = tokio_rustls::TlsAcceptor::from(server_config(m));
        let server = tokio::spawn(async move {
            let mut s = acceptor.accept(b).await.map_err(|e| e.to_string())?;
            let mut buf = [0u8; 1];
            s.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
            s.write_all(&buf).await.map_err(|e| e.to_string())?;
            s.flush().await.map_err(|e| e.to_string())
        });
        let connector = tokio_rustls::TlsConnector::from(client);
        let name = ServerName::try_from(name.to_string()).unwrap();
        let result = async {
            let mut c = connector.connect(name, a).await.map_err(|e| e.to_string())?;
            c.write_all(b"x").await.map_err(|e| e.to_string())?;
            c.flush().await.map_err(|e| e.to_string())?;
            let mut buf = [0u8; 1];
            c.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
            Ok::<_, String>(())
        }
        .await;
        let served = server.await.unwrap();
        result.and(served)
    }

    #[tokio::test]
    async fn the_registry_is_reached_by_every_local_name_and_only_with_the_client_certificate() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = dir(tmp.path());
        let (m, made) = ensure(&dir, "c1").unwrap();
        assert!(made);
        let client = client_config(&m).unwrap();
        for name in ["localhost", "127.0.0.1", "::1", "ip6-localhost", "localhost6", "registry"] {
            talk(&m, client.clone(), name).await.unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        // Not a name the certificate carries.
        assert!(talk(&m, client.clone(), "example.invalid").await.is_err());
        // A client with no certificate is refused by the registry's side.
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from_pem_slice(m.ca_cert.as_bytes()).unwrap()).unwrap();
        let anonymous = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let e = talk(&m, Arc::new(anonymous), "localhost").await.unwrap_err();
        assert!(e.to_lowercase().contains("certificate"), "{e}");
        // Another cluster's client certificate is refused too.
        let (other, _) = ensure(&tmp.path().join("other"), "c2").unwrap();
        assert!(talk(&m, client_config(&other).unwrap(), "localhost").await.is_err());
    }

    #[test]
    fn keys_are_private_and_kept_and_renewed_only_when_due() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = dir(tmp.path());
        ensure(&dir, "c1").unwrap();
        let m = issue_node(&dir, "c1", "worker1").unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        let set = dir.join("nodes").join(m.registry_fingerprint());
        for d in [&dir, &dir.join("nodes"), &set] {
            assert_eq!(mode(d), 0o700, "{}", d.display());
            for f in fs::read_dir(d).unwrap().map(|f| f.unwrap().path()).filter(|p| p.is_file()) {
                assert_eq!(mode(&f), 0o600, "{}", f.display());
            }
        }
        assert!(m.meta.leaf_not_after >= now() + LEAF_LIFE - 60 && m.meta.ca_not_after >= now() + CA_LIFE - 60);
        assert!(!m.due(now()));
        assert!(m.due(m.meta.leaf_not_after - RENEW_BEFORE + 1));
        // Kept: the same certificates again.
        let (again, made) = ensure(&dir, "c1").unwrap();
        assert!(!made);
        assert_eq!(again.registry_fingerprint(), m.registry_fingerprint());
        assert_eq!(again.node_fingerprint("worker1"), m.node_fingerprint("worker1"));
        // Due: new leaves from the same CA, so nodes trusting the CA keep trusting it.
        let mut meta = m.meta;
        meta.leaf_not_after = now() + 86_400;
        fs::write(dir.join("meta.json"), serde_json::to_vec(&meta).unwrap()).unwrap();
        let (renewed, made) = ensure(&dir, "c1").unwrap();
        assert!(made);
        assert_eq!(renewed.ca_cert, m.ca_cert);
        assert_ne!(renewed.server_cert, m.server_cert);
        assert_ne!(renewed.registry_fingerprint(), m.registry_fingerprint());
        // The nodes' pairs are issued again from the renewed set.
        assert!(renewed.nodes.is_empty() && load(&dir).unwrap().unwrap().nodes.is_empty());
        let renewed = issue_node(&dir, "c1", "worker1").unwrap();
        assert_ne!(renewed.node_fingerprint("worker1"), m.node_fingerprint("worker1"));
        assert!(!renewed.due(now()));
        // The old client certificate still works with the renewed registry (same CA).
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(talk(&renewed, client_config(&m).unwrap(), "localhost")).unwrap();
        // Nothing secret in Debug.
        let shown = format!("{renewed:?}");
        assert!(!shown.contains("PRIVATE KEY") && !shown.contains("BEGIN"), "{shown}");
    }

    #[test]
    fn a_nodes_certificates_are_read_back_from_its_archive() {
        let tmp = tempfile::tempdir().unwrap();
        ensure(&dir(tmp.path()), "c1").unwrap();
        let m = issue_node(&dir(tmp.path()), "c1", "worker1").unwrap();
        assert!(m.node_archive("worker2").is_none(), "no pair was issued to worker2");
        // The archive API answers for `.../docker/certs.d` with entries under `certs.d/`.
        let mut b = tar::Builder::new(Vec::new());
        let sent = m.node_archive("worker1").unwrap();
        let mut a = tar::Archive::new(&sent[..]);
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            let path = e.path().unwrap().display().to_string().replacen("docker/", "", 1);
            let mut h = e.header().clone();
            let mut body = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut body).unwrap();
            b.append_data(&mut h, path, &body[..]).unwrap();
        }
        let archive = b.into_inner().unwrap();
        assert_eq!(observed_node_fingerprint(&archive), m.node_fingerprint("worker1"));
        // The key is 0600 in the archive lab sends.
        let mut a = tar::Archive::new(&sent[..]);
        for e in a.entries().unwrap() {
            let e = e.unwrap();
            if e.path().unwrap().ends_with("client.key") {
                assert_eq!(e.header().mode().unwrap() & 0o777, 0o600);
            }
        }
        // Only one of the two directories: not lab's set.
        let mut b = tar::Builder::new(Vec::new());
        let mut a = tar::Archive::new(&archive[..]);
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            let path = e.path().unwrap().display().to_string();
            if path.contains("127.0.0.1") {
                continue;
            }
            let mut h = e.header().clone();
            let mut body = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut body).unwrap();
            b.append_data(&mut h, path, &body[..]).unwrap();
        }
        assert_eq!(observed_node_fingerprint(&b.into_inner().unwrap()), None);
    }

    /// Issue 18, item 11: each node has a key and certificate of its own, and lab has its own;
    /// all of them reach the registry. A new CA ([`renew_ca`]) carries none of the nodes'
    /// pairs over, and the registry deployed with it refuses every key issued before.
    #[tokio::test]
    async fn each_node_has_its_own_key_and_a_new_ca_refuses_the_old_ones() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = dir(tmp.path());
        ensure(&dir, "c1").unwrap();
        for n in ["manager", "worker1", "worker2"] {
            issue_node(&dir, "c1", n).unwrap();
        }
        let m = load(&dir).unwrap().unwrap();
        let mut keys: Vec<&str> = m.nodes.values().map(|p| p.key.as_str()).collect();
        keys.push(&m.client_key);
        let mut certs: Vec<&str> = m.nodes.values().map(|p| p.cert.as_str()).collect();
        certs.push(&m.client_cert);
        for list in [&mut keys, &mut certs] {
            assert_eq!(list.len(), 4);
            list.sort_unstable();
            list.dedup();
            assert_eq!(list.len(), 4, "two share a key or certificate");
        }
        // Issuing again hands out the same pair.
        let again = issue_node(&dir, "c1", "worker1").unwrap();
        assert_eq!(again.node_fingerprint("worker1"), m.node_fingerprint("worker1"));
        let node_client = |m: &Material, n: &str| {
            let p = &m.nodes[n];
            client_config_pem(&m.ca_cert, &p.cert, &p.key).unwrap()
        };
        for n in ["manager", "worker1", "worker2"] {
            talk(&m, node_client(&m, n), "localhost").await.unwrap_or_else(|e| panic!("{n}: {e}"));
        }
        talk(&m, client_config(&m).unwrap(), "localhost").await.unwrap();
        // worker2 leaves: a new CA, the others issued again from it.
        let renewed = renew_ca(&dir, "c1").unwrap();
        assert_ne!(renewed.ca_cert, m.ca_cert);
        assert!(load(&dir).unwrap().unwrap().nodes.is_empty(), "a pair survived the new CA");
        assert!(!dir.join("nodes").join(m.registry_fingerprint()).exists(), "the old pairs were kept");
        let renewed = issue_node(&dir, "c1", "worker1").unwrap();
        assert_ne!(renewed.node_fingerprint("worker1"), m.node_fingerprint("worker1"));
        talk(&renewed, node_client(&renewed, "worker1"), "localhost").await.unwrap();
        talk(&renewed, client_config(&renewed).unwrap(), "localhost").await.unwrap();
        // The departed node's pair, and every other old one, is refused.
        for n in ["worker2", "worker1"] {
            let old = client_config_pem(&renewed.ca_cert, &m.nodes[n].cert, &m.nodes[n].key).unwrap();
            assert!(talk(&renewed, old, "localhost").await.is_err(), "{n}'s old key still works");
        }
        // A name that cannot be a file name is refused.
        assert!(issue_node(&dir, "c1", "../x").is_err());
    }
}
