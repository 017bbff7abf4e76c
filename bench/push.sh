#!/usr/bin/env bash
# Push benchmark: `lab push` against its peers, case by case, on one docker-driver cluster of
# 1 manager + BENCH_WORKERS workers, in one run.
#
#   bench/push.sh
#
# Cases (each peer pushes into repositories of its own, so no peer finds another's blobs):
#   first    an image of about 100 MB: the 24 MB offline registry image plus one layer of
#            BENCH_MB megabytes, none of it in the registry;
#   again    the same image once more (everything is in the registry);
#   rebuilt  that image plus one small layer (`docker run` + `docker commit` of a 1 kB
#            change): the one-layer rebuild;
#   shared   two images on a new base of BENCH_MB megabytes, each with a small layer of its
#            own, pushed in one call (two for the peers that take one image at a time).
# Peers:
#   by hand  `docker save IMAGE... | docker exec -i <manager> docker load`, then on the manager
#            `docker tag` and `docker push localhost:5000/...`, timed end to end;
#   docker push
#            the same run's `docker push` alone (on the manager, after its `docker load`);
#   skopeo   `skopeo copy --dest-tls-verify=false docker-daemon:IMAGE docker://ADDR/...`, ADDR
#            the registry's address `lab registry` prints (its node's address on the cluster
#            network, which this machine reaches on the docker driver);
#   lab      `lab push IMAGE... --as ...`;
#   engine   the path issue 20 asks to weigh, prototyped: `lab registry forward` relays a
#            loopback port of this machine to the registry the way `lab push` reaches it, and
#            this machine's own engine pushes there (`docker tag IMAGE 127.0.0.1:PORT/...`;
#            `docker push`; `docker rmi` of that tag). Docker counts 127.0.0.0/8 as an insecure
#            registry. The engine gzips each layer and remembers, by registry host:port, which
#            layers it pushed; it knows nothing of what lab pushed (uncompressed: other
#            digests), so its `rebuilt` case here follows its own `first`, its best case.
# Also timed: `docker save IMAGE > /dev/null`, the yardstick of the `again` goal.
#
# Goals, each printed with its ratio and whether it holds:
#   lab's first push <= skopeo's first push;
#   lab's again <= 0.2 x `docker save` of the same image;
#   lab's rebuilt <= 0.3 x lab's first push.
#
# Environment:
#   BENCH_WORKERS=4              workers
#   BENCH_MB=80                  megabytes in the image's own layer and in the shared base
#   BENCH_DATA=random            what those layers hold: `random` (/dev/urandom: gzip gains
#                                nothing) or `text` (random bytes written out in hex by `od`:
#                                gzip -1 makes it 45 % of its size)
#   BENCH_PEERS="by-hand skopeo lab engine"
#                                the peers to time (docker push comes with by-hand)
#   BENCH_NODE_IMAGE=lab-offline/node:bookworm
#   BENCH_REGISTRY_IMAGE=lab-offline/registry:2
#   LAB_BIN=path/to/lab          use this binary instead of `cargo build --release -p lab-cli`
#   BENCH_LOGS=DIR               keep every step's output in DIR
#
# Everything it makes is named bench-<pid>-...; lab runs with XDG_STATE_HOME in a temporary
# directory and from that directory, so no lab.toml and no LAB_* variable of the caller's
# applies. (skopeo keeps a blob cache across runs, /var/lib/containers/cache for root: an entry
# of an earlier run's registry costs it a request here, as each cluster's registry is new.) An
# EXIT trap removes the cluster, the forward and the images. Progress goes to stderr; the
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
DATA=${BENCH_DATA:-random}
PEERS=${BENCH_PEERS:-by-hand skopeo lab engine}
NODE_IMAGE=${BENCH_NODE_IMAGE:-lab-offline/node:bookworm}
REGISTRY_IMAGE=${BENCH_REGISTRY_IMAGE:-lab-offline/registry:2}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

is_count() { [[ "$1" =~ ^[1-9][0-9]*$ ]]; }
is_count "$WORKERS" || { echo "push: BENCH_WORKERS must be a positive integer, not '$WORKERS'" >&2; exit 2; }
is_count "$MB" || { echo "push: BENCH_MB must be a positive integer, not '$MB'" >&2; exit 2; }
case "$DATA" in random|text) ;; *) echo "push: BENCH_DATA must be random or text, not '$DATA'" >&2; exit 2 ;; esac
for p in $PEERS; do
  case "$p" in by-hand|skopeo|lab|engine) ;; *) echo "push: BENCH_PEERS: unknown peer '$p' (by-hand skopeo lab engine)" >&2; exit 2 ;; esac
