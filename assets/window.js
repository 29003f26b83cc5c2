/* The window on screen of a map drawn as a density image (explorer/services/lod.py). dcc.Graph's relayoutData
 * holds only plotly's last event, and the next one (an "autosize" after the status line grows) supersedes a
 * zoom's request before the server has answered it. So the browser turns each zoom, pan or reset into the whole
 * window, read from the plot after the event: {"x": [x0, x1] or "auto", "y": ...}, "auto" for an axis reset to
 * the whole map; other events change nothing. The server checks whatever arrives. */
(function () {
  "use strict";

  function axisOf(relayout, fullLayout, name) {
    if (relayout[name + ".autorange"] === true) {
      return "auto";
    }
    var axis = fullLayout && fullLayout[name];
    return axis && Array.isArray(axis.range) ? [Number(axis.range[0]), Number(axis.range[1])] : null;
  }

  function windowOf(relayout) {
    var noUpdate = window.dash_clientside.no_update;
    if (!relayout || typeof relayout !== "object") {
      return noUpdate;
    }
    var moved = Object.keys(relayout).some(function (key) {
      return /^[xy]axis\.(range|autorange)/.test(key);
    });
    var graph = document.querySelector("#map .js-plotly-plot");
    if (!moved || !graph) {
      return noUpdate;
    }
    var x = axisOf(relayout, graph._fullLayout, "xaxis");
    var y = axisOf(relayout, graph._fullLayout, "yaxis");
    return x && y ? { x: x, y: y, t: Date.now() } : noUpdate;
  }

  window.dash_clientside = Object.assign({}, window.dash_clientside, {
    explorer_window: { windowOf: windowOf }
  });
})();
