#!/usr/bin/env bash
# Boots one VM of the image that scripts/qemu-image.sh built, the way the qemu driver will,
# and checks it:
#   - a copy-on-write overlay of base.qcow2, the kernel and busybox initrd booted directly;
#   - NIC 1: user-mode networking, restrict=on, SSH forwarded from 127.0.0.1 only;
#   - NIC 2: a private vde_switch (a unix socket directory), the cluster segment;
#   - a per-run client key, host key, hostname and cluster address passed with -fw_cfg,
#     applied by the image's lab-config.service before sshd starts (strict host key check,
#     nothing trusted on first use);
#   - waits (bounded) until `docker info` answers through SSH and prints the time it took;
#   - checks ip_vs/vxlan/overlay/br_netfilter, /proc/net/ip_vs, `getent hosts localhost`
#     (::1, Debian's /etc/hosts), eth1's address, and that a container starts;
#   - powers off through QMP (ACPI system_powerdown), bounded, and removes every process and
#     file it made, also on failure.
# Talks only to 127.0.0.1, unix sockets and the VM it made.
#
# Environment: LAB_QEMU_CACHE (where the image is), LAB_QEMU_ACCEL=tcg|kvm|auto (default tcg;
# auto runs a bounded KVM probe first), LAB_QEMU_CPUS (default 1), LAB_QEMU_MEMORY (MiB, default
# 1024), LAB_QEMU_READY_TIMEOUT (s, default 240),
# LAB_QEMU_KEEP_LOG=path (copy the serial console log there).
set -euo pipefail

CACHE=${LAB_QEMU_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/lab/qemu}
ACCEL=${LAB_QEMU_ACCEL:-tcg}
READY_TIMEOUT=${LAB_QEMU_READY_TIMEOUT:-240}
MEM=${LAB_QEMU_MEMORY:-1024}
CPUS=${LAB_QEMU_CPUS:-1}

say() { echo "qemu-boot-check: $*"; }
die() {
  echo "qemu-boot-check: FAILED: $*" >&2
  if [ -s "${dir:-/nonexistent}/console.log" ]; then
    echo "--- last lines of the serial console ---" >&2; tail -n 25 "$dir/console.log" >&2
  fi
  exit 1
}
need() { command -v "$1" >/dev/null || die "$1 is missing; install it with: apt-get install $2"; }
need qemu-system-x86_64 qemu-system-x86
need qemu-img qemu-utils
need vde_switch vde2
need ssh openssh-client
need ssh-keygen openssh-client
need python3 python3
for f in vmlinuz initrd.img base.qcow2; do
  [ -s "$CACHE/$f" ] || die "$CACHE/$f is missing; build the image with: scripts/qemu-image.sh"
done

