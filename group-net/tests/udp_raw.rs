//! UDP at the byte level, with our sans-IO KCP instead of the client: the handshake hands out a cookie, a
//! datagram with the wrong cookie cannot touch the session, and the broadcast `reliable` flag picks the
//! channel (KCP for reliable, a raw channel-2 datagram for unreliable).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use common::{Transport, bounded, config, next_push, start, user};
use group_core::kcp::envelope::{
    CHANNEL_RELIABLE, CHANNEL_UNRELIABLE, CONV, Envelope, KIND_DATA, KIND_DISCONNECT, KIND_HELLO,
    KIND_UNRELIABLE_DATA, wrap,
};
use group_core::kcp::handshake::is_server_hello;
use group_core::kcp::{Kcp, KcpConfig};
use group_core::proto::{CreateRequest, Request, ServerFrame, Status, decode_server_frame};
use group_net::ServerBuilder;
use group_net::client::Push;
use tokio::net::UdpSocket;

/// A hand-driven UDP client.
struct Raw {
    socket: UdpSocket,
    kcp: Kcp,
    cookie: u32,
    start: tokio::time::Instant,
    /// Frames of a reliable data message not yet returned by `next` (a message holds one or more).
    frames: VecDeque<ServerFrame>,
    /// Reliable data messages received.
    data_messages: usize,
    /// The server's clock stamp (KCP `ts`) on the last data segment received.
    last_stamp: Option<u32>,
}

/// What arrived, and on which channel.
#[derive(Debug)]
enum Got {
    Reliable(ServerFrame),
    Unreliable(ServerFrame),
    Hello,
    Disconnect,
}

impl Raw {
    async fn connect(server: SocketAddr) -> Raw {
        Raw::connect_from(server, "127.0.0.1:0".parse().unwrap()).await
    }

    /// Connects from `local`: a port another client used before stands for a restarted app behind
    /// the same NAT mapping.
    async fn connect_from(server: SocketAddr, local: SocketAddr) -> Raw {
        let socket = UdpSocket::bind(local).await.unwrap();
        socket.connect(server).await.unwrap();
        let mut raw = Raw {
            socket,
            kcp: Kcp::new(CONV, KcpConfig::default()),
            cookie: 0,
            start: tokio::time::Instant::now(),
            frames: VecDeque::new(),
            data_messages: 0,
            last_stamp: None,
        };
        raw.kcp.send(&[KIND_HELLO]).unwrap();
        raw.flush().await;
        let got = raw.next().await;
        assert!(matches!(got, Got::Hello), "{got:?}");
        assert_ne!(raw.cookie, 0, "the server hands out a non-zero cookie");
        raw
    }

    /// Says Hello as `uid` and checks the answer.
    async fn hello(&mut self, uid: &str) {
        self.request(Request::Hello {
            uid: uid.into(),
            token: Bytes::new(),
        })
        .await;
        let Got::Reliable(ok) = bounded("hello", self.next()).await else {
            panic!()
        };
        assert_eq!((ok.cmd, ok.status, ok.payload.len()), (4, Status::Ok, 16));
    }

    fn now(&self) -> u32 {
        u32::try_from(self.start.elapsed().as_millis()).unwrap()
    }

    async fn flush(&mut self) {
        self.kcp.update(self.now());
        self.kcp.flush(self.now());
        while let Some(d) = self.kcp.poll_transmit() {
            self.socket
                .send(&wrap(CHANNEL_RELIABLE, self.cookie, &d))
                .await
                .unwrap();
        }
    }

    async fn request(&mut self, request: Request) {
        let mut frame = BytesMut::new();
        request.encode(&mut frame);
        let mut message = vec![KIND_DATA];
        message.extend_from_slice(&frame);
        self.kcp.send(&message).unwrap();
        self.flush().await;
    }

    /// Joins `group` (without an announcement) and checks the answer.
    async fn join(&mut self, group: group_core::GroupId) {
        self.request(Request::Join {
            group,
            message: Bytes::new(),
        })
        .await;
        let Got::Reliable(joined) = bounded("join", self.next()).await else {
            panic!()
        };
        assert_eq!(joined.status, Status::Ok);
    }

