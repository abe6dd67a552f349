// The callgate dialer: signs in over the agent WebSocket (spec/agent-protocol.md), keeps one
// WebRTC peer connection to the gateway for the agent's audio, and shows the agent's calls.
// Plain browser JavaScript, no build step. `window.callgate` exposes the state for debugging
// and for the end-to-end tests.
"use strict";

const $ = (id) => document.getElementById(id);

const state = {
  socket: null,
  pc: null,
  iceServers: [],
  mic: null,
  remoteStream: null,
  calls: new Map(),
  requests: new Map(),
  nextReq: 1,
  agentId: null,
  closedCode: null,
  lastError: null,
  events: [],
  waitingHead: null,
  queueLength: 0,
  offered: null,
  prompts: [],
  // The call this supervisor monitors and how ({ call_id, mode }), and the other agents'
  // live calls they may join.
  monitoring: null,
  liveCalls: [],
};
window.callgate = state;

function send(message) {
  if (!state.socket || state.socket.readyState !== WebSocket.OPEN) {
    return Promise.reject(new Error("not connected"));
  }
  const req = String(state.nextReq++);
  const promise = new Promise((resolve, reject) => state.requests.set(req, { resolve, reject }));
  state.socket.send(JSON.stringify({ ...message, req }));
  return promise;
}

function setPill(el, text, on) {
  el.textContent = text;
  el.classList.toggle("pill-on", on);
  el.classList.toggle("pill-off", !on);
}

function formatNumber(n) {
  return n || "unknown";
}

function activeCall() {
  for (const c of state.calls.values()) {
    if (c.status === "active" || c.status === "dialing") return c;
  }
  return null;
}

function ringingCall() {
  for (const c of state.calls.values()) {
    if (c.status === "ringing") return c;
  }
  return null;
}

// The call the notification shows: a ringing call, else the head of the waiting calls the
// gateway announced with call.waiting.
function notifiedCall() {
  const ringing = ringingCall();
  if (ringing) return ringing;
  const head = state.waitingHead && state.calls.get(state.waitingHead);
  return head && head.status === "waiting" ? head : null;
}

// Active and queued calls: the active one first, then the queue in FIFO order.
function liveCalls() {
  const order = { active: 0, dialing: 1, on_hold: 2, waiting: 2, ringing: 3 };
  return [...state.calls.values()]
    .filter((c) => c.status !== "ended")
    .sort((a, b) => (order[a.status] - order[b.status]) || String(a.queued_at || a.created_at).localeCompare(String(b.queued_at || b.created_at)));
}

function renderPopup() {
  const calls = liveCalls();
  const count = calls.filter((c) => c.status === "on_hold" || c.status === "waiting").length;
  $("held-button").hidden = calls.length === 0;
  $("held-count").textContent = String(count);
  $("calls-popup-list").replaceChildren(...calls.map((c) => {
    const li = document.createElement("li");
    li.dataset.callId = c.call_id;
    const who = document.createElement("span");
    who.className = "who";
    const name = document.createElement("strong");
    name.textContent = c.prospect.name || formatNumber(c.prospect.number);
    const st = document.createElement("span");
    st.className = "state";
    st.textContent = `${formatNumber(c.prospect.number)} · ${c.status.replace("_", " ")}`;
    who.append(name, st);
    li.append(who);
    if (c.status === "active" || c.status === "on_hold" || c.status === "waiting") {
      const button = document.createElement("button");
      button.type = "button";
      const active = c.status === "active";
      button.className = `play-pause ${active ? "hold" : "resume"}`;
      button.textContent = active ? "❚❚" : "▶";
      button.title = active ? "Hold" : "Resume";
      button.setAttribute("aria-label", `${active ? "hold" : "resume"} ${c.prospect.number}`);
      button.addEventListener("click", () => {
        const type = active ? "call.hold" : "call.resume";
        send({ type, call_id: c.call_id }).catch((err) => { $("dial-error").textContent = err.message; });
      });
      li.append(button);
    }
    return li;
  }));
}

