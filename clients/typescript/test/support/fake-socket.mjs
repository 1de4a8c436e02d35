// A scripted stand-in for the WebSocket class: the tests play the server, frame by frame.
import { decodeServerFrames } from "../../dist/frame.js";

export const CONNECTING = 0;
export const OPEN = 1;
export const CLOSED = 3;

/** Every socket the client opened, in order; `answer` decides what the "server" says to each request. */
export class FakeServer {
  constructor() {
    this.sockets = [];
    this.refuseOpen = false;
    this.answer = (socket, frame) => defaultAnswer(socket, frame);
    const server = this;
    this.WebSocket = class FakeWebSocket {
      constructor(url) {
        this.url = url;
        this.readyState = CONNECTING;
        this.bufferedAmount = 0;
        this.binaryType = "blob";
        this.sent = [];
        this.closedWith = undefined;
        this.onopen = null;
        this.onmessage = null;
        this.onclose = null;
        this.onerror = null;
        server.sockets.push(this);
        setImmediate(() => (server.refuseOpen ? this.serverClose(1006, "") : this.open()));
      }
      open() {
        this.readyState = OPEN;
        this.onopen?.({});
      }
      send(data) {
        if (this.readyState !== OPEN) throw new Error("send on a socket that is not open");
        const frame = parseRequest(data);
        this.sent.push(frame);
        server.answer(this, frame);
      }
      close(code, reason) {
        if (this.readyState === CLOSED) return;
        this.closedWith = { code, reason };
        this.serverClose(code ?? 1005, reason ?? "");
      }
      /** The server closes (or the network drops) the connection. */
      serverClose(code, reason) {
        if (this.readyState === CLOSED) return;
        this.readyState = CLOSED;
        setImmediate(() => this.onclose?.({ code, reason }));
      }
      /** The server sends one WebSocket message made of these frames. */
      deliver(...frames) {
        const total = frames.reduce((n, f) => n + f.length, 0);
        const message = new Uint8Array(total);
        let at = 0;
        for (const f of frames) {
          message.set(f, at);
          at += f.length;
        }
        this.onmessage?.({ data: message.buffer });
      }
    };
  }

  get last() {
    return this.sockets[this.sockets.length - 1];
  }
}

export function parseRequest(bytes) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const len = view.getUint32(3);
  if (bytes.length !== 7 + len) throw new Error(`request frame of ${bytes.length} bytes says len ${len}`);
  return { ver: view.getUint8(0), cmd: view.getUint16(1), payload: bytes.slice(7) };
}

/** A server frame: ver, cmd, status, payload. */
export function serverFrame(ver, cmd, status, payload = new Uint8Array(0)) {
  const out = new Uint8Array(8 + payload.length);
  const view = new DataView(out.buffer);
  view.setUint8(0, ver);
  view.setUint16(1, cmd);
  view.setUint8(3, status);
  view.setUint32(4, payload.length);
  out.set(payload, 8);
  return out;
}

export function bytes(...parts) {
  const chunks = parts.map((p) => (typeof p === "string" ? new TextEncoder().encode(p) : p instanceof Uint8Array ? p : Uint8Array.of(p)));
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}

export function u16(n) {
  return Uint8Array.of(n >> 8, n & 0xff);
}

export function u32(n) {
  return Uint8Array.of(n >>> 24, (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff);
}

export function errorPayload(code, groupId, message) {
  return groupId === undefined ? bytes(u16(code), 0, message) : bytes(u16(code), 52, groupId, message);
}

export const GROUP = "0000018c2e9a43007f0000011fa4000000000000000000000000";
export const OTHER = "0000018c2e9a43017f0000011fa4000000000000000000000000";

/** Hello gets a session; KeepAlive, Fin and Ping their answers; Create and Join the group; Broadcast nothing. */
export function defaultAnswer(socket, { ver, cmd, payload }) {
  const ok = (body) => setImmediate(() => socket.readyState === OPEN && socket.deliver(serverFrame(ver, cmd, 1, body)));
  if (ver === 0 && cmd === 4) ok(new Uint8Array(16).fill(0xab));
  else if (ver === 0 && (cmd === 1 || cmd === 3)) ok(payload);
  else if (ver === 0 && cmd === 0) {
    ok(new Uint8Array(0));
    setImmediate(() => socket.serverClose(1000, ""));
  } else if (ver === 1 && cmd === 110) ok(bytes(GROUP));
  else if (ver === 1 && (cmd === 111 || cmd === 112)) ok(payload.slice(0, 52));
}

export function flush() {
  return new Promise((resolve) => setImmediate(resolve));
}

export async function settle(rounds = 10) {
  for (let i = 0; i < rounds; i++) await flush();
}

export { decodeServerFrames };
