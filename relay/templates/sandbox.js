// The sandbox checkout's Midtrans buttons: each posts its signed notification to the relay's own
// /callbacks/midtrans, as Midtrans would, then shows the page again. Served from the relay (the
// page's Content-Security-Policy allows no inline script).
for (const button of document.querySelectorAll("button[data-notification]")) {
  button.addEventListener("click", async () => {
    const response = await fetch("/callbacks/midtrans", {
      method: "POST", headers: {"content-type": "application/json"},
      body: button.dataset.notification});
    const body = await response.json();
    document.getElementById("result").textContent =
      response.ok ? "Gateway notification accepted (" + button.id + ")." : body.error + ": " + body.detail;
    if (response.ok) location.reload();
  });
}
