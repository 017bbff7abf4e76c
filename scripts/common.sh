# shellcheck shell=bash
# What scripts/up.sh and scripts/test.sh share: finding what this machine lacks, installing it
# with apt-get (as root, or through sudo), and making sure the Docker engine answers. Sourced
# after the script has set NAME, its log prefix. Every function changes nothing when what it
# looks for is already there, so running a script twice costs a few dpkg look-ups.

say() { echo "$NAME: $*"; }
die() { echo "$NAME: $*" >&2; exit 1; }

# as_root CMD...: runs CMD as root: directly when we are root, else through sudo when there is
# one. Returns 127 without running anything when neither is possible.
as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null; then sudo "$@"
  else return 127
  fi
}
can_be_root() { [ "$(id -u)" = 0 ] || command -v sudo >/dev/null; }

# missing_packages CMD=PKG...: the Debian packages whose command is not on PATH. An entry
# `dpkg:PKG` asks dpkg instead (libraries and tools without a command of their own).
missing_packages() {
  local entry
  for entry in "$@"; do
    case "$entry" in
      dpkg:*) dpkg -s "${entry#dpkg:}" >/dev/null 2>&1 || echo "${entry#dpkg:}" ;;
      *) command -v "${entry%%=*}" >/dev/null || echo "${entry#*=}" ;;
    esac
  done
}

# apt_install [APT-GET OPTIONS...] -- PKG...: installs PKGs, or says exactly what to run and
# stops when this script cannot (no apt-get, or neither root nor sudo).
APT_UPDATED=0
apt_install() {
  local opts=()
  while [ "$1" != -- ]; do opts+=("$1"); shift; done
  shift
  [ $# -gt 0 ] || return 0
  if ! command -v apt-get >/dev/null; then
    die "this machine has no apt-get; install these (Debian names) with its package manager, then run $0 again: $*"
  fi
  if ! can_be_root; then
    die "missing: $*; as root, run 'apt-get update && apt-get install -y ${opts[*]:+${opts[*]} }$*', then run $0 again"
  fi
  say "installing $*"
  if [ "$APT_UPDATED" = 0 ]; then
    as_root apt-get update -qq
    APT_UPDATED=1
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${opts[@]}" "$@" >/dev/null
}

# The Rust toolchain is not a Debian package lab can use (bookworm's cargo is older than the
# workspace's rust-version), so a machine without it gets the command that installs it.
need_cargo() {
  command -v cargo >/dev/null && return 0
  die "cargo is missing: install Rust (1.89 or later) with rustup, as the user who runs lab: 'curl --proto =https --tlsv1.2 -sSf https://sh.rustup.rs | sh', then open a new shell and run $0 again"
}

# What building lab needs besides Rust: a C compiler and OpenSSL's headers (libssh2-sys).
# shellcheck disable=SC2034 # used by the scripts that source this file
BUILD_PACKAGES=(cc=gcc dpkg:libc6-dev pkg-config=pkg-config dpkg:libssl-dev)

# ensure_docker: the docker CLI is installed and the engine answers; starts the engine when it
# does not (the service, or dockerd itself where there is no service manager), waiting at most
# 60 s for it.
ensure_docker() {
  # shellcheck disable=SC2046 # one package name per word
  apt_install -- $(missing_packages docker=docker.io)
  docker info >/dev/null 2>&1 && return 0
  can_be_root || die "the Docker engine does not answer and starting it needs root: run 'sudo service docker start' (or start dockerd), then run $0 again"
  say "starting the Docker engine"
  if ! as_root service docker start >/dev/null 2>&1; then
    as_root sh -c 'nohup dockerd >/var/log/dockerd-lab.log 2>&1 &'
  fi
  local _
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && return 0; sleep 1; done
  die "the Docker engine did not answer within 60 s of starting it (docker info: $(docker info 2>&1 | tail -n 1))"
}

# cargo_tool BINARY CRATE: installs a cargo subcommand from crates.io when it is missing.
cargo_tool() {
  command -v "$1" >/dev/null && return 0
  say "installing $2 (cargo install $2 --locked)"
  cargo install "$2" --locked
}
