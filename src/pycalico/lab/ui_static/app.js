// calico-lab ui: renders /api/* into the page.  Plain DOM, no framework, no build step.
"use strict";

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function table(headings, rows) {
  return el("table", {},
    el("thead", {}, el("tr", {}, ...headings.map((h) => el("th", {}, h)))),
    el("tbody", {}, ...rows.map((row) => el("tr", {}, ...row.map((c) => el("td", {}, c))))));
}

function mark(good, yes, no) {
  return el("span", { class: good ? "ok" : "bad" }, good ? yes : no);
}

async function getJSON(url, options) {
  const response = await fetch(url, options);
  const data = await response.json();
  if (!response.ok) throw new Error(data.error || response.statusText);
  return data;
}

async function fill(id, url, render, options) {
  const target = document.getElementById(id);
  try {
    target.replaceChildren(render(await getJSON(url, options)));
  } catch (error) {
    target.replaceChildren(el("span", { class: "bad" }, `error: ${error.message}`));
  }
}

function renderNodes(nodes) {
  const box = el("div", {});
  for (const node of nodes) {
    const established = node.peers.filter((p) => p.established === "yes").length;
    box.append(el("div", { class: "node", "data-node": node.name },
      el("h3", {}, `${node.name} `, el("span", { class: "muted" },
        node.addresses.join(", ") + (node.route_reflector ? " · route reflector" : ""))),
      el("div", {}, "calico-node ", mark(node.running, "running", "stopped"),
        " · Felix ", mark(node.felix_ready, "ready", "not ready"),
        ` · BGP ${established}/${node.expected_sessions} Established`),
      node.problem ? el("div", { class: "bad" }, node.problem) : "",
      table(["Peer address", "Peer type", "State", "Since", "Info"],
        node.peers.map((p) => [p.address, p.type, p.state, p.since, p.info]))));
  }
  return box;
}

function renderPods(groups) {
  const rows = [];
  for (const group of groups) {
    if (group.namespaces.length === 0) rows.push([group.node, "-", "(no pods)", "", "", ""]);
    for (const ns of group.namespaces) {
      for (const pod of ns.pods) {
        const labels = Object.entries(pod.labels).map(([k, v]) => `${k}=${v}`).join(", ");
        rows.push([group.node, ns.namespace, pod.name, pod.addresses.join(", "), labels, pod.endpoint]);
      }
    }
  }
  const grid = table(["Node", "Namespace", "Pod", "Addresses", "Labels", "WorkloadEndpoint"], rows);
  grid.id = "pods-table";
  return grid;
}

function renderMatrix(result) {
  const rows = result.pods.map((source) => [source, ...result.pods.map((destination) => {
    if (source === destination) return "·";
    const cell = (result.cells[source] || {})[destination] || {};
    const parts = Object.entries(cell).map(([column, reached]) =>
      mark(reached, `${column} ok`, `${column} --`));
    const box = el("span", {});
    parts.forEach((part, i) => { if (i) box.append(" "); box.append(part); });
    return box;
  })]);
  return el("div", {}, table(["from \\ to", ...result.pods], rows), el("p", {}, result.summary));
}

function renderFlows(data) {
  if (!data.available) return el("span", { class: "muted" }, `not available: ${data.reason}`);
  if (data.records.length === 0) {
    return el("span", { class: "muted" }, "no denied flows recorded" +
      (data.errors.length ? ` (${data.errors.join("; ")})` : ""));
  }
  return table(["Time", "Node", "Source", "Destination", "Proto", "Port", "Denied by"],
    data.records.map((r) => [new Date(r.time * 1000).toLocaleTimeString(), r.node, r.source,
      r.destination, r.protocol, r.port, r.denied_by]));
}

function renderSide(title, side) {
  if (!side) return el("p", {}, `${title}: not a Calico endpoint: no ${title.toLowerCase()} policy`);
  const rows = [];
  for (const tier of side.tiers || []) {
    for (const policy of tier.policies || []) {
      const rule = policy.rule === null || policy.rule === undefined ? "no rule matched" : `rule ${policy.rule}`;
      rows.push([tier.name, policy.kubernetes || policy.name, policy.selector || "", rule, policy.outcome]);
    }
    if (!(tier.policies || []).length) rows.push([tier.name, "(no policy selects it)", "", "", tier.outcome]);
  }
  for (const profile of side.profiles || []) {
    rows.push(["(profiles)", profile.name, "", profile.rule === null ? "no rule matched" : `rule ${profile.rule}`, profile.outcome]);
  }
  return el("div", { class: "side" },
    el("h3", {}, `${title}: ${side.endpoint || ""} `, mark(/allow/i.test(side.verdict), side.verdict, side.verdict)),
    side.reason ? el("p", { class: "muted" }, side.reason) : "",
    table(["Tier", "Policy", "Selector", "Match", "Outcome"], rows));
}

function renderExplain(data) {
  if (!data.available) return el("span", { class: "muted" }, `not available: ${data.reason}`);
  if (data.error) return el("span", { class: "bad" }, data.error);
  const answer = data.answer;
  const verdict = String(answer.verdict || "");
  return el("div", {},
    el("p", { id: "explain-verdict" }, `${answer.source} → ${answer.destination}: `,
      mark(/allow/i.test(verdict), verdict, verdict)),
    renderSide("Egress", answer.egress),
    renderSide("Ingress", answer.ingress),
    el("details", {}, el("summary", {}, "the whole answer (calicoctl explain -o json)"),
      el("pre", {}, JSON.stringify(answer, null, 2))));
}

function explain(params) {
  document.getElementById("explain").textContent = "explaining…";
  return fill("explain", "/api/explain?" + params.toString(), renderExplain);
}

function measure() {
  document.getElementById("matrix").textContent = "measuring…";
  return fill("matrix", "/api/matrix", renderMatrix, { method: "POST" });
}

function refresh() {
  document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString();
  return Promise.all([
    fill("nodes", "/api/nodes", renderNodes),
    fill("pods", "/api/pods", renderPods),
    fill("flows", "/api/flows", renderFlows),
  ]);
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("refresh").addEventListener("click", refresh);
  document.getElementById("run-matrix").addEventListener("click", measure);
  const form = document.getElementById("explain-form");
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    explain(new URLSearchParams(new FormData(form)));
  });
  // ?from=..&to=.. fills the form and asks at once (a link to an answer; the tests use it).
  const query = new URLSearchParams(window.location.search);
  const work = [refresh()];
  if (query.get("from") && query.get("to")) {
    for (const name of ["from", "to", "port", "protocol"]) {
      if (query.get(name)) form.elements[name].value = query.get(name);
    }
    work.push(explain(new URLSearchParams(new FormData(form))));
  }
  if (query.get("matrix")) work.push(measure());
  Promise.all(work).then(() => document.body.setAttribute("data-loaded", "yes"));
});
