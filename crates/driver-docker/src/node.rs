//! A node as the container it is: what the container is made with (its capabilities, its
//! `/var/lib/docker` volume, the socket directory its engine answers on), and what lab reads
//! back from a container it finds (the machine it is, where its socket is).

use std::collections::HashMap;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bollard::models::{ContainerCreateBody, ContainerSummary, ContainerSummaryStateEnum, HostConfig, Mount, MountType};
use bollard::Docker;
use lab_core::wait::{Look, Wait};
use lab_core::{Machine, MachineState, Result, Role};

use crate::engine::{CLUSTER_LABEL, NODE_LABEL};
use crate::error::on_engine;

pub(crate) const ROLE_LABEL: &str = "lab.role";
/// How long `up` waits for a node restarted to recreate its engine socket.
const RECOVER_TIMEOUT: Duration = Duration::from_secs(120);

/// Every capability except SYS_RESOURCE, which some engines' bounding sets lack and which is
/// why `--privileged` fails there ("unable to apply caps"). BPF, PERFMON and
/// CHECKPOINT_RESTORE are left out because Docker 20.10 rejects them as unknown.
pub const CAPS: &[&str] = &[
    "AUDIT_CONTROL",
    "AUDIT_READ",
    "AUDIT_WRITE",
    "BLOCK_SUSPEND",
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "IPC_LOCK",
    "IPC_OWNER",
    "KILL",
    "LEASE",
    "LINUX_IMMUTABLE",
    "MAC_ADMIN",
    "MAC_OVERRIDE",
    "MKNOD",
    "NET_ADMIN",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_RAW",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYSLOG",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_CHROOT",
    "SYS_MODULE",
    "SYS_NICE",
    "SYS_PACCT",
    "SYS_PTRACE",
    "SYS_RAWIO",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "WAKE_ALARM",
];

/// Where the node's extra API socket appears inside the container.
pub(crate) const SOCKET_DIR_IN_NODE: &str = "/run/lab";

/// Whether a socket appears at `socket` within `limit`.
pub(crate) async fn socket_appears(socket: &Path, limit: Duration) -> bool {
    Wait::new("", "", limit).holds("no socket", || std::future::ready(is_socket(socket))).await.is_ok()
}

/// Waits until the engine at `socket` answers, at most [`RECOVER_TIMEOUT`]. What it then
/// says of its cluster membership, and how long that takes to settle, is the core's business:
/// its observation waits for it.
pub(crate) async fn wait_answering(node: &str, socket: &Path) -> Result<()> {
    let what = "its Docker engine to answer after lab restarted it to recreate its socket";
    Wait::new(node, what, RECOVER_TIMEOUT)
        .poll(|| async {
            if !is_socket(socket) {
                return Look::not_yet(format!("no socket at {} yet", socket.display()));
            }
            let answer = match Docker::connect_with_unix(&socket.to_string_lossy(), 5, bollard::API_DEFAULT_VERSION) {
                Ok(d) => d.info().await.map(|_| ()),
                Err(e) => Err(e),
            };
            match answer {
                Ok(()) => Look::Done(()),
                Err(e) => Look::not_yet(on_engine(format!("ask the engine at {}", socket.display()), e)),
            }
        })
        .await
}

/// Waits until the container `name` of `node` is gone, at most [`RECOVER_TIMEOUT`]: a removal
/// the engine has under way (a killed `lab`'s) ends on its own.
pub(crate) async fn container_gone(host: &Docker, node: &str, name: &str) -> Result<()> {
    Wait::new(node, "the removal of its container, under way already, to end", RECOVER_TIMEOUT)
        .every(Duration::from_millis(250))
        .poll(|| async {
            match host.inspect_container(name, None).await {
                Err(e) if crate::error::is_not_found(&e) => Look::Done(()),
                Err(e) => Look::Fail(crate::error::on_node(node, "look at its container", e).into()),
                Ok(_) => Look::not_yet(format!("container {name} is still there")),
            }
        })
        .await
}

/// The host directory bind-mounted on the node's socket directory: where its engine socket
/// is, whichever state directory the node was made from.
pub(crate) fn socket_dir_of(c: &ContainerSummary) -> Option<PathBuf> {
    c.mounts
        .as_ref()?
        .iter()
        .find(|m| m.destination.as_deref() == Some(SOCKET_DIR_IN_NODE))
        .and_then(|m| m.source.clone())
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
}

/// Each node's socket directory, by node, as a list of the cluster's containers shows it.
pub(crate) fn socket_dirs(list: &[ContainerSummary]) -> HashMap<String, PathBuf> {
    list.iter().filter_map(|c| Some((c.labels.as_ref()?.get(NODE_LABEL)?.clone(), socket_dir_of(c)?))).collect()
}

