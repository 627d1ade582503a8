// timeline.js: one message's story, from its execution record: sent (by whom,
// when), its claims (worker, attempt, lease), leases that ran out, the
// outcome, a redrive either way, and the reply with its own timeline; then
// the envelope and body pretty-printed. Feed events for it refresh the page
// and add the lost heartbeats the record keeps only the latest of.

import { api, hasExtension, learnNames, nameOf, redrive } from "./api.js";
import { badge, exact, fill, h, kindOf, link, meta, notice, pretty, short } from "./dom.js";

function cueLabel(cueId) {
  if (!cueId) return "–";
  const name = nameOf(cueId);
  return name ? `${name} (${cueId})` : cueId;
}

function messageLink(executionId) {
  return link(`#/message/${encodeURIComponent(executionId)}`, short(executionId), {
    class: "mono",
  });
}

// The steps of an execution's life, oldest first: {at, tone, title, detail}.
export function steps(exe, seen = []) {
  const m = meta(exe) || {};
  const out = [];
  // The record names the dead letter a redrive re-sends; so does the envelope.
  const redriveOf = exe.redrive_of || m.redrive_of;
  out.push({
    at: m.sent_at || exe.created_at,
    tone: "sent",
    title: m.sender ? `Sent by ${cueLabel(m.sender)}` : "Fired",
    detail: [
      `${kindOf(exe)} ${m.id || ""} to ${cueLabel(exe.cue_id)}`,
      redriveOf ? h("span", {}, " · a redrive of ", messageLink(redriveOf)) : null,
    ],
  });
  if (exe.scheduled_for && Date.parse(exe.scheduled_for) - Date.parse(exe.created_at) > 1000) {
    out.push({ at: exe.scheduled_for, tone: "info", title: "Due", detail: "scheduled send" });
  }
  const holding = exe.status === "delivering" || (exe.outcome && exe.outcome.worker_id);
  const lostEvents = seen.filter((e) => e.type === "heartbeat_lost");
  const lostBefore = Math.max((exe.attempts || 0) - (holding ? 1 : 0) - lostEvents.length, 0);
  if (lostBefore) {
    out.push({
      at: null, // the record keeps how many, not when
      tone: "lost",
      title: `Lease ran out ${lostBefore === 1 ? "once" : `${lostBefore} times`}`,
      detail: "no heartbeat from the worker in time: the message went back to waiting",
    });
  }
  for (const e of lostEvents) {
    out.push({
      at: e.at,
      tone: "lost",
      title: `Lease lost by ${e.worker_id || "a worker"}`,
      detail: `attempt ${e.attempt}: no heartbeat in time, back to ${e.status === "failed" ? "failed (claim cap)" : "waiting"}`,
    });
  }
  if (exe.claimed_at && holding) {
    const lease =
      exe.status === "delivering" && exe.lease_expires_at
        ? `, lease until ${exact(exe.lease_expires_at)}`
        : "";
    out.push({
      at: exe.claimed_at,
      tone: "claimed",
      title: `Claimed by ${exe.claimed_by_worker || (exe.outcome && exe.outcome.worker_id) || "a worker"}`,
      detail: `attempt ${exe.attempts} of ${exe.max_attempts}${lease}`,
    });
  }
  const o = exe.outcome;
  if (o) {
    out.push({
      at: o.recorded_at,
      tone: o.success ? "success" : "failed",
      title: o.success ? "Done" : "Failed: a dead letter",
      detail: o.success ? o.result || "acknowledged" : o.error || "rejected",
    });
  } else if (exe.status === "missed") {
    out.push({
      at: exe.updated_at,
      tone: "missed",
      title: "Missed",
      detail: "nobody claimed it in time",
    });
  } else if (exe.status === "pending" || exe.status === "retry_ready") {
    out.push({ at: null, tone: "waiting", title: "Waiting to be claimed", detail: "" });
  }
  if (exe.redriven_to) {
    out.push({
      at: exe.updated_at,
      tone: "sent",
      title: "Sent again (redriven)",
      detail: h("span", {}, "as ", messageLink(exe.redriven_to)),
    });
  }
  return out;
}

function timeline(exe, seen) {
  return h(
    "ol",
    { class: "timeline" },
    steps(exe, seen).map((step) =>
      h(
        "li",
        { class: `step tone-${step.tone}` },
        h("span", { class: "dot", "aria-hidden": "true" }),
        h(
          "p",
          { class: "step-title" },
          h("strong", {}, step.title),
          " ",
          step.at ? h("time", { datetime: step.at }, exact(step.at)) : null,
        ),
        h("p", { class: "step-detail" }, step.detail),
      ),
    ),
  );
}

function envelopeOf(exe) {
  const payload = { ...(exe.payload || {}) };
  delete payload.message;
  return payload;
}

function pre(value, label) {
  return h("pre", { class: "code", tabindex: "0", "aria-label": label }, pretty(value));
}

