//! The UDP handshake keeps no state until a client proves its address: an opening datagram from an
//! address that never answers (spoofed, or a dead client) costs the server one reply no longer than the
//! datagram, no session, no connection slot, and no resends.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use common::{Transport, bounded, config, opening, start, user};
use group_core::kcp::envelope::{CHANNEL_RELIABLE, CONV, Envelope, wrap};
use group_core::kcp::{Kcp, KcpConfig};
use group_net::ServerBuilder;
use tokio::net::UdpSocket;

/// A socket on a loopback address of its own (127.1.x.y), standing in for one spoofed source address.
async fn socket_at(n: u32) -> UdpSocket {
    let [_, _, x, y] = (n + 1).to_be_bytes();
    UdpSocket::bind(SocketAddr::from((Ipv4Addr::new(127, 1, x, y), 0)))
        .await
        .unwrap()
}

#[tokio::test]
async fn ten_thousand_unanswered_hellos_leave_no_state() {
    let mut cfg = config();
    cfg.limits.max_connections = 2;
    let server = start(ServerBuilder::new(cfg)).await;
    let udp = server.udp_addr().unwrap();
    let opening = opening();

    // 10,000 source addresses each send an opening datagram and never answer. The first 50 listen, to
    // see what the server sends back; the others close at once, as a spoofed address would not answer.
    let mut listening = Vec::new();
    for n in 0..10_000 {
        let socket = socket_at(n).await;
        socket.send_to(&opening, udp).await.unwrap();
        if n < 50 {
            listening.push(socket);
        }
    }
    let mut buf = [0u8; 2048];
    for socket in &listening {
        let (len, _) = bounded("the stateless hello", socket.recv_from(&mut buf))
            .await
            .unwrap();
        assert!(
            len <= opening.len(),
            "the answer ({len} bytes) is no longer than the opening ({} bytes)",
            opening.len()
        );
        let envelope = Envelope::parse(&buf[..len]).unwrap();
        assert_ne!(envelope.cookie, 0, "the answer carries the cookie to echo");
    }
    // A server that kept state would resend its hello within a few hundred ms (KCP's RTO).
    let quiet = async {
        for socket in &listening {
            if tokio::time::timeout(Duration::from_millis(20), socket.recv_from(&mut buf))
                .await
                .is_ok()
            {
                return false;
            }
        }
        true
    };
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(quiet.await, "one answer per opening datagram: no resends");
    assert_eq!(server.accepted_connections(), 0, "no session was opened");
    assert_eq!(server.refused_connections(), 0, "no slot was asked for");

    // Both connection slots are still free: a TCP and a UDP client get in.
    let _tcp = user(&server, Transport::Tcp, "tcp-user").await;
    let _udp = user(&server, Transport::Udp, "udp-user").await;
    assert_eq!(server.accepted_connections(), 2);
}

#[tokio::test]
async fn a_cookie_proves_only_the_address_it_was_sent_to() {
    let server = start(ServerBuilder::new(config())).await;
    let udp = server.udp_addr().unwrap();
    let (alice, mallory) = (socket_at(1).await, socket_at(2).await);
    alice.send_to(&opening(), udp).await.unwrap();
    let mut buf = [0u8; 2048];
    let (len, _) = bounded("hello", alice.recv_from(&mut buf)).await.unwrap();
    let cookie = Envelope::parse(&buf[..len]).unwrap().cookie;

    // Mallory learned Alice's cookie (say, by sniffing): from her own address it opens nothing.
    let mut ack = Kcp::new(CONV, KcpConfig::default());
    ack.input(0, Envelope::parse(&buf[..len]).unwrap().body)
        .unwrap();
    ack.update(10);
    let ack = wrap(CHANNEL_RELIABLE, cookie, &ack.poll_transmit().unwrap());
    mallory.send_to(&ack, udp).await.unwrap();
    let reply = tokio::time::timeout(Duration::from_millis(300), mallory.recv_from(&mut buf)).await;
    assert!(
        reply.is_err(),
        "no answer to a cookie from the wrong address"
    );
    assert_eq!(server.accepted_connections(), 0);

    // From Alice's address, the same datagram opens her session.
    alice.send_to(&ack, udp).await.unwrap();
    bounded("the session opens", async {
        while server.accepted_connections() == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

/// The client takes its cookie from the server's hello, not from the first datagram to arrive: at an
/// address and port another client used, an older session's datagrams may come first.
#[tokio::test]
async fn the_client_takes_its_cookie_from_the_servers_hello() {
    use group_core::kcp::envelope::{CHANNEL_UNRELIABLE, KIND_DISCONNECT};
    use group_core::kcp::handshake::stateless_hello;
    let fake = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let to = fake.local_addr().unwrap();
    let connecting = tokio::spawn(group_net::client::Client::connect_udp(to));
    let mut buf = [0u8; 2048];
    let (_, client) = bounded("the opening", fake.recv_from(&mut buf))
        .await
        .unwrap();
    // An older session's goodbye, then the hello for this one.
    let old = wrap(CHANNEL_UNRELIABLE, 0x0BAD_0BAD, &[KIND_DISCONNECT]);
    fake.send_to(&old, client).await.unwrap();
    fake.send_to(&stateless_hello(0xBEEF, 256, 0), client)
        .await
        .unwrap();
    let _client = bounded("connected", connecting)
        .await
        .unwrap()
        .expect("the older session's goodbye is not this session's");
    // The client acknowledges the hello under the hello's cookie.
    let (len, _) = bounded("the acknowledgement", fake.recv_from(&mut buf))
        .await
        .unwrap();
    assert_eq!(Envelope::parse(&buf[..len]).unwrap().cookie, 0xBEEF);
}

/// A good cookie on the unreliable channel from an address with no session (a late datagram of a
/// session already gone) opens nothing: a session starts with KCP.
#[tokio::test]
async fn a_session_opens_only_with_a_reliable_datagram() {
    use group_core::kcp::envelope::{CHANNEL_UNRELIABLE, KIND_DISCONNECT};
    let server = start(ServerBuilder::new(config())).await;
    let udp = server.udp_addr().unwrap();
    let (alice, bob) = (socket_at(3).await, socket_at(4).await);
    let alices = stateless_hello_to(&alice, udp).await;
    let bobs = stateless_hello_to(&bob, udp).await;
    let cookie = Envelope::parse(&alices).unwrap().cookie;
    let late = wrap(CHANNEL_UNRELIABLE, cookie, &[KIND_DISCONNECT]);
    alice.send_to(&late, udp).await.unwrap();
    // The accept loop takes datagrams in order and counts a session when it admits it: once Bob's
    // opens, Alice's datagram, sent before, was handled.
    let mut ack = Kcp::new(CONV, KcpConfig::default());
    ack.input(0, Envelope::parse(&bobs).unwrap().body).unwrap();
    ack.update(10);
    let bob_cookie = Envelope::parse(&bobs).unwrap().cookie;
    let ack = wrap(CHANNEL_RELIABLE, bob_cookie, &ack.poll_transmit().unwrap());
    bob.send_to(&ack, udp).await.unwrap();
    bounded("Bob's session opens", async {
        while server.accepted_connections() == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert_eq!(server.accepted_connections(), 1, "only Bob's opened");
}

/// Sends an opening from `socket` and returns the server's answer.
async fn stateless_hello_to(socket: &UdpSocket, server: SocketAddr) -> Vec<u8> {
    socket.send_to(&opening(), server).await.unwrap();
    let mut buf = [0u8; 2048];
    let (len, _) = bounded("hello", socket.recv_from(&mut buf)).await.unwrap();
    buf[..len].to_vec()
}
