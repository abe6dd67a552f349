// @ts-check
// A supervisor's monitoring connection to another node of a cluster. A call's media lives on
// the node its agent is signed in on, so to hear it the page opens a second agent WebSocket
// there (`auth` with `monitor: true`: it signs the supervisor in nowhere and may only
// monitor) and a second peer connection over it; the supervisor's own connection, calls and
// audio stay where they are.

import * as protocol from "./protocol.js";
import { Media } from "./media.js";

/** @typedef {import("./media.js").Settings} Settings */
/** @typedef {import("./protocol.js").ServerMessage} ServerMessage */

/**
 * The agent WebSocket's address on the node at `base` (an origin such as
 * `https://b.example.com`).
 * @param {string} base
 * @returns {string}
 */
export function socketUrl(base) {
  const url = new URL("/v1/agent/ws", base);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  return url.href;
}

/**
 * @typedef {object} MonitorHooks
 * @property {(msg: ServerMessage) => void} message a message from that node (monitor.updated,
 *   monitor.ended, error)
 * @property {() => void} closed the connection closed without `close` being called
 * @property {(stream: MediaStream) => void} remote the monitored call's audio arrived
 */

export class RemoteMonitor {
  /**
   * @param {string} base the node's URL
   * @param {string} token the supervisor's token
   * @param {Settings} settings
   * @param {MediaStream | null} mic the page's microphone (whisper and barge speak with it)
   * @param {MonitorHooks} hooks
   */
  constructor(base, token, settings, mic, hooks) {
    this.base = base;
    this.token = token;
    this.hooks = hooks;
    /** @type {protocol.Connection | null} */
    this.connection = null;
    /** @type {WebSocket | null} */
    this.socket = null;
    this.closing = false;
    this.media = new Media(settings, {
      candidate: (candidate) => { if (this.connection) this.connection.send(protocol.webrtcCandidate(candidate)); },
      state: () => {},
      remote: (stream) => hooks.remote(stream),
    });
    this.media.mic = mic;
  }

  /** Connect, authenticate for monitoring, and bring the peer connection up. */
  async open() {
    const ws = new WebSocket(socketUrl(this.base));
    const conn = new protocol.Connection(ws);
    this.socket = ws;
    this.connection = conn;
    ws.onmessage = (event) => {
      const decoded = protocol.decode(event.data);
      if (!decoded.ok) return;
      const msg = decoded.message;
      conn.settle(msg);
      if (msg.type === "webrtc.candidate" && msg.candidate) this.media.addCandidate(msg.candidate);
      else this.hooks.message(msg);
    };
    const opened = new Promise((resolve, reject) => {
      ws.onopen = resolve;
      ws.onclose = () => reject(new Error(`monitoring: cannot reach ${this.base}`));
    });
    await opened;
    ws.onclose = () => {
      conn.closed();
      this.media.stop();
      if (!this.closing) this.hooks.closed();
    };
    const ok = await conn.request(protocol.monitorAuth(this.token));
    const sdp = await this.media.start(ok.type === "ok" && ok.ice_servers ? ok.ice_servers : []);
    const answer = await conn.request(protocol.webrtcOffer(sdp));
    if (answer.type === "webrtc.answer") await this.media.answer(answer.sdp);
  }

  /**
   * A request over this connection (`call.monitor`).
   * @param {protocol.ClientMessage} message
   * @returns {Promise<protocol.ReplyMessage>}
   */
  request(message) {
    return this.connection ? this.connection.request(message) : Promise.reject(new Error("not connected"));
  }

  /** Leave: the node ends the monitoring when the connection closes. */
  close() {
    this.closing = true;
    if (this.socket) this.socket.close();
    this.media.stop();
  }
}