/// A node container's socket directory, as inspecting `container` shows it.
pub(crate) async fn inspected_socket_dir(host: &Docker, container: &str) -> Option<PathBuf> {
    host.inspect_container(container, None).await.ok().and_then(|c| {
        c.mounts?
            .into_iter()
            .find(|m| m.destination.as_deref() == Some(SOCKET_DIR_IN_NODE))
            .and_then(|m| m.source)
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
    })
}

pub(crate) fn is_socket(path: &Path) -> bool {
    std::fs::metadata(path).map(|m| m.file_type().is_socket()).unwrap_or(false)
}

/// A tar archive of empty files (mode 0644, owned by root) at `paths`, with their parent
/// directories, for the archive API.
pub(crate) fn empty_files_tar(paths: &[&str]) -> std::io::Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    let entry = |kind: tar::EntryType, mode: u32| {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(0);
        h
    };
    let mut dirs: Vec<String> = Vec::new();
    for p in paths {
        let parts: Vec<&str> = p.split('/').collect();
        for i in 1..parts.len() {
            let d = format!("{}/", parts[..i].join("/"));
            if !dirs.contains(&d) {
                b.append_data(&mut entry(tar::EntryType::Directory, 0o755), &d, std::io::empty())?;
                dirs.push(d);
            }
        }
        b.append_data(&mut entry(tar::EntryType::Regular, 0o644), p, std::io::empty())?;
    }
    b.into_inner()
}

pub(crate) fn machine_of(c: &ContainerSummary, network: &str) -> Option<Machine> {
    let labels = c.labels.as_ref()?;
    let name = labels.get(NODE_LABEL)?.clone();
    let role = match labels.get(ROLE_LABEL).map(String::as_str) {
        Some("manager") => Some(Role::Manager),
        Some("worker") => Some(Role::Worker),
        _ => None,
    };
    let state = match c.state {
        Some(ContainerSummaryStateEnum::RUNNING) => MachineState::Running,
        Some(ContainerSummaryStateEnum::CREATED)
        | Some(ContainerSummaryStateEnum::EXITED)
        | Some(ContainerSummaryStateEnum::PAUSED)
        | Some(ContainerSummaryStateEnum::RESTARTING) => MachineState::Stopped,
        other => MachineState::Broken(format!("container state {}", other.map(|s| s.to_string()).unwrap_or_default())),
    };
    let address = c
        .network_settings
        .as_ref()
        .and_then(|n| n.networks.as_ref())
        .and_then(|n| n.get(network))
        .and_then(|e| e.ip_address.clone())
        .filter(|a| !a.is_empty());
    Some(Machine { name, role, state, address })
}

/// The network label that records the subnet lab fixed for the cluster's network.
pub(crate) const FIXED_SUBNET_LABEL: &str = "lab.fixed-subnet";

/// An IPv4 subnet `A.B.C.D/N` as its first address and prefix length.
pub(crate) fn parse_subnet(subnet: &str) -> Option<(u32, u32)> {
    let (addr, len) = subnet.split_once('/')?;
    let addr: std::net::Ipv4Addr = addr.parse().ok()?;
    let len: u32 = len.parse().ok().filter(|l| (8..=28).contains(l))?;
    Some((u32::from(addr) & (u32::MAX << (32 - len)), len))
}

/// A node's fixed address in `subnet`: the manager(s) from .10 (`manager` .10, `managerN`
/// .10+N), `workerN` at .100+N; the gateway keeps .1. `None` for other names, or a subnet too
/// small.
pub(crate) fn fixed_address(subnet: &str, node: &str) -> Option<String> {
    let (base, len) = parse_subnet(subnet)?;
    let number = |prefix: &str| node.strip_prefix(prefix).and_then(|n| n.parse::<u32>().ok());
    let offset = match node {
        "manager" => 10,
        _ => match (number("manager"), number("worker")) {
            (Some(n), _) if n < 90 => 10 + n,
            (_, Some(n)) => 100 + n,
            _ => return None,
        },
    };
    (offset < (1u32 << (32 - len)) - 1).then(|| std::net::Ipv4Addr::from(base + offset).to_string())
}

/// What a node container is made with.
pub(crate) struct Spec<'a> {
    /// The node image (any image with dockerd on its PATH).
    pub(crate) image: &'a str,
    pub(crate) node: &'a str,
    pub(crate) cluster: &'a str,
    /// The cluster's network.
    pub(crate) network: String,
    /// The node's fixed address on it, when the network has a fixed subnet.
    pub(crate) address: Option<String>,
    /// The node's own volume, mounted on its `/var/lib/docker`.
    pub(crate) volume: String,
    /// The directory on this machine where the node's engine socket appears.
    pub(crate) socket_dir: &'a Path,
    /// The group that may use that socket.
    pub(crate) gid: u32,
    /// `--privileged` works on this engine; otherwise [`CAPS`] and unconfined profiles.
    pub(crate) privileged: bool,
    pub(crate) labels: HashMap<String, String>,
}

