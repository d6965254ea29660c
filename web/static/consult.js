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
// Exposed for diagnostics and tests: the live peer connection.
window.setuCall = { get pc() { return pc; }, get ended() { return ended; } };

function showState(key, state) {
  conn.textContent = t(key);
  conn.dataset.state = state;
}

// Only codecs the server relays without transcoding.
function preferCodecs(transceiver, kind) {
  if (!RTCRtpReceiver.getCapabilities || !transceiver.setCodecPreferences) return;
  const wanted = kind === "video" ? ["video/vp8", "video/rtx"] : ["audio/opus"];
  const codecs = RTCRtpReceiver.getCapabilities(kind).codecs
    .filter((c) => wanted.includes(c.mimeType.toLowerCase()));
  if (codecs.length) transceiver.setCodecPreferences(codecs);
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
  const peer = new RTCPeerConnection({ iceServers, bundlePolicy: "max-bundle" });
  pc = peer;
  const remote = new MediaStream();
  remoteVideo.srcObject = remote;
  for (const track of local.getTracks()) {
    const transceiver = peer.addTransceiver(track, { direction: "sendrecv", streams: [local] });
    preferCodecs(transceiver, track.kind);
  }
  peer.addEventListener("track", (event) => remote.addTrack(event.track));
  peer.addEventListener("connectionstatechange", () => {
    if (peer !== pc || ended) return;
    if (peer.connectionState === "connected") showState("conn.connected", "connected");
    else if (peer.connectionState === "failed") {
      showState("conn.reconnecting", "reconnecting");
      negotiate().catch((e) => status(errorText(e), "error"));
    }
  });
  const offer = await peer.createOffer();
  await peer.setLocalDescription(offer);
  await gatheringDone(peer, 3000);
  const reply = await signal.send("offer", { sdp: peer.localDescription.sdp });
  if (peer !== pc) return;
  await peer.setRemoteDescription({ type: "answer", sdp: reply.sdp });
}

async function join() {
  const joined = await signal.send("join", { room_id: roomId });
  iceServers = joined.ice_servers;
  document.getElementById("with").textContent = t("consult.with", { name: joined.peer.name, place: joined.peer.place });
  document.getElementById("remote-name").textContent = joined.peer.name;
  const p = joined.token.patient;
  document.getElementById("patient").textContent =
    `${t("token.number")} ${joined.token.number} · ${p.name} · ${p.age} · ${t(`sex.${p.sex}`)} · ${p.complaint}`;
  await negotiate();
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
  if (msg.state === "absent" || msg.state === "closed" || msg.state === "failed") {
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
signal.on("reconnect", () => { join().catch((e) => { status(errorText(e), "error"); if (e.code === "room_ended") finish(); }); });

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
  status(errorText(e), "error");
  if (e.code === "room_ended" || e.code === "not_a_participant" || e.code === "room_not_found") finish();
}
