"use strict";
// Signs in with fetch so a wrong key is shown on this page; without
// script the form posts itself and the server answers a page.
document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("signin");
  const errorBox = document.getElementById("signin-error");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    errorBox.textContent = "";
    const key = document.getElementById("key").value;
    let resp;
    try {
      resp = await fetch("/admin/session", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        credentials: "same-origin",
        body: JSON.stringify({ key }),
      });
    } catch (e) {
      showError("Herald did not answer: " + e.message);
      return;
    }
    if (resp.ok) {
      location.reload();
      return;
    }
    let message = "Sign-in failed (" + resp.status + ")";
    try {
      const body = await resp.json();
      if (body && body.error && body.error.message) message = body.error.message;
    } catch (_) { /* not JSON: keep the status */ }
    showError(message);
  });

  function showError(text) {
    errorBox.textContent = "";
    const p = document.createElement("p");
    p.className = "error";
    p.setAttribute("role", "alert");
    p.textContent = text;
    errorBox.appendChild(p);
  }
});
