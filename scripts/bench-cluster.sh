#!/usr/bin/env bash
# The cluster's figures, in one run on this machine (scripts/cluster.sh's cluster, release
# build): call setup time (INVITE to 200, scripts/setup-time.py, one call after another)
# p50/p95 over 200 calls through Kamailio against 200 straight to a node, then the calls per
# second the pair of nodes sustains through Kamailio (rising rates, 10 s each, until a call
# fails or retransmissions reach 1 % of messages). Calls are to the echo route, which Kamailio's dispatcher spreads
# over both nodes; the ACK and BYE follow Record-Route (tests/sipp/uac_routed.xml).
#   scripts/bench-cluster.sh            setup times, then rates 200, 400, 600, ... through
#                                       Kamailio, and the same straight to node a alone
#   scripts/bench-cluster.sh 300 600    setup times, then exactly these rates
# Needs root, sipp, kamailio and postgresql (scripts/setup.sh). Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v sipp >/dev/null || { echo "sipp is needed (scripts/setup.sh)"; exit 1; }
[ -x target/release/callgate ] || cargo build --release --quiet
export CALLGATE_BIN=target/release/callgate CLUSTER_DIR=${CLUSTER_DIR:-target/bench-cluster}
dir=$(mktemp -d)
trap 'scripts/cluster.sh down >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT
scripts/cluster.sh down >/dev/null 2>&1 || true
# Quieter nodes: a log line per call would be part of what is measured.
CALLGATE_LOG=warn scripts/cluster.sh up >/dev/null
scripts/cluster.sh status

# sipp's scenario on `target` (ip:port), `calls` at `rate` a second lasting `hold` ms; its
# statistics and per-call setup times in $dir/$name*.
run() {
  local name=$1 target=$2 calls=$3 rate=$4 hold=$5 port=$6
  (cd "$dir" && timeout 300 sipp -sf "$OLDPWD/tests/sipp/uac_routed.xml" -s echo "$target" \
    -i 127.0.0.1 -p "$port" -m "$calls" -r "$rate" -l $((rate * 5 + 50)) -d "$hold" \
    -timeout 120s -recv_timeout 10000 -trace_stat -stf "$name.csv" -nostdin >/dev/null 2>&1) ||
    true
}
stat() { # the last line's value of column $2 in sipp's statistics $1
  python3 - "$1" "$2" <<'PY'
import sys
try:
    rows = [l.rstrip("\n").split(";") for l in open(sys.argv[1]) if l.strip()]
    head, last = rows[0], rows[-1]
    print(last[head.index(sys.argv[2])] if sys.argv[2] in head else 0)
except (OSError, IndexError):
    print(0)  # sipp wrote no statistics
PY
}
rates=("$@")
for target in "through-kamailio 127.0.0.2:5060" "straight-to-node 127.0.0.3:5060"; do
  read -r name address <<<"$target"
  echo "setup $name: $(python3 scripts/setup-time.py "$address" echo 200 25960)"
  sleep 1
done

[ ${#rates[@]} -gt 0 ] || rates=(200 400 600 800 1000 1200 1600 2000)
# Rising rates to `target` until one is not clean (all of them when the rates were given);
# prints each and the highest clean one.
sweep() {
  local label=$1 target=$2 best=0
  for rate in "${rates[@]}"; do
    local calls=$((rate * 10))
    run "$label$rate" "$target" "$calls" "$rate" 100 25970
    local ok failed retrans share
    ok=$(stat "$dir/$label$rate.csv" 'SuccessfulCall(C)')
    failed=$(stat "$dir/$label$rate.csv" 'FailedCall(C)')
    retrans=$(stat "$dir/$label$rate.csv" 'Retransmissions(C)')
    share=$(python3 -c "print(f'{100 * $retrans / (3 * $calls):.2f}')")
    echo "rate $rate calls/s $label: $ok of $calls completed, $failed failed, retransmissions $share % of messages"
    sleep 35 # answered transactions linger (Timer J) before the next rate
    if [ "$failed" -eq 0 ] && [ "$ok" -eq "$calls" ] &&
      python3 -c "import sys; sys.exit(0 if $retrans < 0.01 * 3 * $calls else 1)"; then
      best=$rate
    elif [ "$given" -eq 0 ]; then
      break
    fi
  done
  echo "highest clean rate $label: $best calls/s"
}
given=$#
sweep through-kamailio 127.0.0.2:5060
# The same sweep to one node alone, for what Kamailio and the second node change.
sweep straight-to-node-a 127.0.0.3:5060
