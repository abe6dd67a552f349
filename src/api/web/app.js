// @ts-check
// The callgate dialer: signs in over the agent WebSocket (docs/agent-protocol.md), keeps one
// WebRTC peer connection to the gateway for the agent's audio, and shows the agent's calls.
// Plain browser ES modules, no build step. This entry module wires them together:
//   protocol.js  the messages, and the connection every message is sent through
//   state.js     the state and its pure reducers and selectors
//   media.js     the microphone and the peer connection
//   monitor.js   a supervisor's monitoring connection to another node of a cluster
//   views.js     the page, updated where the state changed (dom.js: its helpers)
// `window.callgate` exposes the state for debugging and for the end-to-end tests.

import * as protocol from "./protocol.js";
import {
  initialState, reduce, apply, activeCall, notifiedCall, recordingOf, reconnectTargets,
  reconnectDelay, RECONNECT_ATTEMPTS,
} from "./state.js";
import { Media, readSettings } from "./media.js";
import { RemoteMonitor, socketUrl } from "./monitor.js";
import { createViews } from "./views.js";
import { byId, inputById, selectById, textAreaById } from "./dom.js";

/** @typedef {import("./state.js").State} State */
/** @typedef {import("./state.js").Action} Action */
/** @typedef {import("./protocol.js").ClientMessage} ClientMessage */

const settings = readSettings(location.hash);

/** @type {State} */
let state = initialState;
/** The types of the messages received, in order (for debugging). @type {string[]} */
const events = [];
/** @type {protocol.Connection | null} */
let connection = null;
/** @type {WebSocket | null} */
let socket = null;
/** @type {string | null} */
let token = null;
/**
 * Where the API is: "" for this page's own node, else the node the page signed in on after
 * its own was lost (a cluster's nodes allow each other's pages).
 */
let apiBase = "";
/** Signing in again after the connection was lost: where, and the attempts made. */
let reconnect = { targets: /** @type {string[]} */ ([]), attempt: 0, timer: 0 };
/** @type {RemoteMonitor | null} */
let remoteMonitor = null;

/**
 * Move to the next state and bring the page up to date with it.
 * @param {State} next
 */
function commit(next) {
  const prev = state;
  state = next;
  views.render(prev, next);
}

/** @param {Action} action */
const dispatch = (action) => commit(apply(state, action));

/**
 * A request's failure, shown under the dial form (not the requests the socket's closing
 * left unanswered: the sign-in card says it closed).
 * @param {unknown} err
 * @param {(err: unknown) => string} [text]
 */
function showError(err, text = (e) => (e instanceof Error ? e.message : String(e))) {
  if (!(err instanceof protocol.Disconnected)) dispatch({ type: "dial.error", text: text(err) });
}

/**
 * Send a request through the connection (refused when not connected).
 * @param {ClientMessage} message
 * @returns {Promise<protocol.ReplyMessage>}
 */
function request(message) {
  return connection ? connection.request(message) : Promise.reject(new Error("not connected"));
}

const media = new Media(settings, {
  candidate: (candidate) => { if (connection) connection.send(protocol.webrtcCandidate(candidate)); },
  state: (s) => dispatch({ type: "media.state", state: s }),
  remote: (stream) => {
    const audio = /** @type {HTMLAudioElement} */ (byId("remote-audio"));
    audio.srcObject = stream;
    audio.play().catch(() => {});
  },
});

const views = createViews({
  holdOrResume: (call, active) => {
    request(active ? protocol.hold(call.call_id) : protocol.resume(call.call_id)).catch(showError);
  },
  monitor: (call, mode) => {
    // A call on another node of the cluster is monitored there.
    if (call.node && state.node && call.node !== state.node && call.node_url) {
      monitorRemotely(call.node_url, call.call_id, mode).catch(showError);
      return;
    }
    closeRemoteMonitor();
    request(protocol.monitor(call.call_id, mode)).then(() => {
      if (mode === "stop") dispatch({ type: "monitor.stopped" });
    }).catch(showError);
  },
});

/** Leave the call monitored on another node, if any. */
function closeRemoteMonitor() {
  if (!remoteMonitor) return;
  remoteMonitor.close();
  remoteMonitor = null;
}

