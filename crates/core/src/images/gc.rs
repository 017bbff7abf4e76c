//! `lab images gc`: the registry's own garbage collection, run safely.
//!
//! `registry garbage-collect` deletes every blob no manifest refers to. Run while the registry
//! accepts pushes, it can delete the layers of an image being pushed (distribution's docs say
//! so), so the registry is made read-only first ([`crate::registry::set_read_only`], a service
//! update: the swarm restarts the task with the variable set), the collection runs in that
//! task's container through its node's engine (an exec with an argument vector, no shell), and
//! the registry is made writable again, whatever happened. The restart also drops the
//! registry's in-memory cache of blob descriptors, which would otherwise still answer for
//! blobs the collection deleted.
//!
//! An interrupted run leaves the service read-only; the planner counts such a spec as not
//! lab's ([`crate::registry`]'s spec matching), so the next `lab up` redeploys it writable, and
//! the next `lab images gc` ends writable too.

use std::time::{Duration, Instant};

use bollard::exec::{StartExecOptions, StartExecResults};
use bollard::models::ExecConfig;
use futures_util::StreamExt;
use serde::Serialize;

use crate::cluster::Nodes;
use crate::error::{Error, Result};
use crate::images::distribution::Client;
use crate::registry;
use crate::registry::Endpoint;
use crate::wait::Wait;

/// Where the registry keeps its data in its container.
const DATA: &str = "/var/lib/registry";
/// How long the registry may take to come back after each restart.
const RESTART: Duration = Duration::from_secs(120);
/// How long `du` may take.
const MEASURE: Duration = Duration::from_secs(300);
/// How long the collection may take (it walks every manifest and blob).
const COLLECT: Duration = Duration::from_secs(3600);

/// What a collection did.
#[derive(Debug, Clone, Serialize)]
pub struct Collected {
    /// The registry's node.
    pub node: String,
    /// The configuration file the collection read (the one the image's command names).
    pub config: String,
    /// The data's size before, as `du` counts it.
    pub before_bytes: u64,
    /// After.
    pub after_bytes: u64,
    /// What came back.
    pub reclaimed_bytes: u64,
    /// The collection's own summary line (`N blobs marked, M blobs and K manifests eligible
    /// for deletion`), if it printed one.
    pub summary: Option<String>,
    /// How long it all took, restarts included.
    pub seconds: f64,
}

/// Runs the registry's garbage collection with the registry read-only, and makes it writable
/// again afterwards, also when the collection failed or `interrupted` resolved first (the
/// CLI's Ctrl-C, SIGTERM, SIGHUP or SIGQUIT). `note` is told each stage; it must not fail
/// (after a SIGHUP the terminal it printed on may be gone).
///
/// Making it writable replaces the task's container, which ends a collection still running in
/// it: the registry never takes a push while a collection runs.
pub async fn collect(
    rt: &dyn Nodes,
    note: &(dyn Fn(&str) + Sync),
    interrupted: impl std::future::Future<Output = ()>,
) -> Result<Collected> {
    let start = Instant::now();
    // A registry that does not run is an error before anything changes.
    registry::endpoint(rt).await?;
    let (mgr_name, mgr) = rt.manager().await?;
    let program = registry::service_program(&mgr_name, &mgr).await?;
    let config = registry::config_path(&program)
        .ok_or_else(|| {
            Error::node(
                &mgr_name,
                "find the registry's configuration file",
                format!("the registry's command ({}) names no YAML file", program.join(" ")),
            )
        })?
        .to_string();
    note("making the registry read-only (its task restarts)");
    registry::set_read_only(rt, true).await?;
    let work = async {
        let at = serving(rt, true).await?;
        note(&format!("collecting garbage on {} (registry garbage-collect {config})", at.node));
        let before = size(&at).await?;
        let output =
            run(&at, &["registry", "garbage-collect", &config], COLLECT, "run registry garbage-collect").await?;
        let after = size(&at).await?;
        Ok::<_, Error>((at.node, before, after, summary(&output)))
    };
    let result = tokio::select! {
        r = work => r,
        () = interrupted => Err(Error::op("lab images gc", "interrupted before the collection finished")),
    };
    note("making the registry writable again (its task restarts)");
    let restored = match registry::set_read_only(rt, false).await {
        Ok(()) => serving(rt, false).await.map(|_| ()),
        Err(e) => Err(e),
    };
    let back = "`lab up` makes the registry writable again";
    match (result, restored) {
        (Ok((node, before, after, summary)), Ok(())) => Ok(Collected {
            node,
            config,
            before_bytes: before,
            after_bytes: after,
            reclaimed_bytes: before.saturating_sub(after),
            summary,
            seconds: start.elapsed().as_secs_f64(),
        }),
        (Ok(_), Err(e)) => {
            Err(e.with_hint(format!("the collection ran, but the registry may still be read-only; {back}")))
        }
        (Err(e), Ok(())) => Err(e),
        (Err(e), Err(again)) => Err(e.with_hint(format!("and the registry may still be read-only ({again}); {back}"))),
    }
}

