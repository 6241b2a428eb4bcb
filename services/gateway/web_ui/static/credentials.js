// The credential editor: the user's one global credential map (not one per provider).
//
// The list comes from `GET /ai-credentials?masked=true`; a value is fetched in clear only when
// its row is revealed, shown in that row alone, and dropped when hidden or re-rendered. A masked
// value is never sent back: editing a row means typing a new value. Nothing is kept in browser
// storage, the URL or the console.

import { ApiError, ME, del, get, put, seg } from "./api.js";
import { el, field, replaceChildren } from "./dom.js";

const BASE = `${ME}/ai-credentials`;
const KEY_RE = /^[A-Za-z0-9_.-]{1,128}$/;

/**
 * The API's own wording for a bad key, checked before the key goes into a URL (where a `/` or
 * an empty key would be a 404, not the API's message). It mirrors
 * services/common/credential_rules.py `key_problem`; tests/ui/test_flows.py fails if the two
 * messages differ.
 */
function keyError(key) {
  if (KEY_RE.test(key)) return null;
  const shown = key.length > 64 ? `${key.slice(0, 64)}...` : key;
  return new ApiError(
    400,
    "invalid_argument",
    `credential key '${shown}' is invalid: use 1-128 characters of A-Z a-z 0-9 _ . -`,
  );
}

/** The user's credential names (never values), shared by the tabs. */
export class CredentialNames {
  constructor() {
    this.masked = null;
  }

  /** The masked map, fetched once until something changes it. */
  async load(force = false) {
    if (force || this.masked === null) {
      const reply = await get(`${BASE}?masked=true`);
      this.masked = reply.credentials;
    }
    return this.masked;
  }

  async keys(force = false) {
    return Object.keys(await this.load(force)).sort();
  }

  forget() {
    this.masked = null;
  }
}

/**
 * Parse pasted text: a JSON object (or {"credentials": {...}}), or KEY=value lines (blank
 * lines and lines starting with # are skipped). Throws Error naming the line or key.
 */
export function parseCredentialText(text) {
  const trimmed = text.trim();
  if (!trimmed) throw new Error("nothing to apply: paste a JSON object or KEY=value lines");
  if (trimmed.startsWith("{")) {
    let data;
    try {
      data = JSON.parse(trimmed);
    } catch {
      throw new Error("the text starts with { but is not valid JSON");
    }
    const keys = Object.keys(data);
    if (keys.length === 1 && keys[0] === "credentials" && typeof data.credentials === "object") {
      data = data.credentials;
    }
    if (data === null || Array.isArray(data)) throw new Error("the JSON must be an object");
    for (const [key, value] of Object.entries(data)) {
      if (typeof value !== "string") throw new Error(`the value of '${key}' must be a string`);
    }
    return { ...data };
  }
  const map = {};
  trimmed.split(/\n/).forEach((raw, index) => {
    const line = raw.replace(/\r$/, "");
    if (!line.trim() || line.trimStart().startsWith("#")) return;
    const at = line.indexOf("=");
    if (at < 1) throw new Error(`line ${index + 1}: expected KEY=value`);
    const key = line.slice(0, at).trim();
    if (Object.hasOwn(map, key)) throw new Error(`line ${index + 1}: '${key}' appears twice`);
    map[key] = line.slice(at + 1);
  });
  return map;
}

/** What replacing `current` (key -> masked) by `next` (key -> value) does, by key. */
export function previewReplace(current, next) {
  const added = Object.keys(next).filter((key) => !Object.hasOwn(current, key));
  const changed = Object.keys(next).filter((key) => Object.hasOwn(current, key));
  const removed = Object.keys(current).filter((key) => !Object.hasOwn(next, key));
  return { added: added.sort(), changed: changed.sort(), removed: removed.sort() };
}

