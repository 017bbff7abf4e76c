//! The relay that lets a node's own dockerd use a mutual-TLS registry at `localhost:5000`.
//!
//! dockerd counts every loopback registry as insecure and never presents a client certificate
//! to one (it reads `/etc/docker/certs.d` only for registries it counts as secure; moby issue
//! 31326). So with `tls = "mutual"` the registry publishes TLS on [`crate::registry::TLS_PORT`]
//! and every node runs this relay, in a container whose port 5000 is published on the node's
//! loopback only: dockerd speaks plain HTTP to `localhost:5000`, and the relay speaks TLS to
//! the registry, presenting the node's client certificate (the files in the node's
//! `/etc/docker/certs.d/localhost:5000/`, which it reads at each connection, so a renewal
//! needs no new relay). No other machine reaches the plain side.
//!
//! The relay is lab itself (`lab relay`, not in `--help`): no image of its own to pull, and
//! the same code as `lab push`'s TLS. [`Program`] packs the running `lab` executable, with
//! the dynamic loader and libraries it runs with, into a tar archive that goes into the relay
//! container through the engine's archive API; the loader is called by its path in the
//! archive, so the container's own libc (musl in the official registry image) plays no part.
//! It runs where lab runs: a Linux workstation of the nodes' architecture.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls_pki_types::ServerName;
use tokio::net::{TcpListener, TcpStream};

use crate::wait::{Look, Wait};

/// Where the relay container sees the node's `/etc/docker/certs.d/localhost:5000/`.
pub const CERTS_MOUNT: &str = "/lab/certs";
/// Where the archive puts lab and its libraries in the relay container.
pub(crate) const BIN: &str = "lab/bin/lab";
pub(crate) const LIB: &str = "lab/lib";

/// How the relay container runs lab: the archive to put at `/` and the entrypoint.
#[derive(Clone)]
pub struct Program {
    /// A tar archive of `lab/bin/lab` and `lab/lib/*`.
    pub archive: bytes::Bytes,
    /// The command, up to the `relay` subcommand's own arguments.
    pub entrypoint: Vec<String>,
}

/// The running `lab`, packed once per process.
pub fn program() -> Result<Program, String> {
    static PACKED: OnceLock<Result<Program, String>> = OnceLock::new();
    PACKED.get_or_init(pack).clone()
}

/// Whether the relay can run on a node whose engine reports `os` and `architecture`
/// (`docker info`): lab must be a Linux program of the same architecture. `Err` says why not.
pub fn runs_on(os: &str, architecture: &str) -> Result<(), String> {
    let ours = (std::env::consts::OS, std::env::consts::ARCH);
    let theirs = (os, normal_arch(architecture));
    if ours == ("linux", theirs.1) && theirs.0 == "linux" {
        Ok(())
    } else {
        Err(format!(
            "lab runs as the node's relay to the mutual-TLS registry, and this lab is a {}/{} program while the \
             node is {os}/{architecture}",
            ours.0, ours.1
        ))
    }
}

/// Docker's architecture names as Rust's `std::env::consts::ARCH` spells them.
pub(crate) fn normal_arch(a: &str) -> &str {
    match a {
        "amd64" => "x86_64",
        "arm64" => "aarch64",
        other => other,
    }
}

pub(crate) fn pack() -> Result<Program, String> {
    // The running program itself, through /proc: what runs here, even if its file was
    // replaced since (lab upgraded or rebuilt while `up` runs).
    let bytes = std::fs::read("/proc/self/exe").or_else(|_| {
        let exe = std::env::current_exe().map_err(|e| format!("find lab's own executable: {e}"))?;
        std::fs::read(&exe).map_err(|e| format!("read {}: {e}", exe.display()))
    })?;
    let interp = interpreter(&bytes);
    let mut tar = tar::Builder::new(Vec::new());
    let mut add = |path: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o755);
        h.set_uid(0);
        h.set_gid(0);
        h.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut h, path, data).map_err(|e| format!("pack {path}: {e}"))
    };
    add(BIN, &bytes)?;
    let mut entrypoint = Vec::new();
    if let Some(interp) = interp {
        let mut libs = loaded_libraries();
        if !libs.iter().any(|l| l.file_name() == Path::new(&interp).file_name()) {
            libs.push(PathBuf::from(&interp));
        }
        let mut links = Vec::new();
        for lib in &libs {
            let name = lib.file_name().and_then(|n| n.to_str()).ok_or_else(|| format!("{}: no name", lib.display()))?;
            let data = std::fs::read(lib).map_err(|e| format!("read {}: {e}", lib.display()))?;
            add(&format!("{LIB}/{name}"), &data)?;
            links.extend(aliases(lib).into_iter().map(|a| (a, name.to_string())));
        }
        for (alias, name) in links {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            h.set_mode(0o777);
            tar.append_link(&mut h, format!("{LIB}/{alias}"), &name).map_err(|e| format!("pack {alias}: {e}"))?;
        }
        let loader = Path::new(&interp).file_name().and_then(|n| n.to_str()).unwrap_or_default();
        entrypoint.extend([format!("/{LIB}/{loader}"), "--library-path".into(), format!("/{LIB}")]);
    }
    entrypoint.extend([format!("/{BIN}"), "relay".into()]);
    let archive = tar.into_inner().map_err(|e| format!("pack lab: {e}"))?;
    Ok(Program { archive: archive.into(), entrypoint })
}

