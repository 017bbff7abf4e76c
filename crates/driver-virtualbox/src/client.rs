//! The docker-machine program: finding it, running it (argv elements, never a shell, always
//! with a timeout), and reading what it prints. Its output formats are those of
//! docker-machine 0.16: `ls --format` is a Go template where `\t` stands for a tab, `env`
//! prints `export KEY="VALUE"` lines, and a failed command exits 1 with its error on stderr.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use lab_core::{MachineState, Role};

/// The program's name on PATH.
pub const PROGRAM: &str = "docker-machine";
/// The oldest docker-machine whose `ls` has `--format` and name filters the way lab uses them.
pub const MIN_VERSION: (u32, u32) = (0, 12);
/// The `ls` template lab reads: one machine a line, tab-separated.
pub const LS_FORMAT: &str = r"{{.Name}}\t{{.State}}\t{{.URL}}\t{{.Error}}";

/// What one run printed and how it ended.
#[derive(Debug, Clone, Default)]
pub struct Output {
    /// Exit status; `None` if killed by a signal.
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Output {
    /// Whether it exited 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// docker-machine's own words for a failure: its stderr, else the end of its stdout,
    /// else its exit status.
    pub fn message(&self) -> String {
        let text = if self.stderr.trim().is_empty() { self.stdout.trim() } else { self.stderr.trim() };
        if text.is_empty() {
            return match self.code {
                Some(c) => format!("exited with status {c} and printed nothing"),
                None => "killed by a signal".into(),
            };
        }
        // Long outputs (a create's progress) end with what went wrong.
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        lines[lines.len().saturating_sub(12)..].join("\n")
    }
}

/// Why the program could not be found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotFound {
    /// The configured path does not exist or is not a file.
    Configured(PathBuf),
    /// Not on PATH.
    NotOnPath,
}

/// The program to run: `configured` if set (it must exist), else `docker-machine` on `path`.
pub fn find_program(configured: Option<&Path>, path: Option<OsString>) -> Result<PathBuf, NotFound> {
    if let Some(p) = configured {
        // A bare name is looked up on PATH like the default.
        if p.components().count() == 1 && !p.is_absolute() && !p.exists() {
            return search_path(p.as_os_str(), path).ok_or_else(|| NotFound::Configured(p.to_path_buf()));
        }
        return if p.is_file() { Ok(p.to_path_buf()) } else { Err(NotFound::Configured(p.to_path_buf())) };
    }
    search_path(PROGRAM.as_ref(), path).ok_or(NotFound::NotOnPath)
}

fn search_path(name: &std::ffi::OsStr, path: Option<OsString>) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = path?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| std::fs::metadata(p).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false))
}

/// Runs `program args...` with no stdin, killing it if it outlives `timeout`.
pub async fn run(program: &Path, args: &[String], timeout: Duration) -> std::io::Result<Output> {
    let child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let out = tokio::time::timeout(timeout, child.wait_with_output()).await.map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no answer within {}s; lab stopped waiting for it", timeout.as_secs()),
        )
    })??;
    Ok(Output {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// `(major, minor, patch)` from `docker-machine version 0.16.2, build bd45ab13`.
pub fn parse_version(text: &str) -> Option<(u32, u32, u32)> {
    let rest = &text[text.find("version")? + "version".len()..];
    let v = rest.split(|c: char| c.is_whitespace() || c == ',').find(|s| !s.is_empty())?;
    let v = v.trim_start_matches('v');
    let mut parts = v.split(['.', '-']).map(|p| p.parse::<u32>().ok());
    Some((parts.next()??, parts.next()??, parts.next().flatten().unwrap_or(0)))
}

/// One line of `ls --format` [`LS_FORMAT`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LsRow {
    /// Machine name.
    pub name: String,
    /// `Running`, `Stopped`, `Saved`, `Error`, ... (docker-machine's `state.State`).
    pub state: String,
    /// `tcp://IP:2376` when running.
    pub url: String,
    /// Why the state could not be read, if it could not.
    pub error: String,
}

/// Parses `ls --format` [`LS_FORMAT`] output.
pub fn parse_ls(text: &str) -> Vec<LsRow> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut f = l.splitn(4, '\t').map(str::trim);
            LsRow {
                name: f.next().unwrap_or_default().to_string(),
                state: f.next().unwrap_or_default().to_string(),
                url: f.next().unwrap_or_default().to_string(),
                error: f.next().unwrap_or_default().to_string(),
            }
        })
        .collect()
}

