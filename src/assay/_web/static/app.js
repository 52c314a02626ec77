// assay annotation app: keyboard shortcuts of the review page (no inline script: CSP script-src 'self').
// j/k next/previous item, p/f pass/fail, 1-4 severity, / focus rationale, Enter save (Shift+Enter: new line).
(function () {
  "use strict";
  function typing(el) {
    return el && (el.tagName === "TEXTAREA" || el.tagName === "SELECT" ||
      (el.tagName === "INPUT" && el.type !== "radio" && el.type !== "checkbox"));
  }
  function check(form, name, value) {
    var input = form.querySelector('input[name="' + name + '"][value="' + value + '"]');
    if (input) { input.checked = true; input.focus(); }
  }
  function follow(id) {
    var link = document.getElementById(id);
    if (link) { window.location.assign(link.href); }
  }
  document.addEventListener("keydown", function (ev) {
    var form = document.getElementById("label-form");
    if (!form || ev.ctrlKey || ev.metaKey || ev.altKey) { return; }
    var active = document.activeElement;
    if (ev.key === "Enter" && !ev.shiftKey) {
      if (active && (active.tagName === "BUTTON" || active.tagName === "A" || active.tagName === "SUMMARY")) { return; }
      ev.preventDefault();
      form.requestSubmit();
      return;
    }
    if (typing(active)) {
      if (ev.key === "Escape") { active.blur(); }
      return;
    }
    switch (ev.key) {
      case "j": follow("next-link"); break;
      case "k": follow("prev-link"); break;
      case "p": check(form, "label", "pass"); break;
      case "f": check(form, "label", "fail"); break;
      case "1": case "2": case "3": case "4": check(form, "severity", ev.key); break;
      case "/": ev.preventDefault(); document.getElementById("rationale").focus(); return;
      default: return;
    }
  });
}());
