/* Render every Plotly chart of an assay report or dashboard.
 * A chart is a <div data-chart="ID"> and its figure a <script type="application/json" id="ID">;
 * no inline script is needed, so the app's Content-Security-Policy stays strict. */
(function () {
  "use strict";
  function render() {
    var divs = document.querySelectorAll("[data-chart]");
    for (var i = 0; i < divs.length; i++) {
      var div = divs[i];
      var source = document.getElementById(div.getAttribute("data-chart"));
      if (!source || !window.Plotly) { continue; }
      var fig = JSON.parse(source.textContent);
      window.Plotly.newPlot(div, fig.data || [], fig.layout || {}, {displaylogo: false, responsive: true});
    }
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", render);
  } else {
    render();
  }
})();