async function replySection(exe, seen) {
  const replyId =
    exe.outcome && exe.outcome.metadata && exe.outcome.metadata.cuemsg
      ? exe.outcome.metadata.cuemsg.reply_execution_id
      : null;
  if (!replyId) return null;
  let reply;
  try {
    reply = await api(`/v1/executions/${encodeURIComponent(replyId)}`);
  } catch (err) {
    return h(
      "section",
      {},
      h("h2", {}, "Reply"),
      notice(`The reply ${replyId} could not be read: ${err.message}`, "error"),
    );
  }
  await learnNames([meta(reply) && meta(reply).sender, reply.cue_id]);
  return h(
    "section",
    { class: "reply" },
    h("h2", {}, "Reply ", badge(reply.status)),
    h(
      "p",
      {},
      link(`#/message/${encodeURIComponent(reply.id)}`, `Open the reply ${short(reply.id)}`),
    ),
    timeline(
      reply,
      seen.filter((e) => e.execution_id === reply.id),
    ),
    h("h3", {}, "Reply body"),
    pre(reply.payload ? reply.payload.message : null, "reply body"),
  );
}

async function redriveButton(exe, after) {
  if (exe.status !== "failed" || exe.redriven_to || !(await hasExtension("executions.redrive")))
    return null;
  const result = h("span", { role: "status", class: "result" });
  const button = h(
    "button",
    {
      type: "button",
      class: "primary",
      onclick: async () => {
        button.disabled = true;
        result.textContent = "Redriving…";
        try {
          const answer = await redrive(exe.id);
          result.replaceChildren(
            answer.redriven ? "✓ Sent again as " : "Already sent again as ",
            messageLink(answer.redriven_to),
          );
          after();
        } catch (err) {
          result.textContent = `✗ ${err.message}`;
          button.disabled = false;
        }
      },
    },
    "Redrive this dead letter",
  );
  return h("p", { class: "actions" }, button, " ", result);
}

export async function messagePage(main, ctx, executionId) {
  const seen = [];
  async function render() {
    let exe;
    try {
      exe = await api(`/v1/executions/${encodeURIComponent(executionId)}`);
    } catch (err) {
      fill(main, notice(`Could not read the message ${executionId}: ${err.message}`, "error"));
      return;
    }
    const m = meta(exe) || {};
    await learnNames([m.sender, exe.cue_id, m.reply_cue_id]);
    const reply = await replySection(exe, seen);
    const mailbox = `#/mailbox/${encodeURIComponent(exe.cue_id)}`;
    fill(
      main,
      h(
        "div",
        { class: "page-head" },
        h(
          "p",
          { class: "crumbs" },
          link("#/mailboxes", "Mailboxes"),
          " / ",
          link(mailbox, nameOf(exe.cue_id) || exe.cue_id),
          " /",
        ),
        h("h1", {}, `${kindOf(exe)} ${short(m.id || exe.id)} `, badge(exe.status)),
        h(
          "p",
          { class: "sub mono" },
          `execution ${exe.id}`,
          m.thread
            ? h(
                "span",
                {},
                " · thread ",
                link(`#/thread/${encodeURIComponent(m.thread)}`, m.thread),
              )
            : null,
        ),
      ),
      await redriveButton(exe, render),
      h(
        "div",
        { class: "columns" },
        h(
          "section",
          {},
          h("h2", {}, "Timeline"),
          timeline(
            exe,
            seen.filter((e) => e.execution_id === exe.id),
          ),
        ),
        h(
          "section",
          {},
          h("h2", {}, "Body"),
          pre(exe.payload ? exe.payload.message : null, "message body"),
          h("h2", {}, "Envelope"),
          pre(envelopeOf(exe), "envelope"),
        ),
      ),
      reply,
      h(
        "details",
        { class: "record" },
        h("summary", {}, "The whole execution record"),
        pre(exe, "execution record"),
      ),
    );
    return exe;
  }
  const exe = await render();
  // Live: events for this message (or its reply) refresh the page.
  let replyId = null;
  if (exe && exe.outcome && exe.outcome.metadata && exe.outcome.metadata.cuemsg) {
    replyId = exe.outcome.metadata.cuemsg.reply_execution_id || null;
  }
  let pending = null;
  ctx.subscribe((event) => {
    if (event.execution_id !== executionId && event.execution_id !== replyId) return;
    if (event.type === "heartbeat_lost") seen.push(event);
    clearTimeout(pending);
    pending = setTimeout(async () => {
      const hadFocus = main.contains(document.activeElement);
      const fresh = await render();
      if (fresh && fresh.outcome && fresh.outcome.metadata && fresh.outcome.metadata.cuemsg) {
        replyId = fresh.outcome.metadata.cuemsg.reply_execution_id || replyId;
      }
      // The page was redrawn: keep the keyboard in it rather than back at the top.
      if (hadFocus && main.isConnected) main.parentElement.focus({ preventScroll: true });
    }, 200);
  });
  ctx.onLeave(() => clearTimeout(pending));
}
