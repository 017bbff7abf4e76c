//! The registry's read-only switch (distribution's `storage.maintenance.readonly`), which
//! `lab images gc` turns on while it collects.

use bollard::query_parameters::{InspectServiceOptions, UpdateServiceOptionsBuilder};

use crate::cluster::Nodes;
use crate::error::{Error, Result};
use crate::registry::SERVICE;
use crate::wait::Look;

/// The variable that puts the registry in read-only mode (distribution's
/// `storage.maintenance.readonly`), set only while `lab images gc` runs.
///
/// Its value must be a YAML map: distribution reads `readonly` as a map and `enabled` in it.
/// The spelling `REGISTRY_STORAGE_MAINTENANCE_READONLY_ENABLED=true` does not work: it makes
/// registry 2.8 panic at start (distribution issue 2974) and v3 refuse its configuration.
pub const READ_ONLY_VAR: &str = "REGISTRY_STORAGE_MAINTENANCE_READONLY";
pub(crate) const READ_ONLY_VALUE: &str = r#"{"enabled":true}"#;

pub(crate) fn is_read_only_var(entry: &str) -> bool {
    entry.split('=').next().is_some_and(|name| name.starts_with(READ_ONLY_VAR))
}

/// The environment `env` with the registry read-only (`on`) or not: lab's read-only variable
/// added once, or every spelling of it removed.
pub(crate) fn with_read_only(env: &[String], on: bool) -> Vec<String> {
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

/// Makes the registry read-only (`on`) or writable again, by updating its service's
/// environment; the swarm restarts its task. Nothing else in the spec changes.
pub async fn set_read_only(rt: &dyn Nodes, on: bool) -> Result<()> {
    let (mgr_name, mgr) = rt.manager().await?;
    let step = if on { "make the registry read-only" } else { "make the registry writable again" };
    crate::swarm::update_race(&mgr_name, &format!("the swarm to take the update of service {SERVICE}"))
        .poll(|| async {
            let look = async {
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
                    return Ok(Look::Done(()));
                }
                cs.env = Some(wanted);
                let opts = UpdateServiceOptionsBuilder::new().version(version as i32).build();
                let updated = mgr.update_service(SERVICE, spec, opts, None).await.map(|_| ());
                Ok(crate::swarm::update_look(updated, |e| Error::engine(&mgr_name, step, e)))
            };
            look.await.unwrap_or_else(Look::Fail)
        })
        .await
}
