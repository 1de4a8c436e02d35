//! A group member that reads its own socket, as the bench's redis and nats subscribers read theirs
//! (`peers.rs`): one task per connection takes whole frames from one read buffer.
//!
//! Why: the Rust client puts a reader task and a channel between the socket and its caller, so that
//! requests and pushes can share a connection. A member that only listens needs neither. With 1,000
//! members at 1000 msg/s and the bench on a core of its own, that hop kept the bench's core full
//! (96-99%), and more than half of the p99 it reported for group-server (49-54 ms) lay beyond the
//! server's own writes, which all finished within 25 ms (`group_fanout_seconds`; docs/BENCHMARKS.md,
//! "Where issue 12 stands"). The three servers' listening members now cost the bench alike: a read
//! into a buffer, a frame or reply split off it, parsed in place.
//!
//! Used for the members that only receive, over plain TCP, outside `--kill-owner-after` runs (those watch
//! for Join pushes and rejoin through the client). Creators and senders use the client.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use group_core::GroupId;
use group_core::proto::{
    Request, ServerFrame, Status, VER_GROUP, cmd, decode_server_frame, parse_error_payload,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::{Watch, record_broadcast};

/// Bytes asked of the socket at a time, at least (as `peers.rs` asks).
const READ_CHUNK: usize = 16 * 1024;

/// Largest frame payload accepted; a bigger one ends the member with an error.
const MAX_PAYLOAD: u32 = 16 << 20;

/// Silence after which a member sends KeepAlive, as the client does by default: the server discards a
/// user silent for `connectionTtl` (10 s by default).
const KEEP_ALIVE: Duration = Duration::from_secs(3);

/// How long connecting, and each answer to Hello and Join, may take.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// A plain TCP connection that said Hello, with what it read and has not taken yet.
pub struct RawMember {
    stream: TcpStream,
    buf: BytesMut,
}

impl RawMember {
    /// Connects and says Hello as `uid`.
    pub async fn connect(addr: SocketAddr, uid: &str) -> Result<RawMember, String> {
        let stream = tokio::time::timeout(ANSWER_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| format!("connect to {addr}: no answer within {ANSWER_TIMEOUT:?}"))?
            .map_err(|e| format!("connect to {addr}: {e}"))?;
        let _ = stream.set_nodelay(true);
        let mut member = RawMember {
            stream,
            buf: BytesMut::with_capacity(READ_CHUNK),
        };
        let hello = Request::Hello {
            uid: uid.to_string(),
            token: Bytes::new(),
        };
        member
            .request(&hello)
            .await
            .map_err(|e| format!("hello {uid}: {e}"))?;
        Ok(member)
    }

    /// Joins `group`, with no Join push to the others.
    pub async fn join(&mut self, group: GroupId) -> Result<(), String> {
        let join = Request::Join {
            group,
            message: Bytes::new(),
        };
        self.request(&join).await
    }

    /// Sends `request` and waits for its answer, passing over pushes; a refusal names its code.
    async fn request(&mut self, request: &Request) -> Result<(), String> {
        let mut out = BytesMut::new();
        request.encode(&mut out);
        self.stream
            .write_all(&out)
            .await
            .map_err(|e| format!("write: {e}"))?;
        let (ver, command) = request.ver_cmd();
        let answer = async {
            loop {
                let frame = self
                    .next_frame()
                    .await?
                    .ok_or("the server closed the connection")?;
                if frame.status == Status::Push {
                    continue;
                }
                if (frame.ver, frame.cmd) != (ver, command) {
                    return Err(format!(
                        "answered {}/{} to {ver}/{command}",
                        frame.ver, frame.cmd
                    ));
                }
                if frame.status == Status::Ok {
                    return Ok(());
                }
                return Err(match parse_error_payload(&frame.payload) {
                    Ok(error) => format!("refused with code {}: {}", error.code, error.message),
                    Err(e) => format!("refused ({:?}), unreadable reason: {e}", frame.status),
                });
            }
        };
        tokio::time::timeout(ANSWER_TIMEOUT, answer)
            .await
            .map_err(|_| format!("no answer within {ANSWER_TIMEOUT:?}"))?
    }

    /// The next whole frame; `None` when the server closed the connection. Cancel-safe: what a read
    /// brought stays in the buffer.
    async fn next_frame(&mut self) -> Result<Option<ServerFrame>, String> {
        loop {
            if let Some(frame) =
                decode_server_frame(&mut self.buf, MAX_PAYLOAD).map_err(|e| e.to_string())?
            {
                return Ok(Some(frame));
            }
            self.buf.reserve(READ_CHUNK);
            let read = self
                .stream
                .read_buf(&mut self.buf)
                .await
                .map_err(|e| format!("read: {e}"))?;
            if read == 0 {
                return Ok(None);
            }
        }
    }
}

/// What woke a listening member.
enum Woken {
    Frame(Result<Option<ServerFrame>, String>),
    KeepAlive,
}

/// Reads broadcasts until `until`, recording each bench message; sends KeepAlive on the way.
pub async fn receive(
    mut member: RawMember,
    start: Instant,
    until: Instant,
    watch: Watch,
) -> Vec<u32> {
    let mut samples = Vec::new();
    let mut keep_alive_frame = BytesMut::new();
    Request::KeepAlive.encode(&mut keep_alive_frame);
    let over = tokio::time::sleep_until(until.into());
    tokio::pin!(over);
    let first = tokio::time::Instant::now() + KEEP_ALIVE;
    let mut keep_alive = tokio::time::interval_at(first, KEEP_ALIVE);
    loop {
        let woken = tokio::select! {
            frame = member.next_frame() => Woken::Frame(frame),
            _ = keep_alive.tick() => Woken::KeepAlive,
            () = &mut over => break,
        };
        let frame = match woken {
            Woken::Frame(frame) => frame,
            Woken::KeepAlive => match member.stream.write_all(&keep_alive_frame).await {
                Ok(()) => continue,
                Err(e) => Err(format!("write: {e}")),
            },
        };
        let frame = match frame {
            Ok(Some(frame)) => frame,
            Ok(None) => {
                watch.counters.disconnected.fetch_add(1, Ordering::Relaxed);
                break;
            }
            Err(e) => {
                eprintln!("member {}: {e}", watch.uid);
                watch.counters.disconnected.fetch_add(1, Ordering::Relaxed);
                break;
            }
        };
        if (frame.status, frame.ver, frame.cmd) == (Status::Push, VER_GROUP, cmd::BROADCAST) {
            let now = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
            record_broadcast(&watch, &mut samples, &frame.payload, now, 0);
        }
    }
    samples
}

#[cfg(test)]
mod tests {
    use super::*;
    use group_core::proto::{
        VER_CONTROL, code, decode_client_frame, encode_error_payload, encode_server_frame,
    };
    use tokio::net::TcpListener;

    /// The next client frame's (ver, cmd), read whole from `peer`.
    async fn read_request(peer: &mut TcpStream, buf: &mut BytesMut) -> (u8, u16) {
        loop {
            if let Some(frame) = decode_client_frame(buf, 1 << 16).unwrap() {
                return (frame.ver, frame.cmd);
            }
            assert_ne!(peer.read_buf(buf).await.unwrap(), 0, "the member hung up");
        }
    }

    /// A push before an answer is passed over, and a refusal names its code and reason.
    #[tokio::test]
    async fn answers_are_found_past_pushes_and_refusals_name_their_code() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut peer, _) = listener.accept().await.unwrap();
            let mut buf = BytesMut::new();
            assert_eq!(
                read_request(&mut peer, &mut buf).await,
                (VER_CONTROL, cmd::HELLO)
            );
            let mut out = BytesMut::new();
            encode_server_frame(VER_CONTROL, cmd::OFFLINE, Status::Push, b"", &mut out);
            encode_server_frame(VER_CONTROL, cmd::HELLO, Status::Ok, &[7; 16], &mut out);
            peer.write_all(&out).await.unwrap();
            assert_eq!(
                read_request(&mut peer, &mut buf).await,
                (VER_GROUP, cmd::JOIN)
            );
            let refusal = encode_error_payload(
                VER_GROUP,
                cmd::JOIN,
                Status::Bad,
                code::JOIN_GROUP_NOT_FOUND,
                None,
                "no such group",
            );
            peer.write_all(&refusal).await.unwrap();
            peer
        });
        let bound = Duration::from_secs(10);
        let connected = tokio::time::timeout(bound, RawMember::connect(addr, "u1")).await;
        let Ok(Ok(mut member)) = connected else {
            panic!("a Hello answered Ok after a push connects");
        };
        let group = GroupId::from_bytes(&[b'0'; 52]).unwrap();
        let joined = tokio::time::timeout(bound, member.join(group)).await;
        let Ok(Err(refused)) = joined else {
            panic!("a refused Join is an error");
        };
        assert!(
            refused.contains("code 200") && refused.contains("no such group"),
            "{refused}"
        );
        drop(server);
    }
}
