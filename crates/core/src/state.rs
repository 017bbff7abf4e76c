//! Per-cluster state on disk: what `up` decided and finished.
//!
//! Layout: `$XDG_STATE_HOME/lab/clusters/<cluster>/state.json` (or `~/.local/state/lab/...`),
//! and the cluster's lock at `$XDG_STATE_HOME/lab/locks/<cluster>.lock` while a command holds
//! it, outside the directory it guards so that `down` can remove that directory while it holds
//! the lock.
//! Directories are 0700 and files 0600; every write goes to a temporary file in the same
//! directory, is synced and renamed over the old one, so a crash leaves either the old or the
//! new state, never half of one.
//!
//! No secret is kept here. Join tokens are read from a manager when a node joins (so a
//! `docker swarm join-token --rotate` never breaks lab), and the registry's HTTP secret is a
//! swarm secret that only the registry's task can read. [`Secret`] still wraps any secret
//! value lab handles in memory, so that `Debug` and every log line print `<redacted>`.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::topology::{Availability, ClusterName, Role};

/// A string that must not reach logs or output: `Debug` and `Display` print `<redacted>`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    /// A new random secret: 32 bytes from the OS, hex-encoded.
    pub fn random() -> Result<Self> {
        let mut buf = [0u8; 32];
        getrandom::getrandom(&mut buf).map_err(|e| Error::op_caused("generate registry secret", e))?;
        Ok(Secret(buf.iter().map(|b| format!("{b:02x}")).collect()))
    }
    /// The value, for the one place that must send it (an API call).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// How the registry is reached at `localhost:5000` on every node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RegistryMode {
    /// Published through the swarm's ingress routing mesh (needs IPVS in the nodes' kernels).
    Mesh,
    /// Published on the registry's node only (`mode: host`), with a forwarder container on
    /// every other node: needs no IPVS.
    Fallback,
}

impl fmt::Display for RegistryMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RegistryMode::Mesh => "mesh",
            RegistryMode::Fallback => "fallback",
        })
    }
}

/// Who may talk to the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RegistryTls {
    /// Plain HTTP: anyone who reaches a node's port 5000 may pull and push (the seed's way).
    #[default]
    Open,
    /// TLS, and only clients presenting a certificate from the cluster's CA are served (lab,
    /// and curl with the files lab puts on every node; not the nodes' own dockerd, which never
    /// presents one to a loopback registry).
    Mutual,
}

impl fmt::Display for RegistryTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RegistryTls::Open => "open",
            RegistryTls::Mutual => "mutual",
        })
    }
}

/// The swarm lab made for the cluster, as recorded after `init`. No join token: those are
/// read from a manager each time a node joins.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SwarmRecord {
    /// The swarm's cluster ID.
    pub id: String,
    /// `address:2377` of the manager that initialised it.
    pub manager_addr: String,
}

/// One node as recorded.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NodeRecord {
    /// Its role.
    pub role: Role,
    /// Its advertise address, once known.
    pub address: Option<String>,
}

/// A finished step, recorded as it finished.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StepRecord {
    /// The step, as `lab plan` prints it.
    pub step: String,
    /// Seconds since the Unix epoch when it finished.
    pub finished_at: u64,
}

