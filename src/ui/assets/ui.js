// stepwise web UI: live refresh over server-sent events, payload format toggle, copy buttons.
(function () {
  "use strict";

  // A part with a form someone is filling in is not replaced under their hands.
  function editing(el) {
    return Array.prototype.some.call(el.querySelectorAll("input, textarea, select"), function (f) {
      if (f.type === "hidden" || f.type === "submit") return false;
      if (f.tagName === "SELECT") {
        return Array.prototype.some.call(f.options, function (o) { return o.selected !== o.defaultSelected; });
      }
      return f.value !== f.defaultValue;
    });
  }

  function refresh(el) {
    if (editing(el)) {
      setTimeout(function () { refresh(el); }, 2000);
      return;
    }
    if (window.htmx) window.htmx.trigger(el, "refresh");
  }

  // Parts marked data-refresh re-fetch themselves (hx-trigger="refresh") when the
  // server says something changed; bursts of changes cause one refresh.
  function startLive() {
    var url = document.body.getAttribute("data-live");
    if (!url || !window.EventSource) return;
    var pending = false;
    var source = new EventSource(url);
    source.addEventListener("change", function () {
      if (pending) return;
      pending = true;
      setTimeout(function () {
        pending = false;
        document.querySelectorAll("[data-refresh]").forEach(refresh);
      }, 250);
    });
    window.addEventListener("beforeunload", function () { source.close(); });
  }

  function setFormat(fmt) {
    document.body.classList.toggle("show-yaml", fmt === "yaml");
    document.querySelectorAll("[data-format]").forEach(function (b) {
      b.setAttribute("aria-pressed", String(b.getAttribute("data-format") === fmt));
    });
    try { localStorage.setItem("stepwise-format", fmt); } catch (e) { /* private mode */ }
  }

  function copy(button) {
    var el = document.getElementById(button.getAttribute("data-copy"));
    if (!el) return;
    var text = el.textContent;
    var done = function () {
      var old = button.textContent;
      button.textContent = "Copied";
      setTimeout(function () { button.textContent = old; }, 1200);
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, function () { fallback(text); done(); });
    } else { fallback(text); done(); }
  }

  function fallback(text) {
    var t = document.createElement("textarea");
    t.value = text;
    document.body.appendChild(t);
    t.select();
    try { document.execCommand("copy"); } catch (e) { /* nothing to do */ }
    t.remove();
  }

  document.addEventListener("click", function (e) {
    var b = e.target.closest("[data-format]");
    if (b) { setFormat(b.getAttribute("data-format")); return; }
    var c = e.target.closest("[data-copy]");
    if (c) copy(c);
  });

  // Keep the chosen format after a live refresh swaps new payloads in.
  document.addEventListener("htmx:afterSwap", function () {
    var fmt = null;
    try { fmt = localStorage.getItem("stepwise-format"); } catch (e) { /* private mode */ }
    if (fmt) setFormat(fmt);
  });

  document.addEventListener("DOMContentLoaded", function () {
    var fmt = null;
    try { fmt = localStorage.getItem("stepwise-format"); } catch (e) { /* private mode */ }
    if (fmt) setFormat(fmt);
    startLive();
  });
})();
