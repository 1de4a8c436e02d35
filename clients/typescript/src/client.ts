/**
 * `GroupClient`: one user's WebSocket session with a group-server node. Requests return promises; pushes
 * arrive as events; a lost connection is reconnected with backoff and the user's groups are joined again.
 */
import { Cmd, ErrorCode, Status, Ver } from "./codes.js";
import { Emitter } from "./emitter.js";
import { ClientError, GroupError } from "./errors.js";
import {
  type GroupParams,
  type Message,
  type ServerFrame,
  broadcastPayload,
  createPayload,
  decodeBroadcastPush,
  decodeError,
  decodeGroupId,
  decodeMemberPush,
  decodeServerFrames,
  encodeRequest,
  groupIdBytes,
  groupMessagePayload,
  helloPayload,
  messageBytes,
  randJoinPayload,
} from "./frame.js";
import { type ClientOptions, type Settings, type WebSocketLike, backoffDelay, settings } from "./options.js";

/** Another member joined or left (or was discarded) a group this user is in. */
export interface MemberEvent {
  groupId: string;
  uid: string;
  message: Uint8Array;
}

/** One broadcast from another member. A merged push arrives as one event per entry, in send order. */
export interface BroadcastEvent {
  groupId: string;
  uid: string;
  message: Uint8Array;
}

export interface ClientEvents {
  joined: MemberEvent;
  left: MemberEvent;
  broadcast: BroadcastEvent;
  /** A message from the server itself to every member of the group. */
  announce: { groupId: string; message: Uint8Array };
  /** The group changed owner node (in a cluster) and this user is still a member. */
  rejoin: { groupId: string; message: Uint8Array };
  /** This node is draining: create new groups elsewhere. */
  offline: Record<string, never>;
  /** A push with the server code's own ver and cmd. */
  push: { ver: number; cmd: number; payload: Uint8Array };
  /** A broadcast was refused (broadcasts have no answer on success, so refusals come as events). */
  refused: GroupError;
  /** The session ended; `reason` is a `GroupError` when the server said why (closing notices 11-16). */
  disconnect: { reason: Error; reconnecting: boolean };
  reconnecting: { attempt: number; delayMs: number };
  /** A new session is up: the groups joined again, and those that could not be (with why). */
  reconnect: { rejoined: string[]; lost: { groupId: string; error: Error }[] };
  /** The client is finished: closed by the user, replaced by another login, or out of attempts. */
  close: { reason: Error };
}

interface Pending {
  ver: number;
  cmd: number;
  /** Timed out: the answer is still awaited (answers come in order) but nobody is told. */
  abandoned: boolean;
  resolve(payload: Uint8Array): void;
  reject(error: Error): void;
  timer: ReturnType<typeof setTimeout> | undefined;
}

const OPEN = 1;
/** Closing notices after which reconnecting would be wrong: another login took over, or the token failed. */
const FINAL_CODES: ReadonlySet<number> = new Set([ErrorCode.CLOSED_REPLACED, ErrorCode.AUTH_FAILED]);

export class GroupClient extends Emitter<ClientEvents> {
  readonly url: string;
  readonly uid: string;
  private readonly settings: Settings;
  private socket: WebSocketLike | null = null;
  private live = false;
  private finished = false;
  private reconnecting = false;
  private sessionId = "";
  private pending: Pending[] = [];
  private readonly joined = new Set<string>();
  private notice: GroupError | undefined;
  private keepAliveTimer: ReturnType<typeof setInterval> | undefined;
  private sentSinceTick = false;
  private silentTicks = 0;

  private constructor(url: string, options: ClientOptions) {
    super();
    this.url = url;
    this.settings = settings(options);
    this.uid = options.uid;
    helloPayload(this.uid, ""); // refuses a bad uid before any socket opens
  }

  /** Opens a WebSocket to `url` (`ws://` or `wss://`) and says Hello; resolves once the session is up. */
  static async connect(url: string, options: ClientOptions): Promise<GroupClient> {
    const client = new GroupClient(url, options);
    await client.openSession();
    return client;
  }

  /** The session ID the server gave, as 32 hex digits. */
  get sid(): string {
    return this.sessionId;
  }

  /** True while a session is up (false while reconnecting and after close). */
  get connected(): boolean {
    return this.live;
  }

  /** The groups this user is in, as far as this client knows; rejoined after a reconnect. */
  get groups(): ReadonlySet<string> {
    return this.joined;
  }

  /** Creates a group; with `join` (default true) this user is its first member. Resolves to its ID. */
  async create(params: GroupParams & { join?: boolean } = {}): Promise<string> {
    const join = params.join ?? true;
    const groupId = decodeGroupId(await this.call(Ver.GROUP, Cmd.CREATE, createPayload(params, join)), "create answer");
    if (join) this.joined.add(groupId);
    return groupId;
  }

