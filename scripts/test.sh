#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, lints, unit tests, sans-IO simulations, the
# control-plane integration tests and, as root, the demo and the interop tests in network namespaces
# (strongSwan, BIRD, FRR, tshark, promtool, Chromium). Prints one "N passed, N failed" summary per suite.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null; then
    echo "cargo is missing: install the Rust toolchain (1.95) first" >&2
    exit 1
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== cargo test"
cargo test --workspace --locked

if [ "$(id -u)" != 0 ]; then
    echo "== interop tests skipped: they need root (network namespaces, TUN)"
    exit 0
fi

echo "== test dependencies"
bash scripts/install-deps.sh

echo "== fuzzing: every target of crates/*/fuzz for 10 s (scripts/fuzz.sh 600 for a long run)"
bash scripts/fuzz.sh "${FUZZ_SECONDS:-10}"

export VGW="$PWD/target/debug/vgw"
echo "== vgw demo (vgw <-> vgw in namespaces)"
"$VGW" demo

echo "== interop: strongSwan"
# Two minutes of rekeying (at least 3 Child SA and 1 IKE SA rekeys) keep CI under 30 minutes.
REKEY_SECONDS=${REKEY_SECONDS:-120} bash tests/interop/strongswan.sh

echo "== interop: BGP with BIRD, FRR and vgw over the tunnels"
bash tests/interop/bgp.sh

echo "== interop: BFD with BIRD 2 and FRR bfdd (single hop, multihop, IPv4, IPv6)"
cargo build --locked -p vgw-control --example bfd_peer
bash tests/interop/bfd.sh

echo "== interop: redundant tunnels, BFD, active-active gateways and the failover drill"
bash tests/interop/failover.sh

echo "== interop: point-to-site road warriors (strongSwan with vgw pki certificates)"
bash tests/interop/p2s.sh

echo "== point-to-site scale: 200 IKEv2 clients at once"
bash bench/p2s_clients.sh

echo "== interop: operator evidence (metrics, logs, capture, doctor, status page)"
bash tests/interop/evidence.sh
