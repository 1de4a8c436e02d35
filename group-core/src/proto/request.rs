//! Client requests: the payload layouts of every client command, parsed strictly (no trailing bytes, no
//! reserved bits) so that a malformed request is refused with a reason rather than half understood.

use bytes::{Buf, Bytes, BytesMut};

use super::{ClientFrame, MAX_UID_LEN, VER_CONTROL, VER_CUSTOM_MIN, VER_GROUP, cmd, code};
use crate::id::{GROUP_ID_LEN, GroupId};

/// Parameters of Create (cmd 110).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CreateRequest {
    /// Keep the group while it has no members, until its ttl runs out.
    pub allow_empty: bool,
    /// The creator joins the group.
    pub join: bool,
    /// Seconds an empty allow_empty group lives; must be more than 10.
    pub ttl_s: u16,
    /// Merge interval in ms; below 100 means no merging.
    pub interval_ms: u16,
}

/// Parameters of RandJoin (cmd 114), used when no open group exists and one is created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RandJoinRequest {
    /// As in Create.
    pub allow_empty: bool,
    /// As in Create.
    pub ttl_s: u16,
    /// As in Create.
    pub interval_ms: u16,
    /// Join message pushed to the other members if non-empty.
    pub message: Bytes,
}

/// A decoded client request.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Request {
    /// ver 0 cmd 4.
    Hello {
        /// 1..=64 bytes of UTF-8.
        uid: String,
        /// Opaque to the core; the driver verifies it.
        token: Bytes,
    },
    /// ver 0 cmd 1.
    KeepAlive,
    /// ver 0 cmd 3: echo the payload.
    Ping(Bytes),
    /// ver 0 cmd 0.
    Fin,
    /// ver 1 cmd 110.
    Create(CreateRequest),
    /// ver 1 cmd 111.
    Join {
        /// The group to join.
        group: GroupId,
        /// Pushed to the other members if non-empty.
        message: Bytes,
    },
    /// ver 1 cmd 112.
    Leave {
        /// The group to leave.
        group: GroupId,
        /// Pushed to the remaining members if non-empty.
        message: Bytes,
    },
    /// ver 1 cmd 113.
    Broadcast {
        /// The group to broadcast to.
        group: GroupId,
        /// Flag bit 0: UDP members get it on the reliable channel.
        reliable: bool,
        /// The message.
        message: Bytes,
    },
    /// ver 1 cmd 114.
    RandJoin(RandJoinRequest),
    /// ver >= 2: a command of the server code's own.
    Custom {
        /// Version byte (>= 2).
        ver: u8,
        /// Command number.
        cmd: u16,
        /// Payload, uninterpreted.
        payload: Bytes,
    },
}

/// Why a client frame is not a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// No command with this (ver, cmd): answer Bad UNKNOWN_COMMAND.
    #[error("unknown command ver {ver} cmd {cmd}")]
    UnknownCommand {
        /// The version byte.
        ver: u8,
        /// The command number.
        cmd: u16,
    },
    /// The payload does not fit the command's layout: answer Bad MALFORMED.
    #[error("malformed {command} payload: {reason}")]
    Malformed {
        /// Name of the command.
        command: &'static str,
        /// What was wrong.
        reason: &'static str,
    },
    /// The group ID bytes are not 52 printable ASCII characters: answer Bad BAD_GROUP_ID.
    #[error("malformed group ID in {command}")]
    BadGroupId {
        /// Name of the command.
        command: &'static str,
    },
}

impl RequestError {
    /// The protocol error code for a Bad response.
    pub fn code(&self) -> u16 {
        match self {
            RequestError::UnknownCommand { .. } => code::UNKNOWN_COMMAND,
            RequestError::Malformed { .. } => code::MALFORMED,
            RequestError::BadGroupId { .. } => code::BAD_GROUP_ID,
        }
    }
}