/// Everything lab keeps about one cluster.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ClusterState {
    /// Format version of this file.
    pub version: u32,
    /// The cluster.
    pub cluster: ClusterName,
    /// The driver that made it.
    pub driver: String,
    /// The driver's configuration as `up` used it, so `status`, `env` and `down` reach the
    /// same machines without the flags being repeated.
    pub driver_config: serde_json::Value,
    /// Managers wanted.
    pub managers: u32,
    /// Workers wanted.
    pub workers: u32,
    /// The registry image.
    pub registry_image: String,
    /// The registry mode chosen (detected or forced), once chosen.
    pub registry_mode: Option<RegistryMode>,
    /// The swarm, once initialised.
    pub swarm: Option<SwarmRecord>,
    /// Nodes by name.
    pub nodes: BTreeMap<String, NodeRecord>,
    /// Steps finished by the latest `up`, in order.
    pub completed: Vec<StepRecord>,
    /// Whether the latest `up` ran its plan to the end (false while it runs, and after it was
    /// interrupted or failed).
    #[serde(default = "yes")]
    pub run_finished: bool,
    /// Swarm labels the user asked for on every manager, so a later `up` with only
    /// `--cluster` keeps them. Absent from state files written before it was recorded.
    #[serde(default)]
    pub manager_labels: BTreeMap<String, String>,
    /// Swarm labels the user asked for on every worker (see `manager_labels`).
    #[serde(default)]
    pub worker_labels: BTreeMap<String, String>,
    /// The registry mode the user asked for: `None` is auto (detect), which is also what
    /// older state files mean. `registry_mode` is what was chosen.
    #[serde(default)]
    pub registry_mode_request: Option<RegistryMode>,
    /// Who may talk to the registry, as the user asked (absent from older state files:
    /// open, as those clusters were made).
    #[serde(default)]
    pub registry_tls: RegistryTls,
    /// Whether managers take tasks: drained (the default, as the seed drains its manager) or
    /// active. Absent from older state files: drained, as those clusters were made.
    #[serde(default)]
    pub manager_availability: Availability,
    /// Whether each node's kernel has IPVS, as lab last looked (`up` looks on a node whose
    /// engine it waited for, made, started or not answering, and on one it never looked at;
    /// `lab check` looks on every node). `status` says what this says. Absent from older state
    /// files: then looked for.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ipvs: BTreeMap<String, bool>,
    /// The node whose `registry_data` volume held the registry's data when an `up` last ended
    /// with the registry answering (its node then). Absent from older state files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry_data_on: Option<String>,
}

impl ClusterState {
    /// The record of a new cluster `cluster` on `driver` (configured by `driver_config`), with
    /// nothing made yet and every other setting at its default.
    pub fn new(cluster: ClusterName, driver: &str, driver_config: serde_json::Value) -> Self {
        ClusterState {
            version: 1,
            cluster,
            driver: driver.to_string(),
            driver_config,
            managers: 1,
            workers: 0,
            registry_image: String::new(),
            registry_mode: None,
            swarm: None,
            nodes: BTreeMap::new(),
            completed: Vec::new(),
            run_finished: true,
            manager_labels: BTreeMap::new(),
            worker_labels: BTreeMap::new(),
            registry_mode_request: None,
            registry_tls: RegistryTls::default(),
            manager_availability: Availability::default(),
            ipvs: BTreeMap::new(),
            registry_data_on: None,
        }
    }
}

/// Where lab keeps its state.
#[derive(Debug, Clone)]
pub struct Paths {
    root: PathBuf,
}

