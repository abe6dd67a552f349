// @ts-check
// The agent's audio: the microphone, the one WebRTC peer connection to the gateway (which
// switches calls inside it), and the page's audio settings. The settings come from the page's
// address (#processing=off, #ice=relay, #ice=tcp); reading them and filtering an answer's
// candidates are pure, for the unit tests. Nothing here touches the browser until `start`.

/** @typedef {import("./protocol.js").IceServer} IceServer */
/** @typedef {import("./protocol.js").CandidateInit} CandidateInit */

/**
 * The page's settings from its address's fragment.
 * @typedef {object} Settings
 * @property {boolean} processing echo cancellation, noise suppression and gain control
 * @property {string | null} ice "relay" forces the TURN relay; "tcp" keeps only the
 *   gateway's TCP candidate, to try ICE over TCP
 * @property {string | null} token an agent token to fill in
 */

/**
 * @param {string} hash `location.hash`, with or without its `#`
 * @returns {Settings}
 */
export function readSettings(hash) {
  const params = new URLSearchParams(hash.startsWith("#") ? hash.slice(1) : hash);
  return {
    processing: params.get("processing") !== "off",
    ice: params.get("ice"),
    token: params.get("token"),
  };
}

/**
 * The microphone's constraints. Echo cancellation and noise suppression suit a laptop;
 * headsets with their own processing (and tests with a fake tone) turn them off with
 * #processing=off.
 * @param {boolean} processing
 * @returns {MediaStreamConstraints}
 */
export function audioConstraints(processing) {
  return {
    audio: { echoCancellation: processing, noiseSuppression: processing, autoGainControl: processing },
    video: false,
  };
}

/**
 * STUN/TURN servers from the gateway (time-limited TURN credentials for this sign-in);
 * #ice=relay forces the TURN relay.
 * @param {IceServer[]} iceServers
 * @param {string | null} ice
 * @returns {RTCConfiguration}
 */
export function rtcConfig(iceServers, ice) {
  return { iceServers, iceTransportPolicy: ice === "relay" ? "relay" : "all" };
}

/**
 * The gateway's answer as the peer connection gets it: with #ice=tcp, without its UDP
 * candidates.
 * @param {string} sdp
 * @param {string | null} ice
 * @returns {string}
 */
export function answerSdp(sdp, ice) {
  if (ice !== "tcp") return sdp;
  return sdp.split("\r\n").filter((l) => !/^a=candidate:\S+ \d+ udp /i.test(l)).join("\r\n");
}

/**
 * @typedef {object} MediaHooks
 * @property {(candidate: CandidateInit) => void} candidate a local ICE candidate to trickle
 * @property {(state: string | null) => void} state the peer connection's state (null: none)
 * @property {(stream: MediaStream) => void} remote the gateway's audio arrived
 */

/** The microphone and the peer connection; `pc` and `remoteStream` are read by the tests. */
export class Media {
  /**
   * @param {Settings} settings
   * @param {MediaHooks} hooks
   */
  constructor(settings, hooks) {
    this.settings = settings;
    this.hooks = hooks;
    /** @type {MediaStream | null} kept across sign-ins */
    this.mic = null;
    /** @type {RTCPeerConnection | null} */
    this.pc = null;
    /** @type {MediaStream | null} */
    this.remoteStream = null;
  }

  /**
   * The microphone, a new peer connection and its offer.
   * @param {IceServer[]} iceServers
   * @returns {Promise<string>} the offer's SDP, for `webrtc.offer`
   */
  async start(iceServers) {
    if (!this.mic) {
      this.mic = await navigator.mediaDevices.getUserMedia(audioConstraints(this.settings.processing));
    }
    const mic = this.mic;
    const pc = new RTCPeerConnection(rtcConfig(iceServers, this.settings.ice));
    this.pc = pc;
    for (const track of mic.getAudioTracks()) pc.addTrack(track, mic);
    pc.ontrack = (e) => {
      this.remoteStream = e.streams[0] || new MediaStream([e.track]);
      this.hooks.remote(this.remoteStream);
    };
    pc.onicecandidate = (e) => {
      if (e.candidate) this.hooks.candidate(e.candidate.toJSON());
    };
    pc.onconnectionstatechange = () => this.hooks.state(pc.connectionState);
    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    return pc.localDescription ? pc.localDescription.sdp : offer.sdp || "";
  }

  /** The gateway's `webrtc.answer`. @param {string} sdp @returns {Promise<void>} */
  answer(sdp) {
    if (!this.pc) return Promise.reject(new Error("no peer connection"));
    return this.pc.setRemoteDescription({ type: "answer", sdp: answerSdp(sdp, this.settings.ice) });
  }

  /** A candidate from the gateway. @param {CandidateInit} candidate */
  addCandidate(candidate) {
    if (this.pc) this.pc.addIceCandidate(candidate).catch(() => {});
  }

  /** The WebSocket closed: the peer connection goes (the microphone stays). */
  stop() {
    if (this.pc) this.pc.close();
    this.pc = null;
    this.hooks.state(null);
  }
}
