// The dialer's reducers and selectors (src/api/web/state.js), under node: no browser.
// Run with `node --test tests/web/*.test.mjs`.
import { test } from "node:test";
import assert from "node:assert/strict";

import {
  initialState, reduce, apply, activeCall, ringingCall, notifiedCall, ownCalls, queuedCalls,
  heldCalls, offeredCall, recentCalls, recordingOf, closeReason, formatNumber, reconnectTargets,
  reconnectDelay, RECONNECT_ATTEMPTS,
} from "../../src/api/web/state.js";
import { socketUrl } from "../../src/api/web/monitor.js";
import { decode } from "../../src/api/web/protocol.js";
import { serverExamples, example, call } from "./examples.mjs";

/** Reduce a list of messages from the initial (or given) state. */
const run = (messages, state = initialState) => messages.reduce(reduce, state);
const signedIn = apply(initialState, { type: "signin.done", agentId: "demo", iceServers: [] });
const statuses = (state) => Object.fromEntries([...state.calls.values()].map((c) => [c.call_id, c.status]));

test("every server example of the protocol reads, reduces without throwing, and leaves the state valid", () => {
  assert.ok(serverExamples.length >= 13, `${serverExamples.length} examples`);
  const types = new Set();
  let state = signedIn;
  for (const { text, message } of serverExamples) {
    const decoded = decode(text);
    assert.ok(decoded.ok, `${message.type}: ${decoded.ok ? "" : decoded.reason}`);
    types.add(message.type);
    state = reduce(state, decoded.message);
    assert.ok(state.calls instanceof Map);
    if (message.call && message.type !== "monitor.updated" && message.type !== "monitor.ended") {
      assert.equal(state.calls.get(message.call.call_id), decoded.message.call, `${message.type} keeps its call`);
    }
  }
  for (const type of ["ok", "error", "pong", "webrtc.answer", "calls.snapshot", "call.incoming",
    "call.waiting", "call.offer", "call.updated", "call.ended", "call_log.prompt", "monitor.updated",
    "monitor.ended"]) {
    assert.ok(types.has(type), `an example of ${type}`);
  }
});

test("each example changes the state where expected, and only there", () => {
  const changes = {
    "calls.snapshot": ["calls", "waitingHead", "queueLength"],
    "call.incoming": ["calls"],
    "call.waiting": ["calls", "waitingHead", "queueLength"],
    "call.offer": ["calls", "offered"],
    "call.updated": ["calls"],
    "call.ended": ["calls"],
    "call_log.prompt": ["calls", "prompts", "shownPrompt", "promptSeq"],
    "monitor.updated": ["monitoring"],
    "monitor.ended": [],
    error: ["lastError"],
    ok: [],
    pong: [],
    "webrtc.answer": [],
  };
  for (const { message } of serverExamples) {
    const next = reduce(signedIn, message);
    const changed = Object.keys(next).filter((k) => next[k] !== signedIn[k]);
    // The example snapshot has no queue: its waitingHead and queueLength stay as they were.
    const want = changes[message.type]
      .filter((k) => !((k === "waitingHead" || k === "queueLength") && next[k] === signedIn[k]));
    assert.deepEqual(changed.sort(), [...want].sort(), message.type);
    if (want.length === 0) assert.equal(next, signedIn, `${message.type} keeps the same state`);
  }
});

test("the reducers never change the state they are given", () => {
  const frozen = (s) => Object.freeze({ ...s, calls: new Map(s.calls), prompts: Object.freeze([...s.prompts]) });
  let state = frozen(signedIn);
  for (const { message } of serverExamples) {
    const copy = new Map(state.calls);
    const next = reduce(state, message);
    assert.deepEqual([...state.calls], [...copy], `${message.type} left the old calls alone`);
    state = frozen(next);
  }
});

test("an incoming call rings: the notification shows it", () => {
  const state = run([example("call.incoming")], signedIn);
  const c = ringingCall(state);
  assert.equal(c.call_id, "c_0069b1c2d3e4f5a6b7c9");
  assert.equal(c.prospect.name, "Ada Lovelace");
  assert.equal(notifiedCall(state), c);
  assert.equal(activeCall(state), null);
  assert.deepEqual(ownCalls(state).map((x) => x.call_id), [c.call_id]);
});

