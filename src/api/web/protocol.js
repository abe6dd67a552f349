// @ts-check
// The agent protocol as the dialer speaks it (docs/agent-protocol.md): every message either
// side sends, typed here once; the builders of the client's messages; the reader of the
// gateway's; and the connection, the one path every message to the gateway takes. No DOM:
// node imports this module in the page's unit tests.

/**
 * A request's correlation id: any JSON, a string in practice (the page sends "1", "2", ...).
 * @typedef {string | number | null} Req
 */

/**
 * @typedef {object} Prospect
 * @property {string} number
 * @property {string | null} [name]
 * @property {string | null} [prospect_id]
 */

/**
 * @typedef {"ringing" | "waiting" | "dialing" | "active" | "on_hold" | "ended"} CallStatus
 */

/**
 * A call as the gateway shows it (the call object of the protocol).
 * @typedef {object} Call
 * @property {string} call_id
 * @property {"inbound" | "outbound"} direction
 * @property {string} [from]
 * @property {string} [to]
 * @property {Prospect} prospect
 * @property {CallStatus} status
 * @property {string | null} [queued_at]
 * @property {string} created_at
 * @property {string | null} [answered_at]
 * @property {string | null} [ended_at]
 * @property {string | null} [end_reason]
 * @property {"off" | "recording" | "paused" | "failed"} recording
 * @property {string | null} [agent_id]
 * @property {string | null} [node] in a cluster (calls API): the node the call lives on
 * @property {string | null} [node_url] and where that node is reached, while it is live
 */

/**
 * A live node of a cluster, as the `ok` to `auth` lists them.
 * @typedef {{ node: string, url: string }} NodeInfo
 */

/**
 * A STUN or TURN server for the peer connection (RTCIceServer's fields).
 * @typedef {object} IceServer
 * @property {string | string[]} urls
 * @property {string} [username]
 * @property {string} [credential]
 */

/**
 * The `RTCIceCandidateInit` fields of a trickled candidate.
 * @typedef {object} CandidateInit
 * @property {string} [candidate]
 * @property {string | null} [sdpMid]
 * @property {number | null} [sdpMLineIndex]
 * @property {string | null} [usernameFragment]
 */

// --- Gateway -> agent -------------------------------------------------------------------

/**
 * A request done. To `auth`: `agent_id` and `ice_servers`, and in a cluster this `node` and
 * the live `nodes`; to a call request: `call_id`.
 * @typedef {{ type: "ok", req?: Req, agent_id?: string, ice_servers?: IceServer[], call_id?: string,
 *   node?: string, nodes?: NodeInfo[] }} OkMessage
 */
/** @typedef {{ type: "error", req?: Req, code: string, message: string }} ErrorMessage */
/** @typedef {{ type: "pong", req?: Req }} PongMessage */
/** @typedef {{ type: "webrtc.answer", req?: Req, sdp: string }} WebrtcAnswerMessage */
/**
 * Not sent by callgate (its candidates are all in the answer); read for other gateways.
 * @typedef {{ type: "webrtc.candidate", candidate: CandidateInit | null }} ServerCandidateMessage
 */
/** @typedef {{ type: "calls.snapshot", req?: Req, calls: Call[], ice_servers?: IceServer[] }} SnapshotMessage */
/** @typedef {{ type: "call.incoming", call: Call }} IncomingMessage */
/** @typedef {{ type: "call.waiting", call: Call, queue_length: number }} WaitingMessage */
/** @typedef {{ type: "call.offer", call: Call }} OfferMessage */
/** @typedef {{ type: "call.updated", call: Call }} UpdatedMessage */
/** @typedef {{ type: "call.ended", call: Call }} EndedMessage */
/** @typedef {{ type: "call_log.prompt", call: Call, call_ids: string[] }} LogPromptMessage */
/** @typedef {"listen" | "whisper" | "barge" | "stop"} MonitorMode */
/** @typedef {{ type: "monitor.updated", call: Call, mode: MonitorMode }} MonitorUpdatedMessage */
/** @typedef {{ type: "monitor.ended", call: Call }} MonitorEndedMessage */

