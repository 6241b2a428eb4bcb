// The activity tab: the user's own recent audit events (key names, never values).

import { ME, get } from "./api.js";
import { el, localTime, replaceChildren } from "./dom.js";

export async function renderActivity(panel, ui) {
  const body = el("div", { class: "activity" });
  const reload = el("button", { type: "button", text: "Refresh" });
  replaceChildren(panel, el("div", { class: "panel-head" },
    el("h2", { text: "Recent activity" }), reload), body);

  async function refresh() {
    replaceChildren(body, el("p", { text: "Loading…" }));
    try {
      const { events } = await get(`${ME}/activity?limit=50`);
      if (!events.length) {
        replaceChildren(body, el("p", { class: "empty", text: "No activity yet." }));
        return;
      }
      const head = ["Time", "Action", "Keys", "Outcome", "Caller"];
      replaceChildren(body, el("table", { class: "grid" },
        el("caption", { text: `The last ${events.length} events` }),
        el("thead", {}, el("tr", {}, ...head.map((text) => el("th", { scope: "col", text })))),
        el("tbody", {}, ...events.map((event) => el("tr", {},
          el("td", { text: localTime(event.time) }),
          el("td", {}, el("code", { text: event.action })),
          el("td", { text: (event.keys || []).join(", ") }),
          el("td", { text: event.outcome }),
          el("td", { text: event.caller || "" }))))));
    } catch (error) {
      replaceChildren(body, el("p", { class: "empty", text: "Activity could not be loaded." }));
      ui.showError(error, "Loading activity");
    }
  }
  reload.addEventListener("click", () => {
    ui.clearErrors();
    refresh();
  });
  await refresh();
}
