/** What a `GroupClient` is configured with, and the defaults a game in a browser needs. */

/** The subset of the WebSocket API the client uses: the browser's, or Node's (`--experimental-websocket`). */
export interface WebSocketLike {
  binaryType: string;
  readonly readyState: number;
  readonly bufferedAmount: number;
  onopen: ((event: unknown) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  onerror: ((event: unknown) => void) | null;
  send(data: Uint8Array): void;
  close(code?: number, reason?: string): void;
}

export type WebSocketConstructor = new (url: string) => WebSocketLike;

export interface ReconnectOptions {
  /** The wait before the first attempt; it doubles per attempt. Default 500 ms. */
  initialDelayMs?: number;
  /** The longest wait between attempts. Default 10 000 ms. */
  maxDelayMs?: number;
  /** Attempts before the client gives up and closes. Default: no limit. */
  maxAttempts?: number;
}

export interface ClientOptions {
  /** The user ID said in Hello: 1 to 64 bytes of UTF-8. */
  uid: string;
  /**
   * The token said in Hello (empty by default). A function is called before every Hello, so a reconnect can
   * present a fresh token (a JWT that expired meanwhile, say).
   */
  token?: string | (() => string | Promise<string>);
  /** The WebSocket class; default `globalThis.WebSocket`. */
  WebSocket?: WebSocketConstructor;
  /** How long a request waits for its answer. Default 15 000 ms (a remote join may take 8 s). */
  requestTimeoutMs?: number;
  /**
   * A KeepAlive goes out when nothing else was sent for this long, so the server (which closes connections
   * silent for `connectionTtl`, default 10 s) keeps the session. 0 turns it off. Default 4000 ms.
   */
  keepAliveMs?: number;
  /**
   * With keep-alive on, a connection that brought nothing for this long is taken for dead (a frozen server
   * or a broken network the socket does not see) and closed, and the client reconnects. Default 15 000 ms.
   */
  deadAfterMs?: number;
  /** The largest request payload to send: the server's `maxPayload`. Default 65 536 bytes. */
  maxPayload?: number;
  /** The largest server frame payload accepted; a larger one closes the connection. Default 4 MiB. */
  maxFrameBytes?: number;
  /** Unsent bytes the socket may hold before sends fail with `backpressure`. Default 1 MiB. */
  maxBufferedAmount?: number;
  /** Requests waiting for answers before new ones fail with `backpressure`. Default 1024. */
  maxPendingRequests?: number;
  /** Reconnect with backoff after a connection is lost, then rejoin the user's groups. `false`: never. */
  reconnect?: ReconnectOptions | false;
}

export interface Settings {
  uid: string;
  token: string | (() => string | Promise<string>);
  WebSocket: WebSocketConstructor;
  requestTimeoutMs: number;
  keepAliveMs: number;
  deadAfterMs: number;
  maxPayload: number;
  maxFrameBytes: number;
  maxBufferedAmount: number;
  maxPendingRequests: number;
  reconnect: Required<ReconnectOptions> | false;
}

export function settings(options: ClientOptions): Settings {
  const WebSocketClass =
    options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
  if (WebSocketClass === undefined) {
    throw new TypeError(
      "no WebSocket class: pass options.WebSocket (Node.js 20 has one with --experimental-websocket)",
    );
  }
  const reconnect =
    options.reconnect === false
      ? false
      : {
          initialDelayMs: options.reconnect?.initialDelayMs ?? 500,
          maxDelayMs: options.reconnect?.maxDelayMs ?? 10_000,
          maxAttempts: options.reconnect?.maxAttempts ?? Number.POSITIVE_INFINITY,
        };
  return {
    uid: options.uid,
    token: options.token ?? "",
    WebSocket: WebSocketClass,
    requestTimeoutMs: options.requestTimeoutMs ?? 15_000,
    keepAliveMs: options.keepAliveMs ?? 4000,
    deadAfterMs: options.deadAfterMs ?? 15_000,
    maxPayload: options.maxPayload ?? 65_536,
    maxFrameBytes: options.maxFrameBytes ?? 4 * 1024 * 1024,
    maxBufferedAmount: options.maxBufferedAmount ?? 1024 * 1024,
    maxPendingRequests: options.maxPendingRequests ?? 1024,
    reconnect,
  };
}

/** The wait before reconnect attempt `attempt` (1-based): doubling, capped, with up to half taken off at random. */
export function backoffDelay(policy: Required<ReconnectOptions>, attempt: number, random: number): number {
  const doubled = policy.initialDelayMs * 2 ** Math.min(attempt - 1, 30);
  const capped = Math.min(policy.maxDelayMs, doubled);
  return Math.round(capped * (1 - random / 2));
}
