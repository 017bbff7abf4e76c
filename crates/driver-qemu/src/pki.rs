//! The cluster's keys, made once with the host's `ssh-keygen` and `openssl` (argv, no shell):
//!
//! - `ssh/id_ed25519`: lab's SSH key, authorised on every VM;
//! - per node, the VM's SSH host key, installed before its first boot, so `ssh/known_hosts`
//!   holds exactly the keys lab made and nothing is trusted on first use;
//! - `ca/`: the cluster's CA and dockerd's server certificate (for `127.0.0.1`, the only
//!   address the engines are reached at); `certs/`: the client certificate with the CA, laid
//!   out for `DOCKER_CERT_PATH`.
//!
//! Each set is made in a temporary directory and renamed into place, so an interrupted run
//! leaves either nothing or the whole set.

use std::path::{Path, PathBuf};
use std::time::Duration;

use lab_core::state::make_private_dir;
use lab_core::{Error, Result};

use crate::host::{run, OPENSSL, SSH_KEYGEN};

const SLOW: Duration = Duration::from_secs(60);

/// The cluster-wide key material, under `<state>/qemu`.
#[derive(Debug, Clone)]
pub struct Pki {
    root: PathBuf,
}

impl Pki {
    /// The key material under `root`.
    pub fn new(root: &Path) -> Self {
        Pki { root: root.to_path_buf() }
    }

    /// lab's SSH private key.
    pub fn ssh_key(&self) -> PathBuf {
        self.root.join("ssh/id_ed25519")
    }
    /// The known-hosts file with every VM's host key.
    pub fn known_hosts(&self) -> PathBuf {
        self.root.join("ssh/known_hosts")
    }
    /// `DOCKER_CERT_PATH`: `ca.pem`, `cert.pem`, `key.pem`.
    pub fn client_certs(&self) -> PathBuf {
        self.root.join("certs")
    }
    /// The CA's certificate.
    pub fn ca(&self) -> PathBuf {
        self.root.join("ca/ca.pem")
    }
    /// dockerd's certificate.
    pub fn server_cert(&self) -> PathBuf {
        self.root.join("ca/server.pem")
    }
    /// dockerd's key.
    pub fn server_key(&self) -> PathBuf {
        self.root.join("ca/server-key.pem")
    }

    /// Makes what is missing.
    pub async fn ensure(&self, cluster: &str) -> Result<()> {
        make_private_dir(&self.root)?;
        if !self.ssh_key().with_extension("pub").is_file() {
            let tmp = self.fresh_dir("ssh")?;
            ssh_keygen(&tmp.join("id_ed25519"), &format!("lab-{cluster}")).await?;
            std::fs::write(tmp.join("known_hosts"), "").map_err(|e| ioe(tmp.join("known_hosts"), e))?;
            self.place(&tmp, "ssh")?;
        }
        if !self.server_cert().is_file() || !self.client_certs().join("cert.pem").is_file() {
            let tmp = self.fresh_dir("pki")?;
            let ca = tmp.join("ca");
            let certs = tmp.join("certs");
            make_private_dir(&ca)?;
            make_private_dir(&certs)?;
            make_ca(&ca, cluster).await?;
            sign(&ca, &ca.join("server"), &format!("lab-{cluster}-engines"), SERVER_EXT).await?;
            sign(&ca, &certs.join("client"), &format!("lab-{cluster}-client"), CLIENT_EXT).await?;
            for (from, to) in [
                (certs.join("client.pem"), certs.join("cert.pem")),
                (certs.join("client-key.pem"), certs.join("key.pem")),
            ] {
                std::fs::rename(&from, &to).map_err(|e| ioe(&to, e))?;
            }
            std::fs::copy(ca.join("ca.pem"), certs.join("ca.pem")).map_err(|e| ioe(certs.join("ca.pem"), e))?;
            // Both or neither: the client certificate only works with this CA.
            let _ = std::fs::remove_dir_all(self.root.join("certs"));
            self.place(&ca, "ca")?;
            self.place(&certs, "certs")?;
            let _ = std::fs::remove_dir_all(&tmp);
        }
        Ok(())
    }

