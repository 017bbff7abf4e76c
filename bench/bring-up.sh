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
# 5. Repeat commands and repair, on the cluster of 1 + BENCH_REPEAT_WORKERS (with --quick: the
#    1 + BENCH_WORKERS one), kept up after its timed `up`: `lab up` again (nothing to change)
#    and `lab status`, BENCH_REPEATS times each (the median counts); then one worker's
#    container is stopped (`docker stop`, not timed) and `lab up` brings it back, against a
#    `lab up --workers N+1` that makes one new worker, in the same run.
# 6. Issue 20's goals, each with its ratio and whether it holds.
#
# Environment:
#   BENCH_WORKERS=4              workers for the baseline/lab comparison
#   BENCH_SCALE="2 8"            worker counts for the flatness part (the ratio is last/first)
#   BENCH_BIG="1+16 3+16"        MANAGERS+WORKERS clusters timed after it (skipped with --quick;
#                                "" for none)
#   BENCH_REPEAT_WORKERS=8       workers of the cluster the repeat commands and the repair are
#                                timed on (made for them if not in BENCH_SCALE; --quick uses
#                                BENCH_WORKERS)
#   BENCH_REPEATS=5              times each repeat command runs (the median is printed)
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
REPEAT_WORKERS=${BENCH_REPEAT_WORKERS:-8}
REPEATS=${BENCH_REPEATS:-5}
NODE_IMAGE=${BENCH_NODE_IMAGE:-lab-offline/node:bookworm}
REGISTRY_IMAGE=${BENCH_REGISTRY_IMAGE:-lab-offline/registry:2}
PRIVILEGED=${BENCH_PRIVILEGED:-auto}
WAIT=${BENCH_WAIT:-240}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

