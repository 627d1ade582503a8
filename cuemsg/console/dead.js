// dead.js: the dead letters (executions whose outcome failed), with their
// error, and redrive: one, or all the selected ones, each row showing what
// became of it. Paged by cursor like a mailbox.

import { api, hasExtension, learnNames, nameOf, redrive } from "./api.js";
import { fill, h, kindOf, link, meta, notice, short, when } from "./dom.js";
import { throttled } from "./feed.js";
import { senderLabel } from "./messages.js";

const PAGE = 50;

export async function deadPage(main, ctx) {
  const cueId = ctx.query.get("cue_id") || "";
  const before = ctx.query.get("before") || "";
  const canRedrive = await hasExtension("executions.redrive").catch(() => false);
  if (cueId) await learnNames([cueId]); // the heading names the mailbox
  const status = h("p", { class: "muted", role: "status" }, "Loading dead letters…");
  const result = h("p", { class: "result", role: "status", "aria-live": "polite" });
  const selectAll = h("input", {
    type: "checkbox",
    id: "select-all",
    "aria-label": "Select every dead letter on this page",
  });
  const redriveSelected = h(
    "button",
    { type: "button", class: "primary", disabled: true },
    "Redrive selected",
  );
  const tbody = h("tbody");
  const pager = h("nav", { class: "pager", "aria-label": "Pages" });
  const table = h(
    "table",
    { class: "grid dead" },
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        h("th", { scope: "col", class: "pick" }, canRedrive ? selectAll : ""),
        h("th", { scope: "col" }, "Mailbox"),
        h("th", { scope: "col" }, "Message"),
        h("th", { scope: "col" }, "From"),
        h("th", { scope: "col" }, "Error"),
        h("th", { scope: "col" }, "Failed"),
        h("th", { scope: "col" }, "Redrive"),
      ),
    ),
    tbody,
  );
  const base = cueId ? `#/dead?cue_id=${encodeURIComponent(cueId)}` : "#/dead";
  fill(
    main,
    h(
      "div",
      { class: "page-head" },
      h(
        "h1",
        {},
        "Dead letters",
        cueId ? h("span", { class: "sub" }, ` in ${nameOf(cueId) || cueId}`) : null,
      ),
      status,
    ),
    canRedrive
      ? h("div", { class: "toolbar" }, redriveSelected, result)
      : notice(
          "This server does not offer redrive (executions.redrive): the dead letters are shown, not sent again.",
        ),
    table,
    pager,
  );

  const boxes = () => [...tbody.querySelectorAll("input.pick:not(:disabled)")];
  function syncSelection() {
    const picked = boxes().filter((b) => b.checked);
    redriveSelected.disabled = picked.length === 0;
    redriveSelected.textContent = picked.length
      ? `Redrive selected (${picked.length})`
      : "Redrive selected";
    selectAll.checked = picked.length > 0 && picked.length === boxes().length;
  }
  selectAll.addEventListener("change", () => {
    for (const box of boxes()) box.checked = selectAll.checked;
    syncSelection();
  });

  // Shows what became of a row's dead letter: `note` says how we know.
  function outcomeCell(tr, redrivenTo, note) {
    tr.dataset.redriven = redrivenTo;
    tr.querySelector("td.redrive").replaceChildren(
      h("span", { class: "badge state-success" }, note),
      " as ",
      link(`#/message/${encodeURIComponent(redrivenTo)}`, short(redrivenTo), { class: "mono" }),
    );
    const box = tr.querySelector("input.pick");
    if (box) {
      box.checked = false;
      box.disabled = true;
    }
  }

  // Redrives one row; answers "sent", "already" or "error".
  async function redriveRow(tr) {
    const cell = tr.querySelector("td.redrive");
    cell.textContent = "Redriving…";
    try {
      const answer = await redrive(tr.dataset.execution);
      outcomeCell(tr, answer.redriven_to, answer.redriven ? "✓ sent again" : "already sent again");
      return answer.redriven ? "sent" : "already";
    } catch (err) {
      cell.replaceChildren(h("span", { class: "badge state-failed" }, `✗ ${err.message}`));
      return "error";
    }
  }

  function deadRow(exe) {
    const m = meta(exe) || {};
    const tr = h("tr", { dataset: { execution: exe.id } });
    const box = canRedrive
      ? h("input", {
          type: "checkbox",
          class: "pick",
          disabled: Boolean(exe.redriven_to),
          "aria-label": `Select ${kindOf(exe)} ${short(m.id || exe.id)}`,
          onchange: syncSelection,
        })
      : "";
    const action = h("td", { "data-label": "Redrive", class: "redrive" });
    if (canRedrive && !exe.redriven_to) {
      action.append(
        h(
          "button",
          {
            type: "button",
            onclick: async () => {
              await redriveRow(tr);
              syncSelection();
            },
          },
          "Redrive",
        ),
      );
    }
    tr.append(
      h("td", { class: "pick" }, box),
      h(
        "td",
        { "data-label": "Mailbox" },
        link(`#/mailbox/${encodeURIComponent(exe.cue_id)}`, nameOf(exe.cue_id) || exe.cue_id),
      ),
      h(
        "td",
        { "data-label": "Message" },
        link(`#/message/${encodeURIComponent(exe.id)}`, `${kindOf(exe)} ${short(m.id || exe.id)}`),
        h("span", { class: "sub" }, `${exe.attempts} attempt${exe.attempts === 1 ? "" : "s"}`),
      ),
      h("td", { "data-label": "From" }, senderLabel(exe)),
      h(
        "td",
        { "data-label": "Error", class: "wide error-text" },
        (exe.outcome && exe.outcome.error) || "rejected",
      ),
      h(
        "td",
        { "data-label": "Failed" },
        when(exe.outcome ? exe.outcome.recorded_at : exe.updated_at),
      ),
      action,
    );
    if (exe.redriven_to) outcomeCell(tr, exe.redriven_to, "sent again");
    return tr;
  }

  redriveSelected.addEventListener("click", async () => {
    const picked = boxes()
      .filter((b) => b.checked)
      .map((b) => b.closest("tr"));
    redriveSelected.disabled = true;
    result.textContent = `Redriving ${picked.length}…`;
    const tally = { sent: 0, already: 0, error: 0 };
    for (const tr of picked) tally[await redriveRow(tr)] += 1;
    result.textContent =
      `Redrove ${picked.length}: ${tally.sent} sent again, ${tally.already} already sent again, ` +
      `${tally.error} failed.`;
    result.className = `result ${tally.error ? "bad" : "good"}`;
    syncSelection();
  });

  let page;
  try {
    page = await api("/v1/executions", {
      params: { status: "failed", cue_id: cueId, limit: PAGE, before },
    });
  } catch (err) {
    status.replaceWith(notice(`Could not list the dead letters: ${err.message}`, "error"));
    return;
  }
  await learnNames(page.executions.flatMap((e) => [e.cue_id, meta(e) && meta(e).sender]));
  tbody.append(...page.executions.map(deadRow));
  const older = before ? "older " : ""; // past a cursor, the server counts what is left
  const countText = (total) =>
    total ? `${total} ${older}dead letter${total === 1 ? "" : "s"}` : `No ${older}dead letters.`;
  status.textContent = countText(page.total);
  table.hidden = !tbody.rows.length;
  if (before) pager.append(link(base, "« Newest"));
  // A full page, or one the server cut by bytes ("truncated"), has more after it.
  if (page.executions.length && (page.executions.length === PAGE || page.truncated)) {
    const last = page.executions[page.executions.length - 1].id;
    pager.append(link(`${base}${cueId ? "&" : "?"}before=${encodeURIComponent(last)}`, "Older »"));
  }

  // Live: failures and redrives re-read the page shown (at most once a second):
  // a new dead letter goes on top of the first page, one redriven elsewhere (the
  // CLI, another tab) says so. Redrives made here are shown already.
  const refresh = throttled(1000, async () => {
    let fresh;
    try {
      fresh = await api("/v1/executions", {
        params: { status: "failed", cue_id: cueId, limit: PAGE, before },
      });
    } catch {
      return;
    }
    await learnNames(fresh.executions.flatMap((e) => [e.cue_id, meta(e) && meta(e).sender]));
    const added = [];
    for (const exe of fresh.executions) {
      const shown = tbody.querySelector(`tr[data-execution="${CSS.escape(exe.id)}"]`);
      if (!shown) added.push(exe);
      else if (
        exe.redriven_to &&
        !shown.dataset.redriven &&
        shown.querySelector("td.redrive").textContent !== "Redriving…"
      ) {
        outcomeCell(shown, exe.redriven_to, "sent again");
      }
    }
    if (!before) {
      for (const exe of added.reverse()) {
        const tr = deadRow(exe);
        tr.classList.add("flash");
        tbody.prepend(tr);
      }
      table.hidden = !tbody.rows.length;
      status.textContent = countText(fresh.total);
    }
    syncSelection();
  });
  ctx.subscribe((event) => {
    if (cueId && event.cue_id !== cueId) return;
    if ((event.type === "outcome" && event.status === "failed") || event.type === "redriven")
      refresh();
  });
  ctx.onLeave(refresh.cancel);
}
