#!/usr/bin/env bash
# Builds lab's QEMU VM image from Debian packages only (the qemu driver's boot2docker):
#
#   $LAB_QEMU_CACHE (default ${XDG_CACHE_HOME:-~/.cache}/lab/qemu/)
#     vmlinuz      the Debian cloud kernel (linux-image-cloud-amd64), booted with -kernel
#     initrd.img   a small busybox initramfs: loads virtio/ext4, mounts the root disk
#                  (root=, default /dev/vda) and switches to it; no udev, no firmware
#     base.qcow2   Debian bookworm: systemd, dockerd (docker.io), sshd, curl, the kernel's
#                  modules (ip_vs, vxlan, overlay, br_netfilter, ...). Each node boots a
#                  copy-on-write overlay of it: qemu-img create -f qcow2 -b base.qcow2 -F qcow2 node.qcow2
#     recipe       the recipe version these files were built by
#
# No keys are baked in. At every boot the unit lab-config.service (before sshd and dockerd)
# reads what the driver passes with QEMU's -fw_cfg (see docs/qemu-notes.md):
#   opt/lab/authorized_keys   -> /root/.ssh/authorized_keys
#   opt/lab/ssh_host_ed25519_key (+ .pub)  -> /etc/ssh/ (otherwise sshd keys are generated)
#   opt/lab/hostname          -> hostname
#   opt/lab/cluster_addr      -> eth1 address (CIDR), the cluster segment NIC
#   opt/lab/docker_ca, docker_cert, docker_key
#                             -> dockerd also listens on tcp://:2376 with --tlsverify, trusting
#                                only client certificates that CA signed (as docker-machine did)
#
# What is there and built by the current recipe is kept (pass --rebuild to build again).
# Needs root (mmdebstrap in root mode writes a directory that mke2fs -d turns into the
# disk), mmdebstrap, e2fsprogs (mke2fs), qemu-utils (qemu-img), and a reachable Debian mirror.
set -euo pipefail

MIRROR=${LAB_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
CACHE=${LAB_QEMU_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/lab/qemu}
DISK_SIZE=${LAB_QEMU_DISK_SIZE:-10G}
# Bumped whenever the recipe below changes, so machines that built an older one rebuild it.
RECIPE=2
rebuild=0
[ "${1:-}" = "--rebuild" ] && rebuild=1

say() { echo "qemu-image: $*"; }
die() { echo "qemu-image: $*" >&2; exit 1; }

need() { # command, Debian package
  command -v "$1" >/dev/null || die "$1 is missing; install it with: apt-get install $2"
}
if [ "$rebuild" = 0 ] && [ "$(cat "$CACHE/recipe" 2>/dev/null)" = "$RECIPE" ] &&
   [ -s "$CACHE/vmlinuz" ] && [ -s "$CACHE/initrd.img" ] && [ -s "$CACHE/base.qcow2" ]; then
  say "recipe $RECIPE is built in $CACHE:"
  ls -l "$CACHE/vmlinuz" "$CACHE/initrd.img" "$CACHE/base.qcow2"
  exit 0
fi

need mmdebstrap mmdebstrap
need mke2fs e2fsprogs
need qemu-img qemu-utils
[ "$(id -u)" = 0 ] || die "building the image needs root (mmdebstrap root mode and mke2fs -d keep file owners); run it with sudo"

mkdir -p "$CACHE"
work=$(mktemp -d "$CACHE/.build.XXXXXX")
trap 'rm -rf "$work"' EXIT
root="$work/root"

# --- the boot-time configuration unit (runs in the guest) -----------------------------------
cat >"$work/lab-config" <<'SH'
#!/bin/bash
# lab-config: applies what the qemu driver passed with -fw_cfg name=opt/lab/NAME,file=...
# Runs at every boot, before sshd, networkd and dockerd. Nothing is trusted on first use: the
# host key and the authorized key come from the host. Shell builtins only where it can (every
# exec costs under TCG).
set -u
fw=/sys/firmware/qemu_fw_cfg/by_name/opt/lab
[ -d /sys/firmware/qemu_fw_cfg ] || modprobe qemu_fw_cfg 2>/dev/null || true
get() { # NAME -> $val; false when the host did not pass it
  val=''
  [ -r "$fw/$1/raw" ] || return 1
  IFS= read -r -d '' val <"$fw/$1/raw" || true
}
if get authorized_keys; then
  [ -d /root/.ssh ] || mkdir -m 0700 /root/.ssh
  (umask 077; printf '%s' "$val" >/root/.ssh/authorized_keys)
fi
for k in ssh_host_ed25519_key ssh_host_ecdsa_key ssh_host_rsa_key; do
  if get "$k"; then
    (umask 077; printf '%s' "$val" >"/etc/ssh/$k")
    if get "$k.pub"; then printf '%s' "$val" >"/etc/ssh/$k.pub"; else ssh-keygen -y -f "/etc/ssh/$k" >"/etc/ssh/$k.pub"; fi
  fi
done
have_key=0
for f in /etc/ssh/ssh_host_*_key; do [ -e "$f" ] && have_key=1; done
[ "$have_key" = 1 ] || ssh-keygen -A
if get hostname && h=${val%%[[:space:]]*} && [ -n "$h" ]; then
  echo "$h" >/proc/sys/kernel/hostname
  echo "$h" >/etc/hostname
  hosts='' done=0
  while IFS= read -r line; do
    case "$line" in 127.0.1.1[[:space:]]*) line=$(printf '127.0.1.1\t%s' "$h"); done=1 ;; esac
    hosts+=$line$'\n'
  done </etc/hosts
  [ "$done" = 1 ] || hosts+=$(printf '127.0.1.1\t%s' "$h")$'\n'
  printf '%s' "$hosts" >/etc/hosts
