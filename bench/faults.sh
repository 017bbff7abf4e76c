#!/usr/bin/env bash
# Fault benchmark (issue 19, "Figures"): for each fault lab is meant to survive, on the docker
# driver, how long `lab status` takes to show it, how long `lab up` takes to repair it, how many
# pushed images are lost, and how many service tasks run after.
#
#   bench/faults.sh
#
# Clusters (offline images), each seeded before its faults with two pushed images
# (faults/img-a:1, faults/img-b:1, a few kB each) and one replicated service (keep, 2 replicas
# of the registry image, which every node has):
#   A, 1 manager + 2 workers: worker2 stopped; worker2 gone with its volume; worker2's network
#      cut, then mended; every node stopped, then started in reverse order.
#   B, 3 managers + 1 worker: the leader gone with its volume; then two managers gone (no
#      quorum): a plain `lab up` (which must refuse), then `lab up --force-new-cluster`.
#   C, 1 manager + 1 worker: the registry's node (worker1) gone with its volume, after a
#      `lab images save DIR` (repair: `lab up`, then `lab images load DIR`); then gone again
#      without a backup (repair: `lab up`).
#
# Per fault:
#   seen      seconds from the fault's docker command returning until `lab status` prints the
#             line that names it (polled)
#   repair    seconds of `lab up --cluster C` (plus `lab images load` where said)
#   images    of the 2 pushed: how many `lab images` lists, and how many `docker pull
#             localhost:5000/...` on a node still gets; "lost" is 2 minus the pulls
#   services  running tasks of `keep` after the repair (waited for up to 60 s), of 2
#
# Environment:
#   BENCH_NODE_IMAGE=lab-offline/node:bookworm
#   BENCH_REGISTRY_IMAGE=lab-offline/registry:2
#   BENCH_FAULTS="a b c"         which clusters' faults to run (see above)
#   BENCH_WAIT=180               seconds a poll may take before the row says so
#   LAB_BIN=path/to/lab          use this binary instead of `cargo build --release -p lab-cli`
#   BENCH_LOGS=DIR               keep every step's output in DIR
#
# Everything it makes is named bench-f<pid>-...; lab runs with XDG_STATE_HOME in a temporary
# directory. Leftovers of the names are removed before (by label lab.cluster), and everything
# on exit, including on SIGINT/SIGTERM. Progress goes to stderr; the table (markdown) and the
# machine's load (`uptime`) to stdout.
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
for arg in "$@"; do
  case "$arg" in
    -h|--help) usage; exit 0 ;;
    *) echo "faults: unknown argument $arg (try --help)" >&2; exit 2 ;;
  esac
done

NODE_IMAGE=${BENCH_NODE_IMAGE:-lab-offline/node:bookworm}
REGISTRY_IMAGE=${BENCH_REGISTRY_IMAGE:-lab-offline/registry:2}
WAIT=${BENCH_WAIT:-180}
[[ "$WAIT" =~ ^[1-9][0-9]*$ ]] || { echo "faults: BENCH_WAIT must be a positive integer, not '$WAIT'" >&2; exit 2; }
FAULTS=${BENCH_FAULTS:-a b c}
for f in $FAULTS; do
  case "$f" in a|b|c) ;; *) echo "faults: BENCH_FAULTS: '$f' is not a, b or c" >&2; exit 2 ;; esac
done
wanted() { [[ " $FAULTS " == *" $1 "* ]]; }
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

RUN="bench-f$$"
TMP=$(mktemp -d "${TMPDIR:-/tmp}/lab-faults.XXXXXX")
LOGS=${BENCH_LOGS:-$TMP/logs}
mkdir -p "$LOGS" "$TMP/state" "$TMP/cwd"
LAB=""
NAME=faults
source "$ROOT/bench/common.sh"
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

A="$RUN-a"; B="$RUN-b"; C="$RUN-c"
IMAGES=(faults/img-a:1 faults/img-b:1)
HOST_IMAGES=("$RUN-img-a:1" "$RUN-img-b:1")

tidy() {
  local c i
  for c in "$A" "$B" "$C"; do lab_down "$c"; done
  for i in "${HOST_IMAGES[@]}"; do docker rmi -f "$i" >/dev/null 2>&1 || true; done
  docker rm -fv "$RUN-src" >/dev/null 2>&1 || true
}
cleanup_on_exit
prerequisites
for c in "$A" "$B" "$C"; do remove_by_label "lab.cluster=$c"; done

# --- helpers -------------------------------------------------------------------------------

up_cluster() { # cluster flags...
  local c=$1; shift
  log "$c: lab up $*"
  lab up --driver docker --cluster "$c" --node-image "$NODE_IMAGE" --registry-image "$REGISTRY_IMAGE" "$@" \
    >"$LOGS/up-$c.out" 2>"$LOGS/up-$c.err" || { cat "$LOGS/up-$c.err" >&2; die "lab up --cluster $c $*"; }
}

# The first node container of the cluster whose engine is a swarm manager that answers.
manager_of() { # cluster
  local n
  for n in manager manager1 manager2 manager3; do
    if docker exec "$1-$n" docker node ls >/dev/null 2>&1; then echo "$1-$n"; return 0; fi
  done
  return 1
}

