/* The list of photos and groups on the page (#jobs): adding to it, the "nothing yet" note, and
 * "Download all". The items themselves are job cards and batch groups, kept in state.items. */

import { $, reveal } from "./dom.js";
import { state } from "./store.js";

/** Every photo's card, including those inside groups. */
export const allCards = () => state.items.flatMap((item) => (item.kind === "batch" ? item.cards : [item]));

export function addItems(items) {
  // What was added together keeps its order, above older photos.
  const list = $("#jobs");
  const first = list.firstChild;
  for (const item of items) list.insertBefore(item.el, first);
  state.items.unshift(...items);
  updateEmpty();
  // Show what was just added (on a phone the list starts below the options).
  if (items.length) reveal(items[0].el);
}

export function updateEmpty() {
  $("#jobs-empty").hidden = state.items.length > 0;
}

export function updateDownloadAll() {
  const done = allCards().filter((c) => c.status === "succeeded");
  const button = $("#download-all");
  const onlyOneBatch = state.items.length === 1 && state.items[0].kind === "batch";
  button.hidden = done.length < 2 || onlyOneBatch; // a lone batch has its own zip button
  button.textContent = `Download all (${done.length})`;
}

export async function downloadAll() {
  // A batch as its zip, single photos one by one, a moment apart (browsers may ask once to
  // allow several downloads from this page).
  const links = [];
  for (const item of state.items) {
    if (item.kind === "batch" && !item.q(".zip").hidden) links.push(item.q(".zip"));
    else if (item.kind === "batch") links.push(...item.cards.filter((c) => c.status === "succeeded").map((c) => c.q(".download")));
    else if (item.status === "succeeded") links.push(item.q(".download"));
  }
  for (const link of links) {
    link.click();
    await new Promise((resolve) => setTimeout(resolve, 400));
  }
}
