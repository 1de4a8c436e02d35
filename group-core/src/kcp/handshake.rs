//! The server's half of the UDP handshake, answered without keeping any state.
//!
//! A client opens with a reliable datagram, cookie 0, whose KCP push (sn 0) is the one-byte hello. A
//! server that opened a session for every such datagram would let anyone with a spoofed source address
//! hold sessions and connection slots, and make the server resend its hello to the victim address (an
//! amplifier). Instead the server answers each opening datagram with exactly one datagram, no longer than
//! what it received, that is exactly what a fresh session would have sent first: the envelope with the
//! session cookie, and one KCP push (sn 0) of the server's hello whose `una` of 1 acknowledges the client's
//! hello. The cookie is a MAC of the client's address and the time (the caller computes it), so only a
//! client that received the answer can echo it; the first datagram that carries a valid cookie from an
//! unknown address opens the session, with [`Kcp::after_stateless_hello`] picking up where the answer
//! left off. The wire is unchanged: a client cannot tell this from a server that kept state.

use super::Kcp;
use super::envelope::{CHANNEL_RELIABLE, CONV, ENVELOPE_LEN, Envelope, KIND_HELLO, wrap};
use super::segment::{CMD_PUSH, Header, OVERHEAD, split};

/// Size of [`stateless_hello`]'s datagram, which is also the size of a minimal opening datagram.
pub const STATELESS_HELLO_LEN: usize = ENVELOPE_LEN + OVERHEAD + 1;

/// True for a client's opening datagram: reliable channel, cookie 0, and a KCP push with sn 0, in one
/// fragment, carrying the one-byte hello.
pub fn is_opening(envelope: &Envelope<'_>) -> bool {
    envelope.cookie == 0 && carries_hello(envelope)
}

/// True for the server's answer to an opening: the same push of its hello, under a non-zero cookie.
/// A client takes its session cookie from this datagram and from no other: a server may still be sending
/// to the client's address under an older session's cookie (an earlier client on the same address and
/// port, whose session the new one has not replaced yet).
pub fn is_server_hello(envelope: &Envelope<'_>) -> bool {
    envelope.cookie != 0 && carries_hello(envelope)
}

/// True for a datagram that can be a session's first after the stateless hello: reliable, and every KCP
/// segment in it acknowledges nothing past the server's hello (`una` at most 1), since the server sends
/// nothing else before the session opens. A datagram of a session that got further (a client's late
/// one, after that session ended, under a cookie still valid) acknowledges more, and must not open a
/// new session that its client knows nothing of.
pub fn can_open_session(envelope: &Envelope<'_>) -> bool {
    if envelope.channel != CHANNEL_RELIABLE {
        return false;
    }
    let (segments, error) = split(envelope.body, CONV);
    error.is_none() && !segments.is_empty() && segments.iter().all(|(h, _)| h.una <= 1)
}

/// Reliable channel and a KCP push with sn 0, in one fragment, carrying the one-byte hello.
fn carries_hello(envelope: &Envelope<'_>) -> bool {
    if envelope.channel != CHANNEL_RELIABLE {
        return false;
    }
    let (segments, error) = split(envelope.body, CONV);
    error.is_none()
        && segments
            .iter()
            .any(|(h, data)| h.cmd == CMD_PUSH && h.sn == 0 && h.frg == 0 && *data == [KIND_HELLO])
}

/// The answer to an opening datagram: the server's hello as a fresh session sends it, under `cookie`,
/// acknowledging the client's hello. `wnd` is the receive window to advertise and `ts` the server's
/// clock in ms. Always [`STATELESS_HELLO_LEN`] bytes.
pub fn stateless_hello(cookie: u32, wnd: u16, ts: u32) -> Vec<u8> {
    let mut body = Vec::with_capacity(OVERHEAD + 1);
    Header {
        conv: CONV,
        cmd: CMD_PUSH,
        frg: 0,
        wnd,
        ts,
        sn: 0,
        una: 1,
        len: 1,
    }
    .encode(&mut body);
    body.push(KIND_HELLO);
    wrap(CHANNEL_RELIABLE, cookie, &body)
}

impl Kcp {
    /// The server's conversation after [`stateless_hello`]: the client's hello (sn 0) was received and
    /// acknowledged, and the server's hello (sn 0) was sent and, since the client echoed the cookie that
    /// came with it, received. Both sides continue from sequence number 1.
    pub fn after_stateless_hello(conv: u32, config: super::KcpConfig) -> Kcp {
        let mut kcp = Kcp::new(conv, config);
        kcp.snd_una = 1;
        kcp.snd_nxt = 1;
        kcp.rcv_nxt = 1;
        kcp
    }
}

#[cfg(test)]
mod tests {
    use super::super::KcpConfig;
    use super::super::envelope::{CHANNEL_UNRELIABLE, KIND_DATA};
    use super::*;

    fn client_opening() -> (Kcp, Vec<u8>) {
        let mut client = Kcp::new(CONV, KcpConfig::default());
        client.send(&[KIND_HELLO]).unwrap();
        client.update(0);
        let datagram = client.poll_transmit().unwrap();
        (client, wrap(CHANNEL_RELIABLE, 0, &datagram))
    }

