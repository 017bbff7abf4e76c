//! One VM: its files, QEMU's command line, whether its QEMU runs, and QMP; and the cluster's
//! `vde_switch`.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::Resources;

/// Where one node's files live: `<state>/qemu/nodes/<node>/`.
#[derive(Debug, Clone)]
pub struct NodeDir(pub PathBuf);

impl NodeDir {
    /// What lab recorded about the node; written last when it is made.
    pub fn record(&self) -> PathBuf {
        self.0.join("node.json")
    }
    /// The copy-on-write overlay of the image.
    pub fn disk(&self) -> PathBuf {
        self.0.join("disk.qcow2")
    }
    /// The serial console's log (both boots and every boot after).
    pub fn console(&self) -> PathBuf {
        self.0.join("console.log")
    }
    /// QEMU's monitor.
    pub fn qmp(&self) -> PathBuf {
        self.0.join("qmp.sock")
    }
    /// QEMU's pid.
    pub fn pidfile(&self) -> PathBuf {
        self.0.join("qemu.pid")
    }
    /// A file QEMU passes to the guest with `-fw_cfg name=opt/lab/NAME`.
    pub fn fw(&self, name: &str) -> PathBuf {
        self.0.join("fw").join(name)
    }
}

/// The fw_cfg files every boot passes (see `scripts/qemu-image.sh`'s lab-config).
pub const FW_FILES: [&str; 8] = [
    "authorized_keys",
    "ssh_host_ed25519_key",
    "ssh_host_ed25519_key.pub",
    "hostname",
    "cluster_addr",
    "docker_ca",
    "docker_cert",
    "docker_key",
];

/// What lab keeps about one node (`node.json`), stable across boots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// Its place in the cluster: addresses and MACs derive from it.
    pub index: u32,
    /// Its role when made.
    pub role: lab_core::Role,
    /// Host port on 127.0.0.1 forwarded to the VM's sshd.
    pub ssh_port: u16,
    /// Host port on 127.0.0.1 forwarded to the VM's dockerd (TLS, port 2376).
    pub engine_port: u16,
    /// systemd's machine ID for the VM (swarm nodes must not share one).
    pub machine_id: String,
    /// Memory and CPUs.
    pub resources: Resources,
}

impl NodeRecord {
    /// Its address on the cluster segment, which the swarm advertises.
    pub fn address(&self) -> String {
        format!("{SEGMENT}.{}", 10 + self.index)
    }
}

/// The cluster segment: a private /24 that exists only inside the VMs and their switch.
pub const SEGMENT: &str = "192.168.77";

/// Everything QEMU's command line needs for one boot.
#[derive(Debug, Clone)]
pub struct Boot<'a> {
    /// QEMU's `-name`: `<cluster>-<node>`.
    pub name: String,
    /// The node's files.
    pub dir: &'a NodeDir,
    /// Its record.
    pub record: &'a NodeRecord,
    /// KVM (else TCG).
    pub kvm: bool,
    /// The image's kernel and initramfs.
    pub kernel: &'a Path,
    /// The initramfs.
    pub initrd: &'a Path,
    /// The cluster's switch directory.
    pub switch: &'a Path,
}

