// An agent in headless Chromium (Debian's, driven by playwright-core) using callgate's dialer
// page with a fake microphone. The Rust test that spawns it reads its stdout, one line each:
//   READY                    signed in, peer connection up
//   ANSWERED / DIALED        the call is active
//   RESULT {json}            what the browser received (getStats and WebAudio RMS)
//   CLOSED                   the browser is gone
//   DOWNLINK {json}          (MODE downlink) the codec received over time and audio gaps
// Settings come from the environment: CALLGATE_URL, CALLGATE_TOKEN, MODE (answer | dial |
// downlink | names ...), LISTEN_S (downlink: seconds measured),
// NUMBER (for dial), FAKE_AUDIO (a WAV for the fake microphone), SHOTS (a directory for
// screenshots), HANGUP (page: hang up with the button; otherwise close the browser),
// PAGE_HASH (more of the page's #settings, e.g. "&ice=relay").
//   PAIR {json}              after RESULT: the ICE candidate pair the audio used
//   NODE a / MOVED b URL     (MODE failover) the cluster node signed in on, and the one the
//                            page signed in on by itself after losing it (with its API base)
//   LOGGED                   the call-log prompt was saved (MODE log, and failover after HANGUP)
import { chromium } from "playwright-core";
import { join } from "node:path";

const env = (name, fallback) => process.env[name] ?? fallback;
const url = env("CALLGATE_URL", "http://127.0.0.1:8080/");
const token = env("CALLGATE_TOKEN", "demo-token");
const mode = env("MODE", "answer");
const shots = env("SHOTS", "");
const say = (line) => process.stdout.write(`${line}\n`);

const args = [
  "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
  "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
  "--autoplay-policy=no-user-gesture-required", "--allow-loopback-in-peer-connection",
];
if (process.env.FAKE_AUDIO) args.push(`--use-file-for-fake-audio-capture=${process.env.FAKE_AUDIO}`);

const browser = await chromium.launch({
  executablePath: env("CHROMIUM", "/usr/bin/chromium"),
  // Playwright gives every launch a fresh, empty profile directory of its own.
  args,
  ignoreDefaultArgs: ["--headless"],
});
const fail = async (why) => {
  say(`FAILED ${why}`);
  await browser.close().catch(() => {});
  process.exit(1);
};
const watchdog = setTimeout(() => fail("timed out"), Number(env("TIMEOUT_MS", "90000")));

