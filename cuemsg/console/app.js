// app.js: the console's shell: sign-in with a pasted API key, the router over
// the URL fragment (#/mailboxes, #/mailbox/ID, #/message/ID, #/thread/T,
// #/dead), and the one live feed the pages subscribe to while they are shown.

import { ApiError, api, apiKey, forgetApiKey, hasExtension, serverInfo, setApiKey } from "./api.js";
import { deadPage } from "./dead.js";
import { fill, h, notice } from "./dom.js";
import { Feed } from "./feed.js";
import { mailboxesPage } from "./mailboxes.js";
import { mailboxPage, threadPage } from "./messages.js";
import { messagePage } from "./timeline.js";

const main = document.getElementById("main");
const nav = document.getElementById("nav");
const live = document.getElementById("live");
const signOut = document.getElementById("signout");

// Each page renders into a view of its own: one still loading when the reader
// has moved on writes into a view no longer on screen, never over the new page.
const ROUTES = [
  [/^\/mailboxes$/, "mailboxes", (view, ctx) => mailboxesPage(view, ctx)],
  [/^\/mailbox\/([^/]+)$/, "mailboxes", (view, ctx, id) => mailboxPage(view, ctx, id)],
  [/^\/message\/([^/]+)$/, "mailboxes", (view, ctx, id) => messagePage(view, ctx, id)],
  [/^\/thread\/(.+)$/, "mailboxes", (view, ctx, thread) => threadPage(view, ctx, thread)],
  [/^\/dead$/, "dead", (view, ctx) => deadPage(view, ctx)],
];

let feed = null;
let leaving = [];
let checkingKey = false; // a 401 while a key is being tried is the sign-in's to report

function showLive(state, detail) {
  const text = {
    connecting: "Connecting…",
    live: "Live",
    reconnecting: "Reconnecting…",
    off: "Live updates off",
  }[state];
  live.hidden = false;
  live.className = `live ${state}`;
  live.replaceChildren(h("span", { class: "glyph", "aria-hidden": "true" }, "●"), text);
  live.title =
    detail || (state === "live" ? "Updates arrive from the event feed as they happen" : "");
}

async function startFeed() {
  if (feed) return;
  if (!(await hasExtension("events.stream"))) {
    showLive("off", "This server has no event feed (events.stream): reload to see changes.");
    return;
  }
  feed = new Feed({}, showLive).start();
}

function stopFeed() {
  if (feed) feed.stop();
  feed = null;
  live.hidden = true;
}

function leave() {
  for (const fn of leaving) fn();
  leaving = [];
}

let visit = 0; // counts page visits: a context from an earlier one is stale

async function route() {
  leave();
  const current = ++visit;
  if (!apiKey()) {
    signInPage();
    return;
  }
  nav.hidden = false;
  signOut.hidden = false;
  startFeed();
  const view = h("div", { class: "view" });
  fill(main, view);
  const [path, queryText] = (location.hash.slice(1) || "/mailboxes").split("?");
  for (const [pattern, section, page] of ROUTES) {
    const match = pattern.exec(path);
    if (!match) continue;
    for (const a of nav.querySelectorAll("a")) {
      a.setAttribute("aria-current", a.dataset.nav === section ? "page" : "false");
    }
    const stale = () => current !== visit;
    const ctx = {
      query: new URLSearchParams(queryText || ""),
      // A listener or clean-up given after the reader moved on is dropped at once.
      subscribe: (listener) => {
        if (feed && !stale()) leaving.push(feed.subscribe(listener));
      },
      onLeave: (fn) => (stale() ? fn() : leaving.push(fn)),
      reload: () => route(),
    };
    const args = match.slice(1).map(decodeURIComponent);
    await page(view, ctx, ...args);
    if (!stale()) main.focus({ preventScroll: true });
    return;
  }
  fill(
    view,
    notice(`There is no page ${location.hash}.`, "error"),
    h("p", {}, h("a", { href: "#/mailboxes" }, "Go to the mailboxes")),
  );
}

function signInPage(message) {
  nav.hidden = true;
  signOut.hidden = true;
  stopFeed();
  const input = h("input", {
    id: "key",
    name: "key",
    type: "password",
    autocomplete: "off",
    spellcheck: "false",
    placeholder: "cue_sk_…",
    required: true,
    "aria-describedby": "key-help",
  });
  const error = h(
    "p",
    { class: "notice error", role: "alert", id: "signin-error", hidden: !message },
    message || "",
  );
  const button = h("button", { type: "submit", class: "primary" }, "Sign in");
  const form = h(
    "form",
    { class: "signin card", novalidate: true },
    h("h1", {}, "Sign in"),
    h("label", { for: "key" }, "API key"),
    input,
    h(
      "p",
      { class: "muted", id: "key-help" },
      "Paste the key `cuemsg serve` printed when it made its database (or one from `cuemsg keys create`). ",
      "It stays in this browser tab only and is sent with each request; closing the tab forgets it.",
    ),
    error,
    button,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const key = input.value.trim();
    error.hidden = false;
    if (!key) {
      error.textContent =
        "Paste an API key first: it looks like cue_sk_ followed by 32 characters.";
      input.focus();
      return;
    }
    button.disabled = true;
    error.textContent = "Checking the key…";
    setApiKey(key);
    checkingKey = true;
    try {
      await api("/v1/cues", { params: { limit: 1 } });
      await serverInfo();
    } catch (err) {
      forgetApiKey();
      checkingKey = false;
      button.disabled = false;
      error.textContent =
        err instanceof ApiError && err.status === 401
          ? "This server did not accept that key (401 invalid_api_key). Check that you pasted the whole key, for this server."
          : `Could not sign in: ${err.message}`;
      input.focus();
      input.select();
      return;
    }
    checkingKey = false;
    if (!location.hash || location.hash === "#/signin") location.hash = "#/mailboxes";
    else route();
  });
  fill(main, form);
  input.focus();
}

window.addEventListener("hashchange", route);
// The skip link moves focus without touching the fragment the router reads.
document.querySelector("a.skip").addEventListener("click", (event) => {
  event.preventDefault();
  main.focus();
});
// A key refused mid-session (revoked, another server): back to sign-in, saying why.
window.addEventListener("cuemsg:signed-out", () => {
  if (!apiKey() || checkingKey) return;
  forgetApiKey();
  leave();
  signInPage("The server no longer accepts this key (401). Sign in again.");
});
signOut.addEventListener("click", () => {
  forgetApiKey();
  leave();
  signInPage();
});
route();
