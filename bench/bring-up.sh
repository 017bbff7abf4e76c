#!/usr/bin/env bash
# Bring-up benchmark: lab against the seed's manual procedure, on identical Docker-in-Docker
# nodes on the local engine.
#
#   bench/bring-up.sh [--quick]
#
# 1. Baseline ("serial docker CLI"): the seed's procedure by hand, one node at a time. For the
#    manager and each worker: `docker run -d` a dind node container with the same flags lab's
#    docker driver uses (crates/driver-docker/src/driver.rs, `create`), wait for its dockerd,
#    `docker save REGISTRY | docker exec -i NODE docker load`. Then swarm init (manager
#    drained), join each worker in turn, label worker1 lab.registry=true, create the registry
#    service (published in host mode on worker1), start an nc forwarder on every other node,
#    and wait until every node answers {} at http://127.0.0.1:5000/v2/. Timed end to end.
# 2. `lab up --driver docker` for the same topology, timed; then `lab down` (not timed).
# 3. Flatness (skipped with --quick): `lab up` timed for each worker count in BENCH_SCALE.
# 4. Big clusters (skipped with --quick): `lab up` for each MANAGERS+WORKERS case in BENCH_BIG.
# Before each `lab up` of M+N nodes (2, 3 and 4), the node floor of M+N nodes (bench/floor.sh:
# that many node containers started at once, timed until every dockerd answers) is measured, and
# the table gives lab's time over it, and the memory per node (`docker stats`) of both.
#
# Environment:
#   BENCH_WORKERS=4              workers for the baseline/lab comparison
#   BENCH_SCALE="2 8"            worker counts for the flatness part (the ratio is last/first)
#   BENCH_BIG="1+16 3+16"        MANAGERS+WORKERS clusters timed after it (skipped with --quick;
#                                "" for none)
#   BENCH_NODE_IMAGE=lab-offline/node:bookworm
#   BENCH_REGISTRY_IMAGE=lab-offline/registry:2
#   BENCH_PRIVILEGED=auto        auto|always|never: node containers --privileged, or explicit
#                                capabilities (auto tries a privileged container once, as lab does)
#   BENCH_WAIT=240               seconds any single wait may take before the run fails
#   LAB_BIN=path/to/lab          use this binary instead of `cargo build --release -p lab-cli`
#   BENCH_LOGS=DIR               keep every step's output (lab up's stdout/stderr, ...) in DIR
#
# Everything it makes is named bench-<pid>-... (docker objects of the baseline also carry the
# label bench.run=bench-<pid>); lab runs with XDG_STATE_HOME in a temporary directory and from
# that directory, so no lab.toml and no LAB_* variable of the caller's applies. An EXIT trap
# removes all of it. Progress goes to stderr; the result table to stdout.
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

QUICK=0
for arg in "$@"; do
  case "$arg" in
    --quick) QUICK=1 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "bring-up: unknown argument $arg (try --help)" >&2; exit 2 ;;
  esac
done

WORKERS=${BENCH_WORKERS:-4}
SCALE=${BENCH_SCALE:-"2 8"}
NODE_IMAGE=${BENCH_NODE_IMAGE:-lab-offline/node:bookworm}
REGISTRY_IMAGE=${BENCH_REGISTRY_IMAGE:-lab-offline/registry:2}
PRIVILEGED=${BENCH_PRIVILEGED:-auto}
WAIT=${BENCH_WAIT:-240}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

is_count() { [[ "$1" =~ ^[1-9][0-9]*$ ]]; }
is_count "$WORKERS" || { echo "bring-up: BENCH_WORKERS must be a positive integer, not '$WORKERS'" >&2; exit 2; }
read -r -a SCALE_COUNTS <<<"$SCALE"
if [ "$QUICK" = 0 ]; then
  [ "${#SCALE_COUNTS[@]}" -ge 2 ] || { echo "bring-up: BENCH_SCALE needs at least two worker counts, e.g. \"2 8\"" >&2; exit 2; }
  for n in "${SCALE_COUNTS[@]}"; do
    is_count "$n" || { echo "bring-up: BENCH_SCALE: '$n' is not a positive integer" >&2; exit 2; }
  done
fi
read -r -a BIG_CASES <<<"${BENCH_BIG-1+16 3+16}"
for c in ${BIG_CASES[@]+"${BIG_CASES[@]}"}; do
  [[ "$c" =~ ^[1-9][0-9]*\+[1-9][0-9]*$ ]] || { echo "bring-up: BENCH_BIG: '$c' is not MANAGERS+WORKERS, e.g. 3+16" >&2; exit 2; }
