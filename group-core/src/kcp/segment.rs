//! KCP segment header: 24 bytes, little-endian, exactly as the C reference (ikcp.c) encodes it.
//!
//! `conv:u32 | cmd:u8 | frg:u8 | wnd:u16 | ts:u32 | sn:u32 | una:u32 | len:u32 | data[len]`

use bytes::BufMut;

/// Header size (IKCP_OVERHEAD).
pub const OVERHEAD: usize = 24;
/// Data segment.
pub const CMD_PUSH: u8 = 81;
/// Acknowledgement.
pub const CMD_ACK: u8 = 82;
/// Window probe: "tell me your window".
pub const CMD_WASK: u8 = 83;
/// Window size answer.
pub const CMD_WINS: u8 = 84;

/// A decoded segment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Conversation ID: both ends must agree.
    pub conv: u32,
    /// One of the `CMD_*` values.
    pub cmd: u8,
    /// Fragments that follow this one in the same message (message mode).
    pub frg: u8,
    /// Sender's free receive window, in segments.
    pub wnd: u16,
    /// Sender's clock (ms) when sent; echoed in ACKs for RTT.
    pub ts: u32,
    /// Sequence number.
    pub sn: u32,
    /// Sender's next expected sequence number: everything below is acknowledged.
    pub una: u32,
    /// Data length.
    pub len: u32,
}

/// Why a datagram is not a KCP segment sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SegmentError {
    /// Fewer than 24 bytes where a header should start.
    #[error("datagram shorter than a KCP header")]
    TooShort,
    /// The segment belongs to another conversation.
    #[error("conversation {got} is not {expected}")]
    WrongConversation {
        /// The conversation this endpoint speaks.
        expected: u32,
        /// The one in the segment.
        got: u32,
    },
    /// The header's length runs past the end of the datagram.
    #[error("segment length {len} exceeds the {remaining} bytes left")]
    Truncated {
        /// Declared data length.
        len: u32,
        /// Bytes left in the datagram.
        remaining: usize,
    },
    /// A command byte other than 81..=84.
    #[error("unknown KCP command {0}")]
    UnknownCommand(u8),
}

impl Header {
    /// Reads a header from the start of `buf` (check-then-parse: never reads past the slice).
    pub fn decode(buf: &[u8]) -> Result<Header, SegmentError> {
        let Some(h) = buf.first_chunk::<OVERHEAD>() else {
            return Err(SegmentError::TooShort);
        };
        let [c0, c1, c2, c3, cmd, frg, w0, w1, t0, t1, t2, t3] =
            *h.first_chunk::<12>().unwrap_or(&[0; 12]);
        let [s0, s1, s2, s3, u0, u1, u2, u3, l0, l1, l2, l3] =
            *h.last_chunk::<12>().unwrap_or(&[0; 12]);
        Ok(Header {
            conv: u32::from_le_bytes([c0, c1, c2, c3]),
            cmd,
            frg,
            wnd: u16::from_le_bytes([w0, w1]),
            ts: u32::from_le_bytes([t0, t1, t2, t3]),
            sn: u32::from_le_bytes([s0, s1, s2, s3]),
            una: u32::from_le_bytes([u0, u1, u2, u3]),
            len: u32::from_le_bytes([l0, l1, l2, l3]),
        })
    }

    /// Appends the header to `out`.
    pub fn encode(&self, out: &mut impl BufMut) {
        out.put_u32_le(self.conv);
        out.put_u8(self.cmd);
        out.put_u8(self.frg);
        out.put_u16_le(self.wnd);
        out.put_u32_le(self.ts);
        out.put_u32_le(self.sn);
        out.put_u32_le(self.una);
        out.put_u32_le(self.len);
    }
}

/// Splits a datagram into (header, data) pairs for conversation `conv`, in order. Stops at the first
/// error, returning it after the segments before it (as ikcp applies the segments it has read).
pub fn split(datagram: &[u8], conv: u32) -> (Vec<(Header, &[u8])>, Option<SegmentError>) {
    let mut segments = Vec::new();
    let mut rest = datagram;
    if rest.len() < OVERHEAD {
        return (segments, Some(SegmentError::TooShort));
    }
    while rest.len() >= OVERHEAD {
        let header = match Header::decode(rest) {
            Ok(header) => header,
            Err(e) => return (segments, Some(e)),
        };
        if header.conv != conv {
            return (
                segments,
                Some(SegmentError::WrongConversation {
                    expected: conv,
                    got: header.conv,
                }),
            );
        }
        let body = rest.get(OVERHEAD..).unwrap_or_default();
        let len = header.len as usize;
        if body.len() < len {
            return (
                segments,
                Some(SegmentError::Truncated {
                    len: header.len,
                    remaining: body.len(),
                }),
            );
        }
        let (data, after) = body.split_at(len);
        if !(CMD_PUSH..=CMD_WINS).contains(&header.cmd) {
            return (segments, Some(SegmentError::UnknownCommand(header.cmd)));
        }
        segments.push((header, data));
        rest = after;
    }
    (segments, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_header_is_little_endian() {
        let header = Header {
            conv: 1,
            cmd: CMD_PUSH,
            frg: 2,
            wnd: 0x0102,
            ts: 3,
            sn: 4,
            una: 5,
            len: 2,
        };
        let mut out = Vec::new();
        header.encode(&mut out);
        out.extend_from_slice(b"hi");
        assert_eq!(
            out,
            [
                1, 0, 0, 0, 81, 2, 2, 1, 3, 0, 0, 0, 4, 0, 0, 0, 5, 0, 0, 0, 2, 0, 0, 0, b'h', b'i'
            ]
        );
        let (segments, error) = split(&out, 1);
        assert_eq!((segments.len(), error), (1, None));
        assert_eq!(segments[0], (header, &b"hi"[..]));
    }

    #[test]
    fn malformed_datagrams_are_errors() {
        let header = Header {
            conv: 7,
            cmd: CMD_ACK,
            frg: 0,
            wnd: 0,
            ts: 0,
            sn: 0,
            una: 0,
            len: 0,
        };
        let mut one = Vec::new();
        header.encode(&mut one);
        assert_eq!(split(&one[..10], 7).1, Some(SegmentError::TooShort));
        assert_eq!(
            split(&one, 8).1,
            Some(SegmentError::WrongConversation {
                expected: 8,
                got: 7
            })
        );
        let mut long = one.clone();
        long[20] = 9;
        assert_eq!(
            split(&long, 7).1,
            Some(SegmentError::Truncated {
                len: 9,
                remaining: 0
            })
        );
        let mut bad = one.clone();
        bad[4] = 99;
        assert_eq!(split(&bad, 7).1, Some(SegmentError::UnknownCommand(99)));
        // A good segment followed by garbage: the good one is kept.
        let mut two = one.clone();
        two.extend_from_slice(&[0xFF; 30]);
        let (segments, error) = split(&two, 7);
        assert_eq!(segments.len(), 1);
        assert!(error.is_some());
    }
}