/**
 * Everything the gateway sends.
 * @typedef {OkMessage | ErrorMessage | PongMessage | WebrtcAnswerMessage | ServerCandidateMessage
 *   | SnapshotMessage | IncomingMessage | WaitingMessage | OfferMessage | UpdatedMessage
 *   | EndedMessage | LogPromptMessage | MonitorUpdatedMessage | MonitorEndedMessage} ServerMessage
 */

/** The replies to a request (what `Connection.request` resolves with). */
/** @typedef {OkMessage | PongMessage | WebrtcAnswerMessage | SnapshotMessage} ReplyMessage */

// --- Agent -> gateway -------------------------------------------------------------------

/** @typedef {{ type: "auth", token: string, monitor?: boolean }} AuthRequest */
/** @typedef {{ type: "ping" }} PingRequest */
/** @typedef {{ type: "webrtc.offer", sdp: string }} WebrtcOfferRequest */
/** @typedef {{ type: "webrtc.candidate", candidate: CandidateInit | null }} WebrtcCandidateRequest */
/** @typedef {{ type: "call.answer", call_id: string }} AnswerRequest */
/** @typedef {{ type: "call.accept", call_id: string, mode: "end" | "hold" }} AcceptRequest */
/** @typedef {{ type: "call.decline", call_id: string }} DeclineRequest */
/** @typedef {{ type: "call.hold", call_id: string }} HoldRequest */
/** @typedef {{ type: "call.resume", call_id: string }} ResumeRequest */
/** @typedef {{ type: "call.hangup", call_id: string }} HangupRequest */
/** @typedef {{ type: "call.dial", to: string, name?: string, prospect_id?: string }} DialRequest */
/** @typedef {{ type: "call.dtmf", call_id: string, digits: string }} DtmfRequest */
/** @typedef {{ type: "call.transfer", call_id: string, to: string }} BlindTransferRequest */
/** @typedef {{ type: "call.transfer", call_id: string, attended_call_id: string }} AttendedTransferRequest */
/** @typedef {{ type: "call.monitor", call_id: string, mode: MonitorMode }} MonitorRequest */
/** @typedef {"start" | "pause" | "resume" | "stop"} RecordAction */
/** @typedef {{ type: "call.record", call_id: string, action: RecordAction }} RecordRequest */
/** @typedef {{ type: "calls.list" }} ListRequest */
/** @typedef {{ type: "call_log.dismiss", number: string }} DismissLogRequest */

/**
 * Everything the page sends (without `req`: `Connection.request` adds it).
 * @typedef {AuthRequest | PingRequest | WebrtcOfferRequest | WebrtcCandidateRequest
 *   | AnswerRequest | AcceptRequest | DeclineRequest | HoldRequest | ResumeRequest
 *   | HangupRequest | DialRequest | DtmfRequest | BlindTransferRequest
 *   | AttendedTransferRequest | MonitorRequest | RecordRequest | ListRequest
 *   | DismissLogRequest} ClientMessage
 */

// --- Builders ---------------------------------------------------------------------------

/** @param {string} token @returns {AuthRequest} */
export const auth = (token) => ({ type: "auth", token });
/**
 * A supervisor's monitoring connection to another node of the cluster: it only monitors.
 * @param {string} token @returns {AuthRequest}
 */
