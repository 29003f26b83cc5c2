/* The physics panel says "computing" the moment another structure is on screen, so the energy of the previous
 * one is never shown beside the new one while the server computes (explorer/ui/physics_panel.py). */
(function () {
  "use strict";
  window.dash_clientside = window.dash_clientside || {};
  window.dash_clientside.explorer_physics = {
    pending: function (current) {
      if (!current) {
        return [];
      }
      return {type: "P", namespace: "dash_html_components",
              props: {children: "computing the energy, the hull and novelty…", className: "hint"}};
    }
  };
})();
