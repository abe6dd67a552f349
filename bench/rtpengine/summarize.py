#!/usr/bin/env python3
"""Tables from run.py's results.jsonl: per round, medians, and callgate/rtpengine ratios."""
import json
import statistics
import sys
from collections import defaultdict

path = sys.argv[1] if len(sys.argv) > 1 else "results.jsonl"
rows = [json.loads(l) for l in open(path) if l.strip()]
rows = [r for r in rows if r.get("calls") == (int(sys.argv[2]) if len(sys.argv) > 2 else r.get("calls"))]

LABEL = {
    ("callgate", "cg-transcoded"): "callgate transcoded (PCMU RTP <-> Opus DTLS-SRTP/ICE)",
    ("callgate", "cg-adaptive"): "callgate adaptive downlink, clean (PCMU RTP <-> PCMU down / Opus up, DTLS-SRTP/ICE)",
    ("callgate", "cg-passthrough"): "callgate passthrough (PCMU RTP <-> PCMU DTLS-SRTP/ICE)",
    ("callgate", "cg-adaptive-loss5"): "callgate adaptive downlink, 5 % loss toward the browsers (Opus+FEC down, Opus up)",
}
for inst, name in (("rtpe1", "rtpengine 1 thread"), ("rtpedef", "rtpengine default (4) threads")):
    LABEL[(inst, "i")] = f"{name} (i) PCMU RTP <-> PCMU RTP"
    LABEL[(inst, "ii")] = f"{name} (ii) PCMU RTP <-> PCMU SDES-SRTP AES_CM_128_HMAC_SHA1_80"
    LABEL[(inst, "ii-gcm")] = f"{name} (ii-gcm) PCMU RTP <-> PCMU SDES-SRTP AEAD_AES_256_GCM"
    LABEL[(inst, "iii")] = f"{name} (iii) PCMU RTP <-> Opus RTP"
    LABEL[(inst, "iv")] = f"{name} (iv) PCMU RTP <-> Opus SDES-SRTP AES_CM_128_HMAC_SHA1_80"
order = list(LABEL)

by = defaultdict(dict)
for r in rows:
    by[r["round"]][(r["who"], r["case"])] = r
rounds = sorted(by)

print(f"# {path}: {len(rounds)} rounds, N = {rows[0].get('calls') if rows else '?'}\n")
print("| case | " + " | ".join(f"round {n}" for n in rounds) + " | median |")
print("|---|" + "---|" * (len(rounds) + 1))
med = {}
for k in order:
    cells, vals = [], []
    for n in rounds:
        r = by[n].get(k)
        if not r:
            cells.append("")
        elif "error" in r:
            cells.append("error")
        else:
            cells.append(f"{r['us_per_call_second']:.0f} µs / {r['delivery_pct']:.1f} %")
            vals.append(r["us_per_call_second"])
    if not vals:
        continue
    med[k] = statistics.median(vals)
    dl = [by[n][k]["delivery_pct"] for n in rounds if k in by[n] and "error" not in by[n][k]]
    print(f"| {LABEL[k]} | " + " | ".join(cells) + f" | **{med[k]:.0f} µs** / {statistics.median(dl):.1f} % |")

print("\nCells: CPU µs per call-second / delivery % (packets received ÷ sent in the window, both directions).\n")

# side info
for k in order:
    rs = [by[n][k] for n in rounds if k in by[n] and "error" not in by[n][k]]
    if not rs:
        continue
    if k[0] == "callgate":
        ks = [r["gateway_sys_s"] / r["gateway_cpu_s"] * 100 for r in rs if r["gateway_cpu_s"]]
        print(f"- {LABEL[k]}: kernel share of CPU median {statistics.median(ks):.0f} %; "
              f"to browsers {statistics.median(r['delivery_to_browsers'] for r in rs)*100:.1f} %, "
              f"to trunks {statistics.median(r['delivery_to_trunks'] for r in rs)*100:.1f} %")
    else:
        ks = [r["relay_sys_s"] / r["relay_cpu_s"] * 100 for r in rs if r["relay_cpu_s"]]
        lg = [r["loadgen_core_pct"] for r in rs]
        ss = [r["us_per_call_second_schedstat"] for r in rs]
        thr = defaultdict(list)
        for r in rs:
            agg = defaultdict(float)
            for t in r["threads"]:
                agg[t["comm"]] += t["run_s"]
            for c, v in agg.items():
                thr[c].append(v / r["measured_s"] * 100)
        tdesc = ", ".join(f"{c} {statistics.median(v):.0f} %" for c, v in sorted(thr.items(), key=lambda x: -statistics.median(x[1])))
        extra = ""
        if rs[0].get("opus_to_b"):
            extra = f"; Opus to B: {rs[0]['opus_to_b']}"
        print(f"- {LABEL[k]}: kernel share {statistics.median(ks) if ks else 0:.0f} %; schedstat median "
              f"{statistics.median(ss):.0f} µs; threads (% of a core) {tdesc}; loadgen median "
              f"{statistics.median(lg):.1f} % of a core; A→B {statistics.median(r['delivery_a_to_b'] for r in rs)*100:.2f} %, "
              f"B→A {statistics.median(r['delivery_b_to_a'] for r in rs)*100:.2f} %; late ticks max "
              f"{max(r['late_ticks'] for r in rs)}{extra}")

print("\nRatios of medians (callgate ÷ rtpengine; < 1 means callgate uses less CPU):\n")
a, b = med.get(("callgate", "cg-adaptive-loss5")), med.get(("callgate", "cg-transcoded"))
if a and b:
    print(f"- cg-adaptive-loss5 ÷ cg-transcoded (clean, same run): {a:.0f} / {b:.0f} = **{a / b:.2f}**")
for inst in ("rtpe1", "rtpedef"):
    for cg, rc in (("cg-passthrough", "ii"), ("cg-passthrough", "ii-gcm"), ("cg-passthrough", "i"), ("cg-transcoded", "iii"), ("cg-transcoded", "iv"), ("cg-adaptive", "iii"), ("cg-adaptive", "iv")):
        a, b = med.get(("callgate", cg)), med.get((inst, rc))
        if a and b:
            print(f"- {cg} ÷ {inst} ({rc}): {a:.0f} / {b:.0f} = **{a / b:.2f}**")
# per-round ratios, for spread
print("\nPer-round ratios (same round, callgate ÷ rtpengine):\n")
for inst in ("rtpe1", "rtpedef"):
    for cg, rc in (("cg-passthrough", "ii"), ("cg-passthrough", "ii-gcm"), ("cg-transcoded", "iii"), ("cg-transcoded", "iv"), ("cg-adaptive", "iii"), ("cg-adaptive", "iv")):
        rr = []
        for n in rounds:
            a, b = by[n].get(("callgate", cg)), by[n].get((inst, rc))
            if a and b and "error" not in a and "error" not in b and b["us_per_call_second"]:
                rr.append(round(a["us_per_call_second"] / b["us_per_call_second"], 2))
        if rr:
            print(f"- {cg} ÷ {inst} ({rc}): {rr}")