export const monitorAuth = (token) => ({ type: "auth", token, monitor: true });
/** @returns {PingRequest} */
export const ping = () => ({ type: "ping" });
/** @param {string} sdp @returns {WebrtcOfferRequest} */
export const webrtcOffer = (sdp) => ({ type: "webrtc.offer", sdp });
/** @param {CandidateInit | null} candidate @returns {WebrtcCandidateRequest} */
export const webrtcCandidate = (candidate) => ({ type: "webrtc.candidate", candidate });
/** @param {string} callId @returns {AnswerRequest} */
export const answer = (callId) => ({ type: "call.answer", call_id: callId });
/** @param {string} callId @param {"end" | "hold"} mode @returns {AcceptRequest} */
export const accept = (callId, mode) => ({ type: "call.accept", call_id: callId, mode });
/** @param {string} callId @returns {DeclineRequest} */
export const decline = (callId) => ({ type: "call.decline", call_id: callId });
/** @param {string} callId @returns {HoldRequest} */
export const hold = (callId) => ({ type: "call.hold", call_id: callId });
/** @param {string} callId @returns {ResumeRequest} */
export const resume = (callId) => ({ type: "call.resume", call_id: callId });
/** @param {string} callId @returns {HangupRequest} */
export const hangup = (callId) => ({ type: "call.hangup", call_id: callId });
/** @param {string} to @returns {DialRequest} */
export const dial = (to) => ({ type: "call.dial", to });
/** @param {string} callId @param {string} digits @returns {DtmfRequest} */
export const dtmf = (callId, digits) => ({ type: "call.dtmf", call_id: callId, digits });
/** @param {string} callId @param {string} to @returns {BlindTransferRequest} */
export const transfer = (callId, to) => ({ type: "call.transfer", call_id: callId, to });
/** @param {string} callId @param {string} consultCallId @returns {AttendedTransferRequest} */
export const attendedTransfer = (callId, consultCallId) => ({
  type: "call.transfer", call_id: callId, attended_call_id: consultCallId,
});
/** @param {string} callId @param {MonitorMode} mode @returns {MonitorRequest} */
export const monitor = (callId, mode) => ({ type: "call.monitor", call_id: callId, mode });
/** @param {string} callId @param {RecordAction} action @returns {RecordRequest} */
export const record = (callId, action) => ({ type: "call.record", call_id: callId, action });
/** @returns {ListRequest} */
export const listCalls = () => ({ type: "calls.list" });
/** @param {string} number @returns {DismissLogRequest} */
export const dismissLog = (number) => ({ type: "call_log.dismiss", number });

/**
 * A message as it goes on the wire: `req`, when given, last.
 * @param {ClientMessage} message
 * @param {string} [req]
 * @returns {string}
 */
export function encode(message, req) {
  return JSON.stringify(req === undefined ? message : { ...message, req });
}

// --- Reading the gateway's messages ----------------------------------------------------

/** Every `type` the gateway sends (ServerMessage::TYPES), plus `webrtc.candidate`. */
export const SERVER_TYPES = Object.freeze([
  "ok", "error", "pong", "webrtc.answer", "webrtc.candidate", "calls.snapshot",
  "call.incoming", "call.waiting", "call.offer", "call.updated", "call.ended",
  "call_log.prompt", "monitor.updated", "monitor.ended",
]);

/**
 * What reading one WebSocket message gave: a known message, or why not (with its type and
 * req when it had them, e.g. a type newer than this page).
 * @typedef {{ ok: true, message: ServerMessage }
 *   | { ok: false, reason: string, type: string | null, req: Req | undefined }} Decoded
 */

/** @param {unknown} v @returns {v is Record<string, unknown>} */
const isObject = (v) => typeof v === "object" && v !== null && !Array.isArray(v);

/** @param {unknown} call @returns {boolean} */
const isCall = (call) => isObject(call) && typeof call.call_id === "string"
  && typeof call.status === "string" && isObject(call.prospect);

/**
 * Why a message of a known type cannot be used, or null. Only what the page reads is checked
 * (`monitor.ended`, `ok` and `pong` it takes as they come).
 * @param {Record<string, unknown>} m
 * @returns {string | null}
 */
function malformed(m) {
  switch (m.type) {
    case "calls.snapshot":
      return Array.isArray(m.calls) && m.calls.every(isCall) ? null : "calls: not a list of calls";
    case "call.incoming": case "call.offer": case "call.updated": case "call.ended":
      return isCall(m.call) ? null : "call: missing or not a call";
    case "call.waiting":
      if (!isCall(m.call)) return "call: missing or not a call";
      return typeof m.queue_length === "number" ? null : "queue_length: not a number";
    case "call_log.prompt":
      if (!isCall(m.call)) return "call: missing or not a call";
      return Array.isArray(m.call_ids) ? null : "call_ids: not a list";
    case "monitor.updated":
      if (!isCall(m.call)) return "call: missing or not a call";
      return typeof m.mode === "string" ? null : "mode: not a string";
    case "error":
      return typeof m.code === "string" && typeof m.message === "string" ? null : "code/message: missing";
    case "webrtc.answer":
      return typeof m.sdp === "string" ? null : "sdp: missing";
    default:
      return null;
  }
}

