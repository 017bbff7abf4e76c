//! Joining and leaving a swarm on one node's engine: `swarm init`, `swarm join` with a token
//! read from a manager at that moment, and `swarm leave --force`.

use std::collections::HashMap;
use std::time::Duration;

use bollard::models::{SwarmInitRequest, SwarmJoinRequest, SwarmSpec};
use bollard::query_parameters::LeaveSwarmOptionsBuilder;
use bollard::Docker;

use super::SWARM_PORT;
use crate::cluster::probe::CLUSTER_LABEL;
use crate::error::{engine_message, Error, Result};
use crate::state::{Secret, SwarmRecord};
use crate::topology::Role;
use crate::wait::{Look, Wait};

/// `docker swarm init --advertise-addr ADDR` on `node`; returns the swarm's ID and address.
/// The swarm itself carries `lab.cluster=<cluster>` from its first moment, so an `up` killed
/// before it recorded the swarm finds it again as this cluster's.
pub async fn init(node: &str, docker: &Docker, advertise: &str, cluster: &str) -> Result<SwarmRecord> {
    let req = SwarmInitRequest {
        listen_addr: Some(format!("0.0.0.0:{SWARM_PORT}")),
        advertise_addr: Some(format!("{advertise}:{SWARM_PORT}")),
        spec: Some(SwarmSpec {
            labels: Some(HashMap::from([(CLUSTER_LABEL.to_string(), cluster.to_string())])),
            ..Default::default()
        }),
        ..Default::default()
    };
    docker.init_swarm(req).await.map_err(|e| Error::engine(node, "initialise the swarm", e))?;
    record(node, docker, advertise).await
}

/// `docker swarm init --force-new-cluster` on `node`, a manager of a swarm that lost its
/// quorum: it becomes the only manager of a new Raft cluster that keeps the swarm's ID,
/// services, secrets, configs and workers (moby's admin guide, "Recover from losing the
/// quorum"). It works on a manager that still leads, too (a leader that lost the majority
/// leads on for an election timeout). The other managers' entries stay behind as managers
/// outside the Raft membership, without a manager status and reading Unknown; joining a node
/// made again removes its own (see [`super::forget_stale`]), with no demotion to wait for.
pub async fn force_new_cluster(node: &str, docker: &Docker, advertise: &str) -> Result<SwarmRecord> {
    let req = SwarmInitRequest {
        listen_addr: Some(format!("0.0.0.0:{SWARM_PORT}")),
        advertise_addr: Some(format!("{advertise}:{SWARM_PORT}")),
        force_new_cluster: Some(true),
        ..Default::default()
    };
    docker
        .init_swarm(req)
        .await
        .map_err(|e| Error::engine(node, "force a new cluster (swarm init --force-new-cluster)", e))?;
    record(node, docker, advertise).await
}

/// Reads the swarm's ID from a manager.
pub async fn record(node: &str, docker: &Docker, advertise: &str) -> Result<SwarmRecord> {
    let swarm = docker.inspect_swarm().await.map_err(|e| Error::engine(node, "read the swarm's ID", e))?;
    Ok(SwarmRecord { id: swarm.id.unwrap_or_default(), manager_addr: format!("{advertise}:{SWARM_PORT}") })
}

/// The swarm's current join token for `role`, read from a manager (`manager`, named
/// `manager_node` for errors). Read at every join and never stored, so a rotated token
/// (`docker swarm join-token --rotate`) is simply the one used next.
pub async fn join_token(manager_node: &str, manager: &Docker, role: Role) -> Result<Secret> {
    let swarm =
        manager.inspect_swarm().await.map_err(|e| Error::engine(manager_node, "read the swarm's join token", e))?;
    let tokens = swarm.join_tokens.unwrap_or_default();
    let token = match role {
        Role::Manager => tokens.manager,
        Role::Worker => tokens.worker,
    };
    token
        .filter(|t| !t.is_empty())
        .map(Secret::new)
        .ok_or_else(|| Error::node(manager_node, "read the swarm's join token", "the manager returned no token"))
}