/**
 * Monitor `callId` on the node at `url`, over a monitoring connection of its own there.
 * @param {string} url
 * @param {string} callId
 * @param {import("./protocol.js").MonitorMode} mode
 */
async function monitorRemotely(url, callId, mode) {
  if (remoteMonitor && remoteMonitor.base !== url) closeRemoteMonitor();
  if (mode === "stop") {
    if (remoteMonitor) await remoteMonitor.request(protocol.monitor(callId, "stop")).catch(() => {});
    closeRemoteMonitor();
    dispatch({ type: "monitor.stopped" });
    return;
  }
  // One call at a time: a call monitored on this node is left first.
  if (state.monitoring && !remoteMonitor) {
    await request(protocol.monitor(state.monitoring.call_id, "stop")).catch(() => {});
  }
  if (!remoteMonitor && token) {
    const session = new RemoteMonitor(url, token, settings, media.mic, {
      message: (msg) => {
        if (remoteMonitor !== session) return;
        if (msg.type === "monitor.updated" || msg.type === "monitor.ended" || msg.type === "error") {
          commit(reduce(state, msg));
        }
      },
      closed: () => {
        if (remoteMonitor !== session) return;
        remoteMonitor = null;
        dispatch({ type: "monitor.stopped" });
      },
      remote: (stream) => {
        const audio = /** @type {HTMLAudioElement} */ (byId("monitor-audio"));
        audio.srcObject = stream;
        audio.play().catch(() => {});
      },
    });
    remoteMonitor = session;
    try {
      await session.open();
    } catch (e) {
      if (remoteMonitor === session) closeRemoteMonitor();
      throw e;
    }
  }
  if (remoteMonitor) await remoteMonitor.request(protocol.monitor(callId, mode));
}

// For debugging and the end-to-end tests: the state as it is now, the peer connection and
// the audio received.
Object.defineProperty(window, "callgate", {
  configurable: true,
  value: Object.freeze({
    get state() { return state; },
    get calls() { return state.calls; },
    get agentId() { return state.agentId; },
    get iceServers() { return state.iceServers; },
    get closedCode() { return state.closedCode; },
    get lastError() { return state.lastError; },
    get prompts() { return state.prompts; },
    get monitoring() { return state.monitoring; },
    get liveCalls() { return state.liveCalls; },
    get waitingHead() { return state.waitingHead; },
    get queueLength() { return state.queueLength; },
    get offered() { return state.offered; },
    get events() { return events; },
    get socket() { return socket; },
    get node() { return state.node; },
    get nodes() { return state.nodes; },
    get apiBase() { return apiBase; },
    get pc() { return media.pc; },
    get monitorPc() { return remoteMonitor ? remoteMonitor.media.pc : null; },
    get monitorStream() { return remoteMonitor ? remoteMonitor.media.remoteStream : null; },
    get mic() { return media.mic; },
    get remoteStream() { return media.remoteStream; },
  }),
});

/**
 * A message from the gateway: it answers a request, changes the state, or asks the media.
 * @param {MessageEvent} event
 */
function onMessage(event) {
  const decoded = protocol.decode(event.data);
  if (!decoded.ok) {
    if (decoded.type) events.push(decoded.type);
    if (decoded.type) console.warn(`callgate: ignored a message: ${decoded.reason}`);
    return;
  }
  const msg = decoded.message;
  events.push(msg.type);
  if (connection) connection.settle(msg);
  commit(reduce(state, msg));
  if (msg.type === "monitor.ended") refreshLiveCalls().catch(() => {});
  else if (msg.type === "webrtc.candidate" && msg.candidate) media.addCandidate(msg.candidate);
}

/** The microphone and the peer connection, once signed in. */
async function startMedia() {
  let sdp;
  try {
    sdp = await media.start(state.iceServers);
  } catch (e) {
    dispatch({ type: "failed", error: `microphone: ${e instanceof Error ? e.message : String(e)}` });
    dispatch({ type: "dial.error", text: "Microphone unavailable: calls will have no audio from you." });
    return;
  }
  let reply;
  try {
    reply = await request(protocol.webrtcOffer(sdp));
  } catch {
    return; // the gateway's error is in lastError already, or the socket closed
  }
  if (reply.type !== "webrtc.answer") return;
  media.answer(reply.sdp).catch((e) => dispatch({ type: "failed", error: String(e) }));
}