/// What lab makes of a docker-machine state. `Saved` (VirtualBox's saved state) and
/// `Paused` come back with `start`; `Error` is a machine that cannot be used (its VM is gone,
/// or its config.json does not load): lab removes and recreates it. `Timeout` and the
/// transitional states are left to the engine wait, which is bounded and says what it saw.
pub fn machine_state(row: &LsRow) -> MachineState {
    match row.state.as_str() {
        "Running" | "Starting" | "Timeout" => MachineState::Running,
        "Stopped" | "Saved" | "Paused" | "Stopping" => MachineState::Stopped,
        "Error" => MachineState::Broken(if row.error.is_empty() {
            "docker-machine reports state Error".into()
        } else {
            format!("docker-machine reports state Error: {}", row.error)
        }),
        "" => MachineState::Broken(if row.error.is_empty() {
            "docker-machine cannot tell its state".into()
        } else {
            format!("docker-machine cannot tell its state: {}", row.error)
        }),
        other => MachineState::Broken(format!("docker-machine reports state {other}")),
    }
}

/// The host of a `tcp://HOST:PORT` URL.
pub fn url_host(url: &str) -> Option<String> {
    let rest = url.strip_prefix("tcp://").or_else(|| url.strip_prefix("https://"))?;
    let host = match rest.rsplit_once(':') {
        Some((h, _)) => h,
        None => rest,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (!host.is_empty()).then(|| host.to_string())
}

/// The node of machine `machine` in `cluster`: the name after `<cluster>-`, if it is one of
/// the names lab gives (`manager`, `managerN`, `workerN`), with its role. Other machines
/// (another cluster's `<cluster>-x-worker1`, the user's own) are not lab's.
pub fn node_of(cluster: &str, machine: &str) -> Option<(String, Role)> {
    let node = machine.strip_prefix(cluster)?.strip_prefix('-')?;
    let digits = |s: &str| s.chars().all(|c| c.is_ascii_digit());
    if let Some(n) = node.strip_prefix("manager") {
        if digits(n) {
            return Some((node.to_string(), Role::Manager));
        }
    }
    if let Some(n) = node.strip_prefix("worker") {
        if !n.is_empty() && digits(n) {
            return Some((node.to_string(), Role::Worker));
        }
    }
    None
}

/// The variables `env --shell bash` exports, in order: `export KEY="VALUE"` lines.
pub fn parse_env(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("export "))
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| {
            let v = v.trim();
            let v = v.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(v);
            (k.trim().to_string(), v.to_string())
        })
        .collect()
}

/// docker-machine's SSH login for a machine, from `inspect`'s JSON: its user
/// (`Driver.SSHUser`) and private key (`Driver.SSHKeyPath`).
pub fn ssh_login(inspect: &str) -> Result<(String, PathBuf), String> {
    let v: serde_json::Value = serde_json::from_str(inspect).map_err(|e| format!("not JSON ({e})"))?;
    let field = |k: &str| v["Driver"][k].as_str().filter(|s| !s.is_empty()).map(str::to_string);
    match (field("SSHUser"), field("SSHKeyPath")) {
        (Some(user), Some(key)) => Ok((user, PathBuf::from(key))),
        _ => Err("it names no Driver.SSHUser and Driver.SSHKeyPath".into()),
    }
}

