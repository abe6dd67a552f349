#!/usr/bin/env bash
# SIP call rate and overload shedding: starts the release gateway on loopback (its own ports
# and a scratch directory) and runs sipp's built-in UAC to the echo route at each rate given
# (calls a second, 10 s each), printing what completed, what was shed with 503, sipp's
# retransmissions and the gateway's CPU time. sipp runs on the same machine and takes its
# share of the cores.
#   scripts/bench-sip-rate.sh 1000 3000 5000
# CALLGATE_BIN=path runs another build of the gateway (a baseline) on the same config.
set -euo pipefail
cd "$(dirname "$0")/.."
rates=("${@:-1000 3000 5000}")
command -v sipp >/dev/null || { echo "sipp is needed (scripts/setup.sh)"; exit 1; }
bin=${CALLGATE_BIN:-./target/release/callgate}
[ -n "${CALLGATE_BIN:-}" ] || cargo build --release --quiet
dir=$(mktemp -d)
trap 'kill $gw 2>/dev/null; rm -rf "$dir"' EXIT
cat > "$dir/callgate.toml" <<TOML
admin_token_sha256 = "10a4c7c9fc5206d6f36dc6944a81bb6f4a3cb0e25014ae3b12e6c3e52712292a"
[sip]
listen = "127.0.0.1:15998"
[http]
listen = "127.0.0.1:15997"
[webrtc]
listen = "127.0.0.1:15996"
[rtp]
bind = "127.0.0.1"
port_min = 40000
port_max = 41999
[media]
hold_audio = "$PWD/config/hold.wav"
[recording]
directory = "$dir/recordings"
[store]
database = "$dir/callgate.db"
[[route]]
user = "echo"
action = "echo"
[[trunk]]
name = "local"
inbound_from = ["127.0.0.1/32"]
TOML
CALLGATE_LOG=warn "$bin" serve --config "$dir/callgate.toml" > "$dir/gateway.log" 2>&1 &
gw=$!
sleep 1
ticks() { awk '{print $14 + $15}' "/proc/$gw/stat"; }
shed() { curl -s 127.0.0.1:15997/metrics | awk '/^callgate_sip_calls_shed_total/ {print $2} END {print 0}' | head -1; }
for rate in ${rates[*]}; do
  before=$(ticks); shed_before=$(shed)
  sipp 127.0.0.1:15998 -sn uac -s echo -i 127.0.0.1 -p 25800 -r "$rate" -m $((rate * 10)) \
    -l 5000 -timeout 70s -recv_timeout 10000 -trace_stat -stf "$dir/stats.csv" -nostdin \
    > /dev/null 2>&1 || true
  cpu=$(( $(ticks) - before )); shed_now=$(( $(shed) - shed_before ))
  python3 - "$dir/stats.csv" "$rate" "$cpu" "$shed_now" <<'PY'
import csv, sys
rows = list(csv.reader(open(sys.argv[1]), delimiter=';'))
head, last = rows[0], rows[-1]
get = lambda c: int(last[head.index(c)])
rate, cpu, shed = int(sys.argv[2]), int(sys.argv[3]) / 100, int(sys.argv[4])
total = rate * 10
ok, failed, retrans = get("SuccessfulCall(C)"), get("FailedCall(C)"), get("Retransmissions(C)")
admitted = total - get("FailedUnexpectedMessage(C)")
print(f"{rate:>6} calls/s offered: {ok} of {total} completed ({ok / 10:.0f}/s), "
      f"{shed} shed with 503 ({100 * shed / total:.1f} %), admitted completed "
      f"{100 * ok / max(admitted, 1):.1f} %, retransmissions {retrans} "
      f"({100 * retrans / (3 * total):.2f} % of messages), gateway CPU {cpu:.1f} s "
      f"({1000 * cpu / max(ok, 1):.2f} ms a completed call)")
PY
  rm -f "$dir/stats.csv"
  sleep 40  # answered transactions age out (Timer J is 32 s)
done
