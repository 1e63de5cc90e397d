// pulsestock console: live updates over server-sent events, and keyboard shortcuts.
// On an event a page cares about (its body's data-live kinds; its data-sku, when set), the
// page fetches itself again and swaps each [data-live-region] for the fresh one: no reload,
// no client-side rendering. At most one refetch runs at a time; events during it cause one
// more. EventSource reconnects on its own; if it gives up, a new one is opened.
(function () {
  "use strict";
  var body = document.body;
  var kinds = (body.dataset.live || "").split(/\s+/).filter(Boolean);
  var sku = body.dataset.sku || "";
  var status = document.querySelector("[data-testid=live-status]");
  var inFlight = false;
  var again = false;
  var source = null;

  function say(state, text) {
    if (!status) return;
    status.dataset.state = state;
    status.textContent = text;
  }

  function wanted(event) {
    if (event.kind === "resync") return true;
    if (kinds.indexOf(event.kind) < 0) return false;
    if (!sku) return true;
    return event.sku === sku || event.sku === "" || event.kind === "fulfillment";
  }

  function refresh() {
    if (inFlight) { again = true; return; }
    inFlight = true;
    again = false;
    fetch(window.location.href, { headers: { "X-Console-Refresh": "1" }, credentials: "same-origin" })
      .then(function (response) { return response.ok ? response.text() : null; })
      .then(function (html) {
        if (html === null) return;
        var fresh = new DOMParser().parseFromString(html, "text/html");
        var active = document.activeElement;
        var focusId = active && active.closest("[data-live-region]") ? active.getAttribute("data-testid") || active.id : null;
        document.querySelectorAll("[data-live-region]").forEach(function (region) {
          var replacement = region.id && fresh.getElementById(region.id);
          if (replacement) region.replaceWith(document.importNode(replacement, true));
        });
        if (focusId) {
          var back = document.getElementById(focusId) || document.querySelector("[data-testid='" + focusId + "']");
          if (back) back.focus();
        }
        body.dataset.refreshed = String(Date.now());
        wireForms();
      })
      .catch(function () { /* the next event tries again */ })
      .then(function () {
        inFlight = false;
        if (again) refresh();
      });
  }

  function connect() {
    if (!kinds.length || !window.EventSource) { say("off", "live updates: off on this page"); return; }
    source = new EventSource("/events");
    source.addEventListener("open", function () { say("live", "live updates: on"); });
    source.addEventListener("update", function (message) {
      var data;
      try { data = JSON.parse(message.data); } catch (e) { return; }
      body.dataset.lastEvent = String(Date.now());
      if ((data.events || []).some(wanted)) refresh();
    });
    source.addEventListener("error", function () {
      say("reconnecting", "live updates: reconnecting…");
      if (source.readyState === EventSource.CLOSED) {
        source = null;
        window.setTimeout(connect, 3000);
      }
    });
  }

  // A double click submits once: the button is disabled on the first submit (the server is
  // idempotent anyway: approving the same recommendation again answers the same PO).
  function wireForms() {
    document.querySelectorAll("form[data-testid=approve-form]").forEach(function (form) {
      if (form.dataset.wired) return;
      form.dataset.wired = "1";
      form.addEventListener("submit", function (event) {
        if (form.dataset.sent) { event.preventDefault(); return; }
        form.dataset.sent = "1";
        var button = form.querySelector("button");
        if (button) { button.disabled = true; button.textContent = "Approving…"; }
      });
    });
  }

  // Keys: "/" search; j/k next/previous row link; g then n/c/l to Now/Channels/Live.
  var pendingG = false;
  document.addEventListener("keydown", function (event) {
    var target = event.target;
    var typing = target && (target.tagName === "INPUT" || target.tagName === "TEXTAREA" || target.isContentEditable);
    if (typing || event.ctrlKey || event.metaKey || event.altKey) return;
    if (pendingG) {
      pendingG = false;
      var to = { n: "/", c: "/channels", l: "/live" }[event.key];
      if (to) { event.preventDefault(); window.location.assign(to); }
      return;
    }
    if (event.key === "/") {
      var search = document.getElementById("sku-search");
      if (search) { event.preventDefault(); search.focus(); }
    } else if (event.key === "g") {
      pendingG = true;
    } else if (event.key === "j" || event.key === "k") {
      var links = Array.prototype.slice.call(document.querySelectorAll("main tbody tr th a, main .pulse-head a"));
      if (!links.length) return;
      var at = links.indexOf(document.activeElement);
      var next = event.key === "j" ? Math.min(at + 1, links.length - 1) : Math.max(at - 1, 0);
      event.preventDefault();
      links[next].focus();
    }
  });

  wireForms();
  connect();
})();