impl Boot<'_> {
    /// QEMU's arguments: detached, with a pidfile, a QMP socket and a console log; the user
    /// NIC restricted to the host, forwarding only from 127.0.0.1; the cluster NIC on the
    /// switch; keys and settings by fw_cfg (paths only: nothing secret on the command line).
    pub fn args(&self) -> Vec<String> {
        let r = self.record;
        let d = self.dir;
        let p = |p: PathBuf| p.to_string_lossy().into_owned();
        let (accel, cpu) =
            if self.kvm { ("kvm".to_string(), "host") } else { ("tcg,tb-size=256".to_string(), "qemu64,+rdrand") };
        let mut a: Vec<String> = vec![
            "-name".into(),
            self.name.clone(),
            "-accel".into(),
            accel,
            "-cpu".into(),
            cpu.into(),
            "-machine".into(),
            "q35".into(),
            "-smp".into(),
            r.resources.cpus.to_string(),
            "-m".into(),
            r.resources.memory.to_string(),
            "-nodefaults".into(),
            "-no-user-config".into(),
            "-display".into(),
            "none".into(),
            "-vga".into(),
            "none".into(),
            "-no-reboot".into(),
            "-kernel".into(),
            self.kernel.to_string_lossy().into_owned(),
            "-initrd".into(),
            self.initrd.to_string_lossy().into_owned(),
            "-append".into(),
            // `no_timer_check`: under TCG on a loaded host the kernel's IO-APIC timer check
            // can miss its ticks and panic ("IO-APIC + timer doesn't work!"), as it did here
            // with four guests booting on 2 busy cores; virtual machines skip that check.
            // `panic=-1` with `-no-reboot`: a guest that panics ends its QEMU at once, which
            // the driver sees, instead of hanging until the boot timeout.
            format!(
                "console=ttyS0 root=/dev/vda apparmor=0 net.ifnames=0 no_timer_check panic=-1 systemd.machine_id={} quiet",
                r.machine_id
            ),
            "-drive".into(),
            format!("file={},if=virtio,format=qcow2,discard=unmap", p(d.disk())),
            "-netdev".into(),
            format!(
                "user,id=user0,restrict=on,hostfwd=tcp:127.0.0.1:{}-:22,hostfwd=tcp:127.0.0.1:{}-:2376",
                r.ssh_port, r.engine_port
            ),
            "-device".into(),
            format!("virtio-net-pci,netdev=user0,mac=52:54:00:12:34:{:02x}", r.index % 256),
            "-netdev".into(),
            format!("vde,id=cluster0,sock={}", self.switch.to_string_lossy()),
            "-device".into(),
            format!(
                "virtio-net-pci,netdev=cluster0,mac=52:54:00:4c:{:02x}:{:02x}",
                (r.index >> 8) % 256,
                r.index % 256
            ),
        ];
        for f in FW_FILES {
            a.push("-fw_cfg".into());
            a.push(format!("name=opt/lab/{f},file={}", p(d.fw(f))));
        }
        a.extend([
            "-chardev".into(),
            format!("file,id=console0,path={},append=on", p(d.console())),
            "-serial".into(),
            "chardev:console0".into(),
            "-qmp".into(),
            format!("unix:{},server=on,wait=off", p(d.qmp())),
            "-pidfile".into(),
            p(d.pidfile()),
            "-daemonize".into(),
        ]);
        a
    }
}

/// The pid of the process whose pidfile is `pidfile`, if it runs and its command line names
/// `marker` (so a reused pid is never taken for it).
pub fn running(pidfile: &Path, marker: &str) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(pidfile).ok()?.trim().parse().ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let cmdline = String::from_utf8_lossy(&cmdline);
    if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // A zombie (exited, not yet reaped) is not running.
        if stat.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z')) {
            return None;
        }
    }
    cmdline.contains(marker).then_some(pid)
}

/// The last `lines` lines of a console log, for error messages.
pub fn console_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read(path).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
    let kept: Vec<&str> = text.lines().map(str::trim_end).filter(|l| !l.trim().is_empty()).collect();
    let tail = &kept[kept.len().saturating_sub(lines)..];
    if tail.is_empty() {
        format!("its console log {} is empty", path.display())
    } else {
        format!("the end of its console log {}:\n    {}", path.display(), tail.join("\n    "))
    }
}

/// Whether the guest's kernel panicked: the end of the console log `path` says so.
pub fn panicked(path: &Path) -> bool {
    let text = std::fs::read(path).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
    let start = text.len().saturating_sub(4096);
    text.get(start..).unwrap_or(&text).contains("Kernel panic")
}

