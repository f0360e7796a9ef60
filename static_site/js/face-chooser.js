/* Choosing which faces to restore: the photo with a box over each face a detection found
 * (boxes are in the photo's pixels); pressing a box leaves that face out, or takes it back;
 * then the chosen faces are restored. Group photos and background faces are why. */

import { h } from "./dom.js";

export class FaceChooser {
  constructor({ image, width, height, faces, name, onRestore }) {
    this.chosen = new Set(faces.map((_, index) => index));
    this.count = faces.length;
    this.restore = h("button", { type: "button", class: "btn btn-primary restore-chosen",
      onclick: () => onRestore([...this.chosen].sort((a, b) => a - b)) });
    const stage = h("div", { class: "chooser-stage" },
      h("img", { src: image, alt: `${name}, with the faces found marked`, class: "chooser-img", decoding: "async" }));
    stage.style.setProperty("--ar", String(width / height));
    this.boxes = faces.map((face, index) => {
      const [x0, y0, x1, y1] = face.box;
      const box = h("button", { type: "button", class: "face-box", "aria-pressed": "true", "data-face": String(index),
        onclick: () => this.toggle(index) });
      // Positions from the API's numbers, through the CSSOM (the CSP allows no inline styles).
      box.style.left = `${(x0 / width) * 100}%`;
      box.style.top = `${(y0 / height) * 100}%`;
      box.style.width = `${((x1 - x0) / width) * 100}%`;
      box.style.height = `${((y1 - y0) / height) * 100}%`;
      stage.append(box);
      return box;
    });
    const found = faces.length === 1 ? "1 face found." : `${faces.length} faces found.`;
    this.el = h("div", { class: "face-chooser" },
      h("p", { class: "result-facts" }, faces.length ? `${found} Press a face to leave it out, or to take it back.`
        : "No face was found in this photo."),
      stage, h("div", { class: "chooser-actions" }, this.restore));
    this.update();
  }

  toggle(index) {
    if (this.chosen.has(index)) this.chosen.delete(index);
    else this.chosen.add(index);
    this.update();
  }

  update() {
    this.boxes.forEach((box, index) => {
      const on = this.chosen.has(index);
      box.setAttribute("aria-pressed", String(on));
      box.setAttribute("aria-label", `Face ${index + 1}: ${on ? "will be restored (press to leave it out)" : "left out (press to restore it)"}`);
    });
    const n = this.chosen.size;
    this.restore.disabled = n === 0;
    this.restore.textContent = n === 0 ? "Choose at least one face" : n === this.count && n > 1 ? `Restore all ${n} faces`
      : n === 1 ? "Restore 1 face" : `Restore ${n} faces`;
  }
}
