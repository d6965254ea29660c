// The spoke console: register a patient, follow the spoke's tokens, join when called.
import { Signal } from "./signal.js";
import { t, status, errorText, serviceText } from "./i18n.js";

const signal = new Signal();
const form = document.getElementById("register");
const list = document.getElementById("tokens");
const issued = document.getElementById("issued");

function tokenItem(token) {
  const li = document.createElement("li");
  li.dataset.token = token.id;
  li.dataset.state = token.state;
  const head = document.createElement("strong");
  head.textContent = `${t("token.number")} ${token.number} · ${token.patient.name}`;
  const detail = document.createElement("span");
  detail.className = "detail";
  detail.dataset.testid = "token-status";
  detail.textContent = token.state === "waiting" && token.position
    ? t("token.position", { n: token.position })
    : t(`state.${token.state}`);
  li.append(head, detail);
  if (token.state === "waiting" && token.estimated_wait_minutes !== null) {
    const wait = document.createElement("span");
    wait.className = "detail";
    wait.dataset.testid = "token-wait";
    wait.textContent = t("token.wait", { n: token.estimated_wait_minutes });
    li.append(wait);
  }
  if (token.state === "waiting" && token.turn_near) {
    li.classList.add("near");
    const near = document.createElement("strong");
    near.className = "near";
    near.dataset.testid = "turn-near";
    near.textContent = t("token.turn_near");
    li.append(near);
  }
  if ((token.state === "called" || token.state === "in_consultation") && token.room_id) {
    const join = document.createElement("a");
    join.className = "button primary";
    join.href = `/consult/${token.room_id}`;
    join.textContent = t("token.join");
    join.dataset.testid = "join";
    li.append(join);
  }
  if (["waiting", "scheduled", "carried_over"].includes(token.state)) {
    const cancel = document.createElement("button");
    cancel.textContent = t("token.cancel");
    cancel.addEventListener("click", () => {
      signal.send("cancel_token", { token_id: token.id }).catch((e) => status(errorText(e), "error"));
    });
    li.append(cancel);
  }
  return li;
}

function render(queue) {
  const service = document.getElementById("service");
  service.textContent = serviceText(queue);
  service.dataset.open = String(queue.service_open);
  list.replaceChildren(...queue.today.slice().reverse().map(tokenItem));
  if (!queue.today.length) {
    const li = document.createElement("li");
    li.className = "muted";
    li.textContent = list.dataset.empty;
    list.append(li);
  }
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const data = new FormData(form);
  const patient = {
    name: data.get("name"),
    age: Number(data.get("age")),
    sex: data.get("sex"),
    complaint: data.get("complaint"),
    priority: data.get("urgent") ? "urgent" : "normal",
  };
  if (data.get("phone")) patient.phone = data.get("phone");
  const button = form.querySelector("button[type=submit]");
  button.disabled = true;
  try {
    const reply = await signal.send("register_patient", { patient });
    issued.textContent = t("token.issued", { n: reply.token.number, name: reply.token.patient.name });
    issued.hidden = false;
    form.reset();
    status("");
  } catch (e) {
    status(errorText(e), "error");
  } finally {
    button.disabled = false;
  }
});

signal.on("queue", render);
signal.on("close", () => status(t("conn.offline"), "warn"));
signal.on("reconnect", () => { status(""); signal.send("watch_queue").catch(() => {}); });

await signal.connect();
await signal.send("watch_queue");