dir=$(mktemp -d "${TMPDIR:-/tmp}/lab-qemu-check.XXXXXX")
qemu_pid='' vde_pid=''
cleanup() {
  local rc=$?
  # A daemon that wrote its pidfile after we stopped waiting for it is still ours.
  [ -z "$qemu_pid" ] && [ -s "$dir/qemu.pid" ] && qemu_pid=$(cat "$dir/qemu.pid")
  [ -z "$vde_pid" ] && [ -s "$dir/switch.pid" ] && vde_pid=$(cat "$dir/switch.pid")
  if [ -n "$qemu_pid" ] && kill -0 "$qemu_pid" 2>/dev/null; then
    kill "$qemu_pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$qemu_pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$qemu_pid" 2>/dev/null || true
  fi
  if [ -n "$vde_pid" ] && kill -0 "$vde_pid" 2>/dev/null; then
    kill "$vde_pid" 2>/dev/null || true
  fi
  [ -n "${LAB_QEMU_KEEP_LOG:-}" ] && [ -f "$dir/console.log" ] && cp "$dir/console.log" "$LAB_QEMU_KEEP_LOG"
  rm -rf "$dir"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- acceleration: KVM only when a bounded probe boots and powers off ------------------------
kvm_probe() {
  [ -r /dev/kvm ] && [ -w /dev/kvm ] || return 1
  # The initramfs' busybox powers the guest off at once; a KVM that works does this in a
  # second or two, one that hangs (no nested virtualisation) is killed by the timeout.
  timeout -k 2 15 qemu-system-x86_64 -accel kvm -cpu host -m 256 -nodefaults -no-user-config \
    -display none -no-reboot -kernel "$CACHE/vmlinuz" -initrd "$CACHE/initrd.img" \
    -append "console=ttyS0 panic=-1 rdinit=/bin/busybox poweroff -f" \
    -serial "file:$dir/kvm-probe.log" >/dev/null 2>&1
}
case "$ACCEL" in
  tcg) accel=(-accel tcg,tb-size=256 -cpu qemu64,+rdrand) ;;
  kvm) accel=(-accel kvm -cpu host) ;;
  auto)
    t0=$(date +%s.%N)
    if kvm_probe; then accel=(-accel kvm -cpu host); say "KVM probe: works"
    else accel=(-accel tcg,tb-size=256 -cpu qemu64,+rdrand); say "KVM probe: no working KVM (bounded at 15 s), using TCG"; fi
    say "KVM probe took $(python3 -c "print(f'{$(date +%s.%N)-$t0:.1f}')") s"
    ;;
  *) die "LAB_QEMU_ACCEL must be tcg, kvm or auto, not $ACCEL" ;;
esac

# --- per-run secrets and configuration, made here, nothing baked in the image ---------------
ssh-keygen -q -t ed25519 -N '' -C lab-check -f "$dir/client_key"
ssh-keygen -q -t ed25519 -N '' -C lab-check-host -f "$dir/ssh_host_ed25519_key"
cp "$dir/client_key.pub" "$dir/authorized_keys"
printf 'lab-check-node\n' >"$dir/hostname"
machine_id=$(python3 -c 'import uuid; print(uuid.uuid4().hex)') # one per node: the image's is shared
printf '192.168.77.11/24\n' >"$dir/cluster_addr" # only on the VM's private segment
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
printf '[127.0.0.1]:%s %s\n' "$port" "$(cut -d' ' -f1,2 "$dir/ssh_host_ed25519_key.pub")" >"$dir/known_hosts"
sshv=(ssh -F /dev/null -i "$dir/client_key" -p "$port" -o IdentitiesOnly=yes -o BatchMode=yes
  -o StrictHostKeyChecking=yes -o UserKnownHostsFile="$dir/known_hosts" -o GlobalKnownHostsFile=/dev/null
  -o ConnectTimeout=5 -o LogLevel=ERROR root@127.0.0.1)

qemu-img create -q -f qcow2 -b "$CACHE/base.qcow2" -F qcow2 "$dir/node.qcow2"
vde_switch --sock "$dir/switch" --daemon --pidfile "$dir/switch.pid" >/dev/null 2>&1 ||
  die "vde_switch did not start"
for _ in $(seq 50); do [ -s "$dir/switch.pid" ] && break; sleep 0.1; done # it writes it after forking
[ -s "$dir/switch.pid" ] || die "vde_switch wrote no pidfile within 5 s"
vde_pid=$(cat "$dir/switch.pid")