/// Waits, at most [`RESTART`], until the registry's running task is one with the read-only
/// setting as asked and it answers `GET /v2/`.
async fn serving(rt: &dyn Nodes, read_only: bool) -> Result<Endpoint> {
    let what = if read_only { "the registry to answer read-only" } else { "the registry to answer writable" };
    let node = rt.desired().topology.registry_node().name.clone();
    Wait::new(node, what, RESTART)
        .until(|| async {
            let at = registry::endpoint(rt).await?;
            let c = at.docker.inspect_container(&at.container, None).await.map_err(|e| {
                Error::engine(&at.node, format!("inspect the registry's task container {}", at.container), e)
            })?;
            let env = c.config.and_then(|c| c.env).unwrap_or_default();
            if registry::is_read_only(&env) != read_only {
                return Err(Error::node(&at.node, "look at the registry's task", "it still runs the previous setting"));
            }
            Client::new(at.clone()).ping().await?;
            Ok(at)
        })
        .await
}

/// The registry's data size in bytes, by `du -sk` in its container.
async fn size(at: &Endpoint) -> Result<u64> {
    let out = run(at, &["du", "-sk", DATA], MEASURE, "measure the registry's data (du -sk)").await?;
    parse_du(&out).map(|kb| kb * 1024).ok_or_else(|| {
        Error::node(&at.node, "measure the registry's data (du -sk)", format!("du said: {}", out.trim()))
    })
}

/// Runs `argv` in the registry's container (an exec, arguments as given, no shell), for at
/// most `limit`; its stdout and stderr together, or an error with the last lines it printed.
async fn run(at: &Endpoint, argv: &[&str], limit: Duration, step: &str) -> Result<String> {
    let cfg = ExecConfig {
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        cmd: Some(argv.iter().map(|s| s.to_string()).collect()),
        ..Default::default()
    };
    let docker = &at.docker;
    let created = docker.create_exec(&at.container, cfg).await.map_err(|e| Error::engine(&at.node, step, e))?;
    let started = docker
        .start_exec(&created.id, Some(StartExecOptions { detach: false, ..Default::default() }))
        .await
        .map_err(|e| Error::engine(&at.node, step, e))?;
    let StartExecResults::Attached { mut output, .. } = started else {
        return Err(Error::node(&at.node, step, "the engine did not attach to the command"));
    };
    let mut said = Vec::new();
    let read = async {
        while let Some(chunk) = output.next().await {
            match chunk {
                Ok(c) => said.extend_from_slice(&c.into_bytes()),
                Err(e) => return Err(Error::engine(&at.node, step, e)),
            }
        }
        Ok(())
    };
    match tokio::time::timeout(limit, read).await {
        Ok(r) => r?,
        Err(_) => {
            return Err(Error::Timeout {
                node: at.node.clone(),
                what: format!("{} to finish", argv.join(" ")),
                secs: limit.as_secs(),
                hint: None,
                source: None,
            })
        }
    }
    let said = String::from_utf8_lossy(&said).into_owned();
    let code = docker.inspect_exec(&created.id).await.map_err(|e| Error::engine(&at.node, step, e))?.exit_code;
    match code {
        Some(0) => Ok(said),
        code => Err(Error::node(
            &at.node,
            step,
            format!("{} exited {}: {}", argv[0], code.map(|c| c.to_string()).unwrap_or("?".into()), reason(&said, 5)),
        )),
    }
}