impl Paths {
    /// `$XDG_STATE_HOME/lab`, else `$HOME/.local/state/lab`.
    pub fn from_env() -> Result<Self> {
        let root = match std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
            Some(x) => PathBuf::from(x),
            None => match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
                Some(h) => PathBuf::from(h).join(".local/state"),
                None => {
                    return Err(Error::input(
                        "HOME",
                        "neither XDG_STATE_HOME nor HOME is set; lab needs one for its state",
                    ))
                }
            },
        };
        Ok(Paths { root: root.join("lab") })
    }

    /// A state root at `root` (for tests).
    pub fn at(root: impl Into<PathBuf>) -> Self {
        Paths { root: root.into() }
    }

    /// The directory of one cluster.
    pub fn cluster_dir(&self, cluster: &ClusterName) -> PathBuf {
        self.root.join("clusters").join(cluster.as_str())
    }

    fn state_file(&self, cluster: &ClusterName) -> PathBuf {
        self.cluster_dir(cluster).join("state.json")
    }

    /// Where driver `name` may keep files shared by all its clusters.
    pub fn driver_cache_dir(&self, name: &str) -> PathBuf {
        self.root.join("drivers").join(name)
    }

    /// Creates the cluster's directory (and parents) with mode 0700.
    pub fn ensure_cluster_dir(&self, cluster: &ClusterName) -> Result<PathBuf> {
        let dir = self.cluster_dir(cluster);
        make_private_dir(&dir)?;
        Ok(dir)
    }

    /// Loads a cluster's state; `None` if lab has none.
    pub fn load(&self, cluster: &ClusterName) -> Result<Option<ClusterState>> {
        let path = self.state_file(cluster);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(Error::State { path, source }),
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| Error::State { path, source: std::io::Error::new(std::io::ErrorKind::InvalidData, e) })
    }

    /// Writes a cluster's state atomically, 0600 in a 0700 directory.
    pub fn save(&self, state: &ClusterState) -> Result<()> {
        let dir = self.ensure_cluster_dir(&state.cluster)?;
        let json = serde_json::to_vec_pretty(state).expect("state serialises");
        write_atomic(&dir.join("state.json"), &json)
    }

    /// Removes a cluster's state directory. A missing one is success.
    pub fn remove(&self, cluster: &ClusterName) -> Result<()> {
        let dir = self.cluster_dir(cluster);
        match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(Error::State { path: dir, source }),
        }
    }

    /// Every cluster lab has state for, sorted by name.
    pub fn list(&self) -> Result<Vec<ClusterState>> {
        let dir = self.root.join("clusters");
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(Error::State { path: dir, source }),
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let Some(name) = entry.file_name().to_str().map(str::to_string) else { continue };
            let Ok(cluster) = ClusterName::parse(&name, "state") else { continue };
            if let Some(state) = self.load(&cluster)? {
                out.push(state);
            }
        }
        out.sort_by(|a, b| a.cluster.cmp(&b.cluster));
        Ok(out)
    }

    /// Takes the cluster's lock for `purpose` (e.g. `lab up`), failing at once, naming the
    /// holder, if another process has it. The lock is released when the guard drops or the
    /// process dies; a guard that drops removes the lock file too (see [`LockGuard`]).
    pub fn lock(&self, cluster: &ClusterName, purpose: &str) -> Result<LockGuard> {
        let dir = self.root.join("locks");
        make_private_dir(&dir)?;
        let path = dir.join(format!("{cluster}.lock"));
        // A holder removes the file as it lets go. Between our open and our lock it may have
        // done so: we would then hold a lock on a file no one else can find, while the next
        // process makes a new one and locks that. So the lock counts only if the path still
        // names the file we locked; otherwise we open again. Each retry means a holder let go
        // in that instant, so a few are plenty.
        for _ in 0..16 {
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(&path)
                .map_err(|source| Error::State { path: path.clone(), source })?;
            match file.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => {
                    let mut holder = String::new();
                    let _ = file.read_to_string(&mut holder);
                    let holder = holder.trim();
                    return Err(Error::Locked {
                        cluster: cluster.to_string(),
                        holder: if holder.is_empty() { "another lab process".into() } else { holder.to_string() },
                    });
                }
                Err(std::fs::TryLockError::Error(source)) => return Err(Error::State { path, source }),
            }
            if !same_file(&file, &path) {
                continue;
            }
            let _ = file.set_len(0);
            let _ = file.rewind();
            let _ = write!(file, "{purpose} (pid {})", std::process::id());
            let _ = file.flush();
            return Ok(LockGuard { file, path });
        }
        Err(Error::State {
            path,
            source: std::io::Error::other("the lock file was replaced again and again while lab took it"),
        })
    }
}

/// Whether `path` still names the open `file` (same device and inode).
fn same_file(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Holds a cluster's lock until dropped. Dropping it removes the lock file while the lock is
/// still held (the file closes after), so no file stays behind (`lab down --cluster typo`
/// used to leave `locks/typo.lock`) and no other process can be holding it then; a process
/// that opened the file just before is sent round again by [`Paths::lock`]. A killed process
/// leaves its file, which the next holder takes over and removes.
#[derive(Debug)]
pub struct LockGuard {
    file: File,
    path: PathBuf,
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        // Only the file we locked: never one another process made after a kill.
        if same_file(&self.file, &self.path) {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Creates `dir` and its missing parents with mode 0700, and tightens an existing `dir` to
/// 0700.
pub fn make_private_dir(dir: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| Error::State { path: dir.to_path_buf(), source })?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .map_err(|source| Error::State { path: dir.to_path_buf(), source })
}

/// Writes `bytes` to `path` atomically with mode 0600: a temporary file in the same
/// directory, synced, then renamed over `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let err = |source| Error::State { path: path.to_path_buf(), source };
    let dir = path.parent().expect("state files live in a directory");
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("state"),
        std::process::id()
    ));
    let mut f = OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp).map_err(err)?;
    f.write_all(bytes).map_err(err)?;
    f.sync_all().map_err(err)?;
    drop(f);
    fs::rename(&tmp, path).map_err(err)?;
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

