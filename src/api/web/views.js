// @ts-check
// The dialer's views: each part of the page reads its slice of the state and is updated only
// when that slice changed (compared by identity: the reducers replace what they change), and
// lists are keyed, so a message touches only the rows it changed.

import { byId, selectById, textAreaById, setText, setHidden, setPill, KeyedList } from "./dom.js";
import {
  activeCall, notifiedCall, ownCalls, heldCalls, offeredCall, recentCalls, recordingOf, formatNumber,
} from "./state.js";

/** @typedef {import("./state.js").State} State */
/** @typedef {import("./protocol.js").Call} Call */
/** @typedef {import("./protocol.js").MonitorMode} MonitorMode */

/**
 * What the rows' own buttons do (wired by the entry module).
 * @typedef {object} RowActions
 * @property {(call: Call, active: boolean) => void} holdOrResume the calls popup's play/pause
 * @property {(call: Call, mode: MonitorMode) => void} monitor Listen / Whisper / Barge / Stop
 */

/** @type {readonly MonitorMode[]} */
const MODES = ["listen", "whisper", "barge", "stop"];

/** @param {string} status */
const statusText = (status) => status.replace("_", " ");

/** @param {readonly unknown[]} a @param {readonly unknown[]} b */
const sameItems = (a, b) => a.length === b.length && a.every((v, i) => v === b[i]);

/**
 * @param {RowActions} actions
 */