/// `docker swarm join --token T --advertise-addr ADDR MANAGER:2377` on `node`, where
/// `manager_addr` is `address:2377` of a manager that answers.
pub async fn join(
    node: &str,
    docker: &Docker,
    advertise: &str,
    manager_addr: &str,
    token: &Secret,
    role: Role,
) -> Result<()> {
    let req = SwarmJoinRequest {
        listen_addr: Some(format!("0.0.0.0:{SWARM_PORT}")),
        advertise_addr: Some(format!("{advertise}:{SWARM_PORT}")),
        remote_addrs: Some(vec![manager_addr.to_string()]),
        join_token: Some(token.expose().to_string()),
        ..Default::default()
    };
    let what = format!("a join as {role} the swarm answers within its deadline");
    let attempt = Wait::new(node, what, JOIN_BACKGROUND).every(Duration::from_secs(2)).poll(|| async {
        match docker.join_swarm(req.clone()).await {
            Ok(()) => Look::Done(None),
            Err(e) if e.to_string().contains(JOIN_GOES_ON) => Look::Done(Some(e)),
            // The swarm's leader did not commit the new member in time (a busy or slow
            // machine: it happened with four TCG guests on 2 loaded cores). A node that
            // attempt left joining is waited for; one it left outside asks again.
            Err(e) if e.to_string().contains(JOIN_DEADLINE) => match super::local_view(docker).await {
                Ok(v) if v.active => Look::Done(Some(e)),
                _ => {
                    tracing::info!(node, "the swarm did not answer its join in time; asking again");
                    Look::NotYet(Box::new(Error::engine(node, format!("join the swarm as {role}"), e)))
                }
            },
            Err(e) => Look::Fail(Error::engine(node, format!("join the swarm as {role}"), e)),
        }
    });
    match attempt.await? {
        None => Ok(()),
        Some(said) => joined_in_background(node, docker, role, &said).await,
    }
}

/// What a join says when the swarm's leader did not answer within the engine's deadline.
const JOIN_DEADLINE: &str = "DeadlineExceeded";

/// What dockerd answers when a join outlasts its own wait (20 s): "Timeout was reached before
/// node joined. The attempt to join the swarm will continue in the background." Not a failure:
/// a manager's join under load (four QEMU guests on 2 cores, here) can take longer, and it
/// finishes by itself.
const JOIN_GOES_ON: &str = "continue in the background";

/// How long a join dockerd goes on with in the background may take to finish.
const JOIN_BACKGROUND: Duration = Duration::from_secs(120);

/// Waits (bounded) until a join dockerd continued in the background is done: the node is an
/// active member and, as a manager, answers for the swarm. A node that falls back out of the
/// swarm fails at once, with its engine's words.
async fn joined_in_background(node: &str, docker: &Docker, role: Role, said: &bollard::errors::Error) -> Result<()> {
    tracing::info!(node, "its engine goes on joining the swarm in the background; waiting for it");
    let what = format!("its join as {role} to finish (the engine said: {})", engine_message(said));
    Wait::new(node, what, JOIN_BACKGROUND)
        .every(Duration::from_secs(1))
        .poll(|| async {
            match super::local_view(docker).await {
                Ok(v) if v.active && !v.pending && (role == Role::Worker || v.manager) => Look::Done(()),
                Ok(v) if !v.active => Look::Fail(Error::node(
                    node,
                    format!("join the swarm as {role}"),
                    v.error.unwrap_or_else(|| "its engine left the swarm it was joining".into()),
                )),
                Ok(v) => Look::not_yet(v.error.unwrap_or_else(|| "still joining".into())),
                Err(e) => Look::NotYet(Box::new(e)),
            }
        })
        .await
}