fi
if get cluster_addr && a=${val%%[[:space:]]*} && [ -n "$a" ]; then
  [ -d /run/systemd/network ] || mkdir -p /run/systemd/network
  printf '[Match]\nName=eth1\n\n[Network]\nAddress=%s\nIPv6AcceptRA=no\n' "$a" \
    >/run/systemd/network/20-lab-cluster.network
fi
# dockerd's TCP listener, with TLS and client certificates only; without them, none. Debian's
# docker.service passes $DOCKER_OPTS from /etc/default/docker after its own -H fd://.
opts=''
if get docker_ca && ca=$val && get docker_cert && cert=$val && get docker_key; then
  [ -d /etc/docker/tls ] || mkdir -p -m 0700 /etc/docker/tls
  printf '%s' "$ca" >/etc/docker/tls/ca.pem
  printf '%s' "$cert" >/etc/docker/tls/cert.pem
  (umask 077; printf '%s' "$val" >/etc/docker/tls/key.pem)
  opts='-H tcp://0.0.0.0:2376 --tlsverify --tlscacert=/etc/docker/tls/ca.pem --tlscert=/etc/docker/tls/cert.pem --tlskey=/etc/docker/tls/key.pem'
fi
printf 'DOCKER_OPTS="%s"\n' "$opts" >/etc/default/docker
exit 0
SH

cat >"$work/lab-config.service" <<'UNIT'
[Unit]
Description=lab: apply the host's configuration (keys, hostname, cluster address) from fw_cfg
DefaultDependencies=no
After=local-fs.target
Before=ssh.service docker.service systemd-networkd.service network-pre.target
Wants=network-pre.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/lab-config

[Install]
WantedBy=multi-user.target
UNIT

