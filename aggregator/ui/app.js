// The page's router: the view and its state live in the URL's hash, so
// every view can be shared as a link and the back button works.

import { NeedsToken, setToken, token } from "./api.js";
import { errorBox, replace } from "./dom.js";
import { renderCoverage } from "./coverage.js";
import { renderObject, renderSearch } from "./provenance.js";

const view = document.getElementById("view");
const tokenForm = document.getElementById("token-form");
const signOut = document.getElementById("sign-out");
const live = document.getElementById("live");
let running = null;

const ROUTES = {
  "/coverage": renderCoverage,
  "/provenance": renderSearch,
  "/object": renderObject,
};

function location_() {
  const hash = window.location.hash.slice(1) || "/coverage";
  const at = hash.indexOf("?");
  const path = at < 0 ? hash : hash.slice(0, at);
  const params = new URLSearchParams(at < 0 ? "" : hash.slice(at + 1));
  return { path, params };
}

function hashOf(path, params) {
  const entries = [...params.entries()].filter(([, v]) => v !== "" && v !== null);
  const q = new URLSearchParams(entries).toString();
  return `#${path}${q ? `?${q}` : ""}`;
}

// What a view may do with the page around it.
function context(path, controller) {
  return {
    signal: controller.signal,
    // Records a view's own state change in the URL without redrawing it.
    remember(params) {
      history.replaceState(null, "", hashOf(path, params));
    },
    go(to, params) {
      window.location.hash = hashOf(to, params || new URLSearchParams());
    },
    hrefOf(to, params) {
      return hashOf(to, params);
    },
    setLive(text) {
      live.textContent = text;
    },
  };
}

async function render() {
  if (running) running.abort();
  const controller = new AbortController();
  running = controller;
  const { path, params } = location_();
  const draw = ROUTES[path] || renderCoverage;
  for (const link of document.querySelectorAll("nav a")) {
    const here = link.getAttribute("href") === `#${path}` ||
      (path === "/object" && link.id === "nav-provenance");
    if (here) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  signOut.hidden = !token();
  tokenForm.hidden = true;
  live.textContent = "";
  try {
    await draw(view, params, context(path, controller));
  } catch (error) {
    if (controller.signal.aborted) return;
    if (error instanceof NeedsToken) {
      askForToken(error.message);
    } else {
      replace(view, errorBox(error));
    }
  }
}

function askForToken(message) {
  replace(view);
  tokenForm.hidden = false;
  document.getElementById("token-error").textContent = token() ? message : "";
  document.getElementById("token").focus();
}

tokenForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const input = document.getElementById("token");
  setToken(input.value.trim());
  input.value = "";
  render();
});

signOut.addEventListener("click", () => {
  setToken("");
  render();
});

window.addEventListener("hashchange", render);
// A page left open in the back-forward cache would keep its event stream,
// one of the few connections a browser allows per host: leaving closes it,
// and coming back draws afresh.
window.addEventListener("pagehide", () => {
  if (running) running.abort();
});
window.addEventListener("pageshow", (event) => {
  if (event.persisted) render();
});
render();