/// Sends one QMP command (after the capabilities handshake) and returns the answer line.
/// Blocking; every read and write is bounded by `timeout`.
pub fn qmp(socket: &Path, command: &str, timeout: Duration) -> std::io::Result<String> {
    let s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let mut w = s.try_clone()?;
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line)?; // the greeting
    w.write_all(b"{\"execute\":\"qmp_capabilities\"}\n")?;
    let answer = |r: &mut BufReader<UnixStream>| -> std::io::Result<String> {
        loop {
            let mut l = String::new();
            if r.read_line(&mut l)? == 0 {
                return Ok(String::new());
            }
            // Events come between answers.
            if l.contains("\"return\"") || l.contains("\"error\"") {
                return Ok(l);
            }
        }
    };
    answer(&mut r)?;
    w.write_all(format!("{{\"execute\":\"{command}\"}}\n").as_bytes())?;
    answer(&mut r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> NodeRecord {
        NodeRecord {
            index: 3,
            role: lab_core::Role::Worker,
            ssh_port: 40022,
            engine_port: 40023,
            machine_id: "0123456789abcdef0123456789abcdef".into(),
            resources: Resources { memory: 2048, cpus: 1 },
        }
    }

    #[test]
    fn the_command_line_forwards_only_from_loopback_and_passes_paths_not_secrets() {
        let dir = NodeDir("/s/qemu/nodes/worker2".into());
        let r = record();
        let boot = Boot {
            name: "c-worker2".into(),
            dir: &dir,
            record: &r,
            kvm: false,
            kernel: Path::new("/img/vmlinuz"),
            initrd: Path::new("/img/initrd.img"),
            switch: Path::new("/s/qemu/switch"),
        };
        let a = boot.args();
        let joined = a.join(" ");
        assert!(joined.contains("restrict=on,hostfwd=tcp:127.0.0.1:40022-:22,hostfwd=tcp:127.0.0.1:40023-:2376"));
        assert!(joined.contains("-accel tcg,tb-size=256 -cpu qemu64,+rdrand"));
        assert!(joined.contains("-m 2048"));
        assert!(joined.contains("systemd.machine_id=0123456789abcdef0123456789abcdef"));
        assert!(joined.contains(" no_timer_check panic=-1 ") && joined.contains("-no-reboot"), "{joined}");
        assert!(joined.contains("vde,id=cluster0,sock=/s/qemu/switch"));
        assert!(joined.contains("mac=52:54:00:4c:00:03"));
        assert!(joined.contains("name=opt/lab/docker_key,file=/s/qemu/nodes/worker2/fw/docker_key"));
        assert_eq!(a.last().map(String::as_str), Some("-daemonize"));
        assert_eq!(r.address(), "192.168.77.13");
        let kvm = Boot { kvm: true, ..boot }.args().join(" ");
        assert!(kvm.contains("-accel kvm -cpu host"));
    }

    #[test]
    fn a_pidfile_of_another_program_is_not_this_vm() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        std::fs::write(&pidfile, std::process::id().to_string()).unwrap();
        assert_eq!(running(&pidfile, "lab-no-such-marker"), None);
        let me = std::env::args().next().unwrap();
        assert_eq!(running(&pidfile, &me), Some(std::process::id()));
        assert_eq!(running(&dir.path().join("absent"), &me), None);
    }

    #[test]
    fn the_console_tail_keeps_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("console.log");
        std::fs::write(&log, "a\n\nb\nlab-initrd: the root disk /dev/vda never appeared (10 s)\n").unwrap();
        let t = console_tail(&log, 2);
        assert!(t.ends_with("b\n    lab-initrd: the root disk /dev/vda never appeared (10 s)"), "{t}");
        assert!(console_tail(&dir.path().join("none"), 5).contains("is empty"));
    }

    #[test]
    fn a_panic_at_the_end_of_the_console_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("console.log");
        assert!(!panicked(&log), "no log, no panic");
        std::fs::write(&log, "[    0.03] ---[ end Kernel panic - not syncing: IO-APIC + timer doesn't work! ]---\n")
            .unwrap();
        assert!(panicked(&log));
        std::fs::write(&log, "Debian GNU/Linux 12 lab-manager ttyS0\n").unwrap();
        assert!(!panicked(&log));
    }
}