    /// The next thing from the server, keeping KCP running meanwhile.
    async fn next(&mut self) -> Got {
        let mut buf = vec![0u8; 65_536];
        loop {
            if let Some(frame) = self.frames.pop_front() {
                return Got::Reliable(frame);
            }
            if let Some(message) = self.kcp.recv() {
                match message.split_first() {
                    Some((&KIND_HELLO, _)) => return Got::Hello,
                    Some((&KIND_DATA, frames)) => {
                        self.data_messages += 1;
                        self.frames = decode_all(frames);
                        continue;
                    }
                    other => panic!("unexpected reliable message {other:?}"),
                }
            }
            let received =
                tokio::time::timeout(Duration::from_millis(10), self.socket.recv(&mut buf)).await;
            if let Ok(Ok(len)) = received {
                let envelope = Envelope::parse(&buf[..len]).unwrap();
                if self.cookie == 0 {
                    if !is_server_hello(&envelope) {
                        continue; // an older session's, to this address before ours
                    }
                    self.cookie = envelope.cookie;
                }
                assert_eq!(
                    envelope.cookie, self.cookie,
                    "every server datagram carries the session cookie"
                );
                if envelope.channel == CHANNEL_UNRELIABLE {
                    return match envelope.body.split_first() {
                        Some((&KIND_UNRELIABLE_DATA, frame)) => Got::Unreliable(decode(frame)),
                        Some((&KIND_DISCONNECT, _)) => Got::Disconnect,
                        other => panic!("unexpected unreliable datagram {other:?}"),
                    };
                }
                self.last_stamp = data_stamp(envelope.body).or(self.last_stamp);
                self.kcp.input(self.now(), envelope.body).unwrap();
            }
            self.flush().await;
        }
    }
}

/// The stamp of the last data segment in a KCP datagram.
fn data_stamp(mut datagram: &[u8]) -> Option<u32> {
    use group_core::kcp::segment::{CMD_PUSH, Header, OVERHEAD};
    let mut stamp = None;
    while let Ok(header) = Header::decode(datagram) {
        if header.cmd == CMD_PUSH {
            stamp = Some(header.ts);
        }
        datagram = datagram
            .get(OVERHEAD + header.len as usize..)
            .unwrap_or_default();
    }
    stamp
}

fn decode(bytes: &[u8]) -> ServerFrame {
    let mut buf = BytesMut::from(bytes);
    let frame = decode_server_frame(&mut buf, u32::MAX).unwrap().unwrap();
    assert!(buf.is_empty(), "whole frames only");
    frame
}

/// A reliable data message's frames: one or more, whole.
fn decode_all(bytes: &[u8]) -> VecDeque<ServerFrame> {
    let mut buf = BytesMut::from(bytes);
    let mut frames = VecDeque::new();
    while let Some(frame) = decode_server_frame(&mut buf, u32::MAX).unwrap() {
        frames.push_back(frame);
    }
    assert!(!frames.is_empty() && buf.is_empty(), "whole frames only");
    frames
}

#[tokio::test]
async fn cookies_guard_sessions_and_the_reliable_flag_picks_the_channel() {
    let server = start(ServerBuilder::new(config())).await;
    let mut tcp = user(&server, Transport::Tcp, "tcp").await;
    let mut raw = bounded("handshake", Raw::connect(server.udp_addr().unwrap())).await;
    raw.hello("raw").await;

    let params = CreateRequest {
        allow_empty: false,
        join: true,
        ttl_s: 60,
        interval_ms: 0,
    };
    let group = bounded("create", tcp.create(params)).await.unwrap();
    raw.join(group).await;

    bounded(
        "send",
        tcp.broadcast(group, Bytes::from_static(b"fast"), false),
    )
    .await
    .unwrap();
    let got = bounded("unreliable", raw.next()).await;
    assert!(
        matches!(&got, Got::Unreliable(f) if f.cmd == 113 && f.payload.ends_with(b"fast")),
        "{got:?}"
    );
    bounded(
        "send",
        tcp.broadcast(group, Bytes::from_static(b"sure"), true),
    )
    .await
    .unwrap();
    let got = bounded("reliable", raw.next()).await;
    assert!(
        matches!(&got, Got::Reliable(f) if f.cmd == 113 && f.payload.ends_with(b"sure")),
        "{got:?}"
    );

    // A disconnect with the wrong cookie is ignored; the session lives on.
    let wrong = wrap(CHANNEL_UNRELIABLE, raw.cookie ^ 0x5555, &[KIND_DISCONNECT]);
    raw.socket.send(&wrong).await.unwrap();
    raw.request(Request::Ping(Bytes::from_static(b"alive?")))
        .await;
    let Got::Reliable(pong) = bounded("ping", raw.next()).await else {
        panic!()
    };
    assert_eq!(&pong.payload[..], b"alive?");

    // With the right cookie, the session ends and the other member hears of it.
    let right = wrap(CHANNEL_UNRELIABLE, raw.cookie, &[KIND_DISCONNECT]);
    raw.socket.send(&right).await.unwrap();
    let Push::Left { uid, .. } = next_push(&mut tcp).await else {
        panic!()
    };
    assert_eq!(uid, "raw");
}

