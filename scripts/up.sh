#!/usr/bin/env bash
# Brings up the default cluster (1 manager + 2 workers, docker driver) on any machine with a
# Docker engine, including one that cannot pull images: builds lab, builds the offline node
# and registry images from Debian packages when they are missing, then runs `lab up` with
# them. Extra arguments go to `lab up` (e.g. --workers 4 --cluster demo).
set -euo pipefail
cd "$(dirname "$0")/.."
# Not --quiet: a first build takes minutes, and cargo's progress shows it is working.
cargo build --release -p lab-cli
bash scripts/offline-images.sh
exec target/release/lab up \
  --node-image "${LAB_OFFLINE_NODE_IMAGE:-lab-offline/node:bookworm}" \
  --registry-image "${LAB_OFFLINE_REGISTRY_IMAGE:-lab-offline/registry:2}" "$@"
