/* The before/after viewer of a restored photo: a slider (drag, keys, touch), side by side with
 * panes that scroll together, and zoom (1×, 2×, 4×, or onto a face). One Viewer per opened result. */

import { h, reveal } from "./dom.js";
import { clamp } from "./format.js";

const ZOOMS = [1, 2, 4];

export class Viewer {
  constructor({ before, after, width, height, resultLabel, name }) {
    this.pos = 50;
    this.zoom = 1;
    this.mode = "slider";
    this.focus = { x: 0.5, y: 0.5 };
    this.faceFocus = null;
    const ratio = width && height ? width / height : 1;

    const modeGroup = h("div", { class: "seg-buttons", role: "group", "aria-label": "Comparison view" });
    this.modeButtons = {
      slider: h("button", { type: "button", "aria-pressed": "true", onclick: () => this.setMode("slider") }, "Slider"),
      sbs: h("button", { type: "button", "aria-pressed": "false", onclick: () => this.setMode("sbs") }, "Side by side"),
    };
    modeGroup.append(this.modeButtons.slider, this.modeButtons.sbs);
    const zoomGroup = h("div", { class: "seg-buttons", role: "group", "aria-label": "Zoom" });
    this.zoomButtons = ZOOMS.map((z) => h("button", {
      type: "button", "aria-pressed": String(z === 1), "data-zoom": z,
      "aria-label": z === 1 ? "Fit to frame" : `Zoom ${z} times`, onclick: () => this.setZoom(z),
    }, z === 1 ? "Fit" : `${z}×`));
    zoomGroup.append(...this.zoomButtons);
    const fullSize = h("a", { class: "btn-text full-size", href: after, target: "_blank", rel: "noopener" }, "Full size", h("span", { "aria-hidden": "true" }, " ↗"));

    this.toolbar = h("div", { class: "viewer-toolbar" }, modeGroup, zoomGroup, fullSize);

    // Slider view: the restored image on top, clipped to the right of the divider.
    const makeImage = (src, alt, cls) => h("img", { src, alt, class: cls, draggable: "false", decoding: "async" });
    this.before = makeImage(before, `Original: ${name}`, "img-before");
    this.after = makeImage(after, `Restored: ${name}`, "img-after");
    this.canvas = h("div", { class: "canvas" }, this.before, this.after);
    this.scroller = h("div", { class: "scroller", "aria-label": "Comparison image; scroll to move around when zoomed" }, this.canvas);
    this.handle = h("div", {
      class: "handle", role: "slider", tabindex: "0", "aria-label": "Before and after divider",
      "aria-orientation": "horizontal", "aria-valuemin": "0", "aria-valuemax": "100",
    }, h("span", { class: "handle-grip", "aria-hidden": "true" }));
    this.divider = h("div", { class: "divider", "aria-hidden": "true" });
    this.stage = h("div", { class: "stage slider-stage" }, this.scroller, this.divider, this.handle,
      h("span", { class: "tag tag-left", "aria-hidden": "true" }, "Before"),
      h("span", { class: "tag tag-right", "aria-hidden": "true" }, "Restored"));
    this.stage.style.setProperty("--ar", String(ratio));

    // Side-by-side view: two panes that scroll together.
    const pane = (src, alt, caption) => {
      const img = makeImage(src, alt, "img-single");
      const canvas = h("div", { class: "canvas" }, img);
      const scroller = h("div", { class: "scroller", "aria-label": `${caption} image` }, canvas);
      const stage = h("div", { class: "stage" }, scroller);
      stage.style.setProperty("--ar", String(ratio));
      return { figure: h("figure", { class: "pane" }, stage, h("figcaption", {}, caption)), scroller, canvas, stage };
    };
    this.panes = [pane(before, `Original: ${name}`, "Before"), pane(after, `Restored: ${name}`, `Restored${resultLabel ? ` · ${resultLabel}` : ""}`)];
    this.sbs = h("div", { class: "sbs", hidden: true }, ...this.panes.map((p) => p.figure));

    this.el = h("div", { class: "viewer" }, this.toolbar, this.stage, this.sbs);
    this.wire();
    this.setPos(50);
  }

  wire() {
    const stage = this.stage;
    stage.addEventListener("pointerdown", (event) => this.pointerDown(event, this.scroller, true));
    for (const pane of this.panes) pane.stage.addEventListener("pointerdown", (event) => this.pointerDown(event, pane.scroller, false));
    const move = (event) => this.pointerMove(event);
    const end = (event) => {
      if (!this.drag || this.drag.id !== event.pointerId) return;
      this.drag.target.classList.remove("panning");
      this.drag = null;
    };
    for (const el of [stage, ...this.panes.map((p) => p.stage)]) {
      el.addEventListener("pointermove", move);
      el.addEventListener("pointerup", end);
      el.addEventListener("pointercancel", end);
      el.addEventListener("lostpointercapture", end);
    }
    this.handle.addEventListener("keydown", (event) => {
      const step = event.shiftKey ? 10 : 1;
      const moves = {
        ArrowLeft: -step, ArrowDown: -step, ArrowRight: step, ArrowUp: step, PageDown: -10, PageUp: 10,
        Home: -Infinity, End: Infinity,
      };
      if (!(event.key in moves)) return;
      event.preventDefault();
      this.setPos(Math.round(this.pos) + moves[event.key]);
    });
    this.scroller.addEventListener("scroll", () => { this.rememberFocus(this.scroller); this.updateClip(); }, { passive: true });
    // Side by side, the pane the person is moving leads and the other follows. (Following every
    // scroll event both ways would let a late event from the follower drag the leader back.)
    this.panes.forEach((pane, i) => {
      const lead = () => { this.leader = pane.scroller; };
      for (const type of ["pointerdown", "wheel", "touchstart", "keydown", "focus"]) {
        pane.scroller.addEventListener(type, lead, { passive: true });
      }
      pane.scroller.addEventListener("scroll", () => {
        if (this.leader !== pane.scroller) return;
        const other = this.panes[1 - i].scroller;
        other.scrollLeft = pane.scroller.scrollLeft;
        other.scrollTop = pane.scroller.scrollTop;
        this.rememberFocus(pane.scroller);
      }, { passive: true });
    });
    if ("ResizeObserver" in window) new ResizeObserver(() => this.updateClip()).observe(this.stage);
  }