/// A cursor that refuses to read past the end instead of panicking.
struct Reader<'a> {
    command: &'static str,
    buf: &'a Bytes,
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(command: &'static str, buf: &'a Bytes) -> Self {
        Reader {
            command,
            buf,
            pos: 0,
        }
    }
    fn malformed(&self, reason: &'static str) -> RequestError {
        RequestError::Malformed {
            command: self.command,
            reason,
        }
    }
    fn take(&mut self, n: usize, what: &'static str) -> Result<Bytes, RequestError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.buf.len())
            .ok_or(self.malformed(what))?;
        let bytes = self.buf.slice(self.pos..end);
        self.pos = end;
        Ok(bytes)
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, RequestError> {
        Ok(self.take(1, what)?.get_u8())
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, RequestError> {
        Ok(self.take(2, what)?.get_u16())
    }
    fn flag(&mut self, what: &'static str) -> Result<bool, RequestError> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(self.malformed("boolean byte must be 0 or 1")),
        }
    }
    fn group_id(&mut self) -> Result<GroupId, RequestError> {
        let bytes = self.take(GROUP_ID_LEN, "truncated group ID")?;
        GroupId::from_bytes(&bytes).map_err(|_| RequestError::BadGroupId {
            command: self.command,
        })
    }
    fn rest(&mut self) -> Bytes {
        let rest = self.buf.slice(self.pos..);
        self.pos = self.buf.len();
        rest
    }
    fn finish(&self) -> Result<(), RequestError> {
        if self.pos == self.buf.len() {
            Ok(())
        } else {
            Err(self.malformed("trailing bytes"))
        }
    }
}

impl Request {
    /// Parses a frame's payload according to its (ver, cmd).
    pub fn parse(frame: &ClientFrame) -> Result<Request, RequestError> {
        let payload = &frame.payload;
        match (frame.ver, frame.cmd) {
            (VER_CONTROL, cmd::HELLO) => {
                let mut r = Reader::new("Hello", payload);
                let uid_len = usize::from(r.u8("missing uid length")?);
                if uid_len == 0 || uid_len > MAX_UID_LEN {
                    return Err(r.malformed("uid must be 1 to 64 bytes"));
                }
                let uid = r.take(uid_len, "truncated uid")?;
                let uid = std::str::from_utf8(&uid)
                    .map_err(|_| r.malformed("uid is not UTF-8"))?
                    .to_string();
                let token_len = usize::from(r.u16("missing token length")?);
                let token = r.take(token_len, "truncated token")?;
                r.finish()?;
                Ok(Request::Hello { uid, token })
            }
            (VER_CONTROL, cmd::KEEP_ALIVE) => Reader::new("KeepAlive", payload)
                .finish()
                .map(|_| Request::KeepAlive),
            (VER_CONTROL, cmd::PING) => Ok(Request::Ping(payload.clone())),
            (VER_CONTROL, cmd::FIN) => Reader::new("Fin", payload).finish().map(|_| Request::Fin),
            (VER_GROUP, cmd::CREATE) => {
                let mut r = Reader::new("Create", payload);
                let allow_empty = r.flag("missing allow_empty")?;
                let join = r.flag("missing join")?;
                let ttl_s = r.u16("missing ttl")?;
                let interval_ms = r.u16("missing interval")?;
                r.finish()?;
                Ok(Request::Create(CreateRequest {
                    allow_empty,
                    join,
                    ttl_s,
                    interval_ms,
                }))
            }
            (VER_GROUP, cmd::JOIN) => {
                let mut r = Reader::new("Join", payload);
                let group = r.group_id()?;
                Ok(Request::Join {
                    group,
                    message: r.rest(),
                })
            }
            (VER_GROUP, cmd::LEAVE) => {
                let mut r = Reader::new("Leave", payload);
                let group = r.group_id()?;
                Ok(Request::Leave {
                    group,
                    message: r.rest(),
                })
            }
            (VER_GROUP, cmd::BROADCAST) => {
                let mut r = Reader::new("Broadcast", payload);
                let group = r.group_id()?;
                let flags = r.u8("missing flags")?;
                if flags & !1 != 0 {
                    return Err(r.malformed("reserved flag bits must be zero"));
                }
                Ok(Request::Broadcast {
                    group,
                    reliable: flags & 1 == 1,
                    message: r.rest(),
                })
            }
            (VER_GROUP, cmd::RAND_JOIN) => {
                let mut r = Reader::new("RandJoin", payload);
                let allow_empty = r.flag("missing allow_empty")?;
                let ttl_s = r.u16("missing ttl")?;
                let interval_ms = r.u16("missing interval")?;
                Ok(Request::RandJoin(RandJoinRequest {
                    allow_empty,
                    ttl_s,
                    interval_ms,
                    message: r.rest(),
                }))
            }
            (ver, cmd) if ver >= VER_CUSTOM_MIN => Ok(Request::Custom {
                ver,
                cmd,
                payload: payload.clone(),
            }),
            (ver, cmd) => Err(RequestError::UnknownCommand { ver, cmd }),
        }
    }

