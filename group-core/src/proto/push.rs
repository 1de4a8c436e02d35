//! Server-built payloads: member notifications (111/112), broadcast pushes (113), and Bad/Err payloads;
//! plus their parsers, which clients and tests use.
//!
//! Every builder writes a complete server frame (header included) into one buffer and freezes it, so the
//! node can hand the same `Bytes` to every recipient.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::frame::{len_u32, put_server_header};
use super::{SERVER_HEADER_LEN, Status};
use crate::id::{GROUP_ID_LEN, GroupId};

/// Why a push or error payload could not be parsed (client side).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PushError {
    /// The payload ends before the layout does.
    #[error("truncated payload")]
    Truncated,
    /// The group ID is not 52 printable ASCII bytes.
    #[error("malformed group ID")]
    BadGroupId,
    /// A uid or message that must be UTF-8 is not.
    #[error("text is not UTF-8")]
    NotUtf8,
    /// The group-ID length byte of an error payload is neither 0 nor 52.
    #[error("group ID length must be 0 or 52")]
    BadGroupIdLength,
}

/// Encodes a whole server frame: `header | group_id | uid_len | uid | message`. Used for join (111) and
/// leave (112) notifications, and for the server's own ver/cmd choices in join/leave.
pub fn member_push(ver: u8, cmd: u16, group: &GroupId, uid: &str, message: &[u8]) -> Bytes {
    let uid = truncated_uid(uid);
    let len = GROUP_ID_LEN + 1 + uid.len() + message.len();
    let mut out = BytesMut::with_capacity(SERVER_HEADER_LEN + len);
    put_server_header(&mut out, ver, cmd, Status::Push, len_u32(len));
    out.put_slice(group.as_bytes());
    out.put_u8(len_u8(uid.len()));
    out.put_slice(uid);
    out.put_slice(message);
    out.freeze()
}

/// Lengths written as one byte are at most 255 by construction (see [`truncated_uid`]).
fn len_u8(len: usize) -> u8 {
    u8::try_from(len).unwrap_or(u8::MAX)
}

/// Uids are validated to at most 64 bytes on entry; this keeps the one-byte length honest regardless.
fn truncated_uid(uid: &str) -> &[u8] {
    let bytes = uid.as_bytes();
    bytes.get(..usize::from(u8::MAX)).unwrap_or(bytes)
}

/// Builds one 113-style push: `header | group_id | entry+`, entry = `uid_len | uid | msg_len:u32 | msg`.
pub struct BroadcastPushBuilder {
    buf: BytesMut,
}

impl BroadcastPushBuilder {
    /// Starts a push for `group` with the given ver and cmd; `capacity` is a hint for the entries' bytes.
    pub fn new(ver: u8, cmd: u16, group: &GroupId, capacity: usize) -> Self {
        let mut buf = BytesMut::with_capacity(SERVER_HEADER_LEN + GROUP_ID_LEN + capacity);
        put_server_header(&mut buf, ver, cmd, Status::Push, 0);
        buf.put_slice(group.as_bytes());
        BroadcastPushBuilder { buf }
    }

    /// Bytes one entry takes on the wire.
    pub fn entry_len(uid: &str, message: &[u8]) -> usize {
        1 + truncated_uid(uid).len() + 4 + message.len()
    }

    /// Appends an entry; an empty uid marks an announce. Returns the entry's byte range in the frame.
    pub fn push_entry(&mut self, uid: &str, message: &[u8]) -> std::ops::Range<usize> {
        let start = self.buf.len();
        let uid = truncated_uid(uid);
        self.buf.put_u8(len_u8(uid.len()));
        self.buf.put_slice(uid);
        self.buf.put_u32(len_u32(message.len()));
        self.buf.put_slice(message);
        start..self.buf.len()
    }

    /// Appends an entry already encoded by [`BroadcastPushBuilder::push_entry`] (copied from another frame).
    pub fn push_encoded_entry(&mut self, encoded: &[u8]) {
        self.buf.put_slice(encoded);
    }

