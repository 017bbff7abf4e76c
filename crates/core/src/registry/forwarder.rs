//! What serves `localhost:5000` on a node besides the registry itself: in fallback mode a
//! busybox `nc` forwarder relaying to the registry's node, in mutual TLS lab's relay.

use std::collections::HashMap;
use std::time::Duration;

use bollard::models::{
    ContainerCreateBody, HostConfig, Mount, MountType, PortBinding, RestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder, UploadToContainerOptionsBuilder,
};
use bollard::Docker;

use super::relay;
use crate::cluster::Nodes;
use crate::error::{engine_message, Error, Result};
use crate::registry::PORT;
use crate::registry::TLS_PORT;
use crate::state::{RegistryMode, RegistryTls};
use crate::wait::{Look, Wait};

/// The forwarder container on every node but the registry's (fallback mode).
pub const FORWARDER: &str = "lab-registry-forwarder";
/// Label on the forwarder naming the address it relays to.
pub const FORWARD_TO_LABEL: &str = "lab.forward-to";
/// Label saying how the forwarder listens: `loopback`, published on the node's 127.0.0.1 (and
/// ::1) only. Forwarders without it (older lab versions listened on every interface of the
/// node) are replaced.
pub const FORWARD_LISTEN_LABEL: &str = "lab.forward-listen";

/// What serves `localhost:5000` on a node besides the registry itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forwarder {
    /// Nothing: the mesh, or the registry's own host-mode port, answers there.
    None,
    /// Open registry, fallback mode: busybox `nc` relays TCP to the registry's node.
    Plain,
    /// Mutual TLS: lab's relay takes plain HTTP on the node's loopback and speaks TLS to the
    /// registry with the node's client certificate, since the node's dockerd never presents
    /// one to a loopback registry ([`crate::registry::relay`]).
    Relay,
}

impl Forwarder {
    /// What a node is to have: with mutual TLS, a relay on every node (the registry's port
    /// 5000 is the relay's, the registry's own is [`crate::registry::TLS_PORT`]); open, a
    /// plain forwarder on every node but the registry's in fallback mode, none with the mesh.
    pub fn wanted(tls: RegistryTls, mode: RegistryMode, registry_node: bool) -> Forwarder {
        match (tls, mode) {
            (RegistryTls::Mutual, _) => Forwarder::Relay,
            (RegistryTls::Open, RegistryMode::Fallback) if !registry_node => Forwarder::Plain,
            (RegistryTls::Open, _) => Forwarder::None,
        }
    }

    /// How a forwarder of this kind relaying to `target` (the registry node's address) reads
    /// back from its container ([`crate::registry::observe_forwarder`]); `None` for none.
    pub fn label(self, target: &str) -> Option<String> {
        match self {
            Forwarder::None => None,
            Forwarder::Plain => Some(target.to_string()),
            Forwarder::Relay => Some(format!(
                "{RELAY_SCHEME}{}:{} lab {}",
                bracket(target),
                crate::registry::TLS_PORT,
                env!("CARGO_PKG_VERSION")
            )),
        }
    }
}

pub(crate) const RELAY_SCHEME: &str = "tls://";

/// Whether an observed forwarder is a mutual-TLS relay.
pub fn is_relay(label: &str) -> bool {
    label.starts_with(RELAY_SCHEME)
}

/// An IPv6 address in brackets, as in `[fd00::1]:5443`.
pub fn bracket(addr: &str) -> String {
    if addr.contains(':') {
        format!("[{addr}]")
    } else {
        addr.to_string()
    }
}

/// The forwarder's program, run by the image's `sh`. Its arguments come as positional
/// parameters (`$1` address, `$2` port), never pasted into the script. Alpine's busybox `nc`
/// (the official image) keeps listening with `-lk`; Debian's has no `-k` and wants `-ll`
/// (its help says "use -ll with -e for persistent server"): use `-lk` only where this `nc`
/// documents a `-k` option. Each connection forks `nc ADDR PORT`, so concurrent layer uploads
/// each get their own relay.
pub(crate) const FORWARD_SCRIPT: &str = r#"if nc --help 2>&1 | grep -qE '^[[:space:]]+-k'; then keep=-lk; else keep=-ll; fi
exec nc $keep -p "$2" -e nc "$1" "$2""#;