test("answered: the call is active, nothing rings", () => {
  const state = run([example("call.incoming"), example("call.updated")], signedIn);
  assert.equal(activeCall(state).call_id, "c_0069b1c2d3e4f5a6b7c9");
  assert.equal(activeCall(state).status, "active");
  assert.equal(ringingCall(state), null);
  assert.equal(notifiedCall(state), null);
  assert.equal(state.calls.size, 1);
});

test("call waiting, hold & accept, then resume swaps the two calls", () => {
  const a = call({ call_id: "A", status: "active", answered_at: "2026-12-02T10:01:03.000Z", prospect: { number: "+15551230001" } });
  const b = call({ call_id: "B", status: "waiting", queued_at: "2026-12-02T10:02:00.000Z", prospect: { number: "+15551230002", name: null } });
  let state = run([
    { type: "call.updated", call: a },
    { type: "call.waiting", queue_length: 1, call: b },
  ], signedIn);
  assert.equal(state.waitingHead, "B");
  assert.equal(state.queueLength, 1);
  assert.equal(notifiedCall(state).call_id, "B", "the waiting call is notified");
  assert.equal(activeCall(state).call_id, "A");

  // Hold & Accept: A goes on hold, B becomes active.
  state = run([
    { type: "call.updated", call: { ...a, status: "on_hold", queued_at: "2026-12-02T10:02:05.000Z", recording: "paused" } },
    { type: "call.updated", call: { ...b, status: "active", queued_at: null, answered_at: "2026-12-02T10:02:05.000Z" } },
  ], state);
  assert.deepEqual(statuses(state), { A: "on_hold", B: "active" });
  assert.equal(notifiedCall(state), null, "nothing waits any more");
  assert.deepEqual(heldCalls(state, "B").map((c) => c.call_id), ["A"]);
  assert.deepEqual(ownCalls(state).map((c) => c.call_id), ["B", "A"], "the active call first");

  // Resume A: the gateway swaps them.
  state = run([
    { type: "call.updated", call: { ...b, status: "on_hold", queued_at: "2026-12-02T10:03:00.000Z" } },
    { type: "call.updated", call: { ...a, status: "active", queued_at: null } },
  ], state);
  assert.deepEqual(statuses(state), { A: "active", B: "on_hold" });
  assert.deepEqual(ownCalls(state).map((c) => c.call_id), ["A", "B"]);
  assert.deepEqual(queuedCalls(state).map((c) => c.call_id), ["B"]);
});

test("the queue is FIFO by queued_at, whatever order the calls arrived in", () => {
  const q = (id, status, at) => call({ call_id: id, status, queued_at: at });
  const snapshot = {
    type: "calls.snapshot",
    calls: [
      q("late", "waiting", "2026-12-02T10:05:00.000Z"),
      q("held", "on_hold", "2026-12-02T10:03:00.000Z"),
      call({ call_id: "talking", status: "active", answered_at: "2026-12-02T10:00:00.000Z" }),
      q("early", "waiting", "2026-12-02T10:01:00.000Z"),
      call({ call_id: "gone", status: "ended", ended_at: "2026-12-02T09:00:00.000Z" }),
    ],
  };
  const state = reduce(signedIn, snapshot);
  assert.equal(state.waitingHead, "early", "the oldest waiting call heads the queue");
  assert.equal(state.queueLength, 3);
  assert.deepEqual(queuedCalls(state).map((c) => c.call_id), ["early", "held", "late"]);
  assert.deepEqual(ownCalls(state).map((c) => c.call_id), ["talking", "early", "held", "late"]);
  assert.equal(notifiedCall(state).call_id, "early");
});

test("a call that ends leaves the live calls for the recent ones", () => {
  let state = run([example("call.incoming"), example("call.updated")], signedIn);
  state = reduce(state, example("call.ended"));
  assert.equal(activeCall(state), null);
  assert.deepEqual(ownCalls(state), [], "no live call");
  assert.deepEqual(recentCalls(state).map((c) => [c.call_id, c.end_reason]), [["c_0069b1c2d3e4f5a6b7c9", "caller_hangup"]]);
});