    /// True when no entry has been added.
    pub fn is_empty(&self) -> bool {
        self.buf.len() == SERVER_HEADER_LEN + GROUP_ID_LEN
    }

    /// Patches the length and freezes the frame.
    pub fn finish(mut self) -> Bytes {
        let len = len_u32(self.buf.len() - SERVER_HEADER_LEN).to_be_bytes();
        if let Some(slot) = self.buf.get_mut(4..SERVER_HEADER_LEN) {
            slot.copy_from_slice(&len);
        }
        self.buf.freeze()
    }
}

/// A 111/112 notification as a client reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberPush {
    /// The group.
    pub group: GroupId,
    /// Who joined or left.
    pub uid: String,
    /// The custom message.
    pub message: Bytes,
}

/// Parses a 111/112 push payload.
pub fn parse_member_push(payload: &Bytes) -> Result<MemberPush, PushError> {
    let mut p = payload.clone();
    let group = take_group(&mut p)?;
    let uid = take_uid(&mut p)?;
    Ok(MemberPush {
        group,
        uid,
        message: p,
    })
}

/// One entry of a 113 push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BroadcastEntry {
    /// The sender; empty for an announce.
    pub uid: String,
    /// The message.
    pub message: Bytes,
}

/// Parses a 113 push payload into its group and entries. Allocation is bounded by the payload: each
/// entry takes at least five bytes.
pub fn parse_broadcast_push(payload: &Bytes) -> Result<(GroupId, Vec<BroadcastEntry>), PushError> {
    let mut p = payload.clone();
    let group = take_group(&mut p)?;
    let mut entries = Vec::new();
    while p.has_remaining() {
        let uid = take_uid(&mut p)?;
        if p.remaining() < 4 {
            return Err(PushError::Truncated);
        }
        let len = p.get_u32() as usize;
        if p.remaining() < len {
            return Err(PushError::Truncated);
        }
        entries.push(BroadcastEntry {
            uid,
            message: p.split_to(len),
        });
    }
    Ok((group, entries))
}

/// The payload of a Bad or Err response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorPayload {
    /// See [`super::code`].
    pub code: u16,
    /// The group the refused command named, if it named one.
    pub group: Option<GroupId>,
    /// Human-readable reason.
    pub message: String,
}

/// Encodes `code | gid_len (0 or 52) | group_id | message` into a whole server frame.
pub fn encode_error_payload(
    ver: u8,
    cmd: u16,
    status: Status,
    code: u16,
    group: Option<&GroupId>,
    message: &str,
) -> Bytes {
    let gid_len = group.map_or(0, |_| GROUP_ID_LEN);
    let len = 2 + 1 + gid_len + message.len();
    let mut out = BytesMut::with_capacity(SERVER_HEADER_LEN + len);
    put_server_header(&mut out, ver, cmd, status, len_u32(len));
    out.put_u16(code);
    out.put_u8(len_u8(gid_len));
    if let Some(group) = group {
        out.put_slice(group.as_bytes());
    }
    out.put_slice(message.as_bytes());
    out.freeze()
}

/// Parses a Bad or Err payload.
pub fn parse_error_payload(payload: &Bytes) -> Result<ErrorPayload, PushError> {
    let mut p = payload.clone();
    if p.remaining() < 3 {
        return Err(PushError::Truncated);
    }
    let code = p.get_u16();
    let group = match p.get_u8() {
        0 => None,
        52 => Some(take_group(&mut p)?),
        _ => return Err(PushError::BadGroupIdLength),
    };
    let message = String::from_utf8(p.to_vec()).map_err(|_| PushError::NotUtf8)?;
    Ok(ErrorPayload {
        code,
        group,
        message,
    })
}

fn take_group(p: &mut Bytes) -> Result<GroupId, PushError> {
    if p.remaining() < GROUP_ID_LEN {
        return Err(PushError::Truncated);
    }
    GroupId::from_bytes(&p.split_to(GROUP_ID_LEN)).map_err(|_| PushError::BadGroupId)
}