// Call-log prompts: one per prospect, open until saved or dismissed.
let shownPrompt = null;
function renderPrompts() {
  $("logs-button").hidden = state.prompts.length === 0;
  $("logs-count").textContent = String(state.prompts.length);
}

function showPrompt(prompt) {
  shownPrompt = prompt;
  $("log-party").textContent = `${prompt.call.prospect.name || "Prospect"} · ${formatNumber(prompt.call.prospect.number)}`;
  $("log-calls").textContent = prompt.call_ids.length > 1 ? `${prompt.call_ids.length} calls with this prospect` : "";
  $("log-error").textContent = "";
  for (const box of document.querySelectorAll('#log-form input[name="tag"]')) box.checked = false;
  $("log-disposition").value = "";
  $("log-comment").value = "";
  $("log-prompt").hidden = false;
}

function closePrompt(prompt) {
  state.prompts = state.prompts.filter((p) => p !== prompt);
  $("log-prompt").hidden = true;
  shownPrompt = null;
  renderPrompts();
  if (state.prompts.length) showPrompt(state.prompts[0]);
}

async function savePrompt() {
  const prompt = shownPrompt;
  if (!prompt) return;
  const tags = [...document.querySelectorAll('#log-form input[name="tag"]:checked')].map((b) => b.value);
  const body = { tags };
  const disposition = $("log-disposition").value;
  if (disposition) body.disposition = disposition;
  const comment = $("log-comment").value.trim();
  if (comment) body.comment = comment;
  try {
    for (const id of prompt.call_ids) {
      const response = await fetch(`/v1/calls/${encodeURIComponent(id)}/log`, {
        method: "PUT",
        headers: { "Content-Type": "application/json", Authorization: `Bearer ${state.token}` },
        body: JSON.stringify(body),
      });
      if (!response.ok) {
        const err = await response.json().catch(() => ({}));
        throw new Error(err.message || `HTTP ${response.status}`);
      }
    }
    closePrompt(prompt);
  } catch (err) {
    $("log-error").textContent = `Not saved: ${err.message}`;
  }
}

function renderOffer() {
  const offered = state.offered && state.calls.get(state.offered);
  const show = offered && (offered.status === "waiting" || offered.status === "on_hold") && !activeCall();
  $("offer").hidden = !show;
  if (show) {
    $("offer").dataset.callId = offered.call_id;
    $("offer-name").textContent = offered.prospect.name || "Caller";
    $("offer-number").textContent = formatNumber(offered.prospect.number);
    $("offer-status").textContent = offered.status === "waiting" ? "Waiting to be answered" : "On hold";
  }
}

let timer = null;
// The call's recording: a badge, and the one action that fits its state (the gateway
// answers `forbidden` when recording is off for this call, shown like any error).
const RECORDING = {
  recording: { badge: "● REC", action: "pause", label: "Pause recording" },
  paused: { badge: "REC paused", action: "resume", label: "Resume recording" },
  off: { badge: "", action: "start", label: "Record" },
  failed: { badge: "REC failed", action: null, label: "" },
};

function renderRecording(call) {
  const state = RECORDING[call.recording] || RECORDING.off;
  const badge = $("current-recording");
  badge.hidden = !state.badge;
  badge.textContent = state.badge;
  badge.classList.toggle("paused", call.recording !== "recording");
  const button = $("record-button");
  button.hidden = !state.action || call.status !== "active";
  button.textContent = state.label;
  button.dataset.action = state.action || "";
}

// Transfer: blind to `agent:<id>` or a number; attended when the active call is a consult
// and a held call is waiting to be connected to it.
function renderTransfer(call) {
  $("transfer-form").hidden = call.status !== "active";
  const held = [...state.calls.values()].filter((c) => c.status === "on_hold" && c.call_id !== call.call_id);
  $("attended-box").hidden = call.status !== "active" || held.length === 0;
  const select = $("attended-with");
  const chosen = select.value;
  select.replaceChildren(...held.map((c) => {
    const option = document.createElement("option");
    option.value = c.call_id;
    option.textContent = `Connect ${formatNumber(c.prospect.number)} to this call`;
    return option;
  }));
  if (held.some((c) => c.call_id === chosen)) select.value = chosen;
}

