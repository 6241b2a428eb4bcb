// The usage tab: the user's own token usage per day, provider and model (UTC days), and the
// totals of the range. Counts only: what the router read from the upstreams' answers.

import { ME, get } from "./api.js";
import { el, field, replaceChildren } from "./dom.js";

const COUNTS = ["input_tokens", "output_tokens", "calls"];
const number = new Intl.NumberFormat();

/** A day `days` before today (UTC), YYYY-MM-DD. */
function utcDay(daysBack) {
  return new Date(Date.now() - daysBack * 86400000).toISOString().slice(0, 10);
}

export async function renderUsage(panel, ui) {
  const from = field("From", el("input", { type: "date", name: "from", value: utcDay(29) }));
  const to = field("To", el("input", { type: "date", name: "to", value: utcDay(0) }));
  const show = el("button", { type: "submit", text: "Show" });
  const form = el("form", { class: "usage-range" }, from.wrap, to.wrap, show);
  const body = el("div", { class: "usage" });
  replaceChildren(panel, el("div", { class: "panel-head" }, el("h2", { text: "Token usage" })),
    form, body);

  async function refresh() {
    replaceChildren(body, el("p", { text: "Loading…" }));
    const query = new URLSearchParams();
    if (from.input.value) query.set("from", from.input.value);
    if (to.input.value) query.set("to", to.input.value);
    try {
      const usage = await get(`${ME}/usage?${query}`);
      draw(usage);
    } catch (error) {
      replaceChildren(body, el("p", { class: "empty", text: "Usage could not be loaded." }));
      ui.showError(error, "Loading usage");
    }
  }

  function draw(usage) {
    const range = `${usage.from} to ${usage.to} (UTC)`;
    if (!usage.rows.length) {
      replaceChildren(body, el("p", { class: "empty", text: `No usage from ${range}.` }));
      return;
    }
    const head = ["Day", "Provider", "Model", "Input tokens", "Output tokens", "Calls"];
    const counts = (row) => COUNTS.map((name) =>
      el("td", { class: "count", text: number.format(row[name]) }));
    replaceChildren(body, el("table", { class: "grid usage-table" },
      el("caption", { text: `Tokens per day, provider and model, ${range}` }),
      el("thead", {}, el("tr", {}, ...head.map((text) => el("th", { scope: "col", text })))),
      el("tbody", {}, ...usage.rows.map((row) => el("tr", {},
        el("td", { text: row.day }),
        el("td", { text: row.provider }),
        el("td", {}, el("code", { text: row.model })),
        ...counts(row)))),
      el("tfoot", {}, el("tr", { class: "totals" },
        el("th", { scope: "row", colspan: 3, text: "Total" }),
        ...counts(usage.totals)))));
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    ui.clearErrors();
    refresh();
  });
  await refresh();
}