# Two small images on this machine (a marker file each on top of the registry image).
make_host_images() {
  local i
  for i in 0 1; do
    docker rm -fv "$RUN-src" >/dev/null 2>&1 || true
    docker run --name "$RUN-src" --entrypoint sh "$REGISTRY_IMAGE" -c "echo $RUN-$i > /marker" >/dev/null
    docker commit "$RUN-src" "${HOST_IMAGES[$i]}" >/dev/null
    docker rm -fv "$RUN-src" >/dev/null
  done
}

running_tasks() { # cluster
  local m
  m=$(manager_of "$1") || { echo 0; return; }
  docker exec "$m" docker service ps keep --filter desired-state=running --format '{{.CurrentState}}' 2>/dev/null \
    | grep -c '^Running' || true
}

wait_tasks() { # cluster want seconds: waits until `want` tasks run; prints how many do
  local end=$((SECONDS + $3)) n
  while :; do
    n=$(running_tasks "$1")
    if [ "$n" -ge "$2" ] || [ "$SECONDS" -ge "$end" ]; then echo "$n"; return; fi
    sleep 1
  done
}

seed() { # cluster: the two images pushed, the service running
  local c=$1 i m
  for i in 0 1; do
    lab push --cluster "$c" "${HOST_IMAGES[$i]}" --as "${IMAGES[$i]}" >"$LOGS/push-$c-$i.log" 2>&1 \
      || { cat "$LOGS/push-$c-$i.log" >&2; die "lab push into $c"; }
  done
  m=$(manager_of "$c") || die "$c: no manager answers"
  docker exec "$m" docker service create --detach --no-resolve-image --name keep --replicas 2 "$REGISTRY_IMAGE" \
    >"$LOGS/service-$c.log" 2>&1 || { cat "$LOGS/service-$c.log" >&2; die "$c: service create"; }
  [ "$(wait_tasks "$c" 2 120)" = 2 ] || die "$c: the service keep never ran 2 tasks"
  log "$c: 2 images pushed, service keep runs 2 tasks"
}

# seen START CLUSTER PATTERN: seconds from START until `lab status` prints PATTERN.
seen() {
  local t=$1 c=$2 pat=$3 end=$((SECONDS + WAIT))
  while :; do
    if lab status --cluster "$c" >"$LOGS/status-$c.last" 2>&1 && grep -qF -- "$pat" "$LOGS/status-$c.last"; then
      since "$t"; return
    fi
    # `status` may exit non-zero on a broken cluster; it still prints what it sees.
    grep -qF -- "$pat" "$LOGS/status-$c.last" && { since "$t"; return; }
    [ "$SECONDS" -lt "$end" ] || { log "$c: status never said '$pat'; last:"; cat "$LOGS/status-$c.last" >&3; echo "not in ${WAIT} s"; return; }
    sleep 0.2
  done
}

# repair CLUSTER FLAGS...: times `lab up`; prints the seconds, or "failed (exit N) after S s".
repair() {
  local c=$1 t rc=0; shift
  t=$(now)
  lab up --cluster "$c" "$@" >"$LOGS/repair-$c.out" 2>"$LOGS/repair-$c.err" || rc=$?
  if [ "$rc" = 0 ]; then since "$t"; else
    log "$c: lab up $* exited $rc; its stderr:"; tail -n 20 "$LOGS/repair-$c.err" >&3
    echo "failed (exit $rc) after $(since "$t") s"
  fi
}

# kept CLUSTER NODE: sets KEPT to "listed / pulled", of the 2 pushed images, and LOST.
KEPT=""; LOST=0
kept() {
  local c=$1 node=$2 listed=0 pulled=0 i
  lab images --cluster "$c" >"$LOGS/images-$c.last" 2>&1 || true
  for i in "${IMAGES[@]}"; do
    grep -q -- "${i%%:*}" "$LOGS/images-$c.last" && listed=$((listed + 1))
    if docker exec "$c-$node" docker pull "localhost:5000/$i" >>"$LOGS/pull-$c.log" 2>&1; then
      pulled=$((pulled + 1))
      docker exec "$c-$node" docker rmi "localhost:5000/$i" >/dev/null 2>&1 || true
    fi
  done
  LOST=$((2 - pulled))
  KEPT="$listed / $pulled"
}

lose() { # container: removed with its volume, as a lost machine and disk
  docker rm -fv "$1" >/dev/null
  docker volume rm -f "$1-docker" >/dev/null 2>&1 || true
}

ROWS=()
row() { # fault seen repair kept lost tasks
  ROWS+=("| $1 | $2 | $3 | $4 | $5 | $6/2 |")
  log "row: $1: seen $2, repair $3, images $4, lost $5, tasks $6"
}

# after CLUSTER NODE FAULT SEEN REPAIR: the images and the service after a repair; adds the row.
after() {
  local t
  kept "$1" "$2"
  t=$(wait_tasks "$1" 2 60)
  row "$3" "$4" "$5" "$KEPT" "$LOST" "$t"
}

