#!/usr/bin/env bash
# Builds the two images lab needs on a machine that cannot pull from any registry, from
# Debian packages only, and tags them in the local Docker engine:
#
#   lab-offline/node:bookworm    a Docker-in-Docker node (dockerd, curl, sshd) for --node-image
#   lab-offline/registry:2       a stand-in for the official registry:2 image, laid out like it:
#                                /bin/registry, /etc/docker/registry/config.yml,
#                                /var/lib/registry, /entrypoint.sh, busybox applets (sh, nc,
#                                wget, ...); about the official image's size
#   lab-offline/registry:3       the same for registry:3 (distribution v3): the configuration at
#                                /etc/distribution/config.yml and nothing at the old path,
#                                CMD ["/etc/distribution/config.yml"], as upstream's v3 image
#
# Both registry stand-ins run Debian's docker-registry binary (distribution 2.8): they check
# that lab deploys either image layout correctly, not distribution v3's own behaviour.
#
# An image that already exists is kept (delete it to rebuild, or pass --rebuild). --check
# builds nothing: it exits 0 when every image is there and built by the current recipe, 1
# otherwise (scripts/up.sh asks it before installing mmdebstrap).
# Building needs mmdebstrap (apt-get install mmdebstrap) and a reachable Debian mirror.
set -euo pipefail

NODE_IMAGE=${LAB_OFFLINE_NODE_IMAGE:-lab-offline/node:bookworm}
REGISTRY_IMAGE=${LAB_OFFLINE_REGISTRY_IMAGE:-lab-offline/registry:2}
REGISTRY3_IMAGE=${LAB_OFFLINE_REGISTRY3_IMAGE:-lab-offline/registry:3}
MIRROR=${LAB_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
rebuild=0 check=0
[ "${1:-}" = "--rebuild" ] && rebuild=1
[ "${1:-}" = "--check" ] && check=1
# Bumped whenever a recipe below changes, so machines that built an older one rebuild it.
NODE_RECIPE=1
REGISTRY_RECIPE=2
REGISTRY3_RECIPE=1

# Whether the image exists and was built by the current recipe (an image without the label
# is recipe 1).
have() {
  [ "$rebuild" = 0 ] || return 1
  local got
  got=$(docker image inspect -f '{{index .Config.Labels "lab.offline.recipe"}}' "$1" 2>/dev/null) || return 1
  [ "${got:-1}" = "$2" ] || { [ "$got" = "<no value>" ] && [ "$2" = 1 ]; }
}

all_current() {
  have "$NODE_IMAGE" "$NODE_RECIPE" && have "$REGISTRY_IMAGE" "$REGISTRY_RECIPE" &&
    have "$REGISTRY3_IMAGE" "$REGISTRY3_RECIPE"
}
if [ "$check" = 1 ]; then
  all_current
  exit
fi
# Only when something is to be built: a machine that has the images needs no mmdebstrap.
if ! all_current && ! command -v mmdebstrap >/dev/null; then
  echo "offline-images: mmdebstrap is missing; install it with: apt-get install mmdebstrap" >&2
  exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

build_node() {
  # The hooks' "$1" is mmdebstrap's, not ours.
  # shellcheck disable=SC2016
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
    --change "LABEL lab.offline.recipe=$NODE_RECIPE" \
    --message 'lab offline Docker-in-Docker node image, from Debian packages' \
    "$work/node.tar" "$NODE_IMAGE" >/dev/null
  rm -f "$work/node.tar"
}

# The files both registry stand-ins share, in "$work/registry-base", extracted once: only what
# the official (Alpine) images have in substance, the registry binary, busybox and the C
# library, about 25 MB. The packages are extracted, not installed, and the few files needed
# are copied into an empty root, so the images are as light to copy to every node as the real
# ones.
registry_base() {
  local root="$work/registry-base"
  [ -d "$root" ] && return 0
  mmdebstrap --quiet --variant=extract --include=docker-registry,busybox \
    "$SUITE" "$work/registry-full" "$MIRROR"
  local full="$work/registry-full"
  mkdir -p "$root"/{bin,etc,var/lib/registry,tmp,usr/local/bin}
  chmod 1777 "$root/tmp"
  cp "$full/usr/bin/docker-registry" "$root/bin/registry"
  cp "$full/bin/busybox" "$root/bin/busybox"
  for lib in $(ldd "$root/bin/registry" "$root/bin/busybox" | grep -o '/[^ ]*\.so[^ ]*' | sort -u); do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$full$lib" "$root$lib" 2>/dev/null || cp -L "$lib" "$root$lib"
  done
  for applet in $("$root/bin/busybox" --list); do
    [ -e "$root/bin/$applet" ] || ln -s busybox "$root/bin/$applet"
  done
  for a in nc wget; do ln -sf /bin/busybox "$root/usr/local/bin/$a"; done
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$root/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
  printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$root/etc/hosts"
  rm -rf "$full"
}

# build_registry IMAGE CONFIG RECIPE WHAT: a stand-in with its configuration at CONFIG, which
# its command names, as the official image of that major version has it.
build_registry() {
  local image=$1 config=$2 recipe=$3 what=$4
  registry_base
  # The official images' config-example.yml, in substance.
  local root="$work/registry-root"
  rm -rf "$root"
  cp -a "$work/registry-base" "$root"
  mkdir -p "$root$(dirname "$config")"
  cat >"$root$config" <<'YML'
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
  # The official images' entrypoint: a YAML file as first argument means `registry serve` it.
  cat >"$root/entrypoint.sh" <<'SH'
#!/bin/sh
set -e
case "$1" in
    *.yaml|*.yml) set -- registry serve "$@" ;;
    serve|garbage-collect|help|-*) set -- registry "$@" ;;
esac
exec "$@"
SH
  chmod 0755 "$root/entrypoint.sh"
  tar -C "$root" -cf "$work/registry.tar" .
  rm -rf "$root"
  docker import \
    --change 'ENTRYPOINT ["/entrypoint.sh"]' \
    --change "CMD [\"$config\"]" \
    --change 'EXPOSE 5000' \
    --change 'VOLUME /var/lib/registry' \
    --change "LABEL lab.offline.recipe=$recipe" \
    --message "lab offline stand-in for $what, from Debian packages" \
    "$work/registry.tar" "$image" >/dev/null
  rm -f "$work/registry.tar"
}

if have "$NODE_IMAGE" "$NODE_RECIPE"; then echo "offline-images: $NODE_IMAGE is there"; else
  echo "offline-images: building $NODE_IMAGE from Debian packages..."; build_node; fi
if have "$REGISTRY_IMAGE" "$REGISTRY_RECIPE"; then echo "offline-images: $REGISTRY_IMAGE is there"; else
  echo "offline-images: building $REGISTRY_IMAGE from Debian packages..."
  build_registry "$REGISTRY_IMAGE" /etc/docker/registry/config.yml "$REGISTRY_RECIPE" registry:2; fi
# Laid out like upstream's v3 image (distribution-library-image): the same binary path, volume,
# port, entrypoint script and command, the configuration only at /etc/distribution/config.yml.
# Like registry:3.0.0 it does not set OTEL_TRACES_EXPORTER itself (later v3 images do): lab must.
if have "$REGISTRY3_IMAGE" "$REGISTRY3_RECIPE"; then echo "offline-images: $REGISTRY3_IMAGE is there"; else
  echo "offline-images: building $REGISTRY3_IMAGE from Debian packages..."
  build_registry "$REGISTRY3_IMAGE" /etc/distribution/config.yml "$REGISTRY3_RECIPE" registry:3; fi
