//! The registry service as lab deploys it (the seed's stack plus an HTTP secret, a volume,
//! a pin and lab's environment), and a deployed one read back for the planner.

use bollard::models::{
    EndpointPortConfig, EndpointPortConfigProtocolEnum, EndpointPortConfigPublishModeEnum, EndpointSpec, Mount,
    MountType, MountVolumeOptions, NetworkAttachmentConfig, ServiceSpec, ServiceSpecMode, ServiceSpecModeReplicated,
    TaskSpec, TaskSpecContainerSpec, TaskSpecContainerSpecFile, TaskSpecContainerSpecSecrets, TaskSpecPlacement,
};
use bollard::query_parameters::InspectServiceOptions;
use bollard::Docker;

use crate::cluster::Nodes;
use crate::error::{Error, Result};
use crate::registry::is_read_only;
use crate::registry::namespace;
use crate::registry::read_only::is_read_only_var;
use crate::registry::CONSTRAINT;
use crate::registry::ENV;
use crate::registry::NETWORK;
use crate::registry::PORT;
use crate::registry::SECRET_NAME;
use crate::registry::SERVICE;
use crate::registry::TLS_PORT;
use crate::registry::VOLUME;
use crate::state::RegistryMode;

/// The registry service as observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryObs {
    /// Its image.
    pub image: String,
    /// How its port is published.
    pub mode: RegistryMode,
    /// Whether it carries lab's HTTP secret and pinning and volume, as lab would deploy it.
    pub spec_matches: bool,
    /// The node its task runs on, if one runs.
    pub running_on: Option<String>,
    /// The fingerprint of the certificates it serves TLS with and requires clients to have
    /// ([`crate::tls::Material::registry_fingerprint`]); `None`: plain HTTP.
    pub tls: Option<String>,
    /// Whether it is read-only, as `lab images gc` makes it while it runs (one left so was
    /// interrupted; its spec does not match, so `up` makes it writable again).
    pub read_only: bool,
}

/// Wraps the registry image's own entrypoint and command: reads the HTTP secret from the
/// swarm secret's file into `REGISTRY_HTTP_SECRET` (which every distribution version reads),
/// then runs the image's program as it would have run (`"$@"`). A fixed script: nothing is
/// pasted into it.
pub(crate) const SECRET_SCRIPT: &str = r#"REGISTRY_HTTP_SECRET="$(cat "/run/secrets/$0")" || exit 1
export REGISTRY_HTTP_SECRET
exec "$@""#;

/// The command that runs the image's own `program` (its entrypoint and command) with the HTTP
/// secret in its environment.
pub(crate) fn secret_command() -> Vec<String> {
    vec!["sh".into(), "-c".into(), SECRET_SCRIPT.into(), SECRET_NAME.into()]
}

/// `tls`: the registry's TLS secrets ([`crate::registry::tls::registry_secrets`]) in mutual mode, none
/// in open mode.
pub(crate) fn service_spec(
    image: &str,
    program: &[String],
    secret_id: &str,
    mode: RegistryMode,
    tls: &[TaskSpecContainerSpecSecrets],
) -> ServiceSpec {
    let mut env: Vec<String> = ENV.iter().map(|e| e.to_string()).collect();
    if !tls.is_empty() {
        env.extend(crate::registry::tls::registry_env());
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
    let tls = crate::registry::tls::deployed_fingerprint(
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
pub(crate) fn spec_matches(spec: &ServiceSpec) -> bool {
    let Some(task) = spec.task_template.as_ref() else { return false };
    let Some(cs) = task.container_spec.as_ref() else { return false };
    let uses_secret =
        cs.secrets.as_ref().is_some_and(|s| s.iter().any(|s| s.secret_name.as_deref() == Some(SECRET_NAME)))
            && cs.command.as_ref() == Some(&secret_command());
    let replicas = spec.mode.as_ref().and_then(|m| m.replicated.as_ref()).and_then(|r| r.replicas);
    let port = spec.endpoint_spec.as_ref().and_then(|e| e.ports.as_ref()).and_then(|p| p.first());
    let tls = crate::registry::tls::deployed_fingerprint(
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
pub(crate) fn env_matches(env: &[String]) -> bool {
    ENV.iter().all(|e| env.iter().any(|v| v == e)) && !env.iter().any(|v| is_read_only_var(v))
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

/// The image's own program: its entrypoint followed by its command, as `docker run` would run
/// it, read from the registry node's copy of the image.
pub(crate) async fn image_program(rt: &dyn Nodes, image: &str) -> Result<Vec<String>> {
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::registry::read_only::with_read_only;
    use crate::registry::NAMESPACE_LABEL;
    use crate::registry::STACK;

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

    pub(crate) fn lab_spec() -> ServiceSpec {
        let program = vec!["/entrypoint.sh".to_string(), "/etc/distribution/config.yml".to_string()];
        service_spec("registry:3", &program, "secret-id", RegistryMode::Fallback, &[])
    }

    pub(crate) fn env_of(spec: &mut ServiceSpec) -> &mut Vec<String> {
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
                secret_name: Some(format!("{}{k}-f00", crate::registry::tls::SECRET_PREFIX)),
                ..Default::default()
            })
            .collect();
        let spec = service_spec("registry:2", &program, "secret-id", RegistryMode::Fallback, &tls);
        let cs = spec.task_template.as_ref().unwrap().container_spec.as_ref().unwrap();
        let env = cs.env.clone().unwrap();
        assert!(crate::registry::tls::registry_env().iter().all(|e| env.contains(e)), "{env:?}");
        assert!(ENV.iter().all(|e| env.contains(&e.to_string())));
        let secrets = cs.secrets.clone().unwrap();
        assert_eq!(secrets.len(), 4);
        assert_eq!(crate::registry::tls::deployed_fingerprint(&env, &secrets).as_deref(), Some("f00"));
        let published = |s: &ServiceSpec| s.endpoint_spec.as_ref().unwrap().ports.as_ref().unwrap()[0].published_port;
        assert_eq!(published(&spec), Some(TLS_PORT as i64));
        let open = service_spec("registry:2", &program, "secret-id", RegistryMode::Fallback, &[]);
        let cs = open.task_template.as_ref().unwrap().container_spec.as_ref().unwrap();
        assert_eq!(
            crate::registry::tls::deployed_fingerprint(cs.env.as_ref().unwrap(), cs.secrets.as_ref().unwrap()),
            None
        );
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
}
