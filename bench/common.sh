# What the docker-driver benchmarks share (bench/bring-up.sh, bench/push.sh): sourced after
# each script has set NAME (its log prefix), TMP, NODE_IMAGE, REGISTRY_IMAGE and ROOT.

# Progress goes to fd 3, the script's own stderr: a trap can run while a command's stderr is
# redirected to a log file, and its messages must not vanish into that file.
exec 3>&2
log() { printf '%s [%s] %s\n' "$NAME" "$(date +%H:%M:%S)" "$*" >&3; }
die() { log "FAILED: $*"; exit 1; }
now() { date +%s.%N; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }

# lab, with its state in $TMP and nothing of the caller's configuration.
lab() {
  local unset_env=()
  local v
  for v in $(compgen -e); do
    case "$v" in LAB_*) unset_env+=(-u "$v") ;; esac
  done
  # In the background and waited for, so that a signal to the script is handled at once
  # (bash defers traps until a foreground command ends); the cleanup stops it.
  (cd "$TMP/cwd" && exec env "${unset_env[@]}" XDG_STATE_HOME="$TMP/state" "$LAB" "$@") &
  CHILD=$!
  local rc=0
  wait "$CHILD" || rc=$?
  CHILD=""
  return "$rc"
}
CHILD=""

remove_by_label() { # label=value: containers, then volumes, then networks
  local ids
  ids=$(docker ps -aq --filter "label=$1" 2>/dev/null || true)
  [ -z "$ids" ] || docker rm -fv $ids >/dev/null 2>&1 || true
  ids=$(docker volume ls -q --filter "label=$1" 2>/dev/null || true)
  [ -z "$ids" ] || docker volume rm -f $ids >/dev/null 2>&1 || true
  ids=$(docker network ls -q --filter "label=$1" 2>/dev/null || true)
  [ -z "$ids" ] || docker network rm $ids >/dev/null 2>&1 || true
}

# The engine answers, the offline images are there (built if not), and LAB is the lab binary
# to time: $LAB_BIN, or a release build of this checkout.
prerequisites() {
  docker version >/dev/null || die "the local Docker engine does not answer"
  if ! docker image inspect "$NODE_IMAGE" >/dev/null 2>&1 || ! docker image inspect "$REGISTRY_IMAGE" >/dev/null 2>&1; then
    log "building the offline images (scripts/offline-images.sh)"
    LAB_OFFLINE_NODE_IMAGE="$NODE_IMAGE" LAB_OFFLINE_REGISTRY_IMAGE="$REGISTRY_IMAGE" \
      bash "$ROOT/scripts/offline-images.sh" >&2 || die "could not build the offline images"
  fi
  if [ -n "${LAB_BIN:-}" ]; then
    LAB=$LAB_BIN
  else
    log "building lab (cargo build --release -p lab-cli)"
    (cd "$ROOT" && cargo build --release -p lab-cli) >"$LOGS/build.log" 2>&1 || { tail -n 40 "$LOGS/build.log" >&2; die "cargo build failed"; }
    LAB="${CARGO_TARGET_DIR:-$ROOT/target}/release/lab"
    case "$LAB" in /*) ;; *) LAB="$ROOT/$LAB" ;; esac
  fi
  [ -x "$LAB" ] || die "no lab binary at $LAB"
  LAB=$(cd "$(dirname "$LAB")" && pwd)/$(basename "$LAB")
}

# lab down of a cluster this run made, then whatever it missed (it was interrupted, or lab
# never recorded the cluster).
lab_down() { # cluster
  if [ -n "$LAB" ] && [ -x "$LAB" ]; then
    if ! lab down --cluster "$1" >"$LOGS/down-$1.log" 2>&1; then
      log "lab down --cluster $1 failed; sweeping by label. Its output:"
      cat "$LOGS/down-$1.log" >&3
    fi
  fi
  remove_by_label "lab.cluster=$1"
}

# Every run ends here, however it ends (an error, ^C, a kill): the lab it waits for is
# stopped, the script's own `tidy` removes only what this run made, $TMP goes, and the exit
# status is kept. Call `cleanup_on_exit` once `tidy` is defined.
on_exit() {
  local rc=$?
  trap - EXIT INT TERM
  set +e
  log "cleaning up"
  if [ -n "$CHILD" ]; then
    kill -TERM "$CHILD" 2>/dev/null
    wait "$CHILD" 2>/dev/null
    CHILD=""
  fi
  tidy
  rm -rf "$TMP"
  exit "$rc"
}
cleanup_on_exit() {
  trap on_exit EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
}

# node_flags PRIVILEGED PROBE_NAME LABEL: sets NODE_FLAGS to the flags lab's docker driver gives
# a node container, and PRIVILEGED to always or never (auto tries a privileged container once,
# as lab does). Needs ROOT, NODE_IMAGE, LOGS.
node_flags() {
  PRIVILEGED=$1
  if [ "$PRIVILEGED" = auto ]; then
    if docker run --rm --name "$2" --label "$3" --privileged \
         --entrypoint true "$NODE_IMAGE" >"$LOGS/privileged-probe.log" 2>&1; then
      PRIVILEGED=always
    else
      PRIVILEGED=never
      log "privileged containers fail here ($(tr '\n' ' ' <"$LOGS/privileged-probe.log" | cut -c1-120)); using explicit capabilities"
    fi
  fi
  NODE_FLAGS=(--init -e DOCKER_TLS_CERTDIR=)
  if [ "$PRIVILEGED" = always ]; then
    NODE_FLAGS+=(--privileged)
  else
    # The CAPS list of lab's docker driver (crates/driver-docker/src/node.rs), read from the
    # source so the two cannot drift.
    local caps cap
    caps=$(cat "$ROOT"/crates/driver-docker/src/*.rs | sed -n '/^\(pub \)\?const CAPS: &\[&str\] = &\[/,/^\];/p' | grep -o '"[A-Z_]*"' | tr -d '"')
    [ -n "$caps" ] || die "could not read the CAPS list from crates/driver-docker/src/*.rs"
    for cap in $caps; do NODE_FLAGS+=(--cap-add "$cap"); done
    NODE_FLAGS+=(--security-opt seccomp=unconfined --security-opt apparmor=unconfined
                 --security-opt systempaths=unconfined -v /sys/fs/cgroup:/sys/fs/cgroup:rw)
  fi
}

# mem_per_node LABEL N: the memory (MiB) that `docker stats --no-stream` reports for the
# running containers with LABEL, summed, divided by N.
mem_per_node() {
  local ids
  ids=$(docker ps -q --filter "label=$1")
  [ -n "$ids" ] || { echo "n/a"; return; }
  # shellcheck disable=SC2086
  docker stats --no-stream --format '{{.MemUsage}}' $ids | awk -v n="$2" '
    { v = $1; u = v; sub(/[0-9.]+/, "", u); sub(/[A-Za-z]+$/, "", v)
      f = (u == "GiB") ? 1024 : (u == "MiB") ? 1 : (u == "KiB") ? 1 / 1024 : (u == "B") ? 1 / 1048576 : 1
      s += v * f }
    END { printf "%.0f", s / n }'
}
