/**
 * The wire format of docs/PROTOCOL.md: request frames out, server frames in. Pure functions over bytes, so
 * they are tested against the document's own byte examples without a socket.
 */
import { Status } from "./codes.js";
import { ClientError } from "./errors.js";

export const GROUP_ID_LEN = 52;
const REQUEST_HEADER = 7; // ver u8, cmd u16, len u32
const SERVER_HEADER = 8; // ver u8, cmd u16, status u8, len u32
const MAX_UID_BYTES = 64;
const MAX_U16 = 0xffff;

const encoder = new TextEncoder();
const strictDecoder = new TextDecoder("utf-8", { fatal: true });

/** A message given as text is sent as its UTF-8 bytes. */
export type Message = Uint8Array | string;

export function messageBytes(message: Message | undefined): Uint8Array {
  if (message === undefined) return new Uint8Array(0);
  return typeof message === "string" ? encoder.encode(message) : message;
}

/** One request frame: header and payload in one buffer, ready for one WebSocket message. */
export function encodeRequest(ver: number, cmd: number, payload: Uint8Array): Uint8Array {
  checkRange("ver", ver, 0xff);
  checkRange("cmd", cmd, MAX_U16);
  const frame = new Uint8Array(REQUEST_HEADER + payload.length);
  const view = new DataView(frame.buffer);
  view.setUint8(0, ver);
  view.setUint16(1, cmd);
  view.setUint32(3, payload.length);
  frame.set(payload, REQUEST_HEADER);
  return frame;
}

export function helloPayload(uid: string, token: string): Uint8Array {
  const uidBytes = encoder.encode(uid);
  if (uidBytes.length < 1 || uidBytes.length > MAX_UID_BYTES) {
    throw new ClientError("invalid-argument", `uid must be 1 to 64 bytes of UTF-8, got ${uidBytes.length}`);
  }
  const tokenBytes = encoder.encode(token);
  if (tokenBytes.length > MAX_U16) {
    throw new ClientError("invalid-argument", `token must be at most 65535 bytes, got ${tokenBytes.length}`);
  }
  return concat([Uint8Array.of(uidBytes.length), uidBytes, u16(tokenBytes.length), tokenBytes]);
}

/** Parameters of Create and RandJoin; see docs/PROTOCOL.md, "Commands". */
export interface GroupParams {
  /** Keep the group while it has no members (until `ttlSeconds` pass empty). Default true. */
  allowEmpty?: boolean;
  /** Seconds an empty group lives; more than 10. Default 60. */
  ttlSeconds?: number;
  /** Merge broadcasts and push them every `intervalMs` (below 100: no merging). Default 0. */
  intervalMs?: number;
}

export function createPayload(params: GroupParams, join: boolean): Uint8Array {
  const { allowEmpty, ttl, interval } = groupFields(params);
  return concat([Uint8Array.of(allowEmpty ? 1 : 0, join ? 1 : 0), u16(ttl), u16(interval)]);
}

export function randJoinPayload(params: GroupParams, message: Uint8Array): Uint8Array {
  const { allowEmpty, ttl, interval } = groupFields(params);
  return concat([Uint8Array.of(allowEmpty ? 1 : 0), u16(ttl), u16(interval), message]);
}

/** Join and Leave: the group, then the message for the other members (none when empty). */
export function groupMessagePayload(groupId: string, message: Uint8Array): Uint8Array {
  return concat([groupIdBytes(groupId), message]);
}

export function broadcastPayload(groupId: string, reliable: boolean, message: Uint8Array): Uint8Array {
  return concat([groupIdBytes(groupId), Uint8Array.of(reliable ? 1 : 0), message]);
}

/** The 52 bytes of a group ID, refusing anything that is not 52 printable ASCII characters. */
export function groupIdBytes(groupId: string): Uint8Array {
  if (!isGroupId(groupId)) {
    throw new ClientError(
      "invalid-argument",
      `a group ID is 52 printable ASCII characters (0x21..0x7e), got ${JSON.stringify(groupId)}`,
    );
  }
  return encoder.encode(groupId);
}

export function isGroupId(value: string): boolean {
  if (value.length !== GROUP_ID_LEN) return false;
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i);
    if (c < 0x21 || c > 0x7e) return false;
  }
  return true;
}

/** One frame from the server. `payload` is a view into the received message. */
export interface ServerFrame {
  ver: number;
  cmd: number;
  status: number;
  payload: Uint8Array;
}

/**
 * Splits one WebSocket message into its frames. The server never lets a frame span messages, so a message
 * that ends inside a frame, or a frame longer than `maxFrameBytes`, is a protocol error.
 */
export function decodeServerFrames(message: Uint8Array, maxFrameBytes: number): ServerFrame[] {
  const frames: ServerFrame[] = [];
  const view = new DataView(message.buffer, message.byteOffset, message.byteLength);
  let at = 0;
  while (at < message.length) {
    if (message.length - at < SERVER_HEADER) {
      throw protocol(`a message ends inside a frame header (${message.length - at} of 8 bytes)`);
    }
    const ver = view.getUint8(at);
    const cmd = view.getUint16(at + 1);
    const status = view.getUint8(at + 3);
    const len = view.getUint32(at + 4);
    if (status !== Status.OK && status !== Status.BAD && status !== Status.ERR && status !== Status.PUSH) {
      throw protocol(`status ${status} in a frame (ver ${ver}, cmd ${cmd})`);
    }
    if (len > maxFrameBytes) {
      throw protocol(`a frame of ${len} bytes is above maxFrameBytes (${maxFrameBytes})`);
    }
    const start = at + SERVER_HEADER;
    if (message.length - start < len) {
      throw protocol(`a message ends inside a frame (${message.length - start} of ${len} bytes)`);
    }
    frames.push({ ver, cmd, status, payload: message.subarray(start, start + len) });
    at = start + len;
  }
  return frames;
}

