/* Marks on the map: a ring around the structure on screen and a square per uploaded structure, each
 * labelled. They are HTML elements laid over the plot at the points' pixel positions, not part of the
 * plotly figure: any change of the figure (a trace, a shape, an annotation, even Plotly.relayout, which
 * makes dcc.Graph re-plot) redraws all of the map's WebGL points, 0.3-0.6 s on the 11k map in a
 * software-rendered browser, and a click used to wait for that. They follow zoom, pan and resize. Escape clears
 * the selection (as a second click on the selected point does: explorer/ui/callbacks.py). */
(function () {
  "use strict";

  var latest = [];
  var KINDS = ["known", "hypothetical", "upload", "frame", "relaxed"];

  function finite(xy) {
    return Array.isArray(xy) && xy.length === 2 && xy.every(function (v) {
      return typeof v === "number" && isFinite(v);
    });
  }

  function mapOf(item) { return (item && item.map) || "crystals"; }

  function marksOf(current, uploads, shownMap) {
    var marks = [];
    (Array.isArray(uploads) ? uploads : []).forEach(function (u) {
      if (u && finite(u.xy) && mapOf(u) === shownMap) {
        marks.push({ xy: u.xy, label: "uploaded " + (u.formula || ""), kind: "upload" });
      }
    });
    if (current && finite(current.xy) && KINDS.indexOf(current.kind) >= 0 && mapOf(current) === shownMap) {
      marks.push({ xy: current.xy, label: current.kind + " " + (current.formula || ""), kind: "current" });
    }
    return marks;
  }

  function layer(container) {
    var found = container.querySelector(":scope > .map-marks");
    if (!found) {
      found = document.createElement("div");
      found.className = "map-marks";
      container.appendChild(found);
    }
    return found;
  }

  function place() {
    var container = document.getElementById("map");
    var gd = container && container.querySelector(".js-plotly-plot");
    if (!gd || !gd._fullLayout || !gd._fullLayout.xaxis) { return false; }  // not plotted yet
    var overlay = layer(container);
    var xaxis = gd._fullLayout.xaxis, yaxis = gd._fullLayout.yaxis;
    var box = gd.getBoundingClientRect(), outer = container.getBoundingClientRect();
    overlay.textContent = "";
    latest.forEach(function (m) {
      var left = box.left - outer.left + xaxis._offset + xaxis.l2p(m.xy[0]);
      var top = box.top - outer.top + yaxis._offset + yaxis.l2p(m.xy[1]);
      if (left < xaxis._offset || top < yaxis._offset || left > xaxis._offset + xaxis._length + 1 ||
          top > yaxis._offset + yaxis._length + 1) { return; }  // zoomed out of view
      var item = document.createElement("div");
      item.className = "map-mark " + m.kind;
      item.style.left = left + "px";
      item.style.top = top + "px";
      var label = document.createElement("span");
      label.textContent = m.label;
      item.appendChild(label);
      overlay.appendChild(item);
    });
    return true;
  }

  /* Clear the structure on screen: its mark, the viewer and the panels (a clean map for a figure). */
  function unselect() {
    if (window.dash_clientside && window.dash_clientside.set_props) {
      window.dash_clientside.set_props("store-current", { data: null });
    }
  }

  document.addEventListener("keydown", function (event) {
    var target = event.target;
    var typing = target && (target.tagName === "INPUT" || target.tagName === "TEXTAREA" || target.isContentEditable);
    if (event.key === "Escape" && !typing && latest.some(function (m) { return m.kind === "current"; })) {
      unselect();
    }
  });

  var waiting = null;

  /* Hook the plot once it exists: follow every redraw, zoom, pan and resize. The marks may change before the
   * first figure is plotted (an address opened with an upload's mark, on a busy server): then look again every
   * 100 ms, for at most 30 s, instead of leaving the marks undrawn until the next change. */
  function attach(triesLeft) {
    if (place()) {
      var gd = document.querySelector("#map .js-plotly-plot");
      if (gd.on && !gd._explorerMarks) {
        gd._explorerMarks = true;
        gd.on("plotly_afterplot", place);
        gd.on("plotly_relayout", place);
      }
      return;
    }
    if (triesLeft > 0) {
      waiting = window.setTimeout(function () { attach(triesLeft - 1); }, 100);
    }
  }

  window.addEventListener("resize", place);

  /* Each mark was placed on one kind of map (its "map"); the figure says which map it shows (layout.meta). */
  function drawMarks(current, uploads, figure) {
    var meta = figure && figure.layout && figure.layout.meta;
    latest = marksOf(current, uploads, (meta && meta.kind) || "crystals");
    if (waiting !== null) { window.clearTimeout(waiting); waiting = null; }
    attach(300);
    return String(latest.length);
  }

  window.dash_clientside = Object.assign({}, window.dash_clientside, {
    explorer_marks: { drawMarks: drawMarks }
  });
})();
