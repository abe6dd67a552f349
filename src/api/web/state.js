// @ts-check
// The dialer's state and the pure functions that change it: `reduce` for a message from the
// gateway, `apply` for what happens in the page (sign-in, a button, a fetch's result), and the
// selectors the views read. No DOM, no WebSocket, no timers: every function returns a new
// state (or the same one when nothing changed) and node runs them in the unit tests.

/** @typedef {import("./protocol.js").Call} Call */
/** @typedef {import("./protocol.js").IceServer} IceServer */
/** @typedef {import("./protocol.js").ServerMessage} ServerMessage */
/** @typedef {import("./protocol.js").MonitorMode} MonitorMode */
/** @typedef {import("./protocol.js").NodeInfo} NodeInfo */

/**
 * An open call-log prompt: one per prospect number, open until saved or dismissed.
 * @typedef {{ call: Call, call_ids: string[] }} Prompt
 */

/**
 * The call this supervisor monitors and how.
 * @typedef {{ call_id: string, mode: MonitorMode, number: string }} Monitoring
 */

/**
 * @typedef {object} State
 * @property {boolean} online signed in, the WebSocket open
 * @property {string | null} agentId
 * @property {IceServer[]} iceServers
 * @property {string | null} node in a cluster, the node signed in on
 * @property {NodeInfo[]} nodes in a cluster, its live nodes when the page last signed in
 * @property {boolean} reconnecting the connection was lost and the page is signing in again,
 *   on another node of the cluster first
 * @property {number | null} closedCode the WebSocket's close code, once it closed
 * @property {string} signinError
 * @property {Map<string, Call>} calls this agent's calls by id (replaced, never changed in place)
 * @property {string | null} waitingHead the call the last call.waiting announced
 * @property {number} queueLength
 * @property {string | null} offered the call the last call.offer offered, until taken or put off
 * @property {Prompt[]} prompts
 * @property {Prompt | null} shownPrompt the prompt on screen
 * @property {number} promptSeq counts the prompts shown (the form starts empty each time)
 * @property {string} promptError
 * @property {Monitoring | null} monitoring
 * @property {Call[]} liveCalls other agents' live calls (supervisors)
 * @property {string | null} media the peer connection's state, null without one
 * @property {string} dialError
 * @property {string} sentDigits DTMF sent during the current call
 * @property {string | null} lastError
 */

/** @type {State} */
export const initialState = Object.freeze({
  online: false,
  agentId: null,
  iceServers: [],
  node: null,
  nodes: [],
  reconnecting: false,
  closedCode: null,
  signinError: "",
  calls: new Map(),
  waitingHead: null,
  queueLength: 0,
  offered: null,
  prompts: [],
  shownPrompt: null,
  promptSeq: 0,
  promptError: "",
  monitoring: null,
  liveCalls: [],
  media: null,
  dialError: "",
  sentDigits: "",
  lastError: null,
});

// --- Selectors --------------------------------------------------------------------------

/** @param {string | null | undefined} n */
export const formatNumber = (n) => n || "unknown";

/**
 * The call in progress: active, or dialing out.
 * @param {State} state
 * @returns {Call | null}
 */
export function activeCall(state) {
  for (const c of state.calls.values()) {
    if (c.status === "active" || c.status === "dialing") return c;
  }
  return null;
}

/** @param {State} state @returns {Call | null} */
export function ringingCall(state) {
  for (const c of state.calls.values()) {
    if (c.status === "ringing") return c;
  }
  return null;
}

/**
 * The call the notification shows: a ringing call, else the head of the waiting calls the
 * gateway announced with call.waiting.
 * @param {State} state
 * @returns {Call | null}
 */
export function notifiedCall(state) {
  const ringing = ringingCall(state);
  if (ringing) return ringing;
  const head = state.waitingHead ? state.calls.get(state.waitingHead) : undefined;
  return head && head.status === "waiting" ? head : null;
}

/** @type {Record<string, number>} */
const ORDER = { active: 0, dialing: 1, on_hold: 2, waiting: 2, ringing: 3 };

/**
 * The agent's calls not ended: the active one first, then the queue in FIFO order.
 * @param {State} state
 * @returns {Call[]}
 */
export function ownCalls(state) {
  return [...state.calls.values()]
    .filter((c) => c.status !== "ended")
    .sort((a, b) => (ORDER[a.status] - ORDER[b.status])
      || String(a.queued_at || a.created_at).localeCompare(String(b.queued_at || b.created_at)));
}

/**
 * The queue: held and waiting calls, in FIFO order (by `queued_at`).
 * @param {State} state
 * @returns {Call[]}
 */
export function queuedCalls(state) {
  return ownCalls(state).filter((c) => c.status === "on_hold" || c.status === "waiting");
}

/**
 * Held calls other than `callId` (those an attended transfer may connect to it).
 * @param {State} state
 * @param {string} callId
 * @returns {Call[]}
 */
export function heldCalls(state, callId) {
  return [...state.calls.values()].filter((c) => c.status === "on_hold" && c.call_id !== callId);
}