boot() { # the same command line every boot: fw_cfg is re-read at each one
  t_start=$(date +%s.%N)
  qemu-system-x86_64 -name lab-check-node "${accel[@]}" -machine q35 -smp "$CPUS" -m "$MEM" \
    -nodefaults -no-user-config -display none -vga none -no-reboot \
    -kernel "$CACHE/vmlinuz" -initrd "$CACHE/initrd.img" \
    -append "console=ttyS0 root=/dev/vda apparmor=0 net.ifnames=0 systemd.machine_id=$machine_id quiet" \
    -drive "file=$dir/node.qcow2,if=virtio,format=qcow2,discard=unmap" \
    -netdev "user,id=user0,restrict=on,hostfwd=tcp:127.0.0.1:$port-:22" \
    -device virtio-net-pci,netdev=user0,mac=52:54:00:12:34:01 \
    -netdev "vde,id=cluster0,sock=$dir/switch" \
    -device virtio-net-pci,netdev=cluster0,mac=52:54:00:ab:00:11 \
    -fw_cfg "name=opt/lab/authorized_keys,file=$dir/authorized_keys" \
    -fw_cfg "name=opt/lab/ssh_host_ed25519_key,file=$dir/ssh_host_ed25519_key" \
    -fw_cfg "name=opt/lab/ssh_host_ed25519_key.pub,file=$dir/ssh_host_ed25519_key.pub" \
    -fw_cfg "name=opt/lab/hostname,file=$dir/hostname" \
    -fw_cfg "name=opt/lab/cluster_addr,file=$dir/cluster_addr" \
    -chardev "file,id=console0,path=$dir/console.log,append=on" -serial chardev:console0 \
    -qmp "unix:$dir/qmp.sock,server=on,wait=off" \
    -pidfile "$dir/qemu.pid" -daemonize ||
    die "qemu-system-x86_64 did not start"
  qemu_pid=$(cat "$dir/qemu.pid")
  say "booting ($1, ${accel[*]}, $CPUS CPU, ${MEM} MiB), qemu pid $qemu_pid, ssh on 127.0.0.1:$port"

}

elapsed() { python3 -c "print(f'{$(date +%s.%N)-$t_start:.1f}')"; }
wait_ready() {
  t_ssh=''
  while :; do
    kill -0 "$qemu_pid" 2>/dev/null || die "qemu exited before dockerd was ready"
    if out=$("${sshv[@]}" docker info --format '{{.ServerVersion}}' 2>"$dir/ssh.err"); then break; fi
    grep -qE 'Host key verification failed|IDENTIFICATION HAS CHANGED' "$dir/ssh.err" &&
      die "the VM's host key is not the one lab passed with fw_cfg: $(cat "$dir/ssh.err")"
    [ -z "$t_ssh" ] && "${sshv[@]}" true 2>/dev/null && t_ssh=$(elapsed)
    python3 -c "import sys; sys.exit(0 if $(date +%s.%N)-$t_start < $READY_TIMEOUT else 1)" ||
      die "docker info never answered through ssh on 127.0.0.1:$port within $READY_TIMEOUT s (last ssh error: $(tail -n1 "$dir/ssh.err"))"
    sleep 0.5
  done
  t_ready=$(elapsed)
  say "sshd answered after ${t_ssh:-$t_ready} s; dockerd $out ready after $t_ready s; qemu resident $(awk '/^VmRSS/ { printf "%d MiB", $2 / 1024 }' "/proc/$qemu_pid/status")"
}

boot "first boot of a new overlay"
wait_ready
t_ready1=$t_ready t_ready2=''

# --- checks inside the VM -----------------------------------------------------------------------
check() { # description, command run in the VM, grep -E pattern its output must match
  local got
  got=$("${sshv[@]}" "$2" 2>&1) || die "$1: '$2' failed: $got"
  echo "$got" | grep -qE "$3" || die "$1: '$2' gave: $got"
  say "ok: $1"
  echo "$got" | sed 's/^/    /'
}
check "kernel" 'uname -r; cat /proc/cmdline' 'cloud-amd64'
check "hostname from fw_cfg" 'hostname' '^lab-check-node$'
check "machine id from the kernel command line" 'cat /etc/machine-id' "^$machine_id\$"
check "modules load (ip_vs, vxlan, overlay, br_netfilter)" \
  'modprobe ip_vs && modprobe vxlan && modprobe overlay && modprobe br_netfilter && lsmod | grep -E "^(ip_vs|vxlan|overlay|br_netfilter) " | sort' \
  '^br_netfilter .*' 