// Supervisors: other agents' live calls (GET /v1/calls shows an agent only their own, so the
// list is empty for them and the card stays hidden), each with Listen / Whisper / Barge.
async function refreshLiveCalls() {
  if (!state.token || !state.socket || state.socket.readyState !== WebSocket.OPEN) return;
  const response = await fetch("/v1/calls?status=active,on_hold&limit=100", {
    headers: { Authorization: `Bearer ${state.token}` },
  });
  if (!response.ok) return;
  const page = await response.json();
  state.liveCalls = page.calls.filter((c) => c.agent_id && c.agent_id !== state.agentId);
  renderLiveCalls();
}

function renderLiveCalls() {
  $("supervise").hidden = state.liveCalls.length === 0 && !state.monitoring;
  const status = $("monitor-status");
  status.hidden = !state.monitoring;
  if (state.monitoring) status.textContent = `${state.monitoring.mode} · ${formatNumber(state.monitoring.number)}`;
  $("live-calls").replaceChildren(...state.liveCalls.map((c) => {
    const li = document.createElement("li");
    li.dataset.callId = c.call_id;
    const who = document.createElement("span");
    who.textContent = `${c.agent_id} · ${formatNumber(c.prospect.number)} · ${c.status.replace("_", " ")}`;
    const actions = document.createElement("span");
    actions.className = "monitor-actions";
    const watching = state.monitoring && state.monitoring.call_id === c.call_id;
    for (const mode of ["listen", "whisper", "barge", "stop"]) {
      if (mode === "stop" && !watching) continue;
      const button = document.createElement("button");
      button.type = "button";
      button.dataset.mode = mode;
      button.textContent = mode[0].toUpperCase() + mode.slice(1);
      button.classList.toggle("on", watching && state.monitoring.mode === mode);
      button.addEventListener("click", () => {
        send({ type: "call.monitor", call_id: c.call_id, mode }).then(() => {
          if (mode === "stop") { state.monitoring = null; renderLiveCalls(); }
        }).catch((err) => { $("dial-error").textContent = err.message; });
      });
      actions.append(button);
    }
    li.append(who, actions);
    return li;
  }));
}

function render() {
  const current = activeCall();
  $("no-call").hidden = !!current;
  $("current-call").hidden = !current;
  clearInterval(timer);
  if (current) {
    $("current-name").textContent = current.prospect.name || (current.direction === "inbound" ? "Caller" : "Outbound call");
    $("current-number").textContent = formatNumber(current.prospect.number);
    $("current-status").textContent = current.status;
    $("current-call").dataset.callId = current.call_id;
    renderRecording(current);
    renderTransfer(current);
    const started = current.answered_at ? Date.parse(current.answered_at) : null;
    const tick = () => {
      if (!started) { $("current-timer").textContent = "--:--"; return; }
      const s = Math.max(0, Math.floor((Date.now() - started) / 1000));
      $("current-timer").textContent = `${String(Math.floor(s / 60)).padStart(2, "0")}:${String(s % 60).padStart(2, "0")}`;
    };
    tick();
    timer = setInterval(tick, 1000);
  } else {
    $("sent-digits").textContent = "";
  }
  const notified = notifiedCall();
  $("incoming").hidden = !notified;
  if (notified) {
    const waiting = notified.status === "waiting";
    $("incoming").dataset.callId = notified.call_id;
    $("incoming-title").textContent = waiting ? "Call waiting" : "Incoming call";
    $("incoming-name").textContent = notified.prospect.name || "Caller";
    $("incoming-number").textContent = formatNumber(notified.prospect.number);
    $("incoming-queue").textContent = waiting && state.queueLength > 1 ? `${state.queueLength} calls in your queue` : "";
    $("ringing-actions").hidden = waiting;
    $("waiting-actions").hidden = !waiting;
  }
  renderPopup();
  renderOffer();
  renderPrompts();
  const recent = [...state.calls.values()]
    .filter((c) => c.status === "ended")
    .sort((a, b) => Date.parse(b.ended_at || 0) - Date.parse(a.ended_at || 0))
    .slice(0, 20);
  $("recent-calls").replaceChildren(...recent.map((c) => {
    const li = document.createElement("li");
    const who = document.createElement("span");
    who.textContent = `${c.direction === "inbound" ? "←" : "→"} ${formatNumber(c.prospect.number)}`;
    const why = document.createElement("span");
    why.className = "muted";
    why.textContent = (c.end_reason || "").replace("_", " ");
    li.append(who, why);
    return li;
  }));
}

