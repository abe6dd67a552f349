// The dialer's protocol module (src/api/web/protocol.js): reading the gateway's messages,
// building the page's, and the connection every message goes out through.
import { test } from "node:test";
import assert from "node:assert/strict";

import * as protocol from "../../src/api/web/protocol.js";
import { decode, encode, Connection, RequestError, Disconnected, OPEN, SERVER_TYPES } from "../../src/api/web/protocol.js";
import { serverExamples, clientExamples, example } from "./examples.mjs";

test("every server example of docs/agent-protocol.md is read as it is", () => {
  for (const { text, message } of serverExamples) {
    const decoded = decode(text);
    assert.ok(decoded.ok, `${message.type}: ${decoded.ok ? "" : decoded.reason}`);
    assert.deepEqual(decoded.message, message);
  }
  const documented = new Set(serverExamples.map((e) => e.message.type));
  for (const type of SERVER_TYPES) {
    if (type !== "webrtc.candidate") assert.ok(documented.has(type), `${type} is documented`);
  }
});

test("unknown types, bad JSON and wrong fields are refused with a reason, never thrown", () => {
  const cases = [
    ["not json", null, /not JSON/],
    ["", null, /not JSON/],
    ["[1,2]", null, /no type/],
    ["null", null, /no type/],
    ['"call.updated"', null, /no type/],
    ['{"call":{}}', null, /no type/],
    ['{"type":7}', null, /no type/],
    ['{"type":"call.transferred","req":"9","call":{}}', "call.transferred", /unknown type call.transferred/],
    ['{"type":"call.updated"}', "call.updated", /call: missing/],
    ['{"type":"call.updated","call":{"call_id":"c1","status":"active"}}', "call.updated", /call: missing or not a call/],
    ['{"type":"call.waiting","call":' + JSON.stringify(example("call.waiting").call) + "}", "call.waiting", /queue_length/],
    ['{"type":"calls.snapshot","calls":{}}', "calls.snapshot", /calls: not a list/],
    ['{"type":"call_log.prompt","call":' + JSON.stringify(example("call_log.prompt").call) + "}", "call_log.prompt", /call_ids/],
    ['{"type":"monitor.updated","call":' + JSON.stringify(example("monitor.updated").call) + "}", "monitor.updated", /mode/],
    ['{"type":"error","req":"1"}', "error", /code\/message/],
    ['{"type":"webrtc.answer","req":"1"}', "webrtc.answer", /sdp/],
  ];
  for (const [text, type, reason] of cases) {
    const decoded = decode(text);
    assert.equal(decoded.ok, false, text);
    assert.equal(decoded.type, type, text);
    assert.match(decoded.reason, reason, text);
  }
  assert.equal(decode('{"type":"call.transferred","req":"9"}').req, "9", "the req of an unknown type is kept");
  assert.equal(decode(undefined).ok, false);
  assert.equal(decode(new ArrayBuffer(4)).ok, false);
});

test("extra fields are kept: the protocol only grows", () => {
  const message = { ...example("call.updated"), future: { x: 1 } };
  const decoded = decode(JSON.stringify(message));
  assert.ok(decoded.ok);
  assert.deepEqual(decoded.message, message);
});

