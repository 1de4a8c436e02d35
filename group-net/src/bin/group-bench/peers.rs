//! The peers group-bench compares against, driven with the same load shape: redis-server's pub/sub
//! (SUBSCRIBE / PUBLISH over RESP) and nats-server (SUB / PUB). A group is a channel (redis) or subject
//! (nats); its senders publish and its other members subscribe, so each message reaches as many receivers
//! as a broadcast from one sender does in a group. Only what the bench needs of each protocol is here:
//! replies to publishes are read and dropped, a server's PING is answered, and anything unexpected ends
//! the connection with an error naming it.

use std::net::SocketAddr;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;

use crate::peer_wire::{Nats, Resp, first_line, nats_at, resp_at};

/// Which peer server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    Redis,
    Nats,
}

/// Bytes a peer reader asks the socket for at a time, at least.
const READ_CHUNK: usize = 16 * 1024;

/// A subscribed connection: reads the messages of its channel.
pub struct Subscriber {
    reader: PeerReader,
    writer: OwnedWriteHalf,
}

/// A publishing connection: its replies are read and dropped by a task of its own.
pub struct Publisher {
    peer: Peer,
    writer: OwnedWriteHalf,
    buf: BytesMut,
    /// PINGs the reply task saw (nats): answered with the next publish.
    pings: mpsc::UnboundedReceiver<()>,
}

/// Connects; for nats, reads INFO and sends CONNECT (no echo, no verbose acknowledgements).
async fn connect(peer: Peer, addr: SocketAddr) -> Result<(PeerReader, OwnedWriteHalf), String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect to {peer:?} at {addr}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (read, mut writer) = stream.into_split();
    let mut reader = PeerReader {
        peer,
        read,
        buf: BytesMut::new(),
    };
    if peer == Peer::Nats {
        let info = reader.read_line().await?;
        if !info.starts_with("INFO ") {
            return Err(format!("nats: expected INFO, got {info:?}"));
        }
        let connect = b"CONNECT {\"verbose\":false,\"pedantic\":false,\"echo\":false}\r\n";
        write(peer, &mut writer, connect).await?;
    }
    Ok((reader, writer))
}

async fn write(peer: Peer, writer: &mut OwnedWriteHalf, bytes: &[u8]) -> Result<(), String> {
    writer
        .write_all(bytes)
        .await
        .map_err(|e| format!("{peer:?}: write: {e}"))
}

impl Subscriber {
    /// Connects and subscribes to `channel`; returns once the peer confirmed the subscription.
    pub async fn connect(peer: Peer, addr: SocketAddr, channel: &str) -> Result<Self, String> {
        let (mut reader, mut writer) = connect(peer, addr).await?;
        match peer {
            Peer::Redis => {
                let command = resp_command(&[b"SUBSCRIBE", channel.as_bytes()]);
                write(peer, &mut writer, &command).await?;
                let (reply, resp) = reader.read_resp().await?; // subscribe, channel, count
                if resp.item(0).and_then(|at| reply.get(at)) != Some(b"subscribe") {
                    return Err(format!("redis: SUBSCRIBE answered {reply:?}"));
                }
            }
            Peer::Nats => {
                let command = format!("SUB {channel} 1\r\nPING\r\n");
                write(peer, &mut writer, command.as_bytes()).await?;
                loop {
                    match reader.read_line().await?.as_str() {
                        "PONG" => break,
                        "PING" => write(peer, &mut writer, b"PONG\r\n").await?,
                        "+OK" => {}
                        other => return Err(format!("nats: SUB answered {other:?}")),
                    }
                }
            }
        }
        Ok(Subscriber { reader, writer })
    }

    /// The payload of the next message; `None` when the connection closed.
    pub async fn next_message(&mut self) -> Result<Option<Bytes>, String> {
        let peer = self.reader.peer;
        loop {
            match peer {
                Peer::Redis => {
                    let (reply, resp) = match self.reader.read_resp().await {
                        Err(e) if e.ends_with(CLOSED) => return Ok(None),
                        other => other?,
                    };
                    // message, channel, payload
                    let item = |i| resp.item(i).and_then(|at| reply.get(at));
                    if let (Some(b"message"), Some(payload)) = (item(0), resp.item(2)) {
                        return Ok(Some(reply.slice(payload)));
                    }
                }
                Peer::Nats => {
                    let (whole, item) = match self.reader.read_nats().await {
                        Err(e) if e.ends_with(CLOSED) => return Ok(None),
                        other => other?,
                    };
                    match item {
                        Nats::Msg(payload) => return Ok(Some(whole.slice(payload))),
                        Nats::Line(line) => match whole.get(line) {
                            Some(b"PING") => write(peer, &mut self.writer, b"PONG\r\n").await?,
                            Some(line) if line.starts_with(b"-ERR") => {
                                return Err(format!("nats: {}", String::from_utf8_lossy(line)));
                            }
                            _ => {}
                        },
                    }
                }
            }
        }
    }
}

