// The dialer's media settings (src/api/web/media.js): what the page's address sets, and the
// answer's candidates with #ice=tcp. The peer connection itself runs in the browser tests.
import { test } from "node:test";
import assert from "node:assert/strict";

import { readSettings, audioConstraints, rtcConfig, answerSdp } from "../../src/api/web/media.js";

test("the page's #settings", () => {
  assert.deepEqual(readSettings(""), { processing: true, ice: null, token: null });
  assert.deepEqual(readSettings("#processing=off&ice=relay"), { processing: false, ice: "relay", token: null });
  assert.deepEqual(readSettings("#processing=on&ice=tcp&token=demo-token"), { processing: true, ice: "tcp", token: "demo-token" });
  assert.equal(readSettings("token=t2").token, "t2", "with or without the #");
});

test("the microphone's processing follows #processing", () => {
  assert.deepEqual(audioConstraints(false), {
    audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false }, video: false,
  });
  assert.equal(audioConstraints(true).audio.echoCancellation, true);
});

test("ICE: the gateway's servers, and #ice=relay forces the relay", () => {
  const servers = [{ urls: ["turn:turn.example.com:3478?transport=udp"], username: "u", credential: "c" }];
  assert.deepEqual(rtcConfig(servers, null), { iceServers: servers, iceTransportPolicy: "all" });
  assert.deepEqual(rtcConfig(servers, "relay"), { iceServers: servers, iceTransportPolicy: "relay" });
  assert.equal(rtcConfig([], "tcp").iceTransportPolicy, "all");
});

test("#ice=tcp keeps only the answer's TCP candidates", () => {
  const sdp = [
    "v=0", "m=audio 9 UDP/TLS/RTP/SAVPF 111",
    "a=candidate:1 1 udp 2122260223 192.0.2.1 50000 typ host",
    "a=candidate:2 1 UDP 1686052607 198.51.100.1 50000 typ srflx raddr 192.0.2.1 rport 50000",
    "a=candidate:3 1 tcp 1518280447 192.0.2.1 8443 typ host tcptype passive",
    "",
  ].join("\r\n");
  assert.equal(answerSdp(sdp, null), sdp);
  assert.equal(answerSdp(sdp, "relay"), sdp);
  assert.equal(answerSdp(sdp, "tcp"), [
    "v=0", "m=audio 9 UDP/TLS/RTP/SAVPF 111",
    "a=candidate:3 1 tcp 1518280447 192.0.2.1 8443 typ host tcptype passive",
    "",
  ].join("\r\n"));
});
