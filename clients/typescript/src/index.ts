/**
 * The group-server client for browsers and Node.js, over WebSocket (`ws://` or `wss://`).
 * The protocol it speaks is docs/PROTOCOL.md of the group-server repository.
 */
export { GroupClient } from "./client.js";
export type { BroadcastEvent, ClientEvents, MemberEvent } from "./client.js";
export { Cmd, ErrorCode, Status, Ver, errorCodeName } from "./codes.js";
export { ClientError, GroupError } from "./errors.js";
export type { ClientErrorKind } from "./errors.js";
export type { GroupParams, Message } from "./frame.js";
export { isGroupId } from "./frame.js";
export type { ClientOptions, ReconnectOptions, WebSocketConstructor, WebSocketLike } from "./options.js";

const decoder = new TextDecoder();

/** The text of a received message (UTF-8; invalid bytes become U+FFFD). */
export function text(message: Uint8Array): string {
  return decoder.decode(message);
}
