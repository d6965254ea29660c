// The consult page: camera and microphone, one peer connection to the server, hang-up.
import { Signal } from "./signal.js";
import { t, status, errorText } from "./i18n.js";

const root = document.querySelector(".consult");
const roomId = root.dataset.room;
const conn = document.getElementById("conn");
const localVideo = document.getElementById("local");
const remoteVideo = document.getElementById("remote");
const muteButton = document.getElementById("mute");
const cameraButton = document.getElementById("camera");
const hangupButton = document.getElementById("hangup");

const signal = new Signal();
let local = null;   // MediaStream from the camera and microphone
let pc = null;      // the current RTCPeerConnection
let iceServers = [];
let ended = false;
let videoSender = null;  // the RTCRtpSender of our camera in the current peer connection
let audioSender = null;  // ... and of our microphone
let ownStep = null;      // the last `quality` for our seat: what we must send
let peerName = "";
// Exposed for diagnostics and tests, read-only: the live peer connection, the last `quality`
// for each seat and the last `network`, each stamped with its arrival (`at`, Date.now()), and
// the recent `quality` messages in order (the last DIAG_STEPS). Getters hand out copies.
const DIAG_STEPS = 100;
const diag = { quality: { spoke: null, hub: null }, network: null, steps: [] };
const copyOf = (value) => (value == null ? null : JSON.parse(JSON.stringify(value)));
window.setuCall = Object.freeze({
  get pc() { return pc; },
  get ended() { return ended; },
  get seat() { return document.body.dataset.seat || null; },
  get quality() { return copyOf(diag.quality); },
  get network() { return copyOf(diag.network); },
  get steps() { return copyOf(diag.steps); },
});

function showState(key, state) {
  conn.textContent = t(key);
  conn.dataset.state = state;
}

// Only codecs the server relays without transcoding, in this order: RED before Opus, so that
// audio carries a copy of the previous frame and a single lost packet costs nothing.
function preferCodecs(transceiver, kind) {
  if (!RTCRtpReceiver.getCapabilities || !transceiver.setCodecPreferences) return;
  const wanted = kind === "video" ? ["video/vp8", "video/rtx"] : ["audio/red", "audio/opus"];
  const rank = (c) => wanted.indexOf(c.mimeType.toLowerCase());
  const codecs = RTCRtpReceiver.getCapabilities(kind).codecs
    .filter((c) => rank(c) >= 0)
    .sort((a, b) => rank(a) - rank(b));
  if (codecs.some((c) => rank(c) === (kind === "video" ? 0 : 1))) transceiver.setCodecPreferences(codecs);
}

function gatheringDone(peer, timeoutMs) {
  if (peer.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, timeoutMs);
    peer.addEventListener("icegatheringstatechange", () => {
      if (peer.iceGatheringState === "complete") { clearTimeout(timer); resolve(); }
    });
  });
}

function closePeer() {
  if (pc) {
    pc.getTransceivers().forEach((tr) => { try { tr.stop(); } catch { /* already stopped */ } });
    pc.close();
    pc = null;
  }
}

async function negotiate() {
  closePeer();
  try {
    // Fresh TURN credentials: those of the join may have expired during a long call.
    iceServers = (await signal.send("get_ice_servers")).ice_servers;
  } catch { /* keep the last ones; the offer below reports any real failure */ }
  const peer = new RTCPeerConnection({ iceServers, bundlePolicy: "max-bundle" });
  pc = peer;
  const remote = new MediaStream();
  remoteVideo.srcObject = remote;
  videoSender = null;
  audioSender = null;
  for (const track of local.getTracks()) {
    const transceiver = peer.addTransceiver(track, { direction: "sendrecv", streams: [local] });
    preferCodecs(transceiver, track.kind);
    if (track.kind === "video") videoSender = transceiver.sender;
    else audioSender = transceiver.sender;
  }
  await applyStep();
  peer.addEventListener("track", (event) => remote.addTrack(event.track));
  peer.addEventListener("connectionstatechange", () => {
    if (peer !== pc || ended) return;
    clearTimeout(stuckTimer);
    if (peer.connectionState === "connected") showState("conn.connected", "connected");
    else if (peer.connectionState === "failed") {
      showState("conn.reconnecting", "reconnecting");
      negotiate().catch((e) => status(errorText(e), "error"));
    } else if (peer.connectionState === "disconnected") {
      // A short outage heals by itself; a changed network (Wi-Fi to mobile data) does not,
      // and the server cannot restart ICE: after a while, make a new peer connection.
      showState("conn.reconnecting", "reconnecting");
      stuckTimer = setTimeout(() => {
        if (peer === pc && peer.connectionState === "disconnected" && signal.open) {
          negotiate().catch((e) => status(errorText(e), "error"));
        }
      }, STUCK_MS);
    }
  });
  const offer = await peer.createOffer();
  await peer.setLocalDescription(offer);
  await gatheringDone(peer, 3000);
  const reply = await signal.send("offer", { sdp: peer.localDescription.sdp });
  if (peer !== pc) return;
  await peer.setRemoteDescription({ type: "answer", sdp: reply.sdp });
  await applyStep();  // again once negotiated: some browsers refuse parameters before
}