done
peer() { [[ " $PEERS " == *" $1 "* ]]; }

RUN="bench-$$"
CLUSTER="$RUN-push"
IMAGE="$RUN-image:1"
REBUILT="$RUN-image:2"
BASE="$RUN-base:1"
SHARED_A="$RUN-shared-a:1"
SHARED_B="$RUN-shared-b:1"
TMP=$(mktemp -d "${TMPDIR:-/tmp}/lab-bench.XXXXXX")
LOGS=${BENCH_LOGS:-$TMP/logs}
mkdir -p "$LOGS" "$TMP/state" "$TMP/cwd"
LAB=""
MADE_CLUSTER=0
FORWARD=""
ENGINE_AT=""

NAME=push
source "$ROOT/bench/common.sh"
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }

tidy() {
  if [ -n "$FORWARD" ]; then kill -TERM "$FORWARD" 2>/dev/null; wait "$FORWARD" 2>/dev/null; fi
  if [ -n "$ENGINE_AT" ]; then
    docker images --format '{{.Repository}}:{{.Tag}}' | grep "^$ENGINE_AT/" | xargs -r docker rmi >/dev/null 2>&1
  fi
  if [ "$MADE_CLUSTER" = 1 ]; then lab_down "$CLUSTER"; else remove_by_label "lab.cluster=$CLUSTER"; fi
  remove_by_label "bench.run=$RUN"
  docker rmi -f "$SHARED_A" "$SHARED_B" "$BASE" "$REBUILT" "$IMAGE" >/dev/null 2>&1
}
cleanup_on_exit

# --- prerequisites -------------------------------------------------------------------------

prerequisites
if peer skopeo; then command -v skopeo >/dev/null || die "skopeo is not installed (apt-get install skopeo), or leave it out of BENCH_PEERS"; fi

# --- 0. the images and the cluster (not timed) ---------------------------------------------

# layer FROM TAG SCRIPT: commits what SCRIPT does in a container of FROM as TAG.
layer() {
  docker run --name "$RUN-src" --label "bench.run=$RUN" --entrypoint sh "$1" -c "$3" >>"$LOGS/image.log" 2>&1 \
    || { cat "$LOGS/image.log" >&2; die "making a layer of $2"; }
  docker commit "$RUN-src" "$2" >>"$LOGS/image.log" 2>&1 || { cat "$LOGS/image.log" >&2; die "docker commit $2"; }
  docker rm -fv "$RUN-src" >/dev/null
}
# fill FILE: BENCH_MB megabytes of BENCH_DATA into FILE, in the container.
fill() {
  case "$DATA" in
    random) echo "head -c $((MB * 1000 * 1000)) /dev/urandom > $1" ;;
    text) echo "head -c $((MB * 1000 * 1000 / 3)) /dev/urandom | od -An -tx1 -v > $1" ;;
  esac
}

log "run $RUN: images of $REGISTRY_IMAGE + $MB MB ($DATA); cluster of 1 manager + $WORKERS workers"
layer "$REGISTRY_IMAGE" "$IMAGE" "$(fill /data.bin)"
layer "$IMAGE" "$REBUILT" "head -c 1000 /dev/urandom > /changed"
layer "$REGISTRY_IMAGE" "$BASE" "$(fill /base.bin)"
layer "$BASE" "$SHARED_A" "echo a > /marker"
layer "$BASE" "$SHARED_B" "echo b > /marker"
mb() { docker image inspect -f '{{.Size}}' "$1" | awk '{ printf "%.0f", $1 / 1e6 }'; }
SIZE_MB=$(mb "$IMAGE")
log "image $IMAGE: $SIZE_MB MB; $REBUILT: +1 kB; $SHARED_A and $SHARED_B: $(mb "$SHARED_A") MB each, all but a few bytes shared"

MADE_CLUSTER=1
t=$(now)
lab up --driver docker --cluster "$CLUSTER" --workers "$WORKERS" \
  --node-image "$NODE_IMAGE" --registry-image "$REGISTRY_IMAGE" >"$LOGS/up.out" 2>"$LOGS/up.err" \
  || { cat "$LOGS/up.err" >&2; die "lab up"; }
