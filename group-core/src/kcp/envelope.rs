//! The UDP envelope around KCP, in the style of kcp2k (Unity's KCP transport):
//!
//! `channel:u8 (1 reliable, 2 unreliable) | cookie:u32 (big-endian) | body`
//!
//! - Reliable body: KCP segments (conversation 0). Each KCP message is `kind:u8 | payload`: 1 hello
//!   (handshake), 2 ping (transport keep-alive, no frame), 3 data (one or more whole protocol frames).
//! - Unreliable body: `kind:u8 | payload`: 4 data (one whole frame), 5 disconnect.
//!
//! The client opens with a reliable Hello and cookie 0. Every server datagram carries the cookie the
//! server chose for the session; the client echoes it in every later datagram, and the server drops
//! datagrams whose cookie does not match, so a spoofed source address cannot touch a session.

/// Envelope header size: channel byte and cookie.
pub const ENVELOPE_LEN: usize = 5;
/// KCP-carried datagram.
pub const CHANNEL_RELIABLE: u8 = 1;
/// Raw datagram.
pub const CHANNEL_UNRELIABLE: u8 = 2;
/// Reliable message kinds.
pub const KIND_HELLO: u8 = 1;
/// Transport keep-alive.
pub const KIND_PING: u8 = 2;
/// Reliable protocol frames.
pub const KIND_DATA: u8 = 3;
/// Unreliable protocol frame.
pub const KIND_UNRELIABLE_DATA: u8 = 4;
/// Unreliable: the sender is closing the session.
pub const KIND_DISCONNECT: u8 = 5;
/// KCP conversation used by every session (sessions are told apart by address and cookie).
pub const CONV: u32 = 0;

/// A parsed envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Envelope<'a> {
    /// [`CHANNEL_RELIABLE`] or [`CHANNEL_UNRELIABLE`].
    pub channel: u8,
    /// The session cookie (0 in the client's first datagrams).
    pub cookie: u32,
    /// KCP segments (reliable) or `kind | payload` (unreliable).
    pub body: &'a [u8],
}

/// Why a datagram is not an envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// Fewer than 5 bytes.
    #[error("datagram shorter than the 5-byte envelope")]
    TooShort,
    /// A channel byte other than 1 or 2.
    #[error("unknown channel {0}")]
    UnknownChannel(u8),
}

impl<'a> Envelope<'a> {
    /// Parses a datagram.
    pub fn parse(datagram: &'a [u8]) -> Result<Envelope<'a>, EnvelopeError> {
        let Some(&[channel, c0, c1, c2, c3]) = datagram.first_chunk::<ENVELOPE_LEN>() else {
            return Err(EnvelopeError::TooShort);
        };
        if channel != CHANNEL_RELIABLE && channel != CHANNEL_UNRELIABLE {
            return Err(EnvelopeError::UnknownChannel(channel));
        }
        let body = datagram.get(ENVELOPE_LEN..).unwrap_or_default();
        Ok(Envelope {
            channel,
            cookie: u32::from_be_bytes([c0, c1, c2, c3]),
            body,
        })
    }
}

/// Builds a datagram: envelope header, then `body`.
pub fn wrap(channel: u8, cookie: u32, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(ENVELOPE_LEN + body.len());
    out.push(channel);
    out.extend_from_slice(&cookie.to_be_bytes());
    out.extend_from_slice(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_envelope_round_trips() {
        let datagram = wrap(CHANNEL_UNRELIABLE, 0xA1B2_C3D4, &[KIND_DISCONNECT]);
        assert_eq!(datagram, [2, 0xA1, 0xB2, 0xC3, 0xD4, 5]);
        let parsed = Envelope::parse(&datagram).unwrap();
        assert_eq!(
            (parsed.channel, parsed.cookie, parsed.body),
            (2, 0xA1B2_C3D4, &[5u8][..])
        );
        assert_eq!(Envelope::parse(&[1, 0, 0]), Err(EnvelopeError::TooShort));
        assert_eq!(
            Envelope::parse(&[9, 0, 0, 0, 0]),
            Err(EnvelopeError::UnknownChannel(9))
        );
    }
}
