// dom.js: building elements and formatting what the pages show (states,
// times, ids, bodies). Every value from the API goes in as text, never as
// HTML, so a message body cannot inject markup.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") el.className = value;
    else if (name === "text") el.textContent = value;
    else if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(el.dataset, value);
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : String(child));
  }
}

// Replaces an element's content; like h(), it skips null and false children.
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

// Each execution state: its label (the text that goes with the colour) and a glyph.
const STATES = {
  pending: ["waiting", "◷"],
  retry_ready: ["retry due", "↻"],
  delivering: ["in flight", "➜"],
  success: ["done", "✓"],
  failed: ["dead letter", "✗"],
  missed: ["missed", "–"],
};

export const FILTERS = [
  ["", "All"],
  ["pending", "Waiting"],
  ["delivering", "In flight"],
  ["success", "Done"],
  ["failed", "Dead letters"],
  ["missed", "Missed"],
];

export function stateLabel(status) {
  return (STATES[status] || [status || "unknown"])[0];
}

export function badge(status) {
  const [label, glyph] = STATES[status] || [status || "unknown", "?"];
  return h(
    "span",
    { class: `badge state-${status || "unknown"}`, dataset: { state: status || "" } },
    h("span", { "aria-hidden": "true", class: "glyph" }, glyph),
    label,
  );
}

export function ago(iso) {
  if (!iso) return "never";
  const seconds = (Date.now() - Date.parse(iso)) / 1000;
  if (!Number.isFinite(seconds)) return iso;
  if (seconds < 5) return "just now";
  if (seconds < 60) return `${Math.round(seconds)} s ago`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.round(seconds / 3600)} h ago`;
  return new Date(iso).toLocaleDateString();
}

// A time as "12 s ago", the exact time in a tooltip and for screen readers.
export function when(iso) {
  if (!iso) return h("span", { class: "muted" }, "–");
  return h("time", { datetime: iso, title: new Date(iso).toLocaleString() }, ago(iso));
}

export function exact(iso) {
  return iso ? new Date(iso).toLocaleString() : "–";
}

// An id cut to 8 characters that still tell it apart: the start of a UUID,
// the end of a message id (a ULID starts with its time, shared by a burst).
export function short(id) {
  if (!id) return "–";
  const text = String(id);
  return /^[0-9A-HJKMNP-TV-Z]{26}$/.test(text) ? text.slice(-8) : text.slice(0, 8);
}

export function pretty(value) {
  return JSON.stringify(value, null, 2);
}

// The cuemsg envelope of an execution's payload, or null for a foreign payload.
export function meta(exe) {
  const m = exe && exe.payload && exe.payload.cuemsg;
  return m && typeof m === "object" ? m : null;
}

export function kindOf(exe) {
  const m = meta(exe);
  return m ? m.kind || "message" : "foreign";
}

// One line that says what a message is about: its body, cut short.
export function preview(exe, width = 90) {
  const payload = (exe && exe.payload) || {};
  const body = "message" in payload ? payload.message : payload;
  const text = typeof body === "string" ? body : JSON.stringify(body);
  return text.length > width ? `${text.slice(0, width - 1)}…` : text;
}

export function link(href, text, attrs = {}) {
  return h("a", { href, ...attrs }, text);
}

export function notice(text, tone = "info") {
  return h("p", { class: `notice ${tone}`, role: tone === "error" ? "alert" : "status" }, text);
}