log "cluster up ($(since "$t") s, not counted)"
MANAGER="$CLUSTER-manager"
lab registry --cluster "$CLUSTER" --output json >"$LOGS/registry.json" 2>"$LOGS/registry.err" \
  || { cat "$LOGS/registry.err" >&2; die "lab registry"; }
ADDR=$(sed -n 's/.*"address": *"\([^"]*\)".*/\1/p' "$LOGS/registry.json")
[ -n "$ADDR" ] || die "lab registry printed no address: $(cat "$LOGS/registry.json")"
LOAD_BEFORE=$(uptime | sed 's/.*load average: //')

# The results: T[case/peer] in seconds; the peers' rows print in this order.
declare -A T
CASES="first again rebuilt shared"
case_images() { # case -> the local images it pushes
  case "$1" in first|again) echo "$IMAGE" ;; rebuilt) echo "$REBUILT" ;; shared) echo "$SHARED_A $SHARED_B" ;; esac
}
# target CASE PEER IMAGE -> the repository:tag this peer pushes IMAGE of CASE to
target() {
  case "$1" in
    first|again) echo "bench/$2:1" ;;
    rebuilt) echo "bench/$2:2" ;;
    shared) if [ "$3" = "$SHARED_A" ]; then echo "bench/$2-a:1"; else echo "bench/$2-b:1"; fi ;;
  esac
}

# --- the peers -----------------------------------------------------------------------------

by_hand() { # case
  local c=$1 images t loaded i
  images=$(case_images "$c")
  t=$(now)
  # shellcheck disable=SC2086
  docker save $images | docker exec -i "$MANAGER" docker load >"$LOGS/by-hand-$c-load.log" 2>&1 \
    || { cat "$LOGS/by-hand-$c-load.log" >&2; die "docker load into the manager ($c)"; }
  loaded=$(now)
  for i in $images; do
    docker exec "$MANAGER" docker tag "$i" "localhost:5000/$(target "$c" by-hand "$i")" \
      && docker exec "$MANAGER" docker push "localhost:5000/$(target "$c" by-hand "$i")" >>"$LOGS/by-hand-$c-push.log" 2>&1 \
      || { cat "$LOGS/by-hand-$c-push.log" >&2; die "docker push from the manager ($c)"; }
  done
  T[$c/by-hand]=$(since "$t")
  T[$c/docker-push]=$(since "$loaded")
}

skopeo_copy() { # case
  local c=$1 t i
  t=$(now)
  for i in $(case_images "$c"); do
    skopeo copy --dest-tls-verify=false "docker-daemon:$i" "docker://$ADDR/$(target "$c" skopeo "$i")" >>"$LOGS/skopeo-$c.log" 2>&1 \
      || { cat "$LOGS/skopeo-$c.log" >&2; die "skopeo copy ($c)"; }
  done
  T[$c/skopeo]=$(since "$t")
}

lab_push() { # case
  local c=$1 t images args=() i
  images=$(case_images "$c")
  t=$(now)
  if [ "$c" = shared ]; then
    # One call; each image keeps its own name: the repositories are lab's own.
    # shellcheck disable=SC2086
    lab push --cluster "$CLUSTER" $images >"$LOGS/lab-$c.out" 2>"$LOGS/lab-$c.err" \
      || { cat "$LOGS/lab-$c.err" >&2; die "lab push ($c)"; }
  else
    lab push --cluster "$CLUSTER" "$images" --as "$(target "$c" lab "$images")" >"$LOGS/lab-$c.out" 2>"$LOGS/lab-$c.err" \
      || { cat "$LOGS/lab-$c.err" >&2; die "lab push ($c)"; }
  fi
  T[$c/lab]=$(since "$t")
  log "  lab, $c: $(tail -n 1 "$LOGS/lab-$c.err")"
}

# The loopback port this machine's engine pushes to, relayed by `lab registry forward`.
start_forward() {
  # In the background; the port it picked is the first line it prints.
  local unset_env=() v
  for v in $(compgen -e); do case "$v" in LAB_*) unset_env+=(-u "$v") ;; esac; done
  (cd "$TMP/cwd" && exec env "${unset_env[@]}" XDG_STATE_HOME="$TMP/state" "$LAB" registry forward --cluster "$CLUSTER" \
     --listen 127.0.0.1:0 >"$LOGS/forward.out" 2>"$LOGS/forward.err") &
  FORWARD=$!
  for v in $(seq 1 100); do
    ENGINE_AT=$(sed -n 's|^http://localhost:\([0-9]*\)$|127.0.0.1:\1|p' "$LOGS/forward.out")
    [ -n "$ENGINE_AT" ] && return
    kill -0 "$FORWARD" 2>/dev/null || { cat "$LOGS/forward.err" >&2; die "lab registry forward stopped"; }
    sleep 0.1
  done
  die "lab registry forward printed no URL within 10 s"
}

