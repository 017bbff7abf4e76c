//! The private registry: the stack `registry` with its service `registry_registry`, and how
//! every node reaches it at `127.0.0.1:5000` and `localhost:5000`.
//!
//! Two ways, chosen once per cluster ([`choose_mode`]) and recorded in state:
//! - **mesh**: the port is published through the swarm's ingress routing mesh, as the seed's
//!   `docker stack deploy` does. Needs IPVS in the nodes' kernels.
//! - **fallback**: the port is published in `host` mode on the registry's own node only, and
//!   every other node runs a small forwarder container in its host network namespace that
//!   relays `:5000` to the registry node. It needs no IPVS and no overlay network (a drained
//!   manager cannot attach a standalone container to one), and it runs busybox `nc` from the
//!   registry image itself, so it needs no image the nodes do not already have.
//!
//! Unlike the seed's recipe, the service gets an HTTP secret (`REGISTRY_HTTP_SECRET`, from the
//! swarm secret `lab-registry-http-secret`, made once and never shown: it appears in no
//! service spec and in no file of lab's), keeps its data on the named volume `registry_data`,
//! and is pinned to one node by the `lab.registry` label, so a reschedule cannot silently lose
//! every pushed image. When the pin moves to another node, [`move_data`] carries the volume's
//! contents there through the engines' archive API first.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bollard::models::{
    ContainerCreateBody, EndpointPortConfig, EndpointPortConfigProtocolEnum, EndpointPortConfigPublishModeEnum,
    EndpointSpec, HostConfig, Mount, MountType, MountVolumeOptions, NetworkAttachmentConfig, NetworkCreateRequest,
    PortBinding, RestartPolicy, RestartPolicyNameEnum, SecretSpec, ServiceSpec, ServiceSpecMode,
    ServiceSpecModeReplicated, TaskSpec, TaskSpecContainerSpec, TaskSpecContainerSpecFile,
    TaskSpecContainerSpecSecrets, TaskSpecPlacement,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, DownloadFromContainerOptionsBuilder, InspectServiceOptions,
    ListContainersOptionsBuilder, ListSecretsOptionsBuilder, ListTasksOptionsBuilder, RemoveContainerOptionsBuilder,
    RemoveVolumeOptionsBuilder, UpdateServiceOptionsBuilder, UploadToContainerOptionsBuilder,
};
use bollard::Docker;
use futures_util::future::join_all;
use futures_util::StreamExt;
use serde::Serialize;

use crate::error::{engine_message, Error, Result};
use crate::plan::{ModeRequest, RegistryObs};
use crate::probe;
use crate::seam::Nodes;
use crate::state::{RegistryMode, RegistryTls, Secret};
use crate::topology::REGISTRY_NODE_LABEL;

/// The stack's name, as in `docker stack deploy registry`.
pub const STACK: &str = "registry";
/// The service, as `docker stack deploy` names it.
pub const SERVICE: &str = "registry_registry";
/// The stack's network.
pub const NETWORK: &str = "registry_default";
/// The volume the registry keeps its data on (on the registry's node).
pub const VOLUME: &str = "registry_data";
/// The forwarder container on every node but the registry's (fallback mode).
pub const FORWARDER: &str = "lab-registry-forwarder";
/// Label on the forwarder naming the address it relays to.
pub const FORWARD_TO_LABEL: &str = "lab.forward-to";
/// Label saying how the forwarder listens: `loopback`, published on the node's 127.0.0.1 (and
/// ::1) only. Forwarders without it (older lab versions listened on every interface of the
/// node) are replaced.
pub const FORWARD_LISTEN_LABEL: &str = "lab.forward-listen";
/// The swarm secret holding the registry's HTTP secret.
pub const SECRET_NAME: &str = "lab-registry-http-secret";
/// The registry's port on every node.
pub const PORT: u16 = 5000;
/// The port a mutual-TLS registry publishes: port 5000 on every node is then its relay's,
/// on the node's loopback ([`crate::relay`]).
pub const TLS_PORT: u16 = 5443;
const NAMESPACE_LABEL: &str = "com.docker.stack.namespace";
const CONSTRAINT: &str = "node.labels.lab.registry==true";
/// The registry's environment: manifests can be deleted (`lab images rm`), and distribution
/// v3.0.0 (`registry:3`), which exports traces to `localhost:4318` unless told not to, does
/// not (later v3 images set this themselves; v2 ignores it).
const ENV: &[&str] = &["REGISTRY_STORAGE_DELETE_ENABLED=true", "OTEL_TRACES_EXPORTER=none"];
/// The variable that puts the registry in read-only mode (distribution's
/// `storage.maintenance.readonly`), set only while `lab images gc` runs.
///
/// Its value must be a YAML map: distribution reads `readonly` as a map and `enabled` in it.
/// The spelling `REGISTRY_STORAGE_MAINTENANCE_READONLY_ENABLED=true` does not work: it makes
/// registry 2.8 panic at start (distribution issue 2974) and v3 refuse its configuration.
pub const READ_ONLY_VAR: &str = "REGISTRY_STORAGE_MAINTENANCE_READONLY";
const READ_ONLY_VALUE: &str = r#"{"enabled":true}"#;

/// The forwarder's program, run by the image's `sh`. Its arguments come as positional
/// parameters (`$1` address, `$2` port), never pasted into the script. Alpine's busybox `nc`
/// (the official image) keeps listening with `-lk`; Debian's has no `-k` and wants `-ll`
/// (its help says "use -ll with -e for persistent server"): use `-lk` only where this `nc`
/// documents a `-k` option. Each connection forks `nc ADDR PORT`, so concurrent layer uploads
/// each get their own relay.
const FORWARD_SCRIPT: &str = r#"if nc --help 2>&1 | grep -qE '^[[:space:]]+-k'; then keep=-lk; else keep=-ll; fi
exec nc $keep -p "$2" -e nc "$1" "$2""#;

/// Wraps the registry image's own entrypoint and command: reads the HTTP secret from the
/// swarm secret's file into `REGISTRY_HTTP_SECRET` (which every distribution version reads),
/// then runs the image's program as it would have run (`"$@"`). A fixed script: nothing is
/// pasted into it.
const SECRET_SCRIPT: &str = r#"REGISTRY_HTTP_SECRET="$(cat "/run/secrets/$0")" || exit 1
export REGISTRY_HTTP_SECRET
exec "$@""#;

fn namespace() -> HashMap<String, String> {
    HashMap::from([(NAMESPACE_LABEL.to_string(), STACK.to_string())])
}

/// How long a forwarder waits for the engine to let go of the port after the mesh.
const PORT_RELEASE: Duration = Duration::from_secs(45);

/// Decides the registry mode: the forced one, or by looking for IPVS on the first manager.
pub async fn choose_mode(rt: &dyn Nodes) -> Result<(RegistryMode, String)> {
    if let ModeRequest::Force(m) = rt.desired().mode {
        return Ok((m, "--registry-mode".into()));
    }
    let first = rt.desired().topology.first_manager().name.clone();
    if !has_ipvs(rt, &first).await.map_err(|m| Error::node(&first, "look for IPVS", m))? {
        return Ok((
            RegistryMode::Fallback,
            format!("{first} has no IPVS: forwarders relay :{PORT} to the registry's node"),
        ));
    }
    // The mesh answers on 127.0.0.1 but, before Docker 29.8, its listener on [::]:PORT takes
    // connections to ::1 and never serves them (moby#53091), and `localhost` is ::1 first on
    // most distributions: `docker push localhost:5000/...` would hang. Every node's engine
    // must be one that serves ::1.
    for node in rt.desired().topology.nodes.iter().map(|n| n.name.clone()) {
        let e = rt.engine(&node).await?;
        let version = e.docker.version().await.map_err(|err| Error::engine(&node, "ask its engine's version", err))?;
        let version = version.version.unwrap_or_default();
        if !mesh_serves_ipv6_loopback(&version) {
            return Ok((
                RegistryMode::Fallback,
                format!(
                    "{first} has IPVS, but {node}'s Docker {version} would hang localhost:{PORT} on ::1 through the \
                     mesh (moby#53091, fixed in 29.8): forwarders relay :{PORT} to the registry's node"
                ),
            ));
        }
    }
    Ok((RegistryMode::Mesh, format!("{first} has IPVS and every engine serves ::1 through the ingress routing mesh")))
}

/// Whether the ingress routing mesh of Docker `version` serves connections to `[::1]:PORT`
/// (29.8 and later; moby#53091). A version lab cannot read is taken as not.
pub fn mesh_serves_ipv6_loopback(version: &str) -> bool {
    let mut parts = version.split(|c: char| !c.is_ascii_digit()).map(|p| p.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(major), Some(minor)) => (major, minor) >= (29, 8),
        _ => false,
    }
}

async fn has_ipvs(rt: &dyn Nodes, node: &str) -> std::result::Result<bool, String> {
    let cat: &[&str] = &["cat", "/proc/net/ip_vs"];
    let out = probe::on_node(rt, node, &[cat], &rt.desired().registry_image, Duration::from_secs(30)).await?;
    Ok(out.code == 0)
}

/// The command that runs the image's own `program` (its entrypoint and command) with the HTTP
/// secret in its environment.
fn secret_command() -> Vec<String> {
    vec!["sh".into(), "-c".into(), SECRET_SCRIPT.into(), SECRET_NAME.into()]
}

