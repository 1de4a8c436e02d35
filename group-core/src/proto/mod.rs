//! Client wire protocol v1: frame layout, command numbers, status bytes, error codes.
//!
//! Integers are big-endian. Client to server: `ver:u8 | cmd:u16 | len:u32 | payload`. Server to client:
//! `ver:u8 | cmd:u16 | status:u8 | len:u32 | payload`. The full byte-level description, with examples, is in
//! `docs/PROTOCOL.md` at the root of the repository.

mod broadcast_view;
mod frame;
mod push;
mod request;

pub use broadcast_view::{BroadcastEntryRef, BroadcastView};
pub use frame::{
    ClientFrame, ClientHeader, FrameError, ServerFrame, ServerHeader, decode_client_frame,
    decode_server_frame, encode_client_frame, encode_server_frame,
};
pub use push::{
    BroadcastEntry, BroadcastPushBuilder, ErrorPayload, MemberPush, PushError,
    encode_error_payload, member_push, parse_broadcast_push, parse_error_payload,
    parse_member_push,
};
pub use request::{CreateRequest, RandJoinRequest, Request, RequestError};

/// Size of a client frame header: ver, cmd, len.
pub const CLIENT_HEADER_LEN: usize = 7;
/// Size of a server frame header: ver, cmd, status, len.
pub const SERVER_HEADER_LEN: usize = 8;
/// Longest uid accepted in Hello.
pub const MAX_UID_LEN: usize = 64;

/// `ver` of connection-level commands.
pub const VER_CONTROL: u8 = 0;
/// `ver` of group commands.
pub const VER_GROUP: u8 = 1;
/// The lowest `ver` available to server code for its own commands.
pub const VER_CUSTOM_MIN: u8 = 2;

/// Command numbers.
pub mod cmd {
    /// ver 0: end the session.
    pub const FIN: u16 = 0;
    /// ver 0: keep an idle connection alive.
    pub const KEEP_ALIVE: u16 = 1;
    /// ver 0: echo.
    pub const PING: u16 = 3;
    /// ver 0: open a session; must be the first command.
    pub const HELLO: u16 = 4;
    /// ver 0, push only: the node is draining.
    pub const OFFLINE: u16 = 6;
    /// ver 0, Bad only: the server is closing this connection, and the error code says why (a session
    /// replaced by a newer Hello of the same uid, no Hello in time, no traffic for `connectionTtl`).
    pub const CLOSING: u16 = 7;
    /// ver 1: create a group.
    pub const CREATE: u16 = 110;
    /// ver 1: join a group; also the join notification pushed to members.
    pub const JOIN: u16 = 111;
    /// ver 1: leave a group; also the leave notification pushed to members.
    pub const LEAVE: u16 = 112;
    /// ver 1: broadcast to the other members; also the push carrying broadcasts.
    pub const BROADCAST: u16 = 113;
    /// ver 1: join some open group created by random join, or create one.
    pub const RAND_JOIN: u16 = 114;
}

/// The status byte of a server frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Status {
    /// The response to a request that succeeded.
    Ok = 1,
    /// The request was refused; the payload says why (see [`ErrorPayload`]).
    Bad = 4,
    /// The server failed while handling the request; the payload says why.
    Err = 5,
    /// Not a response: pushed without a request.
    Push = 0xFF,
}

impl Status {
    /// The status for a byte, if it is one.
    pub fn from_u8(byte: u8) -> Option<Status> {
        match byte {
            1 => Some(Status::Ok),
            4 => Some(Status::Bad),
            5 => Some(Status::Err),
            0xFF => Some(Status::Push),
            _ => None,
        }
    }
}