/// The size in KiB `du -sk DIR` printed (`1234\t/var/lib/registry`).
fn parse_du(out: &str) -> Option<u64> {
    out.lines().rev().find_map(|l| l.split_whitespace().next()?.parse().ok())
}

/// The collection's summary line, which says how much it found to delete.
fn summary(output: &str) -> Option<String> {
    output
        .lines()
        .find(|l| l.contains("blobs marked") && l.contains("eligible for deletion"))
        .map(|l| l.trim().to_string())
}

/// Why a tool failed, in its own words: a Go panic's message, else the last line that says
/// something failed (the collection prints a line per blob before its error), else its last
/// `n` lines.
fn reason(output: &str, n: usize) -> String {
    let lines: Vec<&str> = output.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    if let Some(p) = lines.iter().find(|l| l.starts_with("panic:")) {
        return p.to_string();
    }
    let says_failure = |l: &&&str| {
        let l = l.to_lowercase();
        l.contains("fail") || l.contains("error")
    };
    if let Some(l) = lines.iter().rev().find(says_failure) {
        return l.to_string();
    }
    let tail = &lines[lines.len().saturating_sub(n)..];
    if tail.is_empty() {
        "(it printed nothing)".into()
    } else {
        tail.join(" / ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn du_output_is_read_as_kib() {
        assert_eq!(parse_du("1234\t/var/lib/registry\n"), Some(1234));
        assert_eq!(parse_du("0\t/var/lib/registry"), Some(0));
        // A warning before the figure (busybox on an unreadable file) does not hide it.
        assert_eq!(parse_du("du: can't open 'x': Permission denied\n88\t/var/lib/registry\n"), Some(88));
        assert_eq!(parse_du(""), None);
        assert_eq!(parse_du("du: /var/lib/registry: No such file or directory"), None);
    }

    #[test]
    fn the_collections_summary_and_a_failures_last_words() {
        let out =
            "e2e\ne2e: marking manifest sha256:aa\n\n3 blobs marked, 2 blobs and 0 manifests eligible for deletion\n\
                   blob eligible for deletion: sha256:bb\n";
        // The summary, not a line naming one blob.
        assert_eq!(summary(out).as_deref(), Some("3 blobs marked, 2 blobs and 0 manifests eligible for deletion"));
        assert_eq!(summary("nothing to say"), None);
        assert_eq!(reason("a\n\nb\nc\n", 2), "b / c");
        assert_eq!(reason("", 3), "(it printed nothing)");
        // The collection's error, not the blobs it marked before it.
        let failed = "r: marking blob sha256:aa\nr: marking manifest sha256:bb\n\
                      failed to garbage collect: failed to mark: storage: read exceeds limit\n";
        assert_eq!(reason(failed, 5), "failed to garbage collect: failed to mark: storage: read exceeds limit");
        // A Go panic: its message, not the stack below it.
        let panicked = "panic: readonly config key must contain additional keys\n\ngoroutine 1 [running]:\n\
                        github.com/docker/distribution/registry/handlers.NewApp(...)\n";
        assert_eq!(reason(panicked, 5), "panic: readonly config key must contain additional keys");
    }
}
