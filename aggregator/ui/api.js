// The aggregator's JSON routes, with the reader's bearer token. The token
// lives in this tab's sessionStorage: never in a URL, a cookie or a log.

const TOKEN_KEY = "apiwitness.token";

export class NeedsToken extends Error {
  constructor(message) {
    super(message);
    this.name = "NeedsToken";
  }
}

export function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

export function setToken(value) {
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
}

function headers(extra = {}) {
  const all = { Accept: "application/json", ...extra };
  const t = token();
  if (t) all.Authorization = `Bearer ${t}`;
  return all;
}

export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) {
    if (v !== undefined && v !== null && v !== "") q.set(k, v);
  }
  const text = q.toString();
  return text ? `?${text}` : "";
}

export async function getJSON(path, params) {
  const response = await fetch(path + query(params), { headers: headers() });
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (response.status === 401) {
    throw new NeedsToken((body && body.error) || "a token is needed");
  }
  if (!response.ok) {
    throw new Error((body && body.error) || `${path}: HTTP ${response.status}`);
  }
  return body;
}

// Calls `onIngested(count)` for each `ingested` event of /events, until
// `signal` aborts; reconnects after a pause when the stream breaks.
export async function watchIngest(onIngested, signal, onState = () => {}) {
  while (!signal.aborted) {
    try {
      const response = await fetch("/events", {
        headers: headers({ Accept: "text/event-stream" }),
        signal,
      });
      // A token that is no longer accepted will not be on the next try
      // either: the page says so instead of retrying forever.
      if (response.status === 401 || response.status === 403) {
        onState("signed-out");
        return;
      }
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      onState("live");
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const lines = block.split("\n");
          const event = lines.find((l) => l.startsWith("event:"));
          const data = lines.find((l) => l.startsWith("data:"));
          if (event && event.slice(6).trim() === "ingested" && data) {
            onIngested(Number(data.slice(5).trim()));
          }
        }
      }
    } catch (error) {
      if (signal.aborted) return;
    }
    onState("reconnecting");
    await new Promise((resolve) => setTimeout(resolve, 3000));
  }
}
