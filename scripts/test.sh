#!/usr/bin/env bash
# The README's test command: everything lab's tests need, then every test.
#
#  1. Installs what is missing: Debian packages with apt-get (as root or through sudo; otherwise
#     it says exactly what to run), QEMU 7.2 for the qemu driver's suite, and cargo-nextest
#     and cargo-machete from crates.io. Starts the Docker engine if it does not answer.
#  2. Checks that no crate declares a dependency it does not use (cargo machete).
#  3. Builds the offline images and lab's QEMU image (scripts/offline-images.sh,
#     scripts/qemu-image.sh; kept once built) beside the Rust build.
#  4. Runs the third-party plugin example's tests and its driver's conformance run, then
#     unit, CLI and end-to-end tests (cargo nextest run --workspace), then the doc tests.
#
# `scripts/test.sh --setup-only` does step 1 alone. .ci/run runs this script; its log stamps
# each phase (`ci: HH:MM:SS ...`), where ours say `test:` (PHASE_TAG).
set -euo pipefail
cd "$(dirname "$0")/.."
NAME="test"
. scripts/common.sh
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
# Each phase says when it starts, so the log shows where the minutes go.
phase() { echo "${PHASE_TAG:-test}: $(date -u +%T) $*"; }

setup() {
  need_cargo
  # Besides the build's: mmdebstrap for the offline images, ssh-keygen for the ssh driver's
  # test hosts, openssl for the stand-in docker-machine's certificates, skopeo for the test
  # of the way other registry clients reach the registry (`lab registry`).
  # shellcheck disable=SC2046 # one package name per word
  apt_install -- $(missing_packages "${BUILD_PACKAGES[@]}" mmdebstrap=mmdebstrap curl=curl \
    ssh-keygen=openssh-client openssl=openssl skopeo=skopeo)

  # The qemu driver's suite: QEMU 7.2 from bookworm, vde2, and e2fsprogs for
  # scripts/qemu-image.sh. Some machines carry a newer qemu-utils (10.0), which bookworm's
  # qemu-system-x86 cannot go with, hence the pinned downgrade.
  local qemu
  qemu=$(missing_packages qemu-system-x86_64=qemu-system-x86 vde_switch=vde2 mke2fs=e2fsprogs)
  case "$(qemu-img --version 2>/dev/null | head -n 1)" in
    *"version 7.2"*) ;;
    *) qemu="$qemu qemu-utils=1:7.2+dfsg-7+deb12u18+b3" ;;
  esac
  # shellcheck disable=SC2086
  apt_install --no-install-recommends --allow-downgrades -- $qemu

  ensure_docker
  cargo_tool cargo-nextest cargo-nextest
  cargo_tool cargo-machete cargo-machete
}

phase "install what is missing"
setup
[ "${1:-}" = --setup-only ] && exit 0

phase "unused dependencies (cargo machete)"
# The whole tree, the plugin example included: a dependency a crate declares and never uses
# costs every build its compile time and hides what the crate really needs.
cargo machete --skip-target-dir
# cargo machete reads each crate's own dependencies; an entry of [workspace.dependencies] that
# no member inherits is just as dead, and it does not look there.
unused=()
# shellcheck disable=SC2013 # one name a line, no spaces in it
for dep in $(sed -n '/^\[workspace\.dependencies\]/,/^\[/s/^\([A-Za-z0-9_-]*\) *=.*/\1/p' Cargo.toml); do
  grep -qE "^$dep(\.workspace *= *true| *= *\{.*workspace *= *true)" crates/*/Cargo.toml tests/Cargo.toml ||
    unused+=("$dep")
done
[ ${#unused[@]} -eq 0 ] || die "Cargo.toml: [workspace.dependencies] that no crate uses: ${unused[*]}"

# The offline images and lab's QEMU image (about 1 and 2 minutes the first time; both kept
# after) are built beside the Rust build rather than before it: they wait on the mirror and
# dpkg, the build on the cores. The QEMU image needs root (scripts/qemu-image.sh says why);
# LAB_QEMU_CACHE keeps it where this user's tests look for it, also through sudo.
phase "offline and QEMU images, beside the build"
mkdir -p target
qemu_cache=${LAB_QEMU_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/lab/qemu}
( bash scripts/offline-images.sh && as_root env LAB_QEMU_CACHE="$qemu_cache" bash scripts/qemu-image.sh ) \
  >target/test-images.log 2>&1 &
images=$!
# The plugin example builds against lab as a third party would; it shares the target dir.
# Its lock file is not --locked: a dependency added to a lab crate must not break it, and
# cargo keeps the versions the lock file has.
example=(--manifest-path examples/third-party-driver/Cargo.toml)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
phase "build: the third-party plugin example, then the workspace's tests"
cargo test --no-run "${example[@]}"
cargo build "${example[@]}"
cargo nextest run --workspace --locked --no-run
phase "wait for the images"
if ! wait "$images"; then
  cat target/test-images.log
  die "building the offline or QEMU images failed (above)"
fi
tail -n 3 target/test-images.log

phase "the third-party plugin example"
cargo test "${example[@]}"
cargo run --quiet "${example[@]}" -- drivers
# Its driver passes lab's conformance suite, with this machine's own engine as its one node.
cargo run --quiet "${example[@]}" -- \
  driver-test static --driver-opt "engines={manager=\"${DOCKER_HOST:-unix:///var/run/docker.sock}\"}" \
  --driver-opt 'advertise={manager="127.0.0.1"}'

# Unit, CLI and end-to-end tests against the real engine and QEMU VMs, then the
# documentation's examples.
phase "cargo nextest run --workspace"
cargo nextest run --workspace --locked
phase "cargo test --workspace --doc"
cargo test --workspace --doc --locked
phase "done"