/// Error codes carried in Bad and Err payloads. The hundreds digit tells the operation: 0xx protocol,
/// 1xx create, 2xx join, 3xx leave, 4xx broadcast. 1000 and up belong to server code (hook rejections,
/// custom commands).
pub mod code {
    /// The payload does not match the command's layout.
    pub const MALFORMED: u16 = 1;
    /// No such (ver, cmd).
    pub const UNKNOWN_COMMAND: u16 = 2;
    /// A command other than Hello before Hello.
    pub const NOT_GREETED: u16 = 3;
    /// Hello on a connection that already has a session.
    pub const ALREADY_GREETED: u16 = 4;
    /// The frame's length exceeds `maxPayload`; the connection is closed after this.
    pub const PAYLOAD_TOO_LARGE: u16 = 5;
    /// The session named by a server-side call does not exist on this node.
    pub const UNKNOWN_USER: u16 = 6;
    /// The group ID bytes are not 52 printable ASCII characters.
    pub const BAD_GROUP_ID: u16 = 7;
    /// Hello's token was refused (bad signature, expired, or another uid); the connection is closed.
    pub const AUTH_FAILED: u16 = 8;
    /// A command with ver >= 2 that no server code handles.
    pub const NO_HANDLER: u16 = 9;
    /// Server code (a hook or handler) failed while handling the request; sent with status Err (5).
    pub const HOOK_FAILED: u16 = 10;
    /// Closing (cmd 7): a newer Hello with the same uid took the session over ("logged in elsewhere").
    pub const CLOSED_REPLACED: u16 = 11;
    /// Closing (cmd 7): no Hello within `server.helloTimeout`.
    pub const CLOSED_HELLO_TIMEOUT: u16 = 12;
    /// Closing (cmd 7): no traffic for `connectionTtl`.
    pub const CLOSED_IDLE: u16 = 13;
    /// Closing (cmd 7): the server holds `maxConnections` connections (TCP only: sent once, best effort).
    pub const CLOSED_SERVER_FULL: u16 = 14;
    /// Closing (cmd 7): the client did not read fast enough and its outbound queue filled (best effort:
    /// a client that is not reading at all never sees it).
    pub const CLOSED_SLOW_CONSUMER: u16 = 15;
    /// Over `limits.maxRequestsPerSecond`: the request was not handled. As a closing notice (cmd 7): the
    /// connection kept exceeding it (a second's worth of refused requests within one second).
    pub const RATE_LIMITED: u16 = 16;
    /// A group command this server does not expose to clients (`server.exposeCommands`): its groups are
    /// driven by server code.
    pub const NOT_EXPOSED: u16 = 17;

    /// Create: ttl must be more than 10 seconds.
    pub const CREATE_TTL_TOO_SHORT: u16 = 100;
    /// Create: allow_empty=false requires join=true.
    pub const CREATE_EMPTY_WITHOUT_JOIN: u16 = 101;
    /// Create: the node is offline (draining); create on another node.
    pub const CREATE_NODE_OFFLINE: u16 = 102;
    /// Create: the node holds `maxGroups` groups.
    pub const CREATE_TOO_MANY_GROUPS: u16 = 103;
    /// Create: the creator is already in `maxGroupsPerUser` groups.
    pub const CREATE_USER_GROUP_LIMIT: u16 = 104;
    /// Create: ttl is longer than `group.maxTtl`.
    pub const CREATE_TTL_TOO_LONG: u16 = 105;
    /// Create: the creator already created `maxGroupsCreatedPerUser` groups this node still holds.
    pub const CREATE_USER_CREATE_LIMIT: u16 = 106;

    /// Join: no such group.
    pub const JOIN_GROUP_NOT_FOUND: u16 = 200;
    /// Join: the user is already a member.
    pub const JOIN_ALREADY_MEMBER: u16 = 201;
    /// Join: the group has `maxMembersPerGroup` members.
    pub const JOIN_GROUP_FULL: u16 = 202;
    /// Join: the user is already in `maxGroupsPerUser` groups.
    pub const JOIN_USER_GROUP_LIMIT: u16 = 203;
    /// Join: no node named in the group ID answered (cluster), after `remoteJoinTries` attempts.
    pub const JOIN_OWNER_UNREACHABLE: u16 = 204;
    /// Join: this user's join of this group is already in progress on this node.
    pub const JOIN_IN_PROGRESS: u16 = 205;

    /// Leave: no such group.
    pub const LEAVE_GROUP_NOT_FOUND: u16 = 300;
    /// Leave: the user is not a member.
    pub const LEAVE_NOT_MEMBER: u16 = 301;

    /// Broadcast: no such group.
    pub const BROADCAST_GROUP_NOT_FOUND: u16 = 400;
    /// Broadcast: the sender is not a member.
    pub const BROADCAST_NOT_MEMBER: u16 = 401;

    /// First code reserved for server code.
    pub const APP_MIN: u16 = 1000;

    /// True for codes of create errors (the equivalent of Diarkis's IsNewGroupError).
    pub fn is_create_error(code: u16) -> bool {
        (100..200).contains(&code)
    }
    /// True for codes of join errors (IsJoinError).
    pub fn is_join_error(code: u16) -> bool {
        (200..300).contains(&code)
    }
    /// True for codes of leave errors (IsLeaveError).
    pub fn is_leave_error(code: u16) -> bool {
        (300..400).contains(&code)
    }
    /// True for codes of broadcast errors.
    pub fn is_broadcast_error(code: u16) -> bool {
        (400..500).contains(&code)
    }
}