#[tokio::test]
async fn stray_datagrams_open_no_session() {
    let server = start(ServerBuilder::new(config())).await;
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.connect(server.udp_addr().unwrap()).await.unwrap();
    // Garbage, a non-zero cookie, the unreliable channel, cookie 0 with a body that is not a KCP hello:
    // none of them may open a session (or hold a connection slot).
    let not_hello = wrap(CHANNEL_RELIABLE, 0, &[0; 30]);
    let strays = [
        vec![0xFFu8; 40],
        wrap(CHANNEL_RELIABLE, 99, &[0; 30]),
        wrap(CHANNEL_UNRELIABLE, 0, &[4]),
        not_hello,
    ];
    for datagram in strays {
        socket.send(&datagram).await.unwrap();
    }
    let mut buf = [0u8; 64];
    let answer = tokio::time::timeout(Duration::from_millis(300), socket.recv(&mut buf)).await;
    assert!(answer.is_err(), "no reply to stray datagrams");
    assert_eq!(server.accepted_connections(), 0, "no session was opened");
    // A well-behaved client still connects.
    let mut client = bounded(
        "udp",
        group_net::client::Client::connect_udp(server.udp_addr().unwrap()),
    )
    .await
    .unwrap();
    bounded("hello", client.hello("fine", "")).await.unwrap();
    assert_eq!(server.accepted_connections(), 1);
}

/// A UDP member gets a node turn's reliable broadcasts gathered into KCP messages of up to a segment
/// each, not one message (and one segment, header and ACK) per broadcast; each arrives whole and in
/// order.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_turns_reliable_broadcasts_share_kcp_messages() {
    use tokio::io::AsyncWriteExt;
    const SENT: u32 = 64;
    let mut cfg = config();
    cfg.limits.max_requests_per_second = 1_000_000;
    cfg.limits.max_inbound_bytes_per_second = 1 << 30;
    let server = start(ServerBuilder::new(cfg)).await;
    let (_owner, group, mut raw) = raw_member_of_owners_group(&server).await;

    // The sender writes its Hello, its Join and, once it is in, every broadcast at once: on one worker
    // the reader hands them all to the node before its turn.
    let mut sender = common::raw_burst_sender(&server, "sender", group).await;
    let Got::Reliable(announced) = bounded("the sender's join", raw.next()).await else {
        panic!()
    };
    assert_eq!(announced.status, Status::Push);
    let before = raw.data_messages;
    sender
        .write_all(&common::numbered_broadcasts(group, SENT))
        .await
        .unwrap();
    for n in 0..SENT {
        let Got::Reliable(push) = bounded("broadcast", raw.next()).await else {
            panic!()
        };
        assert_eq!(push.cmd, 113);
        assert!(push.payload.ends_with(&n.to_be_bytes()), "out of order");
    }
    let messages = raw.data_messages - before;
    assert!(
        messages <= 8,
        "{SENT} broadcasts came in {messages} KCP messages"
    );
}

/// An app restarted behind the same NAT mapping opens again from its old address and port while the
/// server still holds the old session: the new client gets in at once, the old session ends (its
/// groups hear it leave), and the old cookie can neither reach the new session nor replace it again.
#[tokio::test]
async fn a_client_opening_again_from_a_live_sessions_address_replaces_it() {
    let server = start(ServerBuilder::new(config())).await;
    let udp = server.udp_addr().unwrap();
    let mut owner = user(&server, Transport::Tcp, "owner").await;
    let group = bounded("create", owner.create(common::kept_group()))
        .await
        .unwrap();
    let mut first = bounded("first handshake", Raw::connect(udp)).await;
    first.hello("first").await;
    first
        .request(Request::Join {
            group,
            message: Bytes::from_static(b"hi"),
        })
        .await;
    let Got::Reliable(joined) = bounded("join", first.next()).await else {
        panic!()
    };
    assert_eq!(joined.status, Status::Ok);
    assert!(matches!(next_push(&mut owner).await, Push::Joined { .. }));
    let (address, old_cookie) = (first.socket.local_addr().unwrap(), first.cookie);
    drop(first); // the app dies without a goodbye

    let mut second = bounded("second handshake", Raw::connect_from(udp, address)).await;
    assert_ne!(second.cookie, old_cookie, "a new session, a new cookie");
    second.hello("second").await;
    let Push::Left { uid, .. } = next_push(&mut owner).await else {
        panic!()
    };
    assert_eq!(
        uid, "first",
        "the old session ended when the new one opened"
    );
    assert_eq!(server.accepted_connections(), 3);

    // A datagram left over from the old session: it opens nothing and reaches nothing.
    let stale = wrap(CHANNEL_UNRELIABLE, old_cookie, &[KIND_DISCONNECT]);
    second.socket.send(&stale).await.unwrap();
    second.join(group).await;
    reaches(&mut owner, group, &mut second, b"still").await;
    assert_eq!(server.accepted_connections(), 3);
}

