#!/usr/bin/env bash
# Installs what callgate's build and tests need, when it is missing:
#   cmake (builds the bundled libopus and aws-lc), libsrtp2-dev (the reference SRTP the unit tests check against), sip-tester (sipp), baresip-core, sox,
#   tcpdump, sipvicious (the scanners the security tests attack with), chromium (the dialer
#   page's end-to-end tests), nodejs/npm and playwright-core
#   (drives Chromium; never downloads a browser of its own), coturn (the TURN relay the
#   relay-only browser test starts on loopback), kamailio (the cluster's SIP edge, started by
#   the cluster test on loopback), postgresql (the cluster's shared call log, run by the tests
#   as the postgres user in scratch directories).
# Safe to run repeatedly; does nothing when everything is there. Needs root (or sudo) only
# when something is missing.
set -euo pipefail
need=()
command -v cmake   >/dev/null 2>&1 || need+=(cmake)
[ -f /usr/include/srtp2/srtp.h ] || need+=(libsrtp2-dev)
command -v sipp    >/dev/null 2>&1 || need+=(sip-tester)
command -v baresip >/dev/null 2>&1 || need+=(baresip-core)
command -v sox     >/dev/null 2>&1 || need+=(sox)
command -v tcpdump >/dev/null 2>&1 || need+=(tcpdump)
command -v svmap   >/dev/null 2>&1 || need+=(sipvicious)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v curl    >/dev/null 2>&1 || need+=(curl)
command -v node    >/dev/null 2>&1 || need+=(nodejs)
command -v npm     >/dev/null 2>&1 || need+=(npm)
command -v turnserver >/dev/null 2>&1 || need+=(coturn)
command -v kamailio >/dev/null 2>&1 || need+=(kamailio)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
browser_tests="$(dirname "$0")/../tests/browser"
if [ ! -d "$browser_tests/node_modules/playwright-core" ]; then
  echo "installing playwright-core for the browser tests"
  (cd "$browser_tests" && npm ci --no-audit --no-fund --loglevel=error)
fi
