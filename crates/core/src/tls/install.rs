//! The certificates on the nodes' engines: the CA and the client pair in
//! `/etc/docker/certs.d/`, written, read back and removed through each engine with a helper
//! container (no shell).

use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, DownloadFromContainerOptionsBuilder, RemoveContainerOptionsBuilder,
    UploadToContainerOptionsBuilder,
};
use bollard::Docker;
use futures_util::StreamExt;

use crate::error::{Error, Result};
use crate::state::now;
use crate::tls::pki::observed_node_fingerprint;
use crate::tls::Material;
use crate::tls::CERTS_DIRS;

/// Removes what [`install_node`] put in the node's `/etc/docker/certs.d` (both directories),
/// with a container of the registry image that runs `rm` on those fixed paths and nothing
/// else. A node without them is fine.
pub async fn remove_node(docker: &Docker, node: &str, cluster: &str, image: &str) -> Result<()> {
    let step = "remove the registry's client certificate from its engine";
    let name = format!("lab-certs-{}", crate::driver::support::random_suffix());
    let mut argv = vec!["rm".to_string(), "-rf".to_string()];
    argv.extend(CERTS_DIRS.iter().map(|d| format!("{HOST_ETC}/docker/certs.d/{d}")));
    let timeout = std::time::Duration::from_secs(60);
    let body = ContainerCreateBody {
        image: Some(image.to_string()),
        entrypoint: Some(argv[..1].to_vec()),
        cmd: Some(argv[1..].to_vec()),
        labels: Some(crate::cluster::probe::labels(cluster, timeout, now())),
        host_config: Some(HostConfig { binds: Some(vec![format!("/etc:{HOST_ETC}")]), ..Default::default() }),
        network_disabled: Some(true),
        ..Default::default()
    };
    let result = async {
        docker
            .create_container(Some(CreateContainerOptionsBuilder::new().name(&name).build()), body)
            .await
            .map_err(|e| Error::engine(node, step, e))?;
        docker.start_container(&name, None).await.map_err(|e| Error::engine(node, step, e))?;
        let mut wait = docker.wait_container(
            &name,
            Some(bollard::query_parameters::WaitContainerOptionsBuilder::new().condition("not-running").build()),
        );
        match tokio::time::timeout(timeout, wait.next()).await {
            Ok(Some(Ok(_))) => Ok(()),
            Ok(Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. }))) => {
                Err(Error::node(node, step, format!("rm exited {code}")))
            }
            Ok(Some(Err(e))) => Err(Error::engine(node, step, e)),
            Ok(None) | Err(_) => {
                Err(Error::node(node, step, format!("rm did not finish within {}s", timeout.as_secs())))
            }
        }
    }
    .await;
    let _ = docker.remove_container(&name, Some(RemoveContainerOptionsBuilder::new().force(true).build())).await;
    result
}

/// Whether dockerd's answer says the registry wanted TLS with a client certificate and dockerd
/// gave neither: after its TLS attempt (without a certificate) was refused, dockerd falls back
/// to plain HTTP, which a TLS registry answers with this.
pub fn engine_refused(answer: &str) -> bool {
    answer.contains("HTTP request to an HTTPS server")
}

/// Why a node's dockerd was refused by a mutual-TLS registry, and what to do: it reached the
/// registry itself rather than its node's relay ([`crate::registry::relay`]), since dockerd never
/// presents a client certificate to a loopback registry.
pub const ENGINE_HINT: &str = "dockerd never presents a client certificate to a registry at a loopback address \
     (it counts localhost and 127.0.0.0/8 as insecure registries; moby issue 31326), so with mutual TLS each node's \
     localhost:5000 must be lab's relay (container lab-registry-forwarder), which presents the node's certificate; \
     `lab up` starts it";

/// Where the helper container sees the node's `/etc`.
pub(crate) const HOST_ETC: &str = "/lab-host-etc";

/// Runs `f` with a helper container on `docker`: made from `image` (which every node has),
/// never started, its only mount the node's `/etc`, so the archive API reads and writes the
/// node's `/etc/docker/certs.d` through it, with no shell and no command. It carries the
/// probes' labels, so one left by a killed run is removed by the next probe.
pub(crate) async fn with_helper<T, F, Fut>(
    docker: &Docker,
    cluster: &str,
    image: &str,
    f: F,
) -> std::result::Result<T, bollard::errors::Error>
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = std::result::Result<T, bollard::errors::Error>>,
{
    let name = format!("lab-certs-{}", crate::driver::support::random_suffix());
    let body = ContainerCreateBody {
        image: Some(image.to_string()),
        entrypoint: Some(vec!["true".into()]),
        cmd: Some(vec![]),
        labels: Some(crate::cluster::probe::labels(cluster, std::time::Duration::from_secs(60), now())),
        host_config: Some(HostConfig { binds: Some(vec![format!("/etc:{HOST_ETC}")]), ..Default::default() }),
        network_disabled: Some(true),
        ..Default::default()
    };
    docker.create_container(Some(CreateContainerOptionsBuilder::new().name(&name).build()), body).await?;
    let result = f(name.clone()).await;
    let _ = docker.remove_container(&name, Some(RemoveContainerOptionsBuilder::new().force(true).build())).await;
    result
}

/// The fingerprint of lab's certificates in the node's `/etc/docker/certs.d`, if it has a
/// complete set; `None` also when the engine cannot be asked (then [`install_node`] runs and
/// says why).
pub async fn observe_node(docker: &Docker, cluster: &str, image: &str) -> Option<String> {
    with_helper(docker, cluster, image, |helper| async move {
        let path = format!("{HOST_ETC}/docker/certs.d");
        let mut s = docker
            .download_from_container(&helper, Some(DownloadFromContainerOptionsBuilder::new().path(&path).build()));
        let mut tar = Vec::new();
        while let Some(chunk) = s.next().await {
            tar.extend_from_slice(&chunk?);
        }
        Ok(observed_node_fingerprint(&tar))
    })
    .await
    .ok()
    .flatten()
}

/// Puts `m`'s CA and the node's own client pair into the node's `/etc/docker/certs.d/localhost:5000/` and
/// `.../127.0.0.1:5000/` through its engine. dockerd reads that directory at each registry
/// request: nothing restarts.
pub async fn install_node(docker: &Docker, node: &str, cluster: &str, image: &str, m: &Material) -> Result<String> {
    let step = "give its engine the registry's client certificate";
    let archive = m.node_archive(node).ok_or_else(|| Error::node(node, step, "lab has issued it none"))?;
    let archive = bytes::Bytes::from(archive);
    with_helper(docker, cluster, image, |helper| async move {
        docker
            .upload_to_container(
                &helper,
                Some(UploadToContainerOptionsBuilder::new().path(HOST_ETC).build()),
                bollard::body_full(archive),
            )
            .await
    })
    .await
    .map_err(|e| Error::engine(node, step, e))?;
    Ok(format!("/etc/docker/certs.d/{{{}}}", CERTS_DIRS.join(",")))
}