/**
 * The offered call while it is still queued and nothing else is active, else null.
 * @param {State} state
 * @returns {Call | null}
 */
export function offeredCall(state) {
  const offered = state.offered ? state.calls.get(state.offered) : undefined;
  const show = offered && (offered.status === "waiting" || offered.status === "on_hold") && !activeCall(state);
  return show && offered ? offered : null;
}

/**
 * The last 20 ended calls, newest first.
 * @param {State} state
 * @returns {Call[]}
 */
export function recentCalls(state) {
  return [...state.calls.values()]
    .filter((c) => c.status === "ended")
    .sort((a, b) => Date.parse(b.ended_at || "0") - Date.parse(a.ended_at || "0"))
    .slice(0, 20);
}

/**
 * The recording badge and the one action that fits the call's recording state (the gateway
 * answers `forbidden` when recording is off for this call, shown like any error).
 * @type {Record<string, { badge: string, action: import("./protocol.js").RecordAction | null, label: string }>}
 */
export const RECORDING = Object.freeze({
  recording: { badge: "● REC", action: "pause", label: "Pause recording" },
  paused: { badge: "REC paused", action: "resume", label: "Resume recording" },
  off: { badge: "", action: "start", label: "Record" },
  failed: { badge: "REC failed", action: null, label: "" },
});

/** @param {Call} call */
export const recordingOf = (call) => RECORDING[call.recording] || RECORDING.off;

// --- Reducing the gateway's messages ----------------------------------------------------

/**
 * The state with `calls` replaced; what depends on the active call follows (the DTMF sent
 * is forgotten once no call is in progress).
 * @param {State} state
 * @param {Map<string, Call>} calls
 * @param {Partial<State>} [more]
 * @returns {State}
 */
function withCalls(state, calls, more) {
  const next = { ...state, ...more, calls };
  if (next.sentDigits && !activeCall(next)) next.sentDigits = "";
  return next;
}

/** @param {State} state @param {Call} call @param {Partial<State>} [more] */
function upsert(state, call, more) {
  const calls = new Map(state.calls);
  calls.set(call.call_id, call);
  return withCalls(state, calls, more);
}

/**
 * The state after a message from the gateway. Messages that change nothing the page shows
 * (`ok`, `pong`, the WebRTC answer) give back the same state.
 * @param {State} state
 * @param {ServerMessage} msg
 * @returns {State}
 */
export function reduce(state, msg) {
  switch (msg.type) {
    case "calls.snapshot": {
      const waiting = msg.calls.filter((c) => c.status === "waiting")
        .sort((a, b) => String(a.queued_at).localeCompare(String(b.queued_at)));
      return withCalls(state, new Map(msg.calls.map((c) => [c.call_id, c])), {
        waitingHead: waiting.length ? waiting[0].call_id : null,
        queueLength: msg.calls.filter((c) => c.status === "waiting" || c.status === "on_hold").length,
      });
    }
    case "call.incoming":
    case "call.updated":
    case "call.ended":
      return upsert(state, msg.call);
    case "call.waiting":
      return upsert(state, msg.call, { waitingHead: msg.call.call_id, queueLength: msg.queue_length });
    case "call.offer":
      return upsert(state, msg.call, { offered: msg.call.call_id });
    case "call_log.prompt": {
      // At most one prompt per prospect number: a second one is merged into it.
      const number = msg.call.prospect.number;
      const open = state.prompts.find((p) => p.call.prospect.number === number);
      const prompt = { call: msg.call, call_ids: msg.call_ids };
      const prompts = open ? state.prompts.map((p) => (p === open ? prompt : p)) : [...state.prompts, prompt];
      /** @type {Partial<State>} */
      let shown = { prompts };
      if (!state.shownPrompt) shown = { ...shown, ...showing(state, prompt) };
      else if (state.shownPrompt === open) shown.shownPrompt = prompt;
      return upsert(state, msg.call, shown);
    }
    case "monitor.updated":
      return {
        ...state,
        monitoring: { call_id: msg.call.call_id, mode: msg.mode, number: msg.call.prospect.number },
      };
    case "monitor.ended":
      return state.monitoring ? { ...state, monitoring: null } : state;
    case "error":
      return { ...state, lastError: `${msg.code}: ${msg.message}` };
    case "ok":
    case "pong":
    case "webrtc.answer":
    case "webrtc.candidate":
      return state;
    default:
      // A type this page does not know (protocol.decode refuses those first).
      return state;
  }
}

// --- What happens in the page ----------------------------------------------------------

/**
 * @typedef {{ type: "signin.started" }
 *   | { type: "signin.done", agentId: string, iceServers: IceServer[], node?: string | null,
 *       nodes?: NodeInfo[] }
 *   | { type: "socket.closed", code: number, reconnecting?: boolean }
 *   | { type: "media.state", state: string | null }
 *   | { type: "dial.error", text: string }
 *   | { type: "failed", error: string }
 *   | { type: "dtmf.sent", digit: string }
 *   | { type: "offer.dismissed" }
 *   | { type: "prompt.show" }
 *   | { type: "prompt.later" }
 *   | { type: "prompt.closed", number: string }
 *   | { type: "prompt.error", text: string }
 *   | { type: "monitor.stopped" }
 *   | { type: "live.loaded", calls: Call[] }} Action
 */