  /** Joins a group; a non-empty `message` is pushed to the other members. */
  async join(groupId: string, message?: Message): Promise<string> {
    const answer = await this.call(Ver.GROUP, Cmd.JOIN, groupMessagePayload(groupId, messageBytes(message)));
    this.joined.add(groupId);
    return decodeGroupId(answer, "join answer");
  }

  /** Leaves a group; a non-empty `message` is pushed to the remaining members. */
  async leave(groupId: string, message?: Message): Promise<string> {
    groupIdBytes(groupId);
    try {
      const answer = await this.call(Ver.GROUP, Cmd.LEAVE, groupMessagePayload(groupId, messageBytes(message)));
      return decodeGroupId(answer, "leave answer");
    } finally {
      this.joined.delete(groupId); // the user meant to leave: a reconnect does not join it again
    }
  }

  /** Joins a random group made by `randomJoin`, or creates one with `params` and joins it. */
  async randomJoin(params: GroupParams = {}, message?: Message): Promise<string> {
    const answer = await this.call(Ver.GROUP, Cmd.RAND_JOIN, randJoinPayload(params, messageBytes(message)));
    const groupId = decodeGroupId(answer, "random join answer");
    this.joined.add(groupId);
    return groupId;
  }

  /**
   * Sends `message` to the group's other members. There is no answer on success; a refusal comes as a
   * `refused` event. `reliable` matters only to UDP members (WebSocket delivery is always reliable).
   */
  broadcast(groupId: string, message: Message, options: { reliable?: boolean } = {}): void {
    const payload = broadcastPayload(groupId, options.reliable ?? true, messageBytes(message));
    this.sendFrame(this.requireSocket(), Ver.GROUP, Cmd.BROADCAST, payload);
  }

  /** The server echoes `payload`. */
  async ping(payload?: Message): Promise<Uint8Array> {
    return this.call(Ver.CONTROL, Cmd.PING, messageBytes(payload));
  }

  /** A command of the server code's own (`ver` 2 to 255); resolves to its answer's payload. */
  async request(ver: number, cmd: number, payload?: Message): Promise<Uint8Array> {
    checkCustomVer(ver);
    return this.call(ver, cmd, messageBytes(payload));
  }

  /** A command of the server code's own that gets no answer. */
  send(ver: number, cmd: number, payload?: Message): void {
    checkCustomVer(ver);
    this.sendFrame(this.requireSocket(), ver, cmd, messageBytes(payload));
  }

  /** Ends the session (Fin: the server discards the user at once) and stops reconnecting. */
  async close(): Promise<void> {
    if (this.finished) return;
    this.finished = true;
    const socket = this.socket;
    if (socket !== null && this.live) {
      await Promise.race([this.call(Ver.CONTROL, Cmd.FIN, new Uint8Array(0)).catch(() => undefined), delay(1000)]);
    }
    this.endSocket(socket, new ClientError("closed", "closed by the client"), 1000);
    this.emit("close", { reason: new ClientError("closed", "closed by the client") });
  }

  private async openSession(): Promise<void> {
    const token = typeof this.settings.token === "function" ? await this.settings.token() : this.settings.token;
    const hello = helloPayload(this.uid, token);
    const socket = await this.openSocket();
    this.notice = undefined;
    const sid = await this.call(Ver.CONTROL, Cmd.HELLO, hello, socket);
    this.sessionId = Array.from(sid, (b) => b.toString(16).padStart(2, "0")).join("");
    this.live = true;
    this.startKeepAlive(socket);
  }

  private openSocket(): Promise<WebSocketLike> {
    return new Promise((resolve, reject) => {
      let socket: WebSocketLike;
      try {
        socket = new this.settings.WebSocket(this.url);
      } catch (error) {
        reject(new ClientError("closed", `cannot open ${this.url}: ${String(error)}`));
        return;
      }
      socket.binaryType = "arraybuffer";
      this.socket = socket;
      const timer = setTimeout(() => {
        const reason = new ClientError("timeout", `no WebSocket to ${this.url} within ${this.settings.requestTimeoutMs} ms`);
        reject(reason);
        this.endSocket(socket, reason);
      }, this.settings.requestTimeoutMs);
      socket.onopen = () => {
        clearTimeout(timer);
        resolve(socket);
      };
      socket.onmessage = (event) => this.onMessage(socket, event.data);
      socket.onerror = () => undefined; // the close event that follows carries what is known
      socket.onclose = (event) => {
        clearTimeout(timer);
        const why = event.reason === "" ? "" : `: ${event.reason}`;
        const reason = this.notice ?? new ClientError("closed", `WebSocket closed with code ${event.code}${why}`);
        reject(reason);
        this.socketClosed(socket, reason);
      };
    });
  }

