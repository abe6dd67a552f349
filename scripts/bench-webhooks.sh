#!/usr/bin/env bash
# Webhooks and call signalling: CALLS calls (default 1000) at RATE a second (default 100) to
# the echo route, 100 ms each, once with no webhook and once with every event sent to a
# receiver that takes DELAY_MS (default 100) per request. Prints the call setup time (INVITE
# sent to 200 OK received, timed in microseconds by a small UAC in Python: sipp's response
# times tick in 4 ms here) at p50/p95/p99 for both runs, and how long the receiver took to get
# every event; fails when an event is missing or a call failed.
#   scripts/bench-webhooks.sh [CALLS [RATE [DELAY_MS]]]
set -euo pipefail
cd "$(dirname "$0")/.."
calls=${1:-1000} rate=${2:-100} delay_ms=${3:-100}
command -v python3 >/dev/null || { echo "python3 is needed"; exit 1; }
bin=${CALLGATE_BIN:-./target/release/callgate}
[ -n "${CALLGATE_BIN:-}" ] || cargo build --release --quiet --features testkit
dir=$(mktemp -d)
gw='' receiver=''
# KEEP=1 keeps the scratch directory (databases, logs, sipp's files) for a look afterwards.
trap 'kill $gw $receiver 2>/dev/null; [ -n "${KEEP:-}" ] && echo "kept $dir" || rm -rf "$dir"' EXIT

