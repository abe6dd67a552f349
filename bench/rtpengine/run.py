#!/usr/bin/env python3
"""Interleaved CPU benchmark: callgate bench vs rtpengine 10.5 (user space) on loopback.

Each round runs, one after another:
  cg-transcoded   callgate bench --calls N --seconds S --downlink opus   (Opus both ways)
  cg-adaptive     callgate bench --calls N --seconds S   (adaptive downlink: PCMU to the
                  browsers on this clean path, their Opus decoded)
  cg-passthrough  callgate bench --calls N --seconds S --passthrough
  cg-adaptive-loss5  ... --loss 5: the browsers lose 5 % of what reaches them, so the
                  adaptive downlink sends Opus with in-band FEC
  (each with --separate-load: the simulated trunks and browsers run in a child process, so
  callgate's process is charged whole, as rtpengine's is)
  for each rtpengine instance (1 worker thread; default threads):
    i    side A RTP/AVP PCMU  <->  side B RTP/AVP PCMU            (pure relay)
    ii   side A RTP/AVP PCMU  <->  side B RTP/SAVP PCMU, SDES      (relay + SRTP)
         (AES_CM_128_HMAC_SHA1_80; ii-gcm: the same with AEAD_AES_256_GCM, the profile
         two str0m peers negotiate over DTLS)
    iii  side A RTP/AVP PCMU  <->  side B RTP/AVP Opus            (transcoding)
    iv   side A RTP/AVP PCMU  <->  side B RTP/SAVP Opus, SDES      (transcoding + SRTP)
rtpengine cases: calls set up over the ng protocol (bencode/UDP), media from ./loadgen
(one C process, one thread), CPU charged = utime+stime of the rtpengine process over the
measured window (after the warm-up), from /proc/PID/stat.

Results: one JSON line per case into --out (results.jsonl), a summary table on stdout.
"""
import argparse
import base64
import json
import os
import tempfile
import random
import re
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
# Built by scripts/bench-vs-rtpengine.sh (gcc, libsrtp2, libopus).
LOADGEN = os.environ.get("LOADGEN", os.path.join(HERE, "loadgen"))


# ---------------------------------------------------------------- bencode / ng protocol
def benc(x):
    if isinstance(x, bool):
        x = int(x)
    if isinstance(x, int):
        return b"i%de" % x
    if isinstance(x, str):
        x = x.encode()
    if isinstance(x, bytes):
        return b"%d:%s" % (len(x), x)
    if isinstance(x, (list, tuple)):
        return b"l" + b"".join(benc(i) for i in x) + b"e"
    if isinstance(x, dict):
        return b"d" + b"".join(benc(k) + benc(v) for k, v in x.items()) + b"e"
    raise TypeError(type(x))


def bdec(b, i=0):
    c = b[i:i + 1]
    if c == b"i":
        j = b.index(b"e", i)
        return int(b[i + 1:j]), j + 1
    if c == b"l":
        i += 1
        out = []
        while b[i:i + 1] != b"e":
            v, i = bdec(b, i)
            out.append(v)
        return out, i + 1
    if c == b"d":
        i += 1
        out = {}
        while b[i:i + 1] != b"e":
            k, i = bdec(b, i)
            v, i = bdec(b, i)
            out[k.decode()] = v
        return out, i + 1
    j = b.index(b":", i)
    n = int(b[i:j])
    return b[j + 1:j + 1 + n], j + 1 + n


