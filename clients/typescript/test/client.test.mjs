// GroupClient against a scripted server: requests and answers, pushes, limits, keep-alive and reconnect.
import assert from "node:assert/strict";
import { mock, test } from "node:test";
import { ClientError, ErrorCode, GroupClient, GroupError, text } from "../dist/index.js";
import { FakeServer, GROUP, OTHER, bytes, defaultAnswer, errorPayload, serverFrame, settle, u32 } from "./support/fake-socket.mjs";

const URL = "ws://127.0.0.1:7200";

async function connected(options = {}) {
  const server = new FakeServer();
  const client = await GroupClient.connect(URL, { uid: "alice", WebSocket: server.WebSocket, keepAliveMs: 0, ...options });
  return { server, client };
}

function record(client, ...types) {
  const seen = [];
  for (const type of types) client.on(type, (event) => seen.push([type, event]));
  return seen;
}

test("connect says Hello with the uid and token and keeps the session ID", async () => {
  const { server, client } = await connected({ token: "secret" });
  const [hello] = server.last.sent;
  assert.deepEqual([hello.ver, hello.cmd], [0, 4]);
  assert.deepEqual(hello.payload, bytes(5, "alice", 0, 6, "secret"));
  assert.equal(client.sid, "ab".repeat(16));
  assert.equal(server.last.binaryType, "arraybuffer");
  assert.ok(client.connected);
});

test("a refused Hello rejects connect with the server's code", async () => {
  const server = new FakeServer();
  server.answer = (socket, { ver, cmd }) =>
    setImmediate(() => socket.deliver(serverFrame(ver, cmd, 4, errorPayload(8, undefined, "invalid token"))));
  await assert.rejects(GroupClient.connect(URL, { uid: "alice", WebSocket: server.WebSocket }), (e) => {
    return e instanceof GroupError && e.code === ErrorCode.AUTH_FAILED && e.message === "AUTH_FAILED 8: invalid token";
  });
});

test("group commands send their frames and resolve with the group; refusals carry code and group", async () => {
  const { server, client } = await connected();
  assert.equal(await client.create({ ttlSeconds: 30, intervalMs: 100 }), GROUP);
  assert.deepEqual(server.last.sent[1].payload, bytes(1, 1, 0, 30, 0, 100));
  assert.deepEqual([...client.groups], [GROUP]);

  server.answer = (socket, { ver, cmd, payload }) => {
    if (cmd === 111) setImmediate(() => socket.deliver(serverFrame(ver, cmd, 4, errorPayload(200, OTHER, "group not found"))));
  };
  await assert.rejects(client.join(OTHER, "hi"), (e) => e instanceof GroupError && e.code === 200 && e.groupId === OTHER);
  assert.deepEqual([...client.groups], [GROUP], "a refused join is not remembered");

  client.broadcast(GROUP, "hello", { reliable: false });
  const sent = server.last.sent.at(-1);
  assert.deepEqual([sent.ver, sent.cmd], [1, 113]);
  assert.deepEqual(sent.payload, bytes(GROUP, 0, "hello"));
});

test("a broadcast's refusal arrives as a refused event, and answers still match their requests", async () => {
  const { server, client } = await connected();
  const seen = record(client, "refused");
  server.answer = (socket, { ver, cmd, payload }) => {
    if (cmd === 113) setImmediate(() => socket.deliver(serverFrame(1, 113, 4, errorPayload(401, GROUP, "not a member"))));
    if (cmd === 3) setImmediate(() => socket.deliver(serverFrame(ver, cmd, 1, payload)));
  };
  client.broadcast(GROUP, "x");
  const echoed = await client.ping("p");
  assert.equal(text(echoed), "p");
  await settle();
  assert.equal(seen.length, 1);
  assert.equal(seen[0][1].code, ErrorCode.BROADCAST_NOT_MEMBER);
});