test("recent calls: newest first, at most 20", () => {
  const ended = Array.from({ length: 25 }, (_, i) => call({
    call_id: `e${i}`, status: "ended", ended_at: `2026-12-02T10:${String(i).padStart(2, "0")}:00.000Z`,
  }));
  const state = reduce(signedIn, { type: "calls.snapshot", calls: ended });
  const recent = recentCalls(state).map((c) => c.call_id);
  assert.equal(recent.length, 20);
  assert.equal(recent[0], "e24");
  assert.equal(recent[19], "e5");
});

test("an update of one call keeps every other call object (views rebuild only its row)", () => {
  const a = call({ call_id: "A", status: "on_hold", queued_at: "2026-12-02T10:00:00.000Z" });
  const b = call({ call_id: "B", status: "active" });
  const before = reduce(signedIn, { type: "calls.snapshot", calls: [a, b] });
  const after = reduce(before, { type: "call.updated", call: { ...b, recording: "paused" } });
  assert.notEqual(after.calls, before.calls);
  assert.equal(after.calls.get("A"), before.calls.get("A"));
  assert.notEqual(after.calls.get("B"), before.calls.get("B"));
  assert.deepEqual([...after.calls.keys()], ["A", "B"], "the calls keep their order");
});

test("call.offer: the queue's head is offered until taken or put off, and not over an active call", () => {
  let state = reduce(signedIn, example("call.offer"));
  assert.equal(state.offered, "c_0069b1c2d3e4f5a6b7ca");
  assert.equal(offeredCall(state).call_id, "c_0069b1c2d3e4f5a6b7ca");
  const busy = reduce(state, { type: "call.updated", call: call({ call_id: "X", status: "active" }) });
  assert.equal(offeredCall(busy), null, "another call is active");
  state = apply(state, { type: "offer.dismissed" });
  assert.equal(state.offered, null);
  assert.equal(offeredCall(state), null);
  assert.equal(apply(state, { type: "offer.dismissed" }), state, "nothing to dismiss: same state");
});

test("call-log prompts: one per number, merged, shown one at a time", () => {
  const first = example("call_log.prompt");
  let state = reduce(signedIn, first);
  assert.equal(state.prompts.length, 1);
  assert.equal(state.shownPrompt, state.prompts[0], "shown at once");
  assert.equal(state.promptSeq, 1);

  // A second call with the same prospect: merged into the shown prompt (the form is kept).
  const merged = { ...first, call_ids: ["c1", "c2"], call: { ...first.call, call_id: "c2" } };
  state = reduce(state, merged);
  assert.equal(state.prompts.length, 1);
  assert.deepEqual(state.shownPrompt.call_ids, ["c1", "c2"]);
  assert.equal(state.promptSeq, 1, "not shown anew");

  // Another prospect waits behind it.
  const other = { ...first, call_ids: ["c3"], call: call({ call_id: "c3", status: "ended", prospect: { number: "+15559990000" } }) };
  state = reduce(state, other);
  assert.equal(state.prompts.length, 2);
  assert.equal(state.shownPrompt.call.prospect.number, "+15551230001", "the first stays on screen");

  state = apply(state, { type: "prompt.error", text: "Not saved: HTTP 500" });
  assert.equal(state.promptError, "Not saved: HTTP 500");
  // Saved: the next one is shown, its form empty and without the error.
  state = apply(state, { type: "prompt.closed", number: "+15551230001" });
  assert.equal(state.prompts.length, 1);
  assert.equal(state.shownPrompt.call.prospect.number, "+15559990000");
  assert.equal(state.promptSeq, 2);
  assert.equal(state.promptError, "");

  // Later hides it; the logs button shows it again.
  state = apply(state, { type: "prompt.later" });
  assert.equal(state.shownPrompt, null);
  state = apply(state, { type: "prompt.show" });
  assert.equal(state.shownPrompt, state.prompts[0]);
  assert.equal(state.promptSeq, 3);
  state = apply(state, { type: "prompt.closed", number: "+15559990000" });
  assert.deepEqual(state.prompts, []);
  assert.equal(state.shownPrompt, null);
  assert.equal(apply(state, { type: "prompt.show" }), state, "no prompt to show");
});

