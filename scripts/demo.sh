#!/usr/bin/env bash
# The main job (root): installs the few packages it needs (iproute2, ping), builds vgw, and runs
# `vgw demo`: two sites, each with a LAN and a vgw gateway, in throwaway network namespaces; the tunnel
# comes up, the connection list and a ping across are shown, and everything is removed again.
# Extra arguments go to `vgw demo` (e.g. --keep).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
    echo "the demo creates network namespaces: run it as root (sudo bash scripts/demo.sh)" >&2
    exit 1
fi
bash scripts/install-deps.sh demo
cargo build --release --locked -p vgw
exec ./target/release/vgw demo "$@"