done
case "$PRIVILEGED" in auto|always|never) ;; *) echo "bring-up: BENCH_PRIVILEGED must be auto, always or never" >&2; exit 2 ;; esac

RUN="bench-$$"
SERIAL="$RUN-serial"          # the baseline's "cluster": containers $SERIAL-manager, $SERIAL-worker1, ...
LAB_CLUSTERS=()               # lab clusters this run may have made
TMP=$(mktemp -d "${TMPDIR:-/tmp}/lab-bench.XXXXXX")
LOGS=${BENCH_LOGS:-$TMP/logs}
mkdir -p "$LOGS" "$TMP/state" "$TMP/cwd"
LAB=""

NAME=bring-up
source "$ROOT/bench/common.sh"
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# --- cleanup: only what this run made --------------------------------------------------------

tidy() {
  remove_by_label "bench.run=$RUN"
  local c
  for c in ${LAB_CLUSTERS[@]+"${LAB_CLUSTERS[@]}"}; do lab_down "$c"; done
}
cleanup_on_exit

# --- prerequisites -------------------------------------------------------------------------

prerequisites

# Clean up before: leftovers of an earlier run that had this pid.
remove_by_label "bench.run=$RUN"
for n in "$WORKERS" ${SCALE_COUNTS[@]+"${SCALE_COUNTS[@]}"}; do remove_by_label "lab.cluster=$RUN-lab$n"; done
for c in ${BIG_CASES[@]+"${BIG_CASES[@]}"}; do
  remove_by_label "lab.cluster=$RUN-lab${c#*+}"; remove_by_label "lab.cluster=$RUN-lab${c%%+*}m${c#*+}"
done

# Node container flags, as lab's docker driver sets them (bench/common.sh).
node_flags "$PRIVILEGED" "$RUN-privileged-probe" "bench.run=$RUN"

# --- helpers for the baseline --------------------------------------------------------------

# wait_for WHAT CMD...: retries CMD until it succeeds, for at most $WAIT seconds.
wait_for() {
  local what=$1; shift
  local end=$((SECONDS + WAIT))
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$end" ] || die "$what: no success within ${WAIT}s (last try: $*)"
    sleep 0.25
  done
}

ip_of() { # container network
  docker inspect -f "{{(index .NetworkSettings.Networks \"$2\").IPAddress}}" "$1"
}

serial_node() { # node name (manager, worker1, ...)
  local node=$1 c="$SERIAL-$1" t
  t=$(now)
  docker volume create --label "bench.run=$RUN" "$c-docker" >/dev/null
  docker run -d --name "$c" --label "bench.run=$RUN" --hostname "$node" --network "$SERIAL-net" \
    -v "$c-docker:/var/lib/docker" "${NODE_FLAGS[@]}" \
    "$NODE_IMAGE" dockerd --host=unix:///var/run/docker.sock >/dev/null
  wait_for "dockerd in $c" docker exec "$c" docker version
  docker save "$REGISTRY_IMAGE" | docker exec -i "$c" docker load >"$LOGS/load-$c.log" 2>&1 \
    || { cat "$LOGS/load-$c.log" >&2; die "loading $REGISTRY_IMAGE into $c"; }
  log "serial: $node ready ($(since "$t") s)"
}

