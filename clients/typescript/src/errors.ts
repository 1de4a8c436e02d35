import { errorCodeName } from "./codes.js";

/**
 * The server refused a request (status Bad) or failed while handling it (status Err, code 10). `code` is
 * the protocol's error code (see `ErrorCode`); `groupId` is the group the refused command named, so a client
 * with several requests in flight can tell which one failed.
 */
export class GroupError extends Error {
  override readonly name = "GroupError";
  readonly code: number;
  /** `ErrorCode`'s name of `code`, `SERVER_CODE` for refusals by server code (1000 and up). */
  readonly codeName: string;
  readonly groupId: string | undefined;
  /** The server's own words, as sent. */
  readonly serverMessage: string;
  /** True for status Err (a server failure) rather than Bad (a refusal). */
  readonly serverFailure: boolean;

  constructor(code: number, groupId: string | undefined, serverMessage: string, serverFailure = false) {
    const name = errorCodeName(code);
    const group = groupId === undefined ? "" : ` (group ${groupId})`;
    super(`${name} ${code}: ${serverMessage}${group}`);
    this.code = code;
    this.codeName = name;
    this.groupId = groupId;
    this.serverMessage = serverMessage;
    this.serverFailure = serverFailure;
  }
}

/**
 * Why a call failed on this side of the wire:
 * - `not-connected`: there is no session right now (never connected, reconnecting, or closed);
 * - `closed`: the connection closed before the answer came;
 * - `timeout`: no answer within `requestTimeoutMs`;
 * - `protocol`: the server sent something the protocol does not allow (the connection is closed);
 * - `backpressure`: the socket already holds `maxBufferedAmount` unsent bytes;
 * - `invalid-argument`: the call itself was wrong (a group ID that is not 52 printable ASCII characters, a
 *   uid of 0 or more than 64 bytes, a number out of its field's range, a message above `maxPayload`).
 */
export type ClientErrorKind =
  | "not-connected"
  | "closed"
  | "timeout"
  | "protocol"
  | "backpressure"
  | "invalid-argument";

export class ClientError extends Error {
  override readonly name = "ClientError";
  readonly kind: ClientErrorKind;

  constructor(kind: ClientErrorKind, message: string) {
    super(`${kind}: ${message}`);
    this.kind = kind;
  }
}
