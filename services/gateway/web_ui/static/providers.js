// The AI providers tab: list, create, edit, delete, test; placeholders and their warnings.
//
// Header values are shown as the API stores and masks them. A value the API shows as MASKED
// (a literal secret in a sensitive header) is never saved back: editing asks for it again.

import { ApiError, ME, del, get, post, put, seg } from "./api.js";
import { el, field, localTime, replaceChildren, uid } from "./dom.js";
import { hostAllowed, originOf } from "./hosts.js";

const BASE = `${ME}/ai-providers`;
const PLACEHOLDER_RE = /\{\{credential:([A-Za-z0-9_.-]{1,128})\}\}/g;
const OPEN_PLACEHOLDER_RE = /\{\{credential:([A-Za-z0-9_.-]*)$/;
const SENSITIVE_NAMES = new Set(["authorization", "proxy-authorization", "x-api-key", "api-key",
  "cookie"]);
const SENSITIVE_PARTS = ["key", "token", "secret", "auth", "password"];
export const OUTCOME_LABELS = {
  accepted: "Accepted",
  key_rejected: "Key rejected",
  unreachable: "Unreachable",
  refused_by_policy: "Refused by policy",
  upstream_error: "Upstream error",
  credential_missing: "Credential missing",
};

/** Warnings returned by the last save of each provider, shown until the next save. */
const saveWarnings = new Map();

export function isSensitiveHeader(name) {
  const lower = name.toLowerCase();
  return SENSITIVE_NAMES.has(lower) || SENSITIVE_PARTS.some((part) => lower.includes(part));
}

/** The credential keys a provider's headers reference, in order, each once. */
export function referencedKeys(headers) {
  const keys = [];
  for (const values of Object.values(headers || {})) {
    for (const value of values) {
      for (const match of value.matchAll(PLACEHOLDER_RE)) {
        if (!keys.includes(match[1])) keys.push(match[1]);
      }
    }
  }
  return keys;
}

function literalSecretHeaders(headers) {
  return Object.entries(headers || {})
    .filter(([name, values]) => isSensitiveHeader(name) && values.includes("MASKED"))
    .map(([name]) => name);
}

export async function renderProviders(panel, ui) {
  const formArea = el("div", { class: "provider-form-area" });
  const list = el("div", { class: "provider-list" });
  const addButton = el("button", { type: "button", text: "Add provider" });
  addButton.addEventListener("click", () => openForm(null));
  let names = [];
  let bound = {}; // key -> host patterns of the bound keys; null when unknown

  async function refresh() {
    let providers;
    try {
      providers = (await get(BASE)).providers;
    } catch (error) {
      replaceChildren(list, el("p", { class: "empty", text: "Providers could not be loaded." }));
      ui.showError(error, "Loading providers");
      return;
    }
    try {
      names = await ui.credentialNames.keys(true);
    } catch (error) {
      names = null; // unknown: no "not found" warnings rather than false ones
      ui.showError(error, "Loading credential names");
    }
    try {
      bound = await ui.credentialNames.hosts(true);
    } catch (error) {
      bound = null; // unknown: no "not allowed" warnings rather than false ones
      ui.showError(error, "Loading host bindings");
    }
    if (providers.length === 0) {
      replaceChildren(list, el("p", { class: "empty", text: "No providers yet. Add one to " +
        "call a model through this gateway." }));
      return;
    }
    replaceChildren(list, ...providers.map(card));
  }

  function card(provider) {
    const keys = referencedKeys(provider.headers);
    const warnings = [];
    if (names !== null) {
      for (const key of keys) if (!names.includes(key)) warnings.push(`Credential not found: ${key}`);
    }
    // A key bound to hosts the base_url's host is not among: the router will not substitute it
    // (the router decides per call; this is the same rule, see hosts.js).
    const refused = bound === null ? [] : keys.filter((key) =>
      (names === null || names.includes(key)) && !hostAllowed(bound[key] || [], provider.base_url));
    for (const key of refused) warnings.push(`Credential not allowed for host: ${key}`);
    const origin = originOf(provider.base_url);
    for (const header of literalSecretHeaders(provider.headers)) {
      warnings.push(`Header ${header} holds a literal secret (shown as MASKED); ` +
        "use {{credential:...}}");
    }
    const saved = saveWarnings.get(provider.name) || [];
    const headerRows = Object.entries(provider.headers).flatMap(([name, values]) =>
      values.map((value) => el("tr", {}, el("th", { scope: "row", text: name }),
        el("td", {}, el("code", { text: value })))));
    const testResult = el("div", { class: "test-result", "aria-live": "polite" });
    const headingId = uid("provider");
    const buttons = el(
      "div",
      { class: "buttons" },
      el("button", { type: "button", text: "Edit", "aria-label": `Edit ${provider.name}`,
        onclick: () => openForm(provider) }),
      el("button", { type: "button", text: "Manage credentials",
        "aria-label": `Manage credentials for ${provider.name}`,
        onclick: () => ui.openTab("credentials") }),
      el("button", { type: "button", text: "Test", "aria-label": `Test ${provider.name}`,
        onclick: () => runTest(provider.name, testResult) }),
      el("button", { type: "button", class: "danger", text: "Delete",
        "aria-label": `Delete ${provider.name}`, onclick: () => remove(provider.name) }),
    );
    return el(
      "article",
      { class: "card provider", "data-provider": provider.name, "aria-labelledby": headingId },
      el("h3", { id: headingId }, provider.name, " ", el("span", { class: "badge",
        text: provider.kind })),
      el("dl", { class: "facts" },
        el("dt", { text: "Base URL" }), el("dd", {}, el("code", { text: provider.base_url })),
        el("dt", { text: "Models" }),
        el("dd", { text: provider.models.length ? provider.models.join(", ") : "none" }),
        el("dt", { text: "Missing credential" }),
        el("dd", { text: provider.on_missing_credential === "error" ? "fail the call"
          : "warn and send the placeholder" }),
        el("dt", { text: "Placeholders" }),
        el("dd", {}, keys.length
          ? el("ul", { class: "keys" }, ...keys.map((key) => el("li", {}, el("code", { text: key }),
            names !== null && !names.includes(key) ? " (missing)" : "",
            bound && bound[key] ? ` (bound to ${bound[key].join(", ")}` +
              `${refused.includes(key) ? `; not ${origin ? origin.text : "this host"}` : ""})`
              : "")))
          : "none")),
      headerRows.length
        ? el("table", { class: "grid headers" },
          el("caption", { text: "Headers (as stored; secrets masked)" }),
          el("tbody", {}, ...headerRows))
        : el("p", { class: "empty", text: "No headers." }),
      warnings.length || saved.length
        ? el("ul", { class: "warnings", "aria-label": `Warnings for ${provider.name}` },
          ...[...warnings, ...saved.filter((w) => !warnings.includes(w))].map(
            (text) => el("li", { class: "warning", text })))
        : null,
      buttons,
      testResult,
    );
  }

  async function runTest(name, area) {
    ui.clearErrors();
    replaceChildren(area, el("p", { text: "Testing…" }));
    try {
      const result = await post(`${BASE}/${seg(name)}/test`, {});
      const label = OUTCOME_LABELS[result.outcome] || result.outcome;
      replaceChildren(
        area,
        el("p", {},
          el("span", { class: `badge outcome outcome-${result.outcome === "accepted" ? "ok" : "bad"}`,
            text: label }),
          result.status ? ` HTTP ${result.status}` : "",
          " — ", result.message || "",
          el("span", { class: "when", text: ` (checked at ${localTime(result.checked_at)})` })),
        (result.warnings || []).length
          ? el("ul", { class: "warnings" },
            ...result.warnings.map((text) => el("li", { class: "warning", text })))
          : null,
      );
    } catch (error) {
      replaceChildren(area, el("p", { class: "error",
        text: `Test could not run: ${error instanceof ApiError ? error.describe() : error}` }));
      ui.showError(error, `Testing ${name}`);
    }
  }

  async function remove(name) {
    ui.clearErrors();
    try {
      await del(`${BASE}/${seg(name)}`);
      saveWarnings.delete(name);
      ui.notify(`Deleted provider ${name}.`);
      replaceChildren(formArea);
      await refresh();
    } catch (error) {
      ui.showError(error, `Deleting ${name}`);
    }
  }

  function headerRow(rows, name = "", value = "") {
    const masked = value === "MASKED";
    const listId = uid("suggest");
    const datalist = el("datalist", { id: listId });
    const nameInput = el("input", { type: "text", autocomplete: "off", spellcheck: "false",
      "aria-label": "Header name", placeholder: "Authorization", value: name });
    const valueInput = el("input", { type: "text", autocomplete: "off", spellcheck: "false",
      list: listId, "aria-label": "Header value",
      placeholder: masked ? "hidden by the API: type it again, or use {{credential:KEY}}"
        : "Bearer {{credential:openai_api_key}}",
      value: masked ? "" : value });
    if (masked) valueInput.dataset.masked = "true";
    // Typing `{{credential:` offers the user's credential names (a native, keyboard-usable list).
    valueInput.addEventListener("input", () => {
      const open = valueInput.value.match(OPEN_PLACEHOLDER_RE);
      const options = [];
      if (open && names) {
        const before = valueInput.value.slice(0, open.index);
        for (const key of names) {
          if (key.startsWith(open[1])) options.push(`${before}{{credential:${key}}}`);
        }
      }
      replaceChildren(datalist, ...options.map((value) => el("option", { value })));
    });
    const removeButton = el("button", { type: "button", class: "link", text: "Remove",
      "aria-label": "Remove this header" });
    const row = el("div", { class: "header-row" }, nameInput, valueInput, datalist, removeButton);
    removeButton.addEventListener("click", () => row.remove());
    rows.append(row);
    return row;
  }

  function openForm(provider) {
    ui.clearErrors();
    const editing = provider !== null;
    const name = field("Name", el("input", { type: "text", required: true, autocomplete: "off",
      maxlength: "64", value: editing ? provider.name : "", disabled: editing }));
    const kind = field("Kind", el("select", {}, ...["openai", "anthropic", "custom"].map(
      (value) => el("option", { value, text: value,
        selected: editing ? provider.kind === value : value === "openai" }))));
    const baseUrl = field("Base URL", el("input", { type: "url", required: true,
      autocomplete: "off", placeholder: "https://api.openai.com/v1",
      value: editing ? provider.base_url : "" }));
    const models = field("Models", el("input", { type: "text", autocomplete: "off",
      placeholder: "gpt-4o, gpt-4o-mini", value: editing ? provider.models.join(", ") : "" }),
      "Comma-separated; a call picks this provider by model (or by name/model).");
    const onMissing = field("When a credential is missing", el("select", {},
      el("option", { value: "warn", text: "warn and send the placeholder",
        selected: !editing || provider.on_missing_credential !== "error" }),
      el("option", { value: "error", text: "fail the call",
        selected: editing && provider.on_missing_credential === "error" })));
    const rows = el("div", { class: "header-rows" });
    if (editing) {
      for (const [header, values] of Object.entries(provider.headers)) {
        for (const value of values) headerRow(rows, header, value);
      }
    }
    if (!rows.childElementCount) headerRow(rows);
    const knownKeys = names && names.length
      ? `Type {{credential: in a value to pick one of your credentials: ${names.join(", ")}.`
      : "Type {{credential:KEY}} in a value; add the KEY under Manage credentials.";
    const form = el(
      "form",
      { class: "card provider-form", novalidate: true,
        "aria-label": editing ? `Edit provider ${provider.name}` : "New provider" },
      el("h3", { text: editing ? `Edit ${provider.name}` : "New provider" }),
      name.wrap, kind.wrap, baseUrl.wrap, models.wrap, onMissing.wrap,
      el("fieldset", {},
        el("legend", { text: "Headers" }),
        el("p", { class: "hint", text: knownKeys }),
        rows,
        el("button", { type: "button", class: "link", text: "Add header",
          onclick: () => headerRow(rows).querySelector("input").focus() })),
      el("div", { class: "buttons" },
        el("button", { type: "submit", text: editing ? "Save provider" : "Create provider" }),
        el("button", { type: "button", text: "Cancel", onclick: () => replaceChildren(formArea) })),
    );
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      ui.clearErrors();
      const headers = {};
      for (const row of rows.querySelectorAll(".header-row")) {
        const [nameInput, valueInput] = row.querySelectorAll("input");
        const header = nameInput.value.trim();
        if (!header && !valueInput.value) continue;
        if (valueInput.dataset.masked === "true" && !valueInput.value) {
          ui.showError(new ApiError(400, "invalid_argument", `header ${header}: the stored ` +
            "value is hidden (MASKED); type it again or remove the header"), "Not saved");
          valueInput.focus();
          return;
        }
        (headers[header] ||= []).push(valueInput.value);
      }
      const body = {
        name: editing ? provider.name : name.input.value.trim(),
        kind: kind.input.value,
        base_url: baseUrl.input.value.trim(),
        headers,
        models: models.input.value.split(/[,\n]/).map((m) => m.trim()).filter(Boolean),
        on_missing_credential: onMissing.input.value,
      };
      try {
        const reply = editing
          ? await put(`${BASE}/${seg(provider.name)}`, body)
          : await post(BASE, body);
        saveWarnings.set(reply.provider.name, reply.warnings || []);
        ui.notify(`Saved provider ${reply.provider.name}` +
          ((reply.warnings || []).length ? " with warnings." : "."));
        replaceChildren(formArea);
        await refresh();
      } catch (error) {
        ui.showError(error, "Not saved");
      }
    });
    replaceChildren(formArea, form);
    (editing ? baseUrl.input : name.input).focus();
  }

  replaceChildren(
    panel,
    el("div", { class: "panel-head" }, el("h2", { text: "AI providers" }), addButton),
    formArea,
    list,
  );
  await refresh();
}
