// A pipeline run's page: while the run goes on, fetch the page again every few seconds
// and put its fresh run (status, graph, steps) in place of the old one; once the fresh
// one says the run has ended, stop. A failed fetch is tried again next time.
const followRun = () => {
  const section = document.getElementById("pipeline-run");
  if (!section || !section.hasAttribute("data-follow")) return;
  const seconds = Number(section.dataset.pollSeconds) || 2;
  let busy = false;
  const timer = setInterval(async () => {
    if (busy || document.hidden) return;
    busy = true;
    try {
      const current = document.getElementById("pipeline-run");
      const response = await fetch(current.dataset.poll, { headers: { Accept: "text/html" } });
      if (!response.ok) return;
      const page = new DOMParser().parseFromString(await response.text(), "text/html");
      const fresh = page.getElementById("pipeline-run");
      if (!fresh) return;
      current.replaceWith(document.adoptNode(fresh));
      if (!fresh.hasAttribute("data-follow")) clearInterval(timer);
    } catch (_) {
      // offline for a moment: the next poll tries again
    } finally {
      busy = false;
    }
  }, seconds * 1000);
};
document.addEventListener("DOMContentLoaded", followRun);