  private onMessage(socket: WebSocketLike, data: unknown): void {
    if (socket !== this.socket) return;
    this.silentTicks = 0;
    try {
      if (!(data instanceof ArrayBuffer)) {
        throw new ClientError("protocol", "the server sent a text message; the protocol has binary messages only");
      }
      for (const frame of decodeServerFrames(new Uint8Array(data), this.settings.maxFrameBytes)) {
        this.onFrame(frame);
      }
    } catch (error) {
      const reason = error instanceof Error ? error : new ClientError("protocol", String(error));
      this.endSocket(socket, reason, 1002);
    }
  }

  private onFrame(frame: ServerFrame): void {
    if (frame.status === Status.PUSH) {
      this.onPush(frame);
      return;
    }
    const failed = frame.status !== Status.OK;
    if (failed && frame.ver === Ver.CONTROL && frame.cmd === Cmd.CLOSING_NOTICE) {
      const { code, groupId, message } = decodeError(frame.payload);
      this.notice = new GroupError(code, groupId, message);
      return;
    }
    const index = this.pending.findIndex((p) => p.ver === frame.ver && p.cmd === frame.cmd);
    const entry = index < 0 ? undefined : this.pending.splice(index, 1)[0];
    if (!failed) {
      // An Ok nobody waits for answers a `send` of the server code's own command: nothing to do.
      if (entry !== undefined) settle(entry, () => entry.resolve(frame.payload));
      return;
    }
    const { code, groupId, message } = decodeError(frame.payload);
    const error = new GroupError(code, groupId, message, frame.status === Status.ERR);
    if (entry === undefined) {
      this.emit("refused", error);
    } else {
      settle(entry, () => entry.reject(error));
    }
  }

  private onPush(frame: ServerFrame): void {
    const { ver, cmd, payload } = frame;
    if (ver === Ver.GROUP && cmd === Cmd.JOIN) {
      const push = decodeMemberPush(payload);
      if (push.uid === this.uid) {
        this.emit("rejoin", { groupId: push.groupId, message: push.message });
      } else {
        this.emit("joined", push);
      }
    } else if (ver === Ver.GROUP && cmd === Cmd.LEAVE) {
      this.emit("left", decodeMemberPush(payload));
    } else if (ver === Ver.GROUP && cmd === Cmd.BROADCAST) {
      const { groupId, entries } = decodeBroadcastPush(payload);
      for (const { uid, message } of entries) {
        if (uid === "") {
          this.emit("announce", { groupId, message });
        } else {
          this.emit("broadcast", { groupId, uid, message });
        }
      }
    } else if (ver === Ver.CONTROL && cmd === Cmd.OFFLINE) {
      this.emit("offline", {});
    } else {
      this.emit("push", { ver, cmd, payload });
    }
  }

  private call(ver: number, cmd: number, payload: Uint8Array, socket?: WebSocketLike): Promise<Uint8Array> {
    let target: WebSocketLike;
    try {
      target = socket ?? this.requireSocket();
    } catch (error) {
      return Promise.reject(error);
    }
    if (this.pending.length >= this.settings.maxPendingRequests) {
      return Promise.reject(new ClientError("backpressure", `${this.pending.length} requests await answers (maxPendingRequests)`));
    }
    return new Promise((resolve, reject) => {
      const entry: Pending = { ver, cmd, abandoned: false, resolve, reject, timer: undefined };
      try {
        this.sendFrame(target, ver, cmd, payload);
      } catch (error) {
        reject(error);
        return;
      }
      entry.timer = setTimeout(() => {
        entry.abandoned = true;
        reject(new ClientError("timeout", `no answer to ver ${ver} cmd ${cmd} within ${this.settings.requestTimeoutMs} ms`));
      }, this.settings.requestTimeoutMs);
      this.pending.push(entry);
    });
  }

  private sendFrame(socket: WebSocketLike, ver: number, cmd: number, payload: Uint8Array): void {
    if (payload.length > this.settings.maxPayload) {
      throw new ClientError("invalid-argument", `a payload of ${payload.length} bytes is above maxPayload (${this.settings.maxPayload})`);
    }
    if (socket.readyState !== OPEN) throw new ClientError("not-connected", "the WebSocket is not open");
    if (socket.bufferedAmount > this.settings.maxBufferedAmount) {
      throw new ClientError("backpressure", `${socket.bufferedAmount} bytes not yet sent (maxBufferedAmount ${this.settings.maxBufferedAmount})`);
    }
    socket.send(encodeRequest(ver, cmd, payload));
    this.sentSinceTick = true;
  }

