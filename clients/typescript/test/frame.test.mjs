// The codec against docs/PROTOCOL.md's own byte examples, its validation, and hostile input.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import {
  broadcastPayload,
  createPayload,
  decodeBroadcastPush,
  decodeError,
  decodeGroupId,
  decodeMemberPush,
  decodeServerFrames,
  encodeRequest,
  groupMessagePayload,
  helloPayload,
  randJoinPayload,
} from "../dist/frame.js";
import { ClientError } from "../dist/index.js";
import { GROUP } from "./support/fake-socket.mjs";

const protocolDoc = readFileSync(new URL("../../../docs/PROTOCOL.md", import.meta.url), "utf8");

/** The named hex examples of docs/PROTOCOL.md, with `<id>` replaced by the example group ID's bytes. */
function example(name) {
  const line = protocolDoc.split("\n").find((l) => l.startsWith(`    ${name}: `));
  assert.ok(line, `docs/PROTOCOL.md has the example ${name}`);
  const idHex = Buffer.from(GROUP, "ascii").toString("hex");
  const hex = line.slice(name.length + 6).replaceAll("<id>", idHex).replaceAll(" ", "");
  return new Uint8Array(Buffer.from(hex, "hex"));
}

const MAX = 1 << 20;

test("requests encode byte for byte as the protocol's examples", () => {
  assert.deepEqual(encodeRequest(0, 4, helloPayload("alice", "")), example("hello-request"));
  assert.deepEqual(
    encodeRequest(1, 110, createPayload({ allowEmpty: true, ttlSeconds: 60, intervalMs: 0 }, true)),
    example("create-request"),
  );
  assert.deepEqual(encodeRequest(1, 113, broadcastPayload(GROUP, true, new TextEncoder().encode("hi"))), example("broadcast-request"));
});

test("server frames decode as the protocol's examples say", () => {
  const header = example("hello-response-header");
  const [hello] = decodeServerFrames(Uint8Array.of(...header, ...new Uint8Array(16)), MAX);
  assert.deepEqual([hello.ver, hello.cmd, hello.status, hello.payload.length], [0, 4, 1, 16]);

  const [created] = decodeServerFrames(example("create-response"), MAX);
  assert.equal(decodeGroupId(created.payload, "create"), GROUP);

  const [joined] = decodeServerFrames(example("join-push"), MAX);
  assert.equal(joined.status, 0xff);
  const member = decodeMemberPush(joined.payload);
  assert.deepEqual([member.groupId, member.uid, new TextDecoder().decode(member.message)], [GROUP, "bob", "yo"]);

  const [refused] = decodeServerFrames(example("join-refused"), MAX);
  assert.equal(refused.status, 4);
  assert.deepEqual(decodeError(refused.payload), { code: 200, groupId: GROUP, message: "group not found" });

  const [pushed] = decodeServerFrames(example("broadcast-push"), MAX);
  const { groupId, entries } = decodeBroadcastPush(pushed.payload);
  assert.equal(groupId, GROUP);
  assert.deepEqual(entries.map((e) => [e.uid, new TextDecoder().decode(e.message)]), [["alice", "hi"]]);
});

test("one message may hold several frames", () => {
  const two = Uint8Array.of(...example("join-push"), ...example("broadcast-push"));
  assert.deepEqual(decodeServerFrames(two, MAX).map((f) => f.cmd), [111, 113]);
});

test("payloads of Join, Leave and RandJoin follow the command table", () => {
  const message = new TextEncoder().encode("yo");
  assert.deepEqual(groupMessagePayload(GROUP, message), Uint8Array.of(...Buffer.from(GROUP), 0x79, 0x6f));
  assert.deepEqual(randJoinPayload({ allowEmpty: false, ttlSeconds: 300, intervalMs: 100 }, message), Uint8Array.of(0, 1, 44, 0, 100, 0x79, 0x6f));
  assert.deepEqual(createPayload({}, false), Uint8Array.of(1, 0, 0, 60, 0, 0));
});

test("bad arguments are refused at the call, naming what was wrong", () => {
  const invalid = (fn, words) =>
    assert.throws(fn, (e) => e instanceof ClientError && e.kind === "invalid-argument" && e.message.includes(words));
  invalid(() => helloPayload("", ""), "uid must be 1 to 64 bytes");
  invalid(() => helloPayload("x".repeat(65), ""), "got 65");
  invalid(() => helloPayload("ü".repeat(33), ""), "got 66"); // bytes, not characters
  invalid(() => groupMessagePayload("short", new Uint8Array(0)), "52 printable ASCII");
  invalid(() => groupMessagePayload(GROUP.slice(1) + " ", new Uint8Array(0)), "52 printable ASCII");
  invalid(() => createPayload({ ttlSeconds: 70000 }, true), "ttlSeconds must be an integer from 0 to 65535");
  invalid(() => createPayload({ intervalMs: 1.5 }, true), "intervalMs");
  invalid(() => encodeRequest(256, 1, new Uint8Array(0)), "ver");
});

test("malformed server frames are protocol errors that say what was wrong", () => {
  const protocolError = (fn, words) =>
    assert.throws(fn, (e) => e instanceof ClientError && e.kind === "protocol" && e.message.includes(words));
  const push = example("broadcast-push");
  protocolError(() => decodeServerFrames(push.subarray(0, 5), MAX), "inside a frame header");
  protocolError(() => decodeServerFrames(push.subarray(0, push.length - 1), MAX), "ends inside a frame");
  protocolError(() => decodeServerFrames(push, 10), "above maxFrameBytes (10)");
  protocolError(() => decodeServerFrames(Uint8Array.of(0, 0, 1, 7, 0, 0, 0, 0), MAX), "status 7");
  protocolError(() => decodeError(Uint8Array.of(0, 200, 3, 1, 2, 3)), "gid_len 3");
  protocolError(() => decodeMemberPush(new Uint8Array(52).fill(0x41)), "member push ends early");
  protocolError(() => decodeBroadcastPush(Uint8Array.of(...Buffer.from(GROUP), 0, 0, 0, 0, 9)), "ends early");
  protocolError(() => decodeMemberPush(Uint8Array.of(...Buffer.from(GROUP), 1, 0xff)), "not UTF-8");
  protocolError(() => decodeGroupId(new Uint8Array(52).fill(0x20), "answer"), "byte 0x20");
  protocolError(() => decodeGroupId(Uint8Array.of(...Buffer.from(GROUP), 1), "join answer"), "1 bytes after");
});

test("random and mutated input never throws anything but a protocol error", () => {
  let seed = 0x9e3779b9;
  const next = () => {
    seed ^= seed << 13;
    seed ^= seed >>> 17;
    seed ^= seed << 5;
    return seed >>> 0;
  };
  const valid = [example("join-push"), example("broadcast-push"), example("join-refused"), example("create-response")];
  const decoders = [decodeMemberPush, decodeBroadcastPush, decodeError, (p) => decodeGroupId(p, "x")];
  for (let round = 0; round < 20000; round++) {
    const base = valid[next() % valid.length];
    const input = round % 2 === 0 ? base.slice() : new Uint8Array(next() % 80).map(() => next() & 0xff);
    for (let flips = next() % 4; flips > 0 && input.length > 0; flips--) input[next() % input.length] = next() & 0xff;
    const cut = input.subarray(0, next() % (input.length + 1));
    for (const attempt of [() => decodeServerFrames(cut, 4096), () => decoders[next() % decoders.length](cut)]) {
      try {
        attempt();
      } catch (error) {
        assert.ok(error instanceof ClientError && error.kind === "protocol", `round ${round}: ${error}`);
      }
    }
  }
});