function upsert(call) {
  state.calls.set(call.call_id, call);
  render();
}

function onMessage(event) {
  let msg;
  try { msg = JSON.parse(event.data); } catch { return; }
  state.events.push(msg.type);
  if (msg.req && state.requests.has(msg.req) && msg.type !== "webrtc.answer") {
    const pending = state.requests.get(msg.req);
    state.requests.delete(msg.req);
    if (msg.type === "error") pending.reject(Object.assign(new Error(msg.message), { code: msg.code }));
    else pending.resolve(msg);
  }
  switch (msg.type) {
    case "calls.snapshot": {
      state.calls = new Map(msg.calls.map((c) => [c.call_id, c]));
      const waiting = msg.calls.filter((c) => c.status === "waiting")
        .sort((a, b) => String(a.queued_at).localeCompare(String(b.queued_at)));
      state.waitingHead = waiting.length ? waiting[0].call_id : null;
      state.queueLength = msg.calls.filter((c) => c.status === "waiting" || c.status === "on_hold").length;
      render();
      break;
    }
    case "call.incoming":
    case "call.updated":
    case "call.ended":
      upsert(msg.call);
      break;
    case "call.waiting":
      state.waitingHead = msg.call.call_id;
      state.queueLength = msg.queue_length;
      upsert(msg.call);
      break;
    case "call.offer":
      state.offered = msg.call.call_id;
      upsert(msg.call);
      break;
    case "call_log.prompt": {
      const open = state.prompts.find((p) => p.call.prospect.number === msg.call.prospect.number);
      if (open) {
        open.call = msg.call;
        open.call_ids = msg.call_ids;
      } else {
        state.prompts.push(msg);
      }
      upsert(msg.call);
      if ($("log-prompt").hidden) showPrompt(open || msg);
      break;
    }
    case "monitor.updated":
      state.monitoring = { call_id: msg.call.call_id, mode: msg.mode, number: msg.call.prospect.number };
      renderLiveCalls();
      break;
    case "monitor.ended":
      state.monitoring = null;
      refreshLiveCalls().catch(() => {});
      break;
    case "webrtc.answer": {
      // #ice=tcp keeps only the gateway's TCP candidate, to try ICE over TCP.
      const sdp = hash.get("ice") === "tcp"
        ? msg.sdp.split("\r\n").filter((l) => !/^a=candidate:\S+ \d+ udp /i.test(l)).join("\r\n")
        : msg.sdp;
      state.pc.setRemoteDescription({ type: "answer", sdp }).catch((e) => { state.lastError = String(e); });
      if (msg.req) state.requests.delete(msg.req);
      break;
    }
    case "webrtc.candidate":
      if (msg.candidate) state.pc.addIceCandidate(msg.candidate).catch(() => {});
      break;
    case "error":
      state.lastError = `${msg.code}: ${msg.message}`;
      break;
    default:
      break;
  }
}