/** What the sign-in card says after the WebSocket closed with `code`. @param {number} code */
export function closeReason(code) {
  if (code === 4401) return "That token was not accepted.";
  if (code === 4409) return "You signed in somewhere else; this page is no longer connected.";
  return "Disconnected from the gateway. Sign in again to continue.";
}

/** Reconnection attempts before the page gives up and asks for a sign-in. */
export const RECONNECT_ATTEMPTS = 12;

/**
 * Where to sign in again after the socket closed with `code`, in order, or null for nowhere:
 * only in a cluster and after a sign-in that worked, never after a refused token (4401) or a
 * sign-in elsewhere (4409). The other nodes come first, in the gateway's order from the one
 * after the lost node; the lost node last (it may only have restarted).
 * @param {State} state
 * @param {number} code
 * @returns {string[] | null}
 */
export function reconnectTargets(state, code) {
  if (code === 4401 || code === 4403 || code === 4409) return null;
  if (!state.agentId || state.nodes.length === 0) return null;
  const lost = state.nodes.findIndex((n) => n.node === state.node);
  const order = lost < 0 ? state.nodes : [...state.nodes.slice(lost + 1), ...state.nodes.slice(0, lost + 1)];
  return order.map((n) => n.url);
}

/**
 * How long to wait before reconnection attempt `attempt` (0, 1, ...) over `targets` nodes:
 * each node once at once (a quarter second apart), then rounds one, two, four seconds apart,
 * up to eight.
 * @param {number} attempt
 * @param {number} targets
 * @returns {number} milliseconds
 */
export function reconnectDelay(attempt, targets) {
  const round = Math.floor(attempt / Math.max(1, targets));
  return round === 0 ? 250 : Math.min(8000, 1000 * 2 ** (round - 1));
}

/**
 * Show `prompt` (the form starts empty).
 * @param {State} state
 * @param {Prompt} prompt
 * @returns {Partial<State>}
 */
function showing(state, prompt) {
  return { shownPrompt: prompt, promptSeq: state.promptSeq + 1, promptError: "" };
}

/** @param {Call} a @param {Call} b */
const sameCall = (a, b) => a === b || JSON.stringify(a) === JSON.stringify(b);

/**
 * The state after something in the page.
 * @param {State} state
 * @param {Action} action
 * @returns {State}
 */
export function apply(state, action) {
  switch (action.type) {
    case "signin.started":
      // While reconnecting, the card goes on saying so.
      return { ...state, signinError: state.reconnecting ? state.signinError : "", closedCode: null };
    case "signin.done":
      return {
        ...state, online: true, agentId: action.agentId, iceServers: action.iceServers,
        node: action.node || null, nodes: action.nodes || [], reconnecting: false, signinError: "",
      };
    case "socket.closed":
      return {
        ...state, online: false, closedCode: action.code, reconnecting: !!action.reconnecting,
        signinError: action.reconnecting ? "Connection lost: reconnecting to the gateway…" : closeReason(action.code),
        // What this node was monitoring ended with the connection.
        monitoring: action.reconnecting ? null : state.monitoring,
      };
    case "media.state":
      return state.media === action.state ? state : { ...state, media: action.state };
    case "dial.error":
      return state.dialError === action.text ? state : { ...state, dialError: action.text };
    case "failed":
      return { ...state, lastError: action.error };
    case "dtmf.sent":
      return { ...state, sentDigits: state.sentDigits + action.digit };
    case "offer.dismissed":
      return state.offered === null ? state : { ...state, offered: null };
    case "prompt.show":
      return state.prompts.length ? { ...state, ...showing(state, state.prompts[0]) } : state;
    case "prompt.later":
      return state.shownPrompt ? { ...state, shownPrompt: null } : state;
    case "prompt.closed": {
      const prompts = state.prompts.filter((p) => p.call.prospect.number !== action.number);
      const next = { ...state, prompts, shownPrompt: null };
      return prompts.length ? { ...next, ...showing(next, prompts[0]) } : next;
    }
    case "prompt.error":
      return { ...state, promptError: action.text };
    case "monitor.stopped":
      return state.monitoring ? { ...state, monitoring: null } : state;
    case "live.loaded": {
      // Other agents' calls; the ones unchanged since the last load stay the same objects,
      // so their rows are not rebuilt.
      const before = new Map(state.liveCalls.map((c) => [c.call_id, c]));
      const calls = action.calls
        .filter((c) => c.agent_id && c.agent_id !== state.agentId)
        .map((c) => {
          const old = before.get(c.call_id);
          return old && sameCall(old, c) ? old : c;
        });
      const same = calls.length === state.liveCalls.length && calls.every((c, i) => c === state.liveCalls[i]);
      return same ? state : { ...state, liveCalls: calls };
    }
    default:
      return state;
  }
}