try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  page.on("console", (m) => process.stderr.write(`[page] ${m.text()}\n`));
  if (mode === "calls") {
    // The calls page with a token: wait until every status shows, then a screenshot.
    await page.goto(`${url}calls#token=${token}`);
    const want = (env("STATUSES", "active,on_hold,waiting,ended")).split(",");
    await page.waitForFunction((want) => want.every((s) => document.querySelector(`#rows tr[data-status="${s}"]`)), want, { timeout: 20000 });
    // A recorded call plays in the page's player (fetched with the token).
    const playable = await page.$("#rows button.play");
    if (playable) {
      await playable.click();
      await page.waitForFunction(() => { const p = document.querySelector("#player"); return p.readyState >= 1 && p.duration > 0; }, null, { timeout: 10000 });
      say(`PLAYED ${await page.evaluate(() => document.querySelector("#player").duration)}`);
    }
    if (shots) await page.screenshot({ path: join(shots, "calls-page.png"), fullPage: true });
    const rows = await page.evaluate(() => [...document.querySelectorAll("#rows tr")].map((r) => r.dataset.status));
    say(`ROWS ${JSON.stringify(rows)}`);
    await browser.close();
    say("CLOSED");
    clearTimeout(watchdog);
    process.exit(0);
  }
  await page.goto(`${url}#processing=off${env("PAGE_HASH", "")}`);
  await page.fill("#token", token);
  await page.click("#signin-button");
  // Generous: with several browsers starting at once on two cores, ICE and DTLS can queue.
  await page.waitForFunction(() => window.callgate.pc && window.callgate.pc.connectionState === "connected", null, { timeout: 45000 });
  say("READY");

  if (mode === "transfer") {
    // Answer, then hand the call on with the transfer form (TRANSFER_TO), and see it leave.
    await page.waitForSelector("#incoming:not([hidden])", { timeout: 30000 });
    await page.click("#answer-button");
    await page.waitForFunction(() => [...window.callgate.calls.values()].some((c) => c.status === "active"), null, { timeout: 10000 });
    say("ANSWERED");
    await page.fill("#transfer-to", env("TRANSFER_TO", "agent:demo2"));
    if (shots) await page.screenshot({ path: join(shots, "transfer-form.png") });
    await page.click("#transfer-button");
    await page.waitForFunction(() => [...window.callgate.calls.values()].some((c) => c.status === "ended" && c.end_reason === "transferred"), null, { timeout: 10000 });
    say("TRANSFERRED");
    await browser.close();
    say("CLOSED");
    clearTimeout(watchdog);
    process.exit(0);
  } else if (mode === "failover") {
    // In a cluster: the node signed in on is lost (the test kills it); the page signs in on
    // another by itself, with media, and answers the next call there.
    const first = await page.evaluate(() => window.callgate.node);
    say(`NODE ${first}`);
    await page.waitForFunction((first) => window.callgate.state.online && window.callgate.node
      && window.callgate.node !== first && window.callgate.pc
      && window.callgate.pc.connectionState === "connected", first, { timeout: 60000 });
    say(`MOVED ${await page.evaluate(() => `${window.callgate.node} ${window.callgate.apiBase}`)}`);
    if (shots) await page.screenshot({ path: join(shots, "failover.png") });
    await page.waitForSelector("#incoming:not([hidden])", { timeout: 30000 });
    await page.click("#answer-button");
    await page.waitForFunction(() => [...window.callgate.calls.values()].some((c) => c.status === "active"), null, { timeout: 10000 });
    say("ANSWERED");
  } else if (mode === "supervise") {
    // A supervisor: the live calls list, Listen on the first call.
    await page.waitForSelector('#live-calls li button[data-mode="listen"]', { timeout: 20000 });
    await page.click('#live-calls li button[data-mode="listen"]');
    await page.waitForFunction(() => (document.querySelector("#monitor-status").textContent || "").startsWith("listen"), null, { timeout: 10000 });
    say("MONITORING");
  } else if (mode === "answer" || mode === "downlink") {
    await page.waitForSelector("#incoming:not([hidden])", { timeout: 30000 });
    if (shots) await page.screenshot({ path: join(shots, "incoming.png") });
    await page.click("#answer-button");
    await page.waitForFunction(() => [...window.callgate.calls.values()].some((c) => c.status === "active"), null, { timeout: 10000 });
    say("ANSWERED");
  } else if (mode === "names") {
    // The caller's name on the incoming call and the active one, then on the calls page.
    await page.waitForSelector("#incoming:not([hidden]) #answer-button", { timeout: 30000 });
    say(`INCOMING_NAME ${await page.textContent("#incoming-name")}`);
    if (shots) await page.screenshot({ path: join(shots, "name-incoming.png") });
    await page.click("#answer-button");
    await page.waitForFunction(() => [...window.callgate.calls.values()].some((c) => c.status === "active"), null, { timeout: 10000 });
    if (shots) await page.screenshot({ path: join(shots, "name-active.png") });
    say(`ACTIVE_TEXT ${JSON.stringify(await page.textContent("body"))}`);
    await page.click("#hangup-button");
    await page.waitForFunction(() => ![...window.callgate.calls.values()].some((c) => c.status === "active"), null, { timeout: 10000 });
    await page.goto(`${url}calls#token=${token}`);
    await page.waitForFunction(() => document.querySelector('#rows tr[data-status="ended"]'), null, { timeout: 20000 });
    if (shots) await page.screenshot({ path: join(shots, "name-calls-page.png"), fullPage: true });
    say(`CALLS_PAGE ${JSON.stringify(await page.evaluate(() => [...document.querySelectorAll("#rows tr")].map((r) => r.textContent)))}`);
    await browser.close();
    say("CLOSED");
    clearTimeout(watchdog);
    process.exit(0);
  } else if (mode === "log") {
    // Answer, hang up, and fill in the call-log prompt (closing it unsaved first).
    await page.waitForSelector("#incoming:not([hidden]) #answer-button", { timeout: 30000 });
    await page.click("#answer-button");
    await page.waitForFunction(() => [...window.callgate.calls.values()].some((c) => c.status === "active"), null, { timeout: 10000 });
    say("ANSWERED");
    await new Promise((r) => setTimeout(r, 1000));
    await page.click("#hangup-button");
    await page.waitForSelector("#log-prompt:not([hidden])", { timeout: 10000 });
    await page.click("#log-close");
    await page.waitForFunction(() => document.getElementById("log-error").textContent.includes("not saved"), null, { timeout: 5000 });
    if (!(await page.isVisible("#log-prompt"))) throw new Error("closing an unsaved log hid it");
    if (shots) await page.screenshot({ path: join(shots, "log-unsaved.png") });
    await page.check('#log-form input[value="interested"]');
    await page.selectOption("#log-disposition", "callback");
    await page.fill("#log-comment", "Wants a demo next week");
    await page.click("#log-save");
    await page.waitForSelector("#log-prompt", { state: "hidden", timeout: 10000 });
    say("LOGGED");
    await browser.close();
    say("CLOSED");
    clearTimeout(watchdog);
    process.exit(0);
  } else if (mode === "waiting") {
    // A rings and is answered; B then waits: Hold & Accept, open the calls popup, resume A.
    const active = (n) => `[...window.callgate.calls.values()].some((c) => c.status === "active" && c.prospect.number === "${n}")`;
    await page.waitForSelector("#incoming:not([hidden]) #answer-button", { timeout: 30000 });
    await page.click("#answer-button");
    await page.waitForFunction(active("+15551230001"), null, { timeout: 10000 });
    say("ANSWERED");
    await page.waitForSelector("#waiting-actions:not([hidden])", { timeout: 30000 });
    if (shots) await page.screenshot({ path: join(shots, "1-call-waiting.png") });
    await page.click("#accept-hold-button");
    await page.waitForFunction(active("+15551230002"), null, { timeout: 10000 });
    if (shots) await page.screenshot({ path: join(shots, "2-hold-and-accepted.png") });
    await page.click("#held-button");
    await page.waitForSelector("#calls-popup:not([hidden])", { timeout: 5000 });
    if (shots) await page.screenshot({ path: join(shots, "3-calls-popup.png") });
    await page.click('#calls-popup-list button[aria-label="resume +15551230001"]');
    await page.waitForFunction(active("+15551230001"), null, { timeout: 10000 });
    if (shots) await page.screenshot({ path: join(shots, "4-resumed-first-call.png") });
    const statuses = await page.evaluate(() => Object.fromEntries([...window.callgate.calls.values()].map((c) => [c.prospect.number, c.status])));
    say(`STATES ${JSON.stringify(statuses)}`);
    say("DIALED");
  } else {
    await page.fill("#number", env("NUMBER", "+15551230001"));
    await page.click("#dial-button");
    await page.waitForFunction(() => [...window.callgate.calls.values()].some((c) => c.status === "active"), null, { timeout: 20000 });
    say("DIALED");
  }

  if (mode === "downlink") {
    // The codec the page receives over time (getStats every 250 ms) and the received audio's
    // level in 5 ms windows (WebAudio): the longest stretch without the far end's tone.
    const seconds = Number(env("LISTEN_S", "30"));
    const result = await page.evaluate(async (seconds) => {
      const ctx = new AudioContext();
      const source = ctx.createMediaStreamSource(window.callgate.remoteStream);
      const tap = ctx.createScriptProcessor(1024, 1, 1);
      const mute = ctx.createGain();
      mute.gain.value = 0;
      const windowLen = Math.round(ctx.sampleRate * 0.005);
      const levels = [];
      let acc = 0;
      let n = 0;
      tap.onaudioprocess = (e) => {
        for (const v of e.inputBuffer.getChannelData(0)) {
          acc += v * v;
          if (++n === windowLen) { levels.push(Math.sqrt(acc / n)); acc = 0; n = 0; }
        }
      };
      source.connect(tap);
      tap.connect(mute);
      mute.connect(ctx.destination);
      const started = performance.now();
      const codecs = [];
      let last = {};
      while (performance.now() - started < seconds * 1000) {
        await new Promise((r) => setTimeout(r, 250));
        const stats = await window.callgate.pc.getStats();
        let inbound = null;
        for (const s of stats.values()) if (s.type === "inbound-rtp" && s.kind === "audio") inbound = s;
        if (!inbound) continue;
        const mime = stats.get(inbound.codecId)?.mimeType || null;
        const t = Math.round(performance.now() - started);
        if (!codecs.length || codecs[codecs.length - 1][1] !== mime) codecs.push([t, mime]);
        last = inbound;
      }
      tap.disconnect();
      const sorted = [...levels].sort((a, b) => a - b);
      const median = sorted[Math.floor(sorted.length / 2)] || 0;
      // Skip the first second (the call's start); then the longest run of quiet windows.
      let longest = 0;
      let longestAt = 0;
      let run = 0;
      for (let i = 200; i < levels.length; i++) {
        if (levels[i] < median * 0.25) {
          run++;
          if (run > longest) { longest = run; longestAt = (i - run + 1) * 5; }
        } else run = 0;
      }
      return {
        codecs, median_rms: median, windows: levels.length,
        longest_gap_ms: longest * 5, longest_gap_at_ms: longestAt,
        packets: last.packetsReceived || 0, lost: last.packetsLost || 0,
        concealed: last.concealedSamples || 0,
      };
    }, seconds);
    say(`DOWNLINK ${JSON.stringify(result)}`);
    clearTimeout(watchdog);
    await browser.close();
    say("CLOSED");
    process.exit(0);
  }

  // What arrives from the far end: RTP counters, the level Chromium reports, and the RMS of
  // the decoded remote track measured with WebAudio.
  const result = await page.evaluate(async () => {
    // A call monitored on another node of a cluster arrives over the monitoring connection's
    // own peer connection.
    const pc = window.callgate.monitorPc || window.callgate.pc;
    const stream = window.callgate.monitorStream || window.callgate.remoteStream;
    const inbound = async () => {
      const stats = await pc.getStats();
      for (const s of stats.values()) if (s.type === "inbound-rtp" && s.kind === "audio") return s;
      return {};
    };
    await new Promise((r) => setTimeout(r, 1500));
    const first = await inbound();
    const ctx = new AudioContext();
    const source = ctx.createMediaStreamSource(stream);
    const analyser = ctx.createAnalyser();
    analyser.fftSize = 2048;
    source.connect(analyser);
    const data = new Float32Array(analyser.fftSize);
    let sum = 0;
    let n = 0;
    let levels = 0;
    for (let i = 0; i < 30; i++) {
      await new Promise((r) => setTimeout(r, 100));
      analyser.getFloatTimeDomainData(data);
      for (const v of data) { sum += v * v; n++; }
      const s = await inbound();
      levels = Math.max(levels, s.audioLevel || 0);
    }
    const spectrum = new Float32Array(analyser.frequencyBinCount);
    analyser.getFloatFrequencyData(spectrum);
    let peak = 1;
    for (let i = 1; i < spectrum.length; i++) if (spectrum[i] > spectrum[peak]) peak = i;
    const last = await inbound();
    return {
      packets_before: first.packetsReceived || 0,
      packets_after: last.packetsReceived || 0,
      audio_level: levels,
      rms: Math.sqrt(sum / Math.max(1, n)),
      dominant_hz: Math.round((peak * ctx.sampleRate) / analyser.fftSize),
      codec: [...(await pc.getStats()).values()].find((s) => s.type === "codec" && s.id === last.codecId)?.mimeType || null,
      sample_rate: ctx.sampleRate,
    };
  });
  say(`RESULT ${JSON.stringify(result)}`);
  // The ICE candidate pair the audio went over: its local and remote candidate types.
  const pair = await page.evaluate(async () => {
    const stats = [...(await window.callgate.pc.getStats()).values()];
    const transport = stats.find((s) => s.type === "transport");
    const chosen = stats.find((s) => s.type === "candidate-pair" && s.id === transport?.selectedCandidatePairId);
    const local = stats.find((s) => s.id === chosen?.localCandidateId);
    const remote = stats.find((s) => s.id === chosen?.remoteCandidateId);
    return { local: local?.candidateType, local_protocol: local?.protocol, relay_protocol: local?.relayProtocol,
             remote: remote?.candidateType, remote_protocol: remote?.protocol, bytes_received: chosen?.bytesReceived, bytes_sent: chosen?.bytesSent };
  });
  say(`PAIR ${JSON.stringify(pair)}`);
  if (shots) await page.screenshot({ path: join(shots, "in-call.png") });
  if (mode === "supervise") {
    // Barge (a screenshot of the supervisor view), then stop.
    await page.click('#live-calls li button[data-mode="barge"]');
    await page.waitForFunction(() => (document.querySelector("#monitor-status").textContent || "").startsWith("barge"), null, { timeout: 10000 });
    if (shots) await page.screenshot({ path: join(shots, "supervisor.png") });
    await page.click('#live-calls li button[data-mode="stop"]');
    await page.waitForFunction(() => document.querySelector("#monitor-status").hidden, null, { timeout: 10000 });
    say("STOPPED");
  }
  if (mode === "answer") {
    // Calls are recorded (the tests' configs keep the default `always`): the badge shows it,
    // and the page's button pauses and resumes the recording with call.record, each change
    // coming back as call.updated.
    const badge = (text) => page.waitForFunction((t) => document.querySelector("#current-recording").textContent === t, text, { timeout: 10000 });
    await badge("● REC");
    await page.click("#record-button");
    await badge("REC paused");
    if (shots) await page.screenshot({ path: join(shots, "recording-paused.png") });
    await page.click("#record-button");
    await badge("● REC");
    say("RECORDING_TOGGLED");
  }

  // Keep talking for a while so the far end records our audio.
  await new Promise((r) => setTimeout(r, Number(env("TALK_MS", "2000"))));
  if (process.env.HANGUP) {
    await page.click("#hangup-button");
    await page.waitForFunction(() => ![...window.callgate.calls.values()].some((c) => c.status === "active"), null, { timeout: 10000 });
    say("HUNG_UP");
    await new Promise((r) => setTimeout(r, 500));
    if (mode === "failover") {
      // The log is saved through the node the page moved to (its API, from the first node's
      // origin).
      await page.waitForSelector("#log-prompt:not([hidden])", { timeout: 10000 });
      await page.check('#log-form input[value="interested"]');
      await page.fill("#log-comment", "after failover");
      await page.click("#log-save");
      await page.waitForSelector("#log-prompt", { state: "hidden", timeout: 10000 });
      say("LOGGED");
    }
  }
  clearTimeout(watchdog);
  await browser.close();
  say("CLOSED");
} catch (e) {
  await fail(String(e).split("\n")[0]);
}
