#!/usr/bin/env bash
# Push benchmark: `lab push` of an image of about 100 MB into a 1 + 4 docker-driver cluster,
# against the way a user does it by hand today, in one run.
#
#   bench/push.sh
#
# 0. Not timed: builds the image offline on the local engine (the registry image plus one
#    layer of BENCH_MB megabytes from /dev/urandom, made with `docker run` + `docker commit`:
#    nothing is pulled) and brings up the cluster with `lab up`.
# 1. Baseline ("by hand"): `docker save IMAGE | docker exec -i <manager container> docker
#    load`, then, on the manager, `docker tag IMAGE localhost:5000/bench/by-hand:1` and
#    `docker push localhost:5000/bench/by-hand:1`. Timed end to end.
# 2. `lab push IMAGE --as bench/lab:1`, timed: the first push (every blob is sent).
# 3. The same `lab push` again, timed (every blob is in the registry already).
#
# The two pushes go to different repositories and neither can reuse the other's layers
# (docker push sends gzipped layers, lab push uncompressed ones: different digests; only the
# image's config, a few kB, is the same blob), so the order does not favour either. Prints the three times and the ratios first/by-hand and
# again/by-hand.
#
# Environment:
#   BENCH_WORKERS=4              workers
#   BENCH_MB=80                  megabytes of random bytes in the image's own layer (on the 24 MB
#                                offline registry image: about 100 MB in all)
#   BENCH_NODE_IMAGE=lab-offline/node:bookworm
#   BENCH_REGISTRY_IMAGE=lab-offline/registry:2
#   LAB_BIN=path/to/lab          use this binary instead of `cargo build --release -p lab-cli`
#   BENCH_LOGS=DIR               keep every step's output in DIR
#
# Everything it makes is named bench-<pid>-...; lab runs with XDG_STATE_HOME in a temporary
# directory and from that directory, so no lab.toml and no LAB_* variable of the caller's
# applies. An EXIT trap removes the cluster and the image. Progress goes to stderr; the
# result table to stdout.
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
for arg in "$@"; do
  case "$arg" in
    -h|--help) usage; exit 0 ;;
    *) echo "push: unknown argument $arg (try --help)" >&2; exit 2 ;;
  esac
done

WORKERS=${BENCH_WORKERS:-4}
MB=${BENCH_MB:-80}
NODE_IMAGE=${BENCH_NODE_IMAGE:-lab-offline/node:bookworm}
REGISTRY_IMAGE=${BENCH_REGISTRY_IMAGE:-lab-offline/registry:2}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

is_count() { [[ "$1" =~ ^[1-9][0-9]*$ ]]; }
is_count "$WORKERS" || { echo "push: BENCH_WORKERS must be a positive integer, not '$WORKERS'" >&2; exit 2; }
is_count "$MB" || { echo "push: BENCH_MB must be a positive integer, not '$MB'" >&2; exit 2; }

RUN="bench-$$"
CLUSTER="$RUN-push"
IMAGE="$RUN-image:1"
TMP=$(mktemp -d "${TMPDIR:-/tmp}/lab-bench.XXXXXX")
LOGS=${BENCH_LOGS:-$TMP/logs}
mkdir -p "$LOGS" "$TMP/state" "$TMP/cwd"
LAB=""
MADE_CLUSTER=0

NAME=push
source "$ROOT/bench/common.sh"
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }

tidy() {
  if [ "$MADE_CLUSTER" = 1 ]; then lab_down "$CLUSTER"; else remove_by_label "lab.cluster=$CLUSTER"; fi
  remove_by_label "bench.run=$RUN"
  docker rmi -f "$IMAGE" >/dev/null 2>&1
}
cleanup_on_exit

# --- prerequisites -------------------------------------------------------------------------

prerequisites

# --- 0. the image and the cluster (not timed) ----------------------------------------------

log "run $RUN: image of $REGISTRY_IMAGE + $MB MB of random bytes; cluster of 1 manager + $WORKERS workers"
docker run --name "$RUN-src" --label "bench.run=$RUN" --entrypoint sh "$REGISTRY_IMAGE" \
  -c "head -c $((MB * 1000 * 1000)) /dev/urandom > /random.bin" >"$LOGS/image.log" 2>&1 \
  || { cat "$LOGS/image.log" >&2; die "making the image's layer"; }
docker commit "$RUN-src" "$IMAGE" >>"$LOGS/image.log" 2>&1 || { cat "$LOGS/image.log" >&2; die "docker commit"; }
docker rm -fv "$RUN-src" >/dev/null
SIZE_MB=$(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{ printf "%.0f", $1 / 1e6 }')
log "image $IMAGE: $SIZE_MB MB"

MADE_CLUSTER=1
t=$(now)
lab up --driver docker --cluster "$CLUSTER" --workers "$WORKERS" \
  --node-image "$NODE_IMAGE" --registry-image "$REGISTRY_IMAGE" >"$LOGS/up.out" 2>"$LOGS/up.err" \
  || { cat "$LOGS/up.err" >&2; die "lab up"; }
log "cluster up ($(since "$t") s, not counted)"
MANAGER="$CLUSTER-manager"

# --- 1. by hand ----------------------------------------------------------------------------

log "by hand: docker save | docker exec -i $MANAGER docker load; docker tag; docker push"
t=$(now)
docker save "$IMAGE" | docker exec -i "$MANAGER" docker load >"$LOGS/by-hand-load.log" 2>&1 \
  || { cat "$LOGS/by-hand-load.log" >&2; die "docker load into the manager"; }
LOADED=$(now)
docker exec "$MANAGER" docker tag "$IMAGE" localhost:5000/bench/by-hand:1 \
  && docker exec "$MANAGER" docker push localhost:5000/bench/by-hand:1 >"$LOGS/by-hand-push.log" 2>&1 \
  || { cat "$LOGS/by-hand-push.log" >&2; die "docker push from the manager"; }
BY_HAND=$(since "$t")
LOAD_S=$(awk -v a="$t" -v b="$LOADED" 'BEGIN { printf "%.2f", b - a }')
log "by hand: $BY_HAND s (of which save | load $LOAD_S s)"

# --- 2, 3. lab push, twice -----------------------------------------------------------------

t=$(now)
lab push --cluster "$CLUSTER" "$IMAGE" --as bench/lab:1 >"$LOGS/push1.out" 2>"$LOGS/push1.err" \
  || { cat "$LOGS/push1.err" >&2; die "lab push (first)"; }
FIRST=$(since "$t")
log "lab push, first: $FIRST s ($(tail -n 1 "$LOGS/push1.err"))"

t=$(now)
lab push --cluster "$CLUSTER" "$IMAGE" --as bench/lab:1 >"$LOGS/push2.out" 2>"$LOGS/push2.err" \
  || { cat "$LOGS/push2.err" >&2; die "lab push (again)"; }
AGAIN=$(since "$t")
log "lab push, again: $AGAIN s ($(tail -n 1 "$LOGS/push2.err"))"

row() { printf '  %-58s %7s s%s\n' "$1" "$2" "${3:+   $3}"; }
echo
echo "push of a $SIZE_MB MB image, 1 manager + $WORKERS workers (docker driver)"
row "by hand: save | exec -i manager docker load; tag; push" "$BY_HAND" "ratio 1.00"
row "  of which save | docker load" "$LOAD_S"
row "lab push, first (every blob sent)" "$FIRST" "ratio $(ratio "$FIRST" "$BY_HAND")"
row "lab push, again (nothing to send)" "$AGAIN" "ratio $(ratio "$AGAIN" "$BY_HAND")"
