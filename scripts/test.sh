#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit tests, torture fixtures, and the end-to-end
# tests against real peers (sipp, baresip, tcpdump on loopback). Installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cargo fmt --check
cargo clippy --all-targets -- -D warnings
cargo test --all-targets -- --test-threads=4
