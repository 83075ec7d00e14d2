// forkserver sample site: a little progressive enhancement, no external resources.
//
// The browser test checks that this file was served and ran: once the DOM is ready,
// <html> gets the class "js" and the element with id "js-status" reads
// "script loaded". Change them here and in that test together.
"use strict";

(function () {
  function markLoaded() {
    document.documentElement.classList.add("js");
    var status = document.getElementById("js-status");
    if (status) {
      status.textContent = "script loaded";
    }
  }

  // Underline the navigation link for the page we are on.
  function markCurrentPage() {
    var here = window.location.pathname.replace(/index\.html$/, "");
    var links = document.querySelectorAll(".masthead nav a");
    for (var i = 0; i < links.length; i++) {
      var target = new URL(links[i].getAttribute("href"), window.location.href).pathname;
      if (target.replace(/index\.html$/, "") === here) {
        links[i].classList.add("current");
      }
    }
  }

  // Fill the tour's commands with the address this page was actually served from,
  // so `curl -I http://127.0.0.1:8080/` becomes whatever host and port you used.
  function showOrigin() {
    if (window.location.protocol !== "http:") {
      return;
    }
    var spans = document.querySelectorAll("[data-origin]");
    for (var i = 0; i < spans.length; i++) {
      spans[i].textContent = window.location.origin;
    }
  }

  // A "copy" button on every command block (commands only: prompts and comments
  // are skipped). Without the Clipboard API the buttons are simply not added.
  function addCopyButtons() {
    if (!navigator.clipboard || !window.isSecureContext) {
      return;
    }
    var blocks = document.querySelectorAll("pre.commands");
    for (var i = 0; i < blocks.length; i++) {
      (function (pre) {
        var button = document.createElement("button");
        button.type = "button";
        button.className = "copy";
        button.textContent = "copy";
        button.addEventListener("click", function () {
          var lines = [];
          var commands = pre.querySelectorAll(".cmd");
          for (var j = 0; j < commands.length; j++) {
            lines.push(commands[j].textContent);
          }
          navigator.clipboard.writeText(lines.join("\n")).then(function () {
            button.textContent = "copied";
            window.setTimeout(function () {
              button.textContent = "copy";
            }, 1500);
          });
        });
        pre.appendChild(button);
      })(blocks[i]);
    }
  }

  function start() {
    markLoaded();
    markCurrentPage();
    showOrigin();
    addCopyButtons();
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
