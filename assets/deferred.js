/* Panels filled by a second callback after the structure is drawn (physics, motifs) say "computing" the moment
 * another structure is on screen, so the previous structure's figures are never shown beside the new one while
 * the server computes (explorer/ui/physics_panel.py, explorer/ui/motif_panel.py). */
(function () {
  "use strict";

  function pending(text) {
    return function (current) {
      if (!current) {
        return [];
      }
      return {type: "P", namespace: "dash_html_components", props: {children: text, className: "hint"}};
    };
  }

  window.dash_clientside = window.dash_clientside || {};
  window.dash_clientside.explorer_deferred = {
    physics: pending("computing the energy, the hull and novelty…"),
    motifs: pending("finding the environment of every site…")
  };
})();
