// The page: sign-in and sign-out, the profile's tabs, the alert region, and what the tabs
// share (the user's credential names). Each tab lives in a module of its own.

import { API, ApiError, call, setUnauthorizedHandler } from "./api.js";
import { append, el } from "./dom.js";
import { renderActivity } from "./activity.js";
import { CredentialNames, renderCredentials } from "./credentials.js";
import { renderProviders } from "./providers.js";
import { renderTokens } from "./tokens.js";
import { renderUsage } from "./usage.js";

const $ = (id) => document.getElementById(id);

const alerts = $("alerts");
const status = $("status");

/** What every tab gets: error and status reporting, navigation, the credential names. */
const ui = {
  /** Show a failed call (or any error) in the alert region. */
  showError(error, context) {
    if (error instanceof ApiError && error.handled) return;
    const text = error instanceof ApiError ? error.describe() : String(error.message || error);
    const line = el("p", { class: "alert" }, context ? `${context}: ${text}` : text);
    const dismiss = el("button", {
      type: "button",
      class: "link",
      text: "Dismiss",
      "aria-label": "Dismiss this message",
      onclick: () => line.remove(),
    });
    append(line, " ", dismiss);
    alerts.append(line);
  },
  clearErrors() {
    alerts.replaceChildren();
  },
  /** A short, polite confirmation ("Saved openai."). */
  notify(text) {
    status.textContent = text;
  },
  openTab(name) {
    selectTab($(`tab-${name}`), true);
  },
  credentialNames: new CredentialNames(),
};

// --- tabs: a WAI-ARIA tablist (arrow keys, Home, End) -----------------------------------

const tabs = () => Array.from(document.querySelectorAll('[role="tab"]'));
const renderers = {
  providers: renderProviders,
  credentials: renderCredentials,
  tokens: renderTokens,
  activity: renderActivity,
  usage: renderUsage,
};

function selectTab(tab, focus) {
  for (const other of tabs()) {
    const selected = other === tab;
    other.setAttribute("aria-selected", String(selected));
    other.tabIndex = selected ? 0 : -1;
    $(other.getAttribute("aria-controls")).hidden = !selected;
  }
  if (focus) tab.focus();
  const name = tab.id.replace("tab-", "");
  const panel = $(tab.getAttribute("aria-controls"));
  renderers[name](panel, ui);
}

for (const tab of tabs()) {
  tab.addEventListener("click", () => selectTab(tab, false));
  tab.addEventListener("keydown", (event) => {
    const all = tabs();
    const index = all.indexOf(tab);
    const next = {
      ArrowRight: all[(index + 1) % all.length],
      ArrowLeft: all[(index - 1 + all.length) % all.length],
      Home: all[0],
      End: all[all.length - 1],
    }[event.key];
    if (next) {
      event.preventDefault();
      selectTab(next, true);
    }
  });
}

// --- signing in and out -------------------------------------------------------------------

function showSignIn(message) {
  $("profile").hidden = true;
  $("sign-out").hidden = true;
  for (const panel of document.querySelectorAll('[role="tabpanel"]')) panel.replaceChildren();
  ui.credentialNames.forget();
  status.textContent = "";
  const notice = $("sign-in-message");
  notice.hidden = !message;
  notice.textContent = message || "";
  $("sign-in").hidden = false;
  $("sign-in-token").focus();
}

function showProfile() {
  $("sign-in").hidden = true;
  $("sign-in-message").hidden = true;
  $("profile").hidden = false;
  $("sign-out").hidden = false;
  ui.openTab("providers");
}

setUnauthorizedHandler(() => {
  if (!$("profile").hidden) {
    ui.clearErrors();
    showSignIn("Your session has ended or expired. Sign in again to go on.");
  }
});

$("sign-in-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const input = $("sign-in-token");
  const token = input.value.trim();
  // The token is used for this one request and forgotten: the session cookie replaces it.
  input.value = "";
  ui.clearErrors();
  if (!token) return;
  try {
    const session = await call("POST", `${API}/sessions`, { token, quietUnauthorized: true });
    ui.notify(`Signed in; the session lasts until ${new Date(session.expires_at).toLocaleString()}.`);
    showProfile();
  } catch (error) {
    ui.showError(error, "Sign-in failed");
    input.focus();
  }
});

$("sign-out").addEventListener("click", async () => {
  ui.clearErrors();
  try {
    await call("DELETE", `${API}/sessions/current`, { quietUnauthorized: true });
    showSignIn("You have signed out.");
  } catch (error) {
    if (error.status === 401) showSignIn("Your session had already ended.");
    else ui.showError(error, "Sign-out failed");
  }
});

// On load: a live session cookie (HttpOnly, so only a call can tell) goes straight in.
(async () => {
  try {
    await call("GET", `${API}/users/me/ai-providers`, { quietUnauthorized: true });
    showProfile();
  } catch (error) {
    if (error.status === 401) showSignIn("");
    else {
      showProfile();
      if (error.status !== 403) ui.showError(error);
    }
  }
})();

