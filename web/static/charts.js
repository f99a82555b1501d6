// Analytics charts: uPlot over /api/v1/summary. Each <figure data-chart=SERIES data-source=URL>
// becomes one chart; the JSON is fetched once per distinct URL. No inline script (CSP).
(function () {
  "use strict";
  var css = getComputedStyle(document.documentElement);
  var color = function (name) { return css.getPropertyValue(name).trim() || "#888"; };

  function columns(rows) {
    var xs = [], flows = [], critical = [];
    rows.forEach(function (row) {
      xs.push(row.start);
      flows.push(row.flows);
      var c = 0;
      for (var k in row.critical) c += row.critical[k];
      critical.push(c);
    });
    return [xs, flows, critical];
  }

  function draw(figure, data) {
    var rows = data[figure.getAttribute("data-chart")] || [];
    figure.textContent = "";
    var caption = document.createElement("figcaption");
    caption.textContent = figure.getAttribute("data-title");
    figure.appendChild(caption);
    if (!rows.length) {
      var empty = document.createElement("p");
      empty.className = "muted";
      empty.textContent = "No data in this period yet.";
      figure.appendChild(empty);
      return;
    }
    var axis = { stroke: color("--muted"), grid: { stroke: color("--line") }, ticks: { stroke: color("--line") } };
    new uPlot({
      width: Math.max(300, figure.clientWidth - 20),
      height: 220,
      tzDate: function (ts) { return uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"); },
      series: [
        {},
        { label: "flows", stroke: color("--accent"), fill: "rgba(78,161,255,0.12)" },
        { label: "critical", stroke: color("--critical"), scale: "critical" },
      ],
      axes: [axis, axis, Object.assign({ side: 1, scale: "critical" }, axis)],
    }, columns(rows), figure);
    figure.setAttribute("data-drawn", String(rows.length));
  }

  function load() {
    var figures = document.querySelectorAll("figure[data-chart]");
    if (!figures.length || typeof uPlot === "undefined") return;
    var requests = {};
    figures.forEach(function (figure) {
      var url = figure.getAttribute("data-source");
      requests[url] = requests[url] || fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (r) { if (!r.ok) throw new Error(r.status); return r.json(); });
      requests[url].then(function (data) { draw(figure, data); }, function () {
        figure.textContent = "Charts are not available right now.";
        figure.setAttribute("data-drawn", "error");
      });
    });
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", load);
  else load();
})();