test("monitoring: monitor.updated, the stop, and monitor.ended", () => {
  let state = reduce(signedIn, example("monitor.updated"));
  assert.deepEqual(state.monitoring, { call_id: "c_0069b1c2d3e4f5a6b7c9", mode: "whisper", number: "+15551230001" });
  assert.equal(state.calls.size, 0, "another agent's call is not ours");
  state = reduce(state, { ...example("monitor.updated"), mode: "barge" });
  assert.equal(state.monitoring.mode, "barge");
  assert.equal(apply(state, { type: "monitor.stopped" }).monitoring, null);
  assert.equal(reduce(state, example("monitor.ended")).monitoring, null);
});

test("live calls: other agents' only; an unchanged reload keeps the same state", () => {
  const mine = call({ call_id: "M", status: "active", agent_id: "demo" });
  const theirs = call({ call_id: "T", status: "active", agent_id: "demo2" });
  const nobody = call({ call_id: "N", status: "on_hold", agent_id: null });
  let state = apply(signedIn, { type: "live.loaded", calls: [mine, theirs, nobody] });
  assert.deepEqual(state.liveCalls.map((c) => c.call_id), ["T"]);
  const again = apply(state, { type: "live.loaded", calls: [structuredClone(mine), structuredClone(theirs)] });
  assert.equal(again, state, "the same calls again: nothing changed");
  const changed = apply(state, { type: "live.loaded", calls: [{ ...theirs, status: "on_hold" }] });
  assert.notEqual(changed, state);
  assert.equal(changed.liveCalls[0].status, "on_hold");
  assert.deepEqual(apply(changed, { type: "live.loaded", calls: [] }).liveCalls, []);
});

test("errors: the gateway's error is kept as lastError, the dial error is the page's", () => {
  let state = reduce(signedIn, example("error"));
  assert.equal(state.lastError, "bad_request: call_id: missing");
  state = reduce(state, { type: "error", code: "dial_plan_denied", message: "not allowed" });
  assert.equal(state.lastError, "dial_plan_denied: not allowed");
  state = apply(state, { type: "dial.error", text: "Not allowed to call +1900." });
  assert.equal(state.dialError, "Not allowed to call +1900.");
  assert.equal(apply(state, { type: "dial.error", text: "Not allowed to call +1900." }), state);
  assert.equal(apply(state, { type: "failed", error: "microphone: denied" }).lastError, "microphone: denied");
});

test("sign-in and the socket's close", () => {
  assert.equal(signedIn.online, true);
  assert.equal(signedIn.agentId, "demo");
  const closed = apply(signedIn, { type: "socket.closed", code: 4409 });
  assert.equal(closed.online, false);
  assert.equal(closed.closedCode, 4409);
  assert.equal(closed.signinError, "You signed in somewhere else; this page is no longer connected.");
  assert.equal(closeReason(4401), "That token was not accepted.");
  assert.equal(closeReason(1006), "Disconnected from the gateway. Sign in again to continue.");
  const again = apply(closed, { type: "signin.started" });
  assert.equal(again.signinError, "");
  assert.equal(again.closedCode, null);
});

