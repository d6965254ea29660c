// The hub dashboard: the hub's live queue and "call next".
import { Signal } from "./signal.js";
import { t, status, errorText, serviceText } from "./i18n.js";

const signal = new Signal();
const body = document.getElementById("queue");
const empty = document.getElementById("queue-empty");
const count = document.getElementById("waiting-count");
const callNext = document.getElementById("call-next");
const today = document.getElementById("today");
let me = null;

const time = (iso) => new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });

function cell(text) {
  const td = document.createElement("td");
  td.textContent = text;
  return td;
}

function render(queue) {
  const service = document.getElementById("service");
  service.textContent = serviceText(queue);
  service.dataset.open = String(queue.service_open);
  const held = document.getElementById("held");
  held.textContent = t("hub.held", { n: queue.held.length });
  held.hidden = queue.held.length === 0;
  count.textContent = t("hub.waiting", { n: queue.waiting_total });
  body.replaceChildren(...queue.waiting.map((token) => {
    const tr = document.createElement("tr");
    tr.dataset.token = token.id;
    tr.dataset.priority = token.patient.priority;
    const name = cell(token.patient.name);
    if (token.patient.priority === "urgent") {
      const badge = document.createElement("span");
      badge.className = "badge urgent";
      badge.textContent = t("patient.urgent_badge");
      name.append(" ", badge);
    }
    const actions = document.createElement("td");
    actions.append(
      action(t("hub.call_this"), () => callToken(token.id)),
      action(t("hub.skip"), () => tokenAction("skip_token", token.id)),
    );
    tr.append(cell(token.number), name,
      cell(`${token.patient.age} · ${t(`sex.${token.patient.sex}`)}`),
      cell(token.patient.complaint), cell(token.spoke_name), cell(time(token.issued_at)), actions);
    return tr;
  }));
  empty.hidden = queue.waiting.length > 0;
  callNext.disabled = queue.waiting.length === 0;
  today.replaceChildren(...queue.today.filter((token) => token.state !== "waiting").map((token) => {
    const li = document.createElement("li");
    li.dataset.state = token.state;
    li.textContent = `${t("token.number")} ${token.number} · ${token.patient.name} · ${token.spoke_name} · ${t(`state.${token.state}`)}`;
    if (me && token.doctor === me && token.room_id &&
        (token.state === "called" || token.state === "in_consultation")) {
      const back = document.createElement("a");
      back.className = "button";
      back.href = `/consult/${token.room_id}`;
      back.textContent = t("hub.rejoin");
      li.append(" ", back);
    }
    if (token.state === "no_show") {
      li.append(" ", action(t("hub.recall"), () => tokenAction("recall_token", token.id)));
    }
    return li;
  }));
}

function action(label, onClick) {
  const button = document.createElement("button");
  button.type = "button";
  button.textContent = label;
  button.addEventListener("click", onClick);
  return button;
}

async function tokenAction(type, tokenId) {
  try {
    await signal.send(type, { token_id: tokenId });
  } catch (e) {
    status(errorText(e), "error");
  }
}

async function callToken(tokenId) {
  try {
    const reply = await signal.send("call_next", { token_id: tokenId });
    location.assign(`/consult/${reply.room_id}`);
  } catch (e) {
    status(errorText(e), "error");
  }
}

callNext.addEventListener("click", async () => {
  callNext.disabled = true;
  try {
    const reply = await signal.send("call_next");
    location.assign(`/consult/${reply.room_id}`);
  } catch (e) {
    status(errorText(e), "error");
    callNext.disabled = false;
  }
});

signal.on("queue", render);
signal.on("close", () => status(t("conn.offline"), "warn"));
signal.on("reconnect", () => { status(""); signal.send("watch_queue").catch(() => {}); });

const welcome = await signal.connect();
me = welcome.user.username;
await signal.send("watch_queue");