async function startMedia() {
  if (!state.mic) {
    state.mic = await navigator.mediaDevices.getUserMedia({
      // Echo cancellation and noise suppression suit a laptop; headsets with their own
      // processing (and tests with a fake tone) turn them off with #processing=off.
      audio: { echoCancellation: processing, noiseSuppression: processing, autoGainControl: processing },
      video: false,
    });
  }
  // STUN/TURN servers from the gateway (time-limited TURN credentials for this sign-in);
  // #ice=relay forces the TURN relay, to try it.
  const pc = new RTCPeerConnection({
    iceServers: state.iceServers,
    iceTransportPolicy: hash.get("ice") === "relay" ? "relay" : "all",
  });
  state.pc = pc;
  for (const track of state.mic.getAudioTracks()) pc.addTrack(track, state.mic);
  pc.ontrack = (e) => {
    state.remoteStream = e.streams[0] || new MediaStream([e.track]);
    const audio = $("remote-audio");
    audio.srcObject = state.remoteStream;
    audio.play().catch(() => {});
  };
  pc.onicecandidate = (e) => {
    if (e.candidate && state.socket && state.socket.readyState === WebSocket.OPEN) {
      state.socket.send(JSON.stringify({ type: "webrtc.candidate", candidate: e.candidate.toJSON() }));
    }
  };
  pc.onconnectionstatechange = () => {
    const up = pc.connectionState === "connected";
    setPill($("media-status"), up ? "audio ready" : pc.connectionState, up);
  };
  const offer = await pc.createOffer();
  await pc.setLocalDescription(offer);
  state.socket.send(JSON.stringify({ type: "webrtc.offer", sdp: pc.localDescription.sdp, req: "offer" }));
}

function stopMedia() {
  if (state.pc) state.pc.close();
  state.pc = null;
  setPill($("media-status"), "no audio", false);
}

function signIn(token) {
  state.token = token;
  // The calls page (same origin, this tab's session) uses it too.
  sessionStorage.setItem("callgate-token", token);
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const socket = new WebSocket(`${scheme}//${location.host}/v1/agent/ws`);
  state.socket = socket;
  state.closedCode = null;
  socket.onopen = () => socket.send(JSON.stringify({ type: "auth", token, req: "auth" }));
  socket.onmessage = (event) => {
    const first = JSON.parse(event.data);
    if (first.type === "ok" && first.req === "auth") {
      state.agentId = first.agent_id;
      state.iceServers = Array.isArray(first.ice_servers) ? first.ice_servers : [];
      $("agent-name").textContent = first.agent_id;
      setPill($("connection-status"), "online", true);
      $("signin").hidden = true;
      $("workspace").hidden = false;
      socket.onmessage = onMessage;
      startMedia().catch((e) => {
        state.lastError = `microphone: ${e.message}`;
        $("dial-error").textContent = "Microphone unavailable: calls will have no audio from you.";
      });
      return;
    }
    onMessage(event);
  };
  socket.onclose = (e) => {
    state.closedCode = e.code;
    stopMedia();
    setPill($("connection-status"), "offline", false);
    if (e.code === 4401) {
      $("signin-error").textContent = "That token was not accepted.";
    } else if (e.code === 4409) {
      $("signin-error").textContent = "You signed in somewhere else; this page is no longer connected.";
    } else {
      $("signin-error").textContent = "Disconnected from the gateway. Sign in again to continue.";
    }
    $("signin").hidden = false;
    $("workspace").hidden = true;
    $("incoming").hidden = true;
  };
}

$("signin-form").addEventListener("submit", (e) => {
  e.preventDefault();
  $("signin-error").textContent = "";
  signIn($("token").value.trim());
});

$("dial-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  $("dial-error").textContent = "";
  const to = $("number").value.trim();
  try {
    await send({ type: "call.dial", to });
  } catch (err) {
    $("dial-error").textContent = err.code === "dial_plan_denied" ? `Not allowed to call ${to}.` : err.message;
  }
});

