//! End-to-end: `lab images save DIR` and `lab images load DIR` (issue 19, item 4) on the docker
//! driver. One cluster's registry (open, registry:2) is saved to an OCI image layout on this
//! machine and loaded into another's (mutual TLS, registry:3), which the nodes then pull from
//! with the same digests; a repeat of either moves nothing. The registry holds each kind of
//! manifest a registry serves (Docker's manifest and manifest list, OCI's manifest and index),
//! so the test shows each one arriving byte for byte.
//!
//! One test, two clusters of one node each, made at once: the second cluster is the empty
//! registry a lost node leaves, and also the other cluster images move to.

use std::path::Path;

use lab_tests::{ensure_images, node_exec, push_image, Lab, REGISTRY3_IMAGE};
use serde_json::{json, Value};

fn lab(tag: &str) -> Lab {
    Lab::new(tag, env!("CARGO_BIN_EXE_lab-e2e"))
}

fn json_of(run: &lab_tests::Run) -> Value {
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", run.all()))
}

const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// `GET http://127.0.0.1:5000/v2/PATH` from the node `container`, accepting `accept`.
fn registry_get(container: &str, path: &str, accept: &str) -> String {
    let url = format!("http://127.0.0.1:5000/v2/{path}");
    node_exec(container, &["curl", "-sSf", "-H", &format!("Accept: {accept}"), &url]).ok(&format!("GET {url}")).stdout
}

/// Puts `body` as manifest `repo:tag` of `media_type` from the node `container`; its digest.
fn put_manifest(container: &str, repo: &str, tag: &str, media_type: &str, body: &str) -> String {
    let url = format!("http://127.0.0.1:5000/v2/{repo}/manifests/{tag}");
    let r = node_exec(
        container,
        &[
            "curl",
            "-sS",
            "-X",
            "PUT",
            "-H",
            &format!("Content-Type: {media_type}"),
            "--data-binary",
            body,
            "-D",
            "-",
            "-o",
            "/dev/null",
            &url,
        ],
    )
    .ok(&format!("PUT {url}"));
    assert!(r.stdout.starts_with("HTTP/1.1 201"), "PUT {url}:\n{}", r.all());
    r.stdout
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("docker-content-digest:").map(|d| d.trim().to_string()))
        .unwrap_or_else(|| panic!("no digest for {url}:\n{}", r.stdout))
}

