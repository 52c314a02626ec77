// assay annotation app: keyboard shortcuts, the shortcut help, the saved-label announcement and step notes in place
// (no inline script: CSP script-src 'self').
// Review page: j/k next/previous item, / focus rationale, Enter save (Shift+Enter: new line), Escape leaves a
// text box. A letter or digit picks the input of the label form whose data-key it is: p/f pass/fail and 1-4
// severity on a binary criterion; on the other scales digits pick the level, the class, or left (1) /
// right (2) / tie (3) of a pairwise item. Every page: ? opens the shortcut help (#help), Escape closes it.
// Every key handled here is listed in base.html's #help (tests/test_web_a11y.py checks it).
(function () {
  "use strict";
  function typing(el) {
    return el && (el.tagName === "TEXTAREA" || el.tagName === "SELECT" ||
      (el.tagName === "INPUT" && el.type !== "radio" && el.type !== "checkbox"));
  }
  function pick(form, key) {
    var input = form.querySelector('input[data-key="' + key + '"]');
    if (input) { input.checked = true; input.focus(); }
    return input !== null;
  }
  function follow(id) {
    var link = document.getElementById(id);
    if (link) { window.location.assign(link.href); }
  }
  // A step's "comment / correct" link opens the note form in place (htmx), instead of a page of its own.
  document.addEventListener("click", function (ev) {
    var link = ev.target instanceof Element ? ev.target.closest("a.note-link") : null;
    if (!link || !window.htmx || ev.ctrlKey || ev.metaKey || ev.shiftKey) { return; }
    ev.preventDefault();
    window.htmx.ajax("GET", link.getAttribute("href"), {target: link.closest(".step-notes"), swap: "outerHTML"});
  });
  function showHelp() {
    var help = document.getElementById("help");
    if (help && !help.open) { help.showModal(); }
  }
  document.addEventListener("DOMContentLoaded", function () {
    var button = document.getElementById("help-button");
    if (button) { button.addEventListener("click", showHelp); }
    var saved = document.querySelector("[data-announce]");
    var region = document.getElementById("announce");
    if (saved && region) {
      // a live region announces a change, not what it held at load: fill it a moment after
      window.setTimeout(function () { region.textContent = saved.getAttribute("data-announce"); }, 150);
    }
  });
  document.addEventListener("keydown", function (ev) {
    if (ev.ctrlKey || ev.metaKey || ev.altKey) { return; }
    var active = document.activeElement;
    var help = document.getElementById("help");
    if (help && help.open) { return; }  // the dialog handles Escape itself
    if (ev.key === "?" && !typing(active)) { ev.preventDefault(); showHelp(); return; }
    var form = document.getElementById("label-form");
    if (!form) { return; }
    // keys typed into another form (a step note, a search) belong to that form
    if (active && active.form && active.form !== form) { return; }
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
    if (ev.key === "j") { follow("next-link"); return; }
    if (ev.key === "k") { follow("prev-link"); return; }
    if (ev.key === "/") { ev.preventDefault(); document.getElementById("rationale").focus(); return; }
    if (ev.key.length === 1) { pick(form, ev.key); }
  });
}());
