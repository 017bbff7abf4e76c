#!/usr/bin/env bash
# Builds the two images lab needs on a machine that cannot pull from any registry, from
# Debian packages only, and tags them in the local Docker engine:
#
#   lab-offline/node:bookworm    a Docker-in-Docker node (dockerd, curl, sshd) for --node-image
#   lab-offline/registry:2       a stand-in for the official registry:2 image, laid out like it:
#                                /bin/registry, /etc/docker/registry/config.yml,
#                                /var/lib/registry, /entrypoint.sh, busybox sh/nc/wget
#
# An image that already exists is kept (delete it to rebuild, or pass --rebuild).
# Needs mmdebstrap (apt-get install mmdebstrap) and a reachable Debian mirror.
set -euo pipefail

NODE_IMAGE=${LAB_OFFLINE_NODE_IMAGE:-lab-offline/node:bookworm}
REGISTRY_IMAGE=${LAB_OFFLINE_REGISTRY_IMAGE:-lab-offline/registry:2}
MIRROR=${LAB_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
rebuild=0
[ "${1:-}" = "--rebuild" ] && rebuild=1

have() { [ "$rebuild" = 0 ] && docker image inspect "$1" >/dev/null 2>&1; }

if ! command -v mmdebstrap >/dev/null; then
  echo "offline-images: mmdebstrap is missing; install it with: apt-get install mmdebstrap" >&2
  exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

build_node() {
  # iptables in legacy mode: nftables inside nested network namespaces is not reliable on
  # every host kernel, legacy iptables is what docker:dind uses too.
  mmdebstrap --quiet --variant=apt \
    --include=docker.io,iptables,iproute2,procps,curl,ca-certificates,openssh-server,busybox \
    --customize-hook='chroot "$1" update-alternatives --set iptables /usr/sbin/iptables-legacy' \
    --customize-hook='chroot "$1" update-alternatives --set ip6tables /usr/sbin/ip6tables-legacy' \
    --customize-hook='rm -f "$1"/etc/ssh/ssh_host_*' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
    "$SUITE" "$work/node.tar" "$MIRROR"
  docker import \
    --change 'CMD ["dockerd"]' \
    --change 'VOLUME /var/lib/docker' \
    --message 'lab offline Docker-in-Docker node image, from Debian packages' \
    "$work/node.tar" "$NODE_IMAGE" >/dev/null
  rm -f "$work/node.tar"
}

build_registry() {
  # Laid out like the official registry:2 (Alpine) image: the same paths, entrypoint and
  # command, and busybox applets for sh, nc and wget where Alpine has them.
  cat >"$work/config.yml" <<'YML'
version: 0.1
log:
  fields:
    service: registry
storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: /var/lib/registry
http:
  addr: :5000
  headers:
    X-Content-Type-Options: [nosniff]
health:
  storagedriver:
    enabled: true
    interval: 10s
    threshold: 3
YML
  cat >"$work/entrypoint.sh" <<'SH'
#!/bin/sh
set -e
case "$1" in
    *.yaml|*.yml) set -- registry serve "$@" ;;
    serve|garbage-collect|help|-*) set -- registry "$@" ;;
esac
exec "$@"
SH
  mmdebstrap --quiet --variant=essential --include=docker-registry,busybox,ca-certificates \
    --customize-hook='mkdir -p "$1"/etc/docker/registry "$1"/var/lib/registry' \
    --customize-hook="cp $work/config.yml \"\$1\"/etc/docker/registry/config.yml" \
    --customize-hook="install -m 0755 $work/entrypoint.sh \"\$1\"/entrypoint.sh" \
    --customize-hook='ln -sf /usr/bin/docker-registry "$1"/bin/registry' \
    --customize-hook='for a in nc wget; do ln -sf /bin/busybox "$1"/usr/local/bin/$a; done' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/* "$1"/usr/share/doc "$1"/usr/share/man' \
    "$SUITE" "$work/registry.tar" "$MIRROR"
  docker import \
    --change 'ENTRYPOINT ["/entrypoint.sh"]' \
    --change 'CMD ["/etc/docker/registry/config.yml"]' \
    --change 'EXPOSE 5000' \
    --change 'VOLUME /var/lib/registry' \
    --message 'lab offline stand-in for registry:2, from Debian packages' \
    "$work/registry.tar" "$REGISTRY_IMAGE" >/dev/null
  rm -f "$work/registry.tar"
}

if have "$NODE_IMAGE"; then echo "offline-images: $NODE_IMAGE is there"; else
  echo "offline-images: building $NODE_IMAGE from Debian packages..."; build_node; fi
if have "$REGISTRY_IMAGE"; then echo "offline-images: $REGISTRY_IMAGE is there"; else
  echo "offline-images: building $REGISTRY_IMAGE from Debian packages..."; build_registry; fi