/// How long a forwarder waits for the engine to let go of the port after the mesh.
pub(crate) const PORT_RELEASE: Duration = Duration::from_secs(45);

/// Makes the forwarder on `node` match the mode: relaying to the registry's node in fallback
/// mode, absent in mesh mode and on the registry's own node (where it would hold the port
/// the registry publishes).
///
/// The forwarder serves `localhost:5000` on its own node and nothing else: it runs on the
/// node's default bridge with its port published on `127.0.0.1` and, where the node has IPv6
/// loopback, `[::1]`, so no other machine reaches it. (A drained manager cannot attach a
/// standalone container to the swarm's overlay, but the default bridge is always there.)
pub async fn forwarder(rt: &dyn Nodes, node: &str) -> Result<String> {
    let mode = rt.state().registry_mode.ok_or_else(|| Error::op("start the forwarder", "no registry mode chosen"))?;
    let e = rt.engine(node).await?;
    let docker = &e.docker;
    let reg = rt.desired().topology.registry_node().name.clone();
    let kind = Forwarder::wanted(rt.desired().tls, mode, node == reg);
    let step = match kind {
        Forwarder::Relay => "start the relay to the mutual-TLS registry",
        _ => "start the registry forwarder",
    };
    if kind == Forwarder::Plain {
        // Planned where observation could not look (a node that was stopped): the forwarder
        // its engine restarted by itself, relaying where the plan would have it relay, is
        // what observation would have taken as done; `up`'s final check still proves it.
        let target = rt.engine(&reg).await?.advertise_addr;
        if observe_forwarder(docker).await == kind.label(&target) {
            return Ok(format!("already relaying to {reg} ({target})"));
        }
    }
    remove_forwarder(node, docker).await?;
    let target = match kind {
        Forwarder::None if mode == RegistryMode::Mesh => return Ok("not needed: mesh".into()),
        Forwarder::None => return Ok("not needed: the registry runs here".into()),
        _ => rt.engine(&reg).await?.advertise_addr,
    };
    let launch = match kind {
        Forwarder::Relay => Launch::relay(docker, node, step, &target).await?,
        _ => Launch::nc(&target),
    };
    let image = &rt.desired().registry_image;
    let cluster = rt.desired().topology.cluster.as_str();
    let label = kind.label(&target).unwrap_or_default();
    if launch.archive.is_some() {
        // In the node's own network namespace, listening on its loopbacks itself: nothing
        // but the node's own processes reaches it, not even a container on the node's
        // bridge. It waits for a port the registry still holds, and does without [::1] where
        // the node has no IPv6 loopback.
        launch
            .start(docker, launch.body(image, cluster, &label, &[]))
            .await
            .map_err(|e| Error::engine(node, step, e))?;
        return Ok(format!(
            "relaying localhost:{PORT} (127.0.0.1, and [::1] where the node has it) to {reg} ({target}:{TLS_PORT}) \
             in mutual TLS"
        ));
    }
    // Both loopbacks where the node has IPv6; where it has none, publishing on [::1] fails
    // at start, and 127.0.0.1 alone is all `localhost` can mean there.
    let on = |loopbacks: &'static [&'static str]| {
        launch.start_when_free(docker, node, step, launch.body(image, cluster, &label, loopbacks))
    };
    if lacks_ipv6_loopback(docker).await {
        on(&["127.0.0.1"]).await?;
        return Ok(format!("relaying 127.0.0.1:{PORT} to {reg} ({target})"));
    }
    let listens = match on(&["127.0.0.1", "::1"]).await {
        Ok(()) => "127.0.0.1 and [::1]",
        Err(first) => {
            tracing::debug!(node, cause = %first, "the forwarder cannot publish on [::1]; 127.0.0.1 only");
            remove_forwarder(node, docker).await?;
            on(&["127.0.0.1"]).await?;
            "127.0.0.1"
        }
    };
    Ok(format!("relaying {listens}:{PORT} to {reg} ({target})"))
}

