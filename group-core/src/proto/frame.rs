//! Framing: split a byte stream into frames and write frames. Check first, then parse: nothing here
//! reads past what it has checked, allocates more than the frame's declared length (itself bounded by the
//! caller's maximum), or panics on any input.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::{CLIENT_HEADER_LEN, SERVER_HEADER_LEN, Status};

/// Why bytes are not (yet) a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// More bytes are needed; read more and try again. `needed` is how many more, at least.
    #[error("incomplete frame: {needed} more bytes needed")]
    Incomplete {
        /// Minimum number of further bytes before the frame can be complete.
        needed: usize,
    },
    /// The declared payload length exceeds the maximum. On a stream the connection cannot resynchronise:
    /// answer Bad (code PAYLOAD_TOO_LARGE) and close.
    #[error("frame payload of {len} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// Version byte of the refused frame, so the Bad response can echo it.
        ver: u8,
        /// Command of the refused frame.
        cmd: u16,
        /// The declared length.
        len: u32,
        /// The configured maximum.
        max: u32,
    },
    /// A server frame with a status byte that is not Ok, Bad, Err or Push.
    #[error("unknown status byte {0:#04x}")]
    BadStatus(u8),
}

/// The fixed part of a client frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientHeader {
    /// Protocol version byte: 0 control, 1 group, 2+ server code.
    pub ver: u8,
    /// Command number.
    pub cmd: u16,
    /// Payload length.
    pub len: u32,
}

impl ClientHeader {
    /// Reads a header from the start of `buf`, refusing lengths above `max_payload`.
    pub fn parse(buf: &[u8], max_payload: u32) -> Result<ClientHeader, FrameError> {
        let Some(&[ver, c0, c1, l0, l1, l2, l3]) = buf.first_chunk::<CLIENT_HEADER_LEN>() else {
            return Err(FrameError::Incomplete {
                needed: CLIENT_HEADER_LEN - buf.len(),
            });
        };
        let cmd = u16::from_be_bytes([c0, c1]);
        let len = u32::from_be_bytes([l0, l1, l2, l3]);
        if len > max_payload {
            return Err(FrameError::TooLarge {
                ver,
                cmd,
                len,
                max: max_payload,
            });
        }
        Ok(ClientHeader { ver, cmd, len })
    }
}

/// A whole client frame. The payload shares the read buffer's allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFrame {
    /// Protocol version byte.
    pub ver: u8,
    /// Command number.
    pub cmd: u16,
    /// Payload bytes.
    pub payload: Bytes,
}