/** The payload of status Bad and Err: `code:u16, gid_len:u8 (0 or 52), group_id, message`. */
export interface ErrorPayload {
  code: number;
  groupId: string | undefined;
  message: string;
}

export function decodeError(payload: Uint8Array): ErrorPayload {
  const reader = new Reader(payload, "error payload");
  const code = reader.u16();
  const gidLen = reader.u8();
  if (gidLen !== 0 && gidLen !== GROUP_ID_LEN) throw protocol(`error payload with gid_len ${gidLen}`);
  const groupId = gidLen === 0 ? undefined : reader.groupId();
  return { code, groupId, message: reader.restText() };
}

/** A member-joined or member-left push: `group_id, uid_len:u8, uid, message`. */
export interface MemberPush {
  groupId: string;
  uid: string;
  message: Uint8Array;
}

export function decodeMemberPush(payload: Uint8Array): MemberPush {
  const reader = new Reader(payload, "member push");
  const groupId = reader.groupId();
  const uid = reader.text(reader.u8());
  return { groupId, uid, message: reader.rest() };
}

/** One entry of a broadcast push; `uid` is empty for an announce from the server itself. */
export interface BroadcastEntry {
  uid: string;
  message: Uint8Array;
}

export function decodeBroadcastPush(payload: Uint8Array): { groupId: string; entries: BroadcastEntry[] } {
  const reader = new Reader(payload, "broadcast push");
  const groupId = reader.groupId();
  const entries: BroadcastEntry[] = [];
  do {
    const uid = reader.text(reader.u8());
    const message = reader.bytes(reader.u32());
    entries.push({ uid, message });
  } while (!reader.done());
  return { groupId, entries };
}

export function decodeGroupId(payload: Uint8Array, what: string): string {
  const reader = new Reader(payload, what);
  const groupId = reader.groupId();
  if (!reader.done()) throw protocol(`${what} has ${payload.length - GROUP_ID_LEN} bytes after the group ID`);
  return groupId;
}

/** Reads fields in order; every short read or bad field is a protocol error naming what was read. */
class Reader {
  private at = 0;
  private readonly view: DataView;

  constructor(
    private readonly bytesIn: Uint8Array,
    private readonly what: string,
  ) {
    this.view = new DataView(bytesIn.buffer, bytesIn.byteOffset, bytesIn.byteLength);
  }

  done(): boolean {
    return this.at === this.bytesIn.length;
  }

  u8(): number {
    this.need(1);
    return this.view.getUint8(this.at++);
  }

  u16(): number {
    this.need(2);
    const value = this.view.getUint16(this.at);
    this.at += 2;
    return value;
  }

  u32(): number {
    this.need(4);
    const value = this.view.getUint32(this.at);
    this.at += 4;
    return value;
  }

  bytes(len: number): Uint8Array {
    this.need(len);
    const slice = this.bytesIn.subarray(this.at, this.at + len);
    this.at += len;
    return slice;
  }

  text(len: number): string {
    return this.utf8(this.bytes(len));
  }

  groupId(): string {
    const raw = this.bytes(GROUP_ID_LEN);
    for (const c of raw) {
      if (c < 0x21 || c > 0x7e) throw protocol(`${this.what} has a group ID with byte 0x${c.toString(16)}`);
    }
    return String.fromCharCode(...raw);
  }

  rest(): Uint8Array {
    return this.bytes(this.bytesIn.length - this.at);
  }

  restText(): string {
    return this.utf8(this.rest());
  }

  private utf8(raw: Uint8Array): string {
    try {
      return strictDecoder.decode(raw);
    } catch {
      throw protocol(`${this.what} has text that is not UTF-8`);
    }
  }

  private need(len: number): void {
    if (this.bytesIn.length - this.at < len) {
      throw protocol(`${this.what} ends early: ${len} more bytes wanted at byte ${this.at} of ${this.bytesIn.length}`);
    }
  }
}

function groupFields(params: GroupParams): { allowEmpty: boolean; ttl: number; interval: number } {
  const ttl = params.ttlSeconds ?? 60;
  const interval = params.intervalMs ?? 0;
  checkRange("ttlSeconds", ttl, MAX_U16);
  checkRange("intervalMs", interval, MAX_U16);
  return { allowEmpty: params.allowEmpty ?? true, ttl, interval };
}

function checkRange(what: string, value: number, max: number): void {
  if (!Number.isInteger(value) || value < 0 || value > max) {
    throw new ClientError("invalid-argument", `${what} must be an integer from 0 to ${max}, got ${value}`);
  }
}

function u16(value: number): Uint8Array {
  return Uint8Array.of(value >> 8, value & 0xff);
}

function concat(parts: Uint8Array[]): Uint8Array {
  let len = 0;
  for (const part of parts) len += part.length;
  const out = new Uint8Array(len);
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

function protocol(message: string): ClientError {
  return new ClientError("protocol", message);
}

