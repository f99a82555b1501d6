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
  function trim() {
    document.querySelectorAll("[data-max-rows]").forEach(function (holder) {
      var max = parseInt(holder.getAttribute("data-max-rows"), 10) || 100;
      // A snapshot replaces the whole <tbody>, so the bound lives on the table around it.
      var box = holder.tagName === "TABLE" ? holder.tBodies[0] : holder;
      if (!box) return;
      while (box.children.length > max) box.removeChild(box.lastElementChild);
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

  // An agent that comes up after the page was rendered has no row to replace yet: htmx drops
  // an out-of-band fragment without a target, so its pushed row (_agent_row.html) is appended.
  document.addEventListener("htmx:oobErrorNoTarget", function (evt) {
    var row = evt.detail && evt.detail.content;
    var rows = document.getElementById("agent-rows");
    if (!rows || !row || !row.id || row.id.indexOf("agent-") !== 0) return;
    row.removeAttribute("hx-swap-oob");
    rows.appendChild(row);
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
