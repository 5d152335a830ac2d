// llmpo judging pages: keyboard shortcuts (1 = A, 2 = B, 3 = tie), self-refreshing waiting page,
// live status. No dependencies, no inline code (the pages' Content-Security-Policy forbids it).
(function () {
  "use strict";
  var body = document.body;

  var refresh = Number(body.getAttribute("data-refresh") || 0);
  if (refresh > 0) {
    window.setTimeout(function () { window.location.reload(); }, refresh);
  }

  var live = document.getElementById("live");
  if (live && live.getAttribute("data-src")) {
    var every = Number(live.getAttribute("data-every") || 2000);
    var tick = function () {
      fetch(live.getAttribute("data-src"), { credentials: "same-origin" })
        .then(function (response) { return response.ok ? response.text() : null; })
        .then(function (html) {
          if (html === null) { return; }
          live.innerHTML = html;
          var mine = document.getElementById("mine-now");
          var shown = document.getElementById("mine");
          if (mine && shown) { shown.textContent = mine.getAttribute("data-mine"); }
        })
        .catch(function () { /* the server may be restarting: try again later */ })
        .then(function () { window.setTimeout(tick, every); });
    };
    window.setTimeout(tick, every);
  }

  var form = document.getElementById("verdict");
  if (form) {
    var keys = { "1": "A", "2": "B", "3": "tie" };
    var sent = false;
    form.addEventListener("submit", function (event) {
      if (sent) { event.preventDefault(); return; }
      sent = true;
      form.classList.add("sending");
    });
    document.addEventListener("keydown", function (event) {
      var target = event.target;
      if (target && (target.tagName === "TEXTAREA" || target.tagName === "INPUT")) { return; }
      if (event.ctrlKey || event.metaKey || event.altKey) { return; }
      var choice = keys[event.key];
      if (!choice || sent) { return; }
      var button = form.querySelector('button[name="choice"][value="' + choice + '"]');
      if (button) {
        event.preventDefault();
        button.classList.add("pressed");
        button.click();
      }
    });
  }
})();
