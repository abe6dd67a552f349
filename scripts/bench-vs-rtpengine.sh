#!/bin/sh
# callgate and rtpengine 10.5 (Debian's rtpengine-daemon, user-space forwarding) relaying the
# same call load on loopback, interleaved in one run, with the ratios (bench/rtpengine/).
# Usage: scripts/bench-vs-rtpengine.sh [ROUNDS [CALLS [SECONDS]]]   (default 3 100 10);
# more run.py options in RUN_ARGS, e.g. RUN_ARGS="--instances rtpe1 --cases cg-adaptive,iii".
# Ports: rtpengine 22221-22222 (ng) and 23000-28999, the load generator 14000-17999: run it
# with nothing else (the test suite) on the machine.
set -eu
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
CALLS=${2:-100}
SECONDS_MEASURED=${3:-10}
missing=""
command -v rtpengine >/dev/null || missing="$missing rtpengine-daemon"
command -v gcc >/dev/null || missing="$missing gcc"
[ -e /usr/include/srtp2/srtp.h ] || missing="$missing libsrtp2-dev"
[ -e /usr/include/opus/opus.h ] || missing="$missing libopus-dev"
if [ -n "$missing" ]; then
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing
fi
if pgrep -x rtpengine >/dev/null; then
    echo "an rtpengine is already running (pgrep -a rtpengine); stop it first" >&2
    exit 1
fi
OUT=target/bench-rtpengine
mkdir -p "$OUT"
gcc -O2 -Wall -o "$OUT/loadgen" bench/rtpengine/loadgen.c -lsrtp2 -lopus -lm
cargo build --release --quiet --features testkit
RESULTS="$OUT/results-$(date -u +%Y%m%dT%H%M%SZ).jsonl"
LOADGEN="$OUT/loadgen" python3 bench/rtpengine/run.py --callgate target/release/callgate \
    --rounds "$ROUNDS" --calls "$CALLS" --seconds "$SECONDS_MEASURED" --out "$RESULTS" \
    --logdir "$OUT/logs" ${RUN_ARGS:-}
python3 bench/rtpengine/summarize.py "$RESULTS"
