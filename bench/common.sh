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