# The slow receiver: one thread per request, DELAY_MS each, every event id written down.
cat > "$dir/receiver.py" <<'PY'
import http.server, json, sys, threading, time
delay, out = float(sys.argv[1]) / 1000, open(sys.argv[2], "a", buffering=1)
lock = threading.Lock()
class Receiver(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        time.sleep(delay)
        event = json.loads(body)
        with lock:
            out.write(f"{event['id']} {event['type']}\n")
        self.send_response(204)
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer.daemon_threads = True
http.server.ThreadingHTTPServer.request_queue_size = 512
http.server.ThreadingHTTPServer(("127.0.0.1", 15980), Receiver).serve_forever()
PY

# The UAC: INVITEs at a steady rate from one socket, ACK on 200, BYE 100 ms later; prints
# "ok failed p50 p95 p99" (setup times in ms).
cat > "$dir/uac.py" <<'PY'
import select, socket, sys, time
calls, rate = int(sys.argv[1]), float(sys.argv[2])
gw, me = ("127.0.0.1", 15998), ("127.0.0.1", 15990)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(me)
sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 15994 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
def request(method, cid, cseq, to_tag="", body="", branch=None):
    extra = "Content-Type: application/sdp\r\n" if body else ""
    tag = f";tag={to_tag}" if to_tag else ""
    return (f"{method} sip:echo@127.0.0.1:15998 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:15990;branch=z9hG4bK{branch or cid}{method}\r\n"
            f"From: <sip:bench@127.0.0.1:15990>;tag=f{cid}\r\nTo: <sip:echo@127.0.0.1:15998>{tag}\r\nCall-ID: {cid}\r\n"
            f"CSeq: {cseq} {method}\r\nContact: <sip:bench@127.0.0.1:15990>\r\nMax-Forwards: 70\r\n{extra}Content-Length: {len(body)}\r\n\r\n{body}").encode()
def header(text, name):
    for line in text.split("\r\n"):
        n, _, v = line.partition(":")
        if n.strip().lower() == name:
            return v.strip()
    return ""
sent, tags, setup, byes = {}, {}, [], []
ok = failed = made = 0
start = next_invite = time.perf_counter()
deadline = start + calls / rate + 30
while ok + failed < calls and time.perf_counter() < deadline:
    now = time.perf_counter()
    while made < calls and now >= next_invite:
        cid = f"wh{made}x{int(start * 1000)}"
        sent[cid] = time.perf_counter()
        s.sendto(request("INVITE", cid, 1, body=sdp), gw)
        made += 1
        next_invite += 1 / rate
    while byes and byes[0][0] <= now:
        _, cid = byes.pop(0)
        s.sendto(request("BYE", cid, 2, tags[cid]), gw)
    ready, _, _ = select.select([s], [], [], 0.001)
    while ready:
        data = s.recv(65535)
        got = time.perf_counter()
        text = data.decode(errors="replace")
        ready, _, _ = select.select([s], [], [], 0)
        if not text.startswith("SIP/2.0 "):
            continue
        code, cid, cseq = int(text.split()[1]), header(text, "call-id"), header(text, "cseq")
        if cseq.endswith("INVITE") and code >= 200 and cid not in tags:
            to_tag = header(text, "to").partition("tag=")[2].split(";")[0]
            tags[cid] = to_tag
            s.sendto(request("ACK", cid, 1, to_tag, branch=f"{cid}ack"), gw)
            if code == 200:
                setup.append((got - sent[cid]) * 1000)
                byes.append((got + 0.1, cid))
            else:
                failed += 1
        elif cseq.endswith("BYE") and code == 200:
            ok += 1
setup.sort()
pick = lambda q: setup[min(len(setup) - 1, int(len(setup) * q))] if setup else 0
failed += calls - ok - failed
print(ok, failed, f"{pick(0.5):.2f}", f"{pick(0.95):.2f}", f"{pick(0.99):.2f}")
PY

. scripts/echo-gateway.toml.sh
config() {
  echo_gateway_config "$dir" "$dir/$1.db"
  if [ "$1" = webhooks ]; then
    printf '[[webhook]]\nurl = "http://127.0.0.1:15980/events"\nevents = ["*"]\nsecret = "bench-secret-0123456789"\n'
  fi
}

pending() {
  curl -s -H 'Authorization: Bearer admin-token' \
    '127.0.0.1:15997/v1/webhooks/deliveries?status=pending,failed&limit=1000' |
    python3 -c 'import json,sys; print(len(json.load(sys.stdin)["deliveries"]))'
}

# One run: the gateway on this config, sipp's calls, the setup times.
run() {
  local name=$1
  config "$name" > "$dir/$name.toml"
  CALLGATE_LOG=warn "$bin" serve --config "$dir/$name.toml" > "$dir/$name.log" 2>&1 &
  gw=$!
  for _ in $(seq 1 50); do
    curl -s -o /dev/null 127.0.0.1:15997/healthz && break
    kill -0 $gw 2>/dev/null || { echo "the gateway did not start:"; cat "$dir/$name.log"; exit 1; }
    sleep 0.2
  done
  started=$(date +%s.%N)
  read -r ok failed p50 p95 p99 < <(python3 "$dir/uac.py" "$calls" "$rate")
  printf '  %-22s %5d calls ok, %d failed; setup p50 %s ms, p95 %s ms, p99 %s ms\n' \
    "$name" "$ok" "$failed" "$p50" "$p95" "$p99"
  [ "$failed" -eq 0 ] || { echo "calls failed in the $name run"; exit 1; }
  if [ "$name" = webhooks ]; then
    local want=$((calls * 4))
    for _ in $(seq 1 120); do
      [ "$(sort -u "$dir/events" | wc -l)" -ge "$want" ] && [ "$(pending)" -eq 0 ] && break
      sleep 0.5
    done
    local got distinct
    got=$(wc -l < "$dir/events")
    distinct=$(cut -d' ' -f1 "$dir/events" | sort -u | wc -l)
    printf '  receiver                 %d events (%d distinct ids, %d wanted) %.1f s after the first call, %s pending\n' \
      "$got" "$distinct" "$want" "$(awk -v a="$(date +%s.%N)" -v b="$started" 'BEGIN {print a - b}')" "$(pending)"
    [ "$distinct" -ge "$want" ] || { echo "events are missing"; exit 1; }
  fi
  kill $gw; wait $gw 2>/dev/null || true
  sleep 1
}

: > "$dir/events"
python3 "$dir/receiver.py" "$delay_ms" "$dir/events" &
receiver=$!
echo "callgate webhooks: $calls calls at $rate/s to the echo route (100 ms each), receiver $delay_ms ms a request"
run none
run webhooks