/**
 * Sign in on the node at `base` (the page's own by default).
 * @param {string} agentToken
 * @param {string} [base]
 */
function signIn(agentToken, base = location.origin) {
  token = agentToken;
  // The calls page (same origin, this tab's session) uses it too.
  sessionStorage.setItem("callgate-token", agentToken);
  let ws;
  try {
    ws = new WebSocket(socketUrl(base));
  } catch (e) {
    dispatch({ type: "failed", error: `cannot connect to ${base}: ${e instanceof Error ? e.message : String(e)}` });
    return;
  }
  const conn = new protocol.Connection(ws);
  socket = ws;
  connection = conn;
  dispatch({ type: "signin.started" });
  ws.onopen = () => {
    conn.request(protocol.auth(agentToken)).then((ok) => {
      if (ok.type !== "ok" || connection !== conn) return;
      apiBase = base === location.origin ? "" : base;
      reconnect = { targets: [], attempt: 0, timer: 0 };
      dispatch({
        type: "signin.done",
        agentId: ok.agent_id || "",
        iceServers: Array.isArray(ok.ice_servers) ? ok.ice_servers : [],
        node: ok.node || null,
        nodes: Array.isArray(ok.nodes) ? ok.nodes : [],
      });
      startMedia();
    }).catch(() => {}); // a refused token closes the socket (4401)
  };
  ws.onmessage = (event) => { if (connection === conn) onMessage(event); };
  ws.onclose = (e) => {
    conn.closed();
    if (connection !== conn) return;
    media.stop();
    closeRemoteMonitor();
    // In a cluster, a lost node's page signs in on another by itself.
    const refused = e.code === 4401 || e.code === 4403 || e.code === 4409;
    const targets = refused ? null : state.reconnecting ? reconnect.targets : reconnectTargets(state, e.code);
    const again = !!targets && targets.length > 0 && reconnect.attempt < RECONNECT_ATTEMPTS;
    dispatch({ type: "socket.closed", code: e.code, reconnecting: again });
    if (!targets || !again) {
      reconnect = { targets: [], attempt: 0, timer: 0 };
      return;
    }
    const attempt = reconnect.attempt;
    const next = targets[attempt % targets.length];
    reconnect = {
      targets,
      attempt: attempt + 1,
      timer: window.setTimeout(() => signIn(agentToken, next), reconnectDelay(attempt, targets.length)),
    };
  };
}

// --- Supervisors: other agents' live calls, every two seconds ---------------------------
async function refreshLiveCalls() {
  if (!token || !connection || !connection.open) return;
  const response = await fetch(`${apiBase}/v1/calls?status=active,on_hold&limit=100`, {
    headers: { Authorization: `Bearer ${token}` },
  });
  if (!response.ok) return;
  const page = await response.json();
  dispatch({ type: "live.loaded", calls: page.calls });
}
setInterval(() => { refreshLiveCalls().catch(() => {}); }, 2000);

// --- Call logs: saved over HTTP for every call of the prospect ---------------------------
async function savePrompt() {
  const prompt = state.shownPrompt;
  if (!prompt) return;
  const tags = [...document.querySelectorAll('#log-form input[name="tag"]:checked')]
    .map((b) => /** @type {HTMLInputElement} */ (b).value);
  /** @type {{ tags: string[], disposition?: string, comment?: string }} */
  const body = { tags };
  const disposition = selectById("log-disposition").value;
  if (disposition) body.disposition = disposition;
  const comment = textAreaById("log-comment").value.trim();
  if (comment) body.comment = comment;
  try {
    for (const id of prompt.call_ids) {
      const response = await fetch(`${apiBase}/v1/calls/${encodeURIComponent(id)}/log`, {
        method: "PUT",
        headers: { "Content-Type": "application/json", Authorization: `Bearer ${token}` },
        body: JSON.stringify(body),
      });
      if (!response.ok) {
        const err = await response.json().catch(() => ({}));
        throw new Error(err.message || `HTTP ${response.status}`);
      }
    }
    dispatch({ type: "prompt.closed", number: prompt.call.prospect.number });
  } catch (err) {
    dispatch({ type: "prompt.error", text: `Not saved: ${err instanceof Error ? err.message : String(err)}` });
  }
}