/// Takes one frame off the front of `buf`. `Ok(None)` means more bytes are needed and `buf` is untouched;
/// the caller should reserve `needed` more and read again.
pub fn decode_client_frame(
    buf: &mut BytesMut,
    max_payload: u32,
) -> Result<Option<ClientFrame>, FrameError> {
    let header = match ClientHeader::parse(buf, max_payload) {
        Ok(header) => header,
        Err(FrameError::Incomplete { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    let total = CLIENT_HEADER_LEN + header.len as usize;
    if buf.len() < total {
        return Ok(None);
    }
    buf.advance(CLIENT_HEADER_LEN);
    let payload = buf.split_to(header.len as usize).freeze();
    Ok(Some(ClientFrame {
        ver: header.ver,
        cmd: header.cmd,
        payload,
    }))
}

/// Appends a client frame to `out`. Used by clients and tests.
pub fn encode_client_frame(ver: u8, cmd: u16, payload: &[u8], out: &mut BytesMut) {
    out.reserve(CLIENT_HEADER_LEN + payload.len());
    out.put_u8(ver);
    out.put_u16(cmd);
    out.put_u32(len_u32(payload.len()));
    out.put_slice(payload);
}

/// The fixed part of a server frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerHeader {
    /// Protocol version byte.
    pub ver: u8,
    /// Command number.
    pub cmd: u16,
    /// Response status, or Push.
    pub status: Status,
    /// Payload length.
    pub len: u32,
}

impl ServerHeader {
    /// Reads a header from the start of `buf`, refusing lengths above `max_payload`.
    pub fn parse(buf: &[u8], max_payload: u32) -> Result<ServerHeader, FrameError> {
        let Some(&[ver, c0, c1, status, l0, l1, l2, l3]) = buf.first_chunk::<SERVER_HEADER_LEN>()
        else {
            return Err(FrameError::Incomplete {
                needed: SERVER_HEADER_LEN - buf.len(),
            });
        };
        let cmd = u16::from_be_bytes([c0, c1]);
        let status = Status::from_u8(status).ok_or(FrameError::BadStatus(status))?;
        let len = u32::from_be_bytes([l0, l1, l2, l3]);
        if len > max_payload {
            return Err(FrameError::TooLarge {
                ver,
                cmd,
                len,
                max: max_payload,
            });
        }
        Ok(ServerHeader {
            ver,
            cmd,
            status,
            len,
        })
    }
}

/// A whole server frame, as a client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerFrame {
    /// Protocol version byte.
    pub ver: u8,
    /// Command number.
    pub cmd: u16,
    /// Response status, or Push.
    pub status: Status,
    /// Payload bytes.
    pub payload: Bytes,
}

/// Takes one server frame off the front of `buf`; `Ok(None)` means more bytes are needed.
pub fn decode_server_frame(
    buf: &mut BytesMut,
    max_payload: u32,
) -> Result<Option<ServerFrame>, FrameError> {
    let header = match ServerHeader::parse(buf, max_payload) {
        Ok(header) => header,
        Err(FrameError::Incomplete { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    let total = SERVER_HEADER_LEN + header.len as usize;
    if buf.len() < total {
        return Ok(None);
    }
    buf.advance(SERVER_HEADER_LEN);
    let payload = buf.split_to(header.len as usize).freeze();
    Ok(Some(ServerFrame {
        ver: header.ver,
        cmd: header.cmd,
        status: header.status,
        payload,
    }))
}

/// Appends a server frame to `out`.
pub fn encode_server_frame(ver: u8, cmd: u16, status: Status, payload: &[u8], out: &mut BytesMut) {
    out.reserve(SERVER_HEADER_LEN + payload.len());
    put_server_header(out, ver, cmd, status, len_u32(payload.len()));
    out.put_slice(payload);
}

pub(crate) fn put_server_header(out: &mut BytesMut, ver: u8, cmd: u16, status: Status, len: u32) {
    out.put_u8(ver);
    out.put_u16(cmd);
    out.put_u8(status as u8);
    out.put_u32(len);
}

/// Frame lengths are bounded by configuration far below 4 GiB; saturate rather than wrap if a caller
/// ever passes more, so the peer sees a refusable length instead of a corrupt stream.
pub(crate) fn len_u32(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_client_frame() {
        let mut out = BytesMut::new();
        encode_client_frame(1, 113, b"hi", &mut out);
        assert_eq!(&out[..], &[1, 0, 113, 0, 0, 0, 2, b'h', b'i']);
        let frame = decode_client_frame(&mut out, 64).unwrap().unwrap();
        assert_eq!(
            (frame.ver, frame.cmd, &frame.payload[..]),
            (1, 113, &b"hi"[..])
        );
        assert!(out.is_empty());
    }

    #[test]
    fn golden_server_frame() {
        let mut out = BytesMut::new();
        encode_server_frame(0, 3, Status::Ok, b"abc", &mut out);
        assert_eq!(&out[..], &[0, 0, 3, 1, 0, 0, 0, 3, b'a', b'b', b'c']);
        let frame = decode_server_frame(&mut out, 64).unwrap().unwrap();
        assert_eq!(frame.status, Status::Ok);
        assert_eq!(&frame.payload[..], b"abc");
    }

    #[test]
    fn partial_input_is_incomplete_and_untouched() {
        let mut whole = BytesMut::new();
        encode_client_frame(1, 111, &[7; 10], &mut whole);
        for cut in 0..whole.len() {
            let mut part = BytesMut::from(&whole[..cut]);
            assert_eq!(decode_client_frame(&mut part, 64), Ok(None), "cut at {cut}");
            assert_eq!(part.len(), cut);
        }
        assert_eq!(
            ClientHeader::parse(&whole[..3], 64),
            Err(FrameError::Incomplete { needed: 4 })
        );
    }

    #[test]
    fn oversized_length_is_refused_before_buffering() {
        let mut buf = BytesMut::from(&[1u8, 0, 113, 0xFF, 0xFF, 0xFF, 0xFF][..]);
        assert_eq!(
            decode_client_frame(&mut buf, 65_536),
            Err(FrameError::TooLarge {
                ver: 1,
                cmd: 113,
                len: u32::MAX,
                max: 65_536
            })
        );
    }

    #[test]
    fn back_to_back_frames_split_cleanly() {
        let mut buf = BytesMut::new();
        encode_client_frame(0, 1, b"", &mut buf);
        encode_client_frame(0, 3, b"xyz", &mut buf);
        assert_eq!(decode_client_frame(&mut buf, 64).unwrap().unwrap().cmd, 1);
        assert_eq!(
            &decode_client_frame(&mut buf, 64).unwrap().unwrap().payload[..],
            b"xyz"
        );
        assert_eq!(decode_client_frame(&mut buf, 64), Ok(None));
    }

    #[test]
    fn unknown_server_status_is_an_error() {
        let mut buf = BytesMut::from(&[0u8, 0, 1, 9, 0, 0, 0, 0][..]);
        assert_eq!(
            decode_server_frame(&mut buf, 64),
            Err(FrameError::BadStatus(9))
        );
    }
}
