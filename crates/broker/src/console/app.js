// Vltava console: the little the pages do in the browser. No libraries, nothing from other hosts.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  // The message browser: show the start field that the chosen "from" uses.
  var from = document.getElementById("from");
  if (from) {
    var sync = function () {
      document.querySelectorAll("[data-from]").forEach(function (el) {
        el.hidden = el.getAttribute("data-from") !== from.value;
      });
    };
    from.addEventListener("change", sync);
    sync();
  }
  // A datetime picker fills the timestamp field (ms since the epoch, UTC).
  var when = document.getElementById("when");
  var ts = document.getElementById("timestamp");
  if (when && ts) {
    when.addEventListener("change", function () {
      var ms = Date.parse(when.value + "Z");
      if (!isNaN(ms)) { ts.value = String(ms); }
    });
  }
  // Buttons of destructive actions ask once more in the browser (the server asks too).
  document.querySelectorAll("form[data-confirm]").forEach(function (f) {
    f.addEventListener("submit", function (e) {
      if (!window.confirm(f.getAttribute("data-confirm"))) { e.preventDefault(); }
    });
  });
  // Charts are redrawn from the broker's samples (server-rendered SVG) every few seconds.
  var charts = document.querySelectorAll("[data-refresh]");
  if (charts.length) {
    window.setInterval(function () {
      charts.forEach(function (el) {
        fetch(el.getAttribute("data-refresh"), { credentials: "same-origin" })
          .then(function (r) { return r.ok ? r.text() : null; })
          .then(function (svg) { if (svg !== null) { el.innerHTML = svg; } })
          .catch(function () {});
      });
    }, 3000);
  }
});