/// `repo:tag` → digest, as `lab images --output json` lists them.
fn listing(lab: &Lab) -> Vec<(String, String)> {
    let v = json_of(&lab.on(&["images", "--output", "json"]).ok("lab images"));
    let mut rows: Vec<(String, String)> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                format!("{}:{}", r["repository"].as_str().unwrap(), r["tag"].as_str().unwrap()),
                r["digest"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    rows.sort();
    rows
}

fn blobs(run: &lab_tests::Run, key: &str) -> u64 {
    json_of(run)["blobs"][key].as_u64().unwrap_or_else(|| panic!("no blobs.{key}:\n{}", run.all()))
}

/// Copies the files of `from` (a layout: two levels of directories) to `to`.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// The index's descriptors: `REPO:TAG` → media type.
fn index_media_types(dir: &Path) -> Vec<(String, String)> {
    let index: Value = serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let mut out: Vec<(String, String)> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["annotations"]["org.opencontainers.image.ref.name"].as_str().unwrap().to_string(),
                d["mediaType"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn images_saved_from_one_cluster_load_into_another_in_mutual_tls_with_their_digests() {
    ensure_images();
    let from = lab("save");
    let to = lab("loadtls");
    std::thread::scope(|s| {
        let other = s.spawn(|| {
            to.up_with_registry(REGISTRY3_IMAGE, &["--workers", "0", "--registry-tls", "mutual"])
                .ok("lab up (mutual TLS)")
        });
        from.up(&["--workers", "0"]).ok("lab up (open)");
        other.join().unwrap();
    });
    let manager = from.container("manager");

    // Two images sharing their base, as `lab push` puts them (Docker's manifest).
    let pid = std::process::id();
    let a = push_image(&from, &format!("e2e-bk-a-{pid}:1"), "first");
    let b = push_image(&from, &format!("e2e-bk-b-{pid}:1"), "second");
    let (repo_a, repo_b) = (a.name.split(':').next().unwrap(), b.name.split(':').next().unwrap());
    // The same image as an OCI manifest, an OCI index and a Docker manifest list naming it.
    let m: Value = serde_json::from_str(&registry_get(&manager, &format!("{repo_a}/manifests/1"), DOCKER_MANIFEST))
        .expect("a Docker manifest");
    let config: Value = serde_json::from_str(&registry_get(
        &manager,
        &format!("{repo_a}/blobs/{}", m["config"]["digest"].as_str().unwrap()),
        "*/*",
    ))
    .expect("the image's config");
    let oci_layers: Vec<Value> = m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let layer = "application/vnd.oci.image.layer.v1.tar";
            json!({"mediaType": layer, "digest": l["digest"], "size": l["size"]})
        })
        .collect();
    let mut oci_config = m["config"].clone();
    oci_config["mediaType"] = json!("application/vnd.oci.image.config.v1+json");
    let oci =
        json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": oci_config, "layers": oci_layers}).to_string();
    let oci_digest = put_manifest(&manager, repo_a, "oci", OCI_MANIFEST, &oci);
    let platform = json!({"architecture": config["architecture"], "os": config["os"]});
    let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": oci_digest, "size": oci.len(), "platform": platform}]})
    .to_string();
    put_manifest(&manager, repo_a, "multi", OCI_INDEX, &index);
    let b_manifest = registry_get(&manager, &format!("{repo_b}/manifests/1"), DOCKER_MANIFEST);
    let b_digest = from.on(&["images", "--output", "json"]).ok("lab images").stdout;
    let b_digest: Value = serde_json::from_str(&b_digest).unwrap();
    let b_digest = b_digest.as_array().unwrap().iter().find(|r| r["repository"] == repo_b).unwrap()["digest"].clone();
    let list = json!({"schemaVersion": 2, "mediaType": DOCKER_LIST, "manifests": [
        {"mediaType": DOCKER_MANIFEST, "digest": b_digest, "size": b_manifest.len(), "platform": platform}]})
    .to_string();
    put_manifest(&manager, repo_b, "list", DOCKER_LIST, &list);
    let before = listing(&from);
    assert_eq!(before.len(), 5, "{before:?}");

    // Saved: every tag in index.json with its manifest's media type; again, nothing is written.
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("backup");
    let dir_s = dir.to_str().unwrap();
    let saved = from.on(&["images", "save", dir_s, "--output", "json"]).ok("lab images save");
    let written = blobs(&saved, "written");
    assert!(written >= 8 && blobs(&saved, "skipped") == 0, "{}", saved.stdout);
    assert_eq!(std::fs::read_to_string(dir.join("oci-layout")).unwrap().trim(), r#"{"imageLayoutVersion":"1.0.0"}"#);
    let kinds = index_media_types(&dir);
    let kind = |name: &str| kinds.iter().find(|k| k.0 == name).unwrap_or_else(|| panic!("{name}: {kinds:?}")).1.clone();
    assert_eq!(kind(&a.name), DOCKER_MANIFEST);
    assert_eq!(kind(&format!("{repo_a}:oci")), OCI_MANIFEST);
    assert_eq!(kind(&format!("{repo_a}:multi")), OCI_INDEX);
    assert_eq!(kind(&format!("{repo_b}:list")), DOCKER_LIST);
    let again = from.on(&["images", "save", dir_s, "--output", "json"]).ok("lab images save again");
    assert_eq!(blobs(&again, "written"), 0, "a repeat save wrote blobs:\n{}", again.stdout);
    assert_eq!(blobs(&again, "skipped"), written, "{}", again.stdout);
    let table = from.on(&["images", "save", dir_s]).ok("lab images save (table)");
    assert!(
        table.stdout.contains("5 tags of 2 repositories") && table.stdout.contains("0 blobs written"),
        "{}",
        table.all()
    );

    // Loaded into the other cluster's empty registry, in mutual TLS: the shared base is sent
    // once and mounted into the second repository; the digests are the same.
    assert_eq!(listing(&to), vec![], "the new cluster's registry is not empty");
    // First a copy whose own layer of the second image changed and kept its size, as a disk
    // might do it: the layout reads as whole, but the load stops at that file, exit 2 naming
    // it, and puts no tag.
    let bad = work.path().join("bad");
    copy_dir(&dir, &bad);
    let own_layer = serde_json::from_str::<Value>(&b_manifest).unwrap()["layers"].as_array().unwrap().last().unwrap()
        ["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let layer_path = bad.join("blobs/sha256").join(&own_layer);
    let mut bytes = std::fs::read(&layer_path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&layer_path, &bytes).unwrap();
    let refused = to.on(&["images", "load", bad.to_str().unwrap()]);
    eprintln!("lab images load of the corrupt copy:\n{}", refused.stderr);
    assert_eq!(refused.code, 2, "{}", refused.all());
    assert!(refused.stderr.contains(&own_layer) && refused.stderr.contains("corrupt"), "{}", refused.stderr);
    assert_eq!(listing(&to), vec![], "a load that stopped at a corrupt layer put tags");
    let loaded = to.on(&["images", "load", dir_s, "--output", "json"]).ok("lab images load (mutual TLS)");
    assert!(blobs(&loaded, "sent") > 0 && blobs(&loaded, "mounted") > 0, "{}", loaded.stdout);
    assert_eq!(listing(&to), before, "the loaded registry lists other tags or digests");
    let again = to.on(&["images", "load", dir_s, "--output", "json"]).ok("lab images load again");
    assert_eq!(blobs(&again, "sent"), 0, "a repeat load sent blobs:\n{}", again.stdout);
    // And back into the first cluster, which has it all: nothing is sent.
    let back = from.on(&["images", "load", dir_s, "--output", "json"]).ok("lab images load (open)");
    assert_eq!(blobs(&back, "sent"), 0, "{}", back.stdout);

    // The other cluster's node pulls each tag by the digest it had, and runs the OCI ones.
    let node = to.container("manager");
    for (name, digest) in &before {
        let reference = format!("localhost:5000/{name}");
        let pulled = node_exec(&node, &["docker", "pull", &reference]).ok(&format!("docker pull {reference}"));
        assert!(pulled.stdout.contains(&format!("Digest: {digest}")), "{reference} is not {digest}:\n{}", pulled.all());
    }
    for (tag, content) in [("oci", "first"), ("multi", "first")] {
        let reference = format!("localhost:5000/{repo_a}:{tag}");
        let ran = node_exec(&node, &["docker", "run", "--rm", "--entrypoint", "cat", &reference, "/marker"])
            .ok(&format!("run {reference}"));
        assert_eq!(ran.stdout.trim(), content, "{}", ran.all());
    }

    // Saved from the mutual-TLS registry: the same layout, index and blobs alike.
    let copy = work.path().join("copy");
    let saved =
        to.on(&["images", "save", copy.to_str().unwrap(), "--output", "json"]).ok("lab images save (mutual TLS)");
    assert_eq!(blobs(&saved, "written"), written, "{}", saved.stdout);
    assert_eq!(std::fs::read(copy.join("index.json")).unwrap(), std::fs::read(dir.join("index.json")).unwrap());
    let names = |d: &Path| {
        let mut n: Vec<String> = std::fs::read_dir(d.join("blobs/sha256"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        n.sort();
        n
    };
    assert_eq!(names(&copy), names(&dir), "the two layouts hold other blobs");
}
