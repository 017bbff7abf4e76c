//! `lab push` and `lab images`: the cluster registry's contents, from this machine, and
//! `lab images gc`, which reclaims the space of deleted tags. `lab images save` and `load` are
//! in `save_load`, with what they share from here (the registry's client, the progress).

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use lab_core::cluster::Silent;
use lab_core::images::distribution::Client;
use lab_core::images::push::{self, human, Item};
use lab_core::{Error, Result};
use serde_json::json;

use super::cluster::existing;
use crate::args::{ImagesAction, ImagesArgs, Output, PushArgs};
use crate::output::table;

/// The registry of the cluster `cluster` names, reached through its node's engine.
pub(super) async fn client(config: Option<&std::path::Path>, cluster: Option<&str>) -> Result<Arc<Client>> {
    Ok(reach(config, cluster).await?.1)
}

/// The cluster `cluster` names, and a client of its registry.
async fn reach(
    config: Option<&std::path::Path>,
    cluster: Option<&str>,
) -> Result<(lab_core::converge::runtime::Runtime, Arc<Client>)> {
    let (rt, _, _) = existing(config, cluster, Arc::new(Silent), true).await?;
    rt.set_machines(rt.driver.observe().await?);
    let client = Client::new(lab_core::registry::endpoint(&rt).await?);
    Ok((rt, client))
}

/// Progress on stderr: a running byte count on a terminal, lines otherwise.
pub(super) struct Events {
    bar: Option<indicatif::ProgressBar>,
    sent: AtomicU64,
}

impl Events {
    /// A byte count with a bar on a terminal (not in CI, not with `--output json`).
    pub(super) fn new(output: Output) -> Arc<Events> {
        let bar =
            (std::io::stderr().is_terminal() && !crate::progress::in_ci() && output == Output::Table).then(|| {
                let b = indicatif::ProgressBar::new(0);
                b.set_style(
                    indicatif::ProgressStyle::with_template("{bar:30} {bytes}/{total_bytes} {bytes_per_sec}")
                        .expect("template"),
                );
                b
            });
        Arc::new(Events { bar, sent: AtomicU64::new(0) })
    }

    /// Takes the bar off the terminal.
    pub(super) fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

impl push::Events for Events {
    fn note(&self, message: &str) {
        match &self.bar {
            Some(b) => b.println(message),
            None => errln!("{message}"),
        }
    }
    fn sent(&self, n: u64) {
        self.sent.fetch_add(n, Ordering::Relaxed);
        if let Some(b) = &self.bar {
            b.inc(n);
        }
    }
    fn to_send(&self, n: u64) {
        if let Some(b) = &self.bar {
            b.inc_length(n);
        }
    }
}

fn items(args: &PushArgs) -> Result<Vec<Item>> {
    if args.rename.is_some() && args.images.len() != 1 {
        return Err(Error::input("--as", "names one image; it was given with several"));
    }
    args.images
        .iter()
        .map(|source| {
            let (repo, tag) = match &args.rename {
                Some(r) => push::target_of(r).map_err(|m| Error::input("--as", m))?,
                None => push::target_of(source).map_err(|m| Error::input("IMAGE", m))?,
            };
            Ok(Item { source: source.clone(), repo, tag })
        })
        .collect()
}

pub(super) async fn push_cmd(config: Option<&std::path::Path>, args: &PushArgs) -> Result<i32> {
    let items = items(args)?;
    let (_, engine) = lab_core::cluster::local_host().map_err(|m| Error::input("docker context", m))?;
    let local = lab_core::cluster::ImageSource::default().local_engine().await.map_err(|m| Error::op("lab push", m))?;
    let (rt, client) = reach(config, args.cluster.cluster.as_deref()).await?;
    let events = Events::new(args.output);
    let result = push::push(client.clone(), &local, &engine, &items, events.clone()).await;
    events.finish();
    // What the registry holds now, for the day its node is lost.
    if let Ok(repositories) = client.catalog().await {
        super::seen::remember_these(&rt, repositories);
    }
    let (pushed, took) = result?;
    let sent: u64 = pushed.iter().map(|p| p.sent_bytes()).sum();
    match args.output {
        Output::Json => {
            let images: Vec<_> = pushed
                .iter()
                .map(|p| {
                    json!({
                        "source": p.source, "reference": p.reference, "digest": p.digest,
                        "sent_bytes": p.sent_bytes(),
                        "blobs": p.blobs.iter().map(|(d, s, f)| json!({"digest": d, "size": s, "fate": f})).collect::<Vec<_>>(),
                    })
                })
                .collect();
            let out = json!({"images": images, "sent_bytes": sent, "seconds": took.as_secs_f64()});
            outln!("{}", serde_json::to_string_pretty(&out).expect("json"))?;
        }
        Output::Table => {
            for p in &pushed {
                let parts: Vec<String> = push::tally(p)
                    .iter()
                    .map(|(k, (n, bytes))| {
                        format!("{n} {} {k} ({})", if *n == 1 { "blob" } else { "blobs" }, human(*bytes))
                    })
                    .collect();
                errln!("{}: {}", p.source, parts.join(", "));
                // The reference to use in a service or a stack file, on stdout alone.
                outln!("{}", p.reference)?;
            }
            errln!("sent {} in {:.1}s", human(sent), took.as_secs_f64());
        }
    }
    Ok(0)
}

pub(super) async fn images(config: Option<&std::path::Path>, args: &ImagesArgs) -> Result<i32> {
    match &args.action {
        None | Some(ImagesAction::Ls) => {
            let client = client(config, args.cluster.as_deref()).await?;
            let listed = push::list(&client).await?;
            match args.output {
                Output::Json => outln!("{}", serde_json::to_string_pretty(&listed).expect("json"))?,
                Output::Table => {
                    let rows: Vec<Vec<String>> = listed
                        .iter()
                        .map(|l| vec![l.repository.clone(), l.tag.clone(), l.digest.clone(), human(l.size)])
                        .collect();
                    out!("{}", table(&["REPOSITORY", "TAG", "DIGEST", "SIZE"], &rows))?;
                }
            }
        }
        Some(ImagesAction::Rm { references, all_tags }) => return rm(config, args, references, *all_tags).await,
        Some(ImagesAction::Gc) => return gc(config, args).await,
        Some(ImagesAction::Save { dir }) => return super::save_load::save(config, args, dir).await,
        Some(ImagesAction::Load { dir }) => return super::save_load::load(config, args, dir).await,
    }
    Ok(0)
}

/// Resolves at the first SIGINT (Ctrl-C), SIGTERM, SIGHUP (a closed terminal or ssh session)
/// or SIGQUIT, saying so on stderr if it still can.
///
/// The handlers are installed here, before the registry is made read-only, not when the
/// future is first polled: a signal that came in between would kill lab with the registry
/// left read-only. Installed once, they stay for the life of the process, so a second signal
/// during the cleanup is taken too and does not stop it.
fn stop_signals() -> Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let kinds = [SignalKind::interrupt(), SignalKind::terminate(), SignalKind::hangup(), SignalKind::quit()];
    let mut streams = Vec::new();
    for kind in kinds {
        streams.push(signal(kind).map_err(|e| Error::op("lab images gc", format!("handle signals: {e}")))?);
    }
    Ok(async move {
        let any = futures_util::future::select_all(streams.iter_mut().map(|s| Box::pin(s.recv())));
        any.await;
        errln!("interrupted: making the registry writable again before stopping");
    })
}

