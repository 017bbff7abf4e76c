#!/usr/bin/env bash
# Bring-up benchmark for the qemu driver: `lab up --driver qemu` against booting the same VMs
# one at a time by hand.
#
#   bench/qemu-up.sh
#
# 1. Baseline ("one at a time, by hand"): scripts/qemu-boot-check.sh boots one VM from lab's
#    image the way the driver does (overlay, direct kernel, user net + vde NIC, fw_cfg keys)
#    and prints when its dockerd first answered; run once per node, one after the other. The
#    baseline is the sum of those times: what a user booting N VMs by hand waits before every
#    engine answers. (The script's own checks after that moment are not counted.)
# 2. `lab up --driver qemu --workers W` (1 + W VMs at once), timed from its start to every
#    node's "wait for the Docker engine" step being done (engines ready), and to its end
#    (the registry answering {} on every node, swarm and image copies included); then
#    `lab down` (not timed).
#
# Prints both, and ratios against the baseline measured in the same run.
#
# Environment:
#   BENCH_WORKERS=2          workers (VMs = 1 + BENCH_WORKERS)
#   BENCH_ACCEL=auto         auto|kvm|tcg, for both parts
#   BENCH_MEMORY=1024        MB per VM, for both parts
#   LAB_BIN=path/to/lab      use this binary instead of `cargo build --release -p lab-cli`
#
# lab runs with XDG_STATE_HOME in a temporary directory; an EXIT trap removes the cluster.
set -euo pipefail
cd "$(dirname "$0")/.."

WORKERS=${BENCH_WORKERS:-2}
ACCEL=${BENCH_ACCEL:-auto}
MEM=${BENCH_MEMORY:-1024}
NODES=$((WORKERS + 1))

if [ -z "${LAB_BIN:-}" ]; then
  cargo build --release -p lab-cli >&2
  LAB_BIN=$PWD/target/release/lab
fi
bash scripts/qemu-image.sh >&2
bash scripts/offline-images.sh >&2

state=$(mktemp -d)
cluster=bench-q$$
cleanup() {
  XDG_STATE_HOME=$state "$LAB_BIN" down --cluster "$cluster" >/dev/null 2>&1 || true
  rm -rf "$state"
}
trap cleanup EXIT

now() { date +%s.%N; }
secs() { python3 -c "print(f'{$1:.1f}')"; }
ratio() { python3 -c "print(f'{$1:.2f}')"; }

# --- 1. by hand, one at a time ----------------------------------------------------------------
total=0
for i in $(seq 1 "$NODES"); do
  echo "bench: baseline VM $i of $NODES..." >&2
  out=$(LAB_QEMU_ACCEL=$ACCEL LAB_QEMU_MEMORY=$MEM LAB_QEMU_SECOND_BOOT=0 bash scripts/qemu-boot-check.sh 2>&1) ||
    { echo "$out" >&2; echo "bench: the baseline boot failed" >&2; exit 1; }
  t=$(echo "$out" | sed -n 's/.*ready after \([0-9.]*\) s.*/\1/p' | head -1)
  [ -n "$t" ] || { echo "$out" >&2; echo "bench: no ready time in the boot check's output" >&2; exit 1; }
  echo "bench:   dockerd ready after $t s" >&2
  total=$(python3 -c "print($total + $t)")
done

# --- 2. lab up --------------------------------------------------------------------------------
echo "bench: lab up --driver qemu, 1 manager + $WORKERS workers..." >&2
t0=$(now)
# -v: the driver's info lines say which accelerator each VM booted with.
XDG_STATE_HOME=$state "$LAB_BIN" -v up --driver qemu --cluster "$cluster" --workers "$WORKERS" \
  --accel "$ACCEL" --driver-opt "manager.memory=$MEM" --driver-opt "worker.memory=$MEM" \
  --registry-image lab-offline/registry:2 2>&1 |
  while IFS= read -r line; do printf '%s %s\n' "$(now)" "$line"; done >"$state/up.log"
t_end=$(tail -1 "$state/up.log" | cut -d' ' -f1)
grep -q "answering at localhost:5000" "$state/up.log" || { cat "$state/up.log" >&2; echo "bench: lab up failed" >&2; exit 1; }
t_engines=$(grep "ok  wait for the Docker engine on" "$state/up.log" | tail -1 | cut -d' ' -f1)
engines=$(python3 -c "print($t_engines - $t0)")
registry=$(python3 -c "print($t_end - $t0)")
accel_used=$(grep -o "booting [^ ]* ([A-Z]*)" "$state/up.log" | head -1 || true)

printf '\n%-55s %8s %8s\n' "qemu bring-up, $NODES VMs ($ACCEL${accel_used:+; $accel_used})" "seconds" "ratio"
printf '%-55s %8s %8s\n' "baseline: one VM at a time by hand, every dockerd ready" "$(secs "$total")" "1.00"
printf '%-55s %8s %8s\n' "lab up --driver qemu: every engine ready" "$(secs "$engines")" "$(ratio "$engines / $total")"
printf '%-55s %8s %8s\n' "lab up --driver qemu: registry {} on every node" "$(secs "$registry")" "$(ratio "$registry / $total")"
