// messages.js: one mailbox's messages, newest first, filtered by state and
// paged by cursor (`before=`: the server never counts an offset and the page
// never loads the whole mailbox); new messages appear live on the first page.
// Also the thread page: a conversation in order, from the event feed.

import { api, hasExtension, learnNames, nameOf } from "./api.js";
import { Feed, throttled } from "./feed.js";
import {
  FILTERS,
  badge,
  fill,
  h,
  kindOf,
  link,
  meta,
  notice,
  preview,
  short,
  stateLabel,
  when,
} from "./dom.js";

const PAGE = 50;

export function senderLabel(exe) {
  const m = meta(exe);
  const sender = m && m.sender;
  if (!sender) return "–";
  return nameOf(sender) || m.sender_name || sender; // the envelope may carry the name too
}

function messageRow(exe) {
  const m = meta(exe);
  const href = `#/message/${encodeURIComponent(exe.id)}`;
  return h(
    "tr",
    {
      dataset: { execution: exe.id, status: exe.status, attempts: String(exe.attempts ?? 0) },
      class: "clickable",
    },
    h("td", { "data-label": "When" }, when(exe.created_at)),
    h("td", { "data-label": "Kind" }, h("span", { class: "kind" }, kindOf(exe))),
    h("td", { "data-label": "From" }, senderLabel(exe)),
    h(
      "td",
      { "data-label": "Message", class: "wide" },
      link(href, preview(exe), {
        class: "row-link",
        "aria-label": `Open message ${short(m ? m.id : exe.id)}`,
      }),
      m && m.thread
        ? h(
            "span",
            { class: "sub" },
            "thread ",
            link(`#/thread/${encodeURIComponent(m.thread)}`, m.thread),
          )
        : null,
    ),
    h("td", { "data-label": "State" }, badge(exe.status)),
    h("td", { "data-label": "Attempts", class: "num" }, String(exe.attempts ?? 0)),
  );
}

export function messageTable(rows) {
  return h(
    "table",
    { class: "grid messages" },
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        h("th", { scope: "col" }, "When"),
        h("th", { scope: "col" }, "Kind"),
        h("th", { scope: "col" }, "From"),
        h("th", { scope: "col" }, "Message"),
        h("th", { scope: "col" }, "State"),
        h("th", { scope: "col", class: "num" }, "Attempts"),
      ),
    ),
    rows,
  );
}

// A click anywhere on a row opens it, as its link does from the keyboard.
export function clickableRows(tbody) {
  tbody.addEventListener("click", (event) => {
    const row = event.target.closest("tr.clickable");
    if (!row || event.target.closest("a, button, input, label")) return;
    const target = row.querySelector("a.row-link");
    if (target) location.hash = target.getAttribute("href");
  });
}

export async function mailboxPage(main, ctx, cueId) {
  const state = ctx.query.get("state") || "";
  const before = ctx.query.get("before") || "";
  const base = `#/mailbox/${encodeURIComponent(cueId)}`;
  let cue;
  try {
    cue = await api(`/v1/cues/${encodeURIComponent(cueId)}`);
  } catch (err) {
    fill(main, notice(`Could not open the mailbox ${cueId}: ${err.message}`, "error"));
    return;
  }
  const filter = h(
    "nav",
    { class: "filters", "aria-label": "Filter by state" },
    FILTERS.map(([value, label]) =>
      link(value ? `${base}?state=${value}` : base, label, {
        class: value ? `filter state-${value}` : "filter",
        "aria-current": value === state ? "page" : null,
      }),
    ),
  );
  const status = h("p", { class: "muted", role: "status" }, "Loading messages…");
  const tbody = h("tbody");
  clickableRows(tbody);
  const pager = h("nav", { class: "pager", "aria-label": "Pages" });
  fill(
    main,
    h(
      "div",
      { class: "page-head" },
      h("p", { class: "crumbs" }, link("#/mailboxes", "Mailboxes"), " / "),
      h("h1", {}, cue.name),
      h("p", { class: "sub mono" }, `${cue.id} · task ${cue.payload.task || "–"}`),
    ),
    filter,
    status,
    messageTable(tbody),
    pager,
  );

  let page;
  try {
    page = await api("/v1/executions", {
      params: { cue_id: cueId, status: state, limit: PAGE, before },
    });
  } catch (err) {
    status.replaceWith(notice(`Could not list the messages: ${err.message}`, "error"));
    return;
  }
  await learnNames(page.executions.map((e) => meta(e) && meta(e).sender));
  tbody.append(...page.executions.map(messageRow));
  const what = state ? `${stateLabel(state)} ` : "";
  // On an older page the server counts what is left from the cursor on.
  const countText = (total) =>
    total
      ? `${total} ${before ? "older " : ""}${what}message${total === 1 ? "" : "s"}`
      : `No ${before ? "older " : ""}${what}messages.`;
  status.textContent = countText(page.total);
  const query = state ? `state=${state}&` : "";
  if (before) pager.append(link(state ? `${base}?state=${state}` : base, "« Newest"));
  // A full page, or one the server cut by bytes ("truncated"), has more after it.
  if (page.executions.length && (page.executions.length === PAGE || page.truncated)) {
    const last = page.executions[page.executions.length - 1].id;
    pager.append(link(`${base}?${query}before=${encodeURIComponent(last)}`, "Older »"));
  }

  // Live: events for this mailbox re-read the page shown (at most once a second,
  // one request however busy it is): new messages go on top of the first page,
  // rows whose state changed are redrawn in place.
  const refresh = throttled(1000, async () => {
    let fresh;
    try {
      fresh = await api("/v1/executions", {
        params: { cue_id: cueId, status: state, limit: PAGE, before },
      });
    } catch {
      return;
    }
    await learnNames(fresh.executions.map((e) => meta(e) && meta(e).sender));
    const added = [];
    for (const exe of fresh.executions) {
      const shown = tbody.querySelector(`tr[data-execution="${CSS.escape(exe.id)}"]`);
      if (!shown) added.push(exe);
      else if (
        shown.dataset.status !== exe.status ||
        shown.dataset.attempts !== String(exe.attempts)
      ) {
        shown.replaceWith(messageRow(exe));
      }
    }
    if (!before) {
      for (const exe of added.reverse()) {
        const row = messageRow(exe);
        row.classList.add("flash");
        tbody.prepend(row);
      }
      status.textContent = countText(fresh.total);
    }
  });
  ctx.subscribe((event) => {
    if (event.cue_id !== cueId || !event.execution_id) return;
    const shown = tbody.querySelector(`tr[data-execution="${CSS.escape(event.execution_id)}"]`);
    if (shown || (!before && event.type === "fired")) refresh();
  });
  ctx.onLeave(refresh.cancel);
}