  pointerDown(event, scroller, isSlider) {
    if (event.button !== 0 || this.drag) return;
    const onHandle = isSlider && this.handle.contains(event.target);
    if (isSlider && (onHandle || this.zoom === 1)) {
      this.drag = { id: event.pointerId, kind: "slide", target: event.currentTarget };
      event.currentTarget.setPointerCapture(event.pointerId);
      if (!onHandle) this.setPosFromX(event.clientX);
      this.handle.focus({ preventScroll: true });
      event.preventDefault();
    } else if (this.zoom > 1 && event.pointerType === "mouse") {
      // Touch pans natively (the scroller is overflow: auto); a mouse drags to pan.
      this.drag = { id: event.pointerId, kind: "pan", target: event.currentTarget, scroller,
        x: event.clientX, y: event.clientY, left: scroller.scrollLeft, top: scroller.scrollTop };
      event.currentTarget.setPointerCapture(event.pointerId);
      event.currentTarget.classList.add("panning");
      event.preventDefault();
    }
  }

  pointerMove(event) {
    const drag = this.drag;
    if (!drag || drag.id !== event.pointerId) return;
    if (drag.kind === "slide") this.setPosFromX(event.clientX);
    else {
      drag.scroller.scrollLeft = drag.left - (event.clientX - drag.x);
      drag.scroller.scrollTop = drag.top - (event.clientY - drag.y);
    }
  }

  setPosFromX(clientX) {
    const rect = this.stage.getBoundingClientRect();
    if (rect.width > 0) this.setPos(((clientX - rect.left) / rect.width) * 100, true);
  }

  setPos(value, fine = false) {
    this.pos = clamp(fine ? value : Math.round(value), 0, 100);
    const rounded = Math.round(this.pos);
    this.stage.style.setProperty("--pos", `${this.pos}%`);
    this.handle.setAttribute("aria-valuenow", String(rounded));
    this.handle.setAttribute("aria-valuetext", `${rounded}%: original on the left, restored on the right`);
    this.updateClip();
  }

  updateClip() {
    const s = this.scroller;
    const width = s.scrollWidth;
    const split = width ? ((s.scrollLeft + (this.pos / 100) * s.clientWidth) / width) * 100 : this.pos;
    this.after.style.clipPath = `inset(0 0 0 ${clamp(split, 0, 100).toFixed(2)}%)`;
  }

  activeScrollers() {
    return this.mode === "slider" ? [this.scroller] : this.panes.map((p) => p.scroller);
  }

  rememberFocus(scroller) {
    if (this.zoom === 1 || !scroller.scrollWidth) return;
    this.focus = {
      x: (scroller.scrollLeft + scroller.clientWidth / 2) / scroller.scrollWidth,
      y: (scroller.scrollTop + scroller.clientHeight / 2) / scroller.scrollHeight,
    };
  }

  setMode(mode) {
    this.mode = mode;
    this.stage.hidden = mode !== "slider";
    this.sbs.hidden = mode !== "sbs";
    for (const [key, button] of Object.entries(this.modeButtons)) button.setAttribute("aria-pressed", String(key === mode));
    this.applyZoom();
  }

  /** Zoom in around `focus` (fractions of the image), by default where the view is, or the first face. */
  setZoom(zoom, focus) {
    if (focus) this.focus = focus;
    else if (this.zoom === 1 && zoom > 1) this.focus = this.faceFocus || { x: 0.5, y: 0.5 };
    this.zoom = zoom;
    for (const button of this.zoomButtons) button.setAttribute("aria-pressed", String(Number(button.dataset.zoom) === zoom));
    this.applyZoom();
  }

  applyZoom() {
    const zoom = this.zoom;
    const all = [[this.scroller, this.canvas], ...this.panes.map((p) => [p.scroller, p.canvas])];
    for (const [scroller, canvas] of all) {
      canvas.style.width = canvas.style.height = `${zoom * 100}%`;
      scroller.classList.toggle("zoomed", zoom > 1);
      if (zoom > 1) scroller.tabIndex = 0;
      else scroller.removeAttribute("tabindex");
    }
    const focus = this.focus;
    this.leader = null;
    for (const scroller of this.activeScrollers()) {
      scroller.scrollLeft = focus.x * scroller.scrollWidth - scroller.clientWidth / 2;
      scroller.scrollTop = focus.y * scroller.scrollHeight - scroller.clientHeight / 2;
    }
    this.stage.classList.toggle("is-zoomed", zoom > 1);
    this.updateClip();
  }

  showDetail(focus) {
    this.setZoom(4, focus);
    reveal(this.el);
  }
}
