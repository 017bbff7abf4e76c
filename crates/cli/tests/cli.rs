//! The real `lab` binary on bad input: exit status 2, one message naming the flag, file,
//! field or variable and the value, and nothing created (no state, no containers).

use std::path::Path;
use std::process::{Command, Output};

struct Env {
    state: tempfile::TempDir,
    cwd: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        Env { state: tempfile::tempdir().unwrap(), cwd: tempfile::tempdir().unwrap() }
    }

    fn command(&self, args: &[&str], vars: &[(&str, &str)]) -> Command {
        self.command_in(self.cwd.path(), args, vars)
    }

    /// `lab ARGS` as a command to run in `dir`, with this environment's state.
    fn command_in(&self, dir: &Path, args: &[&str], vars: &[(&str, &str)]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_lab"));
        c.args(args).current_dir(dir).env("XDG_STATE_HOME", self.state.path());
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("LAB_") {
                c.env_remove(k);
            }
        }
        for (k, v) in vars {
            c.env(k, v);
        }
        c
    }

    fn lab(&self, args: &[&str], vars: &[(&str, &str)]) -> Output {
        self.command(args, vars).output().unwrap()
    }

    /// `lab ARGS` run in `dir`, with this environment's state.
    fn lab_in(&self, dir: &Path, args: &[&str], vars: &[(&str, &str)]) -> Output {
        self.command_in(dir, args, vars).output().unwrap()
    }

    /// Runs lab with its stdout a pipe that nobody reads: the reading end is closed before lab
    /// starts, as when `lab ... | head -1` or `| true` has already gone. Every write lab makes
    /// to stdout then fails with EPIPE.
    fn lab_stdout_closed(&self, args: &[&str], vars: &[(&str, &str)]) -> Output {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        self.command(args, vars).stdout(writer).output().unwrap()
    }

    fn write(&self, name: &str, text: &str) {
        std::fs::write(self.cwd.path().join(name), text).unwrap();
    }

    /// Asserts exit 2, a single `lab: error:` line containing every `needle`, and that no
    /// state was written.
    fn bad(&self, args: &[&str], vars: &[(&str, &str)], needles: &[&str]) {
        let out = self.lab(args, vars);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "lab {args:?}: {stderr}");
        let line = stderr
            .lines()
            .find(|l| l.starts_with("lab: error: ") || l.starts_with("error: "))
            .unwrap_or_else(|| panic!("no error line: {stderr}"));
        for n in needles {
            assert!(line.contains(n), "lab {args:?}: {line:?} lacks {n:?}");
        }
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(!self.state.path().join("lab").exists(), "lab {args:?} wrote state");
    }
}

#[test]
fn bad_flags_exit_2_naming_flag_and_value() {
    let e = Env::new();
    e.bad(&["up", "--cluster", "Bad_Name"], &[], &["--cluster", "\"Bad_Name\""]);
    e.bad(&["up", "--cluster", &"a".repeat(33)], &[], &["--cluster", "longer than 32"]);
    e.bad(&["up", "--driver", "nope"], &[], &["--driver", "\"nope\"", "docker, qemu, ssh, virtualbox"]);
    e.bad(&["up", "--managers", "0"], &[], &["managers", "0"]);
    e.bad(&["up", "--workers", "500"], &[], &["workers", "500"]);
    e.bad(&["up", "--workers", "two"], &[], &["--workers", "two"]);
    e.bad(&["up", "--worker-label", "zone"], &[], &["--worker-label", "zone"]);
    e.bad(&["up", "--worker-label", "lab.role=x"], &[], &["--worker-label", "lab.role"]);
    e.bad(&["up", "--registry-mode", "magic"], &[], &["--registry-mode", "magic"]);
    e.bad(&["up", "--registry-tls", "closed"], &[], &["--registry-tls", "closed"]);
    e.bad(&["up"], &[("LAB_REGISTRY__TLS", "closed")], &["LAB_REGISTRY__TLS", "closed"]);
    // An open registry has no certificates to renew (issue 18, item 11).
    e.bad(&["up", "--renew-certs"], &[], &["--renew-certs", "open", "--registry-tls mutual"]);
    e.bad(&["plan", "--renew-certs"], &[], &["--renew-certs", "open"]);
    e.bad(&["up", "--config", "missing.toml"], &[], &["--config", "missing.toml"]);
    e.bad(&["status", "--cluster", "nothere"], &[], &["--cluster", "nothere", "lab ls"]);
    e.bad(&["frobnicate"], &[], &["frobnicate"]);
}

/// `lab images rm` reads every reference before it looks for a cluster (issue 18, item 2), and
/// `lab registry` (item 20) takes bad input like every command.
#[test]
fn images_rm_and_registry_bad_input_exit_2() {
    let e = Env::new();
    e.bad(&["images", "rm", "app"], &[], &["NAME:TAG", "\"app\"", "names no tag"]);
    e.bad(&["images", "rm", "app:1", "localhost:5000/other"], &[], &["NAME:TAG", "localhost:5000/other"]);
    e.bad(&["images", "rm", "app:1", "--cluster", "nothere"], &[], &["--cluster", "nothere"]);
    e.bad(&["registry", "--cluster", "nothere"], &[], &["--cluster", "nothere"]);
    e.bad(&["registry", "forward", "--listen", "port5443"], &[], &["--listen", "port5443"]);
}