/// The node container: dockerd on its own volume, answering on a socket in a directory this
/// machine shares with it, labelled with its cluster and node (and saying so in `docker info`).
pub(crate) fn body(spec: &Spec<'_>) -> ContainerCreateBody {
    let mut host_config = HostConfig {
        init: Some(true),
        // Back by itself when the engine starts again (a host's reboot), as a machine would,
        // unless stopped on purpose. Its /run is a fresh tmpfs at each start, so the pid files
        // of a dockerd that was killed never stop the next one ("pid file found").
        restart_policy: Some(bollard::models::RestartPolicy {
            name: Some(bollard::models::RestartPolicyNameEnum::UNLESS_STOPPED),
            maximum_retry_count: None,
        }),
        tmpfs: Some(HashMap::from([("/run".to_string(), "exec".to_string())])),
        network_mode: Some(spec.network.clone()),
        mounts: Some(vec![
            Mount {
                target: Some("/var/lib/docker".into()),
                source: Some(spec.volume.clone()),
                typ: Some(MountType::VOLUME),
                ..Default::default()
            },
            Mount {
                target: Some(SOCKET_DIR_IN_NODE.into()),
                source: Some(spec.socket_dir.to_string_lossy().into_owned()),
                typ: Some(MountType::BIND),
                ..Default::default()
            },
        ]),
        ..Default::default()
    };
    if spec.privileged {
        host_config.privileged = Some(true);
    } else {
        host_config.cap_add = Some(CAPS.iter().map(|c| c.to_string()).collect());
        host_config.security_opt = Some(vec!["seccomp=unconfined".into(), "apparmor=unconfined".into()]);
        // The API's spelling of the CLI's `--security-opt systempaths=unconfined`.
        host_config.masked_paths = Some(vec![]);
        host_config.readonly_paths = Some(vec![]);
        host_config.mounts.as_mut().expect("set above").push(Mount {
            target: Some("/sys/fs/cgroup".into()),
            source: Some("/sys/fs/cgroup".into()),
            typ: Some(MountType::BIND),
            read_only: Some(false),
            ..Default::default()
        });
    }
    ContainerCreateBody {
        image: Some(spec.image.to_string()),
        hostname: Some(spec.node.to_string()),
        // The image's entrypoint stays (docker:dind's prepares iptables); without TLS
        // settings it adds no TCP listener, and we add none.
        cmd: Some(vec![
            "dockerd".into(),
            "--host=unix:///var/run/docker.sock".into(),
            format!("--host=unix://{SOCKET_DIR_IN_NODE}/docker.sock"),
            format!("--group={}", spec.gid),
            // So `docker info` on the node says it is one (see engine::lab_node).
            format!("--label={CLUSTER_LABEL}={}", spec.cluster),
            format!("--label={NODE_LABEL}={}", spec.node),
        ]),
        env: Some(vec!["DOCKER_TLS_CERTDIR=".into()]),
        labels: Some(spec.labels.clone()),
        host_config: Some(host_config),
        networking_config: spec.address.as_ref().map(|a| bollard::models::NetworkingConfig {
            endpoints_config: Some(HashMap::from([(
                spec.network.clone(),
                bollard::models::EndpointSettings {
                    ipam_config: Some(bollard::models::EndpointIpamConfig {
                        ipv4_address: Some(a.clone()),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            )])),
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_node_has_its_own_fixed_address_in_the_subnet_docker_picked() {
        assert_eq!(parse_subnet("172.18.0.0/16"), Some((u32::from(std::net::Ipv4Addr::new(172, 18, 0, 0)), 16)));
        assert_eq!(parse_subnet("fd00::/64"), None);
        assert_eq!(fixed_address("172.18.0.0/16", "manager").as_deref(), Some("172.18.0.10"));
        assert_eq!(fixed_address("172.18.0.0/16", "manager3").as_deref(), Some("172.18.0.13"));
        assert_eq!(fixed_address("192.168.16.0/20", "worker1").as_deref(), Some("192.168.16.101"));
        assert_eq!(fixed_address("192.168.16.0/20", "worker64").as_deref(), Some("192.168.16.164"));
        assert_eq!(fixed_address("172.18.0.0/16", "db"), None, "a name lab does not number");
        assert_eq!(fixed_address("10.0.0.0/28", "worker1"), None, "a subnet too small");
    }
}
