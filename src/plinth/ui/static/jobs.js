// A job's page: while the job may still write to its log, ask for what came after the
// offset the page has reached, every second, and append it (as text, never as HTML).
// Each answer carries the job's status (the badge follows it) and says when nothing
// more will come; then the polling stops. A failed fetch is tried again next time.
const ENDED = ["succeeded", "failed", "cancelled", "lost"];

const followLog = () => {
  const log = document.getElementById("job-log");
  if (!log || !log.hasAttribute("data-follow")) return;
  const seconds = Number(log.dataset.pollSeconds) || 1;
  let timer = null;
  const showStatus = (status) => {
    const badge = document.getElementById("job-status");
    if (badge && status && badge.textContent !== status) {
      badge.textContent = status;
      badge.className = "status status-" + status;
    }
    if (ENDED.includes(status)) document.getElementById("cancel-form")?.remove();
  };
  const poll = async () => {
    const url = new URL(log.dataset.logs, window.location.href);
    url.searchParams.set("offset", log.dataset.offset);
    url.searchParams.set("attempt", log.dataset.attempt);
    url.searchParams.set("rank", log.dataset.rank);
    url.searchParams.set("latest", log.dataset.latest);
    try {
      const response = await fetch(url, { headers: { Accept: "text/html" } });
      if (!response.ok) return;
      const page = new DOMParser().parseFromString(await response.text(), "text/html");
      const chunk = page.querySelector(".log-chunk");
      if (!chunk) return;
      const text = chunk.textContent;
      if (text) {
        const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
        log.appendChild(document.createTextNode(text));
        if (atBottom) log.scrollTop = log.scrollHeight;
      }
      log.dataset.offset = chunk.dataset.nextOffset;
      log.dataset.attempt = chunk.dataset.attempt;
      showStatus(chunk.dataset.status);
      if (chunk.dataset.done === "true") {
        clearInterval(timer);
        log.removeAttribute("data-follow");
        const note = document.querySelector(".log-note");
        if (note) note.textContent = "The whole log.";
      }
    } catch (_) {
      // offline for a moment: the next poll tries again
    }
  };
  let busy = false;
  timer = setInterval(async () => {
    if (busy) return;  // one request at a time: offsets never overlap
    busy = true;
    try { await poll(); } finally { busy = false; }
  }, seconds * 1000);
};
document.addEventListener("DOMContentLoaded", followLog);