/// Whether the node has no IPv6 loopback, as its dockerd finds when it dials `::1` ("cannot
/// assign requested address": no `::1` on `lo`; "network is unreachable": IPv6 off). A
/// question of a few milliseconds, which spares starting a forwarder that cannot publish on
/// `[::1]` and starting it again (a second or more each, on a busy machine). `false` when
/// dockerd does not say so within a second: then both loopbacks are tried.
pub(crate) async fn lacks_ipv6_loopback(docker: &Docker) -> bool {
    match tokio::time::timeout(Duration::from_secs(1), super::reach::ask_ipv6(docker)).await {
        Ok(Some(answer)) => no_ipv6_loopback(&answer.words),
        _ => false,
    }
}

/// Whether dockerd's words, dialling `[::1]`, say the node has no IPv6 loopback.
fn no_ipv6_loopback(words: &str) -> bool {
    let w = words.to_ascii_lowercase();
    w.contains("[::1]") && (w.contains("cannot assign requested address") || w.contains("network is unreachable"))
}

/// What the forwarder container runs and needs: busybox `nc` from the registry image, or lab
/// itself (packed into the container before it starts) with the node's client certificate.
struct Launch {
    entrypoint: Vec<String>,
    mounts: Option<Vec<Mount>>,
    /// lab's relay, packed: uploaded into the container before it starts.
    archive: Option<bytes::Bytes>,
}

impl Launch {
    /// The plain forwarder: `nc` relaying TCP to the registry's node at `target`.
    fn nc(target: &str) -> Launch {
        let entrypoint = ["sh", "-c", FORWARD_SCRIPT, "lab-forwarder", target, &PORT.to_string()];
        Launch { entrypoint: entrypoint.iter().map(|s| s.to_string()).collect(), mounts: None, archive: None }
    }

    /// lab's relay to the mutual-TLS registry at `target`, presenting the node's certificates;
    /// only where lab's own program can run on the node.
    async fn relay(docker: &Docker, node: &str, step: &str, target: &str) -> Result<Launch> {
        let info = docker.info().await.map_err(|err| Error::engine(node, step, err))?;
        relay::runs_on(info.os_type.as_deref().unwrap_or("linux"), info.architecture.as_deref().unwrap_or_default())
            .map_err(|why| {
                Error::node(node, step, why).with_hint(
                    "run lab from a Linux machine of the nodes' architecture, or use `--registry-tls open` behind a \
                     firewall",
                )
            })?;
        let program = relay::program().map_err(|why| Error::node(node, step, why))?;
        let mut entrypoint = program.entrypoint.clone();
        entrypoint.extend([
            "--listen".to_string(),
            format!("127.0.0.1:{PORT}"),
            "--listen".into(),
            format!("[::1]:{PORT}"),
            "--to".into(),
            format!("{}:{TLS_PORT}", bracket(target)),
            "--certs".into(),
            relay::CERTS_MOUNT.into(),
        ]);
        let certs = Mount {
            target: Some(relay::CERTS_MOUNT.into()),
            source: Some(format!("/etc/docker/certs.d/{}", crate::tls::CERTS_DIRS[0])),
            typ: Some(MountType::BIND),
            read_only: Some(true),
            ..Default::default()
        };
        Ok(Launch { entrypoint, mounts: Some(vec![certs]), archive: Some(program.archive) })
    }