/// [`run`] for callers that cannot wait asynchronously (`lab ssh` builds its command
/// synchronously, and the SSH set-up runs on a blocking thread): the same bound, by polling.
/// It polls on its own, not through `lab_core::wait`, which waits on the async runtime that a
/// blocking thread does not have.
pub fn run_blocking(program: &Path, args: &[String], timeout: Duration) -> std::io::Result<Output> {
    use std::io::Read;
    let mut child = std::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    // Read both pipes on threads of their own, so that a full pipe never stalls the child.
    let pipe = |p: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = p {
                let _ = p.read_to_end(&mut buf);
            }
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let stdout = pipe(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let stderr = pipe(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer within {}s; lab stopped waiting for it", timeout.as_secs()),
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ok(Output {
        code: status.code(),
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(parse_version("docker-machine version 0.16.2, build bd45ab13\n"), Some((0, 16, 2)));
        assert_eq!(parse_version("docker-machine version 0.12.0-rc1, build 1"), Some((0, 12, 0)));
        assert_eq!(parse_version("docker-machine version v0.10.0"), Some((0, 10, 0)));
        assert_eq!(parse_version("something else"), None);
    }

    #[test]
    fn ls_rows_and_states() {
        let text = "c-manager\tRunning\ttcp://192.168.99.100:2376\t\n\
                    c-worker1\tStopped\t\t\n\
                    c-worker2\tError\t\tmachine does not exist\n\
                    c-worker3\tSaved\t\t\n\
                    c-worker4\tError\t\topen /m/c-worker4/config.json: no such file or directory\n";
        let rows = parse_ls(text);
        assert_eq!(rows.len(), 5);
        assert_eq!(rows[0].url, "tcp://192.168.99.100:2376");
        assert_eq!(machine_state(&rows[0]), MachineState::Running);
        assert_eq!(machine_state(&rows[1]), MachineState::Stopped);
        assert_eq!(
            machine_state(&rows[2]),
            MachineState::Broken("docker-machine reports state Error: machine does not exist".into())
        );
        assert_eq!(machine_state(&rows[3]), MachineState::Stopped);
        assert!(matches!(machine_state(&rows[4]), MachineState::Broken(r) if r.contains("config.json")));
        assert_eq!(url_host(&rows[0].url).as_deref(), Some("192.168.99.100"));
        assert_eq!(url_host(""), None);
    }

    #[test]
    fn only_lab_names_of_this_cluster_are_nodes() {
        assert_eq!(node_of("lab", "lab-manager"), Some(("manager".into(), Role::Manager)));
        assert_eq!(node_of("lab", "lab-manager3"), Some(("manager3".into(), Role::Manager)));
        assert_eq!(node_of("lab", "lab-worker12"), Some(("worker12".into(), Role::Worker)));
        for other in ["lab-x-worker1", "lab-worker", "labx-worker1", "lab-db", "default", "lab-workerx", "lab-"] {
            assert_eq!(node_of("lab", other), None, "{other}");
        }
    }

    #[test]
    fn env_exports() {
        let text = "export DOCKER_TLS_VERIFY=\"1\"\nexport DOCKER_HOST=\"tcp://192.168.99.100:2376\"\n\
                    export DOCKER_CERT_PATH=\"/home/u/.docker/machine/machines/lab-manager\"\n\
                    export DOCKER_MACHINE_NAME=\"lab-manager\"\n\
                    # Run this command to configure your shell: \n# eval $(docker-machine env lab-manager)\n";
        let env = parse_env(text);
        let keys: Vec<_> = env.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["DOCKER_TLS_VERIFY", "DOCKER_HOST", "DOCKER_CERT_PATH", "DOCKER_MACHINE_NAME"]);
        assert_eq!(env[2].1, "/home/u/.docker/machine/machines/lab-manager");
    }

    #[test]
    fn ssh_logins_come_from_inspect() {
        let json = r#"{"Driver": {"SSHUser": "docker", "SSHKeyPath": "/m/c-manager/id_rsa", "SSHPort": 0}}"#;
        assert_eq!(ssh_login(json), Ok(("docker".into(), PathBuf::from("/m/c-manager/id_rsa"))));
        assert!(ssh_login(r#"{"Driver": {"SSHUser": ""}}"#).unwrap_err().contains("SSHKeyPath"));
        assert!(ssh_login("Error: nope").unwrap_err().contains("not JSON"));
    }

    #[test]
    fn blocking_runs_are_bounded_and_keep_the_output() {
        let sh = Path::new("/bin/sh");
        let out =
            run_blocking(sh, &["-c".into(), "echo out; echo err >&2; exit 3".into()], Duration::from_secs(10)).unwrap();
        assert_eq!((out.code, out.stdout.as_str(), out.stderr.as_str()), (Some(3), "out\n", "err\n"));
        let start = std::time::Instant::now();
        let e = run_blocking(sh, &["-c".into(), "sleep 30".into()], Duration::from_millis(300)).unwrap_err();
        assert!(start.elapsed() < Duration::from_secs(10));
        assert!(e.to_string().contains("no answer within"), "{e}");
    }

    #[test]
    fn programs_are_found_on_path_or_where_configured() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = Some(dir.path().as_os_str().to_owned());
        assert_eq!(find_program(None, path.clone()), Err(NotFound::NotOnPath));
        let prog = dir.path().join(PROGRAM);
        std::fs::write(&prog, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(find_program(None, path.clone()), Err(NotFound::NotOnPath), "not executable");
        std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(find_program(None, path.clone()), Ok(prog.clone()));
        assert_eq!(find_program(Some(&prog), None), Ok(prog.clone()));
        let missing = dir.path().join("nope");
        assert_eq!(find_program(Some(&missing), path), Err(NotFound::Configured(missing)));
    }

    #[test]
    fn messages_are_docker_machines_own_words() {
        let out = Output {
            code: Some(1),
            stdout: "Running pre-create checks...\n".into(),
            stderr: "Error creating machine: Error in driver during machine creation: boom\n".into(),
        };
        assert_eq!(out.message(), "Error creating machine: Error in driver during machine creation: boom");
        let quiet = Output { code: Some(3), ..Default::default() };
        assert_eq!(quiet.message(), "exited with status 3 and printed nothing");
    }
}