    /// The (ver, cmd) this request travels as: responses echo it.
    pub fn ver_cmd(&self) -> (u8, u16) {
        match self {
            Request::Hello { .. } => (VER_CONTROL, cmd::HELLO),
            Request::KeepAlive => (VER_CONTROL, cmd::KEEP_ALIVE),
            Request::Ping(_) => (VER_CONTROL, cmd::PING),
            Request::Fin => (VER_CONTROL, cmd::FIN),
            Request::Create(_) => (VER_GROUP, cmd::CREATE),
            Request::Join { .. } => (VER_GROUP, cmd::JOIN),
            Request::Leave { .. } => (VER_GROUP, cmd::LEAVE),
            Request::Broadcast { .. } => (VER_GROUP, cmd::BROADCAST),
            Request::RandJoin(_) => (VER_GROUP, cmd::RAND_JOIN),
            Request::Custom { ver, cmd, .. } => (*ver, *cmd),
        }
    }

    /// The group the request names, if any: error responses carry it.
    pub fn group(&self) -> Option<&GroupId> {
        match self {
            Request::Join { group, .. }
            | Request::Leave { group, .. }
            | Request::Broadcast { group, .. } => Some(group),
            _ => None,
        }
    }

    /// Encodes the request as a client frame into `out`: the inverse of [`Request::parse`], used by clients.
    pub fn encode(&self, out: &mut BytesMut) {
        use bytes::BufMut;
        let mut p = BytesMut::new();
        match self {
            Request::Hello { uid, token } => {
                p.put_u8(u8::try_from(uid.len()).unwrap_or(u8::MAX));
                p.put_slice(uid.as_bytes());
                p.put_u16(u16::try_from(token.len()).unwrap_or(u16::MAX));
                p.put_slice(token);
            }
            Request::KeepAlive | Request::Fin => {}
            Request::Ping(bytes) => p.put_slice(bytes),
            Request::Create(c) => {
                p.put_u8(u8::from(c.allow_empty));
                p.put_u8(u8::from(c.join));
                p.put_u16(c.ttl_s);
                p.put_u16(c.interval_ms);
            }
            Request::Join { group, message } | Request::Leave { group, message } => {
                p.put_slice(group.as_bytes());
                p.put_slice(message);
            }
            Request::Broadcast {
                group,
                reliable,
                message,
            } => {
                p.put_slice(group.as_bytes());
                p.put_u8(u8::from(*reliable));
                p.put_slice(message);
            }
            Request::RandJoin(r) => {
                p.put_u8(u8::from(r.allow_empty));
                p.put_u16(r.ttl_s);
                p.put_u16(r.interval_ms);
                p.put_slice(&r.message);
            }
            Request::Custom { payload, .. } => p.put_slice(payload),
        }
        let (ver, cmd) = self.ver_cmd();
        super::encode_client_frame(ver, cmd, &p, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::decode_client_frame;

    fn frame(ver: u8, cmd: u16, payload: &[u8]) -> ClientFrame {
        ClientFrame {
            ver,
            cmd,
            payload: Bytes::copy_from_slice(payload),
        }
    }

    const GID: &[u8; 52] = b"AA11111222223333344444555556666677777888889999900000";

    /// Golden vectors: exact bytes for every client row of the protocol table.
    #[test]
    fn golden_request_bytes() {
        let gid: GroupId = GroupId::from_bytes(GID).unwrap();
        let cases: Vec<(Request, Vec<u8>)> = vec![
            (
                Request::Hello {
                    uid: "ab".into(),
                    token: Bytes::from_static(b"t"),
                },
                vec![0, 0, 4, 0, 0, 0, 6, 2, b'a', b'b', 0, 1, b't'],
            ),
            (Request::KeepAlive, vec![0, 0, 1, 0, 0, 0, 0]),
            (
                Request::Ping(Bytes::from_static(b"p")),
                vec![0, 0, 3, 0, 0, 0, 1, b'p'],
            ),
            (Request::Fin, vec![0, 0, 0, 0, 0, 0, 0]),
            (
                Request::Create(CreateRequest {
                    allow_empty: true,
                    join: false,
                    ttl_s: 60,
                    interval_ms: 200,
                }),
                vec![1, 0, 110, 0, 0, 0, 6, 1, 0, 0, 60, 0, 200],
            ),
            (
                Request::Join {
                    group: gid,
                    message: Bytes::from_static(b"hi"),
                },
                [&[1, 0, 111, 0, 0, 0, 54][..], GID, b"hi"].concat(),
            ),
            (
                Request::Leave {
                    group: gid,
                    message: Bytes::new(),
                },
                [&[1, 0, 112, 0, 0, 0, 52][..], GID].concat(),
            ),
            (
                Request::Broadcast {
                    group: gid,
                    reliable: true,
                    message: Bytes::from_static(b"m"),
                },
                [&[1, 0, 113, 0, 0, 0, 54][..], GID, &[1, b'm']].concat(),
            ),
            (
                Request::RandJoin(RandJoinRequest {
                    allow_empty: false,
                    ttl_s: 30,
                    interval_ms: 0,
                    message: Bytes::from_static(b"x"),
                }),
                vec![1, 0, 114, 0, 0, 0, 6, 0, 0, 30, 0, 0, b'x'],
            ),
            (
                Request::Custom {
                    ver: 7,
                    cmd: 900,
                    payload: Bytes::from_static(b"c"),
                },
                vec![7, 3, 132, 0, 0, 0, 1, b'c'],
            ),
        ];
        for (request, bytes) in cases {
            let mut out = BytesMut::new();
            request.encode(&mut out);
            assert_eq!(&out[..], &bytes[..], "{request:?}");
            let decoded = decode_client_frame(&mut out, 1024).unwrap().unwrap();
            assert_eq!(Request::parse(&decoded).unwrap(), request);
        }
    }

    #[test]
    fn malformed_payloads_are_refused_with_reasons() {
        let bad = |ver, cmd, payload: &[u8]| Request::parse(&frame(ver, cmd, payload)).unwrap_err();
        assert_eq!(bad(0, 4, &[0, 0, 0]).code(), code::MALFORMED); // empty uid
        assert_eq!(bad(0, 4, &[65]).code(), code::MALFORMED); // uid too long
        assert_eq!(bad(0, 4, &[2, 0xFF, 0xFE, 0, 0]).code(), code::MALFORMED); // not UTF-8
        assert_eq!(bad(0, 4, &[1, b'a', 0, 5, 1]).code(), code::MALFORMED); // truncated token
        assert_eq!(bad(0, 4, &[1, b'a', 0, 0, 9]).code(), code::MALFORMED); // trailing
        assert_eq!(bad(0, 1, &[1]).code(), code::MALFORMED);
        assert_eq!(bad(1, 110, &[1, 1, 0]).code(), code::MALFORMED);
        assert_eq!(bad(1, 110, &[2, 1, 0, 20, 0, 0]).code(), code::MALFORMED);
        assert_eq!(bad(1, 111, &GID[..51]).code(), code::MALFORMED);
        let mut unprintable = GID.to_vec();
        unprintable[3] = 0;
        assert_eq!(bad(1, 111, &unprintable).code(), code::BAD_GROUP_ID);
        assert_eq!(bad(1, 113, GID).code(), code::MALFORMED); // no flags
        assert_eq!(
            bad(1, 113, &[&GID[..], &[2]].concat()).code(),
            code::MALFORMED
        );
        assert_eq!(bad(0, 99, &[]).code(), code::UNKNOWN_COMMAND);
        assert_eq!(
            bad(1, 1, &[]),
            RequestError::UnknownCommand { ver: 1, cmd: 1 }
        );
    }
}
