// The credential editor: the user's one global credential map (not one per provider).
//
// The list comes from `GET /ai-credentials?masked=true`; a value is fetched in clear only when
// its row is revealed, shown in that row alone, and dropped when hidden or re-rendered. A masked
// value is never sent back: editing a row means typing a new value. Nothing is kept in browser
// storage, the URL or the console.
//
// Each row also shows the credential's host binding (`GET /users/me/ai-credential-hosts`) and
// edits it (`PUT /ai-credentials/{key}/hosts`), offering the hosts of the providers whose
// headers reference the key. The binding editor never fetches or shows a value.

import { ApiError, ME, del, get, put, seg } from "./api.js";
import { el, field, replaceChildren, uid } from "./dom.js";
import { hostAllowed, originOf } from "./hosts.js";
import { referencedKeys } from "./providers.js";

const BASE = `${ME}/ai-credentials`;
const HOSTS = `${ME}/ai-credential-hosts`;
const KEY_RE = /^[A-Za-z0-9_.-]{1,128}$/;

/**
 * The API's own wording for a bad key, checked before the key goes into a URL (where a `/` or
 * an empty key would be a 404, not the API's message). It mirrors
 * services/common/credential_rules.py `key_problem`; tests/ui/test_flows.py fails if the two
 * messages differ.
 */
function keyError(key) {
  const dotsOnly = /^\.+$/.test(key);
  if (KEY_RE.test(key) && !dotsOnly) return null;
  const shown = key.length > 64 ? `${key.slice(0, 64)}...` : key;
  if (dotsOnly) {
    // `.` and `..` cannot be addressed in a URL: clients resolve them as path segments.
    return new ApiError(
      400,
      "invalid_argument",
      `credential key '${shown}' is invalid: a key is not made only of dots`,
    );
  }
  return new ApiError(
    400,
    "invalid_argument",
    `credential key '${shown}' is invalid: use 1-128 characters of A-Z a-z 0-9 _ . -`,
  );
}

/** The user's credential names (never values) and host bindings, shared by the tabs. */
export class CredentialNames {
  constructor() {
    this.masked = null;
    this.bound = null;
  }

