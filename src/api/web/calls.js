// @ts-check
// The calls page: the calls API (GET /v1/calls) as a table, refreshed every two seconds.
// An ES module (index.html's dialer shares its token through sessionStorage).

/** A call as GET /v1/calls lists it: the agent protocol's call, its log and recording. */
/** @typedef {import("./protocol.js").Call & { log?: { tags: string[], disposition?: string | null } | null, recording_url?: string | null }} ListedCall */

/** @param {string} id @returns {HTMLElement} */
const $ = (id) => /** @type {HTMLElement} */ (document.getElementById(id));
/** @param {string} id @returns {HTMLInputElement} */
const input = (id) => /** @type {HTMLInputElement} */ ($(id));
/** @type {string | null} */
let token = sessionStorage.getItem("callgate-token") || new URLSearchParams(location.hash.slice(1)).get("token");
/** @type {ListedCall[]} */
let older = [];
/** @type {string | null} */
let cursor = null;

function statuses() {
  return [...document.querySelectorAll('input[name="status"]:checked')]
    .map((b) => /** @type {HTMLInputElement} */ (b).value).join(",");
}

/** @param {ListedCall} c */
function duration(c) {
  const start = c.answered_at ? Date.parse(c.answered_at) : null;
  if (!start) return "—";
  const end = c.ended_at ? Date.parse(c.ended_at) : Date.now();
  const s = Math.max(0, Math.round((end - start) / 1000));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

/** @param {ListedCall} c */
function row(c) {
  const tr = document.createElement("tr");
  tr.dataset.status = c.status;
  const cells = [
    new Date(c.created_at).toLocaleTimeString(),
    `${c.prospect.name ? c.prospect.name + " · " : ""}${c.prospect.number}`,
    c.direction,
    c.agent_id || "—",
    null,
    duration(c),
    c.log ? [...c.log.tags, c.log.disposition].filter(Boolean).join(", ") || "saved" : "",
    undefined,
  ];
  for (const value of cells) {
    const td = document.createElement("td");
    if (value === undefined) {
      if (c.recording_url) {
        const play = document.createElement("button");
        play.type = "button";
        play.className = "play";
        play.textContent = c.recording === "recording" ? "▶ so far" : "▶ Play";
        play.addEventListener("click", () => playRecording(c));
        td.append(play);
      } else if (c.recording === "failed") {
        td.textContent = "failed";
      }
    } else if (value === null) {
      const badge = document.createElement("span");
      badge.className = `pill status-${c.status}`;
      badge.textContent = c.status === "ended" && c.end_reason ? `ended · ${c.end_reason.replace("_", " ")}` : c.status.replace("_", " ");
      td.append(badge);
    } else {
      td.textContent = value;
    }
    tr.append(td);
  }
  return tr;
}

// Recordings need the bearer token, so they are fetched and handed to the one player below
// the table (rows are rebuilt every two seconds; the player is not).
/** @param {ListedCall} c */
async function playRecording(c) {
  if (!c.recording_url) return;
  const response = await fetch(c.recording_url, { headers: { Authorization: `Bearer ${token}` } });
  if (!response.ok) {
    $("error").textContent = `Recording unavailable (${response.status}).`;
    return;
  }
  const player = /** @type {HTMLAudioElement} */ ($("player"));
  if (player.src) URL.revokeObjectURL(player.src);
  player.src = URL.createObjectURL(await response.blob());
  $("player-label").textContent = `${c.prospect.number} · ${new Date(c.created_at).toLocaleString()}`;
  $("player-box").hidden = false;
  player.play().catch(() => {});
}

async function load() {
  const filter = statuses();
  const response = await fetch(`/v1/calls?limit=100${filter ? `&status=${filter}` : ""}`, {
    headers: { Authorization: `Bearer ${token}` },
  });
  if (response.status === 401 || response.status === 403) {
    $("list").hidden = true;
    $("signin").hidden = false;
    $("error").textContent = "That token cannot see calls.";
    return;
  }
  const page = await response.json();
  cursor = page.next;
  $("more").hidden = !cursor;
  $("rows").replaceChildren(...page.calls.map(row), ...older.map(row));
  $("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
  $("list").hidden = false;
  $("signin").hidden = true;
}

$("more").addEventListener("click", async () => {
  const response = await fetch(`/v1/calls?limit=100&before=${encodeURIComponent(cursor || "")}`, {
    headers: { Authorization: `Bearer ${token}` },
  });
  const page = await response.json();
  older = older.concat(page.calls);
  cursor = page.next;
  $("more").hidden = !cursor;
  load();
});

$("signin-form").addEventListener("submit", (e) => {
  e.preventDefault();
  token = input("token").value.trim();
  sessionStorage.setItem("callgate-token", token);
  load();
});

for (const box of document.querySelectorAll('input[name="status"]')) box.addEventListener("change", load);

if (token) load(); else $("signin").hidden = false;
setInterval(() => { if (token) load().catch(() => {}); }, 2000);