    #[test]
    fn a_clients_first_datagram_is_an_opening_and_is_no_shorter_than_the_answer() {
        let (_, opening) = client_opening();
        assert!(is_opening(&Envelope::parse(&opening).unwrap()));
        assert_eq!(opening.len(), STATELESS_HELLO_LEN);
        assert_eq!(stateless_hello(7, 256, 0).len(), STATELESS_HELLO_LEN);
        // Not openings: a cookie, the unreliable channel, a later sequence number.
        let mut with_cookie = opening.clone();
        with_cookie[4] = 1;
        assert!(!is_opening(&Envelope::parse(&with_cookie).unwrap()));
        let mut unreliable = opening.clone();
        unreliable[0] = CHANNEL_UNRELIABLE;
        assert!(!is_opening(&Envelope::parse(&unreliable).unwrap()));
        let mut later = opening.clone();
        later[ENVELOPE_LEN + 12] = 1; // sn, little-endian, at offset 12 of the segment
        assert!(!is_opening(&Envelope::parse(&later).unwrap()));
    }

    #[test]
    fn the_servers_answer_is_a_server_hello_and_nothing_else_is() {
        let answer = stateless_hello(7, 256, 0);
        assert!(is_server_hello(&Envelope::parse(&answer).unwrap()));
        let (_, opening) = client_opening();
        assert!(
            !is_server_hello(&Envelope::parse(&opening).unwrap()),
            "cookie 0"
        );
        let disconnect = wrap(CHANNEL_UNRELIABLE, 7, &[5]);
        assert!(!is_server_hello(&Envelope::parse(&disconnect).unwrap()));
        let mut data = Kcp::after_stateless_hello(CONV, KcpConfig::default());
        data.send(&[KIND_DATA, 1]).unwrap();
        data.update(0);
        let later = wrap(CHANNEL_RELIABLE, 7, &data.poll_transmit().unwrap());
        assert!(
            !is_server_hello(&Envelope::parse(&later).unwrap()),
            "a push after sn 0"
        );
    }

    /// A client's datagrams right after the hello acknowledge only the hello and may open a session;
    /// once the client has received a response (sn 1), its datagrams acknowledge that too and may not.
    #[test]
    fn only_a_datagram_from_right_after_the_hello_can_open_a_session() {
        let (mut client, _) = client_opening();
        client
            .input(
                0,
                Envelope::parse(&stateless_hello(7, 256, 0)).unwrap().body,
            )
            .unwrap();
        client.send(&[KIND_DATA, 1]).unwrap();
        client.update(10);
        let first = wrap(CHANNEL_RELIABLE, 7, &client.poll_transmit().unwrap());
        assert!(can_open_session(&Envelope::parse(&first).unwrap()));

        let mut server = Kcp::after_stateless_hello(CONV, KcpConfig::default());
        server.send(&[KIND_DATA, 2]).unwrap();
        server.update(10);
        client.input(15, &server.poll_transmit().unwrap()).unwrap();
        client.send(&[KIND_DATA, 3]).unwrap();
        client.update(20);
        let later = wrap(CHANNEL_RELIABLE, 7, &client.poll_transmit().unwrap());
        assert!(!can_open_session(&Envelope::parse(&later).unwrap()));

        let unreliable = wrap(CHANNEL_UNRELIABLE, 7, &[5]);
        assert!(!can_open_session(&Envelope::parse(&unreliable).unwrap()));
        let empty = wrap(CHANNEL_RELIABLE, 7, &[]);
        assert!(!can_open_session(&Envelope::parse(&empty).unwrap()));
    }

    /// The client cannot tell a stateless server from one that kept state: it gets the hello, its own
    /// hello counts as acknowledged, and data flows both ways from sequence number 1.
    #[test]
    fn a_conversation_resumes_after_the_stateless_hello() {
        let (mut client, _) = client_opening();
        let answer = stateless_hello(0xDEAD_BEEF, 256, 0);
        let envelope = Envelope::parse(&answer).unwrap();
        assert_eq!(envelope.cookie, 0xDEAD_BEEF);
        client.input(0, envelope.body).unwrap();
        assert_eq!(client.recv().as_deref(), Some(&[KIND_HELLO][..]));
        assert_eq!(
            client.waiting(),
            0,
            "the answer acknowledged the client's hello"
        );

        let mut server = Kcp::after_stateless_hello(CONV, KcpConfig::default());
        client.send(&[KIND_DATA, 1, 2, 3]).unwrap();
        server.send(&[KIND_DATA, 9]).unwrap();
        for now in (10..400).step_by(10) {
            client.update(now);
            server.update(now);
            while let Some(d) = client.poll_transmit() {
                server.input(now, &d).unwrap();
            }
            while let Some(d) = server.poll_transmit() {
                client.input(now, &d).unwrap();
            }
        }
        assert_eq!(server.recv().as_deref(), Some(&[KIND_DATA, 1, 2, 3][..]));
        assert_eq!(
            server.recv(),
            None,
            "the client's hello is not delivered twice"
        );
        assert_eq!(client.recv().as_deref(), Some(&[KIND_DATA, 9][..]));
        assert_eq!((client.waiting(), server.waiting()), (0, 0));
    }
}
