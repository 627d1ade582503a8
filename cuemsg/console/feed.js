// feed.js: the live event feed (GET /v1/events, Server-Sent Events) read with
// fetch(), because EventSource cannot send the Authorization header. It
// reconnects by itself with Last-Event-ID, so a dropped connection loses
// nothing, and hands each event to whoever subscribed.

import { errorOf, headers, url } from "./api.js";

const sleep = (ms) => new Promise((done) => setTimeout(done, ms));

export class Feed {
  // params: the feed's filters (cue_id, thread, last_event_id);
  // onState(state, detail): "connecting" | "live" | "reconnecting" | "off".
  constructor(params = {}, onState = () => {}) {
    this.params = { ...params };
    this.onState = onState;
    this.listeners = new Set();
    this.lastId = null;
    this.stopped = false;
    this.abort = null;
  }

  subscribe(listener) {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  start() {
    this.run();
    return this;
  }

  stop() {
    this.stopped = true;
    if (this.abort) this.abort.abort();
  }

  async run() {
    let backoff = 500;
    this.onState("connecting");
    while (!this.stopped) {
      this.abort = new AbortController();
      try {
        const extra = { Accept: "text/event-stream" };
        if (this.lastId !== null) extra["Last-Event-ID"] = this.lastId;
        const answer = await fetch(url("/v1/events", this.params), {
          headers: headers(extra),
          signal: this.abort.signal,
          cache: "no-store",
        });
        if (!answer.ok) {
          const err = await errorOf(answer);
          // A refusal will not change by retrying: say why and stop.
          if (answer.status < 500 && answer.status !== 429) {
            this.onState("off", err.message);
            return;
          }
          throw err;
        }
        backoff = 500;
        await this.read(answer.body);
      } catch {
        // A dropped connection or a server error: wait, then resume from the last id.
        if (this.stopped) return;
      }
      if (this.stopped) return;
      this.onState("reconnecting");
      await sleep(backoff);
      backoff = Math.min(backoff * 2, 15000);
    }
  }

  async read(body) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      // Frames end with a blank line; servers may use \r\n. A trailing \r waits
      // for the next chunk, in case its \n is there.
      const cut = buffer.endsWith("\r") ? buffer.length - 1 : buffer.length;
      buffer = buffer.slice(0, cut).replace(/\r\n?/g, "\n") + buffer.slice(cut);
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        this.frame(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
      }
    }
  }

  frame(text) {
    let type = "message";
    const data = [];
    for (const line of text.split("\n")) {
      if (!line || line.startsWith(":")) continue; // a keepalive comment
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
      if (field === "id") this.lastId = value;
      else if (field === "event") type = value;
      else if (field === "data") data.push(value);
    }
    if (type === "ready") {
      this.onState("live");
      for (const listener of this.listeners) listener({ type: "ready" });
      return;
    }
    if (!data.length) return;
    let event;
    try {
      event = JSON.parse(data.join("\n"));
    } catch {
      return; // not an event of ours; the next frame is read as usual
    }
    for (const listener of this.listeners) listener(event);
  }
}

// Calls `fn` at most once every `ms`, soon after the first call of a burst:
// a busy mailbox's thousand events a second cost one refresh a second.
export function throttled(ms, fn) {
  let timer = null;
  const trigger = () => {
    if (timer === null) {
      timer = setTimeout(async () => {
        try {
          await fn();
        } finally {
          timer = null;
        }
      }, ms);
    }
  };
  trigger.cancel = () => clearTimeout(timer);
  return trigger;
}