# --- the initramfs' /init ---------------------------------------------------------------------
cat >"$work/init" <<'SH'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin:/sbin
mkdir -p /proc /sys /dev /newroot /sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
fail() {
  echo "lab-initrd: $*; powering off in 5 s" >/dev/console
  sleep 5; poweroff -f
}
root=/dev/vda; rootfstype=ext4; rootflags=rw
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    root=*) root=${arg#root=} ;;
    rootfstype=*) rootfstype=${arg#rootfstype=} ;;
  esac
done
ln -sf /bin/busybox /sbin/modprobe
for m in $(cat /etc/modules); do modprobe "$m" 2>/dev/null || echo "lab-initrd: modprobe $m failed" >/dev/console; done
i=0
while [ ! -b "$root" ]; do
  i=$((i + 1)); [ "$i" -gt 100 ] && fail "the root disk $root never appeared (10 s)"
  sleep 0.1
done
mount -t "$rootfstype" -o "$rootflags" "$root" /newroot || fail "cannot mount $root ($rootfstype)"
[ -L /newroot/sbin/init ] || [ -x /newroot/sbin/init ] || fail "$root has no /sbin/init"
umount /sys /proc
mount --move /dev /newroot/dev
exec switch_root /newroot /sbin/init
SH

# --- the root file system ---------------------------------------------------------------------
say "building Debian $SUITE with docker.io, openssh-server and linux-image-cloud-amd64 from $MIRROR..."
pkgs=linux-image-cloud-amd64,systemd-sysv,udev,kmod,e2fsprogs,iproute2,iptables,procps,curl,ca-certificates
pkgs=$pkgs,docker.io,openssh-server,busybox-static,cpio,ipvsadm,less,netbase,dbus
mkdir -p "$root"
mmdebstrap --quiet --variant=apt --include="$pkgs" \
  --customize-hook='rm -f "$1"/etc/ssh/ssh_host_*' \
  --customize-hook='rm -f "$1"/boot/initrd.img-*' \
  --customize-hook='printf "/dev/vda / ext4 rw,noatime,errors=remount-ro 0 0\n" >"$1/etc/fstab"' \
  --customize-hook='echo lab-node >"$1/etc/hostname"' \
  --customize-hook='printf "127.0.0.1\tlocalhost\n127.0.1.1\tlab-node\n\n# The following lines are desirable for IPv6 capable hosts\n::1     localhost ip6-localhost ip6-loopback\nff02::1 ip6-allnodes\nff02::2 ip6-allrouters\n" >"$1/etc/hosts"' \
  --customize-hook='printf "[Match]\nName=eth0\n\n[Network]\nAddress=10.0.2.15/24\nGateway=10.0.2.2\nIPv6AcceptRA=no\n" >"$1/etc/systemd/network/10-lab-user.network"' \
  --customize-hook='chroot "$1" systemctl enable systemd-networkd.service' \
  --customize-hook='chroot "$1" systemctl mask systemd-networkd-wait-online.service apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer' \
  --customize-hook='printf "ip_vs\nvxlan\noverlay\nbr_netfilter\n" >"$1/etc/modules-load.d/lab.conf"' \
  --customize-hook='mkdir -p "$1/etc/ssh/sshd_config.d"; printf "PermitRootLogin prohibit-password\nPasswordAuthentication no\nUseDNS no\n" >"$1/etc/ssh/sshd_config.d/lab.conf"' \
  --customize-hook="install -m 0755 '$work/lab-config' \"\$1/usr/local/sbin/lab-config\"" \
  --customize-hook="install -m 0644 '$work/lab-config.service' \"\$1/etc/systemd/system/lab-config.service\"" \
  --customize-hook='chroot "$1" systemctl enable lab-config.service' \
  --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
  --customize-hook='chroot "$1" systemctl mask e2scrub_reap.service ipvsadm.service modprobe@drm.service modprobe@efi_pstore.service getty@tty1.service' \
  --customize-hook='echo 1ab0000000000000000000000000c0de >"$1/etc/machine-id"' \
  --customize-hook='touch "$1/etc/.updated" "$1/var/.updated"' \
  "$SUITE" "$root" "$MIRROR" ||
  die "mmdebstrap failed (is the Debian mirror $MIRROR reachable? set LAB_DEBIAN_MIRROR)"

kver=$(ls "$root/lib/modules" | sort -V | tail -1)
[ -n "$kver" ] && [ -e "$root/boot/vmlinuz-$kver" ] || die "no kernel in the image (linux-image-cloud-amd64 did not install)"
for m in ip_vs vxlan overlay br_netfilter qemu_fw_cfg; do
  chroot "$root" modprobe -S "$kver" --show-depends "$m" >/dev/null ||
    die "the kernel $kver has no module $m"
done

# --- the initramfs: busybox, the few modules to reach an ext4 virtio disk, /init ---------------
say "building the busybox initramfs for $kver..."
ird="$root/tmp/initramfs"
mkdir -p "$ird"/{bin,sbin,etc,proc,sys,dev,newroot,lib/modules/"$kver"}
cp "$root/bin/busybox" "$ird/bin/busybox"
install -m 0755 "$work/init" "$ird/init"
wanted="virtio_pci virtio_blk ext4 crc32c_generic"
echo "$wanted" | tr ' ' '\n' >"$ird/etc/modules"
for m in $wanted; do
  chroot "$root" modprobe -S "$kver" --show-depends "$m" | awk '$1 == "insmod" { print $2 }'
done | sort -u | while read -r ko; do
  mkdir -p "$ird$(dirname "$ko")"; cp "$root$ko" "$ird$ko"
done
cp "$root/lib/modules/$kver"/modules.{order,builtin,builtin.modinfo} "$ird/lib/modules/$kver/" 2>/dev/null || true
chroot "$root" depmod -b /tmp/initramfs "$kver"
(cd "$root" && chroot . sh -c 'cd /tmp/initramfs && find . | cpio --quiet -o -H newc') | gzip -9 >"$work/initrd.img"
rm -rf "$ird"
cp "$root/boot/vmlinuz-$kver" "$work/vmlinuz"

# --- the disk ---------------------------------------------------------------------------------
say "making the $DISK_SIZE ext4 root disk..."
mke2fs -q -t ext4 -L lab-root -d "$root" "$work/root.ext4" "$DISK_SIZE" >/dev/null
rm -rf "$root"
qemu-img convert -f raw -O qcow2 "$work/root.ext4" "$work/base.qcow2"
rm -f "$work/root.ext4"

mv -f "$work/vmlinuz" "$work/initrd.img" "$work/base.qcow2" "$CACHE/"
echo "$RECIPE" >"$CACHE/recipe"
say "built recipe $RECIPE (kernel $kver) in $CACHE:"
ls -l "$CACHE/vmlinuz" "$CACHE/initrd.img" "$CACHE/base.qcow2"