class Ng:
    def __init__(self, port):
        self.addr = ("127.0.0.1", port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.settimeout(5)

    def __call__(self, command, **args):
        cookie = secrets.token_hex(6).encode()
        msg = {"command": command}
        msg.update(args)
        self.sock.sendto(cookie + b" " + benc(msg), self.addr)
        while True:
            data, _ = self.sock.recvfrom(65535)
            if data.startswith(cookie + b" "):
                break
        reply, _ = bdec(data, len(cookie) + 1)
        if reply.get("result") != b"ok":
            raise RuntimeError(f"ng {command}: {reply}")
        return reply


# ---------------------------------------------------------------- SDP helpers
def sdp(port, proto, pts, extra=()):
    lines = [
        "v=0",
        f"o=- {random.randint(1, 1 << 30)} 1 IN IP4 127.0.0.1",
        "s=-",
        "c=IN IP4 127.0.0.1",
        "t=0 0",
        f"m=audio {port} {proto} {' '.join(str(p) for p in pts)}",
        *extra,
        "a=sendrecv",
    ]
    return "\r\n".join(lines) + "\r\n"


def media_port(s):
    m = re.search(r"^m=audio (\d+) (\S+) (.*)$", s, re.M)
    return int(m.group(1)), m.group(2), m.group(3).split()


def b64d(s):
    return base64.b64decode(s + "=" * (-len(s) % 4))


KEYLEN = {"AES_CM_128_HMAC_SHA1_80": 30, "AEAD_AES_128_GCM": 28, "AEAD_AES_256_GCM": 44}


# ---------------------------------------------------------------- rtpengine cases
A_BASE, B_BASE = 14000, 16000  # loadgen ports: A at 14000+2i (+1 RTCP), B at 16000+2i


def setup_calls(ng, tag, n, opus, srtp, suite):
    """Offer from side A (PCMU RTP/AVP), answer from side B; returns the loadgen table."""
    table, opus_pt = [], None
    for i in range(n):
        cid, ftag, ttag = f"{tag}-{i}", f"a{i}", f"b{i}"
        a_port, b_port = A_BASE + 2 * i, B_BASE + 2 * i
        offer = dict(ICE="remove", DTLS="off")
        offer["call-id"], offer["from-tag"] = cid, ftag
        offer["sdp"] = sdp(a_port, "RTP/AVP", [0], ["a=rtpmap:0 PCMU/8000", "a=ptime:20"])
        if srtp:
            offer["transport-protocol"] = "RTP/SAVP"
        if opus:
            offer["codec"] = {"transcode": ["opus"], "mask": ["PCMU"]}
        r = ng("offer", **offer)
        to_b = r["sdp"].decode()
        b_peer, proto_b, pts_b = media_port(to_b)
        extra = []
        if opus:
            m = re.search(r"^a=rtpmap:(\d+) opus/48000", to_b, re.M | re.I)
            if not m:
                raise RuntimeError("no opus in rtpengine's offer:\n" + to_b)
            opus_pt = int(m.group(1))
            pts = [opus_pt]
            extra += [f"a=rtpmap:{opus_pt} opus/48000/2", f"a=fmtp:{opus_pt} minptime=10;useinbandfec=1"]
        else:
            pts = [0]
            extra += ["a=rtpmap:0 PCMU/8000"]
        extra.append("a=ptime:20")
        keys = ""
        if srtp:
            m = re.search(rf"^a=crypto:(\d+) {suite} inline:([A-Za-z0-9+/=]+)", to_b, re.M)
            if not m:
                raise RuntimeError(f"no {suite} in rtpengine's offer:\n" + to_b)
            rx_key = b64d(m.group(2))
            tx_key = os.urandom(KEYLEN[suite])
            extra.append(f"a=crypto:{m.group(1)} {suite} inline:{base64.b64encode(tx_key).decode()}")
            keys = f" {tx_key.hex()} {rx_key.hex()}"
        answer = dict(ICE="remove")
        answer["call-id"], answer["from-tag"], answer["to-tag"] = cid, ftag, ttag
        answer["sdp"] = sdp(b_port, "RTP/SAVP" if srtp else "RTP/AVP", pts, extra)
        r = ng("answer", **answer)
        to_a = r["sdp"].decode()
        a_peer, proto_a, pts_a = media_port(to_a)
        if i == 0:
            print(f"    [{tag}] to B: {proto_b} {pts_b}; to A: {proto_a} {pts_a}", file=sys.stderr)
        table.append(f"{a_port} {a_peer} {b_port} {b_peer}{keys}")
    return table, opus_pt


def delete_calls(ng, tag, n):
    for i in range(n):
        try:
            ng("delete", **{"call-id": f"{tag}-{i}", "from-tag": f"a{i}"})
        except Exception as e:  # noqa: BLE001 - report and go on
            print(f"    delete {tag}-{i}: {e}", file=sys.stderr)


# case -> (side B sends Opus, SDES suite or None); None = --suite
RTPE_CASES = {
    "i": (False, False),
    "ii": (False, None),
    "ii-gcm": (False, "AEAD_AES_256_GCM"),
    "iii": (True, False),
    "iv": (True, None),
}


def run_rtpengine_case(inst, case, n, warmup, seconds, suite, rnd):
    opus, case_suite = RTPE_CASES[case]
    srtp = case_suite is not False
    if case_suite:
        suite = case_suite
    tag = f"{inst['name']}-{case}-r{rnd}-{secrets.token_hex(3)}"
    ng = Ng(inst["ng_port"])
    t = time.time()
    table, opus_pt = setup_calls(ng, tag, n, opus, srtp, suite)
    setup_s = time.time() - t
    cmd = [LOADGEN, "--pid", str(inst["pid"]), "--warmup", str(warmup),
           "--seconds", str(seconds)]
    if opus:
        cmd += ["--opus", str(opus_pt)]
    if srtp:
        cmd += ["--srtp", suite]
    p = subprocess.run(cmd, input="\n".join(table) + "\n", capture_output=True, text=True,
                       timeout=warmup + seconds + 60)
    delete_calls(ng, tag, n)
    if p.returncode != 0:
        raise RuntimeError(f"loadgen failed: {p.stderr}")
    res = json.loads(p.stdout)
    res["setup_s"] = round(setup_s, 3)
    res["suite"] = suite if srtp else None
    res["delivery_pct"] = round(50 * (res["delivery_a_to_b"] + res["delivery_b_to_a"]), 2)
    return res


# ---------------------------------------------------------------- callgate bench
CG_CASES = {
    "cg-transcoded": ["--downlink", "opus"],
    "cg-adaptive": ["--downlink", "adaptive"],
    "cg-passthrough": ["--passthrough"],
    "cg-adaptive-loss5": ["--downlink", "adaptive", "--loss", "5"],
}


def run_callgate(binary, case, n, seconds, threads):
    cmd = [binary, "bench", "--calls", str(n), "--seconds", str(seconds), "--threads", str(threads),
           "--separate-load"]
    cmd += CG_CASES[case]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 300)
    out = p.stdout
    if p.returncode != 0:
        raise RuntimeError(f"callgate bench failed ({p.returncode}): {p.stderr}\n{out}")
    g = lambda rx: re.search(rx, out, re.M)  # noqa: E731
    connected, calls = map(int, g(r"connected peers\s+(\d+)/(\d+)").groups())
    m = g(r"gateway CPU\s+([\d.]+) s over ([\d.]+) s \(([\d.]+) s of it in the kernel\)")
    cpu, measured, sys_s = float(m.group(1)), float(m.group(2)), float(m.group(3))
    per = float(g(r"CPU per call-second\s+([\d.]+) us").group(1))
    m = g(r"audio frames\s+(\d+) to browsers, (\d+) to trunks")
    to_b, to_t = int(m.group(1)), int(m.group(2))
    delays = {}
    for way, key in (("to browsers", "delay_to_browsers_ms"), ("to trunks", "delay_to_trunks_ms")):
        m = g(rf"delay {way}\s+p50 ([\d.]+) ms, p95 ([\d.]+) ms, p99 ([\d.]+) ms")
        if m:
            delays[key] = [float(x) for x in m.groups()]
    m = g(r"memory .*\((\d+) KiB per call\)")
    memory = int(m.group(1)) if m else None
    expected = connected * 50 * measured
    return {
        "calls": calls, "connected": connected, "measured_s": measured, "gateway_cpu_s": cpu,
        "gateway_sys_s": sys_s, "us_per_call_second": per,
        "delivery_to_browsers": round(to_b / expected, 4) if expected else 0,
        "delivery_to_trunks": round(to_t / expected, 4) if expected else 0,
        "delivery_pct": round(50 * (to_b + to_t) / expected, 2) if expected else 0,
        "kib_per_call": memory,
        **delays,
        "raw": out,
    }


