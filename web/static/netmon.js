// Netmon dashboard behaviour: the drawer, bounded live tables, connection status. No inline
// scripts anywhere (the Content-Security-Policy forbids them), so everything is wired here.
(function () {
  "use strict";

  function drawer() { return document.getElementById("drawer"); }

  // Open the drawer when htmx put something in it; close on the × button or Escape.
  document.addEventListener("htmx:afterSwap", function (evt) {
    if (evt.detail.target && evt.detail.target.id === "drawer") drawer().classList.add("open");
  });
  document.addEventListener("click", function (evt) {
    if (evt.target.closest("[data-close-drawer]")) drawer().classList.remove("open");
  });
  document.addEventListener("keydown", function (evt) {
    if (evt.key === "Escape" && drawer()) drawer().classList.remove("open");
    if (evt.key === "Enter" && evt.target.matches && evt.target.matches("tr.row")) evt.target.click();
  });

  // Live tables keep at most data-max-rows rows: a wall screen left open for days must not grow.
  // A flood must not push a rare critical row off the wall either: past data-entity-rows rows of
  // one source (data-entity) its oldest go; past the bound, the newest half stays whatever its
  // severity and, below it, the oldest rows that are not critical go before any critical one
  // (the snapshot is cut the same way: app/projections/wall_rows.py). Rows are newest first.
  function trim() {
    document.querySelectorAll("[data-max-rows]").forEach(function (holder) {
      var max = parseInt(holder.getAttribute("data-max-rows"), 10) || 100;
      var perEntity = parseInt(holder.getAttribute("data-entity-rows"), 10) || 0;
      // A snapshot replaces the whole <tbody>, so the bound lives on the table around it.
      var box = holder.tagName === "TABLE" ? holder.tBodies[0] : holder;
      if (!box) return;
      var rows = Array.prototype.slice.call(box.children);
      if (perEntity) {
        var seen = {};
        rows = rows.filter(function (row) {
          var entity = row.getAttribute("data-entity");
          if (!entity) return true;
          seen[entity] = (seen[entity] || 0) + 1;
          if (seen[entity] <= perEntity) return true;
          box.removeChild(row);
          return false;
        });
      }
      var excess = rows.length - max;
      for (var i = rows.length - 1; i >= Math.floor(max / 2) && excess > 0; i--) {
        if (rows[i].getAttribute("data-severity") === "critical") continue;
        box.removeChild(rows[i]);
        rows.splice(i, 1);
        excess--;
      }
      while (excess-- > 0) box.removeChild(rows.pop());
    });
  }
  ["htmx:wsAfterMessage", "htmx:oobAfterSwap", "htmx:afterSettle"].forEach(function (name) {
    document.addEventListener(name, trim);
  });

  // Pages that show derived state (Alerts) refresh it after live pushes, at most ~3 times a
  // second and never dropping the last change (a trailing timer, not a throttle).
  var refreshTimer = null;
  document.addEventListener("htmx:wsAfterMessage", function () {
    if (refreshTimer || !document.querySelector("[data-refresh-on-live]")) return;
    refreshTimer = setTimeout(function () {
      refreshTimer = null;
      htmx.trigger(document.body, "live-changed");
    }, 300);
  });

  // A pushed row replaces the row with its id; htmx drops an out-of-band fragment without a
  // target, so a row the page does not have yet is added here: an agent that came up after the
  // page was rendered (_agent_row.html) at the end of #agent-rows, a new row of the wall
  // (_live_row.html: a source's activity in a new minute, a new alert) on top of #live-rows.
  document.addEventListener("htmx:oobErrorNoTarget", function (evt) {
    var row = evt.detail && evt.detail.content;
    if (!row || !row.id) return;
    var agents = document.getElementById("agent-rows");
    var wall = document.getElementById("live-rows");
    if (row.id.indexOf("agent-") === 0 && agents) {
      row.removeAttribute("hx-swap-oob");
      agents.appendChild(row);
    } else if (row.id.indexOf("w-") === 0 && wall) {
      row.removeAttribute("hx-swap-oob");
      wall.insertBefore(row, wall.firstChild);
    }
  });

  // The wall stands by last activity, newest on top (as its snapshot does): a row replaced in
  // place by a push moves to the top, unless what changed it was older than the top row.
  document.addEventListener("htmx:oobAfterSwap", function (evt) {
    var row = evt.target;
    var wall = row && row.parentNode;
    if (!wall || wall.id !== "live-rows" || !row.id || row.id.indexOf("w-") !== 0) return;
    var top = wall.firstElementChild;
    var last = parseFloat(row.getAttribute("data-last"));
    if (top !== row && !(last < parseFloat(top.getAttribute("data-last")))) {
      wall.insertBefore(row, top);
    }
  });

  function setStatus(state) {
    document.querySelectorAll("[data-ws-status]").forEach(function (el) {
      el.classList.toggle("connected", state === "connected");
      el.classList.toggle("disconnected", state === "disconnected");
      el.textContent = state === "connected" ? "live" : "reconnecting…";
    });
    document.body.setAttribute("data-ws", state);
  }
  document.addEventListener("htmx:wsOpen", function () { setStatus("connected"); });
  document.addEventListener("htmx:wsClose", function () { setStatus("disconnected"); });
  document.addEventListener("htmx:wsError", function () { setStatus("disconnected"); });
})();