# Waits until every node answers {} at http://127.0.0.1:5000/v2/; names the ones that never did.
wait_registry() { # node...
  local pending=("$@") left node out end=$((SECONDS + WAIT))
  while [ "${#pending[@]}" -gt 0 ]; do
    left=()
    for node in "${pending[@]}"; do
      out=$(docker exec "$SERIAL-$node" curl -s --max-time 3 http://127.0.0.1:5000/v2/ 2>&1 || true)
      [ "$out" = "{}" ] || { left+=("$node"); echo "$out" >"$LOGS/v2-$node.last"; }
    done
    pending=("${left[@]+"${left[@]}"}")
    [ "${#pending[@]}" -gt 0 ] || break
    if [ "$SECONDS" -ge "$end" ]; then
      for node in "${pending[@]}"; do
        log "serial: $node never answered {} at http://127.0.0.1:5000/v2/ (last answer: '$(head -c 200 "$LOGS/v2-$node.last")')"
      done
      die "serial: registry not reachable on: ${pending[*]} after ${WAIT}s"
    fi
    sleep 0.25
  done
}

# --- 1. baseline: the seed's procedure, one node at a time ---------------------------------

serial_bringup() {
  local n=$1 i mgr="$SERIAL-manager" mgr_ip w1_ip token others=(manager)
  docker network create --label "bench.run=$RUN" "$SERIAL-net" >/dev/null
  serial_node manager
  for ((i = 1; i <= n; i++)); do serial_node "worker$i"; done

  mgr_ip=$(ip_of "$mgr" "$SERIAL-net")
  docker exec "$mgr" docker swarm init --availability drain --advertise-addr "$mgr_ip" >"$LOGS/swarm-init.log" 2>&1 \
    || { cat "$LOGS/swarm-init.log" >&2; die "swarm init on $mgr"; }
  token=$(docker exec "$mgr" docker swarm join-token -q worker)
  for ((i = 1; i <= n; i++)); do
    docker exec "$SERIAL-worker$i" docker swarm join --token "$token" \
      --advertise-addr "$(ip_of "$SERIAL-worker$i" "$SERIAL-net")" "$mgr_ip:2377" >"$LOGS/join-$i.log" 2>&1 \
      || { cat "$LOGS/join-$i.log" >&2; die "worker$i could not join the swarm"; }
  done
  log "serial: swarm of 1 manager + $n workers"
  docker exec "$mgr" docker node update --label-add lab.registry=true worker1 >/dev/null
  # --detach: like the seed's `docker stack deploy`, which does not wait for the task either (the
  # wait below does). --no-resolve-image: offline, resolving would only time a failed lookup
  # on Docker Hub, which lab's API call does not make.
  docker exec "$mgr" docker service create --detach --no-resolve-image --name registry_registry \
    --constraint node.labels.lab.registry==true \
    --publish mode=host,target=5000,published=5000 "$REGISTRY_IMAGE" >"$LOGS/service.log" 2>&1 \
    || { cat "$LOGS/service.log" >&2; die "creating the registry service"; }
  w1_ip=$(ip_of "$SERIAL-worker1" "$SERIAL-net")
  for ((i = 2; i <= n; i++)); do others+=("worker$i"); done
  for node in "${others[@]}"; do
    docker exec "$SERIAL-$node" docker run -d --network host --restart unless-stopped \
      --entrypoint nc "$REGISTRY_IMAGE" -ll -p 5000 -e nc "$w1_ip" 5000 >"$LOGS/fwd-$node.log" 2>&1 \
      || { cat "$LOGS/fwd-$node.log" >&2; die "starting the forwarder on $node"; }
  done
  local all=(manager)
  for ((i = 1; i <= n; i++)); do all+=("worker$i"); done
  wait_registry "${all[@]}"
}

serial_teardown() {
  remove_by_label "bench.run=$RUN"
}

# --- 2. lab --------------------------------------------------------------------------------

# lab_up N [M]: times `lab up` for a fresh cluster of M managers (1) and N workers, sets LAB_SECS
# and LAB_MEM (MiB per node, `docker stats` over the cluster's containers once it is up), then
# downs it. (Not run in $(...): the cluster must be recorded for the cleanup, and a failure must
# end the run.)
LAB_SECS=""
LAB_MEM=""
lab_up() {
  local n=$1 m=${2:-1} c t before after leaked extra=()
  c="$RUN-lab$n"
  [ "$m" = 1 ] || { c="$RUN-lab${m}m$n"; extra=(--managers "$m"); }
  LAB_CLUSTERS+=("$c")
  before=$(docker volume ls -q --filter dangling=true | sort)
  log "lab: up --cluster $c ${extra[*]} --workers $n"
  t=$(now)
  if ! lab up --driver docker --cluster "$c" ${extra[@]+"${extra[@]}"} --workers "$n" \
        --node-image "$NODE_IMAGE" --registry-image "$REGISTRY_IMAGE" \
        >"$LOGS/up-$c.out" 2>"$LOGS/up-$c.err"; then
    log "lab up --cluster $c failed after $(since "$t") s; its stderr:"
    cat "$LOGS/up-$c.err" >&2
    die "lab up --cluster $c ${extra[*]} --workers $n"
  fi
  LAB_SECS=$(since "$t")
  LAB_MEM=$(mem_per_node "lab.cluster=$c" $((m + n)))
  log "lab: $m + $n up in $LAB_SECS s, $LAB_MEM MiB per node; lab down (not timed)"
  lab_down "$c"
  # Reported, not removed: an unlabelled volume cannot be told apart from someone else's.
  after=$(docker volume ls -q --filter dangling=true | sort)
  leaked=$(comm -13 <(echo "$before") <(echo "$after") | tr '\n' ' ')
  [ -z "${leaked// }" ] || log "lab: new unlabelled dangling volumes after up+down of $c (left alone): $leaked"
}

# floor K: the node floor of K nodes (bench/floor.sh), sets FLOOR_SECS and FLOOR_MEM.
FLOOR_SECS=""
FLOOR_MEM=""
floor() {
  local out
  log "floor: $1 node containers at once, until every dockerd answers"
  out=$(BENCH_LOGS="$LOGS/floor-$1" BENCH_PRIVILEGED="$PRIVILEGED" BENCH_WAIT="$WAIT" BENCH_NODE_IMAGE="$NODE_IMAGE" \
        bash "$ROOT/bench/floor.sh" --raw "$1" 2>"$LOGS/floor-$1.err") \
    || { cat "$LOGS/floor-$1.err" >&2; die "bench/floor.sh $1"; }
  read -r FLOOR_SECS FLOOR_MEM <<<"$out"
  log "floor: $1 nodes in $FLOOR_SECS s, $FLOOR_MEM MiB per node"
}

# at_floor M N: the floor of M+N nodes, then lab up of M+N; adds a row to FLOOR_ROWS.
FLOOR_ROWS=()
at_floor() {
  floor $(($1 + $2))
  lab_up "$2" "$1"
  FLOOR_ROWS+=("$(printf '  %-9s %9s s %9s s %9s %10s MiB %10s MiB' "$1+$2" "$FLOOR_SECS" "$LAB_SECS" \
    "$(ratio "$LAB_SECS" "$FLOOR_SECS")" "$LAB_MEM" "$FLOOR_MEM")")
}

# --- run -----------------------------------------------------------------------------------

TOTAL=$(now)
LOAD_BEFORE=$(uptime | sed 's/.*load average: //')
log "run $RUN: 1 manager + $WORKERS workers; node image $NODE_IMAGE, registry image $REGISTRY_IMAGE, privileged: $PRIVILEGED"

log "serial: the seed's procedure, one node at a time"
t=$(now)
serial_bringup "$WORKERS"
SERIAL_S=$(since "$t")
log "serial: every node answers {} ($SERIAL_S s); tearing it down (not timed)"
serial_teardown

at_floor 1 "$WORKERS"
LAB_S=$LAB_SECS

FLAT=()
if [ "$QUICK" = 0 ]; then
  for n in "${SCALE_COUNTS[@]}"; do at_floor 1 "$n"; FLAT+=("$LAB_SECS"); done
  for case in ${BIG_CASES[@]+"${BIG_CASES[@]}"}; do at_floor "${case%%+*}" "${case#*+}"; done
fi

row() { printf '  %-37s %6s s%s\n' "$1" "$2" "${3:+   $3}"; }
echo
echo "bring-up, 1 manager + $WORKERS workers"
row "serial docker CLI (seed procedure)" "$SERIAL_S"
row "lab up" "$LAB_S" "ratio $(ratio "$LAB_S" "$SERIAL_S")"
if [ "$QUICK" = 0 ]; then
  echo "flatness"
  last=$((${#SCALE_COUNTS[@]} - 1))
  for i in "${!SCALE_COUNTS[@]}"; do
    extra=""
    [ "$i" != "$last" ] || extra="ratio $(ratio "${FLAT[$i]}" "${FLAT[0]}")"
    row "lab up, ${SCALE_COUNTS[$i]} workers" "${FLAT[$i]}" "$extra"
  done
fi
echo "at the node floor (bench/floor.sh: the same number of node containers started at once, until every dockerd answers)"
printf '  %-9s %11s %11s %9s %14s %14s\n' cluster "node floor" "lab up" "lab/floor" "lab mem/node" "floor mem/node"
printf '%s\n' "${FLOOR_ROWS[@]}"
echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores; load average (1, 5, 15 min) before: $LOAD_BEFORE; after: $(uptime | sed 's/.*load average: //')"
log "whole run: $(since "$TOTAL") s (after the build)"
