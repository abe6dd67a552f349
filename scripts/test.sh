#!/usr/bin/env bash
# The whole test suite: formatting, lints, the fuzz targets' build, unit tests, torture
# fixtures, and the end-to-end tests against real peers (sipp, baresip, sipvicious, tcpdump
# on loopback). Installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cargo fmt --all --check
# An operator's build (no testkit), then everything the tests and benches build.
cargo clippy --workspace -- -D warnings
cargo clippy --workspace --all-targets --features testkit -- -D warnings
# The fuzz targets (their own crate) must keep compiling against the library.
cargo check --manifest-path fuzz/Cargo.toml --bins --target-dir target/fuzz-check
# The dialer page's reducers, protocol and module table (node's own test runner, no packages).
node --test tests/web/*.test.mjs
cargo test --workspace --all-targets -- --test-threads=4
