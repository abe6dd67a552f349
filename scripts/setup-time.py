#!/usr/bin/env python3
"""Call setup time, INVITE to 200 OK, measured by one UAC on loopback with a microsecond
clock: `calls` calls one after another to `target` (ip:port) for `user`, each ACKed and
hung up along the 200's Record-Route and Contact. Prints the p50 and p95 in ms and how many
calls completed. Used by scripts/bench-cluster.sh; sipp's own timing counts whole ms."""
import random
import socket
import sys
import time

target_ip, target_port = sys.argv[1].split(":")
target = (target_ip, int(target_port))
user, calls, local_port = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
local_ip = "127.0.0.1"
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind((local_ip, local_port))
sock.settimeout(5)
sdp = (
    "v=0\r\no=bench 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    f"m=audio {local_port + 2} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)


def request(method, uri, call_id, cseq, tag, to_tag="", route="", body=""):
    branch = "z9hG4bK%016x" % random.getrandbits(64)
    return (
        f"{method} {uri} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {local_ip}:{local_port};branch={branch};rport\r\n"
        + (f"Route: {route}\r\n" if route else "")
        + f"From: <sip:+15551230001@{local_ip}>;tag={tag}\r\n"
        f"To: <sip:{user}@{target_ip}>{';tag=' + to_tag if to_tag else ''}\r\n"
        f"Call-ID: {call_id}\r\nCSeq: {cseq} {method}\r\n"
        f"Contact: <sip:bench@{local_ip}:{local_port}>\r\nMax-Forwards: 70\r\n"
        + ("Content-Type: application/sdp\r\n" if body else "")
        + f"Content-Length: {len(body)}\r\n\r\n{body}"
    ).encode()


def header(text, name):
    for line in text.split("\r\n"):
        if line.lower().startswith(name.lower() + ":"):
            return line.split(":", 1)[1].strip()
    return ""


times, failed = [], 0
for n in range(calls):
    call_id, tag = "%016x@bench" % random.getrandbits(64), "t%d" % n
    uri = f"sip:{user}@{target_ip}:{target_port}"
    started = time.perf_counter()
    sock.sendto(request("INVITE", uri, call_id, 1, tag, body=sdp), target)
    answer = None
    try:
        while True:
            text = sock.recv(65536).decode(errors="replace")
            if header(text, "Call-ID") != call_id or not text.startswith("SIP/2.0 "):
                continue
            status = int(text.split()[1])
            if status >= 200:
                answer = (status, text)
                break
    except socket.timeout:
        pass
    if not answer or answer[0] != 200:
        failed += 1
        continue
    times.append((time.perf_counter() - started) * 1000)
    text = answer[1]
    to_tag = header(text, "To").split("tag=")[-1]
    route = header(text, "Record-Route")
    contact = header(text, "Contact").strip("<>").split(">")[0]
    next_uri = contact if route else uri
    sock.sendto(request("ACK", next_uri, call_id, 1, tag, to_tag, route), target)
    sock.sendto(request("BYE", next_uri, call_id, 2, tag, to_tag, route), target)
    try:  # the BYE's 200 (or whatever comes) before the next call
        while True:
            text = sock.recv(65536).decode(errors="replace")
            if header(text, "Call-ID") == call_id and "BYE" in header(text, "CSeq"):
                break
    except socket.timeout:
        failed += 1
times.sort()
if times:
    pick = lambda q: times[min(len(times) - 1, int(q * len(times)))]
    print(f"{len(times)} of {calls} calls, p50 {pick(0.5):.2f} ms, p95 {pick(0.95):.2f} ms"
          + (f", {failed} failed" if failed else ""))
else:
    print(f"no call completed of {calls}")
