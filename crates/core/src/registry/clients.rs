//! The way into the registry for clients other than lab and the nodes' engines (skopeo,
//! crane, oras, curl), which `lab registry` prints.
//!
//! In open mode the way in is the registry node's address, port 5000 (published in host mode
//! on that node in fallback mode, on every node through the mesh). In mutual TLS it is port
//! 5443 at that address, with the cluster's CA and lab's client certificate; the server
//! certificate names `localhost` and no node address ([`crate::tls::SERVER_NAMES`] says why),
//! so a client must connect to the address while checking the name `localhost`: curl's and
//! oras's `--resolve localhost:5443:ADDR`. Clients that have no such flag (skopeo, crane, Go's
//! `net/http`) use `lab registry forward` ([`crate::images::distribution::forward`]): a
//! listener on this machine's loopback that relays each connection, bytes untouched, to the
//! registry through its node's engine, so `localhost:PORT` is the registry and TLS runs end to
//! end between the client and the registry.
//!
//! Putting the nodes' addresses in the server certificate was weighed: a node made again can
//! get a new address, which would then need a new certificate and a redeployed registry, and
//! the address a client on this machine uses is not always the one the swarm knows.
//!
//! Neighbours: it finds the registry's node through [`crate::registry::endpoint`] and its
//! address through [`crate::cluster`]; the certificate files are [`crate::tls`]'s.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::cluster::Nodes;
use crate::error::{Error, Result};
use crate::registry::{bracket, observe, PORT, TLS_PORT};

/// The directory, inside the cluster's `tls/`, that holds the client's files alone.
pub const CLIENT_DIR: &str = "client";
/// The files in it: the CA, lab's client certificate and its key, named as Docker's
/// `certs.d` and containers-image's `--cert-dir` (skopeo, podman) want them.
pub const CLIENT_FILES: [&str; 3] = ["ca.crt", "client.cert", "client.key"];

/// How a client reaches the registry.
#[derive(Debug, Clone, Serialize)]
pub struct WayIn {
    /// The registry's node.
    pub node: String,
    /// `open` or `mutual`.
    pub tls: &'static str,
    /// The URL a client uses: `http://ADDR:5000`, or in mutual TLS `https://localhost:5443`
    /// (reached at [`WayIn::address`]).
    pub url: String,
    /// Where the registry listens: the node's address and the port (`ADDR:5000`, `ADDR:5443`).
    pub address: String,
    /// In mutual TLS, the files a client presents and trusts.
    pub files: Option<ClientFiles>,
}

/// The files of a mutual-TLS client.
#[derive(Debug, Clone, Serialize)]
pub struct ClientFiles {
    /// The cluster's CA, which signed the registry's certificate.
    pub ca: PathBuf,
    /// lab's client certificate.
    pub cert: PathBuf,
    /// Its private key (0600; never printed, only its path).
    pub key: PathBuf,
    /// A directory with these three files alone (links to them), for `--cert-dir`.
    pub cert_dir: PathBuf,
}

/// Where the registry is for other clients, read from the running cluster. In mutual TLS it
/// also makes [`CLIENT_DIR`] (links, so a renewal needs nothing more).
pub async fn way_in(rt: &dyn Nodes) -> Result<WayIn> {
    let at = crate::registry::endpoint(rt).await?;
    let (_, mgr) = rt.manager().await?;
    let mutual = observe(&mgr).await.and_then(|r| r.tls).is_some();
    let addr = rt.engine(&at.node).await?.advertise_addr;
    let host = bracket(&addr);
    if !mutual {
        return Ok(WayIn {
            node: at.node,
            tls: "open",
            url: format!("http://{host}:{PORT}"),
            address: format!("{host}:{PORT}"),
            files: None,
        });
    }
    let dir = crate::tls::dir(&rt.cluster_dir());
    let files = client_files(&dir).map_err(|e| Error::io(&at.node, "link the client's certificate files", e))?;
    Ok(WayIn {
        node: at.node,
        tls: "mutual",
        url: format!("https://{}:{TLS_PORT}", crate::tls::SERVER_NAME),
        address: format!("{host}:{TLS_PORT}"),
        files: Some(files),
    })
}

/// Makes `tls/client/` hold links to the CA and the client pair (the `tls/` directory also
/// holds the CA's and the server's keys, which a `--cert-dir` reader would take for a client
/// pair missing its certificate).
fn client_files(tls: &Path) -> std::io::Result<ClientFiles> {
    let dir = tls.join(CLIENT_DIR);
    std::fs::create_dir_all(&dir)?;
    for name in CLIENT_FILES {
        let link = dir.join(name);
        let target = Path::new("..").join(name);
        if std::fs::read_link(&link).ok().as_deref() != Some(target.as_path()) {
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(&target, &link)?;
        }
    }
    let [ca, cert, key] = CLIENT_FILES.map(|n| tls.join(n));
    Ok(ClientFiles { ca, cert, key, cert_dir: dir })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_directory_links_the_three_files_alone() {
        let tls = tempfile::tempdir().unwrap();
        for name in ["ca.crt", "ca.key", "server.crt", "server.key", "client.cert", "client.key"] {
            std::fs::write(tls.path().join(name), name).unwrap();
        }
        let f = client_files(tls.path()).unwrap();
        // Twice: the second run finds the links in place.
        let f2 = client_files(tls.path()).unwrap();
        assert_eq!(f.cert_dir, f2.cert_dir);
        let mut names: Vec<String> =
            std::fs::read_dir(&f.cert_dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        assert_eq!(names, ["ca.crt", "client.cert", "client.key"]);
        assert_eq!(std::fs::read_to_string(f.cert_dir.join("client.key")).unwrap(), "client.key");
        assert_eq!(f.key, tls.path().join("client.key"));
    }
}
