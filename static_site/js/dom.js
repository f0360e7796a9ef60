/* Building and announcing: the small DOM helpers every component uses. No inline styles or
 * scripts anywhere, so the strict Content-Security-Policy the API sends holds; styles change only
 * through the CSSOM (element.style), which CSP allows. */

export const $ = (selector, root = document) => root.querySelector(selector);

/** Create an element: h("button", {class: "btn", type: "button", onclick: fn}, "text", child...). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else if (key === "text") el.textContent = value;
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

let uid = 0;
/** A page-unique id for aria-labelledby and friends. */
export const nextId = (prefix) => `${prefix}-${++uid}`;

export function announce(message) {
  const el = $("#announcer");
  el.textContent = "";
  // A fresh text node after a tick makes screen readers speak repeated messages too.
  setTimeout(() => { el.textContent = message; }, 50);
}

/** Scroll an element into view, smoothly unless the person asked for less motion. */
export function reveal(el) {
  const reduce = matchMedia("(prefers-reduced-motion: reduce)").matches;
  el.scrollIntoView({ behavior: reduce ? "auto" : "smooth", block: "nearest" });
}