/// `docker swarm leave --force` on `node`. Not being in a swarm is success.
pub async fn leave(node: &str, docker: &Docker) -> Result<()> {
    match docker.leave_swarm(Some(LeaveSwarmOptionsBuilder::new().force(true).build())).await {
        Ok(()) => Ok(()),
        Err(bollard::errors::Error::DockerResponseServerError { status_code: 503, .. }) => Ok(()),
        Err(e) => Err(Error::engine(node, "leave the swarm", e)),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    use tokio::net::UnixListener;

    use super::*;

    /// A fake engine on a unix socket: its join answers as dockerd does when a join outlasts
    /// its own wait, and its `info` says "pending" `pending` times, then `then`.
    async fn engine(
        dir: &std::path::Path,
        joins: &'static [&'static str],
        pending: usize,
        then: &'static str,
    ) -> Docker {
        let path = dir.join("docker.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let infos = Arc::new(AtomicUsize::new(0));
        let joined = Arc::new(AtomicUsize::new(0));
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (infos, joined) = (infos.clone(), joined.clone());
                tokio::spawn(async move {
                    let mut s = BufReader::new(stream);
                    loop {
                        let mut head = String::new();
                        let mut length = 0;
                        loop {
                            let mut line = String::new();
                            if s.read_line(&mut line).await.unwrap_or(0) == 0 {
                                return;
                            }
                            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                                length = v.trim().parse().unwrap_or(0);
                            }
                            if line == "\r\n" {
                                break;
                            }
                            head.push_str(&line);
                        }
                        let mut body = vec![0; length];
                        s.read_exact(&mut body).await.unwrap();
                        let (status, json) = if head.contains("/swarm/join") {
                            match joins.get(joined.fetch_add(1, Ordering::SeqCst)).copied().unwrap_or("ok") {
                                "ok" => ("200 OK", String::new()),
                                "deadline" => ("500 Internal Server Error", r#"{"message":"rpc error: code = DeadlineExceeded desc = context deadline exceeded"}"#.to_string()),
                                _ => ("503 Service Unavailable", r#"{"message":"Timeout was reached before node joined. The attempt to join the swarm will continue in the background. Use the \"docker info\" command to see the current swarm status of your node."}"#.to_string()),
                            }
                        } else if head.contains("/info") {
                            let state = if infos.fetch_add(1, Ordering::SeqCst) < pending { "pending" } else { then };
                            let control = state == "active";
                            let error = if state == "inactive" {
                                "rpc error: code = Unavailable desc = the manager is gone"
                            } else {
                                ""
                            };
                            (
                                "200 OK",
                                format!(
                                    r#"{{"Swarm":{{"LocalNodeState":"{state}","NodeID":"n1","ControlAvailable":{control},"Error":"{error}"}}}}"#
                                ),
                            )
                        } else {
                            ("404 Not Found", r#"{"message":"not here"}"#.to_string())
                        };
                        let reply = format!(
                            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{json}",
                            json.len()
                        );
                        if s.get_mut().write_all(reply.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Docker::connect_with_unix(&path.to_string_lossy(), 10, bollard::API_DEFAULT_VERSION).unwrap()
    }

    fn token() -> Secret {
        Secret::new("SWMTKN-1-test".to_string())
    }

    #[tokio::test]
    async fn a_join_the_engine_goes_on_with_in_the_background_is_waited_for() {
        let dir = tempfile::tempdir().unwrap();
        let docker = engine(dir.path(), &["background"], 2, "active").await;
        join("manager3", &docker, "10.0.0.13", "10.0.0.10:2377", &token(), Role::Manager)
            .await
            .expect("a join that finishes in the background is a join");
    }

    #[tokio::test]
    async fn a_join_past_the_swarms_deadline_is_asked_again() {
        let dir = tempfile::tempdir().unwrap();
        // Outside the swarm after each refusal (info: inactive), then accepted.
        let docker = engine(dir.path(), &["deadline", "deadline", "ok"], 0, "inactive").await;
        join("worker1", &docker, "10.0.0.101", "10.0.0.10:2377", &token(), Role::Worker)
            .await
            .expect("the third join is accepted");
    }

    #[tokio::test]
    async fn a_join_that_fails_in_the_background_says_the_engines_words() {
        let dir = tempfile::tempdir().unwrap();
        let docker = engine(dir.path(), &["background"], 1, "inactive").await;
        let e = join("manager3", &docker, "10.0.0.13", "10.0.0.10:2377", &token(), Role::Manager)
            .await
            .expect_err("the node fell out of the swarm");
        let said = e.to_string();
        assert!(said.starts_with("manager3: join the swarm as manager: "), "{said}");
        assert!(said.contains("the manager is gone"), "{said}");
    }
}
