// Progressive enhancement only: every page works without it.
const sessionCsrf = () => {
  const found = document.cookie.split("; ").find((c) => c.startsWith("plinth_csrf="));
  return found ? found.split("=")[1] : null;
};

// Log out: shown while there is a session; POSTs with the CSRF token the server set.
const showLogout = () => {
  const button = document.getElementById("logout");
  if (button && sessionCsrf()) button.hidden = false;
};
document.addEventListener("DOMContentLoaded", showLogout);
document.addEventListener("click", async (event) => {
  if (!event.target.closest || !event.target.closest("#logout")) return;
  await fetch("/logout", { method: "POST", headers: { "X-CSRF-Token": sessionCsrf() } });
  window.location.href = "/login";
});

// Forms that change something (data-csrf): with a session, sent with its CSRF token in
// X-CSRF-Token, as every unsafe request with the session cookie must be. The answer
// is a redirect back to the page, or the page again saying why nothing changed.
// Without a session the form posts as it is (its hidden token is checked).
document.addEventListener("submit", async (event) => {
  const form = event.target;
  const csrf = sessionCsrf();
  if (!form.hasAttribute("data-csrf") || !csrf) return;
  event.preventDefault();
  const response = await fetch(form.action, {
    method: "POST",
    body: new URLSearchParams(new FormData(form)),
    headers: { "X-CSRF-Token": csrf },
  });
  if (response.redirected) {
    window.location.href = response.url;
    return;
  }
  const page = new DOMParser().parseFromString(await response.text(), "text/html");
  document.title = page.title;
  document.body.replaceWith(page.body);
  showLogout();
});

// Compare: enable the button once runs are checked and send ?runs=id1,id2.
document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("compare-form");
  if (!form) return;
  const button = document.getElementById("compare-button");
  const all = document.getElementById("select-all");
  const boxes = () => [...form.querySelectorAll("input[name=runs]")];
  const chosen = () => boxes().filter((b) => b.checked).map((b) => b.value);
  const update = () => {
    const n = chosen().length;
    button.disabled = n === 0;
    button.textContent = n ? `Compare ${n} selected` : "Compare selected";
  };
  form.addEventListener("change", (event) => {
    if (event.target === all) boxes().forEach((b) => { b.checked = all.checked; });
    update();
  });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const ids = chosen();
    if (ids.length) window.location.href = "/compare?runs=" + ids.map(encodeURIComponent).join(",");
  });
  update();
});

// Deployment page: while it is open, fetch fresh traffic charts every few seconds (the
// server reads the replicas' metrics on each call). A failed fetch keeps the old ones.
document.addEventListener("DOMContentLoaded", () => {
  const box = document.querySelector("[data-poll]");
  if (!box) return;
  const seconds = Number(box.dataset.pollSeconds) || 5;
  const refresh = async () => {
    const target = document.querySelector("[data-poll]");
    if (!target || document.hidden) return;
    try {
      const response = await fetch(target.dataset.poll, { headers: { Accept: "text/html" } });
      if (!response.ok) return;
      const charts = target.querySelector(".traffic-charts");
      if (charts) charts.outerHTML = await response.text();
    } catch (_) {
      // offline for a moment: the next poll tries again
    }
  };
  setInterval(refresh, seconds * 1000);
});