engine_push() { # case
  local c=$1 t i
  t=$(now)
  for i in $(case_images "$c"); do
    docker tag "$i" "$ENGINE_AT/$(target "$c" engine "$i")" \
      && docker push "$ENGINE_AT/$(target "$c" engine "$i")" >>"$LOGS/engine-$c.log" 2>&1 \
      && docker rmi "$ENGINE_AT/$(target "$c" engine "$i")" >/dev/null \
      || { cat "$LOGS/engine-$c.log" >&2; die "docker push through the forward ($c)"; }
  done
  T[$c/engine]=$(since "$t")
}

# --- the runs ------------------------------------------------------------------------------

peer engine && start_forward
t=$(now)
docker save "$IMAGE" >/dev/null || die "docker save $IMAGE"
SAVE=$(since "$t")
log "docker save $IMAGE > /dev/null: $SAVE s"
# Case by case; within a case the peers take turns in the order of BENCH_PEERS.
for c in $CASES; do
  for p in $PEERS; do
    case "$p" in
      by-hand) by_hand "$c" ;;
      skopeo) skopeo_copy "$c" ;;
      lab) lab_push "$c" ;;
      engine) engine_push "$c" ;;
    esac
    log "$c, $p: ${T[$c/$p]} s"
  done
done
LOAD_AFTER=$(uptime | sed 's/.*load average: //')

# --- the table -----------------------------------------------------------------------------

cell() { printf '%8s' "${T[$1]:-—}"; }
echo
echo "push, 1 manager + $WORKERS workers (docker driver), BENCH_DATA=$DATA: an image of $SIZE_MB MB; seconds"
echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores; load average (1, 5, 15 min) before: $LOAD_BEFORE; after: $LOAD_AFTER"
printf '  %-36s %8s %8s %8s %8s\n' "" first again rebuilt shared
ROWS=""
peer by-hand && ROWS="$ROWS by-hand docker-push"
for p in skopeo lab engine; do peer "$p" && ROWS="$ROWS $p"; done
for r in $ROWS; do
  case "$r" in
    by-hand) label="by hand: save | docker load; tag; push" ;;
    docker-push) label="  docker push alone (after the load)" ;;
    skopeo) label="skopeo copy docker-daemon: docker://" ;;
    lab) label="lab push" ;;
    engine) label="engine: docker push to lab's forward" ;;
  esac
  printf '  %-36s %s %s %s %s\n' "$label" "$(cell "first/$r")" "$(cell "again/$r")" "$(cell "rebuilt/$r")" "$(cell "shared/$r")"
done
printf '  %-36s %8s\n' "docker save IMAGE > /dev/null" "$SAVE"

# goal NAME VALUE LIMIT-FACTOR BASE BASE-NAME
goal() {
  local r holds
  if [ -z "$2" ] || [ -z "$4" ]; then printf '  %-58s not measured\n' "$1"; return; fi
  r=$(ratio "$2" "$4")
  holds=$(awk -v r="$r" -v f="$3" 'BEGIN { print (r <= f) ? "holds" : "does not hold" }')
  printf '  %-58s %5s / %5s = %s (goal <= %s): %s\n' "$1" "$2" "$4" "$r" "$3" "$holds"
}
echo "goals:"
goal "lab's first push <= skopeo's first" "${T[first/lab]:-}" 1 "${T[first/skopeo]:-}"
goal "lab's push again <= 0.2 x docker save of the image" "${T[again/lab]:-}" 0.2 "$SAVE"
goal "lab's one-layer rebuild <= 0.3 x lab's first push" "${T[rebuilt/lab]:-}" 0.3 "${T[first/lab]:-}"
if peer engine && peer lab; then
  echo "the engine path against lab push (ratio engine / lab; below 1, the engine path is faster):"
  for c in $CASES; do
    printf '  %-8s %s\n' "$c" "$(ratio "${T[$c/engine]}" "${T[$c/lab]}")"
  done
fi
