/* Upload queue for single photos: a couple at a time, in the order they were added, so that a
 * dozen photos dropped at once do not all compete for the connection. A queued card is asked to
 * runUpload() when its turn comes. */

const MAX_PARALLEL_UPLOADS = 2;

const waiting = [];
let active = 0;

export const uploadQueue = {
  enqueue(card) {
    if (!waiting.includes(card)) waiting.push(card);
    pump();
  },
  drop(card) {
    const index = waiting.indexOf(card);
    if (index >= 0) waiting.splice(index, 1);
  },
};

function pump() {
  while (active < MAX_PARALLEL_UPLOADS && waiting.length) {
    const card = waiting.shift();
    if (card.removed) continue;
    active += 1;
    card.runUpload().finally(() => { active -= 1; pump(); });
  }
}
