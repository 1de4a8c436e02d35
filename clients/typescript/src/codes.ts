/**
 * The protocol's error codes (docs/PROTOCOL.md, "Errors"). The hundreds digit tells the operation;
 * codes from 1000 up are the server code's own refusals (hooks and custom commands).
 */
export const ErrorCode = {
  MALFORMED: 1,
  UNKNOWN_COMMAND: 2,
  NOT_GREETED: 3,
  ALREADY_GREETED: 4,
  PAYLOAD_TOO_LARGE: 5,
  UNKNOWN_USER: 6,
  BAD_GROUP_ID: 7,
  AUTH_FAILED: 8,
  NO_HANDLER: 9,
  HOOK_FAILED: 10,
  CLOSED_REPLACED: 11,
  CLOSED_HELLO_TIMEOUT: 12,
  CLOSED_IDLE: 13,
  CLOSED_SERVER_FULL: 14,
  CLOSED_SLOW_CONSUMER: 15,
  RATE_LIMITED: 16,
  NOT_EXPOSED: 17,
  CREATE_TTL_TOO_SHORT: 100,
  CREATE_EMPTY_WITHOUT_JOIN: 101,
  CREATE_NODE_OFFLINE: 102,
  CREATE_TOO_MANY_GROUPS: 103,
  CREATE_USER_GROUP_LIMIT: 104,
  CREATE_TTL_TOO_LONG: 105,
  CREATE_USER_CREATE_LIMIT: 106,
  JOIN_GROUP_NOT_FOUND: 200,
  JOIN_ALREADY_MEMBER: 201,
  JOIN_GROUP_FULL: 202,
  JOIN_USER_GROUP_LIMIT: 203,
  JOIN_OWNER_UNREACHABLE: 204,
  JOIN_IN_PROGRESS: 205,
  LEAVE_GROUP_NOT_FOUND: 300,
  LEAVE_NOT_MEMBER: 301,
  BROADCAST_GROUP_NOT_FOUND: 400,
  BROADCAST_NOT_MEMBER: 401,
} as const;

export type ErrorCodeName = keyof typeof ErrorCode;

const NAMES = new Map<number, ErrorCodeName>(
  (Object.entries(ErrorCode) as [ErrorCodeName, number][]).map(([name, code]) => [code, name]),
);

/** The protocol name of `code`, `SERVER_CODE` from 1000 up, `UNKNOWN` for anything else. */
export function errorCodeName(code: number): string {
  const name = NAMES.get(code);
  if (name !== undefined) return name;
  return code >= 1000 ? "SERVER_CODE" : "UNKNOWN";
}

/** Protocol `ver` values of the commands this client speaks. */
export const Ver = { CONTROL: 0, GROUP: 1 } as const;

/** Command numbers (with `Ver.CONTROL` or `Ver.GROUP`); the group ones are Diarkis's. */
export const Cmd = {
  FIN: 0,
  KEEP_ALIVE: 1,
  PING: 3,
  HELLO: 4,
  OFFLINE: 6,
  CLOSING_NOTICE: 7,
  CREATE: 110,
  JOIN: 111,
  LEAVE: 112,
  BROADCAST: 113,
  RAND_JOIN: 114,
} as const;

/** The server frame's status byte. */
export const Status = { OK: 1, BAD: 4, ERR: 5, PUSH: 0xff } as const;