fn take_uid(p: &mut Bytes) -> Result<String, PushError> {
    if !p.has_remaining() {
        return Err(PushError::Truncated);
    }
    let len = usize::from(p.get_u8());
    if p.remaining() < len {
        return Err(PushError::Truncated);
    }
    String::from_utf8(p.split_to(len).to_vec()).map_err(|_| PushError::NotUtf8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::decode_server_frame;

    const GID: &[u8; 52] = b"AA11111222223333344444555556666677777888889999900000";

    fn gid() -> GroupId {
        GroupId::from_bytes(GID).unwrap()
    }

    #[test]
    fn golden_member_push() {
        let frame = member_push(1, 111, &gid(), "ab", b"hi");
        let expected = [
            &[1, 0, 111, 0xFF, 0, 0, 0, 57][..],
            GID,
            &[2, b'a', b'b', b'h', b'i'],
        ]
        .concat();
        assert_eq!(&frame[..], &expected[..]);
        let decoded = decode_server_frame(&mut BytesMut::from(&frame[..]), 1024)
            .unwrap()
            .unwrap();
        let push = parse_member_push(&decoded.payload).unwrap();
        assert_eq!((push.uid.as_str(), &push.message[..]), ("ab", &b"hi"[..]));
    }

    #[test]
    fn golden_broadcast_push_with_announce_entry() {
        let mut builder = BroadcastPushBuilder::new(1, 113, &gid(), 0);
        assert!(builder.is_empty());
        let first = builder.push_entry("u", b"m1");
        builder.push_entry("", b"A");
        let frame = builder.finish();
        let expected = [
            &[1, 0, 113, 0xFF, 0, 0, 0, 52 + 8 + 6][..],
            GID,
            &[1, b'u', 0, 0, 0, 2, b'm', b'1'],
            &[0, 0, 0, 0, 1, b'A'],
        ]
        .concat();
        assert_eq!(&frame[..], &expected[..]);
        assert_eq!(&frame[first], &[1, b'u', 0, 0, 0, 2, b'm', b'1']);
        let (group, entries) = parse_broadcast_push(&frame.slice(SERVER_HEADER_LEN..)).unwrap();
        assert_eq!(group, gid());
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[1].uid, "");
    }

    #[test]
    fn golden_error_payload() {
        let frame = encode_error_payload(1, 111, Status::Bad, 200, Some(&gid()), "no");
        let expected = [&[1, 0, 111, 4, 0, 0, 0, 57][..], &[0, 200, 52], GID, b"no"].concat();
        assert_eq!(&frame[..], &expected[..]);
        let parsed = parse_error_payload(&frame.slice(SERVER_HEADER_LEN..)).unwrap();
        assert_eq!(
            parsed,
            ErrorPayload {
                code: 200,
                group: Some(gid()),
                message: "no".into()
            }
        );
        let no_group = encode_error_payload(0, 4, Status::Bad, 3, None, "");
        assert_eq!(&no_group[..], &[0, 0, 4, 4, 0, 0, 0, 3, 0, 3, 0]);
    }

    #[test]
    fn truncated_pushes_are_errors() {
        let frame = member_push(1, 111, &gid(), "ab", b"");
        let payload = frame.slice(SERVER_HEADER_LEN..);
        for cut in 0..payload.len() {
            assert!(
                parse_member_push(&payload.slice(..cut)).is_err(),
                "cut {cut}"
            );
        }
        let mut builder = BroadcastPushBuilder::new(1, 113, &gid(), 0);
        builder.push_entry("u", b"msg");
        let payload = builder.finish().slice(SERVER_HEADER_LEN..);
        for cut in GROUP_ID_LEN + 1..payload.len() {
            assert_eq!(
                parse_broadcast_push(&payload.slice(..cut)),
                Err(PushError::Truncated)
            );
        }
        assert_eq!(
            parse_error_payload(&Bytes::from_static(&[0, 1, 7])),
            Err(PushError::BadGroupIdLength)
        );
    }
}
