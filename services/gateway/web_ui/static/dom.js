// Building the DOM without markup parsing: every text goes through textContent, so a value
// from the API can never become HTML. Nothing here (or anywhere in the UI) uses innerHTML.

/**
 * Create an element.
 * @param {string} tag
 * @param {Object<string, *>} [props] attributes; `text` sets textContent, `on<event>` a listener,
 *   `class` the class list, a boolean true/false sets or omits a boolean attribute.
 * @param {...(Node|string|null|undefined|false)} children
 */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "text") node.textContent = String(value);
    else if (name.startsWith("on") && typeof value === "function") {
      node.addEventListener(name.slice(2), value);
    } else if (value === true) node.setAttribute(name, "");
    else node.setAttribute(name, String(value));
  }
  append(node, ...children);
  return node;
}

export function append(node, ...children) {
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    node.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return node;
}

/** Remove every child of `node` and append `children`. */
export function replaceChildren(node, ...children) {
  node.replaceChildren();
  return append(node, ...children);
}

let counter = 0;
/** A document-unique id for label/for and aria pairs. */
export function uid(prefix) {
  counter += 1;
  return `${prefix}-${counter}`;
}

/** A labelled form field: returns {wrap, input}. */
export function field(labelText, input, hint) {
  if (!input.id) input.id = uid("f");
  const children = [el("label", { for: input.id, text: labelText }), input];
  if (hint) {
    const hintNode = el("span", { class: "hint", id: uid("h"), text: hint });
    input.setAttribute("aria-describedby", hintNode.id);
    children.push(hintNode);
  }
  return { wrap: el("div", { class: "field" }, ...children), input };
}

/** A local, readable time for an RFC 3339 timestamp ("" for none). */
export function localTime(iso) {
  if (!iso) return "";
  const when = new Date(iso);
  return Number.isNaN(when.getTime()) ? String(iso) : when.toLocaleString();
}
