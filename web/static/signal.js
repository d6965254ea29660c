// The signalling client: one websocket, typed requests with replies, pushed events, liveness.
// Protocol: docs/protocol.md.

const PROTOCOL = 1;

export class SignalError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

export class Signal extends EventTarget {
  constructor({ reconnect = true } = {}) {
    super();
    this.reconnect = reconnect;
    this.nextId = 1;
    this.pending = new Map();
    this.ws = null;
    this.closed = false;
    this.heartbeat = 10;
    this.lastHeard = 0;
    this.livenessTimer = null;
    this.retryDelay = 500;
  }

  url() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    return `${scheme}//${location.host}/ws`;
  }

  // Resolves on the server's welcome message.
  connect() {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(this.url());
      this.ws = ws;
      let welcomed = false;
      ws.onmessage = (event) => {
        this.lastHeard = Date.now();
        let msg;
        try { msg = JSON.parse(event.data); } catch { return; }
        if (msg.type === "welcome") {
          welcomed = true;
          this.heartbeat = msg.heartbeat_s;
          this.retryDelay = 500;
          this.startLiveness();
          resolve(msg);
        }
        this.deliver(msg);
      };
      ws.onclose = (event) => {
        this.stopLiveness();
        for (const { reject: fail } of this.pending.values()) {
          fail(new SignalError("disconnected", "connection closed"));
        }
        this.pending.clear();
        if (!welcomed) reject(new SignalError("disconnected", `closed (${event.code})`));
        this.dispatchEvent(new CustomEvent("close", { detail: { code: event.code, reason: event.reason } }));
        // 4008: the server dropped us for falling behind (a slow link): come back. 4009: another
        // page holds our seat now: stay away. 4010: the consultation's server is gone or the
        // room moved: come back and join again. Other codes of ours mean the server said no.
        if (this.reconnect && !this.closed && (event.code < 4000 || event.code === 4008 || event.code === 4010)) {
          this.scheduleReconnect();
        }
      };
    });
  }

  scheduleReconnect() {
    const delay = this.retryDelay;
    this.retryDelay = Math.min(this.retryDelay * 2, 10000);
    setTimeout(async () => {
      if (this.closed) return;
      // A refused upgrade looks like any other lost connection; ask whether the session ended
      // (signed out, or expired) and if so go back to the sign-in page instead of retrying.
      try {
        const me = await fetch("/me", { cache: "no-store", credentials: "same-origin" });
        if (me.status === 401) {
          this.closed = true;
          location.assign(`/login?next=${encodeURIComponent(location.pathname)}`);
          return;
        }
      } catch { /* the server is unreachable: keep trying */ }
      try {
        const welcome = await this.connect();
        this.dispatchEvent(new CustomEvent("reconnect", { detail: welcome }));
      } catch { /* onclose schedules the next try */ }
    }, delay);
  }

  // The browser cannot see websocket pings, so the client pings too and gives up on silence.
  startLiveness() {
    this.stopLiveness();
    const every = this.heartbeat * 1000;
    this.livenessTimer = setInterval(() => {
      if (Date.now() - this.lastHeard > 3 * every) {
        this.ws.close();
        return;
      }
      this.send("ping").catch(() => {});
    }, every);
  }

  stopLiveness() {
    if (this.livenessTimer) clearInterval(this.livenessTimer);
    this.livenessTimer = null;
  }

  deliver(msg) {
    if (msg.re !== null && msg.re !== undefined && this.pending.has(msg.re)) {
      const { resolve, reject } = this.pending.get(msg.re);
      this.pending.delete(msg.re);
      if (msg.type === "error") reject(new SignalError(msg.code, msg.message));
      else resolve(msg);
    }
    this.dispatchEvent(new CustomEvent(msg.type, { detail: msg }));
  }

  // Sends a request; resolves with the reply, rejects with a SignalError.
  send(type, fields = {}) {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      if (!this.ws || this.ws.readyState !== WebSocket.OPEN) {
        reject(new SignalError("disconnected", "not connected"));
        return;
      }
      this.pending.set(id, { resolve, reject });
      this.ws.send(JSON.stringify({ v: PROTOCOL, type, id, ...fields }));
    });
  }

  // Sends a message that needs no reply (a link report); dropped while disconnected.
  notify(type, fields = {}) {
    if (this.open) this.ws.send(JSON.stringify({ v: PROTOCOL, type, ...fields }));
  }

  get open() {
    return Boolean(this.ws) && this.ws.readyState === WebSocket.OPEN;
  }

  on(type, handler) {
    this.addEventListener(type, (event) => handler(event.detail));
  }

  close() {
    this.closed = true;
    this.stopLiveness();
    if (this.ws) this.ws.close(1000);
  }
}