/// `lab images save DIR` and `load DIR` read DIR before they look for a cluster (issue 19, item
/// 4): what is not a layout, missing or cannot be made is exit 2 naming the path, and nothing is
/// created, not even the directory `save` would make.
#[test]
fn images_save_and_load_bad_dir_exit_2_and_create_nothing() {
    let e = Env::new();
    let cwd = e.cwd.path();
    e.bad(&["images", "load", "missing"], &[], &["missing", "does not exist"]);
    e.write("file", "x");
    e.bad(&["images", "save", "file"], &[], &["file", "is not a directory"]);
    e.bad(&["images", "load", "file"], &[], &["file", "is not a directory"]);
    e.bad(&["images", "save", "no/such/dir"], &[], &["no/such/dir", "cannot be made"]);
    e.bad(&["images", "save", "file/dir"], &[], &["file/dir", "cannot be made", "not a directory"]);
    // Unwritable (the tests may run as root, whom file modes do not stop; /proc takes no files).
    e.bad(&["images", "save", "/proc/lab-backup"], &[], &["/proc/lab-backup", "/proc cannot be written"]);
    std::fs::create_dir(cwd.join("full")).unwrap();
    std::fs::write(cwd.join("full/notes.txt"), "mine").unwrap();
    e.bad(&["images", "save", "full"], &[], &["full", "not empty", "oci-layout"]);
    e.bad(&["images", "load", "full"], &[], &["full", "no oci-layout file"]);
    std::fs::write(cwd.join("full/oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    e.bad(&["images", "load", "full"], &[], &["index.json", "is missing"]);
    // What `skopeo copy ... oci:DIR:1` writes: a tag without a repository.
    let digest = format!("sha256:{}", "a".repeat(64));
    let index = format!(
        r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{digest}","size":2,"annotations":{{"org.opencontainers.image.ref.name":"1"}}}}]}}"#
    );
    std::fs::write(cwd.join("full/index.json"), index.replace("\"1\"", "\"app:1\"")).unwrap();
    e.bad(&["images", "load", "full"], &[], &["full/blobs/sha256/aaaa", "is missing; app:1 needs it"]);
    std::fs::write(cwd.join("full/index.json"), &index).unwrap();
    e.bad(&["images", "load", "full"], &[], &["index.json", "manifests[0]", "\"1\"", "REPO:TAG"]);
    // A good directory, and a cluster that is not there: the directory is not made.
    e.bad(&["images", "save", "new", "--cluster", "nothere"], &[], &["--cluster", "nothere"]);
    assert!(!cwd.join("new").exists(), "save made its directory for a cluster that is not there");
    let names: Vec<String> =
        std::fs::read_dir(cwd.join("full")).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
    assert_eq!(names.len(), 3, "{names:?}");
}

#[test]
fn bad_config_exits_2_naming_file_field_and_value() {
    let e = Env::new();
    e.write("lab.toml", "wrokers = 3\n");
    e.bad(&["up"], &[], &["lab.toml", "wrokers"]);
    e.write("lab.toml", "workers = \"many\"\n");
    e.bad(&["plan"], &[], &["lab.toml", "workers", "many"]);
    e.write("lab.toml", "[drivers.docker]\nnode_imgae = \"x\"\n");
    e.bad(&["up"], &[], &["lab.toml", "drivers.docker", "node_imgae"]);
    e.write("lab.toml", "cluster = \"UPPER\"\n");
    e.bad(&["up"], &[], &["lab.toml", "cluster", "UPPER"]);
    e.write("lab.toml", "workers = [\n");
    e.bad(&["up"], &[], &["lab.toml"]);
    std::fs::remove_file(e.cwd.path().join("lab.toml")).unwrap();
    e.bad(&["up"], &[("LAB_WORKERS", "lots")], &["LAB_WORKERS", "lots"]);
    e.bad(&["up"], &[("LAB_REGISTRY__MODE", "sideways")], &["LAB_REGISTRY__MODE", "sideways"]);
}

#[test]
fn drivers_lists_every_bundled_driver() {
    let out = Env::new().lab(&["drivers"], &[]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<Vec<&str>> = text.lines().skip(1).map(|l| l.split_whitespace().collect()).collect();
    let built_in: Vec<&str> = rows.iter().filter(|r| r.get(1) == Some(&"built-in")).map(|r| r[0]).collect();
    assert_eq!(built_in, ["docker", "qemu", "ssh", "virtualbox"], "{text}");
}

/// Writes executable `#!/bin/sh` programs into a fresh directory; returns it and a PATH that
/// puts it first.
fn programs(files: &[(&str, &str)]) -> (tempfile::TempDir, String) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    for (name, body) in files {
        let path = dir.path().join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let path = format!("{}:{}", dir.path().display(), std::env::var("PATH").unwrap_or_default());
    (dir, path)
}

const GOOD: &str = r#"read hello
echo '{"ok":{"lab_protocol":1,"description":"a fake that works","capabilities":{"create":true}}}'"#;

/// Issue 10, item 6: external drivers on PATH are listed with their path; one whose handshake
/// fails, or that speaks another protocol version, is listed with the reason, and the others
/// are listed all the same.
#[test]
fn drivers_lists_external_programs_and_says_why_one_is_unusable() {
    let (dir, path) = programs(&[
        ("lab-driver-good", GOOD),
        ("lab-driver-garbage", "read hello\necho 'no JSON here'"),
        ("lab-driver-future", "read hello\necho '{\"ok\":{\"lab_protocol\":2,\"capabilities\":{}}}'"),
        ("lab-driver-dies", "echo 'missing libfoo' >&2\nexit 3"),
        ("lab-driver-docker", GOOD),
        ("lab-driver-notexec", GOOD),
    ]);
    use std::os::unix::fs::PermissionsExt;
    let notexec = dir.path().join("lab-driver-notexec");
    std::fs::set_permissions(&notexec, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = Env::new();
    let out = e.lab(&["drivers"], &[("PATH", &path)]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    let row = |name: &str| {
        text.lines().find(|l| l.split_whitespace().next() == Some(name)).unwrap_or_else(|| panic!("no {name}: {text}"))
    };
    let program = |name: &str| dir.path().join(format!("lab-driver-{name}")).display().to_string();
    assert!(row("good").contains(&program("good")) && row("good").contains("a fake that works"), "{text}");
    let garbage = row("garbage");
    assert!(
        garbage.contains(&program("garbage")) && garbage.contains("unusable") && garbage.contains("not JSON"),
        "{text}"
    );
    let future = row("future");
    assert!(future.contains("unusable") && future.contains("protocol 2") && future.contains("protocol 1"), "{text}");
    let dies = row("dies");
    assert!(dies.contains("exited with status 3") && dies.contains("missing libfoo"), "{text}");
    assert!(row("docker").contains("built-in"), "{text}");
    assert!(text.contains(&program("docker")) && text.contains("not used"), "a shadowed program is named: {text}");
    assert!(!text.contains("notexec"), "a file that is not executable is no driver: {text}");

    let out = e.lab(&["drivers", "--output", "json"], &[("PATH", &path)]);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let good = list.as_array().unwrap().iter().find(|d| d["name"] == "good").unwrap();
    assert_eq!(good["from"], program("good"));
    assert_eq!(good["usable"], true);
    assert_eq!(good["capabilities"]["create"], true);
    let future = list.as_array().unwrap().iter().find(|d| d["name"] == "future").unwrap();
    assert_eq!(future["usable"], false);
}

/// The shipped Python driver is found on PATH, and its bad input exits 2 naming the table,
/// the field and the value; an external driver's `input` error does too, and an unknown
/// name lists external drivers as well as registered ones.
#[test]
fn external_drivers_bad_input_exits_2() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/external-driver");
    let path = format!("{}:{}", examples.display(), std::env::var("PATH").unwrap_or_default());
    let e = Env::new();
    let out = e.lab(&["drivers"], &[("PATH", &path)]);
    let text = String::from_utf8_lossy(&out.stdout);
    let row = text.lines().find(|l| l.starts_with("static ")).unwrap_or_else(|| panic!("no static: {text}"));
    assert!(row.contains("lab-driver-static") && row.contains("already exist"), "{text}");

    e.write("lab.toml", "[drivers.static]\nengines = { manager = \"ftp://x\" }\n");
    e.bad(
        &["up", "--driver", "static"],
        &[("PATH", &path)],
        &["lab.toml", "[drivers.static] engines.manager", "ftp://x"],
    );
    e.bad(
        &["up", "--driver", "static"],
        &[("PATH", &path), ("LAB_DRIVERS__STATIC__TIMEOUT", "soon")],
        &["[drivers.static] timeout", "soon"],
    );
    e.write("lab.toml", "[drivers.static]\ncommand = \"/nonexistent/lab-driver-x\"\n");
    e.bad(&["up", "--driver", "static"], &[], &["[drivers.static] command", "/nonexistent/lab-driver-x"]);

    let (_dir, path) = programs(&[(
        "lab-driver-picky",
        r#"read hello
echo '{"error":{"kind":"input","field":"size","message":"\"huge\" is not small, medium or large"}}'"#,
    )]);
    e.write("lab.toml", "[drivers.picky]\nsize = \"huge\"\n");
    e.bad(&["up", "--driver", "picky"], &[("PATH", &path)], &["lab.toml", "[drivers.picky] size", "\"huge\""]);
    e.bad(
        &["up", "--driver", "pick"],
        &[("PATH", &path)],
        &["--driver", "\"pick\"", "docker, qemu, ssh, virtualbox", "picky"],
    );
}

#[test]
fn ssh_without_a_hosts_file_is_bad_input() {
    let e = Env::new();
    e.bad(&["up", "--driver", "ssh"], &[], &["--hosts"]);
    e.bad(&["up", "--driver", "ssh", "--hosts", "nowhere.toml"], &[], &["nowhere.toml"]);
}

#[test]
fn ls_with_no_clusters_is_an_empty_table_and_json_list() {
    let e = Env::new();
    let out = e.lab(&["ls", "--output", "json"], &[]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]");
    let out = e.lab(&["ls"], &[]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1, "header only");
}

#[test]
fn even_managers_warn_about_quorum() {
    let e = Env::new();
    // `plan` reads but never writes: the warning shows and nothing is created.
    let out = e.lab(&["plan", "--managers", "2", "--cluster", "quorum-warn-test"], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("warning: 2 managers"), "{stderr}");
    assert!(!e.state.path().join("lab").exists());
}

/// Issue 7, item 3: a flag of another driver is refused, not silently ignored.
#[test]
fn flags_of_another_driver_exit_2_naming_flag_and_driver() {
    let e = Env::new();
    e.bad(&["up", "--hosts", "hosts.toml"], &[], &["--hosts", "ssh driver", "docker"]);
    e.bad(&["up", "--driver", "ssh", "--node-image", "x"], &[], &["--node-image", "docker driver", "ssh"]);
}

/// Issue 7, messages: an unknown cluster is named as the user wrote it, not as a Rust value.
#[test]
fn unknown_cluster_is_named_plainly() {
    let e = Env::new();
    e.bad(&["status", "--cluster", "doesnotexist"], &[], &["--cluster", "\"doesnotexist\""]);
    let out = e.lab(&["status", "--cluster", "doesnotexist"], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("ClusterName"), "{stderr}");
}

/// Issue 7, messages: an unknown key in lab.toml names the file and the key, with clean
/// quotes, and suggests the nearest valid key, as clap does for flags.
#[test]
fn unknown_config_key_suggests_the_nearest() {
    let e = Env::new();
    e.write("lab.toml", "worker = 2\n");
    e.bad(&["up"], &[], &["lab.toml", "unknown key `worker`", "did you mean `workers`?"]);
    e.write("lab.toml", "[registry]\nimgae = \"x\"\n");
    e.bad(&["plan"], &[], &["lab.toml", "registry", "unknown key `imgae`", "did you mean `image`?"]);
    e.write("lab.toml", "[labels]\nworkers = {}\n");
    e.bad(&["plan"], &[], &["lab.toml", "labels", "unknown key `workers`", "did you mean `worker`?"]);
    // Nothing near: the valid keys are listed instead, each quoted once.
    e.write("lab.toml", "zzzzzzzz = 1\n");
    e.bad(&["plan"], &[], &["lab.toml", "unknown key `zzzzzzzz`", "`workers`"]);
    let out = e.lab(&["plan"], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("`one of") && !stderr.contains("did you mean"), "{stderr}");
    // From the environment, the suggestion is a variable.
    std::fs::remove_file(e.cwd.path().join("lab.toml")).unwrap();
    e.bad(&["plan"], &[("LAB_WROKERS", "3")], &["LAB_WROKERS", "did you mean `LAB_WORKERS`?"]);
}

/// Issue 7, messages: a negative count names its flag.
#[test]
fn negative_counts_name_the_flag() {
    let e = Env::new();
    e.bad(&["up", "--workers", "-1"], &[], &["--workers", "-1"]);
    e.bad(&["plan", "--managers", "-3"], &[], &["--managers", "-3"]);
}

/// Issue 7, messages: scripts/up.sh shows cargo's progress while it builds lab (it used to
/// pass --quiet and print nothing for minutes). A stand-in `cargo` on PATH records its
/// arguments and fails, which stops the script before it starts anything.
#[test]
fn up_sh_shows_cargo_progress() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let bin = tempfile::tempdir().unwrap();
    let args = bin.path().join("args");
    let cargo = bin.path().join("cargo");
    std::fs::write(&cargo, format!("#!/bin/sh\necho \"$@\" > '{}'\necho building-lab >&2\nexit 3\n", args.display()))
        .unwrap();
    std::fs::set_permissions(&cargo, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", bin.path().display(), std::env::var("PATH").unwrap_or_default());
    let out = Command::new("bash").arg(root.join("scripts/up.sh")).env("PATH", path).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "up.sh went on after cargo failed");
    let args = std::fs::read_to_string(&args).unwrap();
    assert!(args.starts_with("build"), "{args}");
    assert!(!args.split_whitespace().any(|a| a == "--quiet" || a == "-q"), "up.sh runs cargo {args}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("building-lab"), "cargo's stderr is hidden");
}

/// Issue 7, messages: the README says where `cargo build` puts the binary and how to put
/// it on PATH, and every relative link and file it names exists in the repository.
#[test]
fn readme_says_where_lab_is_and_its_links_resolve() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    assert!(readme.contains("cargo install --path crates/cli"), "README does not say how to install lab");
    assert!(readme.contains("target/release/lab"), "README does not say where the binary is");
    let mut missing = Vec::new();
    // Markdown links `](path)` and paths in backticks that look like files of the repo.
    let mut targets: Vec<&str> = readme.split("](").skip(1).filter_map(|s| s.split(')').next()).collect();
    targets.extend(readme.split('`').skip(1).step_by(2).filter(|s| s.starts_with("../") || s.starts_with("docs/")));
    for t in targets {
        let t = t.split('#').next().unwrap_or_default();
        if t.is_empty() || t.contains("://") {
            continue;
        }
        if !root.join(t).exists() || t.starts_with("../") {
            missing.push(t.to_string());
        }
    }
    assert!(missing.is_empty(), "README points at files outside or missing from the repository: {missing:?}");
}

/// Issue 7, item 17: the workspace's `rust-version` is no lower than what it needs. Two
/// checks that run offline: every locked dependency's own `rust-version` (from `cargo
/// metadata`), and the newest std APIs lab's own code is known to use. The second is a
/// lookup table, kept honest by running clippy's `incompatible_msrv` lint when it changes:
/// `cargo clippy --workspace --all-targets -- -A clippy::all -W clippy::incompatible_msrv`.
#[test]
fn rust_version_covers_dependencies_and_std_apis() {
    fn version(v: &str) -> Vec<u32> {
        let mut v: Vec<u32> = v.split('.').map(|p| p.parse().unwrap()).collect();
        v.resize(3, 0);
        v
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let host = String::from_utf8(Command::new("rustc").arg("-vV").output().unwrap().stdout).unwrap();
    let host = host.lines().find_map(|l| l.strip_prefix("host: ")).unwrap().to_string();
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--offline", "--filter-platform", &host])
        .current_dir(&root)
        .output()
        .unwrap();
    assert!(out.status.success(), "cargo metadata: {}", String::from_utf8_lossy(&out.stderr));
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let members: Vec<&str> =
        meta["workspace_members"].as_array().unwrap().iter().map(|m| m.as_str().unwrap()).collect();
    let packages = meta["packages"].as_array().unwrap();
    let declared = packages
        .iter()
        .find(|p| p["name"] == "lab-cli")
        .and_then(|p| p["rust_version"].as_str())
        .expect("lab-cli has a rust-version");
    let mut too_new = Vec::new();
    for p in packages {
        let Some(needs) = p["rust_version"].as_str() else { continue };
        let member = members.contains(&p["id"].as_str().unwrap());
        if member && needs != declared {
            too_new.push(format!("{} declares {needs}, the workspace {declared}", p["name"]));
        } else if !member && version(needs) > version(declared) {
            too_new.push(format!("dependency {} {} needs {needs}", p["name"], p["version"]));
        }
    }
    // std APIs lab uses, with the release that stabilised them.
    let apis = [
        ("File::try_lock", ".try_lock()", "1.89"),
        ("std::path::absolute", "path::absolute(", "1.79"),
        ("std::io::pipe", "io::pipe(", "1.87"),
    ];
    let mut sources = String::new();
    for dir in ["crates", "tests"] {
        let walk = Command::new("find").arg(root.join(dir)).args(["-name", "*.rs"]).output().unwrap();
        for f in String::from_utf8_lossy(&walk.stdout).lines() {
            sources.push_str(&std::fs::read_to_string(f).unwrap());
        }
    }
    for (api, needle, needs) in apis {
        if sources.contains(needle) && version(needs) > version(declared) {
            too_new.push(format!("{api} needs {needs}"));
        }
    }
    assert!(too_new.is_empty(), "rust-version = \"{declared}\" is too low:\n{}", too_new.join("\n"));
}

/// Issue 7, items 12 and 15: `up` takes the cluster's lock before it reads the cluster's state
/// or runs the driver's preflight (which may make hosts leave a swarm). With the lock held by
/// another process, `up` is refused at once as busy, and never reaches the hosts.
#[test]
fn up_takes_the_lock_before_preflight() {
    let e = Env::new();
    e.write("hosts.toml", "[defaults]\nuser = \"root\"\n[[hosts]]\nname = \"manager\"\naddress = \"127.0.0.1\"\nport = 1\nrole = \"manager\"\n");
    let locks = e.state.path().join("lab/locks");
    std::fs::create_dir_all(&locks).unwrap();
    let lock = locks.join("held.lock");
    std::fs::write(&lock, "lab up (pid 1)").unwrap();
    let mut holder = Command::new("flock").arg("-x").arg(&lock).args(["sleep", "30"]).spawn().expect("run flock");
    let start = std::time::Instant::now();
    while Command::new("flock").arg("-n").arg(&lock).arg("true").status().unwrap().success() {
        assert!(start.elapsed().as_secs() < 10, "flock never took the lock");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = e.lab(&["up", "--cluster", "held", "--driver", "ssh", "--hosts", "hosts.toml"], &[]);
    let _ = holder.kill();
    let _ = holder.wait();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cluster held is busy"), "up did not stop at the lock: {stderr}");
    assert!(!stderr.contains("127.0.0.1"), "up reached the hosts before taking the lock: {stderr}");
    assert!(!e.state.path().join("lab/clusters/held").exists(), "up wrote state without the lock");
}

/// Issue 10, item 3: an operational failure keeps its cause. A `DOCKER_HOST` that points
/// nowhere is exit 1, and the message says why in the system's own words, not only that the
/// engine could not be reached.
#[test]
fn a_broken_docker_host_is_named_with_its_cause() {
    let e = Env::new();
    // A file where the socket should be: connecting fails with "connection refused".
    let sock = e.cwd.path().join("not-a-socket.sock");
    std::fs::write(&sock, "").unwrap();
    let host = format!("unix://{}", sock.display());
    let out = e.lab(&["plan", "--cluster", "causes"], &[("DOCKER_HOST", &host)]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("lab: error: "), "{stderr}");
    assert!(stderr.contains("Connection refused") || stderr.contains("os error 111"), "the cause is lost: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// Issue 10, item 4: the drivers' flags come from their own declarations. `lab up --help`
/// shows them under their own heading, naming the driver; `lab drivers --long` lists every
/// setting of every driver.
#[test]
fn driver_flags_come_from_the_drivers_declarations() {
    let e = Env::new();
    let help = e.lab(&["up", "--help"], &[]);
    let help = String::from_utf8_lossy(&help.stdout);
    let section = help.split("Driver options:").nth(1).unwrap_or_else(|| panic!("no driver options:\n{help}"));
    for (flag, driver) in
        [("--node-image", "docker"), ("--hosts", "ssh"), ("--known-hosts", "ssh"), ("--host-key-policy", "ssh")]
    {
        let line = section
            .lines()
            .position(|l| l.trim_start().starts_with(flag))
            .unwrap_or_else(|| panic!("{flag} missing:\n{section}"));
        let text: String = section.lines().skip(line).take(2).collect();
        assert!(text.contains(&format!("[{driver} driver]")), "{flag}: {text}");
    }
    let long = e.lab(&["drivers", "--long"], &[]);
    let long = String::from_utf8_lossy(&long.stdout);
    for want in ["node_image", "--node-image", "privileged", "auto|always|never", "connect_timeout", "docker_machine"] {
        assert!(long.contains(want), "lab drivers --long lacks {want}:\n{long}");
    }
}

/// The highest resident memory process `pid` has had so far, in KiB (`VmHWM`).
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap_or_else(|| panic!("no VmHWM: {status}"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Issue 18, item 5: what a driver prints is read with bounds. A driver that writes 128 MiB on
/// stderr in one line leaves lab's memory small (it used to hold the whole line), and one that
/// answers with a 64 MiB line is unusable at once, named, "longer than 1 MiB".
#[test]
fn driver_output_is_read_with_bounds() {
    let (dir, path) = programs(&[
        (
            "lab-driver-chatty",
            r#"here=$(dirname "$0")
read hello
head -c 134217728 /dev/zero | tr '\0' x >&2
echo ' and the last words' >&2
touch "$here/written"
i=0
while [ ! -f "$here/go" ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done
echo '{"ok":{"lab_protocol":1,"description":"talks a lot","capabilities":{}}}'"#,
        ),
        ("lab-driver-flood", "read hello\nhead -c 67108864 /dev/zero | tr '\\0' x\nsleep 30"),
    ]);
    let e = Env::new();
    let mut c = Command::new(env!("CARGO_BIN_EXE_lab"));
    c.args(["drivers"])
        .current_dir(e.cwd.path())
        .env("XDG_STATE_HOME", e.state.path())
        .env("PATH", &path)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = c.spawn().unwrap();
    let start = std::time::Instant::now();
    while !dir.path().join("written").exists() {
        assert!(start.elapsed().as_secs() < 60, "lab-driver-chatty never finished writing its stderr");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let peak = peak_rss_kib(child.id());
    std::fs::write(dir.path().join("go"), "").unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(peak < 64 * 1024, "lab held a driver's stderr: its peak RSS was {} MiB", peak / 1024);
    let row = |name: &str| {
        text.lines().find(|l| l.split_whitespace().next() == Some(name)).unwrap_or_else(|| panic!("no {name}: {text}"))
    };
    assert!(row("chatty").contains("talks a lot"), "{text}");
    let flood = row("flood");
    assert!(flood.contains("unusable") && flood.contains("longer than 1 MiB"), "{text}");
    assert!(text.len() < 10_000, "lab printed {} bytes of a driver's output", text.len());
}

/// An external driver for a cluster that lab has recorded but that has no machine until the
/// file `made` exists beside it; then `observe` finds a running manager, and `engine` answers
/// with the contents of `engine.json` beside it. Everything else is unsupported.
const RECORDED_DRIVER: &str = r#"here=$(dirname "$0")
read hello
echo '{"ok":{"lab_protocol":1,"description":"a recorded cluster","capabilities":{}}}'
while read line; do
  id=$(printf '%s' "$line" | sed -n 's/.*"id":\([0-9]*\).*/\1/p')
  case "$line" in
    *'"op":"observe"'*)
      if [ -f "$here/made" ]; then
        echo "{\"id\":$id,\"ok\":[{\"name\":\"manager\",\"state\":\"running\",\"address\":\"127.0.0.1\"}]}"
      else
        echo "{\"id\":$id,\"error\":{\"kind\":\"failed\",\"message\":\"nothing made yet\"}}"
      fi ;;
    *'"op":"engine"'*) printf '{"id":%s,"ok":%s}\n' "$id" "$(cat "$here/engine.json")" ;;
    *) echo "{\"id\":$id,\"error\":{\"kind\":\"unsupported\",\"message\":\"not this one\"}}" ;;
  esac
done"#;

/// Makes cluster `cluster` with [`RECORDED_DRIVER`] as driver `name`: `lab up` records it,
/// then fails at `observe`, before anything would be made.
fn record_cluster(e: &Env, vars: &[(&str, &str)], args: &[&str]) {
    let out = e.lab(&[&["up"], args].concat(), vars);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("nothing made yet"), "{stderr}");
}

/// Issue 18, item 8: `lab env` prints what a driver's `engine` answer names into `export`
/// lines that users `eval`. A variable name that is not a shell name is a protocol error
/// naming the driver, and nothing runs; values reach bash, zsh and fish exactly as given.
#[test]
fn env_exports_only_shell_names_with_values_quoted() {
    let (dir, path) = programs(&[("lab-driver-envy", RECORDED_DRIVER)]);
    let e = Env::new();
    let vars = [("PATH", path.as_str())];
    record_cluster(&e, &vars, &["--driver", "envy", "--cluster", "envy"]);
    std::fs::write(dir.path().join("made"), "").unwrap();
    let engine = |env: serde_json::Value| {
        let answer = serde_json::json!({"host": "tcp://127.0.0.1:1", "advertise_addr": "127.0.0.1", "env": env});
        std::fs::write(dir.path().join("engine.json"), answer.to_string()).unwrap();
    };
    let lab = env!("CARGO_BIN_EXE_lab");
    let in_shell = |shell: &str, script: &str| {
        let mut c = Command::new(shell);
        c.args(["-c", script]).current_dir(e.cwd.path()).env("XDG_STATE_HOME", e.state.path()).env("PATH", &path);
        c.env("LAB", lab).output().unwrap()
    };

    engine(serde_json::json!({"X=1;touch PWNED;Y": "v"}));
    let out = e.lab(&["env", "--cluster", "envy", "--shell", "bash"], &vars);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(out.stdout.is_empty(), "{}", String::from_utf8_lossy(&out.stdout));
    for needle in ["driver envy", "lab-driver-envy", "\"X=1;touch PWNED;Y\""] {
        assert!(stderr.contains(needle), "{stderr:?} lacks {needle:?}");
    }
    in_shell("bash", r#"eval "$("$LAB" env --cluster envy --shell bash)""#);
    assert!(!e.cwd.path().join("PWNED").exists(), "a driver's variable name ran a command under eval");

    // Values: quotes, expansions, backslashes, a newline, and an empty one.
    let nasty = "it's $(touch PWNED) `touch PWNED` \\ \\' \"q\" ; & | $HOME\nsecond line";
    engine(serde_json::json!({"T_ONE": nasty, "T_TWO": ""}));
    let shells: &[(&str, &str)] = &[
        ("bash", r#"eval "$("$LAB" env --cluster envy --shell bash)"; printf '%s|%s' "$T_ONE" "$T_TWO""#),
        ("zsh", r#"eval "$("$LAB" env --cluster envy --shell zsh)"; printf '%s|%s' "$T_ONE" "$T_TWO""#),
        ("fish", r#""$LAB" env --cluster envy --shell fish | source; printf '%s|%s' "$T_ONE" "$T_TWO""#),
    ];
    for (shell, script) in shells {
        if Command::new(shell).args(["-c", "true"]).output().is_err() {
            eprintln!("{shell} is not installed: its quoting is not checked here");
            continue;
        }
        let out = in_shell(shell, script);
        assert!(out.status.success(), "{shell}: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{nasty}|"), "{shell}");
        assert!(!e.cwd.path().join("PWNED").exists(), "{shell} ran a command in a value");
    }
}

/// Issue 18, item 9: a driver program gets only its own settings from lab's environment:
/// `lab drivers` and a command that uses the driver both start it without other drivers'
/// `LAB_DRIVERS__*` variables (API tokens) or lab's other `LAB_*` settings, and with its own.
#[test]
fn a_driver_program_sees_only_its_own_settings() {
    let spy = r#"env > "$(dirname "$0")/env.txt"
read hello
echo '{"ok":{"lab_protocol":1,"description":"a spy","capabilities":{}}}'"#;
    let (dir, path) = programs(&[("lab-driver-spy", spy), ("lab-driver-other", GOOD)]);
    let e = Env::new();
    let vars = [
        ("PATH", path.as_str()),
        ("LAB_DRIVERS__OTHER__API_TOKEN", "other-token-s3cret"),
        ("LAB_DRIVERS__DOCKER__NODE_IMAGE", "docker-setting"),
        ("LAB_REGISTRY__TLS", "mutual"),
        ("LAB_DRIVERS__SPY__REGION", "spy-region"),
        ("LAB_DRIVERS__SPY__NESTED__KEY", "spy-nested"),
        ("NOT_LAB", "kept"),
    ];
    for args in [&["drivers"][..], &["plan", "--driver", "spy", "--cluster", "spied"][..]] {
        let _ = std::fs::remove_file(dir.path().join("env.txt"));
        let out = e.lab(args, &vars);
        let seen = std::fs::read_to_string(dir.path().join("env.txt"))
            .unwrap_or_else(|_| panic!("lab {args:?} never ran the spy: {}", String::from_utf8_lossy(&out.stderr)));
        for gone in ["other-token-s3cret", "docker-setting", "LAB_REGISTRY__TLS"] {
            assert!(!seen.contains(gone), "lab {args:?} gave the spy {gone}:\n{seen}");
        }
        for kept in ["LAB_DRIVERS__SPY__REGION=spy-region", "LAB_DRIVERS__SPY__NESTED__KEY=spy-nested", "NOT_LAB=kept"]
        {
            assert!(seen.contains(kept), "lab {args:?} did not give the spy {kept}:\n{seen}");
        }
    }
}

/// The recorded state of `cluster`, as JSON.
fn state_of(e: &Env, cluster: &str) -> serde_json::Value {
    let path = e.state.path().join("lab/clusters").join(cluster).join("state.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// Issue 18, item 6: a relative `[drivers.X] command` is made absolute when the cluster is
/// made, and that is what is recorded: a later command from another directory runs the same
/// program, not the one that directory has under the same relative name.
#[test]
fn a_relative_driver_command_is_recorded_absolute() {
    let e = Env::new();
    let program = e.cwd.path().join("lab-driver-rel");
    std::fs::write(&program, format!("#!/bin/sh\n{RECORDED_DRIVER}\n")).unwrap();
    std::fs::set_permissions(&program, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    record_cluster(&e, &[], &["--driver", "rel", "--cluster", "rel", "--driver-opt", "command=./lab-driver-rel"]);
    let recorded = state_of(&e, "rel");
    assert_eq!(recorded["driver_config"]["command"], program.display().to_string(), "{recorded}");

    // Elsewhere, a program with the same relative name that says it ran.
    let (other, _) = programs(&[("lab-driver-rel", "touch \"$(dirname \"$0\")/ran\"\nexit 1")]);
    let out = e.lab_in(other.path(), &["status", "--cluster", "rel"], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!other.path().join("ran").exists(), "lab status ran ./lab-driver-rel of another directory: {stderr}");
    assert!(stderr.contains("nothing made yet"), "the recorded program did not answer: {stderr}");
}

/// Issue 18, item 7: a `lab.toml` in the current directory that does not name an existing
/// cluster cannot change how it is reached or secured: its driver `command` and `[registry]
/// tls` are ignored, each with one warning naming the file and the key and saying how to
/// apply it; naming the cluster in the file applies them.
#[test]
fn an_unnamed_lab_toml_cannot_swap_a_clusters_driver_program() {
    let (dir, path) = programs(&[
        ("lab-driver-mine", RECORDED_DRIVER),
        ("lab-driver-theirs", &format!("touch \"$(dirname \"$0\")/theirs-ran\"\n{RECORDED_DRIVER}")),
    ]);
    let mine = dir.path().join("lab-driver-mine").display().to_string();
    let theirs = dir.path().join("lab-driver-theirs").display().to_string();
    let e = Env::new();
    let vars = [("PATH", path.as_str())];
    record_cluster(&e, &vars, &["--driver", "ext", "--cluster", "held", "--driver-opt", &format!("command={mine}")]);
    let table = format!("[registry]\ntls = \"mutual\"\n[drivers.ext]\ncommand = \"{theirs}\"\n");
    e.write("lab.toml", &table);
    for args in [&["status", "--cluster", "held"][..], &["plan", "--cluster", "held"][..]] {
        let out = e.lab(args, &vars);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!dir.path().join("theirs-ran").exists(), "lab {args:?} ran the program lab.toml named: {stderr}");
        assert!(stderr.contains("nothing made yet"), "lab {args:?} did not run the recorded program: {stderr}");
        for key in ["drivers.ext.command", "registry.tls"] {
            let line = stderr
                .lines()
                .find(|l| l.starts_with("lab: warning: lab.toml: ") && l.contains(key))
                .unwrap_or_else(|| panic!("lab {args:?}: no warning for {key}: {stderr}"));
            assert!(line.contains("cluster = \"held\"") && line.contains("--config"), "{line}");
        }
    }
    let recorded = state_of(&e, "held");
    assert_eq!(recorded["driver_config"]["command"], mine.as_str());
    assert_eq!(recorded["registry_tls"], "open");

    // Named, the file speaks for the cluster.
    e.write("lab.toml", &format!("cluster = \"held\"\n{table}"));
    let out = e.lab(&["status"], &vars);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(dir.path().join("theirs-ran").exists(), "a file naming the cluster was ignored: {stderr}");
    assert!(!stderr.contains("warning"), "{stderr}");
}

/// Issue 18, item 12: a reader that stops early (`lab drivers --long | true`, `lab ls | head
/// -1`) ends lab quietly: no panic, no "Broken pipe", and the exit status the command has
/// when its output is read. The commands here need no cluster; tests/tests/docker_driver.rs
/// does the same for those that do.
#[test]
fn stdout_closed_early_ends_quietly() {
    let e = Env::new();
    let cluster = format!("epipe{}", std::process::id());
    let cases: &[&[&str]] = &[
        &["drivers"],
        &["drivers", "--long"],
        &["drivers", "--output", "json"],
        &["ls"],
        &["ls", "--output", "json"],
        &["--help"],
        &["--version"],
        &["up", "--help"],
        &["ssh", "--help"],
        // A new cluster's plan reads the local engine and changes nothing.
        &["plan", "--cluster", &cluster],
        &["plan", "--cluster", &cluster, "--output", "json"],
        // What `down` says to run in the shell `lab env` left: no cluster needed.
        &["env", "--unset", "--cluster", &cluster],
        &["env", "--unset", "--cluster", &cluster, "--shell", "fish"],
    ];
    for args in cases {
        let read = e.lab(args, &[]);
        assert!(!read.stdout.is_empty(), "lab {args:?} printed nothing, so this case shows nothing");
        let closed = e.lab_stdout_closed(args, &[]);
        let stderr = String::from_utf8_lossy(&closed.stderr);
        assert!(!stderr.contains("panicked") && !stderr.contains("Broken pipe"), "lab {args:?}:\n{stderr}");
        assert_eq!(closed.status.code(), read.status.code(), "lab {args:?} with nobody reading:\n{stderr}");
    }
    assert!(!e.state.path().join("lab").exists(), "a plan wrote state");
}

/// Every file under `dir`, as `find` lists them.
fn files_under(dir: &std::path::Path) -> Vec<String> {
    let out = std::process::Command::new("find").arg(dir).args(["-type", "f"]).output().expect("run find");
    String::from_utf8_lossy(&out.stdout).lines().map(String::from).collect()
}

/// Issue 18, item 17: `down` of a cluster lab does not know (a typo) leaves no file behind,
/// its lock file included, whether it finds nothing to remove or fails.
#[test]
fn down_of_an_unknown_cluster_leaves_no_file() {
    let e = Env::new();
    let typo = format!("typo{}", std::process::id());
    // The local engine is asked what carries the label lab.cluster=<typo>: nothing does.
    let out = e.lab(&["down", "--cluster", &typo], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("nothing to remove"), "{stderr}");
    assert_eq!(files_under(e.state.path()), Vec::<String>::new());
    // An engine that does not answer: down fails, and still leaves nothing.
    let out = e.lab(&["down", "--cluster", &typo], &[("DOCKER_HOST", "unix:///nonexistent/lab-test.sock")]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(files_under(e.state.path()), Vec::<String>::new());
}

/// Issue 18, item 19: an unknown key in a driver's table names where it came from (the file
/// as given, the variable, or the flag) and no place it did not come from.
#[test]
fn a_driver_table_typo_names_its_source() {
    let e = Env::new();
    let typo = "[drivers.docker]\nnode_imgae = \"x\"\n";
    let stderr = |args: &[&str], vars: &[(&str, &str)]| String::from_utf8_lossy(&e.lab(args, vars).stderr).into_owned();
    e.write("lab.toml", typo);
    e.bad(&["plan"], &[], &["lab.toml", "[drivers.docker]", "node_imgae"]);
    assert!(!stderr(&["plan"], &[]).contains("LAB_DRIVERS"), "{}", stderr(&["plan"], &[]));
    std::fs::create_dir(e.cwd.path().join("conf")).unwrap();
    e.write("conf/my.toml", typo);
    std::fs::remove_file(e.cwd.path().join("lab.toml")).unwrap();
    e.bad(&["plan", "--config", "conf/my.toml"], &[], &["conf/my.toml", "[drivers.docker]", "node_imgae"]);
    let var = [("LAB_DRIVERS__DOCKER__NODE_IMGAE", "x")];
    e.bad(&["plan"], &var, &["LAB_DRIVERS__DOCKER__NODE_IMGAE", "[drivers.docker]", "node_imgae"]);
    assert!(!stderr(&["plan"], &var).contains("lab.toml"), "{}", stderr(&["plan"], &var));
    let opt = ["plan", "--driver-opt", "node_imgae=x"];
    e.bad(&opt, &[], &["--driver-opt", "[drivers.docker]", "node_imgae"]);
    assert!(!stderr(&opt, &[]).contains("lab.toml"), "{}", stderr(&opt, &[]));
}

/// Issue 18, item 19: a count out of range names its flag and lab's own limits (0 to 64
/// workers, 1 to 7 managers), not those of the integer type behind it.
#[test]
fn counts_out_of_range_name_the_real_limits() {
    let e = Env::new();
    let cases: &[(&[&str], &[&str])] = &[
        (&["up", "--workers", "-1"], &["--workers", "-1", "0 to 64"]),
        (&["up", "--workers", "65"], &["--workers", "65", "0 to 64"]),
        (&["up", "--workers", "two"], &["--workers", "two", "0 to 64"]),
        (&["plan", "--managers", "-3"], &["--managers", "-3", "1 to 7"]),
        (&["plan", "--managers", "0"], &["--managers", "0", "1 to 7"]),
        (&["plan", "--managers", "8"], &["--managers", "8", "1 to 7"]),
    ];
    for (args, needles) in cases {
        e.bad(args, &[], needles);
        let stderr = String::from_utf8_lossy(&e.lab(args, &[]).stderr).into_owned();
        assert!(!stderr.contains("4294967295"), "{stderr}");
    }
}

/// Issue 18, item 19: a command after the node without `--` is bad input (exit 2) whose
/// message gives the line to type instead.
#[test]
fn ssh_command_without_the_separator_says_to_use_it() {
    let e = Env::new();
    let cases: &[(&[&str], &str)] = &[
        (&["ssh", "worker1", "docker", "ps"], "lab ssh worker1 -- docker ps"),
        (&["ssh", "--cluster", "c1", "worker1", "docker", "ps", "-a"], "lab ssh --cluster c1 worker1 -- docker ps -a"),
        (&["--config", "ssh", "ssh", "manager", "uptime"], "lab --config ssh ssh manager -- uptime"),
    ];
    for (args, want) in cases {
        let out = e.lab(args, &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "lab {args:?}: {stderr}");
        assert!(stderr.contains(want), "lab {args:?} does not say {want:?}:\n{stderr}");
        assert!(!e.state.path().join("lab").exists(), "lab {args:?} wrote state");
    }
    // Other commands' unexpected arguments, and an unknown option before the node, get no
    // such tip.
    for args in [&["ls", "extra"][..], &["ssh", "-t", "worker1"], &["ssh", "--cluster", "c1", "-t", "worker1"]] {
        let out = e.lab(args, &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "lab {args:?}: {stderr}");
        assert!(!stderr.contains("put `--` before it"), "lab {args:?}: {stderr}");
    }
}