test("pushes become typed events: members, merged broadcasts, announces, rejoin, offline, custom", async () => {
  const { server, client } = await connected();
  const seen = record(client, "joined", "left", "broadcast", "announce", "rejoin", "offline", "push");
  server.last.deliver(
    serverFrame(1, 111, 0xff, bytes(GROUP, 3, "bob", "yo")),
    serverFrame(1, 112, 0xff, bytes(GROUP, 3, "bob", "")),
    serverFrame(1, 113, 0xff, bytes(GROUP, 3, "bob", u32(1), "a", 0, u32(4), "news", 3, "eve", u32(1), "b")),
    serverFrame(1, 111, 0xff, bytes(GROUP, 5, "alice", "moved")),
    serverFrame(0, 6, 0xff),
    serverFrame(7, 42, 0xff, bytes("custom")),
  );
  const summary = seen.map(([type, e]) => [type, e.uid ?? "", e.message ? text(e.message) : e.payload ? text(e.payload) : ""]);
  assert.deepEqual(summary, [
    ["joined", "bob", "yo"],
    ["left", "bob", ""],
    ["broadcast", "bob", "a"],
    ["announce", "", "news"],
    ["broadcast", "eve", "b"],
    ["rejoin", "", "moved"],
    ["offline", "", ""],
    ["push", "", "custom"],
  ]);
  assert.ok(client.connected);
});

test("a timed-out request does not take the next request's answer", async () => {
  mock.timers.enable({ apis: ["setTimeout"] });
  try {
    const server = new FakeServer();
    const held = [];
    server.answer = (socket, frame) => {
      if (frame.cmd === 4) setImmediate(() => socket.deliver(serverFrame(0, 4, 1, new Uint8Array(16))));
      if (frame.cmd === 3) held.push(frame.payload);
    };
    const client = await GroupClient.connect(URL, { uid: "alice", WebSocket: server.WebSocket, keepAliveMs: 0, requestTimeoutMs: 1000 });
    const first = client.ping("first");
    mock.timers.tick(1000);
    await assert.rejects(first, (e) => e instanceof ClientError && e.kind === "timeout");
    const second = client.ping("second");
    for (const payload of held) server.last.deliver(serverFrame(0, 3, 1, payload)); // answers come in order
    assert.equal(text(await second), "second");
  } finally {
    mock.timers.reset();
  }
});

test("limits: payloads above maxPayload, a full socket buffer and too many pending requests fail at the call", async () => {
  const { server, client } = await connected({ maxPayload: 100, maxBufferedAmount: 10, maxPendingRequests: 2 });
  assert.throws(() => client.broadcast(GROUP, new Uint8Array(100)), (e) => e.kind === "invalid-argument" && e.message.includes("above maxPayload (100)"));
  server.last.bufferedAmount = 11;
  assert.throws(() => client.broadcast(GROUP, "x"), (e) => e.kind === "backpressure");
  server.last.bufferedAmount = 0;
  server.answer = () => undefined;
  const waiting = [client.ping(), client.ping()];
  await assert.rejects(client.ping(), (e) => e.kind === "backpressure" && e.message.includes("maxPendingRequests"));
  await client.close();
  await Promise.allSettled(waiting);
});

test("a frame the protocol does not allow closes the connection with 1002 and says why", async () => {
  const { server, client } = await connected({ reconnect: false });
  const seen = record(client, "disconnect", "close");
  const socket = server.last;
  socket.deliver(serverFrame(1, 113, 0xff, bytes(GROUP)).subarray(0, 20));
  await settle();
  assert.equal(socket.closedWith.code, 1002);
  assert.deepEqual(seen.map(([type, e]) => [type, e.reason.kind]), [["disconnect", "protocol"], ["close", "protocol"]]);
  assert.throws(() => client.broadcast(GROUP, "x"), (e) => e.kind === "not-connected" && e.message.includes("closed"));
});

test("a closing notice CLOSED_REPLACED ends the client without reconnecting", async () => {
  const { server, client } = await connected();
  const seen = record(client, "disconnect", "reconnecting", "close");
  server.last.deliver(serverFrame(0, 7, 4, errorPayload(11, undefined, "logged in elsewhere")));
  server.last.serverClose(1000, "");
  await settle();
  assert.deepEqual(seen.map(([type, e]) => [type, e.reason?.code]), [["disconnect", 11], ["close", 11]]);
  assert.equal(server.sockets.length, 1);
});