// ------------------------------------------------------------------ link quality

const STUCK_MS = 6000;
let stuckTimer = null;
const REPORT_MS = 2000;
const netSelf = document.getElementById("net-self");
const netPeer = document.getElementById("net-peer");
const pausedNotice = document.getElementById("video-paused");
const stepText = document.getElementById("step");
const lowBandwidth = document.getElementById("low-bandwidth");
const steps = { spoke: null, hub: null };

// The server's step for our seat (or the brake's, below), applied to the camera's sender and to
// the microphone's bitrate.
async function applyStep() {
  if (!videoSender || !ownStep) return;
  const step = { ...ownStep, audio_kbps: Math.min(ownStep.audio_kbps, braked ? BRAKE_AUDIO_KBPS : audioGuard) };
  if (braked) step.video = false;
  const params = videoSender.getParameters();
  if (!params.encodings || !params.encodings.length) params.encodings = [{}];
  const e = params.encodings[0];
  e.active = step.video;
  if (step.video) {
    e.maxBitrate = step.max_bitrate_kbps * 1000;
    e.scaleResolutionDownBy = step.scale_down;
    e.maxFramerate = step.max_fps;
  }
  try {
    await videoSender.setParameters(params);
    if (audioSender) {
      // On the weakest links audio gives up a little too, so that it fits with its headers.
      const audio = audioSender.getParameters();
      if (!audio.encodings || !audio.encodings.length) audio.encodings = [{}];
      audio.encodings[0].maxBitrate = step.audio_kbps * 1000;
      await audioSender.setParameters(audio);
    }
  } catch (err) {
    console.info("setParameters refused", err);  // the next step or negotiation retries
  }
}

function showPaused() {
  const mine = steps[document.body.dataset.seat];
  const theirs = steps[otherSeat()];
  const lines = [];
  if (mine && !mine.video) lines.push(t("quality.paused_self"));
  if (theirs && !theirs.video) lines.push(t("quality.paused_peer", { name: peerName }));
  pausedNotice.textContent = lines.join(" ");
  pausedNotice.hidden = lines.length === 0;
  if (mine) {
    stepText.textContent = t("quality.sending", { label: mine.video ? mine.label : t("quality.audio_only") });
  }
}

function otherSeat() {
  return document.body.dataset.seat === "spoke" ? "hub" : "spoke";
}

signal.on("quality", (msg) => {
  const seen = { ...msg, at: Date.now() };
  diag.quality[msg.seat] = seen;
  diag.steps.push(seen);
  if (diag.steps.length > DIAG_STEPS) diag.steps.shift();
  steps[msg.seat] = msg;
  if (msg.seat === document.body.dataset.seat) {
    if (braked && !msg.video) braked = false;  // the server has caught up with the brake
    if (ownStep && !ownStep.video && msg.video) brakeQuietUntil = performance.now() + BRAKE_QUIET_MS;
    ownStep = msg;
    applyStep();
  }
  lowBandwidth.checked = msg.low_bandwidth;
  showPaused();
});

const RANK = { good: 3, fair: 2, poor: 1, bad: 0 };
function overall(leg) {
  const grades = [leg.up, leg.down].filter((g) => g in RANK);
  if (!grades.length) return "unknown";
  return grades.reduce((a, b) => (RANK[a] <= RANK[b] ? a : b));
}
function showLeg(el, who, leg) {
  const grade = overall(leg);
  el.dataset.grade = grade;
  el.querySelector(".net-text").textContent = `${who}: ${t(`net.${grade}`)}`;
  const parts = [];
  if (leg.rtt_ms != null) parts.push(t("net.rtt", { ms: leg.rtt_ms }));
  if (leg.up_loss != null) parts.push(t("net.up_loss", { pct: Math.round(leg.up_loss * 100) }));
  if (leg.down_loss != null) parts.push(t("net.down_loss", { pct: Math.round(leg.down_loss * 100) }));
  el.title = parts.join(" · ");
}
signal.on("network", (msg) => {
  diag.network = { ...msg, at: Date.now() };
  const seat = document.body.dataset.seat;
  showLeg(netSelf, t("net.you"), msg[seat]);
  showLeg(netPeer, peerName, msg[otherSeat()]);
});

