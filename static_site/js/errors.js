/* Errors in plain words: for every error code the API (or the page itself) can produce, what
 * happened and what the person can do about it. */

import { megabytes } from "./format.js";
import { optionLabel } from "./options-form.js";
import { state } from "./store.js";

const sentence = (text) => (text ? text.charAt(0).toUpperCase() + text.slice(1).replace(/\.?$/, ".") : "");

/** {title, next, auto} for an error: what happened, and what the person can do about it.
 * `auto` means the page tries again by itself. */
export function explain(error) {
  const code = error.code || "";
  const detail = sentence(error.message);
  const limit = state.info ? megabytes(state.info.max_upload_bytes) : "the limit";
  switch (code) {
    case "file_too_large":
      return { title: "This file is too big.", next: `${detail} Photos up to ${limit} are accepted: export a smaller copy (a high-quality JPEG is usually plenty) and add it again.` };
    case "too_many_pixels":
      return { title: "This photo has too many pixels.", next: `${detail} Resize it (or crop it around the faces) and add it again.` };
    case "not_an_image":
      return { title: "This file isn’t a photo we can read.", next: "Choose a JPEG, PNG or WebP image. If it opens on your device, save a copy in one of those formats and add that." };
    case "empty_file":
    case "corrupt_image":
    case "bad_dimensions":
      return { title: "This file isn’t a photo we can read.", next: `${detail} If it opens on your device, save a fresh copy as JPEG, PNG or WebP and add that.` };
    case "unsupported_format":
      return { title: "This image format isn’t supported.", next: `${detail.replace(/; send JPEG, PNG or WebP\.$/, ".")} Save it as JPEG, PNG or WebP (phones can export HEIC photos as JPEG) and add it again.` };
    case "invalid_request": {
      const fields = (error.fields || []).map((f) => `${optionLabel(f.field)}: ${f.message}`).join("; ");
      return { title: "Some options weren’t accepted.", next: `${fields || detail} Adjust the options above and press “Try again”.` };
    }
    case "crop_outside_image":
      return { title: "The crop doesn’t fit this photo.", next: `${detail} Change or clear “Crop” in the options and press “Try again”.` };
    case "too_many_files":
      return { title: "Too many photos at once.", next: `${detail} Add them in smaller groups.` };
    case "no_images":
      return { title: "None of these files is a photo we can read.", next: "Choose JPEG, PNG or WebP images (or a zip of them) and add them again." };
    case "bad_zip":
      return { title: "This zip file can’t be used.", next: `${detail} Add the photos themselves, or a smaller zip.` };
    case "auth_required":
    case "unauthorized":
      return { title: "Sign-in needed.", next: "This service only accepts photos from signed-in users or with an API key. Sign in, then press “Try again”." };
    case "internal_error":
      return { title: "Something went wrong on our side.", next: "It has been logged. Press “Try again” in a moment." };
    case "batch_not_found":
      return { title: "These photos are no longer on the server.", next: "They expired or were deleted. Add them again if you still need them." };
    case "rate_limited":
      return { title: "You’re adding photos faster than the service allows.", next: "Nothing is lost: it will be sent again automatically.", auto: true };
    case "busy":
      return { title: "The service is busy right now.", next: "Nothing is lost: it will be sent again automatically.", auto: true };
    case "storage_unavailable":
    case "server_error":
      return { title: "The service is having a hiccup.", next: "It will be tried again automatically.", auto: true };
    case "network":
      return { title: "Couldn’t reach the service.", next: "Check your internet connection; it will be tried again automatically.", auto: true };
    case "input_missing":
      return { title: "The uploaded photo is no longer on the server.", next: "It expired or was deleted. Add the photo again." };
    case "job_not_found":
      return { title: "This photo is no longer on the server.", next: "It expired or was deleted. Add the photo again if you still need it." };
    case "processing_failed":
      return { title: "Restoring this photo failed.", next: `${detail} Press “Try again”; if it keeps failing, try a smaller photo or other options.` };
    case "cancelled":
      return { title: "This job was cancelled.", next: "Press “Try again” to run it again." };
    default:
      return { title: "Something went wrong.", next: `${detail} Press “Try again”; if it keeps happening, try again later.` };
  }
}
