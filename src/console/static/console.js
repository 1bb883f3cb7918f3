// parallax-mcp console: the only script of the console besides htmx (CSP: script-src 'self').
// - the login link's token comes in the URL fragment; it is posted to /login/link, never sent
//   in a URL, and removed from the address bar first;
// - htmx requests carry the CSRF token in X-CSRF-Token;
// - live pages listen to /events and fire `console:event` on <body>, which live regions use as
//   their htmx trigger (`console:refresh` too, unless the person started editing a region marked
//   `data-keep-edits`); the stream is closed when the page is left;
// - copy buttons copy a secret shown once.
(function () {
  "use strict";

  function onLogin() {
    var form = document.getElementById("login-link");
    if (!form || location.hash.length < 2) return;
    var token = decodeURIComponent(location.hash.slice(1));
    history.replaceState(null, "", location.pathname);
    form.querySelector("input[name=token]").value = token;
    form.submit();
  }

  function csrf() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.content : "";
  }

  document.addEventListener("htmx:configRequest", function (e) {
    e.detail.headers["X-CSRF-Token"] = csrf();
  });

  var source = null;
  var edited = false;
  var markEdited = function (e) {
    if (e.target.closest && e.target.closest("[data-keep-edits]")) edited = true;
  };
  document.addEventListener("input", markEdited);
  document.addEventListener("change", markEdited);
  function live() {
    var body = document.body;
    if (!body || !body.dataset.live || !window.EventSource) return;
    source = new EventSource("/events");
    var fire = function (ev) {
      var detail = { detail: { type: ev.type } };
      body.dispatchEvent(new CustomEvent("console:event", detail));
      // Regions a person is editing (a half-filled approval) are not replaced under them.
      if (!edited) body.dispatchEvent(new CustomEvent("console:refresh", detail));
    };
    (body.dataset.eventTypes || "").split(",").forEach(function (t) {
      if (t) source.addEventListener(t, fire);
    });
  }
  function close() {
    if (source) {
      source.close();
      source = null;
    }
  }
  window.addEventListener("pagehide", close);
  window.addEventListener("beforeunload", close);
  window.addEventListener("pageshow", function (e) {
    if (e.persisted && !source) live();
  });

  document.addEventListener("click", function (e) {
    var button = e.target.closest ? e.target.closest("[data-copy]") : null;
    if (!button) return;
    var el = document.getElementById(button.dataset.copy);
    if (!el) return;
    var done = function () {
      button.textContent = "Copied";
    };
    if (navigator.clipboard && navigator.clipboard.writeText) {
      navigator.clipboard.writeText(el.textContent).then(done, function () {
        selectText(el);
      });
    } else {
      selectText(el);
    }
  });
  function selectText(el) {
    var range = document.createRange();
    range.selectNodeContents(el);
    var sel = window.getSelection();
    sel.removeAllRanges();
    sel.addRange(range);
  }

  function start() {
    onLogin();
    live();
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