"${sshv[@]}" 'lsmod' | grep -qE '^ip_vs ' || die "ip_vs is not in lsmod"
"${sshv[@]}" 'lsmod' | grep -qE '^vxlan ' || die "vxlan is not in lsmod"
"${sshv[@]}" 'lsmod' | grep -qE '^overlay ' || die "overlay is not in lsmod"
check "/proc/net/ip_vs is there" 'cat /proc/net/ip_vs' 'IP Virtual Server version'
check "getent hosts localhost lists ::1 (Debian's /etc/hosts)" 'getent hosts localhost' '^::1[[:space:]]'
check "getaddrinfo(localhost) with AI_ADDRCONFIG (getent ahosts, as most clients) gives ::1 first" \
  'getent ahosts localhost' '^::1[[:space:]]'
check "eth1 (cluster segment) has the address from fw_cfg" 'ip -br addr show eth1' '192\.168\.77\.11/24'
check "eth0 (user-mode) has the slirp address and an IPv6 link-local one, as users' VMs do" \
  'ip -br addr show eth0' '10\.0\.2\.15/24 +fe80::'
check "docker storage driver and cgroups" 'docker info --format "{{.Driver}} cgroup{{.CgroupVersion}} {{.SecurityOptions}}"' 'overlay2'
check "a container starts (apparmor=0)" \
  't0=$(date +%s%N); tar -C / -c bin/busybox | docker import - lab-check/busybox:1 >/dev/null && docker run --rm lab-check/busybox:1 /bin/busybox echo container-ran; echo "took $(( ($(date +%s%N) - t0) / 1000000 )) ms"' \
  '^container-ran$'

say "boot profile:"
"${sshv[@]}" 'systemd-analyze; systemd-analyze blame | head -n 25; systemd-analyze critical-chain docker.service' 2>&1 | sed 's/^/    /' || true
[ -n "${LAB_QEMU_JOURNAL:-}" ] && { "${sshv[@]}" 'journalctl -b -o short-monotonic -u containerd -u docker -u lab-config' 2>&1 | sed 's/^/    /' || true; }

# --- power off through QMP (ACPI), bounded ------------------------------------------------------
power_off() {
  t_off=$(date +%s.%N)
  python3 - "$dir/qmp.sock" <<'PY' || die "QMP system_powerdown failed"
import json, socket, sys
s = socket.socket(socket.AF_UNIX); s.settimeout(10); s.connect(sys.argv[1])
f = s.makefile("rw")
json.loads(f.readline())                       # greeting
for cmd in ({"execute": "qmp_capabilities"}, {"execute": "system_powerdown"}):
    f.write(json.dumps(cmd) + "\n"); f.flush()
    while True:
        r = json.loads(f.readline())
        if "return" in r: break
        if "error" in r: sys.exit("QMP: %s" % r["error"])
PY
  for _ in $(seq 600); do kill -0 "$qemu_pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$qemu_pid" 2>/dev/null && die "the VM did not power off within 60 s of ACPI system_powerdown"
  say "powered off through QMP system_powerdown in $(python3 -c "print(f'{$(date +%s.%N)-$t_off:.1f}')") s"
  qemu_pid=''
}
power_off

# --- a stopped VM boots again from its overlay (as after a host reboot) ----------------------
if [ "${LAB_QEMU_SECOND_BOOT:-1}" = 1 ]; then
  boot "second boot of the same overlay"
  wait_ready
  t_ready2=$t_ready
  check "the overlay kept dockerd's state" 'docker image inspect --format "{{.Id}}" lab-check/busybox:1' '^sha256:'
  check "fw_cfg applied again (hostname, eth1)" 'hostname; ip -br addr show eth1' '192\.168\.77\.11/24'
  power_off
  grep -c 'Debian GNU/Linux 12' "$dir/console.log" | grep -qx 2 || die "the console log does not hold both boots"
  say "ok: the console log ($(wc -c <"$dir/console.log") bytes) holds both boots"
fi
say "PASSED: ready dockerd after $t_ready1 s on a new overlay${t_ready2:+, $t_ready2 s booting it again} (${accel[*]}, $CPUS CPU)"