test("the builders make the documented client messages", () => {
  const build = {
    auth: (m) => (m.monitor ? protocol.monitorAuth(m.token) : protocol.auth(m.token)),
    ping: () => protocol.ping(),
    "webrtc.offer": (m) => protocol.webrtcOffer(m.sdp),
    "webrtc.candidate": (m) => protocol.webrtcCandidate(m.candidate),
    "call.answer": (m) => protocol.answer(m.call_id),
    "call.accept": (m) => protocol.accept(m.call_id, m.mode),
    "call.decline": (m) => protocol.decline(m.call_id),
    "call.hold": (m) => protocol.hold(m.call_id),
    "call.resume": (m) => protocol.resume(m.call_id),
    "call.hangup": (m) => protocol.hangup(m.call_id),
    "call.dtmf": (m) => protocol.dtmf(m.call_id, m.digits),
    "call.transfer": (m) => (m.to ? protocol.transfer(m.call_id, m.to) : protocol.attendedTransfer(m.call_id, m.attended_call_id)),
    "call.monitor": (m) => protocol.monitor(m.call_id, m.mode),
    "call.record": (m) => protocol.record(m.call_id, m.action),
    "calls.list": () => protocol.listCalls(),
    "call_log.dismiss": (m) => protocol.dismissLog(m.number),
  };
  let checked = 0;
  for (const { message } of clientExamples) {
    const { req, ...fields } = message;
    if (message.type === "call.dial") {
      // The page dials a number only (no name or CRM id).
      assert.deepEqual(protocol.dial(fields.to), { type: "call.dial", to: fields.to });
      continue;
    }
    assert.ok(build[message.type], `a builder for ${message.type}`);
    const built = build[message.type](fields);
    assert.deepEqual(built, fields, message.type);
    assert.deepEqual(JSON.parse(encode(built, req)), req === undefined ? fields : { ...fields, req }, message.type);
    checked++;
  }
  assert.ok(checked >= 15, `${checked} examples`);
});

test("encode puts req last, as the page always sent it", () => {
  assert.equal(encode(protocol.hangup("c1"), "7"), '{"type":"call.hangup","call_id":"c1","req":"7"}');
  assert.equal(encode(protocol.hangup("c1")), '{"type":"call.hangup","call_id":"c1"}');
});

/** A WebSocket's stand-in: what was sent, and its readyState. */
function fakeSocket(readyState = OPEN) {
  return { readyState, sent: [], send(data) { this.sent.push(JSON.parse(data)); } };
}

test("one send path: sent when open, refused otherwise", () => {
  const socket = fakeSocket(0);
  const conn = new Connection(socket);
  assert.equal(conn.send(protocol.ping()), false, "connecting: refused");
  socket.readyState = OPEN;
  assert.equal(conn.send(protocol.webrtcCandidate({ candidate: "candidate:1 1 udp 1 127.0.0.1 5 typ host" })), true);
  socket.readyState = 3;
  assert.equal(conn.send(protocol.ping()), false, "closed: refused");
  assert.deepEqual(socket.sent.map((m) => m.type), ["webrtc.candidate"]);
  assert.equal(socket.sent[0].req, undefined, "a send without req has none");
});

test("requests: numbered, resolved by their reply, rejected by an error or when not connected", async () => {
  const socket = fakeSocket();
  const conn = new Connection(socket);
  const dialled = conn.request(protocol.dial("+15551239999"));
  const held = conn.request(protocol.hold("c1"));
  assert.deepEqual(socket.sent, [
    { type: "call.dial", to: "+15551239999", req: "1" },
    { type: "call.hold", call_id: "c1", req: "2" },
  ]);
  assert.equal(conn.settle({ type: "ok", req: "1", call_id: "c9" }), true);
  assert.equal(conn.settle({ type: "error", req: "2", code: "invalid_state", message: "not active" }), true);
  assert.deepEqual(await dialled, { type: "ok", req: "1", call_id: "c9" });
  await assert.rejects(held, (err) => err instanceof RequestError && err.code === "invalid_state" && err.message === "not active");
  assert.equal(conn.settle({ type: "ok", req: "1" }), false, "settled once");
  assert.equal(conn.settle({ type: "ok", req: "99" }), false, "not ours");
  assert.equal(conn.settle(example("call.updated")), false, "events carry no req");

  const answer = conn.request(protocol.webrtcOffer("v=0"));
  conn.settle({ type: "webrtc.answer", req: "3", sdp: "v=0 answer" });
  assert.equal((await answer).sdp, "v=0 answer");

  const pending = conn.request(protocol.listCalls());
  conn.closed();
  await assert.rejects(pending, (err) => err instanceof Disconnected);
  socket.readyState = 3;
  await assert.rejects(conn.request(protocol.ping()), /not connected/);
  assert.equal(socket.sent.length, 4, "nothing sent once closed");
});
