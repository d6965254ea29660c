// The page's strings, handed over by the server in <script id="i18n" type="application/json">.
const table = JSON.parse(document.getElementById("i18n").textContent);

export function t(key, params = {}) {
  const text = table[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (_, name) => String(params[name] ?? ""));
}

export function status(text, kind = "info") {
  const el = document.getElementById("status");
  el.textContent = text;
  el.dataset.kind = kind;
  el.hidden = !text;
}

export function errorText(error) {
  const key = `error.${error.code}`;
  const translated = t(key);
  return translated === key ? t("error.generic", { message: error.message }) : translated;
}

// The hub's service window, as the queue message states it, in the reader's words.
export function serviceText(queue) {
  const time = (iso) => new Date(iso).toLocaleString([], {
    weekday: "short", hour: "2-digit", minute: "2-digit",
  });
  if (queue.service_open) {
    return queue.closes_at ? t("service.open_until", { time: time(queue.closes_at) }) : "";
  }
  return queue.opens_at ? t("service.closed_opens", { time: time(queue.opens_at) }) : t("service.closed");
}
