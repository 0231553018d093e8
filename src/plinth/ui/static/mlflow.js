// MLflow's client prints links into MLflow's UI: /mlflow/#/experiments/ID,
// /mlflow/#/experiments/ID/runs/RUN, /mlflow/#/models/NAME/versions/N. The part after
// "#" never reaches the server: read it here and open the same thing in Plinth's UI.
(function () {
  var path = window.location.hash.replace(/^#\/?/, "").split("?")[0];
  var parts = path.split("/").map(function (p) {
    try { return decodeURIComponent(p); } catch (e) { return ""; }
  });
  var seg = encodeURIComponent;
  var target = null;
  if (parts[0] === "experiments" && parts[2] === "runs" && parts[3]) {
    target = "/runs/" + seg(parts[3]);
  } else if (parts[0] === "experiments" && parts[1]) {
    target = "/ui/mlflow/experiments/" + seg(parts[1]);
  } else if (parts[0] === "models" && parts[1]) {
    target = "/ui/mlflow/models/" + seg(parts[1]);
    if (parts[2] === "versions" && parts[3]) target += "?version=" + seg(parts[3]);
  }
  if (target !== null) window.location.replace(target);
})();
