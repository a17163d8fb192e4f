/* QA dashboard charts: every <canvas data-chart-kind> gets a Chart.js chart drawn
   from the JSON in the element named by its data-chart-data. No network, no eval. */
(function () {
  "use strict";
  if (typeof Chart === "undefined") {
    throw new Error("Chart.js is missing from the page");
  }
  var FONT = 'system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", Arial, sans-serif';
  Chart.defaults.font.family = FONT;
  Chart.defaults.color = "#1f2933";
  Chart.defaults.animation = false; // drawn at once: prints, screenshots, reduced motion
  Chart.defaults.maintainAspectRatio = false;

  // Okabe-Ito and Tableau colours, told apart further by dash and point style.
  var PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9",
    "#4E79A7", "#B07AA1", "#9C755F", "#59A14F", "#E15759", "#76B7B2"];
  var DASHES = [[], [6, 4], [2, 3], [10, 3, 2, 3]];
  var POINTS = ["circle", "rect", "triangle", "rectRot", "crossRot", "star"];
  var STATUS_COLORS = {
    "Passed": "#2e8b57", "Failed": "#c0392b", "Not Applicable": "#a0a8b3", "Error": "#e69f00"
  };

  function fmt(n) {
    return n === null || n === undefined ? "—" : Number(n).toLocaleString("en-US");
  }

  function trend(data) {
    var datasets = data.series.map(function (s, i) {
      var color = PALETTE[i % PALETTE.length];
      return {
        label: s.label,
        // a log scale has no 0: an empty table shows as a gap
        data: s.data.map(function (v) { return v ? v : null; }),
        borderColor: color,
        backgroundColor: color,
        borderDash: DASHES[Math.floor(i / PALETTE.length) % DASHES.length],
        pointStyle: POINTS[i % POINTS.length],
        pointRadius: 3,
        borderWidth: 2,
        spanGaps: false,
        tension: 0
      };
    });
    return {
      type: "line",
      data: { labels: data.labels, datasets: datasets },
      options: {
        interaction: { mode: "nearest", axis: "x", intersect: false },
        plugins: {
          legend: {
            position: "right",
            labels: { usePointStyle: true, boxWidth: 8, boxHeight: 8, padding: 8, font: { size: 11 } }
          },
          tooltip: {
            callbacks: {
              title: function (items) {
                var i = items[0].dataIndex;
                return "Batch " + data.labels[i] + " (" + data.details[i] + ")";
              },
              label: function (item) {
                return item.dataset.label + ": " + fmt(item.raw);
              }
            }
          }
        },
        scales: {
          x: { offset: true, title: { display: true, text: "Run (batch), oldest first" } },
          y: {
            type: "logarithmic",
            title: { display: true, text: "Rows (log scale)" },
            ticks: {
              callback: function (value) {
                var exp = Math.log10(value);
                return Math.abs(exp - Math.round(exp)) < 1e-9 ? fmt(value) : "";
              }
            }
          }
        }
      }
    };
  }

  function checks(data) {
    var datasets = data.series.map(function (s) {
      return {
        label: s.label,
        data: s.data,
        backgroundColor: STATUS_COLORS[s.label] || "#777",
        borderWidth: 0
      };
    });
    return {
      type: "bar",
      data: { labels: data.labels, datasets: datasets },
      options: {
        plugins: { legend: { position: "bottom" } },
        scales: {
          x: { stacked: true },
          y: { stacked: true, beginAtZero: true, title: { display: true, text: "Checks" },
            ticks: { precision: 0 } }
        }
      }
    };
  }

  var BUILDERS = { trend: trend, checks: checks };
  var canvases = document.querySelectorAll("canvas[data-chart-kind]");
  Array.prototype.forEach.call(canvases, function (canvas) {
    var build = BUILDERS[canvas.getAttribute("data-chart-kind")];
    var source = document.getElementById(canvas.getAttribute("data-chart-data"));
    if (!build || !source) {
      throw new Error("chart " + canvas.id + " has no builder or no data");
    }
    new Chart(canvas, build(JSON.parse(source.textContent)));
  });
  document.documentElement.setAttribute("data-charts", String(canvases.length));
})();