/// The ELF program interpreter (`PT_INTERP`) of a 64-bit little-endian executable, if it
/// names one: `None` for a static executable.
pub(crate) fn interpreter(elf: &[u8]) -> Option<String> {
    if elf.get(..4)? != b"\x7fELF" || elf.get(4)? != &2 || elf.get(5)? != &1 {
        return None;
    }
    let u16_at = |o: usize| elf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]) as usize);
    let u64_at = |o: usize| elf.get(o..o + 8).map(|b| u64::from_le_bytes(b.try_into().unwrap()) as usize);
    let (phoff, phentsize, phnum) = (u64_at(0x20)?, u16_at(0x36)?, u16_at(0x38)?);
    (0..phnum).find_map(|i| {
        let ph = phoff + i * phentsize;
        let kind = u32::from_le_bytes(elf.get(ph..ph + 4)?.try_into().ok()?);
        if kind != 3 {
            return None;
        }
        let (off, size) = (u64_at(ph + 8)?, u64_at(ph + 32)?);
        let raw = elf.get(off..off + size)?;
        Some(String::from_utf8_lossy(raw.split(|&b| b == 0).next()?).into_owned())
    })
}

/// The other names of a library in its directory (`libz.so.1` for `libz.so.1.2.13`): the
/// map names the file, the loader looks for the name the executable was linked against.
pub(crate) fn aliases(lib: &Path) -> Vec<String> {
    let (Some(dir), Some(name)) = (lib.parent(), lib.file_name().and_then(|n| n.to_str())) else { return Vec::new() };
    let stem = match name.find(".so") {
        Some(i) => &name[..i + 3],
        None => return Vec::new(),
    };
    let real = std::fs::canonicalize(lib).ok();
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|e| e.starts_with(stem) && e != name)
        .filter(|e| real.is_some() && std::fs::canonicalize(dir.join(e)).ok() == real)
        .collect()
}

/// The shared libraries this process has mapped (`/proc/self/maps`), the loader among them.
pub(crate) fn loaded_libraries() -> Vec<PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let mut out: Vec<PathBuf> = Vec::new();
    for path in maps.lines().filter_map(|l| l.split_whitespace().nth(5)) {
        let p = PathBuf::from(path);
        let is_lib = p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.contains(".so"));
        if path.starts_with('/') && is_lib && !out.contains(&p) {
            out.push(p);
        }
    }
    out
}

/// `lab relay`: takes plain connections on each of `listen` and relays each to the registry
/// at `target` in TLS, presenting the client certificate in `certs` (`ca.crt`, `client.cert`,
/// `client.key`, read at each connection). An address still in use (a registry deployed
/// before in open mode lets go of port 5000 a few seconds after it changed) is tried again
/// for [`PORT_WAIT`]; an IPv6 one the node does not have is done without. Runs until killed;
/// what goes wrong with one connection goes to stderr (the container's log) and ends that
/// connection only.
pub async fn serve(listen: Vec<SocketAddr>, target: String, certs: PathBuf) -> std::io::Result<()> {
    let mut listeners = Vec::new();
    for addr in listen {
        match bind_when_free(addr).await {
            Ok(l) => listeners.push(l),
            Err(e) if addr.is_ipv6() && e.kind() != std::io::ErrorKind::AddrInUse => {
                eprintln!("lab relay: not listening on {addr}: {e}");
            }
            Err(e) => return Err(std::io::Error::new(e.kind(), format!("listen on {addr}: {e}"))),
        }
    }
    if listeners.is_empty() {
        return Err(std::io::Error::other("no address to listen on"));
    }
    let mut loops = tokio::task::JoinSet::new();
    for listener in listeners {
        let (target, certs) = (target.clone(), certs.clone());
        let addr = listener.local_addr()?;
        eprintln!("lab relay: {addr} to {target}, in TLS with the certificates in {}", certs.display());
        loops.spawn(async move {
            loop {
                let (inbound, peer) = listener.accept().await?;
                let (target, certs) = (target.clone(), certs.clone());
                tokio::spawn(async move {
                    if let Err(why) = relay_one(inbound, &target, &certs).await {
                        eprintln!("lab relay: a connection from {peer}: {why}");
                    }
                });
            }
            #[allow(unreachable_code)]
            Ok::<(), std::io::Error>(())
        });
    }
    // PID 1 of its container: a signal's default action does not apply there, so SIGTERM
    // (docker stop, the node's dockerd shutting down) must end it here, or every stop waits
    // for the engine's timeout and a kill.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    tokio::select! {
        ended = loops.join_next() => match ended {
            Some(Ok(r)) => r,
            Some(Err(e)) => Err(std::io::Error::other(e.to_string())),
            None => Ok(()),
        },
        _ = term.recv() => Ok(()),
        _ = int.recv() => Ok(()),
    }
}

