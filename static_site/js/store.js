/* The page's state: what the service told it (GET /api/info) and the photos and groups it lists,
 * and the memory of those photos in localStorage, kept until they expire on the server so that a
 * reload (or coming back tomorrow) shows them again. */

import { serverNow } from "./api.js";

const JOBS_KEY = "face-restore.jobs.v1";
// The stored list is read back from a place any script on the origin can write: only ids that
// can be put in a URL path as they are.
const SAFE_ID = /^[A-Za-z0-9_-]{1,64}$/;

// items: what the list shows at the top level (job cards and batch groups), newest first.
export const state = { info: null, items: [] };

export const store = {
  load() {
    try {
      const list = JSON.parse(localStorage.getItem(JOBS_KEY) || "[]");
      const now = serverNow();
      return Array.isArray(list)
        ? list.filter((r) => r && (SAFE_ID.test(r.id || "") || SAFE_ID.test(r.batch || "")) &&
            (!r.expires_at || Date.parse(r.expires_at) > now))
        : [];
    } catch (_) {
      return [];
    }
  },
  save() {
    const records = state.items.filter((item) => item.id).map((item) => item.memo());
    try { localStorage.setItem(JOBS_KEY, JSON.stringify(records)); } catch (_) { /* private mode, quota */ }
  },
};