# ---------------------------------------------------------------- main
def start_rtpengine(section, logdir):
    log = open(os.path.join(logdir, f"{section}.log"), "ab")
    pidfile = os.path.join(logdir, f"{section}.pid")
    p = subprocess.Popen(
        ["rtpengine", "--config-file", os.path.join(HERE, "rtpengine.conf"),
         "--config-section", section, "--pidfile", pidfile],
        stdout=log, stderr=log, start_new_session=True)
    port = int(re.search(rf"\[{section}\][^\[]*listen-ng = [\d.]+:(\d+)",
                         open(os.path.join(HERE, "rtpengine.conf")).read()).group(1))
    for _ in range(50):
        time.sleep(0.2)
        try:
            Ng(port)("ping")
            break
        except Exception:  # noqa: BLE001 - not up yet
            if p.poll() is not None:
                raise RuntimeError(f"rtpengine {section} exited: {p.returncode}")
    threads = sorted(open(f"/proc/{p.pid}/task/{t}/comm").read().strip()
                     for t in os.listdir(f"/proc/{p.pid}/task"))
    print(f"started rtpengine [{section}] pid {p.pid}, threads: {threads}", file=sys.stderr)
    return {"name": section, "pid": p.pid, "proc": p, "ng_port": port, "threads": threads}