// --- The page's controls -------------------------------------------------------------------
/** The id of the call the notification shows. */
const notifiedId = () => notifiedCall(state)?.call_id;
/** The id of the call in progress. */
const currentId = () => activeCall(state)?.call_id;

byId("signin-form").addEventListener("submit", (e) => {
  e.preventDefault();
  window.clearTimeout(reconnect.timer);
  reconnect = { targets: [], attempt: 0, timer: 0 };
  signIn(inputById("token").value.trim());
});

byId("dial-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  dispatch({ type: "dial.error", text: "" });
  const to = inputById("number").value.trim();
  try {
    await request(protocol.dial(to));
  } catch (err) {
    showError(err, (e) => (e instanceof protocol.RequestError && e.code === "dial_plan_denied"
      ? `Not allowed to call ${to}.` : e instanceof Error ? e.message : String(e)));
  }
});

byId("dialpad").addEventListener("click", (e) => {
  const target = /** @type {Element} */ (e.target);
  const button = /** @type {HTMLButtonElement | null} */ (target.closest("button[data-digit]"));
  if (!button) return;
  const digit = button.dataset.digit || "";
  const current = activeCall(state);
  if (current && current.status === "active") {
    dispatch({ type: "dtmf.sent", digit });
    request(protocol.dtmf(current.call_id, digit)).catch(showError);
  } else {
    inputById("number").value += digit;
  }
});

byId("record-button").addEventListener("click", () => {
  const current = activeCall(state);
  const action = current && recordingOf(current).action;
  if (current && action) request(protocol.record(current.call_id, action)).catch(showError);
});

byId("transfer-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const id = currentId();
  const to = inputById("transfer-to").value.trim();
  if (!id || !to) return;
  request(protocol.transfer(id, to)).then(() => { inputById("transfer-to").value = ""; }).catch(showError);
});

byId("attended-button").addEventListener("click", () => {
  const consult = currentId();
  const held = selectById("attended-with").value;
  if (consult && held) request(protocol.attendedTransfer(held, consult)).catch(showError);
});

byId("hangup-button").addEventListener("click", () => {
  const id = currentId();
  if (id) request(protocol.hangup(id)).catch(showError);
});

byId("answer-button").addEventListener("click", () => {
  const id = notifiedId();
  if (id) request(protocol.answer(id)).catch(showError);
});

/** Hold & Accept, End & Accept. @param {"hold" | "end"} mode */
function accept(mode) {
  const id = notifiedId();
  if (id) request(protocol.accept(id, mode)).catch(showError);
}
byId("accept-hold-button").addEventListener("click", () => accept("hold"));
byId("accept-end-button").addEventListener("click", () => accept("end"));

/** Decline the notified call (ringing or waiting). */
function decline() {
  const id = notifiedId();
  if (id) request(protocol.decline(id)).catch(showError);
}
byId("decline-button").addEventListener("click", decline);
byId("waiting-decline-button").addEventListener("click", decline);

byId("held-button").addEventListener("click", () => { byId("calls-popup").hidden = false; });
byId("calls-popup-close").addEventListener("click", () => { byId("calls-popup").hidden = true; });

byId("offer-take-button").addEventListener("click", () => {
  const id = state.offered;
  dispatch({ type: "offer.dismissed" });
  if (id) request(protocol.answer(id)).catch(showError);
});
byId("offer-later-button").addEventListener("click", () => dispatch({ type: "offer.dismissed" }));

byId("logs-button").addEventListener("click", () => dispatch({ type: "prompt.show" }));
byId("log-form").addEventListener("submit", (e) => { e.preventDefault(); savePrompt(); });
byId("log-close").addEventListener("click", () => {
  // A log is never lost by closing the window: say so, and keep it here.
  dispatch({ type: "prompt.error", text: "This call log is not saved. Save it, keep it for later, or dismiss it." });
});
byId("log-later").addEventListener("click", () => dispatch({ type: "prompt.later" }));
byId("log-dismiss").addEventListener("click", () => {
  const prompt = state.shownPrompt;
  if (!prompt) return;
  const number = prompt.call.prospect.number;
  request(protocol.dismissLog(number)).catch(() => {});
  dispatch({ type: "prompt.closed", number });
});

if (settings.token) inputById("token").value = settings.token;
