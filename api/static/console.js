// The console's behaviour, in plain JavaScript (no build step, no network beyond this server).
"use strict";

const apiKeyField = () => document.getElementById("api-key");

function headers(json) {
  const out = json ? { "Content-Type": "application/json" } : {};
  const key = apiKeyField().value.trim();
  if (key) out["X-API-Key"] = key;
  return out;
}

async function call(method, path, body) {
  const response = await fetch(path, { method, headers: headers(body !== undefined), body: body === undefined ? undefined : JSON.stringify(body) });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error((data.error && data.error.message) || `HTTP ${response.status}`);
  return data;
}

function toast(message) {
  const box = document.getElementById("toast");
  box.textContent = message;
  box.classList.add("shown");
  clearTimeout(box.timer);
  box.timer = setTimeout(() => box.classList.remove("shown"), 2500);
}

function readFile(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result); // a data: URI, which the API accepts as base64
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

// ------------------------------------------------------------------ search
async function search(event) {
  if (event) event.preventDefault();
  const text = document.getElementById("query-text").value.trim();
  const file = document.getElementById("query-image").files[0];
  const errorBox = document.getElementById("search-error");
  errorBox.hidden = true;
  if (!text && !file) return;
  const query = {};
  if (text) query.text = text;
  if (file) query.image = await readFile(file);
  const userId = document.getElementById("user-id").value.trim() || "console-shopper";
  localStorage.setItem("ranker.user", userId);
  try {
    const ranking = await call("POST", "/v1/rank", { user_id: userId, query, num_results: 12, explain: true });
    render(ranking);
  } catch (error) {
    errorBox.textContent = error.message;
    errorBox.hidden = false;
  }
}

function render(ranking) {
  const served = document.getElementById("served-by");
  const experiment = ranking.experiment;
  served.textContent = `ranking ${ranking.ranking_id} · policy ${ranking.policy_version}` +
    (experiment ? ` · experiment ${experiment.experiment_id}, ${experiment.arm ? "arm " + experiment.arm : "interleaved"}` : " · no experiment");
  served.dataset.rankingId = ranking.ranking_id;
  const grid = document.getElementById("results");
  grid.replaceChildren();
  const template = document.getElementById("card-template");
  ranking.items.forEach((item, index) => {
    const card = template.content.firstElementChild.cloneNode(true);
    card.dataset.itemId = item.item_id;
    const photo = card.querySelector(".photo");
    photo.src = `/images/${encodeURIComponent(item.item_id)}`;
    photo.alt = item.title;
    card.querySelector(".title").textContent = item.title;
    card.querySelector(".category").textContent = item.category;
    card.querySelector(".price").textContent = item.price.toFixed(2);
    const e = item.explain;
    card.querySelector(".explain").textContent =
      `score ${item.score.toFixed(3)} = text ${e.text_similarity.toFixed(3)} + image ${e.image_similarity.toFixed(3)} + policy ${e.policy_adjustment >= 0 ? "+" : ""}${e.policy_adjustment.toFixed(3)}`;
    showWhy(card, e);
    if (experiment && experiment.teams) {
      const team = document.createElement("div");
      team.className = "team";
      team.textContent = `placed by ${experiment.teams[index]}`;
      card.insertBefore(team, card.querySelector(".actions"));
    }
    card.addEventListener("click", () => feedback(ranking, item, "click", card));
    card.querySelector(".buy").addEventListener("click", (clickEvent) => {
      clickEvent.stopPropagation();
      feedback(ranking, item, "purchase", card);
    });
    grid.appendChild(card);
  });
  if (!ranking.logged) toast("Redis is unreachable: this ranking cannot take feedback");
}

// The item's two reasons under it, and the contributions (largest first) in a details element.
function showWhy(card, e) {
  const reasons = card.querySelector(".reasons");
  (e.reasons || []).forEach((reason) => {
    const line = document.createElement("li");
    line.textContent = reason;
    reasons.appendChild(line);
  });
  const why = card.querySelector(".why");
  if (!e.contributions) {
    why.hidden = true; // retrieval order or an interleaving: no one policy placed the slate
    return;
  }
  why.addEventListener("click", (clickEvent) => clickEvent.stopPropagation()); // opening it is not a click on the item
  const signed = (value) => `${value >= 0 ? "+" : ""}${value.toFixed(3)}`;
  const rows = [["baseline", e.baseline.toFixed(3)]];
  Object.entries(e.contributions)
    .sort((a, b) => Math.abs(b[1]) - Math.abs(a[1]))
    .forEach(([group, value]) => rows.push([group.replace(/_/g, " "), signed(value)]));
  rows.push(["score here", e.score.toFixed(3)]);
  const table = card.querySelector(".contributions");
  rows.forEach(([name, value]) => {
    const row = table.insertRow();
    row.insertCell().textContent = name;
    row.insertCell().textContent = value;
  });
}

async function feedback(ranking, item, type, card) {
  const note = card.querySelector(".feedback");
  try {
    const result = await call("POST", "/v1/feedback", { ranking_id: ranking.ranking_id, events: [{ item_id: item.item_id, type, event_id: `${ranking.ranking_id}-${item.item_id}-${type}` }] });
    card.classList.add("clicked");
    note.textContent = result.accepted ? `${type} recorded` : `${type} already recorded`;
    card.dataset.feedback = (card.dataset.feedback || "") + type + " ";
  } catch (error) {
    note.textContent = error.message;
    toast(error.message);
  }
}

// ---------------------------------------------------------------- policies
async function policyAction(path, label) {
  try {
    const result = await call("POST", path);
    toast(`${label}: now serving ${result.current}`);
    setTimeout(() => window.location.reload(), 600);
  } catch (error) {
    toast(`${label} failed: ${error.message}`);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  const key = apiKeyField();
  key.value = localStorage.getItem("ranker.apiKey") || "";
  key.addEventListener("change", () => localStorage.setItem("ranker.apiKey", key.value.trim()));
  const page = document.body.dataset.page;
  if (page === "search") {
    const user = localStorage.getItem("ranker.user");
    if (user) document.getElementById("user-id").value = user;
    document.getElementById("search-form").addEventListener("submit", search);
    if (document.getElementById("query-text").value) search();
  }
  if (page === "policies") {
    document.querySelectorAll("button.promote").forEach((button) =>
      button.addEventListener("click", () => policyAction(`/v1/policies/${encodeURIComponent(button.dataset.version)}/promote`, "promote")));
    const rollback = document.getElementById("rollback");
    if (rollback) rollback.addEventListener("click", () => policyAction("/v1/policies/rollback", "rollback"));
  }
});
