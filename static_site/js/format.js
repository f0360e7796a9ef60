/* Numbers and times in the words the page shows them in. Pure functions, no DOM. */

// Non-breaking spaces keep a number with its unit when lines wrap.

export const clamp = (value, lo, hi) => Math.min(hi, Math.max(lo, value));

export function megabytes(bytes) {
  const mb = bytes / (1024 * 1024);
  if (mb < 0.1) return `${Math.max(1, Math.round(bytes / 1024))}\u00a0KB`;
  return `${mb >= 10 ? Math.round(mb) : mb.toFixed(1)}\u00a0MB`;
}

export function ordinal(n) {
  const s = ["th", "st", "nd", "rd"];
  const v = n % 100;
  return n + (s[(v - 20) % 10] || s[v] || s[0]);
}

export function clock(seconds) {
  seconds = Math.max(0, Math.floor(seconds));
  const m = Math.floor(seconds / 60);
  const s = String(seconds % 60).padStart(2, "0");
  return m >= 60 ? `${Math.floor(m / 60)}:${String(m % 60).padStart(2, "0")}:${s}` : `${m}:${s}`;
}

export function duration(seconds) {
  if (seconds < 60) return `${seconds < 10 ? seconds.toFixed(1) : Math.round(seconds)}\u00a0s`;
  const m = Math.floor(seconds / 60);
  return `${m}\u00a0min ${Math.round(seconds % 60)}\u00a0s`;
}

export function timeLeft(ms) {
  const hours = ms / 3600e3;
  if (hours >= 1.5) return `${Math.round(hours)} hours`;
  const minutes = Math.max(1, Math.round(ms / 60e3));
  return minutes === 1 ? "1 minute" : `${minutes} minutes`;
}