  private requireSocket(): WebSocketLike {
    if (this.socket === null || !this.live) {
      const state = this.finished ? "the client is closed" : this.reconnecting ? "reconnecting" : "no session";
      throw new ClientError("not-connected", state);
    }
    return this.socket;
  }

  private startKeepAlive(socket: WebSocketLike): void {
    const every = this.settings.keepAliveMs;
    if (every <= 0) return;
    this.silentTicks = 0;
    this.sentSinceTick = false;
    this.keepAliveTimer = setInterval(() => {
      this.silentTicks += 1;
      if (this.silentTicks * every >= this.settings.deadAfterMs) {
        this.endSocket(socket, new ClientError("timeout", `nothing from the server for ${this.settings.deadAfterMs} ms`), 4000);
        return;
      }
      if (!this.sentSinceTick) this.call(Ver.CONTROL, Cmd.KEEP_ALIVE, new Uint8Array(0), socket).catch(() => undefined);
      this.sentSinceTick = false;
    }, every);
  }

  /** Closes `socket` now, without waiting for its close event (which a dead network may never bring). */
  private endSocket(socket: WebSocketLike | null, reason: Error, code = 1000): void {
    if (socket === null) return;
    try {
      socket.close(code, reason.message.slice(0, 120));
    } catch {
      // already closing
    }
    this.socketClosed(socket, reason);
  }

  private socketClosed(socket: WebSocketLike, reason: Error): void {
    if (socket !== this.socket) return;
    this.socket = null;
    const wasLive = this.live;
    this.live = false;
    clearInterval(this.keepAliveTimer);
    this.keepAliveTimer = undefined;
    const orphans = this.pending;
    this.pending = [];
    for (const entry of orphans) settle(entry, () => entry.reject(reason));
    if (!wasLive || this.finished) return;
    const reconnect = this.settings.reconnect !== false && !(reason instanceof GroupError && FINAL_CODES.has(reason.code));
    this.emit("disconnect", { reason, reconnecting: reconnect });
    if (reconnect) {
      void this.reconnectLoop(reason);
    } else {
      this.finish(reason);
    }
  }

  private async reconnectLoop(firstReason: Error): Promise<void> {
    const policy = this.settings.reconnect;
    if (policy === false || this.reconnecting) return;
    this.reconnecting = true;
    let reason = firstReason;
    for (let attempt = 1; attempt <= policy.maxAttempts && !this.finished; attempt++) {
      const delayMs = backoffDelay(policy, attempt, Math.random());
      this.emit("reconnecting", { attempt, delayMs });
      await delay(delayMs);
      if (this.finished) break;
      try {
        await this.openSession();
        const outcome = await this.rejoinAll();
        this.reconnecting = false;
        this.emit("reconnect", outcome);
        return;
      } catch (error) {
        reason = error instanceof Error ? error : new ClientError("closed", String(error));
        this.endSocket(this.socket, reason);
        if (reason instanceof GroupError && FINAL_CODES.has(reason.code)) break;
      }
    }
    this.reconnecting = false;
    if (!this.finished) this.finish(reason);
  }

  /** Joins every group again; a group refused for good (gone, full) is dropped and reported. */
  private async rejoinAll(): Promise<ClientEvents["reconnect"]> {
    const rejoined: string[] = [];
    const lost: { groupId: string; error: Error }[] = [];
    for (const groupId of [...this.joined]) {
      try {
        await this.call(Ver.GROUP, Cmd.JOIN, groupMessagePayload(groupId, new Uint8Array(0)));
        rejoined.push(groupId);
      } catch (error) {
        if (!(error instanceof GroupError)) throw error; // the new connection broke: try again
        if (error.code === ErrorCode.JOIN_ALREADY_MEMBER) {
          rejoined.push(groupId);
        } else {
          this.joined.delete(groupId);
          lost.push({ groupId, error });
        }
      }
    }
    return { rejoined, lost };
  }

  private finish(reason: Error): void {
    this.finished = true;
    this.emit("close", { reason });
  }
}

function settle(entry: Pending, action: () => void): void {
  clearTimeout(entry.timer);
  if (!entry.abandoned) action();
  entry.abandoned = true;
}

function checkCustomVer(ver: number): void {
  if (!Number.isInteger(ver) || ver < 2 || ver > 255) {
    throw new ClientError("invalid-argument", `custom commands have ver 2 to 255 (0 and 1 are the protocol's), got ${ver}`);
  }
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