/// How long the relay waits for a port in use.
pub const PORT_WAIT: std::time::Duration = std::time::Duration::from_secs(45);

pub(crate) async fn bind_when_free(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let waited = Wait::new(addr.to_string(), "the address to be free", PORT_WAIT)
        .every(std::time::Duration::from_secs(1))
        .poll(|| async {
            match TcpListener::bind(addr).await {
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Look::NotYet(Box::new(e)),
                other => Look::Done(other),
            }
        })
        .await;
    // Still in use at the end: that error, as binding says it.
    match waited {
        Ok(bound) => bound,
        Err(crate::error::Error::Timeout { source: Some(last), .. }) => {
            Err(last.downcast::<std::io::Error>().map(|e| *e).unwrap_or_else(std::io::Error::other))
        }
        Err(e) => Err(std::io::Error::other(e)),
    }
}

pub(crate) async fn relay_one(mut inbound: TcpStream, target: &str, certs: &Path) -> Result<(), String> {
    let read = |name: &str| {
        let p = certs.join(name);
        std::fs::read_to_string(&p).map_err(|e| format!("read {}: {e}", p.display()))
    };
    let config: Arc<rustls::ClientConfig> =
        crate::tls::client_config_pem(&read("ca.crt")?, &read("client.cert")?, &read("client.key")?)
            .map_err(|e| e.to_string())?;
    let tcp = TcpStream::connect(target).await.map_err(|e| format!("connect to the registry at {target}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let _ = inbound.set_nodelay(true);
    let name = ServerName::try_from(crate::tls::SERVER_NAME).map_err(|e| e.to_string())?;
    let mut tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS with the registry at {target}: {e}"))?;
    tokio::io::copy_bidirectional(&mut inbound, &mut tls).await.map(|_| ()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lab_is_packed_with_the_loader_it_runs_with() {
        let p = program().unwrap();
        let mut names: Vec<String> = tar::Archive::new(&p.archive[..])
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        names.sort();
        assert!(names.contains(&BIN.to_string()), "{names:?}");
        let exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        match interpreter(&exe) {
            Some(interp) => {
                let loader = Path::new(&interp).file_name().unwrap().to_str().unwrap().to_string();
                assert_eq!(p.entrypoint[0], format!("/{LIB}/{loader}"));
                assert!(names.contains(&format!("{LIB}/{loader}")), "{names:?}");
                assert!(names.iter().any(|n| n.starts_with(&format!("{LIB}/libc.so"))), "{names:?}");
            }
            None => assert_eq!(p.entrypoint[0], format!("/{BIN}")),
        }
        assert_eq!(p.entrypoint.last().unwrap(), "relay");
    }

    /// The packed program runs with nothing but the archive: unpacked into an empty root and
    /// started there with its entrypoint (this test binary stands for lab; `--list` is a
    /// harmless run of it). Needs root for chroot; elsewhere it says so and checks nothing.
    #[test]
    fn the_packed_program_runs_in_an_empty_root() {
        let p = program().unwrap();
        let root = tempfile::tempdir().unwrap();
        tar::Archive::new(&p.archive[..]).unpack(root.path()).unwrap();
        let mut argv = p.entrypoint.clone();
        argv.pop(); // `relay` is lab's subcommand, not the test harness's
        argv.push("--list".into());
        let out = std::process::Command::new("chroot").arg(root.path()).args(&argv).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() && err.contains("Operation not permitted") {
            eprintln!("not root: the packed program was not run ({err})");
            return;
        }
        assert!(out.status.success(), "{argv:?} in an empty root: {err}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("the_packed_program_runs_in_an_empty_root"));
    }

    #[test]
    fn the_relay_runs_only_where_lab_could() {
        let arch = std::env::consts::ARCH;
        assert!(runs_on("linux", arch).is_ok() == cfg!(target_os = "linux"));
        let other = if arch == "x86_64" { "aarch64" } else { "x86_64" };
        let e = runs_on("linux", other).unwrap_err();
        assert!(e.contains(&format!("node is linux/{other}")), "{e}");
        assert!(runs_on("windows", arch).is_err());
        assert_eq!(normal_arch("amd64"), "x86_64");
    }
}
