//! The registry's mutual TLS (`[registry] tls = "mutual"`): the cluster's own certificate
//! authority, the registry's server certificate and the client certificates, made in Rust
//! with rcgen and ring ([`pki`]) and kept in the cluster's state directory, and put on the
//! nodes' engines ([`install`]).
//!
//! The nodes' own dockerd does not present a client certificate: Docker reads
//! `/etc/docker/certs.d` only for registries it counts as secure, and never counts a loopback
//! one as secure ([`ENGINE_HINT`]). So in this mode each node's `localhost:5000` is lab's
//! relay ([`crate::registry::relay`]), which presents the node's client certificate to the
//! registry's TLS port.
//!
//! Files, in `<cluster dir>/tls/` (0700; every file 0600, written atomically by
//! [`crate::state::write_atomic`]): `ca.crt` and `ca.key` (the CA, ten years), `server.crt`
//! and `server.key` (the registry's), `client.cert` and `client.key` (lab's own),
//! `nodes/<set>/<node>.crt` and `.key` (each node's own pair, `<set>` naming the CA and
//! server certificate they were issued with), and `meta.json` (when the leaf certificates
//! expire; no secret). Keys are never printed, never logged, and never in a span:
//! [`Material`]'s `Debug` shows fingerprints only.
//!
//! The leaf certificates are renewed (the CA stays) when less than [`RENEW_BEFORE`] of their
//! life is left; the registry's secrets are named by the certificates' fingerprint, so a
//! renewal shows as a registry that does not match and is redeployed. When a node that holds
//! a pair of the current set leaves the cluster, or on `lab up --renew-certs`, the CA itself
//! is made anew ([`renew_ca`]): distribution reads no revocation list, so that is what makes
//! the departed node's key worthless.
//!
//! Neighbours: it uses only [`crate::cluster`] (probe labels) and [`crate::state`]; the
//! registry ([`crate::registry::tls`]) and the images client build on it.

use std::path::{Path, PathBuf};

pub mod install;
pub mod pki;

pub use install::{engine_refused, install_node, observe_node, remove_node, ENGINE_HINT};
pub use pki::{
    client_config, client_config_pem, date, ensure, issue_node, load, node_fingerprint, renew_ca, Material, NodePair,
};

/// How long the CA is valid.
pub const CA_LIFE: u64 = 10 * 365 * 86_400;
/// How long the server and client certificates are valid.
pub const LEAF_LIFE: u64 = 365 * 86_400;
/// `lab up` renews the leaf certificates when less than this is left.
pub const RENEW_BEFORE: u64 = 30 * 86_400;

/// The names and addresses the registry's certificate is valid for: every way a node, a task
/// or lab reaches it (`localhost` and its IPv6 names, the loopbacks, and the stack's service
/// names on its overlay network). Nodes' relays check it as `localhost` ([`SERVER_NAME`]),
/// whatever address they dial, so no node address is in it and a node made again with a new
/// address needs no new certificate.
pub const SERVER_NAMES: &[&str] =
    &["localhost", "127.0.0.1", "::1", "ip6-localhost", "localhost6", "registry", "registry_registry"];

/// The name lab checks the registry's certificate against.
pub const SERVER_NAME: &str = "localhost";

/// Where a node's engine looks for the registry's certificates: Docker presents the client
/// pair it finds there and trusts the CA.
pub const CERTS_DIRS: [&str; 2] = ["localhost:5000", "127.0.0.1:5000"];

/// The cluster's TLS directory.
pub fn dir(cluster_dir: &Path) -> PathBuf {
    cluster_dir.join("tls")
}