  /** key -> host patterns, for the bound keys only (a key not listed: any host). */
  async hosts(force = false) {
    if (force || this.bound === null) {
      const reply = await get(HOSTS);
      this.bound = reply.hosts || {};
    }
    return this.bound;
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
    this.bound = null;
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
    let masked;
    try {
      masked = await ui.credentialNames.load(true);
    } catch (error) {
      replaceChildren(list, el("p", { class: "empty", text: "Credentials could not be loaded." }));
      ui.showError(error, "Loading credentials");
      return;
    }
    let bound = null; // unknown: the rows say so rather than "Any host"
    try {
      bound = await ui.credentialNames.hosts(true);
    } catch (error) {
      ui.showError(error, "Loading host bindings");
    }
    drawList(masked, bound);
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

  function drawList(masked, bound) {
    const keys = Object.keys(masked).sort();
    if (keys.length === 0) {
      replaceChildren(list, el("p", { class: "empty", text: "No credentials yet." }));
      return;
    }
    const body = el("tbody");
    for (const key of keys) {
      body.append(row(key, masked[key], bound === null ? null : bound[key] || []));
    }
    replaceChildren(
      list,
      el(
        "table",
        { class: "grid" },
        el("caption", { text: `${keys.length} credential${keys.length === 1 ? "" : "s"}` }),
        el("thead", {}, el("tr", {}, ...["Key", "Value", "Hosts", "Actions"].map(
          (name) => el("th", { scope: "col", text: name })))),
        body,
      ),
    );
  }

  function row(key, maskedValue, hosts) {
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
    let editHosts = null;
    if (hosts !== null) {
      editHosts = el("button", { type: "button", text: "Edit hosts", "aria-expanded": "false",
        "aria-label": `Edit hosts for ${key}` });
      editHosts.addEventListener("click", () => {
        const open = tr.nextElementSibling?.classList.contains("hosts-editor-row");
        if (open) tr.nextElementSibling.remove();
        editHosts.setAttribute("aria-expanded", String(!open));
        if (!open) openHostsEditor(tr, key, hosts, editHosts);
      });
    }
    const tr = el(
      "tr",
      { "data-key": key },
      el("th", { scope: "row" }, el("code", { text: key })),
      valueCell,
      el("td", { class: "hosts" }, bindingView(hosts)),
      el("td", { class: "actions" }, reveal, edit, editHosts, remove),
    );
    return tr;
  }

  /** A row's binding: the hosts, "Any host" with a nudge, or unknown. */
  function bindingView(hosts) {
    if (hosts === null) return el("span", { class: "empty", text: "unknown" });
    if (hosts.length === 0) {
      return el("span", { class: "any-host" }, "Any host",
        el("span", { class: "nudge", text: " — bind to hosts" }));
    }
    return el("ul", { class: "host-list" },
      ...hosts.map((host) => el("li", {}, el("code", { text: host }))));
  }

  /**
   * The inline binding editor, in a row of its own under the credential's row: the patterns
   * as removable items, an input to add one, the hosts of the providers that reference the key,
   * Save (PUT, the API validates) and Cancel. Nothing is stored until Save.
   */
  async function openHostsEditor(tr, key, saved, toggle) {
    ui.clearErrors();
    const draft = [...saved];
    const chips = el("ul", { class: "chips", "aria-label": `Host patterns for ${key}` });
    const message = el("p", { class: "error", role: "status" });
    const suggestions = el("div", { class: "suggestions" });
    const reach = el("ul", { class: "warnings" });
    let providers = [];

    const close = () => {
      editorRow.remove();
      toggle.setAttribute("aria-expanded", "false");
      toggle.focus();
    };
    // The chips depend on the draft only; the suggestions also on the providers, which arrive
    // later: redrawing the chips then would replace a Remove button under the user's focus.
    const draw = () => {
      drawChips();
      drawSuggestions();
    };
    const drawChips = () => {
      replaceChildren(chips, ...(draft.length ? draft.map((host) => {
        const removeHost = el("button", { type: "button", class: "link", text: "×",
          "aria-label": `Remove ${host}` });
        removeHost.addEventListener("click", () => {
          draft.splice(draft.indexOf(host), 1);
          draw();
          input.focus();
        });
        return el("li", { class: "chip" }, el("code", { text: host }), removeHost);
      }) : [el("li", { class: "empty", text: "No patterns: any host." })]));
    };
    const drawSuggestions = () => {
      const offered = [];
      for (const provider of providers) {
        const origin = originOf(provider.base_url);
        if (!origin) continue;
        let entry = offered.find((item) => item.host === origin.text);
        if (!entry) offered.push(entry = { host: origin.text, names: [] });
        entry.names.push(provider.name);
      }
      const buttons = offered.filter((item) => !draft.includes(item.host)).map((item) =>
        el("button", { type: "button", class: "suggestion",
          "aria-label": `Add ${item.host} (used by ${item.names.join(", ")})`,
          onclick: () => { addPattern(item.host); } },
        `+ ${item.host}`, el("span", { class: "by", text: ` ${item.names.join(", ")}` })));
      replaceChildren(suggestions, buttons.length
        ? el("p", { class: "hint", text: "Hosts of your providers that use this key:" })
        : el("p", { class: "hint", text: providers.length
          ? "The hosts of the providers that use this key are all listed."
          : "No provider uses this key in a header ({{credential:" + key + "}})." }),
      ...buttons);
      // What the draft would mean for those providers (the router decides; see hosts.js).
      replaceChildren(reach, ...providers.filter((p) => !hostAllowed(draft, p.base_url)).map(
        (p) => el("li", { class: "warning", text: `Provider ${p.name} ` +
          `(${originOf(p.base_url)?.text || p.base_url}) would not get this credential` })));
    };
    const addPattern = (text) => {
      const pattern = text.trim();
      if (pattern && !draft.includes(pattern)) draft.push(pattern);
      draw();
      input.focus();
    };

    const input = el("input", { type: "text", autocomplete: "off", spellcheck: "false",
      maxlength: "253", placeholder: "api.openai.com, *.openai.azure.com, 127.0.0.1:8080" });
    const adding = field("Add a host pattern", input,
      "An exact host or *.suffix, with :port unless it is the scheme's default (443/80).");
    const addButton = el("button", { type: "button", text: "Add" });
    const line = el("div", { class: "add-line" });
    input.replaceWith(line);
    line.append(input, addButton);
    addButton.addEventListener("click", () => {
      addPattern(input.value);
      input.value = "";
    });
    input.addEventListener("keydown", (event) => {
      if (event.key === "Enter") {
        event.preventDefault();
        addButton.click();
      }
    });
    const save = el("button", { type: "button", text: "Save hosts" });
    const cancel = el("button", { type: "button", text: "Cancel", onclick: close });
    save.addEventListener("click", async () => {
      ui.clearErrors();
      message.textContent = "";
      const pending = input.value.trim(); // typed but not yet added: saved too
      const hosts = pending && !draft.includes(pending) ? [...draft, pending] : [...draft];
      try {
        const reply = await put(`${BASE}/${seg(key)}/hosts`, { hosts });
        ui.notify(reply.hosts.length ? `Bound ${key} to ${reply.hosts.join(", ")}.`
          : `${key} may be sent to any host.`);
        await refresh();
        list.querySelector(`tr[data-key="${CSS.escape(key)}"] button[aria-label^="Edit hosts"]`)
          ?.focus();
      } catch (error) {
        message.textContent = error instanceof ApiError ? error.message : String(error);
        ui.showError(error, `Hosts of ${key} not saved`);
        input.focus();
      }
    });
    const headingId = uid("hosts");
    const editor = el("div", { class: "hosts-editor", role: "group", "aria-labelledby": headingId },
      el("h4", { id: headingId, text: `Hosts for ${key}` }),
      el("p", { class: "hint", text: "The router substitutes this credential only into calls " +
        "to these hosts. No pattern: any host." }),
      chips,
      el("div", { class: "add-host" }, adding.wrap),
      suggestions,
      reach,
      message,
      el("div", { class: "buttons" }, save, cancel));
    editor.addEventListener("keydown", (event) => {
      if (event.key === "Escape") close();
    });
    const editorRow = el("tr", { class: "hosts-editor-row" },
      el("td", { colspan: "4" }, editor));
    tr.after(editorRow);
    draw();
    input.focus();
    try {
      const all = (await get(`${ME}/ai-providers`)).providers;
      providers = all.filter((provider) => referencedKeys(provider.headers).includes(key));
      drawSuggestions();
    } catch (error) {
      ui.showError(error, "Loading providers for suggestions");
    }
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
