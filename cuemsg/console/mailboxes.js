// mailboxes.js: the first page, every mailbox with its counts (waiting, in
// flight, dead letters), last activity and whether a responder is alive,
// kept current by the event feed. Counts come from the listing's `total`,
// so a mailbox of any size costs the same few small requests.

import { api, count, hasExtension, knownCue, mailboxes } from "./api.js";
import { fill, h, link, notice, when } from "./dom.js";
import { throttled } from "./feed.js";

// A worker is alive while its presence heartbeat (every 15 s) is this fresh.
const ALIVE_SECONDS = 60;

async function stats(cue) {
  const base = { cue_id: cue.id };
  const [pending, retry, inFlight, dead, latest] = await Promise.all([
    count({ ...base, status: "pending" }),
    count({ ...base, status: "retry_ready" }),
    count({ ...base, status: "delivering" }),
    count({ ...base, status: "failed" }),
    api("/v1/executions", { params: { ...base, limit: 1 } }),
  ]);
  const newest = latest.executions[0];
  return {
    waiting: pending + retry,
    inFlight,
    dead,
    lastActivity: newest ? newest.updated_at : null,
  };
}

// Workers serving each task, from /v1/workers, or the presence stamped on the cue.
async function responders() {
  const byTask = new Map();
  if (!(await hasExtension("workers.list"))) return byTask;
  for (const worker of (await api("/v1/workers")).workers) {
    for (const task of worker.handlers || []) {
      const seen = byTask.get(task);
      if (!seen || seen.last_heartbeat < worker.last_heartbeat) byTask.set(task, worker);
    }
  }
  return byTask;
}

function responderCell(cue, byTask) {
  const worker = byTask.get(cue.payload.task);
  const stamp = cue.payload.cuemsg_presence;
  const seen = worker
    ? { id: worker.worker_id, at: worker.last_heartbeat }
    : stamp && { id: stamp.worker_id, at: stamp.at };
  const alive = seen && (Date.now() - Date.parse(seen.at)) / 1000 < ALIVE_SECONDS;
  const title = seen
    ? `${seen.id}, last seen ${new Date(seen.at).toLocaleString()}`
    : "no worker seen";
  return h(
    "span",
    { class: `presence ${alive ? "alive" : "absent"}`, title },
    h("span", { class: "glyph", "aria-hidden": "true" }, alive ? "●" : "○"),
    alive ? "alive" : "none",
  );
}

function numberCell(value, label, tone, href) {
  const text = h("span", { class: value ? `count ${tone}` : "count zero" }, String(value));
  return h("td", { "data-label": label, class: "num" }, value ? link(href, text) : text);
}

export async function mailboxesPage(main, ctx) {
  const status = h("p", { class: "muted", role: "status" }, "Loading mailboxes…");
  const body = h("tbody");
  fill(
    main,
    h("div", { class: "page-head" }, h("h1", {}, "Mailboxes"), status),
    h(
      "table",
      { class: "grid mailboxes" },
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          h("th", { scope: "col" }, "Mailbox"),
          h("th", { scope: "col", class: "num" }, "Waiting"),
          h("th", { scope: "col", class: "num" }, "In flight"),
          h("th", { scope: "col", class: "num" }, "Dead letters"),
          h("th", { scope: "col" }, "Last activity"),
          h("th", { scope: "col" }, "Responder"),
        ),
      ),
      body,
    ),
  );
  let cues;
  let byTask;
  try {
    [cues, byTask] = await Promise.all([mailboxes(), responders()]);
  } catch (err) {
    status.replaceWith(notice(`Could not list the mailboxes: ${err.message}`, "error"));
    return;
  }
  status.textContent = cues.length
    ? `${cues.length} mailbox${cues.length === 1 ? "" : "es"}`
    : "No mailboxes yet: open one with Mailbox.open(...) or `cuemsg send`.";
  const rows = new Map();

  async function fillRow(cue) {
    const row = rows.get(cue.id);
    const s = await stats(cue);
    const mailbox = `#/mailbox/${encodeURIComponent(cue.id)}`;
    row.replaceChildren(
      h(
        "th",
        { scope: "row", "data-label": "Mailbox" },
        link(mailbox, cue.name, { class: "strong" }),
        h("span", { class: "sub mono" }, cue.id),
      ),
      numberCell(s.waiting, "Waiting", "waiting", `${mailbox}?state=pending`),
      numberCell(s.inFlight, "In flight", "inflight", `${mailbox}?state=delivering`),
      numberCell(s.dead, "Dead letters", "dead", `#/dead?cue_id=${encodeURIComponent(cue.id)}`),
      h("td", { "data-label": "Last activity" }, when(s.lastActivity)),
      h("td", { "data-label": "Responder" }, responderCell(cue, byTask)),
    );
  }

  for (const cue of cues) {
    const row = h("tr", { dataset: { cue: cue.id } }, h("th", { scope: "row" }, cue.name));
    rows.set(cue.id, row);
    body.append(row);
  }
  // A few at a time: a tenant with many mailboxes must not flood the server.
  const queue = [...cues];
  await Promise.all(
    [1, 2, 3, 4].map(async () => {
      while (queue.length) await fillRow(queue.shift()).catch(() => {});
    }),
  );

  // Live: an event refreshes its mailbox's row (at most once a second, however
  // busy it is); a fire on a cue this page has never seen (a new mailbox)
  // lists the mailboxes again.
  const byId = new Map(cues.map((cue) => [cue.id, cue]));
  const refreshers = new Map();
  function refresher(cue) {
    if (!refreshers.has(cue.id)) {
      refreshers.set(
        cue.id,
        throttled(1000, async () => {
          await fillRow(cue).catch(() => {});
          const row = rows.get(cue.id);
          row.classList.remove("flash");
          void row.offsetWidth; // restart the highlight
          row.classList.add("flash");
        }),
      );
    }
    return refreshers.get(cue.id);
  }
  const relist = throttled(1000, () => ctx.reload());
  ctx.subscribe((event) => {
    if (!event.cue_id) return;
    const cue = byId.get(event.cue_id);
    if (cue) refresher(cue)();
    else if (event.type === "fired" && !knownCue(event.cue_id)) relist();
  });
  // Presence changes without events: look again every 30 s.
  const timer = setInterval(async () => {
    byTask = await responders().catch(() => byTask);
    for (const cue of cues) await fillRow(cue).catch(() => {});
  }, 30000);
  ctx.onLeave(() => {
    clearInterval(timer);
    relist.cancel();
    for (const refresh of refreshers.values()) refresh.cancel();
  });
}