/// An opening datagram from a live session's address (spoofed, or a duplicate) is answered with a hello
/// under another cookie, and the session goes on: only that cookie's echo replaces it.
#[tokio::test]
async fn an_opening_from_a_live_sessions_address_alone_ends_nothing() {
    let server = start(ServerBuilder::new(config())).await;
    let (mut owner, group, mut raw) = raw_member_of_owners_group(&server).await;

    raw.socket.send(&common::opening()).await.unwrap();
    let mut buf = [0u8; 2048];
    let len = bounded("the answer", raw.socket.recv(&mut buf))
        .await
        .unwrap();
    let answer = Envelope::parse(&buf[..len]).unwrap();
    assert!(is_server_hello(&answer));
    assert_ne!(answer.cookie, raw.cookie, "not the live session's cookie");

    reaches(&mut owner, group, &mut raw, b"on").await;
    assert_eq!(server.accepted_connections(), 2);
}

/// A reliable frame after a quiet spell goes out stamped with the time it is sent, not with the time
/// the session last woke. KCP times the frame's resend from that stamp: a stale one made the frame
/// overdue at once, so every message after a pause went out twice on any network slower than
/// loopback (and round trips were measured as long as the pause).
#[tokio::test]
async fn a_reliable_frame_after_a_quiet_spell_carries_the_time_it_is_sent() {
    const QUIET_MS: u32 = 300;
    let server = start(ServerBuilder::new(config())).await;
    let (mut owner, group, mut raw) = raw_member_of_owners_group(&server).await;
    reaches(&mut owner, group, &mut raw, b"before").await;
    let before = raw.last_stamp.unwrap();
    // Everything is acknowledged: the session has nothing to time until the next frame.
    tokio::time::sleep(Duration::from_millis(QUIET_MS.into())).await;
    reaches(&mut owner, group, &mut raw, b"after").await;
    let after = raw.last_stamp.unwrap();
    assert!(
        after.wrapping_sub(before) >= QUIET_MS,
        "stamped {} ms after the last frame, sent {QUIET_MS} ms or more after it",
        after.wrapping_sub(before)
    );
}

/// A UDP member whose app stalls (a scene loading, a debugger, an app in the background) sends no
/// acknowledgements, unlike a TCP member whose kernel acknowledges for it. Its session lives as long as
/// a TCP member's would, `connectionTtl` (10 s by default): after a 6 s stall it gets every broadcast
/// of the stall in order, and its group never hears it leave. KCP's dead link alone (20 sends of one
/// segment) ended it after about 3.2 s.
#[tokio::test]
async fn a_udp_member_stalled_for_less_than_connection_ttl_keeps_its_session() {
    let server = start(ServerBuilder::new(config())).await;
    let (mut owner, group, mut raw) = raw_member_of_owners_group(&server).await;
    for n in 0u8..3 {
        let message = Bytes::from(vec![b'0' + n]);
        bounded("send", owner.broadcast(group, message, true))
            .await
            .unwrap();
    }
    // The raw client neither reads nor acknowledges meanwhile.
    tokio::time::sleep(Duration::from_secs(6)).await;
    for n in 0u8..3 {
        let got = bounded("a broadcast of the stall", raw.next()).await;
        assert!(
            matches!(&got, Got::Reliable(f) if f.payload.ends_with(&[b'0' + n])),
            "{got:?}"
        );
    }
    reaches(&mut owner, group, &mut raw, b"after").await;
    let pushed = tokio::time::timeout(Duration::from_millis(100), next_push(&mut owner)).await;
    assert!(pushed.is_err(), "the group heard {pushed:?}");
}