export async function renderCredentials(panel, ui) {
  const list = el("div", { class: "cred-list" });
  const addKey = field(
    "Key",
    el("input", { type: "text", name: "key", autocomplete: "off", spellcheck: "false",
      maxlength: "128", required: true }),
    "1-128 characters of A-Z a-z 0-9 _ . - (case-sensitive)",
  );
  const addValue = field(
    "Value",
    el("input", { type: "password", name: "value", autocomplete: "new-password",
      spellcheck: "false", required: true }),
    "Printable ASCII, spaces and tabs; at most 16 KiB",
  );
  const addForm = el(
    "form",
    { class: "inline-form", "aria-label": "Add or update a credential", novalidate: true },
    addKey.wrap,
    addValue.wrap,
    el("button", { type: "submit", text: "Save credential" }),
  );

  async function refresh() {
    try {
      const masked = await ui.credentialNames.load(true);
      drawList(masked);
    } catch (error) {
      replaceChildren(list, el("p", { class: "empty", text: "Credentials could not be loaded." }));
      ui.showError(error, "Loading credentials");
    }
  }

  addForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    ui.clearErrors();
    const key = addKey.input.value.trim();
    const problem = keyError(key);
    if (problem) {
      ui.showError(problem, "Not saved");
      addKey.input.focus();
      return;
    }
    try {
      await put(`${BASE}/${seg(key)}`, { value: addValue.input.value });
      addKey.input.value = "";
      addValue.input.value = "";
      ui.notify(`Saved credential ${key}.`);
      await refresh();
    } catch (error) {
      ui.showError(error, "Not saved");
    }
  });

  function drawList(masked) {
    const keys = Object.keys(masked).sort();
    if (keys.length === 0) {
      replaceChildren(list, el("p", { class: "empty", text: "No credentials yet." }));
      return;
    }
    const body = el("tbody");
    for (const key of keys) body.append(row(key, masked[key]));
    replaceChildren(
      list,
      el(
        "table",
        { class: "grid" },
        el("caption", { text: `${keys.length} credential${keys.length === 1 ? "" : "s"}` }),
        el("thead", {}, el("tr", {}, ...["Key", "Value", "Actions"].map(
          (name) => el("th", { scope: "col", text: name })))),
        body,
      ),
    );
  }

  function row(key, maskedValue) {
    const valueCell = el("td", { class: "value" });
    const showMasked = () =>
      replaceChildren(valueCell, el("span", { class: "masked", text: maskedValue }));
    showMasked();
    const reveal = el("button", { type: "button", "aria-pressed": "false", text: "Reveal",
      "aria-label": `Reveal ${key}` });
    reveal.addEventListener("click", async () => {
      if (reveal.getAttribute("aria-pressed") === "true") {
        showMasked();
        reveal.setAttribute("aria-pressed", "false");
        reveal.textContent = "Reveal";
        return;
      }
      try {
        const reply = await get(`${BASE}/${seg(key)}`);
        replaceChildren(valueCell, el("code", { class: "revealed", text: reply.value }));
        reveal.setAttribute("aria-pressed", "true");
        reveal.textContent = "Hide";
      } catch (error) {
        ui.showError(error, `Revealing ${key}`);
      }
    });
    const edit = el("button", { type: "button", text: "Edit", "aria-label": `Edit ${key}` });
    edit.addEventListener("click", () => {
      reveal.setAttribute("aria-pressed", "false");
      reveal.textContent = "Reveal";
      const input = el("input", { type: "password", autocomplete: "new-password",
        spellcheck: "false", "aria-label": `New value for ${key}`,
        placeholder: "type a new value" });
      const save = el("button", { type: "submit", text: "Save" });
      const cancel = el("button", { type: "button", text: "Cancel", onclick: showMasked });
      const form = el("form", { class: "row-form", novalidate: true }, input, save, cancel);
      form.addEventListener("submit", async (event) => {
        event.preventDefault();
        ui.clearErrors();
        try {
          await put(`${BASE}/${seg(key)}`, { value: input.value });
          ui.notify(`Saved credential ${key}.`);
          await refresh();
        } catch (error) {
          ui.showError(error, "Not saved");
        }
      });
      replaceChildren(valueCell, form);
      input.focus();
    });
    const remove = el("button", { type: "button", class: "danger", text: "Delete",
      "aria-label": `Delete ${key}` });
    remove.addEventListener("click", async () => {
      ui.clearErrors();
      try {
        await del(`${BASE}/${seg(key)}`);
        ui.notify(`Deleted credential ${key}.`);
        await refresh();
      } catch (error) {
        ui.showError(error, `Deleting ${key}`);
      }
    });
    return el(
      "tr",
      { "data-key": key },
      el("th", { scope: "row" }, el("code", { text: key })),
      valueCell,
      el("td", { class: "actions" }, reveal, edit, remove),
    );
  }

  // --- replace the whole map, with a preview ------------------------------------------------
  const pasted = field(
    "New credential map",
    el("textarea", { rows: "6", spellcheck: "false", autocomplete: "off",
      placeholder: 'KEY=value lines, or a JSON object {"KEY": "value"}' }),
    "Keys not listed here are deleted. Nothing changes until you apply.",
  );
  const preview = el("div", { class: "preview", "aria-live": "polite" });
  let pending = null;
  const apply = el("button", { type: "button", class: "danger", text: "Apply: replace the map",
    hidden: true });
  const previewButton = el("button", { type: "button", text: "Preview changes" });
  previewButton.addEventListener("click", async () => {
    ui.clearErrors();
    apply.hidden = true;
    pending = null;
    try {
      const next = parseCredentialText(pasted.input.value);
      const current = await ui.credentialNames.load(true);
      const diff = previewReplace(current, next);
      const group = (title, keys, cls) =>
        el("div", { class: `diff ${cls}` },
          el("h4", { text: `${title} (${keys.length})` }),
          keys.length
            ? el("ul", {}, ...keys.map((key) => el("li", {}, el("code", { text: key }))))
            : el("p", { class: "empty", text: "none" }));
      replaceChildren(
        preview,
        group("Added", diff.added, "added"),
        group("Changed (new value written)", diff.changed, "changed"),
        group("Removed", diff.removed, "removed"),
      );
      pending = next;
      apply.hidden = false;
    } catch (error) {
      replaceChildren(preview);
      ui.showError(error, "Preview");
    }
  });
  apply.addEventListener("click", async () => {
    if (!pending) return;
    ui.clearErrors();
    try {
      await put(BASE, { credentials: pending });
      pending = null;
      apply.hidden = true;
      pasted.input.value = "";
      replaceChildren(preview);
      ui.notify("Replaced the credential map.");
      await refresh();
    } catch (error) {
      ui.showError(error, "Not replaced");
    }
  });

  // --- delete everything, after a confirmation ---------------------------------------------
  const confirmBox = el("div", { class: "confirm", hidden: true, role: "group",
    "aria-label": "Confirm deleting all credentials" });
  const deleteAll = el("button", { type: "button", class: "danger", text: "Delete all…" });
  deleteAll.addEventListener("click", async () => {
    const count = Object.keys(ui.credentialNames.masked || {}).length;
    const yes = el("button", { type: "button", class: "danger",
      text: "Yes, delete every credential" });
    const no = el("button", { type: "button", text: "Cancel" });
    no.addEventListener("click", () => {
      confirmBox.hidden = true;
      deleteAll.focus();
    });
    yes.addEventListener("click", async () => {
      ui.clearErrors();
      try {
        await del(BASE);
        confirmBox.hidden = true;
        ui.notify("Deleted every credential.");
        await refresh();
      } catch (error) {
        ui.showError(error, "Not deleted");
      }
    });
    replaceChildren(
      confirmBox,
      el("p", { text: `Delete all ${count} credentials? Providers that use them will report ` +
        "'Credential not found'. This cannot be undone." }),
      yes,
      no,
    );
    confirmBox.hidden = false;
    no.focus();
  });

  replaceChildren(
    panel,
    el("h2", { text: "Credentials" }),
    el("p", { class: "hint", text: "One map for all your providers: a provider's header uses a " +
      "value as {{credential:KEY}}. Values stay masked until you reveal a row." }),
    list,
    el("h3", { text: "Add or update a credential" }),
    addForm,
    el("h3", { text: "Replace the whole map" }),
    pasted.wrap,
    el("div", { class: "buttons" }, previewButton, apply),
    preview,
    el("h3", { text: "Delete everything" }),
    deleteAll,
    confirmBox,
  );
  await refresh();
}
