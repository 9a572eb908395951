#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, lints, unit tests, sans-IO simulations and the
# integration tests (real daemons; interop tests in network namespaces when run as root).
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