# --- run -----------------------------------------------------------------------------------

LOAD_BEFORE=$(uptime)
TOTAL=$(now)
log "run $RUN; $LOAD_BEFORE"
make_host_images

# A: 1 + 2
if wanted a; then
up_cluster "$A" --workers 2
seed "$A"

log "$A: worker2 stopped"
docker stop -t 10 "$A-worker2" >/dev/null; t=$(now)
s=$(seen "$t" "$A" "worker2: stopped"); r=$(repair "$A")
after "$A" manager "a worker stopped (1+2)" "$s" "$r"

log "$A: worker2 gone with its volume"
lose "$A-worker2"; t=$(now)
s=$(seen "$t" "$A" "worker2: gone"); r=$(repair "$A")
after "$A" manager "a worker gone with its volume (1+2)" "$s" "$r"

log "$A: worker2's network cut, then mended"
net="$A-net"
ip=$(docker inspect -f "{{(index .NetworkSettings.Networks \"$net\").IPAddress}}" "$A-worker2")
docker network disconnect "$net" "$A-worker2"; t=$(now)
s=$(seen "$t" "$A" "worker2: unreachable")
docker network connect --ip "$ip" "$net" "$A-worker2"
r=$(repair "$A")
after "$A" manager "a worker's network cut, then mended (1+2)" "$s" "$r"

log "$A: every node stopped, then started in reverse order"
for n in manager worker1 worker2; do docker stop -t 10 "$A-$n" >/dev/null; done; t=$(now)
s=$(seen "$t" "$A" "worker1: stopped")
for n in worker2 worker1 manager; do docker start "$A-$n" >/dev/null; done
r=$(repair "$A")
after "$A" manager "every node stopped, started in reverse order (1+2)" "$s" "$r"
lab_down "$A"
fi

# B: 3 + 1
if wanted b; then
up_cluster "$B" --managers 3 --workers 1
seed "$B"
leader=$(lab status --cluster "$B" -o json | jq -r '.nodes[] | select(.manager_status == "leader") | .name')
[ -n "$leader" ] || die "$B: no leader in lab status"
log "$B: the leader ($leader) gone with its volume"
lose "$B-$leader"; t=$(now)
s=$(seen "$t" "$B" "degraded"); r=$(repair "$B")
after "$B" worker1 "the leader gone with its volume (3+1)" "$s" "$r"

gone=()
for n in manager1 manager2 manager3; do [ "${#gone[@]}" -lt 2 ] && gone+=("$n"); done
log "$B: ${gone[*]} gone with their volumes (no quorum)"
for n in "${gone[@]}"; do lose "$B-$n"; done; t=$(now)
s=$(seen "$t" "$B" "lost its quorum")
r=$(repair "$B")
log "$B: plain lab up: $r (it must refuse)"
r=$(repair "$B" --force-new-cluster)
after "$B" worker1 "a majority of managers gone, then \`up --force-new-cluster\` (3+1)" "$s" "$r"
lab_down "$B"
fi

# C: 1 + 1
if wanted c; then
up_cluster "$C" --workers 1
seed "$C"
log "$C: lab images save, then the registry's node gone"
t=$(now)
lab images save "$TMP/backup" --cluster "$C" >"$LOGS/save.log" 2>&1 || { cat "$LOGS/save.log" >&2; die "lab images save"; }
SAVE_S=$(since "$t")
lose "$C-worker1"; t=$(now)
s=$(seen "$t" "$C" "is gone with its data")
t=$(now); r=$(repair "$C")
lab images load "$TMP/backup" --cluster "$C" >"$LOGS/load.log" 2>&1 || { cat "$LOGS/load.log" >&2; die "lab images load"; }
r="$r (up) + $(awk -v a="$t" -v b="$(now)" -v u="$r" 'BEGIN { printf "%.1f", b - a - u }') (load) = $(since "$t")"
after "$C" manager "the registry's node gone, after \`lab images save\` ($SAVE_S s); \`up\`, then \`images load\` (1+1)" "$s" "$r"

log "$C: the registry's node gone without a backup"
lose "$C-worker1"; t=$(now)
s=$(seen "$t" "$C" "is gone with its data"); r=$(repair "$C")
after "$C" manager "the registry's node gone, no backup (1+1)" "$s" "$r"
lab_down "$C"
fi

LOAD_AFTER=$(uptime)
echo
echo "| fault | \`status\` shows it (s) | \`lab up\` repairs it (s) | images listed / pulled (of 2) | images lost | service tasks running |"
echo "|---|---|---|---|---|---|"
printf '%s\n' "${ROWS[@]}"
echo
echo "$(date -u +%Y-%m-%d), $(nproc) cores, $(docker version -f '{{.Server.Version}}' 2>/dev/null | sed 's/^/Docker /'), lab $("$LAB" --version 2>/dev/null | awk '{print $NF}')"
echo "load before: $LOAD_BEFORE"
echo "load after:  $LOAD_AFTER"
log "whole run: $(since "$TOTAL") s (after the build)"