/**
 * Read one message from the gateway: JSON with a known `type` and the fields the page uses.
 * Never throws; anything else is refused with its reason.
 * @param {unknown} data the WebSocket message's data
 * @returns {Decoded}
 */
export function decode(data) {
  let value;
  try {
    value = JSON.parse(String(data));
  } catch {
    return { ok: false, reason: "not JSON", type: null, req: undefined };
  }
  if (!isObject(value) || typeof value.type !== "string") {
    return { ok: false, reason: "no type", type: null, req: undefined };
  }
  const type = value.type;
  const req = /** @type {Req | undefined} */ (value.req);
  if (!SERVER_TYPES.includes(type)) return { ok: false, reason: `unknown type ${type}`, type, req };
  const why = malformed(value);
  if (why) return { ok: false, reason: `${type}: ${why}`, type, req };
  return { ok: true, message: /** @type {ServerMessage} */ (/** @type {unknown} */ (value)) };
}

// --- The connection: the one send path -------------------------------------------------

/** WebSocket.OPEN (a constant here so node can load the module without a WebSocket). */
export const OPEN = 1;

/**
 * What the connection needs of a WebSocket (a fake one in the tests).
 * @typedef {{ readyState: number, send(data: string): void }} SocketLike
 */

/** A refused request: the gateway's `error` reply, with its code. */
export class RequestError extends Error {
  /** @param {string} code @param {string} message */
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

/** A request left unanswered when the socket closed (the page does not show it). */
export class Disconnected extends Error {
  constructor() {
    super("disconnected");
  }
}

/**
 * The page's side of the agent WebSocket: everything sent goes through `send`, which
 * serialises and refuses (returns false) when the socket is not open; `request` adds a `req`
 * and resolves with the gateway's reply (rejects with its `error`, or when not connected).
 */
export class Connection {
  /** @param {SocketLike} socket */
  constructor(socket) {
    this.socket = socket;
    /** @type {Map<string, { resolve: (m: ReplyMessage) => void, reject: (e: Error) => void }>} */
    this.pending = new Map();
    this.nextReq = 1;
  }

  get open() {
    return this.socket.readyState === OPEN;
  }

  /**
   * The one send path.
   * @param {ClientMessage} message
   * @param {string} [req]
   * @returns {boolean} whether it went out
   */
  send(message, req) {
    if (!this.open) return false;
    this.socket.send(encode(message, req));
    return true;
  }

  /**
   * @param {ClientMessage} message
   * @returns {Promise<ReplyMessage>}
   */
  request(message) {
    if (!this.open) return Promise.reject(new Error("not connected"));
    const req = String(this.nextReq++);
    /** @type {Promise<ReplyMessage>} */
    const promise = new Promise((resolve, reject) => this.pending.set(req, { resolve, reject }));
    this.send(message, req);
    return promise;
  }

  /**
   * Settle the request a message answers, if it answers one of ours.
   * @param {ServerMessage} message
   * @returns {boolean} whether it did
   */
  settle(message) {
    if (!("req" in message) || message.req === undefined || message.req === null) return false;
    const key = String(message.req);
    const pending = this.pending.get(key);
    if (!pending) return false;
    this.pending.delete(key);
    // Only the replies (ok, error, pong, webrtc.answer, calls.snapshot) carry a req.
    if (message.type === "error") pending.reject(new RequestError(message.code, message.message));
    else pending.resolve(message);
    return true;
  }

  /** The socket closed: every open request fails with `Disconnected`. */
  closed() {
    for (const pending of this.pending.values()) pending.reject(new Disconnected());
    this.pending.clear();
  }
}
