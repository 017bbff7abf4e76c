//! The host's programs (QEMU, qemu-img, vde_switch, ssh-keygen, openssl), found on PATH and
//! run from argv with a bound, and the bounded KVM probe.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use lab_core::{Error, Result};

/// A program lab needs, and the Debian package that has it.
#[derive(Debug, Clone, Copy)]
pub struct Program {
    /// Its name on PATH.
    pub name: &'static str,
    /// The Debian package.
    pub package: &'static str,
}

/// QEMU itself.
pub const QEMU: Program = Program { name: "qemu-system-x86_64", package: "qemu-system-x86" };
/// Overlays.
pub const QEMU_IMG: Program = Program { name: "qemu-img", package: "qemu-utils" };
/// The cluster segment.
pub const VDE_SWITCH: Program = Program { name: "vde_switch", package: "vde2" };
/// Keys for SSH.
pub const SSH_KEYGEN: Program = Program { name: "ssh-keygen", package: "openssh-client" };
/// Certificates for the engines' TLS.
pub const OPENSSL: Program = Program { name: "openssl", package: "openssl" };
/// Everything, in the order preflight names them.
pub const ALL: [Program; 5] = [QEMU, QEMU_IMG, VDE_SWITCH, SSH_KEYGEN, OPENSSL];

impl Program {
    /// Its path on PATH, or an error naming the package to install.
    pub fn find(self) -> Result<PathBuf> {
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path).map(|d| d.join(self.name)).find(|p| is_executable(p)).ok_or_else(|| {
            Error::op(
                format!("find {} on PATH", self.name),
                format!("it is not installed; install it with: apt-get install {}", self.package),
            )
        })
    }
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata().map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
}

/// What a program printed.
#[derive(Debug)]
pub struct Output {
    /// Exit status (`None`: killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Output {
    /// Whether it exited 0.
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }

    /// Its own words: standard error, else standard output, else the status.
    pub fn message(&self) -> String {
        let e = self.stderr.trim();
        let o = self.stdout.trim();
        match (e.is_empty(), o.is_empty()) {
            (false, _) => e.to_string(),
            (true, false) => o.to_string(),
            _ => match self.code {
                Some(c) => format!("exit status {c}"),
                None => "killed by a signal".into(),
            },
        }
    }
}

/// Runs `program` with `args` (no shell) and waits at most `timeout`; a program still running
/// then is killed and the error says so.
pub async fn run(program: Program, args: &[impl AsRef<OsStr>], timeout: Duration) -> Result<Output> {
    let path = program.find()?;
    let child = tokio::process::Command::new(&path)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| crate::error::io(format!("run {}", program.name), e))?;
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(Ok(out)) => Ok(Output {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }),
        Ok(Err(e)) => Err(crate::error::io(format!("run {}", program.name), e).into()),
        Err(_) => {
            Err(Error::op(format!("run {}", program.name), format!("it did not finish within {}s", timeout.as_secs())))
        }
    }
}

/// Whether KVM works here: `/dev/kvm` can be opened, and a KVM guest (the image's kernel with
/// no root disk, which panics and, with `-no-reboot`, ends QEMU at once) exits within a bound.
/// A device that exists while guests hang (no nested virtualisation) answers false. The
/// verdict is kept in `cache` per kernel and QEMU version, so the bound is paid once.
pub async fn kvm_works(cache: &Path, kernel: &Path) -> (bool, String) {
    let key = format!(
        "{} {}",
        std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
        run(QEMU, &["--version"], Duration::from_secs(10))
            .await
            .map(|o| o.stdout.lines().next().unwrap_or_default().to_string())
            .unwrap_or_default()
    );
    let file = cache.join("kvm-probe");
    if let Ok(text) = std::fs::read_to_string(&file) {
        if let Some((k, verdict)) = text.trim_end().rsplit_once('\t') {
            if k == key {
                return (verdict == "kvm", format!("{verdict} (probed before, kept in {})", file.display()));
            }
        }
    }
    let (works, why) = probe_kvm(kernel).await;
    let verdict = if works { "kvm" } else { "tcg" };
    if lab_core::state::make_private_dir(cache).is_ok() {
        let _ = lab_core::state::write_atomic(&file, format!("{key}\t{verdict}\n").as_bytes());
    }
    (works, why)
}

/// The bound on the KVM probe.
const KVM_PROBE: Duration = Duration::from_secs(15);

async fn probe_kvm(kernel: &Path) -> (bool, String) {
    if let Err(e) = std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm") {
        return (false, format!("/dev/kvm cannot be opened: {e}"));
    }
    let args: Vec<String> = [
        "-accel",
        "kvm",
        "-machine",
        "q35",
        "-cpu",
        "host",
        "-m",
        "128",
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
        "-serial",
        "none",
        "-kernel",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([kernel.to_string_lossy().into_owned(), "-append".into(), "panic=-1 root=/dev/lab-none".into()])
    .collect();
    match run(QEMU, &args, KVM_PROBE).await {
        Ok(o) if o.ok() => (true, "KVM works (a probe guest ran and exited)".into()),
        Ok(o) => (false, format!("a KVM guest failed: {}", o.message())),
        Err(e) => (false, format!("a KVM guest did not finish within {}s ({e})", KVM_PROBE.as_secs())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_program_names_its_package() {
        let p = Program { name: "lab-no-such-program", package: "lab-pkg" };
        let e = p.find().unwrap_err().to_string();
        assert!(e.contains("lab-no-such-program") && e.contains("apt-get install lab-pkg"), "{e}");
    }

    #[test]
    fn output_speaks_in_the_programs_words() {
        let o = Output { code: Some(1), stdout: "x".into(), stderr: " no such file \n".into() };
        assert_eq!(o.message(), "no such file");
        let o = Output { code: Some(3), stdout: String::new(), stderr: String::new() };
        assert_eq!(o.message(), "exit status 3");
    }
}