/// A member whose KCP stops acknowledging, though it keeps its session from going idle (unreliable
/// KeepAlives; the owner keeps its own), has its link declared dead no sooner than `connectionTtl`, and is told so: the server
/// sends the session's disconnect, which a client that was only stalled reads when it wakes.
#[tokio::test]
async fn a_dead_link_ends_the_session_with_a_goodbye_no_sooner_than_connection_ttl() {
    const TTL: Duration = Duration::from_secs(2);
    let mut cfg = config();
    cfg.limits.connection_ttl = TTL;
    let server = start(ServerBuilder::new(cfg)).await;
    let (mut owner, group, raw) = raw_member_of_owners_group(&server).await;
    let stalled = tokio::time::Instant::now();
    reliable_broadcast(&mut owner, group, b"unacknowledged").await;
    let mut keep_alive = BytesMut::new();
    Request::KeepAlive.encode(&mut keep_alive);
    let mut frame = vec![KIND_UNRELIABLE_DATA];
    frame.extend_from_slice(&keep_alive);
    let keep_alive = wrap(CHANNEL_UNRELIABLE, raw.cookie, &frame);
    let mut buf = [0u8; 2048];
    // 20 sends take about 3 s at loopback's RTO of 30 ms, longer where a loaded machine's round trips
    // make the RTO longer: a wider bound than `bounded`'s.
    let goodbye = tokio::time::timeout(Duration::from_secs(40), async {
        loop {
            raw.socket.send(&keep_alive).await.unwrap();
            owner.keep_alive().await.unwrap();
            let wait = Duration::from_millis(300);
            if let Ok(Ok(len)) = tokio::time::timeout(wait, raw.socket.recv(&mut buf)).await {
                let envelope = Envelope::parse(&buf[..len]).unwrap();
                if envelope.channel == CHANNEL_UNRELIABLE && envelope.body == [KIND_DISCONNECT] {
                    return;
                }
            }
        }
    })
    .await;
    assert!(goodbye.is_ok(), "no goodbye within 40 s");
    assert!(
        stalled.elapsed() >= TTL,
        "dead after {:?}",
        stalled.elapsed()
    );
    let left = next_push(&mut owner).await;
    let Push::Left { uid, .. } = left else {
        panic!("the owner did not hear the member leave: {left:?}")
    };
    assert_eq!(uid, "raw");
}

/// A client's datagram that comes after its session ended (the client was stalled, or its goodbye
/// crossed the server's), under a cookie the server still accepts, opens no new session: it
/// acknowledges more than a new session's first datagram can. The old server opened one that its
/// client knew nothing of, holding a connection slot until it timed out waiting for a Hello.
#[tokio::test]
async fn a_late_datagram_of_an_ended_session_opens_nothing() {
    let server = start(ServerBuilder::new(config())).await;
    let (mut owner, group, mut late) = raw_member_of_owners_group(&server).await;
    let goodbye = wrap(CHANNEL_UNRELIABLE, late.cookie, &[KIND_DISCONNECT]);
    late.socket.send(&goodbye).await.unwrap();
    let Push::Left { uid, .. } = next_push(&mut owner).await else {
        panic!("the owner did not hear the member leave")
    };
    assert_eq!(uid, "raw");
    // Its KCP goes on as if nothing had happened: a KeepAlive, acknowledging what it received.
    late.request(Request::KeepAlive).await;
    // Datagrams are taken in order: once another client's session opens, the late one was handled.
    let mut other = bounded("handshake", Raw::connect(server.udp_addr().unwrap())).await;
    other.hello("other").await;
    other.join(group).await;
    assert_eq!(
        server.accepted_connections(),
        3,
        "the owner, the member and the other client; the late datagram opened a session"
    );
}

/// A TCP user "owner" with a kept group, and a raw UDP client "raw" in it (joined unannounced).
async fn raw_member_of_owners_group(
    server: &group_net::Server,
) -> (group_net::client::Client, group_core::GroupId, Raw) {
    let mut owner = user(server, Transport::Tcp, "owner").await;
    let group = bounded("create", owner.create(common::kept_group()))
        .await
        .unwrap();
    let mut raw = bounded("handshake", Raw::connect(server.udp_addr().unwrap())).await;
    raw.hello("raw").await;
    raw.join(group).await;
    (owner, group, raw)
}

/// `owner` broadcasts `text` reliably to `group`.
async fn reliable_broadcast(
    owner: &mut group_net::client::Client,
    group: group_core::GroupId,
    text: &'static [u8],
) {
    bounded(
        "send",
        owner.broadcast(group, Bytes::from_static(text), true),
    )
    .await
    .unwrap();
}

/// `owner` broadcasts `text` reliably to `group`, and `raw` gets it next.
async fn reaches(
    owner: &mut group_net::client::Client,
    group: group_core::GroupId,
    raw: &mut Raw,
    text: &'static [u8],
) {
    reliable_broadcast(owner, group, text).await;
    let got = bounded("broadcast", raw.next()).await;
    assert!(
        matches!(&got, Got::Reliable(f) if f.payload.ends_with(text)),
        "{got:?}"
    );
}
