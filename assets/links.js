/* The page's state in the address bar (explorer/ui/link_panel.py). `push` puts the query string the server wrote
 * for the page's state into the browser's history (a new entry when it changed, so the back button steps back
 * through what the user looked at) and returns the full address for "Copy link". Back and forward write the
 * address they arrive at into the `store-nav` store, from which the server sets the page. */
(function () {
  "use strict";

  function push(search) {
    if (typeof search !== "string") { return window.dash_clientside.no_update; }
    if (window.location.search !== search) {
      window.history.pushState({}, "", window.location.pathname + search);
    }
    return window.location.href;
  }

  window.addEventListener("popstate", function () {
    if (window.dash_clientside && window.dash_clientside.set_props) {
      window.dash_clientside.set_props("store-nav", { data: { search: window.location.search, t: Date.now() } });
    }
  });

  window.dash_clientside = Object.assign({}, window.dash_clientside, { explorer_links: { push: push } });
})();