lowBandwidth.addEventListener("change", async () => {
  try {
    await signal.send("set_low_bandwidth", { on: lowBandwidth.checked });
  } catch (e) {
    status(errorText(e), "error");
  }
});

// Every two seconds, what getStats() says of our links, for the server's adaptation.
let lastStats = null;
async function reportLinks() {
  if (!pc || ended || pc.connectionState !== "connected" || !signal.open) return;
  const report = await pc.getStats();
  const now = { at: performance.now(), sent: 0, recv: 0, got: 0, lost: 0, frames: 0 };
  const out = {};
  report.forEach((r) => {
    if (r.type === "candidate-pair" && r.nominated && r.state === "succeeded") {
      if (r.availableOutgoingBitrate) out.available_out_kbps = r.availableOutgoingBitrate / 1000;
      if (r.currentRoundTripTime != null) out.rtt_ms = r.currentRoundTripTime * 1000;
    } else if (r.type === "outbound-rtp") {
      now.sent += r.bytesSent || 0;
    } else if (r.type === "inbound-rtp") {
      now.recv += r.bytesReceived || 0;
      now.got += r.packetsReceived || 0;
      now.lost += Math.max(0, r.packetsLost || 0);
      if (r.kind === "video") now.frames += r.framesDecoded || 0;
      if (r.kind === "audio" && r.jitter != null) out.in_jitter_ms = r.jitter * 1000;
    }
  });
  if (lastStats) {
    const s = (now.at - lastStats.at) / 1000;
    if (s > 0) {
      out.out_kbps = Math.max(0, (now.sent - lastStats.sent) * 8 / 1000 / s);
      out.in_kbps = Math.max(0, (now.recv - lastStats.recv) * 8 / 1000 / s);
      out.in_fps = Math.min(240, Math.max(0, (now.frames - lastStats.frames) / s));
      const due = (now.got - lastStats.got) + (now.lost - lastStats.lost);
      if (due > 0) out.in_loss = Math.min(1, Math.max(0, (now.lost - lastStats.lost) / due));
    }
  }
  lastStats = now;
  signal.notify("link_report", out);
}
setInterval(() => { reportLinks().catch(() => { /* the next report tries again */ }); }, REPORT_MS);

// The brake.  A village link that collapses (to a few tens of kbit/s) shows in the browser's
// own estimate of its uplink within a second or two, long before the server's reports, which
// cross the same failing link, can say so; and the server, when it puts us on audio only,
// caps that estimate (REMB, over RTCP), which reaches us within a round trip where its
// `quality` message may be stuck behind the link's TCP retransmissions.  Chrome's own estimate
// rests at 30 kbit/s at times on a poor link of 150 kbit/s, where video must go on: below that
// floor is only a collapsed link or the server's cap.  The page pauses its video and lowers its
// audio at once, and tells the server, which puts both seats on audio only.
// Video comes back by the server's usual healthy hold; for a while after it does, the estimate
// (low while only audio was sent) is given time to grow again.
const BRAKE_KBPS = 25;
const BRAKE_CHECKS = 1;
const BRAKE_AUDIO_KBPS = 8;    // the audio-only rung's Opus rate
const BRAKE_QUIET_MS = 10000;
const BRAKE_GIVE_UP_MS = 60000;  // a server that never answers the brake does not hold it
let braked = false;
let brakedAt = 0;
let brakeCount = 0;
let brakeQuietUntil = 0;

// The audio guard.  Opus at the first rungs' 32 kbit/s, sent twice as RED, is some 90 kbit/s
// on the wire with its headers: more than an edge link carries by itself.  Chrome adapts its
// video to its estimate but not its audio, so when the estimate falls below AUDIO_GUARD_KBPS the
// page caps its own audio until the estimate is back above AUDIO_GUARD_OFF_KBPS, without waiting
// for a step that must cross the same link.
const AUDIO_GUARD_KBPS = 100;
const AUDIO_GUARD_OFF_KBPS = 160;
const AUDIO_GUARD_CAP_KBPS = 16;  // about 60 kbit/s as RED
let audioGuard = Infinity;

async function guardAudio(estimate) {
  let guard = audioGuard;
  if (estimate != null && estimate < AUDIO_GUARD_KBPS) guard = AUDIO_GUARD_CAP_KBPS;
  else if (estimate == null || estimate > AUDIO_GUARD_OFF_KBPS) guard = Infinity;
  if (guard === audioGuard) return;
  audioGuard = guard;
  await applyStep();
}