export function createViews(actions) {
  // --- The current call ---------------------------------------------------------------
  /** @type {ReturnType<typeof setInterval> | undefined} */
  let timer;
  /** @type {Call | null} */
  let shownCurrent = null;
  const attendedWith = selectById("attended-with");
  /** @type {KeyedList<Call, HTMLOptionElement>} */
  const heldOptions = new KeyedList(attendedWith, (c) => c.call_id, (c) => [formatNumber(c.prospect.number)], (c) => {
    const option = document.createElement("option");
    option.value = c.call_id;
    option.textContent = `Connect ${formatNumber(c.prospect.number)} to this call`;
    return option;
  });

  /** The recording badge and its one action. @param {Call} call */
  function renderRecording(call) {
    const rec = recordingOf(call);
    const badge = byId("current-recording");
    setHidden(badge, !rec.badge);
    setText(badge, rec.badge);
    badge.classList.toggle("paused", call.recording !== "recording");
    const button = byId("record-button");
    setHidden(button, !rec.action || call.status !== "active");
    setText(button, rec.label);
    button.dataset.action = rec.action || "";
  }

  /**
   * Transfer: blind to `agent:<id>` or a number; attended when the active call is a consult
   * and a held call is waiting to be connected to it.
   * @param {State} state
   * @param {Call} call
   */
  function renderTransfer(state, call) {
    setHidden(byId("transfer-form"), call.status !== "active");
    const held = heldCalls(state, call.call_id);
    setHidden(byId("attended-box"), call.status !== "active" || held.length === 0);
    const chosen = attendedWith.value;
    heldOptions.update(held);
    if (held.some((c) => c.call_id === chosen) && attendedWith.value !== chosen) attendedWith.value = chosen;
  }

  /** @param {Call} call */
  function startTimer(call) {
    clearInterval(timer);
    const started = call.answered_at ? Date.parse(call.answered_at) : null;
    const el = byId("current-timer");
    const tick = () => {
      if (!started) { setText(el, "--:--"); return; }
      const s = Math.max(0, Math.floor((Date.now() - started) / 1000));
      setText(el, `${String(Math.floor(s / 60)).padStart(2, "0")}:${String(s % 60).padStart(2, "0")}`);
    };
    tick();
    timer = setInterval(tick, 1000);
  }

  /** @param {State} state */
  function renderCurrent(state) {
    const current = activeCall(state);
    setHidden(byId("no-call"), !!current);
    setHidden(byId("current-call"), !current);
    if (!current) {
      clearInterval(timer);
      shownCurrent = null;
      return;
    }
    if (current !== shownCurrent) {
      setText(byId("current-name"), current.prospect.name || (current.direction === "inbound" ? "Caller" : "Outbound call"));
      setText(byId("current-number"), formatNumber(current.prospect.number));
      setText(byId("current-status"), current.status);
      byId("current-call").dataset.callId = current.call_id;
      renderRecording(current);
      if (!shownCurrent || shownCurrent.call_id !== current.call_id || shownCurrent.answered_at !== current.answered_at) {
        startTimer(current);
      }
      shownCurrent = current;
    }
    renderTransfer(state, current);
  }

  // --- The notification of a ringing or waiting call -----------------------------------
  /** @param {State} state */
  function renderIncoming(state) {
    const notified = state.online ? notifiedCall(state) : null;
    const incoming = byId("incoming");
    setHidden(incoming, !notified);
    if (!notified) return;
    const waiting = notified.status === "waiting";
    incoming.dataset.callId = notified.call_id;
    setText(byId("incoming-title"), waiting ? "Call waiting" : "Incoming call");
    setText(byId("incoming-name"), notified.prospect.name || "Caller");
    setText(byId("incoming-number"), formatNumber(notified.prospect.number));
    setText(byId("incoming-queue"), waiting && state.queueLength > 1 ? `${state.queueLength} calls in your queue` : "");
    setHidden(byId("ringing-actions"), waiting);
    setHidden(byId("waiting-actions"), !waiting);
  }

  // --- The calls popup: the active call and the queue -----------------------------------
  /** @type {KeyedList<Call, HTMLLIElement>} */
  const popupRows = new KeyedList(byId("calls-popup-list"), (c) => c.call_id, (c) => [c], (c) => {
    const li = document.createElement("li");
    li.dataset.callId = c.call_id;
    const who = document.createElement("span");
    who.className = "who";
    const name = document.createElement("strong");
    name.textContent = c.prospect.name || formatNumber(c.prospect.number);
    const st = document.createElement("span");
    st.className = "state";
    st.textContent = `${formatNumber(c.prospect.number)} · ${statusText(c.status)}`;
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
      button.addEventListener("click", () => actions.holdOrResume(c, active));
      li.append(button);
    }
    return li;
  });

  /** @param {State} state */
  function renderPopup(state) {
    const calls = ownCalls(state);
    const count = calls.filter((c) => c.status === "on_hold" || c.status === "waiting").length;
    setHidden(byId("held-button"), calls.length === 0);
    setText(byId("held-count"), String(count));
    popupRows.update(calls);
  }

  // --- The offer of the queue's head after the active call ended -------------------------
  /** @param {State} state */
  function renderOffer(state) {
    const offered = offeredCall(state);
    const offer = byId("offer");
    setHidden(offer, !offered);
    if (offered) {
      offer.dataset.callId = offered.call_id;
      setText(byId("offer-name"), offered.prospect.name || "Caller");
      setText(byId("offer-number"), formatNumber(offered.prospect.number));
      setText(byId("offer-status"), offered.status === "waiting" ? "Waiting to be answered" : "On hold");
    }
  }

  // --- Recent calls -------------------------------------------------------------------
  /** @type {KeyedList<Call, HTMLLIElement>} */
  const recentRows = new KeyedList(byId("recent-calls"), (c) => c.call_id, (c) => [c], (c) => {
    const li = document.createElement("li");
    const who = document.createElement("span");
    who.textContent = `${c.direction === "inbound" ? "←" : "→"} ${formatNumber(c.prospect.number)}`;
    const why = document.createElement("span");
    why.className = "muted";
    why.textContent = (c.end_reason || "").replace("_", " ");
    li.append(who, why);
    return li;
  });

  // --- Call-log prompts ------------------------------------------------------------------
  /** @param {State} prev @param {State} next */
  function renderPrompts(prev, next) {
    if (prev.prompts !== next.prompts) {
      setHidden(byId("logs-button"), next.prompts.length === 0);
      setText(byId("logs-count"), String(next.prompts.length));
    }
    const prompt = next.shownPrompt;
    if (prompt && prev.promptSeq !== next.promptSeq) {
      // A prompt newly shown: who it is for, and the form empty. (A prompt merged into the
      // one on screen keeps what the agent typed, and its header, as the page always did.)
      setText(byId("log-party"), `${prompt.call.prospect.name || "Prospect"} · ${formatNumber(prompt.call.prospect.number)}`);
      setText(byId("log-calls"), prompt.call_ids.length > 1 ? `${prompt.call_ids.length} calls with this prospect` : "");
      for (const box of document.querySelectorAll('#log-form input[name="tag"]')) {
        /** @type {HTMLInputElement} */ (box).checked = false;
      }
      selectById("log-disposition").value = "";
      textAreaById("log-comment").value = "";
    }
    if (prev.shownPrompt !== prompt) setHidden(byId("log-prompt"), !prompt);
    if (prev.promptError !== next.promptError) setText(byId("log-error"), next.promptError);
  }

  // --- Supervisors: other agents' live calls -------------------------------------------
  /** @type {State} */
  let liveState = /** @type {State} */ ({});
  /** @type {KeyedList<Call, HTMLLIElement>} */
  const liveRows = new KeyedList(byId("live-calls"), (c) => c.call_id, (c) => {
    const m = liveState.monitoring;
    const watching = !!m && m.call_id === c.call_id;
    return [c, watching, watching && m ? m.mode : null];
  }, (c) => {
    const monitoring = liveState.monitoring;
    const li = document.createElement("li");
    li.dataset.callId = c.call_id;
    const who = document.createElement("span");
    who.textContent = `${c.agent_id} · ${formatNumber(c.prospect.number)} · ${statusText(c.status)}`;
    const buttons = document.createElement("span");
    buttons.className = "monitor-actions";
    const watching = !!monitoring && monitoring.call_id === c.call_id;
    for (const mode of MODES) {
      if (mode === "stop" && !watching) continue;
      const button = document.createElement("button");
      button.type = "button";
      button.dataset.mode = mode;
      button.textContent = mode[0].toUpperCase() + mode.slice(1);
      button.classList.toggle("on", watching && !!monitoring && monitoring.mode === mode);
      button.addEventListener("click", () => actions.monitor(c, mode));
      buttons.append(button);
    }
    li.append(who, buttons);
    return li;
  });

  /** @param {State} state */
  function renderLive(state) {
    setHidden(byId("supervise"), state.liveCalls.length === 0 && !state.monitoring);
    const status = byId("monitor-status");
    setHidden(status, !state.monitoring);
    if (state.monitoring) setText(status, `${state.monitoring.mode} · ${formatNumber(state.monitoring.number)}`);
    liveState = state;
    liveRows.update(state.liveCalls);
  }

  /** @type {Call[]} */
  let shownOwn = [];

  /**
   * Bring the page from `prev` to `next`: only the parts whose state changed.
   * @param {State} prev
   * @param {State} next
   */
  function render(prev, next) {
    if (prev === next) return;
    if (prev.online !== next.online || prev.agentId !== next.agentId || prev.signinError !== next.signinError) {
      setText(byId("agent-name"), next.agentId || "signed out");
      setPill(byId("connection-status"), next.online ? "online" : "offline", next.online);
      setHidden(byId("signin"), next.online);
      setHidden(byId("workspace"), !next.online);
      setText(byId("signin-error"), next.signinError);
    }
    if (prev.media !== next.media) {
      const up = next.media === "connected";
      setPill(byId("media-status"), up ? "audio ready" : next.media || "no audio", up);
    }
    if (prev.dialError !== next.dialError) setText(byId("dial-error"), next.dialError);
    const callsChanged = prev.calls !== next.calls;
    if (callsChanged) renderCurrent(next);
    if (prev.sentDigits !== next.sentDigits) setText(byId("sent-digits"), next.sentDigits);
    if (callsChanged || prev.online !== next.online || prev.waitingHead !== next.waitingHead
      || prev.queueLength !== next.queueLength) {
      renderIncoming(next);
    }
    if (callsChanged) {
      const own = ownCalls(next);
      if (!sameItems(own, shownOwn)) renderPopup(next);
      shownOwn = own;
      recentRows.update(recentCalls(next));
    }
    if (callsChanged || prev.offered !== next.offered) {
      if (offeredCall(prev) !== offeredCall(next)) renderOffer(next);
    }
    renderPrompts(prev, next);
    if (prev.liveCalls !== next.liveCalls || prev.monitoring !== next.monitoring) renderLive(next);
  }

  return { render };
}