test("in a cluster, a lost connection signs in again on the other nodes first, then the lost one", () => {
  const nodes = [
    { node: "a", url: "https://a.example.com" },
    { node: "b", url: "https://b.example.com" },
    { node: "c", url: "https://c.example.com" },
  ];
  const onB = apply(initialState, { type: "signin.done", agentId: "demo", iceServers: [], node: "b", nodes });
  assert.equal(onB.node, "b");
  assert.deepEqual(onB.nodes, nodes);
  assert.deepEqual(reconnectTargets(onB, 1006), ["https://c.example.com", "https://a.example.com", "https://b.example.com"]);
  // Never after a refused token, a refused monitoring connection or a sign-in elsewhere.
  for (const code of [4401, 4403, 4409]) assert.equal(reconnectTargets(onB, code), null, `${code}`);
  // Not on a single node (no nodes), nor before a sign-in worked.
  assert.equal(reconnectTargets(signedIn, 1006), null);
  assert.equal(reconnectTargets(initialState, 1006), null);
  // A node the list does not name: the list as it is.
  const elsewhere = { ...onB, node: "z" };
  assert.deepEqual(reconnectTargets(elsewhere, 1006), nodes.map((n) => n.url));

  const lost = apply(onB, { type: "socket.closed", code: 1006, reconnecting: true });
  assert.equal(lost.online, false);
  assert.equal(lost.reconnecting, true);
  assert.match(lost.signinError, /reconnecting/);
  assert.equal(lost.agentId, "demo", "who signs in again is kept");
  const trying = apply(lost, { type: "signin.started" });
  assert.match(trying.signinError, /reconnecting/, "the card goes on saying so while it tries");
  const onC = apply(trying, { type: "signin.done", agentId: "demo", iceServers: [], node: "c", nodes });
  assert.equal(onC.reconnecting, false);
  assert.equal(onC.signinError, "");
  assert.equal(onC.node, "c");
  const givenUp = apply(lost, { type: "socket.closed", code: 1006, reconnecting: false });
  assert.equal(givenUp.reconnecting, false);
  assert.equal(givenUp.signinError, closeReason(1006));

  // Each node once at once, then rounds further and further apart, at most 8 s.
  assert.deepEqual([0, 1, 2].map((i) => reconnectDelay(i, 3)), [250, 250, 250]);
  assert.deepEqual([3, 6, 9, 12, 15, 30].map((i) => reconnectDelay(i, 3)), [1000, 2000, 4000, 8000, 8000, 8000]);
  assert.ok(RECONNECT_ATTEMPTS >= 6 && RECONNECT_ATTEMPTS <= 30);
});

test("a call monitored on another node is reached at that node's agent WebSocket", () => {
  assert.equal(socketUrl("https://b.example.com"), "wss://b.example.com/v1/agent/ws");
  assert.equal(socketUrl("http://127.0.0.4:12870"), "ws://127.0.0.4:12870/v1/agent/ws");
  assert.equal(socketUrl("http://127.0.0.4:12870/"), "ws://127.0.0.4:12870/v1/agent/ws");
});

test("DTMF sent is shown during the call and forgotten after it", () => {
  let state = run([example("call.incoming"), example("call.updated")], signedIn);
  state = apply(apply(state, { type: "dtmf.sent", digit: "1" }), { type: "dtmf.sent", digit: "#" });
  assert.equal(state.sentDigits, "1#");
  state = reduce(state, { type: "call.updated", call: { ...activeCall(state), recording: "paused" } });
  assert.equal(state.sentDigits, "1#", "still the same call");
  state = reduce(state, example("call.ended"));
  assert.equal(state.sentDigits, "");
});

test("media state and the recording's badge and action", () => {
  const up = apply(signedIn, { type: "media.state", state: "connected" });
  assert.equal(up.media, "connected");
  assert.equal(apply(up, { type: "media.state", state: "connected" }), up);
  assert.deepEqual(recordingOf(call({ recording: "recording" })), { badge: "● REC", action: "pause", label: "Pause recording" });
  assert.equal(recordingOf(call({ recording: "paused" })).action, "resume");
  assert.equal(recordingOf(call({ recording: "off" })).action, "start");
  assert.equal(recordingOf(call({ recording: "failed" })).action, null);
  assert.equal(recordingOf(call({ recording: "something new" })).action, "start");
  assert.equal(formatNumber(null), "unknown");
});

test("messages that change nothing give back the same state", () => {
  for (const message of [
    { type: "ok", req: "1" }, { type: "pong" }, { type: "webrtc.answer", sdp: "v=0" },
    { type: "webrtc.candidate", candidate: null }, { type: "something.new", call: call({}) },
  ]) {
    assert.equal(reduce(signedIn, message), signedIn, message.type);
  }
});
