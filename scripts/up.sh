#!/usr/bin/env bash
# Brings up the default cluster (1 manager + 2 workers, docker driver) on a fresh machine with
# a Rust toolchain: installs what lab needs (the Docker engine, a C compiler and OpenSSL's
# headers for the build; mmdebstrap when it builds images) with apt-get, as root or through
# sudo, or says exactly what to run; starts the Docker engine if it does not answer; builds
# lab; then runs `lab up` with node and registry images this machine has or can get:
#
#   1. the offline images (lab-offline/node:bookworm, lab-offline/registry:2), when the local
#      engine has them (rebuilt first if their recipe changed);
#   2. docker:dind and registry:3, when the local engine has them or can pull them;
#   3. otherwise the offline images, built from Debian packages (scripts/offline-images.sh).
#
# An image named by lab's own settings (--node-image or --registry-image among the arguments,
# LAB_DRIVERS__DOCKER__NODE_IMAGE or LAB_REGISTRY__IMAGE) is left to lab. Extra arguments go
# to `lab up` (e.g. --workers 4 --cluster demo).
set -euo pipefail
cd "$(dirname "$0")/.."
NAME="up"
. scripts/common.sh

need_cargo
# shellcheck disable=SC2046 # one package name per word
apt_install -- $(missing_packages "${BUILD_PACKAGES[@]}")
ensure_docker

# Not --quiet: a first build takes minutes, and cargo's progress shows it is working.
cargo build --release -p lab-cli

# lab's own settings win: an image the user named is left to lab.
given() { # FLAG VARIABLE ARGS...: whether the user named this image already
  local flag=$1 var=$2 a
  shift 2
  [ -n "${!var:-}" ] && return 0
  for a in "$@"; do case "$a" in "$flag" | "$flag="*) return 0 ;; esac; done
  return 1
}
flags=()
given --node-image LAB_DRIVERS__DOCKER__NODE_IMAGE "$@" || flags+=(--node-image)
given --registry-image LAB_REGISTRY__IMAGE "$@" || flags+=(--registry-image)

offline_node=${LAB_OFFLINE_NODE_IMAGE:-lab-offline/node:bookworm}
offline_registry=${LAB_OFFLINE_REGISTRY_IMAGE:-lab-offline/registry:2}
have_image() { docker image inspect "$1" >/dev/null 2>&1; }
# A pull that cannot reach any registry can take minutes to give up; 5 minutes is also
# enough for docker:dind (about 100 MB) on a slow link.
can_get() { have_image "$1" || timeout 300 docker pull --quiet "$1" >/dev/null 2>&1; }
# The offline images, built (or rebuilt, when their recipe changed) from Debian packages.
offline_images() {
  if ! bash scripts/offline-images.sh --check; then
    # shellcheck disable=SC2046 # one package name per word
    apt_install -- $(missing_packages mmdebstrap=mmdebstrap)
    bash scripts/offline-images.sh
  fi
  node=$offline_node registry=$offline_registry
}

if [ ${#flags[@]} -gt 0 ]; then
  if have_image "$offline_node" && have_image "$offline_registry"; then
    offline_images
  elif say "no offline images here; trying docker:dind and registry:3" &&
       can_get docker:dind && can_get registry:3; then
    node=docker:dind registry=registry:3
  else
    say "the engine cannot pull them; building the offline images from Debian packages"
    offline_images
  fi
fi
image_flags=()
for f in "${flags[@]}"; do
  case "$f" in
    --node-image) image_flags+=(--node-image "$node") ;;
    --registry-image) image_flags+=(--registry-image "$registry") ;;
  esac
done
say "lab up ${image_flags[*]} $*"
# lab reads every LAB_* variable as a setting: the script's own LAB_OFFLINE_* must not reach it.
exec env -u LAB_OFFLINE_NODE_IMAGE -u LAB_OFFLINE_REGISTRY_IMAGE -u LAB_OFFLINE_REGISTRY3_IMAGE \
  target/release/lab up "${image_flags[@]}" "$@"
