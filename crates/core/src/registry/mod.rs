//! The private registry: the stack `registry` with its service `registry_registry`, and how
//! every node reaches it at `127.0.0.1:5000` and `localhost:5000`.
//!
//! - [`mode`]: mesh or fallback, chosen once per cluster and recorded;
//! - [`spec`]: the service as lab deploys it, and reading a deployed one back;
//! - [`secret`]: the registry's HTTP secret, a swarm secret lab never sees again;
//! - [`tls`]: the registry's side of mutual TLS (its certificates as swarm secrets);
//! - [`deploy`]: creating or updating the service;
//! - [`forwarder`]: what serves `localhost:5000` on nodes the registry is not on, and
//!   [`relay`], lab itself as the mutual-TLS form of it;
//! - [`data`]: moving the registry's volume when its node changes;
//! - [`check`]: asking every node, as the seed does, whether it answers, and [`reach`],
//!   whether each node's dockerd reaches it;
//! - [`read_only`]: the read-only switch `lab images gc` uses;
//! - [`endpoint`]: where its HTTP API is reached, for `lab push` and `lab images`;
//! - [`clients`]: the way in for other clients (`lab registry`).
//!
//! Unlike the seed's recipe, the service gets an HTTP secret, keeps its data on the named
//! volume `registry_data`, and is pinned to one node by the `lab.registry` label, so a
//! reschedule cannot silently lose every pushed image.
//!
//! Neighbours: it works through [`crate::cluster`], and uses [`crate::swarm`] (the update
//! retry) and [`crate::tls`] (the certificates); [`crate::images`] and the convergence loop
//! build on it. It never reaches the executor or the planner.

use std::collections::HashMap;
use std::time::Duration;

use bollard::query_parameters::{ListContainersOptionsBuilder, ListTasksOptionsBuilder};
use bollard::Docker;

use crate::error::{Error, Result};
use crate::wait::{Look, Wait};

pub mod check;
pub mod clients;
pub mod curl;
pub mod data;
pub mod deploy;
pub mod endpoint;
pub mod forwarder;
pub mod mode;
pub mod reach;
pub mod read_only;
pub mod relay;
pub mod secret;
pub mod spec;
pub mod tls;

pub use check::{check_all, check_node, wait_ready, NodeCheck, UrlCheck, CHECK_URLS};
pub use data::{data_on, move_data, remove_move_helpers, Data};
pub use deploy::deploy;
pub use endpoint::{endpoint, Endpoint};
pub use forwarder::{bracket, forwarder, is_relay, observe_forwarder, Forwarder};
pub use mode::{choose_mode, mesh_serves_ipv6_loopback};
pub use read_only::{is_read_only, set_read_only};
pub use spec::{config_path, observe, service_program, RegistryObs};

/// The stack's name, as in `docker stack deploy registry`.
pub const STACK: &str = "registry";
/// The service, as `docker stack deploy` names it.
pub const SERVICE: &str = "registry_registry";
/// The stack's network.
pub const NETWORK: &str = "registry_default";
/// The volume the registry keeps its data on (on the registry's node).
pub const VOLUME: &str = "registry_data";
/// The swarm secret holding the registry's HTTP secret.
pub const SECRET_NAME: &str = "lab-registry-http-secret";
/// The registry's port on every node.
pub const PORT: u16 = 5000;
/// The port a mutual-TLS registry publishes: port 5000 on every node is then its relay's,
/// on the node's loopback ([`crate::registry::relay`]).
pub const TLS_PORT: u16 = 5443;
pub(crate) const NAMESPACE_LABEL: &str = "com.docker.stack.namespace";
pub(crate) const CONSTRAINT: &str = "node.labels.lab.registry==true";
/// The registry's environment: manifests can be deleted (`lab images rm`), and distribution
/// v3.0.0 (`registry:3`), which exports traces to `localhost:4318` unless told not to, does
/// not (later v3 images set this themselves; v2 ignores it).
pub(crate) const ENV: &[&str] = &["REGISTRY_STORAGE_DELETE_ENABLED=true", "OTEL_TRACES_EXPORTER=none"];
pub(crate) fn namespace() -> HashMap<String, String> {
    HashMap::from([(NAMESPACE_LABEL.to_string(), STACK.to_string())])
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
    Wait::new(node, what, limit)
        .every(Duration::from_millis(300))
        .poll(|| async {
            let opts = ListContainersOptionsBuilder::new().all(stopped).filters(&task_filter()).build();
            match docker.list_containers(Some(opts)).await {
                Ok(tasks) if tasks.is_empty() => Look::Done(()),
                Ok(tasks) => Look::not_yet(format!(
                    "{} task container(s) still there: {}",
                    tasks.len(),
                    tasks.iter().filter_map(|t| t.names.as_ref()?.first().cloned()).collect::<Vec<_>>().join(", ")
                )),
                Err(e) => Look::Fail(Error::engine(node, format!("wait for {what}"), e)),
            }
        })
        .await
}

pub(crate) async fn task_running(mgr: &Docker) -> bool {
    let filters = HashMap::from([("service", vec![SERVICE]), ("desired-state", vec!["running"])]);
    let Ok(tasks) = mgr.list_tasks(Some(ListTasksOptionsBuilder::new().filters(&filters).build())).await else {
        return false;
    };
    tasks.iter().any(|t| t.status.as_ref().and_then(|s| s.state) == Some(bollard::models::TaskState::RUNNING))
}