    /// The container: the relay in the node's network namespace, the plain forwarder on the
    /// node's bridge with its port published on `loopbacks` only. It restarts with its node's
    /// engine, and carries the labels observation reads back.
    fn body(&self, image: &str, cluster: &str, label: &str, loopbacks: &[&str]) -> ContainerCreateBody {
        let relay = self.archive.is_some();
        let port = format!("{PORT}/tcp");
        let bindings: Vec<PortBinding> = loopbacks
            .iter()
            .map(|ip| PortBinding { host_ip: Some(ip.to_string()), host_port: Some(PORT.to_string()) })
            .collect();
        ContainerCreateBody {
            image: Some(image.to_string()),
            entrypoint: Some(self.entrypoint.clone()),
            cmd: Some(vec![]),
            // The relay's files are root's, 0600 for the key: whatever user the image names.
            user: relay.then(|| "0:0".to_string()),
            exposed_ports: (!relay).then(|| vec![port.clone()]),
            labels: Some(HashMap::from([
                ("lab.cluster".to_string(), cluster.to_string()),
                (FORWARD_TO_LABEL.to_string(), label.to_string()),
                (FORWARD_LISTEN_LABEL.to_string(), "loopback".to_string()),
            ])),
            host_config: Some(HostConfig {
                network_mode: Some(if relay { "host" } else { "bridge" }.into()),
                port_bindings: (!relay).then(|| HashMap::from([(port, Some(bindings))])),
                mounts: self.mounts.clone(),
                restart_policy: Some(RestartPolicy {
                    name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// Creates the container, uploads the relay into it, and starts it; the engine's error on
    /// failure.
    async fn start(
        &self,
        docker: &Docker,
        body: ContainerCreateBody,
    ) -> std::result::Result<(), bollard::errors::Error> {
        docker.create_container(Some(CreateContainerOptionsBuilder::new().name(FORWARDER).build()), body).await?;
        if let Some(archive) = &self.archive {
            docker
                .upload_to_container(
                    FORWARDER,
                    Some(UploadToContainerOptionsBuilder::new().path("/").build()),
                    bollard::body_full(archive.clone()),
                )
                .await?;
        }
        docker.start_container(FORWARDER, None).await
    }

    /// [`Launch::start`], again while the port is still held for at most [`PORT_RELEASE`]:
    /// after a switch from the mesh, the engine lets go of the ingress listener on :PORT a
    /// few seconds after the service changed, and until then publishing says "address
    /// already in use".
    async fn start_when_free(&self, docker: &Docker, node: &str, step: &str, body: ContainerCreateBody) -> Result<()> {
        Wait::new(node, format!("port {PORT} to be free for {FORWARDER}"), PORT_RELEASE)
            .every(Duration::from_secs(1))
            .poll(|| async {
                match self.start(docker, body.clone()).await {
                    Ok(()) => Look::Done(()),
                    Err(e) if engine_message(&e).contains("address already in use") => {
                        tracing::debug!(node, cause = %engine_message(&e), "port {PORT} is still held; trying again");
                        match remove_forwarder(node, docker).await {
                            Ok(()) => Look::NotYet(Box::new(Error::engine(node, step, e))),
                            Err(gone) => Look::Fail(gone),
                        }
                    }
                    Err(e) => Look::Fail(Error::engine(node, step, e)),
                }
            })
            .await
    }
}

pub(crate) async fn remove_forwarder(node: &str, docker: &Docker) -> Result<()> {
    match docker
        .remove_container(FORWARDER, Some(RemoveContainerOptionsBuilder::new().force(true).v(true).build()))
        .await
    {
        Ok(()) => Ok(()),
        Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Ok(()),
        Err(err) => Err(Error::engine(node, format!("remove container {FORWARDER}"), err)),
    }
}

/// The address the running forwarder on a node relays to, if one runs. A forwarder of an
/// older lab, which listened on every interface, reads as relaying nowhere lab would
/// choose, so the planner replaces it.
pub async fn observe_forwarder(docker: &Docker) -> Option<String> {
    let c = docker.inspect_container(FORWARDER, None).await.ok()?;
    if !c.state.and_then(|s| s.running).unwrap_or(false) {
        return None;
    }
    let labels = c.config?.labels?;
    if labels.get(FORWARD_LISTEN_LABEL).map(String::as_str) != Some("loopback") {
        return Some("(every interface: an older forwarder)".into());
    }
    labels.get(FORWARD_TO_LABEL).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// dockerd's words for `ip6-localhost:5000`, as Docker 20.10 gave them on a dind node
    /// (no `::1`), and on a node with `::1` and nothing on port 5000.
    #[test]
    fn a_node_without_ipv6_loopback_is_told_by_its_dockerd() {
        assert!(no_ipv6_loopback(
            r#"Get "https://ip6-localhost:5000/v2/": dial tcp [::1]:5000: connect: cannot assign requested address"#
        ));
        assert!(no_ipv6_loopback(
            r#"Get "https://[::1]:5000/v2/": dial tcp [::1]:5000: connect: network is unreachable"#
        ));
        assert!(!no_ipv6_loopback(
            r#"Get "https://ip6-localhost:5000/v2/": dial tcp [::1]:5000: connect: connection refused"#
        ));
        assert!(!no_ipv6_loopback(r#"Get "https://ip6-localhost:5000/v2/": net/http: TLS handshake timeout"#));
        assert!(!no_ipv6_loopback("dial tcp 127.0.0.1:5000: connect: cannot assign requested address"));
    }

    /// Runs the forwarder script under `sh` with a fake `nc` that prints `help` for `--help`
    /// and otherwise records its arguments; returns them.
    fn forwarder_args(help: &str, target: &str) -> String {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let nc = dir.path().join("nc");
        let out = dir.path().join("args");
        std::fs::write(
            &nc,
            format!(
                "#!/bin/sh\nif [ \"$1\" = --help ]; then printf '%s\\n' \"$NC_HELP\" >&2; exit 1; fi\necho \"$@\" > {}\n",
                out.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&nc, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = format!("{}:{}", dir.path().display(), std::env::var("PATH").unwrap_or_default());
        let status = std::process::Command::new("sh")
            .args(["-c", FORWARD_SCRIPT, "lab-forwarder", target, "5000"])
            .env("PATH", path)
            .env("NC_HELP", help)
            .status()
            .unwrap();
        assert!(status.success());
        std::fs::read_to_string(out).unwrap().trim().to_string()
    }

    #[test]
    fn the_forwarder_keeps_listening_with_either_busybox_and_takes_its_target_as_arguments() {
        // Debian's busybox (1.35) help, as the node image prints it: no -k, "-ll" persistent.
        let debian = "Usage: nc [-iN] [-wN] [-l] [-p PORT] [-f FILE|IPADDR PORT] [-e PROG]\n\n\
                      \t-l\tListen mode, for inbound connects\n\t\t(use -ll with -e for persistent server)\n\
                      \t-p PORT\tLocal port\n\t-e PROG\tRun PROG after connect";
        // Alpine's (the official registry:2 image): a -k option.
        let alpine = "Usage: nc [OPTIONS] HOST PORT  - connect\n\t-l\tListen mode, for inbound connects\n\
                      \t-k\tKeep listening after client disconnects\n\t-p PORT\tLocal port\n\t-e PROG\tRun PROG";
        assert_eq!(forwarder_args(debian, "10.0.0.9"), "-ll -p 5000 -e nc 10.0.0.9 5000");
        assert_eq!(forwarder_args(alpine, "10.0.0.9"), "-lk -p 5000 -e nc 10.0.0.9 5000");
        // A hostile "address" is passed along as data, never run as shell text.
        let scratch = tempfile::tempdir().unwrap();
        let marker = scratch.path().join("pwned");
        let hostile = format!("x; touch {}", marker.display());
        assert_eq!(forwarder_args(debian, &hostile), format!("-ll -p 5000 -e nc {hostile} 5000"));
        assert!(!marker.exists(), "the address was run as a command");
    }
}
