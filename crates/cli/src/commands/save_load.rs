//! `lab images save DIR` and `lab images load DIR`: the registry's content to an OCI image
//! layout on this machine, and back (into the same cluster or another). The directory is
//! checked first, before any cluster is looked up: bad input is exit 2 naming the path, and
//! nothing is created. The work is `lab_core::images::layout`'s.

use std::path::Path;

use lab_core::images::layout;
use lab_core::images::push::human;
use lab_core::Result;
use serde_json::json;

use super::push::{client, Events};
use crate::args::{ImagesArgs, Output};

fn blobs(n: usize) -> &'static str {
    if n == 1 {
        "blob"
    } else {
        "blobs"
    }
}

/// How many tags of how many repositories.
fn tags_of(images: &[layout::Tagged]) -> String {
    let mut repos: Vec<&str> = images.iter().map(|t| t.repository.as_str()).collect();
    repos.dedup();
    let t = if images.len() == 1 { "tag" } else { "tags" };
    let r = if repos.len() == 1 { "repository" } else { "repositories" };
    format!("{} {t} of {} {r}", images.len(), repos.len())
}

pub(super) async fn save(config: Option<&Path>, args: &ImagesArgs, dir: &Path) -> Result<i32> {
    let target = layout::save_dir(dir)?;
    let client = client(config, args.cluster.as_deref()).await?;
    let events = Events::new(args.output);
    let result = layout::save(client, &target, events.clone()).await;
    events.finish();
    let saved = result?;
    match args.output {
        Output::Json => {
            let out = json!({
                "dir": saved.dir,
                "images": saved.images,
                "blobs": {"written": saved.written, "written_bytes": saved.written_bytes, "skipped": saved.skipped},
                "seconds": saved.seconds,
            });
            outln!("{}", serde_json::to_string_pretty(&out).expect("json"))?;
        }
        Output::Table => {
            for t in &saved.images {
                errln!("{}:{} {}", t.repository, t.tag, t.digest);
            }
            outln!(
                "saved {} to {}: {} {} written ({}), {} already there, in {:.1}s",
                tags_of(&saved.images),
                saved.dir.display(),
                saved.written,
                blobs(saved.written),
                human(saved.written_bytes),
                saved.skipped,
                saved.seconds
            )?;
        }
    }
    Ok(0)
}

pub(super) async fn load(config: Option<&Path>, args: &ImagesArgs, dir: &Path) -> Result<i32> {
    let layout = layout::open(dir)?;
    let client = client(config, args.cluster.as_deref()).await?;
    let events = Events::new(args.output);
    let result = layout::load(client, &layout, events.clone()).await;
    events.finish();
    let loaded = result?;
    match args.output {
        Output::Json => {
            let images: Vec<_> = loaded
                .images
                .iter()
                .map(|t| {
                    let mut v = json!(t);
                    v["reference"] = json!(format!("localhost:5000/{}:{}", t.repository, t.tag));
                    v
                })
                .collect();
            let out = json!({
                "dir": loaded.dir,
                "images": images,
                "blobs": {
                    "sent": loaded.sent, "sent_bytes": loaded.sent_bytes,
                    "skipped": loaded.skipped, "mounted": loaded.mounted,
                },
                "seconds": loaded.seconds,
            });
            outln!("{}", serde_json::to_string_pretty(&out).expect("json"))?;
        }
        Output::Table => {
            for t in &loaded.images {
                errln!("localhost:5000/{}:{} {}", t.repository, t.tag, t.digest);
            }
            outln!(
                "loaded {} from {}: {} {} sent ({}), {} already there, {} mounted, in {:.1}s",
                tags_of(&loaded.images),
                loaded.dir.display(),
                loaded.sent,
                blobs(loaded.sent),
                human(loaded.sent_bytes),
                loaded.skipped,
                loaded.mounted,
                loaded.seconds
            )?;
        }
    }
    Ok(0)
}