is_count() { [[ "$1" =~ ^[1-9][0-9]*$ ]]; }
is_count "$WORKERS" || { echo "bring-up: BENCH_WORKERS must be a positive integer, not '$WORKERS'" >&2; exit 2; }
is_count "$REPEAT_WORKERS" || { echo "bring-up: BENCH_REPEAT_WORKERS must be a positive integer, not '$REPEAT_WORKERS'" >&2; exit 2; }
is_count "$REPEATS" || { echo "bring-up: BENCH_REPEATS must be a positive integer, not '$REPEATS'" >&2; exit 2; }
[ "$QUICK" = 0 ] || REPEAT_WORKERS=$WORKERS
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
since3() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.3f", b - a }'; }
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { printf "%.3f", (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

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
for n in "$WORKERS" "$REPEAT_WORKERS" ${SCALE_COUNTS[@]+"${SCALE_COUNTS[@]}"}; do remove_by_label "lab.cluster=$RUN-lab$n"; done
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

# lab_args N [M]: sets LAB_C to the name of the cluster of M managers (1) and N workers, and
# LAB_ARGS to the `lab up` arguments that make it.
lab_args() {
  local n=$1 m=${2:-1}
  LAB_C="$RUN-lab$n"
  LAB_ARGS=(--driver docker --cluster "$LAB_C" --workers "$n" --node-image "$NODE_IMAGE" --registry-image "$REGISTRY_IMAGE")
  [ "$m" = 1 ] || { LAB_C="$RUN-lab${m}m$n"; LAB_ARGS+=(--managers "$m"); }
}

# timed_up LOGNAME ARGS...: `lab up ARGS`, timed to its exit (sets UP_SECS, in ms precision);
# a failure ends the run with lab's stderr.
UP_SECS=""
timed_up() {
  local name=$1 t; shift
  t=$(now)
  if ! lab up "$@" >"$LOGS/up-$name.out" 2>"$LOGS/up-$name.err"; then
    log "lab up ($name) failed after $(since "$t") s; its stderr:"
    cat "$LOGS/up-$name.err" >&2
    die "lab up $*"
  fi
  UP_SECS=$(since3 "$t")
}

# lab_up N [M] [keep]: times `lab up` for a fresh cluster of M managers (1) and N workers, sets
# LAB_SECS and LAB_MEM (MiB per node, `docker stats` over the cluster's containers once it is
# up), then downs it, unless `keep` is given (then `repeat_and_repair` downs it). (Not run in
# $(...): the cluster must be recorded for the cleanup, and a failure must end the run.)
LAB_SECS=""
LAB_MEM=""
lab_up() {
  local n=$1 m=${2:-1} keep=${3:-} c before
  lab_args "$n" "$m"
  c=$LAB_C
  LAB_CLUSTERS+=("$c")
  before=$(docker volume ls -q --filter dangling=true | sort)
  log "lab: up ${LAB_ARGS[*]}"
  timed_up "$c" "${LAB_ARGS[@]}"
  LAB_SECS=$(awk -v s="$UP_SECS" 'BEGIN { printf "%.1f", s }')
  LAB_MEM=$(mem_per_node "lab.cluster=$c" $((m + n)))
  log "lab: $m + $n up in $LAB_SECS s, $LAB_MEM MiB per node"
  if [ -n "$keep" ]; then KEPT_BEFORE=$before; return; fi
  log "lab: down (not timed)"
  down_and_report "$c" "$before"
}

# down_and_report CLUSTER DANGLING_BEFORE: lab down, and the unlabelled dangling volumes that
# appeared since (reported, not removed: one cannot be told apart from someone else's).
down_and_report() {
  local after leaked
  lab_down "$1"
  after=$(docker volume ls -q --filter dangling=true | sort)
  leaked=$(comm -13 <(echo "$2") <(echo "$after") | tr '\n' ' ')
  [ -z "${leaked// }" ] || log "lab: new unlabelled dangling volumes after up+down of $1 (left alone): $leaked"
}

# repeat_and_repair N: on the cluster of 1 + N workers that lab_up kept: `lab up` again and
# `lab status`, REPEATS times each (sets AGAIN_S and STATUS_S, medians); then the last worker's
# container stopped and brought back by `lab up` (REPAIR_S), against `lab up --workers N+1`,
# which makes one new worker (GROW_S). Then downs it.
AGAIN_S=""; STATUS_S=""; REPAIR_S=""; GROW_S=""; REPEAT_NODES=""
repeat_and_repair() {
  local n=$1 i t c times=() args
  lab_args "$n"
  c=$LAB_C
  args=("${LAB_ARGS[@]}")
  REPEAT_NODES=$((n + 1))
  for ((i = 1; i <= REPEATS; i++)); do
    timed_up "$c-again$i" "${args[@]}"
    grep -q "already matches the desired state" "$LOGS/up-$c-again$i.err" "$LOGS/up-$c-again$i.out" \
      || die "lab up again on $c changed something (see $LOGS/up-$c-again$i.err)"
    times+=("$UP_SECS")
  done
  AGAIN_S=$(median "${times[@]}")
  log "lab: up again on $c (nothing to change): ${times[*]} s, median $AGAIN_S s"
  times=()
  for ((i = 1; i <= REPEATS; i++)); do
    t=$(now)
    lab status --cluster "$c" >"$LOGS/status-$c-$i.out" 2>&1 || { cat "$LOGS/status-$c-$i.out" >&2; die "lab status --cluster $c"; }
    times+=("$(since3 "$t")")
  done
  STATUS_S=$(median "${times[@]}")
  log "lab: status of $c: ${times[*]} s, median $STATUS_S s"
  # The last worker: worker1 holds the registry, which is another repair (issue 20, item 5 is
  # about any node).
  log "repair: docker stop $c-worker$n (not timed), then lab up"
  docker stop "$c-worker$n" >/dev/null || die "docker stop $c-worker$n"
  timed_up "$c-repair" "${args[@]}"
  REPAIR_S=$UP_SECS
  log "repair: worker$n back in $REPAIR_S s; lab up --workers $((n + 1)) makes one new worker"
  local grow=()
  for ((i = 0; i < ${#args[@]}; i++)); do
    if [ "${args[$i]}" = --workers ]; then grow+=(--workers "$((n + 1))"); i=$((i + 1)); else grow+=("${args[$i]}"); fi
  done
  timed_up "$c-grow" "${grow[@]}"
  GROW_S=$UP_SECS
  log "grow: 1 + $((n + 1)) in $GROW_S s; lab down (not timed)"
  down_and_report "$c" "$KEPT_BEFORE"
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

# at_floor M N [keep]: the floor of M+N nodes, then lab up of M+N (kept up with `keep`); adds a
# row to FLOOR_ROWS and records both times by case ("M+N") in CASE_FLOOR and CASE_LAB.
FLOOR_ROWS=()
declare -A CASE_FLOOR=() CASE_LAB=()
at_floor() {
  floor $(($1 + $2))
  lab_up "$2" "$1" ${3:+"$3"}
  CASE_FLOOR["$1+$2"]=$FLOOR_SECS
  CASE_LAB["$1+$2"]=$LAB_SECS
  FLOOR_ROWS+=("$(printf '  %-9s %9s s %9s s %9s %10s MiB %10s MiB' "$1+$2" "$FLOOR_SECS" "$LAB_SECS" \
    "$(ratio "$LAB_SECS" "$FLOOR_SECS")" "$LAB_MEM" "$FLOOR_MEM")")
}

# goal WHAT VALUE BASE LIMIT: a goal's line: WHAT, VALUE / BASE (or VALUE alone when BASE is
# "s", against LIMIT seconds), the ratio, the goal and whether it holds.
goal() {
  local what=$1 value=$2 base=$3 limit=$4 r holds
  if [ -z "$value" ] || [ -z "$base" ]; then
    printf '  %-44s %-22s %7s   %-9s %s\n' "$what" "-" "-" "$limit" "not measured in this run"
    return
  fi
  if [ "$base" = s ]; then
    r=$value
    holds=$(awk -v a="$value" -v b="${limit#≤ }" 'BEGIN { print (a <= b) ? "holds" : "does not hold" }')
    printf '  %-44s %-22s %7s   %-9s %s\n' "$what" "$value s" "" "$limit s" "$holds"
  else
    r=$(ratio "$value" "$base")
    holds=$(awk -v a="$r" -v b="${limit#≤ }" 'BEGIN { print (a <= b) ? "holds" : "does not hold" }')
    printf '  %-44s %-22s %7s   %-9s %s\n' "$what" "$value s / $base s" "$r" "$limit" "$holds"
  fi
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

if [ "$QUICK" = 1 ]; then
  at_floor 1 "$WORKERS" keep
  LAB_S=$LAB_SECS
  repeat_and_repair "$WORKERS"
else
  at_floor 1 "$WORKERS"
  LAB_S=$LAB_SECS
fi

FLAT=()
if [ "$QUICK" = 0 ]; then
  repeated=0
  for n in "${SCALE_COUNTS[@]}"; do
    if [ "$n" = "$REPEAT_WORKERS" ] && [ "$repeated" = 0 ]; then
      at_floor 1 "$n" keep; FLAT+=("$LAB_SECS"); repeat_and_repair "$n"; repeated=1
    else
      at_floor 1 "$n"; FLAT+=("$LAB_SECS")
    fi
  done
  if [ "$repeated" = 0 ]; then lab_up "$REPEAT_WORKERS" 1 keep; repeat_and_repair "$REPEAT_WORKERS"; fi
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
echo "repeat commands and repair, 1 manager + $((REPEAT_NODES - 1)) workers ($REPEAT_NODES nodes; medians of $REPEATS)"
row "lab up again (nothing to change)" "$AGAIN_S"
row "lab status" "$STATUS_S"
row "lab up after docker stop of a worker" "$REPAIR_S"
row "lab up --workers $REPEAT_NODES (one new worker)" "$GROW_S" "ratio $(ratio "$REPAIR_S" "$GROW_S")"
echo "issue 20's goals                                measured                 ratio   goal      result"
goal "1+4: lab up / node floor(5)" "${CASE_LAB[1+4]:-}" "${CASE_FLOOR[1+4]:-}" "≤ 1.5"
goal "1+4: lab up / serial seed procedure" "$( [ "$WORKERS" = 4 ] && echo "$LAB_S")" "$SERIAL_S" "≤ 0.5"
goal "1+8: lab up / node floor(9)" "${CASE_LAB[1+8]:-}" "${CASE_FLOOR[1+8]:-}" "≤ 1.5"
goal "3+16: lab up / node floor(19)" "${CASE_LAB[3+16]:-}" "${CASE_FLOOR[3+16]:-}" "≤ 2"
[ "$REPEAT_NODES" = 9 ] || echo "  (the next two were measured at $REPEAT_NODES nodes; the goals are at 9)"
goal "second lab up at 9 nodes (median)" "$AGAIN_S" s "≤ 0.3"
goal "lab status at 9 nodes (median)" "$STATUS_S" s "≤ 0.15"
goal "restart a stopped worker / make a new one" "$REPAIR_S" "$GROW_S" "≤ 1.2"
echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores; load average (1, 5, 15 min) before: $LOAD_BEFORE; after: $(uptime | sed 's/.*load average: //')"
log "whole run: $(since "$TOTAL") s (after the build)"
