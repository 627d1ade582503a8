// api.js: the API key (sessionStorage, sent as a Bearer header: there is no
// cookie to forge), calls to the /v1 API with its error bodies turned into
// readable errors, and the mailbox names the pages show instead of cue ids.

const KEY = "cuemsg.console.key";

export function apiKey() {
  return sessionStorage.getItem(KEY);
}

export function setApiKey(key) {
  sessionStorage.setItem(KEY, key);
}

export function forgetApiKey() {
  sessionStorage.removeItem(KEY);
  cache.info = null;
  names.clear();
}

export class ApiError extends Error {
  constructor(status, code, message, field) {
    super(message);
    this.status = status;
    this.code = code;
    this.field = field;
  }
}

// Builds "/v1/x?a=1" from params, leaving out the empty ones.
export function url(path, params = {}) {
  const query = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value !== null && value !== undefined && value !== "") query.set(name, value);
  }
  const text = query.toString();
  return text ? `${path}?${text}` : path;
}

export function headers(extra = {}) {
  return { Authorization: `Bearer ${apiKey() || ""}`, ...extra };
}

// The error an answer carries, in the CueAPI shape {"error": {code, message, status}}.
export async function errorOf(answer) {
  let body = null;
  try {
    body = await answer.json();
  } catch {
    body = null;
  }
  const err = (body && body.error) || {};
  return new ApiError(
    answer.status,
    err.code || "http_error",
    err.message || `the server answered ${answer.status} ${answer.statusText}`,
    err.field,
  );
}

export async function api(path, { method = "GET", params, body } = {}) {
  let answer;
  try {
    answer = await fetch(url(path, params), {
      method,
      headers: headers(body === undefined ? {} : { "Content-Type": "application/json" }),
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (exc) {
    throw new ApiError(0, "unreachable", `could not reach the server (${exc.message})`);
  }
  if (!answer.ok) {
    const err = await errorOf(answer);
    if (answer.status === 401) window.dispatchEvent(new CustomEvent("cuemsg:signed-out"));
    throw err;
  }
  return answer.status === 204 ? null : answer.json();
}

const cache = { info: null };

// /v1/info, once per sign-in: which extensions (events.stream, ...) the server has.
export async function serverInfo() {
  if (!cache.info) cache.info = await api("/v1/info");
  return cache.info;
}

export async function hasExtension(name) {
  const info = await serverInfo();
  return (info.extensions || []).includes(name);
}

// A mailbox is a worker cue whose stored payload names its task.
export function isMailbox(cue) {
  return cue.transport === "worker" && cue.payload && typeof cue.payload.task === "string";
}

const names = new Map();

export function nameOf(cueId) {
  return names.get(cueId) || null;
}

// Whether the cue was seen in a listing (a mailbox or not).
export function knownCue(cueId) {
  return names.has(cueId);
}

export async function mailboxes() {
  const found = [];
  for (let offset = 0; ;) {
    const page = await api("/v1/cues", { params: { limit: 100, offset } });
    for (const cue of page.cues) {
      names.set(cue.id, cue.name);
      if (isMailbox(cue)) found.push(cue);
    }
    offset += page.cues.length;
    if (!page.cues.length || offset >= page.total) break;
  }
  return found.sort((a, b) => a.name.localeCompare(b.name));
}

// Learns names of cues not seen yet (a sender from another page), quietly.
export async function learnNames(cueIds) {
  const unknown = [...new Set(cueIds)].filter(
    (id) => id && id.startsWith("cue_") && !names.has(id),
  );
  await Promise.all(
    unknown.map(async (id) => {
      try {
        names.set(id, (await api(`/v1/cues/${encodeURIComponent(id)}`)).name);
      } catch {
        names.set(id, null);
      }
    }),
  );
}

// How many executions match, read from a one-row page's `total` (never loads them).
export async function count(params) {
  return (await api("/v1/executions", { params: { ...params, limit: 1 } })).total;
}

export function redrive(executionId) {
  return api(`/v1/executions/${encodeURIComponent(executionId)}/redrive`, { method: "POST" });
}
