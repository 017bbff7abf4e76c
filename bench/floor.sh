#!/usr/bin/env bash
# The node floor: N node containers (the node image, with the flags lab's docker driver gives
# them, each on its own volume, on one network) started at once, timed until every dockerd
# answers `docker info`. No bring-up on this engine can beat it; bench/bring-up.sh divides
# lab's time by it, measured in the same run.
#
#   bench/floor.sh N            # prints "node floor, N nodes   S s   M MiB per node"
#   bench/floor.sh --raw N      # prints "S M" (seconds, MiB per node)
#
# The network and the volumes are made before the clock starts; the memory is what `docker
# stats --no-stream` reports for the N containers once every dockerd answers, summed, over N.
#
# Environment:
#   BENCH_NODE_IMAGE=lab-offline/node:bookworm
#   BENCH_PRIVILEGED=auto        auto|always|never, as in bench/bring-up.sh
#   BENCH_WAIT=240               seconds before the wait for a dockerd fails
#   BENCH_LOGS=DIR               keep each container's `docker run` output in DIR
#
# Everything is named bench-floor-<pid>-... with the label bench.run=bench-floor-<pid>, and
# removed on exit, including on SIGINT/SIGTERM.
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
RAW=0; N=""
for arg in "$@"; do
  case "$arg" in
    --raw) RAW=1 ;;
    -h|--help) usage; exit 0 ;;
    *) [ -z "$N" ] && [[ "$arg" =~ ^[1-9][0-9]*$ ]] || { echo "floor: bad argument '$arg': give a node count N (try --help)" >&2; exit 2; }
       N=$arg ;;
  esac
done
[ -n "$N" ] || { echo "floor: give a node count N (try --help)" >&2; exit 2; }
NODE_IMAGE=${BENCH_NODE_IMAGE:-lab-offline/node:bookworm}
PRIVILEGED=${BENCH_PRIVILEGED:-auto}
case "$PRIVILEGED" in auto|always|never) ;; *) echo "floor: BENCH_PRIVILEGED must be auto, always or never" >&2; exit 2 ;; esac
WAIT=${BENCH_WAIT:-240}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

RUN="bench-floor-$$"
TMP=$(mktemp -d "${TMPDIR:-/tmp}/lab-floor.XXXXXX")
LOGS=${BENCH_LOGS:-$TMP/logs}
mkdir -p "$LOGS"
NAME=floor
REGISTRY_IMAGE=""
source "$ROOT/bench/common.sh"
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
tidy() { remove_by_label "bench.run=$RUN"; }
cleanup_on_exit

docker image inspect "$NODE_IMAGE" >/dev/null 2>&1 || die "no image $NODE_IMAGE (scripts/offline-images.sh builds it)"
node_flags "$PRIVILEGED" "$RUN-probe" "bench.run=$RUN"
docker network create --label "bench.run=$RUN" "$RUN-net" >/dev/null
for ((i = 1; i <= N; i++)); do docker volume create --label "bench.run=$RUN" "$RUN-$i-docker" >/dev/null; done

t=$(now)
pids=()
for ((i = 1; i <= N; i++)); do
  docker run -d --name "$RUN-$i" --label "bench.run=$RUN" --hostname "node$i" --network "$RUN-net" \
    -v "$RUN-$i-docker:/var/lib/docker" "${NODE_FLAGS[@]}" \
    "$NODE_IMAGE" dockerd --host=unix:///var/run/docker.sock >"$LOGS/run-$i.log" 2>&1 &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p" || die "docker run of a node failed: $(cat "$LOGS"/run-*.log | tail -n 5)"; done
pending=$(seq 1 "$N")
end=$((SECONDS + WAIT))
while [ -n "$pending" ]; do
  left=""
  for i in $pending; do
    docker exec "$RUN-$i" docker info >/dev/null 2>&1 || left="$left $i"
  done
  pending=$left
  [ -n "$pending" ] || break
  [ "$SECONDS" -lt "$end" ] || die "dockerd never answered in:$(for i in $pending; do printf ' %s' "$RUN-$i"; done) within ${WAIT}s"
  sleep 0.1
done
S=$(since "$t")
M=$(mem_per_node "bench.run=$RUN" "$N")
if [ "$RAW" = 1 ]; then echo "$S $M"; else printf 'node floor, %s nodes   %s s   %s MiB per node\n' "$N" "$S" "$M"; fi