def wait_quiet(path, poll, limit):
    t0 = time.time()
    while not os.path.exists(path):
        if time.time() - t0 > limit:
            return False
        time.sleep(poll)
    return True


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--callgate", default="target/release/callgate")
    ap.add_argument("--calls", type=int, default=100)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3, help="loadgen warm-up (callgate's is fixed at 3 s)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--suite", default="AES_CM_128_HMAC_SHA1_80")
    ap.add_argument("--cases", default="cg-transcoded,cg-adaptive,cg-passthrough,cg-adaptive-loss5,i,ii,ii-gcm,iii,iv")
    ap.add_argument("--instances", default="rtpe1,rtpedef")
    ap.add_argument("--cg-threads", type=int, default=1)
    ap.add_argument("--wait-quiet", default=None, help="file to wait for before timing")
    ap.add_argument("--quiet-poll", type=int, default=30)
    ap.add_argument("--quiet-limit", type=int, default=6000)
    ap.add_argument("--out", default=os.path.join(HERE, "results.jsonl"))
    ap.add_argument("--logdir", default=os.path.join(tempfile.gettempdir(), "perf-rtpengine"))
    args = ap.parse_args()
    os.makedirs(args.logdir, exist_ok=True)

    if args.wait_quiet:
        print(f"waiting for {args.wait_quiet} ...", file=sys.stderr)
        if not wait_quiet(args.wait_quiet, args.quiet_poll, args.quiet_limit):
            print("quiet file never appeared; giving up", file=sys.stderr)
            return 1
        print(f"{args.wait_quiet} exists at {time.strftime('%H:%M:%S')}", file=sys.stderr)

    cases = args.cases.split(",")
    instances = []
    try:
        if any(c in RTPE_CASES for c in cases):
            for sec in args.instances.split(","):
                instances.append(start_rtpengine(sec, args.logdir))
        out = open(args.out, "a")
        results = []
        for rnd in range(1, args.rounds + 1):
            load = open("/proc/loadavg").read().split()[:3]
            print(f"== round {rnd} (loadavg {' '.join(load)}) {time.strftime('%H:%M:%S')}", file=sys.stderr)
            for case in cases:
                runs = []
                if case.startswith("cg-"):
                    runs.append(("callgate", case))
                else:
                    runs += [(inst["name"], case) for inst in instances]
                for who, c in runs:
                    try:
                        if who == "callgate":
                            r = run_callgate(args.callgate, c, args.calls, args.seconds,
                                             args.cg_threads)
                        else:
                            inst = next(x for x in instances if x["name"] == who)
                            r = run_rtpengine_case(inst, c, args.calls, args.warmup, args.seconds,
                                                   args.suite, rnd)
                    except Exception as e:  # noqa: BLE001 - record the failure, keep going
                        r = {"error": str(e)}
                    r.update(round=rnd, who=who, case=c, time=time.strftime("%H:%M:%S"),
                             loadavg=open("/proc/loadavg").read().split()[0])
                    results.append(r)
                    out.write(json.dumps(r) + "\n")
                    out.flush()
                    extra = ""
                    if "loadgen_core_pct" in r:
                        extra = f" loadgen {r['loadgen_core_pct']}% core, late ticks {r['late_ticks']}"
                    if "delay_to_browsers_ms" in r:
                        extra = (f" {r.get('kib_per_call')} KiB/call, delay p50/p95/p99 ms"
                                 f" to browsers {r['delay_to_browsers_ms']}"
                                 f" to trunks {r.get('delay_to_trunks_ms')}")
                    print(f"  {who:9s} {c:15s} {r.get('us_per_call_second', 'ERR'):>8} us/call-s "
                          f"delivery {r.get('delivery_pct', '-')}%{extra}"
                          + (f" ERROR {r['error'][:300]}" if "error" in r else ""), file=sys.stderr)
        # summary
        print("\nmedians (us CPU per call-second, delivery %):")
        keys = sorted({(r["who"], r["case"]) for r in results}, key=lambda k: (k[0] != "callgate", k))
        for k in keys:
            vals = [r["us_per_call_second"] for r in results if (r["who"], r["case"]) == k and "error" not in r]
            dl = [r["delivery_pct"] for r in results if (r["who"], r["case"]) == k and "error" not in r]
            if vals:
                print(f"  {k[0]:9s} {k[1]:15s} median {statistics.median(vals):8.1f}  runs {vals}  "
                      f"delivery min {min(dl)}%")
    finally:
        for inst in instances:
            inst["proc"].send_signal(signal.SIGTERM)
            try:
                inst["proc"].wait(10)
            except subprocess.TimeoutExpired:
                inst["proc"].kill()
            print(f"stopped rtpengine [{inst['name']}] pid {inst['pid']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