async function watchBrake() {
  const now = performance.now();
  if (braked && now - brakedAt > BRAKE_GIVE_UP_MS) {
    braked = false;
    await applyStep();
  }
  // "disconnected" too: a flooded link loses ICE's consent checks first.
  const up = pc && ["connected", "disconnected"].includes(pc.connectionState);
  if (!up || ended || !ownStep) {
    brakeCount = 0;
    return;
  }
  const report = await pc.getStats();
  let estimate = null;
  report.forEach((r) => {
    if (r.type === "candidate-pair" && r.nominated && r.state === "succeeded" && r.availableOutgoingBitrate) {
      estimate = r.availableOutgoingBitrate / 1000;
    }
  });
  await guardAudio(estimate);
  if (braked || !ownStep.video || now < brakeQuietUntil) {
    brakeCount = 0;
    return;
  }
  brakeCount = estimate != null && estimate < BRAKE_KBPS ? brakeCount + 1 : 0;
  if (brakeCount < BRAKE_CHECKS) return;
  brakeCount = 0;
  braked = true;
  brakedAt = now;
  await applyStep();
  signal.notify("link_report", { brake: true });
}
setInterval(() => { watchBrake().catch(() => { /* the next check tries again */ }); }, 1000);

// The pre-call check's measurement of our uplink, if it is recent: where our video starts.
function probeKbps() {
  try {
    const saved = JSON.parse(sessionStorage.getItem("setu.probe") || "null");
    if (saved && Date.now() - saved.at < 30 * 60 * 1000) return saved.kbps;
  } catch { /* nothing saved */ }
  return null;
}

async function join() {
  const joined = await signal.send("join", { room_id: roomId });
  iceServers = joined.ice_servers;
  peerName = joined.peer.name;
  lastStats = null;
  document.getElementById("low-bandwidth-label").hidden = joined.seat !== "spoke";
  const probe = probeKbps();
  if (probe != null) signal.notify("link_report", { probe_kbps: probe });
  document.getElementById("with").textContent = t("consult.with", { name: joined.peer.name, place: joined.peer.place });
  document.getElementById("remote-name").textContent = joined.peer.name;
  const p = joined.token.patient;
  document.getElementById("patient").textContent =
    `${t("token.number")} ${joined.token.number} · ${p.name} · ${p.age} · ${t(`sex.${p.sex}`)} · ${p.complaint}`;
  // Back on the same seat after the websocket dropped: a peer connection that still carries
  // media is kept if the server kept its end; otherwise (a broken one, or a room that moved to
  // another server when its own died) a new one is made.
  if (pc && pc.connectionState === "connected" && joined.media) await applyStep();
  else await negotiate();
}

function finish(detail) {
  if (ended) return;
  ended = true;
  const reason = detail && detail.reason;
  if (reason && reason !== "hangup") {
    const key = `consult.ended_${reason}`;
    const text = t(key);
    if (text !== key) document.querySelector("#ended p").textContent = text;
  }
  signal.close();
  closePeer();
  if (local) local.getTracks().forEach((track) => track.stop());
  localVideo.srcObject = null;
  remoteVideo.srcObject = null;
  document.querySelector(".videos").hidden = true;
  document.querySelector(".controls").hidden = true;
  consentBox.hidden = true;
  document.getElementById("ended").hidden = false;
  showState("consult.ended", "ended");
}

// Consent to recording: the nurse records it, the doctor confirms it, either withdraws it.
const consentBox = document.getElementById("consent");
const consentForm = document.getElementById("consent-form");
const consentDetail = document.getElementById("consent-detail");
const confirmButton = document.getElementById("consent-confirm");
const withdrawButton = document.getElementById("consent-withdraw");
const caregiverFields = document.getElementById("caregiver-fields");

function showConsent(msg) {
  const seat = document.body.dataset.seat;
  consentBox.dataset.recording = msg.recording;
  consentBox.dataset.consent = msg.state;
  let key = `consent.${msg.state}`;
  if (msg.recording === "disabled") key = "consent.recording_disabled";
  else if (msg.state === "confirmed" && msg.recording === "recording") key = "consent.recording";
  document.getElementById("recording-state").textContent = t(key);
  if (msg.given_by) {
    const who = msg.given_by === "caregiver"
      ? t("consent.by_caregiver", { name: msg.caregiver, relation: msg.relation })
      : t("consent.by_patient");
    consentDetail.textContent = `${who} · ${t(`consent.${msg.method}`)} · ${new Date(msg.recorded_at).toLocaleTimeString()}`;
    consentDetail.hidden = false;
  } else {
    consentDetail.hidden = true;
  }
  consentForm.hidden = !(seat === "spoke" && (msg.state === "none" || msg.state === "recorded"));
  confirmButton.hidden = !(seat === "hub" && msg.state === "recorded");
  withdrawButton.hidden = !(msg.state === "recorded" || msg.state === "confirmed");
}

