#!/usr/bin/env bash
# Installs the system packages callgate's build and tests need, when they are missing:
#   cmake (builds the bundled libopus), sip-tester (sipp), baresip-core, sox, tcpdump.
# Safe to run repeatedly; does nothing when everything is there. Needs root (or sudo) only
# when something is missing.
set -euo pipefail
need=()
command -v cmake   >/dev/null 2>&1 || need+=(cmake)
command -v sipp    >/dev/null 2>&1 || need+=(sip-tester)
command -v baresip >/dev/null 2>&1 || need+=(baresip-core)
command -v sox     >/dev/null 2>&1 || need+=(sox)
command -v tcpdump >/dev/null 2>&1 || need+=(tcpdump)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