export async function threadPage(main, ctx, thread) {
  const list = h("ol", { class: "thread" });
  const status = h("p", { class: "muted", role: "status" }, "Reading the thread…");
  fill(
    main,
    h(
      "div",
      { class: "page-head" },
      h("p", { class: "crumbs" }, link("#/mailboxes", "Mailboxes"), " / thread"),
      h("h1", {}, `Thread ${thread}`),
    ),
    status,
    list,
  );
  if (!(await hasExtension("events.stream"))) {
    status.replaceWith(
      notice(
        "The thread view reads the event feed, which this server does not offer (events.stream).",
        "error",
      ),
    );
    return;
  }
  const items = new Map();
  let firstSender = null;

  async function show(executionId) {
    let exe;
    try {
      exe = await api(`/v1/executions/${encodeURIComponent(executionId)}`);
    } catch {
      return;
    }
    const m = meta(exe) || {};
    await learnNames([m.sender, exe.cue_id]);
    firstSender = firstSender || m.sender;
    const item = h(
      "li",
      {
        class: `bubble ${m.sender && m.sender === firstSender ? "from-first" : "from-other"}`,
        dataset: { execution: exe.id, created: exe.created_at },
      },
      h(
        "p",
        { class: "bubble-head" },
        h("strong", {}, senderLabel(exe)),
        " → ",
        h("strong", {}, nameOf(exe.cue_id) || exe.cue_id),
        " · ",
        h("span", { class: "kind" }, kindOf(exe)),
        " · ",
        when(exe.created_at),
        " ",
        badge(exe.status),
      ),
      h("pre", { class: "body" }, preview(exe, 600)),
      link(`#/message/${encodeURIComponent(exe.id)}`, "Timeline"),
    );
    const old = items.get(exe.id);
    items.set(exe.id, item);
    if (old) {
      old.replaceWith(item);
      return;
    }
    // In order of sending, whatever order the fetches finish in.
    const later = [...list.children].find((li) => li.dataset.created > exe.created_at);
    list.insertBefore(item, later || null);
  }

  // The thread's history is replayed from the start, then the feed stays live.
  const feed = new Feed({ thread, last_event_id: "0" }, (state, detail) => {
    if (state === "off") status.textContent = `The feed refused: ${detail}`;
  });
  const reading = [];
  feed.subscribe(async (event) => {
    if (event.type === "ready") {
      await Promise.all(reading); // the replayed messages are on the page first
      status.textContent = items.size
        ? `${items.size} message${items.size === 1 ? "" : "s"}, oldest first`
        : "No messages in this thread on record.";
      return;
    }
    if (event.execution_id && (event.type === "fired" || items.has(event.execution_id))) {
      reading.push(show(event.execution_id));
    }
  });
  feed.start();
  ctx.onLeave(() => feed.stop());
}
