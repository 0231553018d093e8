// Progressive enhancement only: every page works without it.
// Log out: shown while there is a session; POSTs with the CSRF token the server set.
document.addEventListener("DOMContentLoaded", () => {
  const button = document.getElementById("logout");
  const csrf = document.cookie.split("; ").find((c) => c.startsWith("plinth_csrf="));
  if (!button || !csrf) return;
  button.hidden = false;
  button.addEventListener("click", async () => {
    await fetch("/logout", { method: "POST", headers: { "X-CSRF-Token": csrf.split("=")[1] } });
    window.location.href = "/login";
  });
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
