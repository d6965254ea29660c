// The replay page: both seats' recordings on one shared timeline, seeking from the event list,
// and the verification badge.  Every file's media time 0 is the moment recording started, so
// one position drives both videos.
import { t } from "./i18n.js";

const root = document.querySelector(".replay");
const videos = [...document.querySelectorAll("video.seat")];
const playButton = document.getElementById("play");
const seek = document.getElementById("seek");
const clock = document.getElementById("clock");
// Recordings are written live and may carry no duration: the manifest's length is the truth.
let length = Number(root.dataset.length) || 0;
let position = 0;
let playing = false;
let frame = 0;
// Videos further than this from the shared position are moved back onto it.
const DRIFT_S = 0.3;

function mmss(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const rest = String(s % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${rest}` : `${m}:${rest}`;
}

// A video has media at `at` unless its (known) duration ends before it.
const covers = (video, at) => !Number.isFinite(video.duration) || at < video.duration;

function show() {
  seek.value = String(position);
  clock.textContent = `${mmss(position)} / ${mmss(length)}`;
  playButton.textContent = playing ? t("replay.pause") : t("replay.play");
}

function align(video) {
  if (Math.abs(video.currentTime - position) > DRIFT_S) video.currentTime = position;
}

function seekTo(seconds) {
  position = Math.min(Math.max(0, seconds), length || seconds);
  for (const video of videos) align(video);
  if (playing) start();
  show();
}

function start() {
  for (const video of videos) {
    if (covers(video, position)) video.play().catch(() => {});
  }
}

function tick() {
  if (!playing) return;
  // The first video still playing leads; the other follows it.
  const lead = videos.find((v) => !v.paused && !v.ended);
  if (lead) position = lead.currentTime;
  for (const video of videos) {
    if (video !== lead && !video.paused) align(video);
  }
  if (!lead || position >= length) {
    position = Math.min(position, length);
    pause();
    return;
  }
  show();
  frame = requestAnimationFrame(tick);
}

function play() {
  if (position >= length) position = 0;
  for (const video of videos) align(video);
  playing = true;
  start();
  cancelAnimationFrame(frame);
  frame = requestAnimationFrame(tick);
  show();
}

function pause() {
  playing = false;
  cancelAnimationFrame(frame);
  for (const video of videos) video.pause();
  show();
}

if (playButton) {
  playButton.addEventListener("click", () => (playing ? pause() : play()));
  seek.addEventListener("input", () => seekTo(Number(seek.value)));
  for (const video of videos) {
    video.addEventListener("loadedmetadata", () => {
      if (!length && Number.isFinite(video.duration)) {
        length = Math.max(length, video.duration);
        seek.max = String(length);
        show();
      }
    });
  }
  document.addEventListener("click", (event) => {
    const target = event.target.closest("[data-seek]");
    if (!target) return;
    seekTo(Number(target.dataset.seek));
    seek.scrollIntoView({ block: "nearest" });
  });
  show();
}

// The badge: the server checks the files, the manifest and the audit log.
async function checkIntegrity() {
  const badge = document.getElementById("verify");
  const notes = document.getElementById("verify-notes");
  const note = (text) => {
    const li = document.createElement("li");
    li.textContent = text;
    return li;
  };
  try {
    const resp = await fetch(root.dataset.verify, { credentials: "same-origin" });
    if (!resp.ok) throw new Error(String(resp.status));
    const report = await resp.json();
    badge.dataset.state = report.ok ? "ok" : "tampered";
    badge.textContent = report.ok
      ? t("replay.verified")
      : t("replay.tampered", { problems: report.problems.join("; ") });
    const lines = [...report.problems, ...report.notices];
    if (root.dataset.purged === "true") lines.unshift(t("replay.purged"));
    notes.replaceChildren(...lines.map(note));
    notes.hidden = lines.length === 0;
  } catch (error) {
    badge.dataset.state = "failed";
    badge.textContent = t("replay.verify_failed", { reason: error.message });
  }
}

checkIntegrity();
