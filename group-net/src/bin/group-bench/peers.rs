//! The peers group-bench compares against, driven with the same load shape: redis-server's pub/sub
//! (SUBSCRIBE / PUBLISH over RESP) and nats-server (SUB / PUB). A group is a channel (redis) or subject
//! (nats); its senders publish and its other members subscribe, so each message reaches as many receivers
//! as a broadcast from one sender does in a group. Only what the bench needs of each protocol is here:
//! replies to publishes are read and dropped, a server's PING is answered, and anything unexpected ends
//! the connection with an error naming it.

use std::net::SocketAddr;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;

/// Which peer server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    Redis,
    Nats,
}

/// Largest message or line the bench reads from a peer: a bound on what a confused peer can make it
/// allocate.
const MAX_MESSAGE: usize = 16 << 20;
const MAX_LINE: usize = 64 * 1024;

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
        reader: BufReader::new(read),
        line: String::new(),
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
                let reply = reader.read_resp().await?; // subscribe, channel, count
                if reply.first().map(|b| &b[..]) != Some(b"subscribe") {
                    return Err(format!("redis: SUBSCRIBE answered {reply:?}"));
                }
            }
            Peer::Nats => {
                let command = format!("SUB {channel} 1\r\nPING\r\n");
                write(peer, &mut writer, command.as_bytes()).await?;
                loop {
                    match reader.read_line().await?.trim_end() {
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
                    let reply = match self.reader.read_resp().await {
                        Err(e) if e.ends_with(CLOSED) => return Ok(None),
                        other => other?,
                    };
                    // message, channel, payload
                    if reply.first().map(|b| &b[..]) == Some(b"message") {
                        return Ok(reply.into_iter().nth(2));
                    }
                }
                Peer::Nats => {
                    let line = match self.reader.read_line().await {
                        Err(e) if e.ends_with(CLOSED) => return Ok(None),
                        other => other?.trim_end().to_string(),
                    };
                    if line == "PING" {
                        write(peer, &mut self.writer, b"PONG\r\n").await?;
                    } else if let Some(header) = line.strip_prefix("MSG ") {
                        // <subject> <sid> [reply-to] <#bytes>
                        let len = header
                            .rsplit(' ')
                            .next()
                            .and_then(|n| n.parse::<usize>().ok())
                            .filter(|n| *n <= MAX_MESSAGE)
                            .ok_or_else(|| format!("nats: bad MSG line {line:?}"))?;
                        return self.reader.read_payload(len).await.map(Some);
                    } else if line.starts_with("-ERR") {
                        return Err(format!("nats: {line}"));
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
                    Peer::Nats => reader.read_line().await.map(|l| l.trim_end() == "PING"),
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

/// The read side of a peer connection.
struct PeerReader {
    peer: Peer,
    reader: BufReader<OwnedReadHalf>,
    line: String,
}

impl PeerReader {
    async fn read_line(&mut self) -> Result<&str, String> {
        self.line.clear();
        let peer = self.peer;
        let n = (&mut self.reader)
            .take(MAX_LINE as u64)
            .read_line(&mut self.line)
            .await
            .map_err(|e| format!("{peer:?}: read: {e}"))?;
        if n == 0 {
            return Err(format!("{peer:?}: {CLOSED}"));
        }
        if !self.line.ends_with('\n') {
            return Err(format!("{peer:?}: a line longer than {MAX_LINE} bytes"));
        }
        Ok(&self.line)
    }

    /// `len` bytes and the CRLF after them.
    async fn read_payload(&mut self, len: usize) -> Result<Bytes, String> {
        let mut payload = vec![0; len + 2];
        self.reader
            .read_exact(&mut payload)
            .await
            .map_err(|e| format!("{:?}: reading {len} bytes: {e}", self.peer))?;
        payload.truncate(len);
        Ok(Bytes::from(payload))
    }

    /// One RESP reply, as the bulk strings it holds: an array's elements (one level, as pub/sub sends),
    /// or one bulk string. Integers and simple strings give nothing; an error reply is an error.
    async fn read_resp(&mut self) -> Result<Vec<Bytes>, String> {
        let line = self.read_line().await?.trim_end().to_string();
        let count = match line.split_at(line.len().min(1)) {
            ("*", n) => parse_len(n)?,
            ("$", n) => return Ok(vec![self.read_payload(parse_len(n)?).await?]),
            (":" | "+", _) => return Ok(Vec::new()),
            _ => return Err(format!("redis: {line}")),
        };
        let mut items = Vec::with_capacity(count.min(8));
        for _ in 0..count {
            let item = self.read_line().await?.trim_end().to_string();
            match item.split_at(item.len().min(1)) {
                ("$", n) => items.push(self.read_payload(parse_len(n)?).await?),
                (":" | "+", _) => {}
                _ => return Err(format!("redis: unexpected {item:?} in an array")),
            }
        }
        Ok(items)
    }
}

fn parse_len(text: &str) -> Result<usize, String> {
    text.parse::<usize>()
        .ok()
        .filter(|n| *n <= MAX_MESSAGE)
        .ok_or_else(|| format!("redis: bad length {text:?}"))
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
        assert!(parse_len("17").is_ok());
        assert!(parse_len("-1").is_err());
        assert!(parse_len("99999999999").is_err());
    }
}