fn yes() -> bool {
    true
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(paths: &Paths) -> ClusterState {
        let cluster = ClusterName::parse("t", "test").unwrap();
        paths.ensure_cluster_dir(&cluster).unwrap();
        let mut st = ClusterState::new(cluster, "docker", serde_json::json!({}));
        (st.managers, st.workers, st.registry_image) = (1, 2, "registry:2".into());
        st.swarm = Some(SwarmRecord { id: "x".into(), manager_addr: "10.0.0.2:2377".into() });
        st
    }

    #[test]
    fn atomic_private_round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        let paths = Paths::at(tmp.path().join("lab"));
        let st = sample(&paths);
        paths.save(&st).unwrap();
        let dir = paths.cluster_dir(&st.cluster);
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("state.json")), 0o600);
        assert_eq!(paths.load(&st.cluster).unwrap().unwrap(), st);
        assert_eq!(paths.list().unwrap().len(), 1);
        // No temporary file is left behind.
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
    }

    #[test]
    fn secrets_never_debug_print() {
        let s = Secret::new("SWMTKN-1-worker");
        assert_eq!(format!("{s:?} {s}"), "<redacted> <redacted>");
    }

    /// Item 2 and 7 of issue 7: the state file has no field a secret could sit in.
    #[test]
    fn the_state_file_keeps_no_token_and_no_secret() {
        let tmp = tempfile::tempdir().unwrap();
        let paths = Paths::at(tmp.path().join("lab"));
        let st = sample(&paths);
        paths.save(&st).unwrap();
        let text = fs::read_to_string(paths.cluster_dir(&st.cluster).join("state.json")).unwrap();
        for word in ["token", "secret", "SWMTKN"] {
            assert!(!text.contains(word), "state.json has {word:?}:\n{text}");
        }
        // A state file written by an older lab, with tokens and a secret, still loads, and
        // the next save drops them.
        let old =
            text.replacen("\"registry_mode\": null,", "\"registry_mode\": null, \"registry_secret\": \"abc\",", 1);
        let old = old.replacen(
            "\"manager_addr\": \"10.0.0.2:2377\"",
            "\"manager_addr\": \"10.0.0.2:2377\", \"worker_token\": \"SWMTKN-1-w\", \"manager_token\": \"SWMTKN-1-m\"",
            1,
        );
        assert_ne!(old, text);
        fs::write(paths.cluster_dir(&st.cluster).join("state.json"), &old).unwrap();
        let loaded = paths.load(&st.cluster).unwrap().unwrap();
        paths.save(&loaded).unwrap();
        let text = fs::read_to_string(paths.cluster_dir(&st.cluster).join("state.json")).unwrap();
        assert!(!text.contains("SWMTKN") && !text.contains("secret"), "{text}");
    }

    /// Item 15: `down` removes the cluster's directory while it holds the lock; the lock must
    /// survive that, or a second process could take a lock the first still holds.
    #[test]
    fn the_lock_outlives_the_state_it_guards() {
        let tmp = tempfile::tempdir().unwrap();
        let paths = Paths::at(tmp.path().join("lab"));
        let st = sample(&paths);
        paths.save(&st).unwrap();
        let held = paths.lock(&st.cluster, "lab down").unwrap();
        paths.remove(&st.cluster).unwrap();
        assert!(!paths.cluster_dir(&st.cluster).exists());
        let err = paths.lock(&st.cluster, "lab up").expect_err("a second holder got the lock");
        assert!(err.to_string().contains("lab down (pid"), "{err}");
        drop(held);
        paths.lock(&st.cluster, "lab up").unwrap();
    }

    #[test]
    fn lock_names_holder() {
        let tmp = tempfile::tempdir().unwrap();
        let paths = Paths::at(tmp.path());
        let c = ClusterName::parse("t", "test").unwrap();
        let _held = paths.lock(&c, "lab up").unwrap();
        let err = paths.lock(&c, "lab down").unwrap_err();
        assert!(err.to_string().contains("lab up (pid"), "{err}");
        drop(_held);
        paths.lock(&c, "lab down").unwrap();
    }

    /// Issue 18, item 17: a lock leaves no file behind once let go (`lab down --cluster typo`
    /// left `locks/typo.lock`), and the next holder gets it as before.
    #[test]
    fn a_lock_let_go_leaves_no_file() {
        let tmp = tempfile::tempdir().unwrap();
        let paths = Paths::at(tmp.path());
        let c = ClusterName::parse("typo", "test").unwrap();
        let file = tmp.path().join("locks/typo.lock");
        let held = paths.lock(&c, "lab down").unwrap();
        assert!(file.exists(), "no lock file while the lock is held");
        drop(held);
        assert!(!file.exists(), "the lock file stayed behind");
        let again = paths.lock(&c, "lab up").unwrap();
        assert!(paths.lock(&c, "lab down").is_err(), "the lock taken again does not hold");
        drop(again);
        assert!(!file.exists());
    }
}