test("a lost connection reconnects with backoff, says Hello with a fresh token, and rejoins the groups", async () => {
  mock.timers.enable({ apis: ["setTimeout"] });
  try {
    const server = new FakeServer();
    let tokens = 0;
    const client = await GroupClient.connect(URL, {
      uid: "alice",
      token: () => `token-${++tokens}`,
      WebSocket: server.WebSocket,
      keepAliveMs: 0,
      reconnect: { initialDelayMs: 100, maxDelayMs: 400 },
    });
    await client.join(GROUP);
    await client.join(OTHER);
    const seen = record(client, "disconnect", "reconnecting", "reconnect", "close");

    server.refuseOpen = true; // the first two attempts find no server
    server.last.serverClose(1006, "");
    await settle();
    assert.throws(() => client.broadcast(GROUP, "x"), (e) => e.kind === "not-connected" && e.message.includes("reconnecting"));
    for (const wait of [100, 200]) {
      mock.timers.tick(wait);
      await settle();
    }
    server.refuseOpen = false;
    server.answer = (socket, frame) => {
      if (frame.cmd === 111 && bytes(frame.payload).subarray(0, 52).every((b, i) => b === OTHER.charCodeAt(i))) {
        setImmediate(() => socket.deliver(serverFrame(1, 111, 4, errorPayload(200, OTHER, "group not found"))));
      } else {
        defaultAnswer(socket, frame);
      }
    };
    mock.timers.tick(400);
    await settle(30);

    const types = seen.map(([type]) => type);
    assert.deepEqual(types, ["disconnect", "reconnecting", "reconnecting", "reconnecting", "reconnect"]);
    const delays = seen.filter(([type]) => type === "reconnecting").map(([, e]) => e.delayMs);
    assert.ok(delays[0] >= 50 && delays[0] <= 100 && delays[1] <= 200 && delays[2] <= 400, `backoff ${delays}`);
    const [, outcome] = seen.at(-1);
    assert.deepEqual(outcome.rejoined, [GROUP]);
    assert.deepEqual(outcome.lost.map((l) => [l.groupId, l.error.code]), [[OTHER, 200]]);
    assert.deepEqual([...client.groups], [GROUP]);
    assert.ok(client.connected);
    const hello = server.last.sent[0];
    assert.deepEqual(hello.payload, bytes(5, "alice", 0, 7, "token-4"), "the token is asked for before every attempt");
  } finally {
    mock.timers.reset();
  }
});

test("keep-alive speaks when the client is silent, and a silent server is taken for dead", async () => {
  mock.timers.enable({ apis: ["setInterval", "setTimeout"] });
  try {
    const server = new FakeServer();
    const client = await GroupClient.connect(URL, {
      uid: "alice",
      WebSocket: server.WebSocket,
      keepAliveMs: 1000,
      deadAfterMs: 3000,
      reconnect: false,
    });
    const socket = server.last;
    const keepAlives = () => socket.sent.filter((f) => f.ver === 0 && f.cmd === 1).length;
    mock.timers.tick(1000);
    await settle();
    assert.equal(keepAlives(), 1, "one KeepAlive after a silent second");
    client.broadcast(GROUP, "x");
    mock.timers.tick(1000);
    await settle();
    assert.equal(keepAlives(), 1, "no KeepAlive after a second in which the client sent");

    const seen = record(client, "close");
    server.answer = () => undefined; // the server freezes
    for (let i = 0; i < 3; i++) {
      mock.timers.tick(1000);
      await settle();
    }
    assert.equal(socket.closedWith?.code, 4000);
    assert.equal(seen.length, 1);
    assert.match(seen[0][1].reason.message, /nothing from the server for 3000 ms/);
  } finally {
    mock.timers.reset();
  }
});

test("close says Fin, ends the session and stops reconnecting", async () => {
  const { server, client } = await connected();
  const seen = record(client, "close", "reconnecting");
  await client.close();
  await settle();
  assert.deepEqual(server.last.sent.map((f) => [f.ver, f.cmd]).at(-1), [0, 0]);
  assert.deepEqual(seen.map(([type]) => type), ["close"]);
  assert.equal(server.sockets.length, 1);
  await assert.rejects(client.ping(), (e) => e.kind === "not-connected");
});