$("dialpad").addEventListener("click", async (e) => {
  const button = e.target.closest("button[data-digit]");
  if (!button) return;
  const digit = button.dataset.digit;
  const current = activeCall();
  if (current && current.status === "active") {
    $("sent-digits").textContent += digit;
    send({ type: "call.dtmf", call_id: current.call_id, digits: digit }).catch((err) => {
      $("dial-error").textContent = err.message;
    });
  } else {
    $("number").value += digit;
  }
});

$("record-button").addEventListener("click", () => {
  const id = $("current-call").dataset.callId;
  const action = $("record-button").dataset.action;
  if (id && action) {
    send({ type: "call.record", call_id: id, action }).catch((err) => { $("dial-error").textContent = err.message; });
  }
});

$("transfer-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const id = $("current-call").dataset.callId;
  const to = $("transfer-to").value.trim();
  if (!id || !to) return;
  send({ type: "call.transfer", call_id: id, to }).then(() => { $("transfer-to").value = ""; })
    .catch((err) => { $("dial-error").textContent = err.message; });
});

$("attended-button").addEventListener("click", () => {
  const consult = $("current-call").dataset.callId;
  const held = $("attended-with").value;
  if (consult && held) {
    send({ type: "call.transfer", call_id: held, attended_call_id: consult })
      .catch((err) => { $("dial-error").textContent = err.message; });
  }
});

setInterval(() => { refreshLiveCalls().catch(() => {}); }, 2000);

$("hangup-button").addEventListener("click", () => {
  const id = $("current-call").dataset.callId;
  if (id) send({ type: "call.hangup", call_id: id }).catch((err) => { $("dial-error").textContent = err.message; });
});

$("answer-button").addEventListener("click", () => {
  const id = $("incoming").dataset.callId;
  if (id) send({ type: "call.answer", call_id: id }).catch((err) => { $("dial-error").textContent = err.message; });
});

function accept(mode) {
  const id = $("incoming").dataset.callId;
  if (id) send({ type: "call.accept", call_id: id, mode }).catch((err) => { $("dial-error").textContent = err.message; });
}
$("accept-hold-button").addEventListener("click", () => accept("hold"));
$("accept-end-button").addEventListener("click", () => accept("end"));
$("waiting-decline-button").addEventListener("click", () => {
  const id = $("incoming").dataset.callId;
  if (id) send({ type: "call.decline", call_id: id }).catch((err) => { $("dial-error").textContent = err.message; });
});
$("held-button").addEventListener("click", () => { $("calls-popup").hidden = false; });
$("logs-button").addEventListener("click", () => { if (state.prompts.length) showPrompt(state.prompts[0]); });
$("log-form").addEventListener("submit", (e) => { e.preventDefault(); savePrompt(); });
$("log-close").addEventListener("click", () => {
  // A log is never lost by closing the window: say so, and keep it here.
  $("log-error").textContent = "This call log is not saved. Save it, keep it for later, or dismiss it.";
});
$("log-later").addEventListener("click", () => { $("log-prompt").hidden = true; shownPrompt = null; renderPrompts(); });
$("log-dismiss").addEventListener("click", () => {
  if (!shownPrompt) return;
  send({ type: "call_log.dismiss", number: shownPrompt.call.prospect.number }).catch(() => {});
  closePrompt(shownPrompt);
});
$("calls-popup-close").addEventListener("click", () => { $("calls-popup").hidden = true; });
$("offer-take-button").addEventListener("click", () => {
  const id = $("offer").dataset.callId;
  state.offered = null;
  if (id) send({ type: "call.answer", call_id: id }).catch((err) => { $("dial-error").textContent = err.message; });
  render();
});
$("offer-later-button").addEventListener("click", () => { state.offered = null; render(); });

$("decline-button").addEventListener("click", () => {
  const id = $("incoming").dataset.callId;
  if (id) send({ type: "call.decline", call_id: id }).catch((err) => { $("dial-error").textContent = err.message; });
});

const hash = new URLSearchParams(location.hash.slice(1));
const processing = hash.get("processing") !== "off";
const preset = hash.get("token");
if (preset) {
  $("token").value = preset;
}