/// `lab images rm NAME:TAG...`: every reference is read first (bad input, exit 2, before
/// anything is deleted), then each tag goes.
async fn rm(config: Option<&std::path::Path>, args: &ImagesArgs, references: &[String], all_tags: bool) -> Result<i32> {
    let targets = references.iter().map(|r| rm_target(r)).collect::<Result<Vec<_>>>()?;
    let client = client(config, args.cluster.as_deref()).await?;
    let removed = lab_core::images::remove::remove(&client, &targets, all_tags).await?;
    match args.output {
        Output::Json => outln!("{}", serde_json::to_string_pretty(&json!({ "deleted": removed })).expect("json"))?,
        Output::Table => {
            for r in &removed {
                let repo = &r.repository;
                let also: Vec<String> =
                    r.removed_tags.iter().filter(|t| **t != r.tag).map(|t| format!("{repo}:{t}")).collect();
                let mut line = format!("deleted {repo}:{} ({})", r.tag, r.digest);
                if !also.is_empty() {
                    line.push_str(&format!(" with {}", also.join(", ")));
                }
                if !r.kept_tags.is_empty() {
                    let kept: Vec<String> = r.kept_tags.iter().map(|t| format!("{repo}:{t}")).collect();
                    line.push_str(&format!("; the image stays as {}", kept.join(", ")));
                }
                outln!("{line}")?;
            }
        }
    }
    Ok(0)
}

/// The repository and tag of a `lab images rm` argument (`NAME:TAG`, or with the registry's
/// `localhost:5000/` in front).
fn rm_target(reference: &str) -> Result<(String, String)> {
    let r = reference.strip_prefix("localhost:5000/").or_else(|| reference.strip_prefix("127.0.0.1:5000/"));
    match r.unwrap_or(reference).rsplit_once(':') {
        Some((n, t)) if !t.contains('/') && !n.is_empty() && !t.is_empty() => Ok((n.to_string(), t.to_string())),
        _ => Err(Error::input("NAME:TAG", format!("{reference:?} names no tag (NAME:TAG)"))),
    }
}

/// `lab images gc`, under the cluster's lock: it changes the registry's service, which `lab up`
/// must not do at the same time.
async fn gc(config: Option<&std::path::Path>, args: &ImagesArgs) -> Result<i32> {
    let (rt, paths, _) = existing(config, args.cluster.as_deref(), Arc::new(Silent), true).await?;
    let _lock = paths.lock(&rt.desired.topology.cluster, "lab images gc")?;
    rt.set_machines(rt.driver.observe().await?);
    let note = |m: &str| errln!("{m}");
    let interrupted = stop_signals()?;
    let done = lab_core::images::gc::collect(&rt, &note, interrupted).await?;
    match args.output {
        Output::Json => outln!("{}", serde_json::to_string_pretty(&done).expect("json"))?,
        Output::Table => {
            if let Some(s) = &done.summary {
                errln!("{s}");
            }
            outln!(
                "reclaimed {} on {} ({} before, {} after, {:.1}s)",
                human(done.reclaimed_bytes),
                done.node,
                human(done.before_bytes),
                human(done.after_bytes),
                done.seconds
            )?;
        }
    }
    Ok(0)
}
