#!/usr/bin/env bash
# SIP call rate: starts the release gateway on loopback (its own ports and a scratch
# directory) and runs sipp's built-in UAC to the echo route (calls of 100 ms), 10 s per rate.
#   scripts/bench-sip.sh                 rising rates (500 a second more each time) until a
#                                        call fails or retransmissions reach 1 % of messages;
#                                        prints the highest clean rate and CPU per call
#   scripts/bench-sip.sh 1000 3000 5000  exactly these rates (overload: what is shed with 503)
# The gateway runs on core 0 and sipp on core 1 (taskset) when the machine has two or more,
# so "calls/s" means on one core. CALLGATE_BIN=path runs another build of the gateway (a
# baseline) on the same config.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v sipp >/dev/null || { echo "sipp is needed (scripts/setup.sh)"; exit 1; }
bin=${CALLGATE_BIN:-./target/release/callgate}
[ -n "${CALLGATE_BIN:-}" ] || cargo build --release --quiet --features testkit
gw_core=() sipp_core=()
if [ "$(nproc)" -ge 2 ]; then gw_core=(taskset -c 0); sipp_core=(taskset -c 1); fi
dir=$(mktemp -d)
trap 'kill $gw 2>/dev/null; rm -rf "$dir"' EXIT
. scripts/echo-gateway.toml.sh
echo_gateway_config "$dir" "$dir/callgate.db" > "$dir/callgate.toml"
CALLGATE_LOG=warn "${gw_core[@]}" "$bin" serve --config "$dir/callgate.toml" > "$dir/gateway.log" 2>&1 &
gw=$!
# Up when its HTTP side answers (a gateway still shutting down may hold the ports a moment).
for _ in $(seq 1 50); do
  curl -s -o /dev/null 127.0.0.1:15997/metrics && break
  kill -0 $gw 2>/dev/null || { echo "the gateway did not start:"; cat "$dir/gateway.log"; exit 1; }
  sleep 0.2
done
ticks() { awk '{print $14 + $15}' "/proc/$gw/stat"; }
metric() { curl -s 127.0.0.1:15997/metrics | awk -v m="$1" '$1 == m {s += $2} END {print s + 0}'; }
# Answered transactions linger 32 s (Timer J); a run starts when the last one's are gone.
settle() {
  for _ in $(seq 1 45); do
    [ "$(metric 'callgate_sip_transactions{kind="server"}')" -lt 100 ] && return
    sleep 1
  done
}
# One rate: prints a line and sets clean=1 when no call failed and retransmissions < 1 %.
run_rate() {
  local rate=$1 before shed_before cpu shed_now
  settle
  before=$(ticks); shed_before=$(metric callgate_sip_calls_shed_total)
  "${sipp_core[@]}" sipp 127.0.0.1:15998 -sn uac -s echo -i 127.0.0.1 -p 25800 -r "$rate" \
    -m $((rate * 10)) -l 5000 -timeout 70s -recv_timeout 10000 -trace_stat \
    -stf "$dir/stats.csv" -nostdin > /dev/null 2>&1 || true
  cpu=$(( $(ticks) - before )); shed_now=$(( $(metric callgate_sip_calls_shed_total) - shed_before ))
  line=$(python3 - "$dir/stats.csv" "$rate" "$cpu" "$shed_now" <<'PY'
import csv, sys
rows = list(csv.reader(open(sys.argv[1]), delimiter=';'))
head, last = rows[0], rows[-1]
get = lambda c: int(last[head.index(c)])
rate, cpu, shed = int(sys.argv[2]), int(sys.argv[3]) / 100, int(sys.argv[4])
total = rate * 10
ok, failed, retrans = get("SuccessfulCall(C)"), get("FailedCall(C)"), get("Retransmissions(C)")
admitted = total - get("FailedUnexpectedMessage(C)")
share = 100 * retrans / (3 * total)
clean = int(ok == total and share < 1)
print(f"{clean} {rate:>6} calls/s offered: {ok} of {total} completed ({ok / 10:.0f}/s), "
      f"{shed} shed with 503 ({100 * shed / total:.1f} %), admitted completed "
      f"{100 * ok / max(admitted, 1):.1f} %, retransmissions {retrans} "
      f"({share:.2f} % of messages), gateway CPU {cpu:.1f} s "
      f"({1000 * cpu / max(ok, 1):.2f} ms a completed call)")
PY
)
  clean=${line%% *}
  echo "${line#* }"
  rm -f "$dir/stats.csv"
}
if [ $# -gt 0 ]; then
  for rate in "$@"; do run_rate "$rate"; done
  exit 0
fi
best="" best_line=""
for rate in $(seq 500 500 10000); do
  run_rate "$rate"
  [ "$clean" = 1 ] || break
  best=$rate best_line=$line
done
if [ -n "$best" ]; then
  echo "highest clean rate on one core: $best calls/s (${best_line##*gateway CPU })"
else
  echo "no clean rate: even 500 calls/s failed calls or retransmitted"
fi