    fn fresh_dir(&self, what: &str) -> Result<PathBuf> {
        let tmp = self.root.join(format!(".{what}.tmp"));
        let _ = std::fs::remove_dir_all(&tmp);
        make_private_dir(&tmp)?;
        Ok(tmp)
    }

    fn place(&self, from: &Path, name: &str) -> Result<()> {
        let to = self.root.join(name);
        let _ = std::fs::remove_dir_all(&to);
        std::fs::rename(from, &to).map_err(|e| ioe(&to, e))
    }
}

const SERVER_EXT: &str = "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
                          extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n";
const CLIENT_EXT: &str =
    "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n";

/// Makes an ed25519 key pair at `path` and `path.pub`, with no passphrase.
pub async fn ssh_keygen(path: &Path, comment: &str) -> Result<()> {
    let p = path.to_string_lossy().into_owned();
    let out = run(SSH_KEYGEN, &["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", &p], SLOW).await?;
    if !out.ok() {
        return Err(Error::op(format!("make the SSH key {p} with ssh-keygen"), out.message()));
    }
    Ok(())
}

async fn openssl(args: &[String], what: &str) -> Result<()> {
    let out = run(OPENSSL, args, SLOW).await?;
    if !out.ok() {
        return Err(Error::op(format!("make {what} with openssl"), out.message()));
    }
    Ok(())
}

/// A file lab could not write or move.
pub fn ioe(path: impl AsRef<Path>, e: std::io::Error) -> Error {
    crate::error::io(format!("write {}", path.as_ref().display()), e).into()
}

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

async fn make_ca(dir: &Path, cluster: &str) -> Result<()> {
    let args: Vec<String> = [
        "req",
        "-x509",
        "-new",
        "-nodes",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-sha256",
        "-days",
        "3650",
        "-subj",
    ]
    .iter()
    .map(|a| a.to_string())
    .chain([
        format!("/O=lab/CN=lab-{cluster}-ca"),
        "-keyout".into(),
        s(&dir.join("ca-key.pem")),
        "-out".into(),
        s(&dir.join("ca.pem")),
        "-addext".into(),
        "basicConstraints=critical,CA:TRUE".into(),
        "-addext".into(),
        "keyUsage=critical,keyCertSign,cRLSign".into(),
    ])
    .collect();
    openssl(&args, "the cluster's CA").await
}

/// Makes `<base>-key.pem` and `<base>.pem`, signed by the CA in `ca`.
async fn sign(ca: &Path, base: &Path, cn: &str, ext: &str) -> Result<()> {
    let key = base.with_file_name(format!("{}-key.pem", base.file_name().unwrap_or_default().to_string_lossy()));
    let csr = base.with_extension("csr");
    let cert = base.with_extension("pem");
    let extfile = base.with_extension("ext");
    std::fs::write(&extfile, ext).map_err(|e| ioe(&extfile, e))?;
    let req: Vec<String> =
        ["req", "-new", "-nodes", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-subj"]
            .iter()
            .map(|a| a.to_string())
            .chain([format!("/O=lab/CN={cn}"), "-keyout".into(), s(&key), "-out".into(), s(&csr)])
            .collect();
    openssl(&req, &format!("the key for {cn}")).await?;
    let x509: Vec<String> = vec![
        "x509".into(),
        "-req".into(),
        "-in".into(),
        s(&csr),
        "-CA".into(),
        s(&ca.join("ca.pem")),
        "-CAkey".into(),
        s(&ca.join("ca-key.pem")),
        "-CAcreateserial".into(),
        "-days".into(),
        "3650".into(),
        "-sha256".into(),
        "-extfile".into(),
        s(&extfile),
        "-out".into(),
        s(&cert),
    ];
    openssl(&x509, &format!("the certificate for {cn}")).await?;
    let _ = std::fs::remove_file(&csr);
    let _ = std::fs::remove_file(&extfile);
    Ok(())
}
