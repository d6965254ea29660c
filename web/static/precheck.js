// The pre-call check on the spoke page: camera, microphone and the uplink to the server.
// The uplink figure is kept for the consult page, which reports it so that the call's video
// starts at a step this link can carry (docs/protocol.md, section 13).
import { t } from "./i18n.js";

const button = document.getElementById("precheck-run");
const preview = document.getElementById("precheck-video");

function mark(id, state, text) {
  const li = document.getElementById(id);
  li.dataset.state = state;
  li.querySelector("span").textContent = text;
}

async function checkDevices() {
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: { width: 640, height: 360 } });
  } catch (e) {
    mark("check-camera", "bad", t("precheck.denied", { reason: e.message }));
    mark("check-mic", "bad", t("precheck.denied", { reason: e.message }));
    return;
  }
  try {
    const video = stream.getVideoTracks()[0];
    preview.srcObject = stream;
    preview.hidden = false;
    mark("check-camera", video ? "ok" : "bad", video ? video.label || t("precheck.ok") : t("precheck.missing"));
    mark("check-mic", "checking", t("precheck.speak"));
    const level = await microphoneLevel(stream);
    mark("check-mic", level > 0.01 ? "ok" : "warn", level > 0.01 ? t("precheck.heard") : t("precheck.silent"));
  } finally {
    setTimeout(() => {
      stream.getTracks().forEach((track) => track.stop());
      preview.srcObject = null;
      preview.hidden = true;
    }, 1500);
  }
}

// The loudest level the microphone picks up over a second and a half (0 to 1).
async function microphoneLevel(stream) {
  const context = new AudioContext();
  try {
    const analyser = context.createAnalyser();
    context.createMediaStreamSource(stream).connect(analyser);
    const samples = new Float32Array(analyser.fftSize);
    let peak = 0;
    const until = performance.now() + 1500;
    while (performance.now() < until) {
      analyser.getFloatTimeDomainData(samples);
      for (const v of samples) peak = Math.max(peak, Math.abs(v));
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    return peak;
  } finally {
    context.close();
  }
}

async function upload(bytes) {
  const body = new Uint8Array(bytes);
  crypto.getRandomValues(body.subarray(0, Math.min(bytes, 65536)));
  const started = performance.now();
  const response = await fetch("/probe", { method: "POST", body, cache: "no-store", credentials: "same-origin" });
  if (!response.ok) throw new Error(`HTTP ${response.status}`);
  const result = await response.json();
  result.elapsed = (performance.now() - started) / 1000;
  return result;
}

async function checkUplink() {
  mark("check-uplink", "checking", t("precheck.measuring"));
  try {
    // A small block first; a larger one only if the link is fast enough to send it quickly.
    let result = await upload(32 * 1024);
    if (result.elapsed < 1.0) result = await upload(128 * 1024);
    if (result.kbps == null) throw new Error("no measurement");
    sessionStorage.setItem("setu.probe", JSON.stringify({ kbps: result.kbps, at: Date.now() }));
    const text = result.video
      ? t("precheck.uplink_video", { kbps: Math.round(result.kbps), label: result.label })
      : t("precheck.uplink_audio", { kbps: Math.round(result.kbps) });
    mark("check-uplink", result.video ? (result.step <= 1 ? "ok" : "warn") : "bad", text);
  } catch (e) {
    mark("check-uplink", "bad", t("precheck.unreachable", { reason: e.message }));
  }
}

button.addEventListener("click", async () => {
  button.disabled = true;
  try {
    await checkDevices();
    await checkUplink();
  } finally {
    button.disabled = false;
  }
});
