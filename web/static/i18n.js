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