/// `tls`: the registry's TLS secrets ([`crate::tls::registry_secrets`]) in mutual mode, none
/// in open mode.
fn service_spec(
    image: &str,
    program: &[String],
    secret_id: &str,
    mode: RegistryMode,
    tls: &[TaskSpecContainerSpecSecrets],
) -> ServiceSpec {
    let mut env: Vec<String> = ENV.iter().map(|e| e.to_string()).collect();
    if !tls.is_empty() {
        env.extend(crate::tls::registry_env());
    }
    let mut labels = namespace();
    labels.insert("com.docker.stack.image".into(), image.into());
    ServiceSpec {
        name: Some(SERVICE.into()),
        labels: Some(labels),
        task_template: Some(TaskSpec {
            container_spec: Some(TaskSpecContainerSpec {
                image: Some(image.into()),
                labels: Some(namespace()),
                env: Some(env),
                command: Some(secret_command()),
                args: Some(program.to_vec()),
                secrets: Some(
                    [
                        vec![TaskSpecContainerSpecSecrets {
                            file: Some(TaskSpecContainerSpecFile {
                                name: Some(SECRET_NAME.into()),
                                uid: Some("0".into()),
                                gid: Some("0".into()),
                                // Readable by whatever user the image runs as; only the registry's
                                // own container sees the file.
                                mode: Some(0o444),
                            }),
                            secret_id: Some(secret_id.into()),
                            secret_name: Some(SECRET_NAME.into()),
                        }],
                        tls.to_vec(),
                    ]
                    .concat(),
                ),
                mounts: Some(vec![Mount {
                    target: Some("/var/lib/registry".into()),
                    source: Some(VOLUME.into()),
                    typ: Some(MountType::VOLUME),
                    volume_options: Some(MountVolumeOptions { labels: Some(namespace()), ..Default::default() }),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            placement: Some(TaskSpecPlacement { constraints: Some(vec![CONSTRAINT.into()]), ..Default::default() }),
            networks: Some(vec![NetworkAttachmentConfig {
                target: Some(NETWORK.into()),
                aliases: Some(vec!["registry".into()]),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        mode: Some(ServiceSpecMode {
            replicated: Some(ServiceSpecModeReplicated { replicas: Some(1) }),
            ..Default::default()
        }),
        endpoint_spec: Some(EndpointSpec {
            ports: Some(vec![EndpointPortConfig {
                protocol: Some(EndpointPortConfigProtocolEnum::TCP),
                target_port: Some(PORT as i64),
                published_port: Some(if tls.is_empty() { PORT } else { TLS_PORT } as i64),
                publish_mode: Some(match mode {
                    RegistryMode::Mesh => EndpointPortConfigPublishModeEnum::INGRESS,
                    RegistryMode::Fallback => EndpointPortConfigPublishModeEnum::HOST,
                }),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Where the registry runs now: its node, that node's engine and its task's container, for
/// [`crate::distribution`]. A registry with no running task is an error naming the cause.
pub async fn endpoint(rt: &dyn Nodes) -> Result<crate::distribution::Endpoint> {
    let step = "find the cluster's registry";
    let (mgr_name, mgr) = rt.manager().await?;
    let filters = HashMap::from([("service", vec![SERVICE]), ("desired-state", vec!["running"])]);
    let tasks = mgr
        .list_tasks(Some(ListTasksOptionsBuilder::new().filters(&filters).build()))
        .await
        .map_err(|e| Error::engine(&mgr_name, step, e))?;
    let running =
        tasks.iter().find(|t| t.status.as_ref().and_then(|s| s.state) == Some(bollard::models::TaskState::RUNNING));
    let Some(task) = running else {
        let why = match tasks.first().and_then(|t| t.status.as_ref()) {
            Some(s) => format!(
                "its task is {}{}",
                s.state.map(|s| s.to_string()).unwrap_or_default(),
                s.err.as_deref().map(|e| format!(": {e}")).unwrap_or_default()
            ),
            None if observe(&mgr).await.is_none() => "the swarm has no registry service".to_string(),
            None => "the registry service has no task".to_string(),
        };
        return Err(Error::node(&mgr_name, step, why).with_hint("`lab up` deploys it; `lab check` says more"));
    };
    let container = task
        .status
        .as_ref()
        .and_then(|s| s.container_status.as_ref())
        .and_then(|c| c.container_id.clone())
        .ok_or_else(|| Error::node(&mgr_name, step, "the registry's running task names no container"))?;
    let node_id = task.node_id.clone().unwrap_or_default();
    let swarm_node = mgr.inspect_node(&node_id).await.map_err(|e| Error::engine(&mgr_name, step, e))?;
    let labels = swarm_node.spec.and_then(|s| s.labels).unwrap_or_default();
    let node =
        labels.get("lab.node").cloned().or_else(|| swarm_node.description.and_then(|d| d.hostname)).unwrap_or(node_id);
    let docker = rt.engine(&node).await?.docker;
    // A registry deployed with mutual TLS is spoken to in TLS with the cluster's certificates.
    let tls = match observe(&mgr).await.and_then(|r| r.tls) {
        None => None,
        Some(_) => {
            let m = crate::tls::load(&crate::tls::dir(&rt.cluster_dir()))?.ok_or_else(|| {
                Error::node(
                    &node,
                    step,
                    "the registry requires a client certificate, and lab has none for this cluster",
                )
                .with_hint("`lab up` makes new certificates and gives them to the registry and every node")
            })?;
            Some(crate::tls::client_config(&m).map_err(|why| Error::node(&node, step, why))?)
        }
    };
    Ok(crate::distribution::Endpoint { node, docker, container, tls })
}

/// Reads the registry service from a manager, as the planner needs it (`running_on` is
/// filled in by the caller, who knows the nodes' names).
pub async fn observe(manager: &Docker) -> Option<RegistryObs> {
    let svc = manager.inspect_service(SERVICE, None::<InspectServiceOptions>).await.ok()?;
    let spec = svc.spec?;
    let cs = spec.task_template.as_ref()?.container_spec.as_ref()?;
    let image = cs.image.clone().unwrap_or_default();
    let image = image.split('@').next().unwrap_or_default().to_string();
    let port = spec.endpoint_spec.as_ref().and_then(|e| e.ports.as_ref()).and_then(|p| p.first().cloned());
    let mode = match port.as_ref().and_then(|p| p.publish_mode) {
        Some(EndpointPortConfigPublishModeEnum::HOST) => RegistryMode::Fallback,
        _ => RegistryMode::Mesh,
    };
    let spec_matches = spec_matches(&spec);
    let tls = crate::tls::deployed_fingerprint(
        cs.env.as_deref().unwrap_or_default(),
        cs.secrets.as_deref().unwrap_or_default(),
    );
    let read_only = is_read_only(cs.env.as_deref().unwrap_or_default());
    Some(RegistryObs { image, mode, spec_matches, running_on: None, tls, read_only })
}

/// Whether a service spec is lab's: the HTTP secret through lab's wrapper, one replica, lab's
/// environment (and nothing that makes the registry read-only), the pin, the volume and the
/// port. A spec that is not is redeployed by the next `lab up`, which is also how a registry
/// left read-only by an interrupted `lab images gc` becomes writable again.
fn spec_matches(spec: &ServiceSpec) -> bool {
    let Some(task) = spec.task_template.as_ref() else { return false };
    let Some(cs) = task.container_spec.as_ref() else { return false };
    let uses_secret =
        cs.secrets.as_ref().is_some_and(|s| s.iter().any(|s| s.secret_name.as_deref() == Some(SECRET_NAME)))
            && cs.command.as_ref() == Some(&secret_command());
    let replicas = spec.mode.as_ref().and_then(|m| m.replicated.as_ref()).and_then(|r| r.replicas);
    let port = spec.endpoint_spec.as_ref().and_then(|e| e.ports.as_ref()).and_then(|p| p.first());
    let tls = crate::tls::deployed_fingerprint(
        cs.env.as_deref().unwrap_or_default(),
        cs.secrets.as_deref().unwrap_or_default(),
    );
    let published = if tls.is_some() { TLS_PORT } else { PORT };
    uses_secret
        && replicas == Some(1)
        && env_matches(cs.env.as_deref().unwrap_or_default())
        && task
            .placement
            .as_ref()
            .and_then(|p| p.constraints.as_ref())
            .is_some_and(|c| c.iter().any(|c| c == CONSTRAINT))
        && cs.mounts.as_ref().is_some_and(|m| m.iter().any(|m| m.source.as_deref() == Some(VOLUME)))
        && port.is_some_and(|p| p.published_port == Some(published as i64) && p.target_port == Some(PORT as i64))
}

/// Whether a service's environment has all of lab's settings and does not make the registry
/// read-only (in any spelling of the variable).
fn env_matches(env: &[String]) -> bool {
    ENV.iter().all(|e| env.iter().any(|v| v == e)) && !env.iter().any(|v| is_read_only_var(v))
}

fn is_read_only_var(entry: &str) -> bool {
    entry.split('=').next().is_some_and(|name| name.starts_with(READ_ONLY_VAR))
}

/// The environment `env` with the registry read-only (`on`) or not: lab's read-only variable
/// added once, or every spelling of it removed.
fn with_read_only(env: &[String], on: bool) -> Vec<String> {
    let mut out: Vec<String> = env.iter().filter(|v| !is_read_only_var(v)).cloned().collect();
    if on {
        out.push(format!("{READ_ONLY_VAR}={READ_ONLY_VALUE}"));
    }
    out
}

/// Whether a container's environment has the registry read-only, as lab sets it.
pub fn is_read_only(env: &[String]) -> bool {
    env.iter().any(|v| *v == format!("{READ_ONLY_VAR}={READ_ONLY_VALUE}"))
}

/// The configuration file the image's own program names (`/etc/docker/registry/config.yml`
/// for registry:2, `/etc/distribution/config.yml` for registry:3): the last argument that is
/// a YAML file. `registry garbage-collect` must read the same file the registry serves with,
/// or it would look at another storage.
pub fn config_path(program: &[String]) -> Option<&str> {
    program.iter().rev().map(String::as_str).find(|a| a.ends_with(".yml") || a.ends_with(".yaml"))
}

/// The running service's program (the image's entrypoint and command, as lab deployed it),
/// read from the swarm.
pub async fn service_program(mgr_name: &str, mgr: &Docker) -> Result<Vec<String>> {
    let svc = mgr
        .inspect_service(SERVICE, None::<InspectServiceOptions>)
        .await
        .map_err(|e| Error::engine(mgr_name, format!("inspect service {SERVICE}"), e))?;
    Ok(svc.spec.and_then(|s| s.task_template).and_then(|t| t.container_spec).and_then(|c| c.args).unwrap_or_default())
}

/// Makes the registry read-only (`on`) or writable again, by updating its service's
/// environment; the swarm restarts its task. Nothing else in the spec changes.
pub async fn set_read_only(rt: &dyn Nodes, on: bool) -> Result<()> {
    let (mgr_name, mgr) = rt.manager().await?;
    let step = if on { "make the registry read-only" } else { "make the registry writable again" };
    let mut attempt = 0;
    loop {
        attempt += 1;
        let svc = mgr
            .inspect_service(SERVICE, None::<InspectServiceOptions>)
            .await
            .map_err(|e| Error::engine(&mgr_name, step, e))?;
        let version = svc.version.and_then(|v| v.index).unwrap_or_default();
        let mut spec = svc.spec.ok_or_else(|| Error::node(&mgr_name, step, "the service has no spec"))?;
        let Some(cs) = spec.task_template.as_mut().and_then(|t| t.container_spec.as_mut()) else {
            return Err(Error::node(&mgr_name, step, "the service has no container spec"));
        };
        let env = cs.env.clone().unwrap_or_default();
        let wanted = with_read_only(&env, on);
        if wanted == env {
            return Ok(());
        }
        cs.env = Some(wanted);
        let opts = UpdateServiceOptionsBuilder::new().version(version as i32).build();
        match mgr.update_service(SERVICE, spec, opts, None).await {
            Ok(_) => return Ok(()),
            Err(e) if crate::swarm::out_of_sequence(&e) && attempt < crate::swarm::UPDATE_ATTEMPTS => {
                tokio::time::sleep(Duration::from_millis(100 * attempt as u64)).await;
            }
            Err(e) => return Err(Error::engine(&mgr_name, step, e)),
        }
    }
}

/// The swarm secret's ID, made (32 random bytes) the first time. Swarm secrets cannot be read
/// back through the API, so lab never sees it again; the registry keeps the same secret
/// across every redeploy.
async fn ensure_secret(mgr_name: &str, mgr: &Docker) -> Result<String> {
    let step = format!("make the swarm secret {SECRET_NAME}");
    let filters = HashMap::from([("name", vec![SECRET_NAME])]);
    let found = mgr
        .list_secrets(Some(ListSecretsOptionsBuilder::new().filters(&filters).build()))
        .await
        .map_err(|e| Error::engine(mgr_name, &step, e))?;
    if let Some(id) = found
        .into_iter()
        .find(|s| s.spec.as_ref().and_then(|s| s.name.as_deref()) == Some(SECRET_NAME))
        .and_then(|s| s.id)
    {
        return Ok(id);
    }
    let value = Secret::random()?;
    let spec = SecretSpec {
        name: Some(SECRET_NAME.into()),
        labels: Some(namespace()),
        data: Some(base64(value.expose().as_bytes())),
        ..Default::default()
    };
    match mgr.create_secret(spec).await {
        Ok(r) => Ok(r.id),
        // Made concurrently: take that one.
        Err(bollard::errors::Error::DockerResponseServerError { status_code: 409, .. }) => {
            Box::pin(ensure_secret(mgr_name, mgr)).await
        }
        Err(e) => Err(Error::engine(mgr_name, step, e)),
    }
}

/// Standard base64 with padding, for the swarm secret's `Data`.
pub(crate) fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The image's own program: its entrypoint followed by its command, as `docker run` would run
/// it, read from the registry node's copy of the image.
async fn image_program(rt: &dyn Nodes, image: &str) -> Result<Vec<String>> {
    let node = rt.desired().topology.registry_node().name.clone();
    let step = format!("read the entrypoint of {image}");
    let docker = rt.engine(&node).await?.docker;
    let img = docker.inspect_image(image).await.map_err(|e| Error::engine(&node, &step, e))?;
    let cfg = img.config.unwrap_or_default();
    let mut program = cfg.entrypoint.unwrap_or_default();
    program.extend(cfg.cmd.unwrap_or_default());
    if program.is_empty() {
        return Err(Error::node(&node, step, format!("{image} has neither an entrypoint nor a command")));
    }
    Ok(program)
}

/// Creates or updates the stack: its overlay network and the service.
pub async fn deploy(rt: &dyn Nodes) -> Result<String> {
    let mode = rt.state().registry_mode.ok_or_else(|| Error::op("deploy the registry", "no registry mode chosen"))?;
    let (mgr_name, mgr) = rt.manager().await?;
    let fail = |step: &str, e: bollard::errors::Error| Error::engine(&mgr_name, step, e);
    if mgr.inspect_network(NETWORK, None).await.is_err() {
        let req = NetworkCreateRequest {
            name: NETWORK.into(),
            driver: Some("overlay".into()),
            labels: Some(namespace()),
            ..Default::default()
        };
        match mgr.create_network(req).await {
            Ok(_) => {}
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 409, .. }) => {}
            Err(e) => return Err(fail(&format!("create network {NETWORK}"), e)),
        }
    }
    let image = &rt.desired().registry_image;
    let secret_id = ensure_secret(&mgr_name, &mgr).await?;
    let program = image_program(rt, image).await?;
    let material = match rt.desired().tls {
        RegistryTls::Open => None,
        RegistryTls::Mutual => Some(crate::tls::load(&crate::tls::dir(&rt.cluster_dir()))?.ok_or_else(|| {
            Error::op("deploy the registry with mutual TLS", "lab has made no certificates for this cluster yet")
        })?),
    };
    let tls = match &material {
        Some(m) => crate::tls::registry_secrets(&mgr_name, &mgr, m, &namespace()).await?,
        None => Vec::new(),
    };
    // The swarm updates the service's object on its own (an update's status), so a version
    // read may be stale by the time of the update: read it again and retry.
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut spec = service_spec(image, &program, &secret_id, mode, &tls);
        match mgr.inspect_service(SERVICE, None::<InspectServiceOptions>).await {
            Ok(svc) => {
                let version = svc.version.and_then(|v| v.index).unwrap_or_default();
                // A task that is not running (stopped behind lab's back, or failed to start)
                // is restarted even when the spec is unchanged.
                let force = svc.spec.and_then(|s| s.task_template).and_then(|t| t.force_update).unwrap_or(0);
                let bump = if task_running(&mgr).await { 0 } else { 1 };
                if let Some(t) = spec.task_template.as_mut() {
                    t.force_update = Some(force + bump);
                }
                let opts = UpdateServiceOptionsBuilder::new().version(version as i32).build();
                match mgr.update_service(SERVICE, spec, opts, None).await {
                    Ok(_) => break,
                    Err(e) if crate::swarm::out_of_sequence(&e) && attempt < crate::swarm::UPDATE_ATTEMPTS => {
                        tokio::time::sleep(Duration::from_millis(100 * attempt as u64)).await;
                    }
                    Err(e) => return Err(fail(&format!("update service {SERVICE}"), e)),
                }
            }
            Err(_) => {
                mgr.create_service(spec, None).await.map_err(|e| fail(&format!("create service {SERVICE}"), e))?;
                break;
            }
        }
    }
    crate::tls::remove_stale_secrets(&mgr, material.as_ref().map(|m| m.registry_fingerprint()).as_deref()).await;
    sweep_moves(rt).await;
    let tls = if material.is_some() { ", mutual TLS" } else { "" };
    Ok(format!("{image}, {mode}{tls}, pinned to {}", rt.desired().topology.registry_node().name))
}

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
    let kind = crate::plan::Forwarder::wanted(rt.desired().tls, mode, node == reg);
    let step = match kind {
        crate::plan::Forwarder::Relay => "start the relay to the mutual-TLS registry",
        _ => "start the registry forwarder",
    };
    remove_forwarder(node, docker).await?;
    let target = match kind {
        crate::plan::Forwarder::None if mode == RegistryMode::Mesh => return Ok("not needed: mesh".into()),
        crate::plan::Forwarder::None => return Ok("not needed: the registry runs here".into()),
        _ => rt.engine(&reg).await?.advertise_addr,
    };
    let label = kind.label(&target).unwrap_or_default();
    let relay = kind == crate::plan::Forwarder::Relay;
    // The forwarder's program and what it needs: busybox `nc` from the registry image, or lab
    // itself (packed into the container before it starts) with the node's client certificate.
    let (entrypoint, mounts, archive) = match kind {
        crate::plan::Forwarder::Relay => {
            let info = docker.info().await.map_err(|err| Error::engine(node, step, err))?;
            crate::relay::runs_on(
                info.os_type.as_deref().unwrap_or("linux"),
                info.architecture.as_deref().unwrap_or_default(),
            )
            .map_err(|why| {
                Error::node(node, step, why).with_hint(
                    "run lab from a Linux machine of the nodes' architecture, or use `--registry-tls open` \
                     behind a firewall",
                )
            })?;
            let program = crate::relay::program().map_err(|why| Error::node(node, step, why))?;
            let mut entrypoint = program.entrypoint.clone();
            entrypoint.extend([
                "--listen".to_string(),
                format!("127.0.0.1:{PORT}"),
                "--listen".into(),
                format!("[::1]:{PORT}"),
                "--to".into(),
                format!("{}:{TLS_PORT}", crate::plan::bracket(&target)),
                "--certs".into(),
                crate::relay::CERTS_MOUNT.into(),
            ]);
            let certs = Mount {
                target: Some(crate::relay::CERTS_MOUNT.into()),
                source: Some(format!("/etc/docker/certs.d/{}", crate::tls::CERTS_DIRS[0])),
                typ: Some(MountType::BIND),
                read_only: Some(true),
                ..Default::default()
            };
            (entrypoint, Some(vec![certs]), Some(program.archive))
        }
        _ => (
            vec![
                "sh".into(),
                "-c".into(),
                FORWARD_SCRIPT.into(),
                "lab-forwarder".into(),
                target.clone(),
                PORT.to_string(),
            ],
            None,
            None,
        ),
    };
    let create = |loopbacks: &[&str]| {
        let port = format!("{PORT}/tcp");
        let bindings: Vec<PortBinding> = loopbacks
            .iter()
            .map(|ip| PortBinding { host_ip: Some(ip.to_string()), host_port: Some(PORT.to_string()) })
            .collect();
        ContainerCreateBody {
            image: Some(rt.desired().registry_image.clone()),
            entrypoint: Some(entrypoint.clone()),
            cmd: Some(vec![]),
            // The relay's files are root's, 0600 for the key: whatever user the image names.
            user: archive.as_ref().map(|_| "0:0".to_string()),
            exposed_ports: (!relay).then(|| vec![port.clone()]),
            labels: Some(HashMap::from([
                ("lab.cluster".to_string(), rt.desired().topology.cluster.to_string()),
                (FORWARD_TO_LABEL.to_string(), label.clone()),
                (FORWARD_LISTEN_LABEL.to_string(), "loopback".to_string()),
            ])),
            host_config: Some(HostConfig {
                network_mode: Some(if relay { "host" } else { "bridge" }.into()),
                port_bindings: (!relay).then(|| HashMap::from([(port, Some(bindings))])),
                mounts: mounts.clone(),
                restart_policy: Some(RestartPolicy {
                    name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    };
    let start = |body: ContainerCreateBody| {
        let archive = archive.clone();
        async move {
            docker
                .create_container(Some(CreateContainerOptionsBuilder::new().name(FORWARDER).build()), body)
                .await
                .map_err(|err| engine_message(&err))?;
            if let Some(archive) = archive {
                docker
                    .upload_to_container(
                        FORWARDER,
                        Some(UploadToContainerOptionsBuilder::new().path("/").build()),
                        bollard::body_full(archive),
                    )
                    .await
                    .map_err(|err| engine_message(&err))?;
            }
            docker.start_container(FORWARDER, None).await.map_err(|err| engine_message(&err))
        }
    };
    // Both loopbacks where the node has IPv6; where it has none, publishing on [::1] fails
    // at start, and 127.0.0.1 alone is all `localhost` can mean there.
    // After a switch from the mesh, the engine lets go of the ingress listener on :PORT a few
    // seconds after the service changed: until then, publishing says "address already in use".
    let start_when_free = |loopbacks: &'static [&'static str]| async move {
        let since = Instant::now();
        loop {
            match start(create(loopbacks)).await {
                Err(why) if why.contains("address already in use") && since.elapsed() < PORT_RELEASE => {
                    tracing::debug!(node, cause = %why, "port {PORT} is still held; trying again");
                    remove_forwarder(node, docker).await.map_err(|e| e.to_string())?;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                other => return other,
            }
        }
    };
    if relay {
        // In the node's own network namespace, listening on its loopbacks itself: nothing
        // but the node's own processes reaches it, not even a container on the node's
        // bridge. It waits for a port the registry still holds, and does without [::1] where
        // the node has no IPv6 loopback.
        start(create(&[])).await.map_err(|err| Error::node(node, step, err))?;
        return Ok(format!(
            "relaying localhost:{PORT} (127.0.0.1, and [::1] where the node has it) to {reg} ({target}:{TLS_PORT}) \
             in mutual TLS"
        ));
    }
    let listens = match start_when_free(&["127.0.0.1", "::1"]).await {
        Ok(()) => "127.0.0.1 and [::1]",
        Err(first) => {
            tracing::debug!(node, cause = %first, "the forwarder cannot publish on [::1]; 127.0.0.1 only");
            remove_forwarder(node, docker).await?;
            start_when_free(&["127.0.0.1"]).await.map_err(|err| Error::node(node, step, err))?;
            "127.0.0.1"
        }
    };
    Ok(format!("relaying {listens}:{PORT} to {reg} ({target})"))
}

async fn remove_forwarder(node: &str, docker: &Docker) -> Result<()> {
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

/// The filter for the registry service's task containers on a node.
pub(crate) fn task_filter() -> HashMap<&'static str, Vec<String>> {
    HashMap::from([("label", vec![format!("com.docker.swarm.service.name={SERVICE}")])])
}

/// Waits, at most `limit`, until no task container of the registry is on `docker` (with
/// `stopped`, not even a stopped one); the error says what never happened.
pub(crate) async fn wait_tasks_gone(
    node: &str,
    docker: &Docker,
    stopped: bool,
    what: &str,
    limit: Duration,
) -> Result<()> {
    let start = Instant::now();
    loop {
        let opts = ListContainersOptionsBuilder::new().all(stopped).filters(&task_filter()).build();
        let tasks =
            docker.list_containers(Some(opts)).await.map_err(|e| Error::engine(node, format!("wait for {what}"), e))?;
        if tasks.is_empty() {
            return Ok(());
        }
        if start.elapsed() > limit {
            return Err(Error::Timeout { node: node.into(), what: what.into(), secs: limit.as_secs(), hint: None });
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Label on the stopped helper containers a data move makes (`lab-registry-move-*`): [`INCOMING`]
/// on the destination, [`OUTGOING`] on the source.
pub const MOVE_LABEL: &str = "lab.registry.move";
/// The destination's helper: it is made first, with the volume, and removed only once the copy
/// is complete, so while it exists the volume beside it holds a partial copy.
pub const INCOMING: &str = "incoming";
/// The source's helper: nothing depends on it; a leftover is removed.
pub const OUTGOING: &str = "outgoing";

/// What a node holds of the registry's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Data {
    /// No `registry_data` volume.
    None,
    /// The volume, under the marker of a move that never finished: a partial copy, which never
    /// counts as the registry's data.
    Partial,
    /// The volume, whole.
    Complete,
}

/// What the node holds of the registry's data: a `registry_data` volume counts only when no
/// incoming move helper marks it as a copy still under way.
pub async fn data_on(docker: &Docker) -> Data {
    if docker.inspect_volume(VOLUME).await.is_err() {
        return Data::None;
    }
    if move_helpers(docker, Some(INCOMING)).await.is_empty() {
        Data::Complete
    } else {
        Data::Partial
    }
}

/// The move helpers on a node (of one kind, or both), by name.
async fn move_helpers(docker: &Docker, kind: Option<&str>) -> Vec<String> {
    let label = match kind {
        Some(k) => format!("{MOVE_LABEL}={k}"),
        None => MOVE_LABEL.to_string(),
    };
    let filters = HashMap::from([("label", vec![label])]);
    let opts = ListContainersOptionsBuilder::new().all(true).filters(&filters).build();
    docker
        .list_containers(Some(opts))
        .await
        .unwrap_or_default()
        .into_iter()
        .filter_map(|c| c.names.and_then(|n| n.first().map(|n| n.trim_start_matches('/').to_string())))
        .collect()
}

/// Removes the move helpers of `kind` (both kinds: `None`) on a node. An incoming one goes only
/// where its partial copy goes too, or where a move that finished made it whole.
pub async fn remove_move_helpers(node: &str, docker: &Docker, kind: Option<&str>) -> Result<()> {
    for name in move_helpers(docker, kind).await {
        let opts = RemoveContainerOptionsBuilder::new().force(true).v(true).build();
        match docker.remove_container(&name, Some(opts)).await {
            Ok(()) | Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => {}
            Err(e) => return Err(Error::engine(node, format!("remove the data move's helper {name}"), e)),
        }
    }
    Ok(())
}

/// Moves the registry's data from `from` to the registry's node (`to`), through the engines'
/// archive API: the service is scaled to zero so nothing writes, `registry_data` on `from` is
/// read as a tar stream by a stopped helper container and written into `registry_data` on
/// `to` the same way. Returns what it moved.
///
/// An interrupted move (lab killed, a node lost) must never pass for a finished one: the
/// destination's helper, labelled [`INCOMING`], is made first, together with the volume it
/// mounts, and removed only once the copy is complete. While it exists, observation counts the
/// destination's volume as a partial copy ([`Data::Partial`]), so the planner moves the data
/// again from `from`, which keeps the only complete copy until then; `from`'s volume is
/// removed last of all.
///
/// The data is added to what `to` has, never put in its place. A registry's storage is
/// content-addressed blobs plus small link files per repository and tag, so the union of two
/// is a registry serving both. That is what a user expects when the task ran on `from` behind
/// lab's back (its pin moved by hand) while `to` kept every image pushed before: the images
/// pushed meanwhile join them, and a tag pushed on both ends as it was last pushed, on
/// `from`. Where `to` has nothing (a new node), adding is copying.
pub async fn move_data(rt: &dyn Nodes, from: &str, to: &str) -> Result<String> {
    let step = format!("move registry data from {from} to {to}");
    let image = rt.desired().registry_image.clone();
    let src = rt.engine(from).await?.docker;
    let dst = rt.engine(to).await?.docker;
    // Nothing may write while the data travels.
    if let Ok((mgr_name, mgr)) = rt.manager().await {
        if let Ok(svc) = mgr.inspect_service(SERVICE, None::<InspectServiceOptions>).await {
            let version = svc.version.and_then(|v| v.index).unwrap_or_default();
            if let Some(mut spec) = svc.spec {
                spec.mode = Some(ServiceSpecMode {
                    replicated: Some(ServiceSpecModeReplicated { replicas: Some(0) }),
                    ..Default::default()
                });
                mgr.update_service(
                    SERVICE,
                    spec,
                    UpdateServiceOptionsBuilder::new().version(version as i32).build(),
                    None,
                )
                .await
                .map_err(|e| Error::engine(&mgr_name, format!("stop service {SERVICE}"), e))?;
            }
        }
    }
    wait_tasks_gone(from, &src, false, "the registry task to stop before its data moves", Duration::from_secs(60))
        .await?;
    let helper = format!("lab-registry-move-{}", probe::random_suffix());
    let make_helper = |d: Docker, kind: &'static str| {
        let helper = helper.clone();
        let image = image.clone();
        let cluster = rt.desired().topology.cluster.to_string();
        async move {
            let labels = HashMap::from([
                (crate::probe::CLUSTER_LABEL.to_string(), cluster),
                (MOVE_LABEL.to_string(), kind.to_string()),
            ]);
            let body = ContainerCreateBody {
                image: Some(image),
                entrypoint: Some(vec!["true".into()]),
                cmd: Some(vec![]),
                labels: Some(labels),
                host_config: Some(HostConfig {
                    // A missing volume is made with the container, in the same request, so
                    // that it never exists without the marker of a copy under way.
                    mounts: Some(vec![Mount {
                        target: Some("/var/lib/registry".into()),
                        source: Some(VOLUME.into()),
                        typ: Some(MountType::VOLUME),
                        volume_options: Some(MountVolumeOptions { labels: Some(namespace()), ..Default::default() }),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
                ..Default::default()
            };
            d.create_container(Some(CreateContainerOptionsBuilder::new().name(&helper).build()), body)
                .await
                .map(|_| ())
                .map_err(|e| engine_message(&e))
        }
    };
    // Helpers an interrupted move left: the source's go; the destination's stays until this
    // move completes, since its volume may still be a partial copy.
    remove_move_helpers(from, &src, Some(OUTGOING)).await?;
    let had = data_on(&dst).await == Data::Complete;
    make_helper(dst.clone(), INCOMING).await.map_err(|m| Error::node(to, &step, m))?;
    let result = async {
        make_helper(src.clone(), OUTGOING).await.map_err(|m| Error::node(from, &step, m))?;
        let moved = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = moved.clone();
        let tar = src
            .download_from_container(
                &helper,
                Some(DownloadFromContainerOptionsBuilder::new().path("/var/lib/registry").build()),
            )
            .map(move |chunk| {
                let chunk = chunk.map_err(|e| std::io::Error::other(engine_message(&e)))?;
                counter.fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::Relaxed);
                Ok::<_, std::io::Error>(chunk)
            });
        dst.upload_to_container(
            &helper,
            Some(UploadToContainerOptionsBuilder::new().path("/var/lib").build()),
            bollard::body_try_stream(tar),
        )
        .await
        .map_err(|e| Error::engine(to, &step, e))?;
        Ok::<_, Error>(moved.load(std::sync::atomic::Ordering::Relaxed))
    }
    .await;
    let bytes = match result {
        Ok(bytes) => bytes,
        Err(e) => {
            // `from` keeps the only complete copy; the destination's marker stays.
            let _ = remove_move_helpers(from, &src, Some(OUTGOING)).await;
            return Err(e);
        }
    };
    // The copy is whole: only now does the destination hold the registry's data.
    remove_move_helpers(to, &dst, Some(INCOMING)).await?;
    // The old copy goes, so that it is never taken for the registry's data again; if lab is
    // stopped before that, the source's helper says so to the next deploy ([`sweep_moves`]).
    // A copy that will not go is left (the registry's node now has the data, which is what
    // counts) and said.
    if let Err(e) = drop_old_copy(from, &src).await {
        tracing::warn!("the old copy of the registry's data stays: {e}");
    }
    let mut what = format!("moved {:.1} MB of registry data from {from} to {to}", bytes as f64 / 1e6);
    if had {
        what.push_str(&format!(", added to the data {to} had"));
    }
    rt.progress().note(&what);
    Ok(what)
}

/// Removes the copy of the registry's data a finished move left on `node`: the old task's
/// exited containers the swarm keeps (they still name the volume), the move's source helper,
/// and the volume.
async fn drop_old_copy(node: &str, docker: &Docker) -> Result<()> {
    let history = ListContainersOptionsBuilder::new().all(true).filters(&task_filter()).build();
    for c in docker.list_containers(Some(history)).await.unwrap_or_default() {
        if let Some(id) = c.id {
            let _ = docker.remove_container(&id, None).await;
        }
    }
    remove_move_helpers(node, docker, Some(OUTGOING)).await?;
    match docker.remove_volume(VOLUME, Some(RemoveVolumeOptionsBuilder::new().force(true).build())).await {
        Ok(()) | Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Ok(()),
        Err(e) => Err(Error::engine(node, format!("remove volume {VOLUME}"), e)),
    }
}

/// What an interrupted move left on the nodes other than the registry's: source helpers, and,
/// once the registry's node holds a complete copy, the old copies they mark. A move scales
/// the registry to zero first, so an interrupted one always leaves a deploy to do, which
/// calls this. Best effort: what cannot be removed now is tried again by the next deploy.
async fn sweep_moves(rt: &dyn Nodes) {
    let reg_node = rt.desired().topology.registry_node().name.clone();
    let reg_complete = match rt.try_engine(&reg_node, Duration::from_secs(3)).await {
        Ok(e) => data_on(&e.docker).await == Data::Complete,
        Err(_) => false,
    };
    for node in rt.desired().topology.nodes.iter().filter(|n| n.name != reg_node) {
        let Ok(e) = rt.try_engine(&node.name, Duration::from_secs(3)).await else { continue };
        if move_helpers(&e.docker, Some(OUTGOING)).await.is_empty() {
            continue;
        }
        let swept = if reg_complete {
            drop_old_copy(&node.name, &e.docker).await
        } else {
            remove_move_helpers(&node.name, &e.docker, Some(OUTGOING)).await
        };
        if let Err(err) = swept {
            tracing::warn!("what an interrupted move left on {} stays for now: {err}", node.name);
        }
    }
}

/// One URL's answer on one node.
#[derive(Debug, Clone, Serialize)]
pub struct UrlCheck {
    /// The URL, as fetched from inside the node.
    pub url: String,
    /// Whether it answered `{}`.
    pub ok: bool,
    /// What it answered, or why not.
    pub answer: String,
}

/// The registry check on one node.
#[derive(Debug, Clone, Serialize)]
pub struct NodeCheck {
    /// The node.
    pub node: String,
    /// Every URL answered `{}`, and the node's dockerd reached the registry.
    pub ok: bool,
    /// One line per URL.
    pub urls: Vec<UrlCheck>,
    /// Whether the node's own dockerd reaches `localhost:5000` (what `docker push` and
    /// `pull` need; curl may get through where dockerd does not). `None`: not asked (the
    /// quick passes of [`wait_ready`], or an engine that does not answer).
    pub engine: Option<crate::reach::EngineCheck>,
    /// Why not, when lab could tell.
    pub explanation: Option<String>,
}

impl NodeCheck {
    fn with_engine(mut self, engine: crate::reach::EngineCheck) -> NodeCheck {
        self.ok = self.ok && engine.ok;
        self.engine = Some(engine);
        self
    }
}

/// The URLs the seed checks on every node, and the `localhost` spelling that breaks when it
/// resolves to `::1` and nothing listens there.
pub const CHECK_URLS: [&str; 2] = ["http://127.0.0.1:5000/v2/", "http://localhost:5000/v2/"];

/// The cluster's CA as every node has it (mutual TLS): the refusal check trusts it, so a
/// refusal is for the missing client certificate, not for an unknown server.
const NODE_CA: &str = "/etc/docker/certs.d/localhost:5000/ca.crt";

/// curl's arguments for `urls` (busybox `wget` where there is no curl). In mutual TLS too:
/// the node's relay answers them.
fn curl_commands(urls: &[&str]) -> Vec<Vec<String>> {
    let mut curl: Vec<String> = ["curl", "-s", "-m", "5"].map(String::from).to_vec();
    curl.extend(urls.iter().map(|u| u.to_string()));
    let mut wget: Vec<String> = ["wget", "-q", "-O-"].map(String::from).to_vec();
    wget.extend(urls.iter().map(|u| u.to_string()));
    vec![curl, wget]
}

/// Runs the first of `commands` the node has (see [`probe::on_node`]).
async fn fetch(
    rt: &dyn Nodes,
    node: &str,
    commands: &[Vec<String>],
) -> std::result::Result<probe::ProbeOutput, String> {
    let argvs: Vec<Vec<&str>> = commands.iter().map(|c| c.iter().map(String::as_str).collect()).collect();
    let refs: Vec<&[&str]> = argvs.iter().map(Vec::as_slice).collect();
    probe::on_node(rt, node, &refs, &rt.desired().registry_image, Duration::from_secs(20)).await
}

/// Mutual TLS: a client on the nodes' network without the certificate must get nothing, from
/// `node`: not from the registry's TLS port at the registry node's address (in TLS, trusting
/// the CA and presenting nothing, nor in plain HTTP), and not from port 5000 at this node's
/// own address, which only the node itself reaches through its loopback.
async fn check_refusal(rt: &dyn Nodes, node: &str) -> Vec<UrlCheck> {
    let reg = rt.desired().topology.registry_node().name.clone();
    let (Ok(here), Ok(there)) = (rt.engine(node).await, rt.engine(&reg).await) else {
        return vec![UrlCheck {
            url: "the registry without a client certificate".into(),
            ok: false,
            answer: "could not ask: an engine does not answer".into(),
        }];
    };
    let reg_addr = crate::plan::bracket(&there.advertise_addr);
    let tls_url = format!("https://{reg_addr}:{TLS_PORT}/v2/");
    let plain_tls = tls_url.replacen("https://", "http://", 1);
    // curl asks for `localhost` (a name the registry's certificate has) at the registry node's
    // address, so what refuses is the missing client certificate, not the name.
    let resolve = format!("localhost:{TLS_PORT}:{}", there.advertise_addr);
    let by_name = format!("https://localhost:{TLS_PORT}/v2/");
    let relay_url = format!("http://{}:{PORT}/v2/", crate::plan::bracket(&here.advertise_addr));
    let curl = |args: &[&str]| -> Vec<String> {
        ["curl", "-s", "-m", "5"].iter().chain(args).map(|a| a.to_string()).collect()
    };
    // No `-T`: Debian's busybox wget crashes on it, which would read as a refusal; the
    // timeout around the probe bounds it.
    let wget = |url: &str| -> Vec<String> { ["wget", "-q", "-O-", url].map(String::from).to_vec() };
    let mut out = Vec::new();
    for (what, argvs) in [
        (
            format!("{tls_url} without a client certificate"),
            vec![curl(&["--cacert", NODE_CA, "--resolve", &resolve, &by_name]), wget(&tls_url)],
        ),
        (format!("{plain_tls} (plain HTTP)"), vec![curl(&[&plain_tls]), wget(&plain_tls)]),
        (format!("{relay_url} (the relay, from off the node's loopback)"), vec![curl(&[&relay_url]), wget(&relay_url)]),
    ] {
        let r = fetch(rt, node, &argvs).await;
        let (ok, answer) = match r {
            Ok(o) if o.output.contains("\"repositories\"") || o.output.trim() == "{}" => {
                (false, format!("served a client without the certificate: {}", o.output.trim()))
            }
            Ok(o) if o.code == 0 && o.output.contains("HTTP request to an HTTPS server") => {
                (true, "refused: the registry speaks only TLS".into())
            }
            Ok(o) if o.code == 127 => {
                (false, format!("could not ask: no curl or wget on the node ({})", o.output.trim()))
            }
            Ok(o) if o.code != 0 => (true, format!("refused: {}", crate::curl::describe_exit(o.code, &o.output))),
            Ok(o) => (false, format!("exit 0 with an unexpected answer: {}", o.output.trim())),
            Err(e) => (false, format!("could not run the probe: {e}")),
        };
        out.push(UrlCheck { url: what, ok, answer });
    }
    out
}

/// Fetches [`CHECK_URLS`] from inside `node`, and asks the node's dockerd to reach
/// `localhost:5000` ([`crate::reach`]), both at once. In mutual TLS, also checks that a
/// client without the certificate is refused.
pub async fn check_node(rt: &dyn Nodes, node: &str) -> NodeCheck {
    let refusal = async {
        match rt.desired().tls {
            RegistryTls::Mutual => check_refusal(rt, node).await,
            RegistryTls::Open => Vec::new(),
        }
    };
    let (mut urls, engine, refused) = tokio::join!(check_node_with(rt, node, true), check_engine(rt, node), refusal);
    if !urls.urls.is_empty() {
        urls.ok = urls.ok && refused.iter().all(|u| u.ok);
        urls.urls.extend(refused);
    }
    match engine {
        Some(engine) => urls.with_engine(engine),
        None => urls,
    }
}

/// The engine-level check on `node`; `None` if its engine does not answer (the URL check
/// says so already).
async fn check_engine(rt: &dyn Nodes, node: &str) -> Option<crate::reach::EngineCheck> {
    let docker = rt.engine(node).await.ok()?.docker;
    Some(crate::reach::check(&docker).await)
}

/// [`CHECK_URLS`] on `node`; without `detailed`, a failure is not broken down by URL (for
/// polling).
async fn check_node_with(rt: &dyn Nodes, node: &str, detailed: bool) -> NodeCheck {
    let failed = |explanation: Option<String>| NodeCheck {
        node: node.into(),
        ok: false,
        urls: Vec::new(),
        engine: None,
        explanation,
    };
    if let Err(e) = rt.engine(node).await {
        return failed(Some(e.to_string()));
    }
    // Both URLs in one command first (the common, healthy case: one exec per node); one
    // command per URL only to tell which fails.
    let both = fetch(rt, node, &curl_commands(&CHECK_URLS)).await;
    if matches!(&both, Ok(out) if out.code == 0 && out.output.trim() == "{}{}") {
        let urls = CHECK_URLS.iter().map(|u| UrlCheck { url: u.to_string(), ok: true, answer: "{}".into() }).collect();
        return NodeCheck { node: node.into(), ok: true, urls, engine: None, explanation: None };
    }
    if !detailed {
        return failed(None);
    }
    let urls = join_all(CHECK_URLS.iter().map(|url| async move {
        // curl as in the seed, else busybox wget (no `-T`: Debian's busybox wget crashes on
        // it; the timeout around the probe bounds it).
        let r = fetch(rt, node, &curl_commands(&[url])).await;
        let (ok, answer) = match r {
            Ok(out) if out.code == 0 && out.output.trim() == "{}" => (true, "{}".to_string()),
            Ok(out) => (false, crate::curl::describe_exit(out.code, &out.output)),
            Err(e) => (false, format!("could not run the probe: {e}")),
        };
        UrlCheck { url: url.to_string(), ok, answer }
    }))
    .await;
    let ok = urls.iter().all(|u| u.ok);
    NodeCheck { node: node.into(), ok, urls, engine: None, explanation: None }
}

/// Checks every node concurrently and explains each failure.
pub async fn check_all(rt: &dyn Nodes) -> Vec<NodeCheck> {
    let nodes: Vec<String> = rt.desired().topology.nodes.iter().map(|n| n.name.clone()).collect();
    let mut checks = join_all(nodes.iter().map(|n| check_node(rt, n))).await;
    if checks.iter().any(|c| !c.ok) {
        let why = diagnose_service(rt).await;
        for c in checks.iter_mut().filter(|c| !c.ok) {
            if c.explanation.is_some() {
                continue;
            }
            // Where curl gets `{}` and only dockerd fails, the registry and the forwarder
            // are fine: the engine check's own explanation is the one that holds.
            let engine_only = !c.urls.is_empty() && c.urls.iter().all(|u| u.ok);
            c.explanation = match c.engine.as_ref().and_then(|e| e.explanation()) {
                Some(e) if engine_only => Some(e),
                _ => Some(explain_node(rt, &c.node, why.as_deref()).await),
            };
        }
    }
    checks
}

/// Waits, at most `timeout`, until every node answers `{}` and every node's dockerd reaches
/// `localhost:5000`; the error names the nodes that never did and why.
///
/// The engine-level check runs once curl gets `{}` everywhere. It is asked again only while
/// its failures may pass (a refused connection while the registry settles): a node where
/// dockerd's connection hangs costs dockerd's own timeout (25 s on Docker 20.10) per question,
/// and does not heal by waiting.
pub async fn wait_ready(rt: &dyn Nodes, timeout: Duration) -> Result<Vec<NodeCheck>> {
    let start = Instant::now();
    let nodes: Vec<String> = rt.desired().topology.nodes.iter().map(|n| n.name.clone()).collect();
    // Until the registry's task runs, asking the nodes only loads a machine that is busy
    // starting it; a manager's task list is cheap to poll.
    if let Ok((_, mgr)) = rt.manager().await {
        while start.elapsed() < timeout && !task_running(&mgr).await {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    loop {
        let quick = join_all(nodes.iter().map(|n| check_node_with(rt, n, false))).await;
        if quick.iter().all(|c| c.ok) {
            let engines = join_all(nodes.iter().map(|n| check_engine(rt, n))).await;
            let checks: Vec<NodeCheck> = quick
                .into_iter()
                .zip(engines)
                .map(|(c, e)| {
                    c.with_engine(e.unwrap_or_else(|| {
                        crate::reach::EngineCheck::unasked("its Docker engine does not answer".into())
                    }))
                })
                .collect();
            if checks.iter().all(|c| c.ok) {
                return Ok(checks);
            }
            let hangs = checks.iter().filter_map(|c| c.engine.as_ref()).any(|e| e.reach == crate::reach::Reach::Hangs);
            // A dockerd refused for want of a client certificate will not get one by waiting.
            let no_cert =
                checks.iter().filter_map(|c| c.engine.as_ref()).any(|e| crate::tls::engine_refused(&e.answer));
            if hangs || no_cert || start.elapsed() >= timeout {
                return Err(engine_error(&checks));
            }
        } else if start.elapsed() >= timeout {
            // One detailed pass, to say which URL fails where and why.
            let checks = check_all(rt).await;
            if checks.iter().all(|c| c.ok) {
                return Ok(checks);
            }
            let bad: Vec<&NodeCheck> = checks.iter().filter(|c| !c.ok).collect();
            let names: Vec<&str> = bad.iter().map(|c| c.node.as_str()).collect();
            let why: Vec<String> =
                bad.iter().map(|c| format!("{}: {}", c.node, c.explanation.clone().unwrap_or_default())).collect();
            return Err(Error::Timeout {
                node: names.join(", "),
                what: format!("{{}} from http://127.0.0.1:{PORT}/v2/ and http://localhost:{PORT}/v2/"),
                secs: timeout.as_secs(),
                hint: Some(why.join("; ")),
            });
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The error for nodes where curl gets `{}` but dockerd does not reach the registry: names
/// them, with each one's explanation, and a hint where the cause is known (issue 8).
fn engine_error(checks: &[NodeCheck]) -> Error {
    let bad: Vec<(&str, &crate::reach::EngineCheck, String)> = checks
        .iter()
        .filter_map(|c| {
            let e = c.engine.as_ref()?;
            Some((c.node.as_str(), e, e.explanation()?))
        })
        .collect();
    let names: Vec<&str> = bad.iter().map(|(n, _, _)| *n).collect();
    let message = match bad.as_slice() {
        [(_, _, why)] => why.clone(),
        _ => bad.iter().map(|(n, _, why)| format!("{n}: {why}")).collect::<Vec<_>>().join("; "),
    };
    let err = Error::node(names.join(", "), format!("ask the node's dockerd for localhost:{PORT}"), message);
    if bad.iter().any(|(_, e, _)| crate::tls::engine_refused(&e.answer)) {
        err.with_hint(crate::tls::ENGINE_HINT)
    } else if bad.iter().any(|(_, e, _)| e.ipv6_hangs()) {
        err.with_hint(format!(
            "dockerd dials ::1 first for localhost, and something on the node's [::1]:{PORT} accepts connections \
             and never answers (with the ingress routing mesh, dockerd's own listener before Docker 29.8: moby \
             issue 53091); docker push and pull to localhost:{PORT} fail there, while 127.0.0.1:{PORT} works. \
             With the mesh, `--registry-mode fallback` (or `auto`, which picks it on such engines) avoids it; \
             otherwise upgrade Docker on the node or free [::1]:{PORT}, and meanwhile tag images 127.0.0.1:{PORT}/..."
        ))
    } else {
        err
    }
}

async fn task_running(mgr: &Docker) -> bool {
    let filters = HashMap::from([("service", vec![SERVICE]), ("desired-state", vec!["running"])]);
    let Ok(tasks) = mgr.list_tasks(Some(ListTasksOptionsBuilder::new().filters(&filters).build())).await else {
        return false;
    };
    tasks.iter().any(|t| t.status.as_ref().and_then(|s| s.state) == Some(bollard::models::TaskState::RUNNING))
}

/// Why the service is not serving, if it is not: missing, or its task not running (with the
/// task's own error, e.g. an image the node does not have).
async fn diagnose_service(rt: &dyn Nodes) -> Option<String> {
    let (_, mgr) = match rt.manager().await {
        Ok(m) => m,
        Err(e) => return Some(e.to_string()),
    };
    if mgr.inspect_service(SERVICE, None::<InspectServiceOptions>).await.is_err() {
        return Some(format!("service {SERVICE} does not exist (run lab up)"));
    }
    if task_running(&mgr).await {
        return None;
    }
    // Every task, not only those meant to run: a task that failed ("bind: address already in
    // use") is shut down and replaced, and its error is the one worth quoting.
    let filters = HashMap::from([("service", vec![SERVICE])]);
    let mut tasks = mgr.list_tasks(Some(ListTasksOptionsBuilder::new().filters(&filters).build())).await.ok()?;
    tasks.sort_by_key(|t| std::cmp::Reverse(t.updated_at.clone().unwrap_or_default()));
    let with_error =
        tasks.iter().filter_map(|t| t.status.as_ref()).find(|s| s.err.as_deref().is_some_and(|e| !e.is_empty()));
    let latest = tasks.iter().filter_map(|t| t.status.as_ref()).next();
    let detail = match (with_error, latest) {
        (Some(s), _) => {
            format!("{}: {}", s.state.map(|st| st.to_string()).unwrap_or_default(), s.err.clone().unwrap_or_default())
        }
        (None, Some(s)) => format!(
            "{}: {}",
            s.state.map(|st| st.to_string()).unwrap_or_default(),
            s.message.clone().unwrap_or_default()
        ),
        (None, None) => "the swarm scheduled no task for it (docker service ps registry_registry shows none)".into(),
    };
    Some(format!("the registry task is not running ({detail})"))
}

async fn explain_node(rt: &dyn Nodes, node: &str, service: Option<&str>) -> String {
    if let Some(s) = service {
        return s.to_string();
    }
    let Ok(e) = rt.engine(node).await else { return "its Docker engine does not answer".into() };
    if e.docker.inspect_image(&rt.desired().registry_image).await.is_err() {
        return format!("image {} is missing on this node (run lab up)", rt.desired().registry_image);
    }
    let reg = &rt.desired().topology.registry_node().name;
    if rt.desired().tls == RegistryTls::Mutual {
        return match observe_forwarder(&e.docker).await {
            None => format!("the relay container {FORWARDER} is not running (run lab up)"),
            Some(t) => format!(
                "the relay points at {t}, which does not answer with the registry (`docker logs {FORWARDER}` on \
                 {node} says why)"
            ),
        };
    }
    match rt.state().registry_mode {
        Some(RegistryMode::Mesh) => match has_ipvs(rt, node).await {
            Ok(false) => "no IPVS in this node's kernel, so the ingress routing mesh cannot answer; \
                          use --registry-mode fallback"
                .into(),
            _ => "the ingress routing mesh does not answer on this node".into(),
        },
        Some(RegistryMode::Fallback) if node != reg => match observe_forwarder(&e.docker).await {
            None => format!("the forwarder container {FORWARDER} is not running (run lab up)"),
            Some(t) => format!("the forwarder relays to {t}, which does not answer with the registry"),
        },
        Some(RegistryMode::Fallback) => {
            format!("the registry runs here ({REGISTRY_NODE_LABEL}) but its host-mode port does not answer yet")
        }
        None => "no registry mode recorded (run lab up)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_engines_from_29_8_get_the_mesh_by_auto_detection() {
        assert!(!mesh_serves_ipv6_loopback("20.10.24+dfsg1"));
        assert!(!mesh_serves_ipv6_loopback("28.2.2"));
        assert!(!mesh_serves_ipv6_loopback("29.7.9"));
        assert!(mesh_serves_ipv6_loopback("29.8.0"));
        assert!(mesh_serves_ipv6_loopback("30.0.1"));
        assert!(!mesh_serves_ipv6_loopback(""));
        assert!(!mesh_serves_ipv6_loopback("dev"));
    }

    #[test]
    fn service_spec_is_the_seeds_stack_plus_what_it_lacked() {
        let program = vec!["/entrypoint.sh".to_string(), "/etc/docker/registry/config.yml".to_string()];
        for (mode, publish) in [
            (RegistryMode::Mesh, EndpointPortConfigPublishModeEnum::INGRESS),
            (RegistryMode::Fallback, EndpointPortConfigPublishModeEnum::HOST),
        ] {
            let spec = service_spec("registry:2", &program, "secret-id", mode, &[]);
            assert_eq!(spec.name.as_deref(), Some(SERVICE));
            assert_eq!(spec.labels.as_ref().unwrap()[NAMESPACE_LABEL], STACK);
            let task = spec.task_template.as_ref().unwrap();
            let cs = task.container_spec.as_ref().unwrap();
            assert_eq!(cs.image.as_deref(), Some("registry:2"));
            // The HTTP secret comes from the swarm secret, never from the spec.
            // The environment only lets `lab images rm` delete manifests and keeps registry:3
            // from exporting traces.
            assert_eq!(
                cs.env.as_deref(),
                Some(
                    &["REGISTRY_STORAGE_DELETE_ENABLED=true".to_string(), "OTEL_TRACES_EXPORTER=none".to_string()][..]
                )
            );
            assert!(!cs.env.iter().flatten().any(|e| e.contains("SECRET")), "{:?}", cs.env);
            let secret = &cs.secrets.as_ref().unwrap()[0];
            assert_eq!(secret.secret_id.as_deref(), Some("secret-id"));
            assert_eq!(secret.file.as_ref().unwrap().name.as_deref(), Some(SECRET_NAME));
            assert_eq!(cs.command.as_ref().unwrap()[..2], ["sh".to_string(), "-c".to_string()]);
            assert_eq!(cs.args.as_ref().unwrap(), &program, "the image's own program runs");
            let mount = &cs.mounts.as_ref().unwrap()[0];
            assert_eq!((mount.source.as_deref(), mount.target.as_deref()), (Some(VOLUME), Some("/var/lib/registry")));
            assert_eq!(task.placement.as_ref().unwrap().constraints.as_ref().unwrap(), &vec![CONSTRAINT.to_string()]);
            assert_eq!(task.networks.as_ref().unwrap()[0].target.as_deref(), Some(NETWORK));
            let port = &spec.endpoint_spec.as_ref().unwrap().ports.as_ref().unwrap()[0];
            assert_eq!((port.published_port, port.target_port), (Some(5000), Some(5000)));
            assert_eq!(port.publish_mode, Some(publish));
        }
    }

    fn lab_spec() -> ServiceSpec {
        let program = vec!["/entrypoint.sh".to_string(), "/etc/distribution/config.yml".to_string()];
        service_spec("registry:3", &program, "secret-id", RegistryMode::Fallback, &[])
    }

    fn env_of(spec: &mut ServiceSpec) -> &mut Vec<String> {
        spec.task_template.as_mut().unwrap().container_spec.as_mut().unwrap().env.as_mut().unwrap()
    }

    #[test]
    fn labs_own_spec_matches_and_one_without_the_tracing_setting_does_not() {
        assert!(spec_matches(&lab_spec()));
        // A cluster deployed before registry:3 was supported: redeployed by the next `up`.
        let mut old = lab_spec();
        env_of(&mut old).retain(|e| !e.starts_with("OTEL_"));
        assert!(!spec_matches(&old));
        let mut other = lab_spec();
        *env_of(&mut other) = vec!["REGISTRY_STORAGE_DELETE_ENABLED=true".into(), "OTEL_TRACES_EXPORTER=otlp".into()];
        assert!(!spec_matches(&other));
        // Extra variables a user added do not count against it.
        let mut extra = lab_spec();
        env_of(&mut extra).push("REGISTRY_LOG_LEVEL=debug".into());
        assert!(spec_matches(&extra));
    }

    /// An interrupted `lab images gc` leaves the service read-only: the planner must see it as
    /// not lab's, so the next `up` redeploys it writable.
    #[test]
    fn a_read_only_registry_is_not_labs_spec_in_any_spelling() {
        let mut ro = lab_spec();
        let env = env_of(&mut ro);
        *env = with_read_only(env, true);
        assert!(env.contains(&r#"REGISTRY_STORAGE_MAINTENANCE_READONLY={"enabled":true}"#.to_string()));
        assert!(is_read_only(env));
        assert!(!spec_matches(&ro));
        for spelling in [
            "REGISTRY_STORAGE_MAINTENANCE_READONLY={enabled: false}",
            "REGISTRY_STORAGE_MAINTENANCE_READONLY_ENABLED=true",
        ] {
            let mut s = lab_spec();
            env_of(&mut s).push(spelling.into());
            assert!(!spec_matches(&s), "{spelling}");
        }
        // Writable again: every spelling goes, the rest stays, and it is lab's spec again.
        let env = env_of(&mut ro);
        env.push("REGISTRY_STORAGE_MAINTENANCE_READONLY_ENABLED=true".into());
        *env = with_read_only(env, false);
        assert!(!is_read_only(env));
        assert!(spec_matches(&ro));
        // Adding it twice leaves one.
        let once = with_read_only(&with_read_only(&[], true), true);
        assert_eq!(once.len(), 1);
    }

    #[test]
    fn gc_reads_the_config_file_the_images_own_command_names() {
        let p = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        // registry:2 and registry:3, as their entrypoint and command give it.
        assert_eq!(
            config_path(&p(&["/entrypoint.sh", "/etc/docker/registry/config.yml"])),
            Some("/etc/docker/registry/config.yml")
        );
        assert_eq!(
            config_path(&p(&["/entrypoint.sh", "/etc/distribution/config.yml"])),
            Some("/etc/distribution/config.yml")
        );
        // An image that runs the binary directly.
        assert_eq!(config_path(&p(&["registry", "serve", "/etc/r.yaml"])), Some("/etc/r.yaml"));
        assert_eq!(config_path(&p(&["registry", "serve"])), None);
    }

    /// Mutual TLS adds the TLS environment and the TLS secrets to the same spec and publishes
    /// the TLS port (5000 is the relays'), and the service reads back as serving those
    /// certificates, matching lab's spec; without them it reads back as plain on port 5000.
    #[test]
    fn a_mutual_tls_spec_carries_its_certificates_and_reads_back_as_them() {
        let program = vec!["/entrypoint.sh".to_string()];
        let tls: Vec<TaskSpecContainerSpecSecrets> = ["cert", "key", "ca"]
            .iter()
            .map(|k| TaskSpecContainerSpecSecrets {
                secret_name: Some(format!("{}{k}-f00", crate::tls::SECRET_PREFIX)),
                ..Default::default()
            })
            .collect();
        let spec = service_spec("registry:2", &program, "secret-id", RegistryMode::Fallback, &tls);
        let cs = spec.task_template.as_ref().unwrap().container_spec.as_ref().unwrap();
        let env = cs.env.clone().unwrap();
        assert!(crate::tls::registry_env().iter().all(|e| env.contains(e)), "{env:?}");
        assert!(ENV.iter().all(|e| env.contains(&e.to_string())));
        let secrets = cs.secrets.clone().unwrap();
        assert_eq!(secrets.len(), 4);
        assert_eq!(crate::tls::deployed_fingerprint(&env, &secrets).as_deref(), Some("f00"));
        let published = |s: &ServiceSpec| s.endpoint_spec.as_ref().unwrap().ports.as_ref().unwrap()[0].published_port;
        assert_eq!(published(&spec), Some(TLS_PORT as i64));
        let open = service_spec("registry:2", &program, "secret-id", RegistryMode::Fallback, &[]);
        let cs = open.task_template.as_ref().unwrap().container_spec.as_ref().unwrap();
        assert_eq!(crate::tls::deployed_fingerprint(cs.env.as_ref().unwrap(), cs.secrets.as_ref().unwrap()), None);
        assert_eq!(published(&open), Some(PORT as i64));
        // The secret lab's wrapper reads must be there for the spec to be lab's.
        let with_secret = |mut s: ServiceSpec| {
            let cs = s.task_template.as_mut().unwrap().container_spec.as_mut().unwrap();
            cs.secrets.as_mut().unwrap()[0].secret_name = Some(SECRET_NAME.into());
            s
        };
        assert!(spec_matches(&with_secret(spec.clone())));
        assert!(spec_matches(&with_secret(open.clone())));
        // TLS published on 5000 (as lab did before the relays) is not lab's spec.
        let mut old = with_secret(spec);
        old.endpoint_spec.as_mut().unwrap().ports.as_mut().unwrap()[0].published_port = Some(PORT as i64);
        assert!(!spec_matches(&old));
    }

    /// The wrapper reads the secret file into REGISTRY_HTTP_SECRET and runs the image's
    /// program with its own arguments, untouched.
    #[test]
    fn the_secret_wrapper_exports_the_secret_and_runs_the_program() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("s");
        std::fs::write(&file, "v4lue").unwrap();
        let script = SECRET_SCRIPT.replace("/run/secrets/$0", &file.display().to_string());
        let out = std::process::Command::new("sh")
            .args([
                "-c",
                &script,
                SECRET_NAME,
                "sh",
                "-c",
                "printf '%s|%s' \"$REGISTRY_HTTP_SECRET\" \"$1\"",
                "x",
                "a b; c",
            ])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "v4lue|a b; c");
        // A missing secret file stops the registry rather than running it without a secret.
        std::fs::remove_file(&file).unwrap();
        let out = std::process::Command::new("sh").args(["-c", &script, SECRET_NAME, "true"]).output().unwrap();
        assert!(!out.status.success());
    }

    #[test]
    fn base64_matches_the_standard_alphabet() {
        for (input, want) in [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foobar", "Zm9vYmFy")] {
            assert_eq!(base64(input.as_bytes()), want);
        }
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