async function consentStep(type, fields = {}) {
  try {
    showConsent(await signal.send(type, fields));
  } catch (e) {
    status(errorText(e), "error");
  }
}

consentForm.addEventListener("change", () => {
  caregiverFields.hidden = consentForm.elements.given_by.value !== "caregiver";
});
consentForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const f = consentForm.elements;
  const fields = { given_by: f.given_by.value, method: f.method.value };
  if (fields.given_by === "caregiver") {
    fields.caregiver = f.caregiver.value.trim();
    fields.relation = f.relation.value.trim();
    if (!fields.caregiver || !fields.relation) {
      status(t("consent.caregiver_needed"), "error");
      return;
    }
  }
  consentStep("record_consent", fields);
});
confirmButton.addEventListener("click", () => consentStep("confirm_consent"));
withdrawButton.addEventListener("click", () => {
  if (window.confirm(t("consent.withdraw_confirm"))) consentStep("withdraw_consent");
});
signal.on("consent", showConsent);

signal.on("peer_state", (msg) => {
  if (msg.seat === (document.body.dataset.seat || "")) return;
  if (msg.state === "disconnected") {
    if (pc && pc.connectionState === "connected") showState("conn.peer_reconnecting", "reconnecting");
  } else if (msg.state === "absent" || msg.state === "closed" || msg.state === "failed") {
    if (pc && pc.connectionState === "connected") showState("conn.waiting_peer", "waiting");
  } else if (msg.state === "connected" && pc && pc.connectionState === "connected") {
    showState("conn.connected", "connected");
  }
});
signal.on("room_ended", finish);
signal.on("error", (msg) => { if (msg.code === "replaced") finish(); });
signal.on("close", (detail) => {
  if (detail.code === 4009) finish({ reason: "replaced" });
  else if (!ended) showState("conn.reconnecting", "reconnecting");
});
// A server that is restarting takes no new room: reconnect a little later, through the load
// balancer to another server (or to this one once it is back), and join again.
const DRAINING_RETRY_MS = 5000;
const STORE_RETRY_MS = 2000;
function joinFailed(e) {
  status(errorText(e), "error");
  if (e.code === "room_ended" || e.code === "not_a_participant" || e.code === "room_not_found") finish();
  else if (e.code === "node_draining") setTimeout(() => { if (!ended && signal.ws) signal.ws.close(); }, DRAINING_RETRY_MS);
  // The queue service is briefly unreachable (a store failover): the media may still flow; try again.
  else if (e.code === "store_unavailable") setTimeout(() => { if (!ended) join().catch(joinFailed); }, STORE_RETRY_MS);
}
signal.on("reconnect", () => { join().catch(joinFailed); });

muteButton.addEventListener("click", () => {
  const track = local && local.getAudioTracks()[0];
  if (!track) return;
  track.enabled = !track.enabled;
  muteButton.textContent = t(track.enabled ? "consult.mute" : "consult.unmute");
  muteButton.setAttribute("aria-pressed", String(!track.enabled));
});
cameraButton.addEventListener("click", () => {
  const track = local && local.getVideoTracks()[0];
  if (!track) return;
  track.enabled = !track.enabled;
  cameraButton.textContent = t(track.enabled ? "consult.camera_off" : "consult.camera_on");
  cameraButton.setAttribute("aria-pressed", String(!track.enabled));
});
hangupButton.addEventListener("click", async () => {
  hangupButton.disabled = true;
  try { await signal.send("hangup"); } catch { /* the room may already be gone */ }
  finish();
});
window.addEventListener("pagehide", () => { closePeer(); });

try {
  local = await navigator.mediaDevices.getUserMedia({
    audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true, channelCount: 1 },
    video: { width: { ideal: 640 }, height: { ideal: 360 }, frameRate: { ideal: 15, max: 15 } },
  });
  localVideo.srcObject = local;
} catch (e) {
  status(t("media.denied", { reason: e.message }), "error");
  throw e;
}
try {
  const welcome = await signal.connect();
  document.body.dataset.seat = welcome.user.role === "nurse" ? "spoke" : "hub";
  await join();
} catch (e) {
  joinFailed(e);
}
