/* The API client: every request the page makes to processing/api.py goes through here, so the
 * base URL, the server's clock, Retry-After and error bodies are read in one place.
 *
 * The API lives at window.FACE_API_BASE, set by config.js ("" = this page's origin); a deployment
 * that hosts the page elsewhere overwrites config.js. It is read once: config.js is a classic
 * script in <head>, so it has run before any module. */

const API = String(window.FACE_API_BASE || "").replace(/\/+$/, "");

/** Job statuses the server never leaves. */
export const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);

export const apiUrl = (path) => (/^https?:\/\//.test(path) ? path : API + path);

/** Seconds from a Retry-After header (delta-seconds or an HTTP date), or null. */
function retryAfterSeconds(value) {
  if (!value) return null;
  const n = Number(value);
  if (Number.isFinite(n)) return Math.max(0, n);
  const when = Date.parse(value);
  return Number.isFinite(when) ? Math.max(0, (when - Date.now()) / 1000) : null;
}

// Server clock minus ours, from the Date header when it is readable (same origin): expiry times
// and elapsed times come from the server and must not depend on this device's clock being right.
let clockSkew = 0;
function noteServerDate(dateHeader) {
  const when = Date.parse(dateHeader || "");
  if (Number.isFinite(when)) clockSkew = when - Date.now();
}
export const serverNow = () => Date.now() + clockSkew;
/** A server timestamp (ms) as the same moment on this device's clock. */
export const localTime = (serverMs) => serverMs - clockSkew;

export class ApiError extends Error {
  constructor(status, code, message, { retryAfter = null, fields = null } = {}) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
    this.fields = fields;
  }
}

function errorFromResponse(status, body, retryAfter) {
  const err = (body && body.error) || {};
  const code = err.code || (status === 429 ? "rate_limited" : status >= 500 ? "server_error" : "http_error");
  return new ApiError(status, code, err.message || `the service answered ${status}`, { retryAfter, fields: err.fields });
}

export async function apiFetch(path, init = {}) {
  let response;
  try {
    response = await fetch(apiUrl(path), { cache: "no-store", ...init });
  } catch (networkError) {
    throw new ApiError(0, "network", "the service could not be reached");
  }
  noteServerDate(response.headers.get("Date"));
  const retryAfter = retryAfterSeconds(response.headers.get("Retry-After"));
  if (response.status === 204) return { status: 204, body: null, retryAfter };
  let body = null;
  if ((response.headers.get("Content-Type") || "").includes("json")) {
    try { body = await response.json(); } catch (_) { body = null; }
  }
  if (!response.ok) throw errorFromResponse(response.status, body, retryAfter);
  return { status: response.status, body, retryAfter };
}

/** POST a multipart form with upload progress (fetch cannot report it). Resolves to {body, retryAfter}. */
export function postForm(path, form, onProgress = () => {}) {
  const xhr = new XMLHttpRequest();
  const promise = new Promise((resolve, reject) => {
    xhr.open("POST", apiUrl(path));
    xhr.responseType = "text";
    xhr.timeout = 10 * 60 * 1000;
    xhr.upload.addEventListener("progress", (event) => {
      if (event.lengthComputable) onProgress(event.loaded / event.total);
    });
    xhr.addEventListener("load", () => {
      noteServerDate(xhr.getResponseHeader("Date"));
      let body = null;
      try { body = JSON.parse(xhr.responseText); } catch (_) { body = null; }
      const retryAfter = retryAfterSeconds(xhr.getResponseHeader("Retry-After"));
      if (xhr.status >= 200 && xhr.status < 300 && body) resolve({ body, retryAfter });
      else reject(errorFromResponse(xhr.status, body, retryAfter));
    });
    const failed = () => reject(new ApiError(0, "network", "the upload did not reach the service"));
    xhr.addEventListener("error", failed);
    xhr.addEventListener("timeout", failed);
    xhr.addEventListener("abort", () => reject(new ApiError(0, "aborted", "upload cancelled")));
    xhr.send(form);
  });
  return { promise, abort: () => xhr.abort() };
}

/** The options as form fields; alone, they restore the chosen faces of a job's photo. */
export function fieldsForm(fields) {
  const form = new FormData();
  for (const [key, value] of Object.entries(fields)) form.append(key, value);
  return form;
}

export function jobForm(file, filename, fields) {
  const form = fieldsForm(fields);
  form.append("file", file, filename);
  return form;
}

export function batchForm(files, fields) {
  const form = fieldsForm(fields);
  for (const { file, name } of files) form.append("files", file, name);
  return form;
}

/** Ask the server to forget a job or batch, and not mind if it cannot (it expires anyway). */
export const forget = (path) => apiFetch(path, { method: "DELETE" }).catch(() => {});
