//! Creating or updating the registry's stack: its overlay network and its service.

use bollard::models::NetworkCreateRequest;
use bollard::query_parameters::{InspectServiceOptions, UpdateServiceOptionsBuilder};

use crate::cluster::Nodes;
use crate::error::{Error, Result};
use crate::registry::data::sweep_moves;
use crate::registry::namespace;
use crate::registry::secret::ensure_secret;
use crate::registry::spec::image_program;
use crate::registry::spec::service_spec;
use crate::registry::task_running;
use crate::registry::NETWORK;
use crate::registry::SERVICE;
use crate::state::RegistryTls;
use crate::wait::Look;

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
        Some(m) => crate::registry::tls::registry_secrets(&mgr_name, &mgr, m, &namespace()).await?,
        None => Vec::new(),
    };
    // The swarm updates the service's object on its own (an update's status), so a version
    // read may be stale by the time of the update: read it again and retry.
    crate::swarm::update_race(&mgr_name, &format!("the swarm to take the update of service {SERVICE}"))
        .poll(|| async {
            let spec = service_spec(image, &program, &secret_id, mode, &tls);
            let look = async {
                let Ok(svc) = mgr.inspect_service(SERVICE, None::<InspectServiceOptions>).await else {
                    mgr.create_service(spec, None).await.map_err(|e| fail(&format!("create service {SERVICE}"), e))?;
                    return Ok(Look::Done(()));
                };
                let mut spec = spec;
                let version = svc.version.and_then(|v| v.index).unwrap_or_default();
                // A task that is not running (stopped behind lab's back, or failed to start)
                // is restarted even when the spec is unchanged.
                let force = svc.spec.and_then(|s| s.task_template).and_then(|t| t.force_update).unwrap_or(0);
                let bump = if task_running(&mgr).await { 0 } else { 1 };
                if let Some(t) = spec.task_template.as_mut() {
                    t.force_update = Some(force + bump);
                }
                let opts = UpdateServiceOptionsBuilder::new().version(version as i32).build();
                let updated = mgr.update_service(SERVICE, spec, opts, None).await.map(|_| ());
                Ok(crate::swarm::update_look(updated, |e| fail(&format!("update service {SERVICE}"), e)))
            };
            look.await.unwrap_or_else(Look::Fail)
        })
        .await?;
    crate::registry::tls::remove_stale_secrets(&mgr, material.as_ref().map(|m| m.registry_fingerprint()).as_deref())
        .await;
    sweep_moves(rt).await;
    let tls = if material.is_some() { ", mutual TLS" } else { "" };
    Ok(format!("{image}, {mode}{tls}, pinned to {}", rt.desired().topology.registry_node().name))
}
