// The API tokens tab: list, create (name, scopes, expiry), show a new token once, revoke.

import { ME, del, get, post, seg } from "./api.js";
import { el, field, localTime, replaceChildren } from "./dom.js";

const BASE = `${ME}/api-tokens`;
export const SCOPES = ["credentials:read", "credentials:write", "providers:read",
  "providers:write", "llm:invoke", "tokens:manage"];
const EXPIRY = [["never", 0], ["1 day", 86400], ["7 days", 7 * 86400],
  ["30 days", 30 * 86400], ["90 days", 90 * 86400], ["1 year", 365 * 86400]];

export async function renderTokens(panel, ui) {
  const list = el("div", { class: "token-list" });
  const created = el("div", { class: "created-token", "aria-live": "polite" });

  async function refresh() {
    try {
      const { tokens } = await get(BASE);
      draw(tokens);
    } catch (error) {
      replaceChildren(list, el("p", { class: "empty", text: "Tokens could not be loaded." }));
      ui.showError(error, "Loading tokens");
    }
  }

  function draw(tokens) {
    if (!tokens.length) {
      replaceChildren(list, el("p", { class: "empty", text: "No tokens." }));
      return;
    }
    const head = ["Name", "Prefix", "Scopes", "Created", "Last used", "Expires", ""];
    replaceChildren(list, el("table", { class: "grid" },
      el("caption", { text: "Your API tokens" }),
      el("thead", {}, el("tr", {}, ...head.map((text) => el("th", { scope: "col", text })))),
      el("tbody", {}, ...tokens.map((token) => el("tr", { "data-token-id": token.id },
        el("th", { scope: "row", text: token.name }),
        el("td", {}, el("code", { text: `${token.prefix}…` })),
        el("td", { class: "scopes", text: token.scopes.join(" ") }),
        el("td", { text: localTime(token.created_at) }),
        el("td", { text: localTime(token.last_used_at) || "never" }),
        el("td", { text: localTime(token.expires_at) || "never" }),
        el("td", {}, token.revoked_at
          ? el("span", { class: "badge", text: "revoked" })
          : el("button", { type: "button", class: "danger", text: "Revoke",
            "aria-label": `Revoke ${token.name}`, onclick: () => revoke(token) })))))));
  }

  async function revoke(token) {
    ui.clearErrors();
    try {
      await del(`${BASE}/${seg(token.id)}`);
      ui.notify(`Revoked token ${token.name}.`);
      await refresh();
    } catch (error) {
      ui.showError(error, `Revoking ${token.name}`);
    }
  }

  const name = field("Name", el("input", { type: "text", required: true, maxlength: "128",
    autocomplete: "off", placeholder: "laptop" }));
  const boxes = SCOPES.map((scope) => el("input", { type: "checkbox", value: scope,
    checked: true, id: `scope-${scope.replace(":", "-")}` }));
  const expiry = field("Expires", el("select", {}, ...EXPIRY.map(([text, seconds]) =>
    el("option", { value: String(seconds), text }))));
  const form = el(
    "form",
    { class: "card", "aria-label": "Create a token", novalidate: true },
    name.wrap,
    el("fieldset", { class: "scopes" }, el("legend", { text: "Scopes" }),
      ...boxes.map((box) => el("label", { for: box.id, class: "check" }, box, ` ${box.value}`))),
    expiry.wrap,
    el("button", { type: "submit", text: "Create token" }),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    ui.clearErrors();
    const body = { name: name.input.value, scopes: boxes.filter((b) => b.checked).map((b) => b.value) };
    const seconds = Number(expiry.input.value);
    if (seconds > 0) body.expires_in = seconds;
    try {
      const reply = await post(BASE, body);
      name.input.value = "";
      showOnce(reply);
      await refresh();
    } catch (error) {
      ui.showError(error, "Token not created");
    }
  });

  // The new token is on screen until dismissed; it is in no list and never shown again.
  function showOnce(reply) {
    const value = el("input", { type: "text", readonly: true, class: "secret",
      "aria-label": `New token ${reply.name}`, value: reply.token, spellcheck: "false" });
    const copy = el("button", { type: "button", text: "Copy" });
    const done = el("button", { type: "button", text: "Done, I have stored it" });
    copy.addEventListener("click", async () => {
      try {
        await navigator.clipboard.writeText(value.value);
        ui.notify("Token copied to the clipboard.");
      } catch {
        value.select();
        ui.notify("Copying was refused by the browser: the token is selected, copy it by hand.");
      }
    });
    done.addEventListener("click", () => replaceChildren(created));
    replaceChildren(created, el("div", { class: "card notice" },
      el("p", {}, el("strong", { text: `Token ${reply.name} created. ` }),
        "Copy it now: it is shown only this once."),
      value, el("div", { class: "buttons" }, copy, done)));
    value.focus();
    value.select();
  }

  replaceChildren(panel, el("h2", { text: "API tokens" }), created, list,
    el("h3", { text: "Create a token" }), form);
  await refresh();
}