impl Publisher {
    /// Connects a publishing connection.
    pub async fn connect(peer: Peer, addr: SocketAddr) -> Result<Self, String> {
        let (mut reader, writer) = connect(peer, addr).await?;
        let (seen, pings) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            // Redis answers every PUBLISH with an integer; nats sends PING now and then. An error ends it.
            loop {
                let ping = match peer {
                    Peer::Redis => reader.read_resp().await.map(|_| false),
                    Peer::Nats => reader.read_nats().await.map(|(whole, item)| {
                        matches!(item, Nats::Line(line) if whole.get(line.clone()) == Some(&b"PING"[..]))
                    }),
                };
                match ping {
                    Ok(false) => {}
                    Ok(true) if seen.send(()).is_ok() => {}
                    _ => return,
                }
            }
        });
        Ok(Publisher {
            peer,
            writer,
            buf: BytesMut::new(),
            pings,
        })
    }

    /// Publishes `payload` on `channel`.
    pub async fn publish(&mut self, channel: &str, payload: &[u8]) -> Result<(), String> {
        self.buf.clear();
        while self.pings.try_recv().is_ok() {
            self.buf.put_slice(b"PONG\r\n");
        }
        match self.peer {
            Peer::Redis => {
                resp_command_into(&mut self.buf, &[b"PUBLISH", channel.as_bytes(), payload]);
            }
            Peer::Nats => {
                let header = format!("PUB {channel} {}\r\n", payload.len());
                self.buf.put_slice(header.as_bytes());
                self.buf.put_slice(payload);
                self.buf.put_slice(b"\r\n");
            }
        }
        write(self.peer, &mut self.writer, &self.buf).await
    }
}

/// How a read error ends when the peer closed the connection.
const CLOSED: &str = "connection closed";

/// The read side of a peer connection: what was read and not yet taken, whole replies cut from its
/// front (`peer_wire`).
struct PeerReader {
    peer: Peer,
    read: OwnedReadHalf,
    buf: BytesMut,
}

impl PeerReader {
    /// Reads more from the socket; an error when the peer closed it.
    async fn fill(&mut self) -> Result<(), String> {
        let peer = self.peer;
        self.buf.reserve(READ_CHUNK);
        match self.read.read_buf(&mut self.buf).await {
            Ok(0) => Err(format!("{peer:?}: {CLOSED}")),
            Ok(_) => Ok(()),
            Err(e) => Err(format!("{peer:?}: read: {e}")),
        }
    }

    /// The next whole item `find` sees at the front of the buffer, cut off it, with the item.
    async fn next<T>(
        &mut self,
        find: impl Fn(&[u8]) -> Result<Option<(T, usize)>, String>,
    ) -> Result<(Bytes, T), String> {
        loop {
            match find(&self.buf) {
                Ok(Some((item, len))) => return Ok((self.buf.split_to(len).freeze(), item)),
                Ok(None) => self.fill().await?,
                Err(e) => return Err(format!("{:?}: {e}", self.peer)),
            }
        }
    }

    /// The next line, without its CRLF.
    async fn read_line(&mut self) -> Result<String, String> {
        let (line, text) = self.next(first_line).await?;
        Ok(String::from_utf8_lossy(line.get(text).unwrap_or_default()).into_owned())
    }

    /// One whole redis reply, and where its bulk strings are in it.
    async fn read_resp(&mut self) -> Result<(Bytes, Resp), String> {
        self.next(resp_at).await
    }

    /// One whole nats message or line.
    async fn read_nats(&mut self) -> Result<(Bytes, Nats), String> {
        self.next(nats_at).await
    }
}

fn resp_command(parts: &[&[u8]]) -> Vec<u8> {
    let mut buf = BytesMut::new();
    resp_command_into(&mut buf, parts);
    buf.to_vec()
}

fn resp_command_into(buf: &mut BytesMut, parts: &[&[u8]]) {
    buf.put_slice(format!("*{}\r\n", parts.len()).as_bytes());
    for part in parts {
        buf.put_slice(format!("${}\r\n", part.len()).as_bytes());
        buf.put_slice(part);
        buf.put_slice(b"\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_commands_are_resp_arrays_of_bulk_strings() {
        assert_eq!(
            resp_command(&[b"PUBLISH", b"g0", b"hi"]),
            b"*3\r\n$7\r\nPUBLISH\r\n$2\r\ng0\r\n$2\r\nhi\r\n"
        );
    }
}
