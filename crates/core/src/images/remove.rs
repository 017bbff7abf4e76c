//! `lab images rm`: deleting tags, one tag at a time.
//!
//! The registry's API deletes manifests, not tags: `DELETE /v2/<repo>/manifests/<digest>`
//! removes the manifest and every tag of the repository that names it (distribution looks the
//! tags up by digest and untags each). Deleting by tag is not in distribution 2.8 or v3. So
//! `rm app:1`, where `app:latest` names the same image, would take `app:latest` with it.
//!
//! lab deletes one tag alone this way, as some registry tools do: it points the tag at a tiny
//! manifest of its own (an OCI manifest with an empty config, no layers and annotations
//! naming the tag and a nonce, so its digest is that tag's alone), then deletes that
//! manifest's digest, which takes only that tag. The image and its other tags stay. Where the
//! tag is the only one naming its manifest, the manifest is deleted directly. `--all-tags`
//! deletes the manifest with every tag naming it, as the API does.
//!
//! A run stopped between the two requests leaves the tag on lab's tiny manifest: `lab images`
//! does not list it ([`is_placeholder`]), and `rm` of that tag deletes it. The tiny config
//! blob (two bytes, shared by every such manifest) is garbage for `lab images gc`.
//!
//! Neighbours: it speaks to the registry through [`crate::images::distribution`]; the CLI
//! parses the references and prints what went.

use bytes::Bytes;
use serde::Serialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::images::distribution::{self, Client, OCI_MANIFEST};

/// The annotation that marks lab's placeholder manifest; its value is the tag it stood for.
pub const PLACEHOLDER_ANNOTATION: &str = "dev.lab.removed-tag";
/// The placeholder's config: an empty JSON object.
const EMPTY_CONFIG: &[u8] = b"{}";

/// One tag `lab images rm` deleted.
#[derive(Debug, Clone, Serialize)]
pub struct Removed {
    /// The repository.
    pub repository: String,
    /// The tag asked for.
    pub tag: String,
    /// The digest the tag named.
    pub digest: String,
    /// Every tag that went (the one asked for; with `--all-tags`, each tag naming the digest).
    pub removed_tags: Vec<String>,
    /// Tags of the same repository that name the same digest and stayed.
    pub kept_tags: Vec<String>,
}

/// Whether a manifest's bytes are lab's placeholder (a tag being deleted).
pub fn is_placeholder(manifest: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(manifest)
        .is_ok_and(|v| v["annotations"][PLACEHOLDER_ANNOTATION].is_string())
}

/// Deletes each `(repository, tag)` of `targets`, in order: the tag alone, or with
/// `all_tags` its manifest and every tag naming it. Every target is looked up first: one the
/// registry does not have is bad input naming it (all of them), and nothing is deleted.
pub async fn remove(client: &Client, targets: &[(String, String)], all_tags: bool) -> Result<Vec<Removed>> {
    let mut missing = Vec::new();
    for (repo, tag) in targets {
        if client.manifest(repo, tag).await?.is_none() {
            missing.push(format!("{repo}:{tag}"));
        }
    }
    if !missing.is_empty() {
        return Err(Error::input(
            "NAME:TAG",
            format!("the registry has no {}; nothing was deleted", missing.join(", ")),
        ));
    }
    let mut out: Vec<Removed> = Vec::new();
    for (repo, tag) in targets {
        // Already taken by an earlier `--all-tags` target, or named twice.
        if out.iter().any(|r| r.repository == *repo && r.removed_tags.contains(tag)) {
            continue;
        }
        out.push(remove_one(client, repo, tag, all_tags).await?);
    }
    Ok(out)
}

/// Deletes `repo:tag` (with `all_tags`, its manifest and every tag naming it).
async fn remove_one(client: &Client, repo: &str, tag: &str, all_tags: bool) -> Result<Removed> {
    let Some((digest, _, _)) = client.manifest(repo, tag).await? else {
        return Err(Error::input("NAME:TAG", format!("the registry has no {repo}:{tag}")));
    };
    let mut others = Vec::new();
    for t in client.tags(repo).await? {
        if t != tag && client.manifest(repo, &t).await?.is_some_and(|(d, _, _)| d == digest) {
            others.push(t);
        }
    }
    let (removed_tags, kept_tags) = if all_tags || others.is_empty() {
        client.delete_manifest(repo, &digest).await?;
        (std::iter::once(tag.to_string()).chain(others).collect(), Vec::new())
    } else {
        let placeholder = put_placeholder(client, repo, tag).await?;
        client.delete_manifest(repo, &placeholder).await?;
        (vec![tag.to_string()], others)
    };
    Ok(Removed { repository: repo.into(), tag: tag.into(), digest, removed_tags, kept_tags })
}

/// Points `repo:tag` at a placeholder manifest of its own; returns the placeholder's digest.
async fn put_placeholder(client: &Client, repo: &str, tag: &str) -> Result<String> {
    let config = format!("sha256:{:x}", Sha256::digest(EMPTY_CONFIG));
    if client.blob_size(repo, &config).await?.is_none() {
        client.upload(repo, &config, EMPTY_CONFIG.len() as u64, distribution::full(EMPTY_CONFIG)).await?;
    }
    let bytes = placeholder(&config, repo, tag, &nonce());
    client.put_manifest(repo, tag, OCI_MANIFEST, bytes).await
}

/// The placeholder manifest for `repo:tag`: no layers, and annotations that make its digest
/// unique (the nonce: two runs deleting the same tag at once must not share one).
fn placeholder(config: &str, repo: &str, tag: &str, nonce: &str) -> Bytes {
    let m = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": EMPTY_CONFIG.len()},
        "layers": [],
        "annotations": {PLACEHOLDER_ANNOTATION: format!("{repo}:{tag}"), "dev.lab.nonce": nonce},
    });
    Bytes::from(serde_json::to_vec(&m).expect("json"))
}

/// 16 random hex digits (the time, if the system has no randomness to give).
fn nonce() -> String {
    let mut b = [0u8; 8];
    if getrandom::getrandom(&mut b).is_err() {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        b = (t.as_nanos() as u64).to_le_bytes();
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_recognised_and_unique_per_nonce() {
        let a = placeholder("sha256:44", "app", "1", "aa");
        let b = placeholder("sha256:44", "app", "1", "bb");
        assert_ne!(a, b, "two deletions of one tag must not share a manifest");
        assert!(is_placeholder(&a));
        let v: serde_json::Value = serde_json::from_slice(&a).unwrap();
        assert_eq!(v["layers"], json!([]));
        assert_eq!(v["annotations"][PLACEHOLDER_ANNOTATION], "app:1");
        // An image's own manifest is not one, nor is anything unreadable.
        assert!(!is_placeholder(br#"{"schemaVersion":2,"layers":[{"size":1}]}"#));
        assert!(!is_placeholder(br#"{"annotations":{"org.opencontainers.image.title":"x"}}"#));
        assert!(!is_placeholder(b"not json"));
        assert_eq!(nonce().len(), 16);
    }
}
