//! A Rust client for the group protocol over TCP, WebSocket or UDP (KCP): the operations of the protocol table and a
//! stream of pushes. The tests and `group-bench` use it; game backends can too.
//!
//! Responses are matched to requests by (ver, cmd), in order. A Bad response that matches no waiting
//! request (a refused Broadcast, which has no Ok response) arrives as [`Push::Refused`] on the push stream.

mod io;
mod udp;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use group_core::proto::VER_CUSTOM_MIN;
use group_core::proto::{
    BroadcastEntry, CreateRequest, ErrorPayload, RandJoinRequest, Request, ServerFrame, Status,
    VER_CONTROL, VER_GROUP, cmd, parse_broadcast_push, parse_error_payload, parse_member_push,
};
use group_core::{GroupId, Sid};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::client_async;

pub use crate::tls::ClientTls;
use crate::tls::Stream;

use io::{Arrived, Writer};

/// Reads buffered between the socket and the caller, at most: each of up to `MAX_ARRIVED` frames, so
/// 65,536 frames in all. When full, the client stops reading (backpressure).
const INBOX: usize = 65_536 / io::MAX_ARRIVED;
/// Frames queued for the writer task, at most; a caller waits for room.
const OUTBOX: usize = 1024;
/// Requests whose caller gave up (a dropped future, a timeout) and whose answers are still due, at
/// most: past that the server is not answering, and the client says so instead of waiting forever.
const MAX_ABANDONED: usize = 4096;

/// How a client connects and how long it waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientOptions {
    /// How long connecting (and, for WebSocket and UDP, the handshake) may take.
    pub connect_timeout: Duration,
    /// How long a request waits for its answer; then it fails with [`ClientError::Timeout`].
    pub request_timeout: Duration,
    /// After this much silence from the client, it sends KeepAlive, so that a session that only
    /// listens is not discarded after the server's `connectionTtl` (default 10 s). `None`: never.
    pub keep_alive: Option<Duration>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            keep_alive: Some(Duration::from_secs(3)),
        }
    }
}

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// Socket error.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// WebSocket error.
    #[error("WebSocket error: {0}")]
    WebSocket(String),
    /// The server refused the request (Bad) or failed (Err).
    #[error("refused ({}): {}", .0.code, .0.message)]
    Refused(ErrorPayload),
    /// The connection closed before the response arrived.
    #[error("connection closed")]
    Closed,
    /// The server sent something that is not the protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// No answer (or no connection) within the configured time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

impl ClientError {
    /// The error code, when the server refused the request.
    pub fn code(&self) -> Option<u16> {
        match self {
            ClientError::Refused(e) => Some(e.code),
            _ => None,
        }
    }
}

/// Why a client's connection ended, as far as the client can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// The server closed the connection (EOF, a WebSocket Close, a UDP Disconnect): after Fin, a
    /// replaced or discarded session, a full server, or a server that stopped.
    ServerClosed,
    /// The network failed: a reset, an unreachable peer, a KCP link that stopped acknowledging.
    Network(String),
    /// The server sent bytes that are not the protocol.
    Protocol(String),
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CloseReason::ServerClosed => f.write_str("the server closed the connection"),
            CloseReason::Network(e) => write!(f, "network error: {e}"),
            CloseReason::Protocol(e) => write!(f, "protocol error from the server: {e}"),
        }
    }
}

/// Where a reader task records why it stopped (the first reason wins).
pub(crate) type CloseSlot = Arc<OnceLock<CloseReason>>;

/// Changes a client's keep-alive interval from anywhere, also after [`Client::into_split`].
#[derive(Debug, Clone)]
pub struct KeepAlive(Arc<watch::Sender<Option<Duration>>>);

impl KeepAlive {
    /// How long the client may be silent before it sends KeepAlive (`None`: never), from now on.
    pub fn set(&self, every: Option<Duration>) {
        self.0.send_replace(every);
    }
}

/// Something the server sent without being asked.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Push {
    /// A member joined (111, or the server's own ver/cmd).
    Joined {
        /// The group.
        group: GroupId,
        /// Who.
        uid: String,
        /// The join message.
        message: Bytes,
    },
    /// A member left or was discarded (112).
    Left {
        /// The group.
        group: GroupId,
        /// Who.
        uid: String,
        /// The leave or discard message.
        message: Bytes,
    },
    /// Broadcasts (113): one entry, or several when the group merges.
    Broadcast {
        /// The group.
        group: GroupId,
        /// The entries, in send order; an empty uid is an announce.
        entries: Vec<BroadcastEntry>,
    },
    /// The node is going offline: create groups elsewhere.
    Offline,
    /// An Ok response no request was waiting for (after [`Client::into_split`]).
    Response(ServerFrame),
    /// A Bad or Err response no request was waiting for (a refused Broadcast).
    Refused {
        /// The refused command's ver.
        ver: u8,
        /// The refused command's cmd.
        cmd: u16,
        /// Why.
        error: ErrorPayload,
    },
    /// A push with the server code's own ver (2 and up) and cmd: `ServerHandle::push_to_user`, or a
    /// join, leave or announce the server API sent with its own ver/cmd (then `payload` is a member
    /// push: parse it with [`group_core::proto::parse_member_push`]).
    Custom {
        /// Version byte (2 and up).
        ver: u8,
        /// Command.
        cmd: u16,
        /// The payload as the server code sent it.
        payload: Bytes,
    },
    /// Any other push (a control push this client does not know).
    Other(ServerFrame),
}

/// A connection to a group server. Dropping it closes the connection: over TCP and WebSocket the
/// socket closes; over UDP it sends the session's disconnect datagram, so the server ends the session
/// (and its memberships) at once rather than at `connectionTtl`.
///
/// Calls are cancellation-safe: a request whose future is dropped (or times out) has either been queued
/// whole or not at all, and its answer, when it comes, is recognised and dropped instead of answering
/// the next request.
pub struct Client {
    sender: ClientSender,
    receiver: ClientReceiver,
    /// (ver, cmd) of the requests sent and not yet answered, in order. Only the last can still have a
    /// caller: the others were abandoned.
    waiting: VecDeque<(u8, u16)>,
    request_timeout: Duration,
    /// The writer task's keep-alive interval.
    keep_alive: KeepAlive,
}

/// The sending half of a split [`Client`].
pub struct ClientSender {
    /// Whole frames (or raw bytes) for the writer task.
    queue: mpsc::Sender<Bytes>,
}

/// The receiving half of a split [`Client`]: every frame from the server, as [`Push`]es (responses
/// included, as [`Push::Response`]).
pub struct ClientReceiver {
    inbox: mpsc::Receiver<Arrived>,
    /// The rest of the last read's frames, in order.
    arrived: std::vec::IntoIter<ServerFrame>,
    /// Frames read while a request waited for its answer: checked, not yet handed out.
    pending: VecDeque<ServerFrame>,
    /// KeepAlives the writer sent by itself whose answers are still due: they are not the caller's.
    keep_alives: Arc<AtomicU64>,
    /// Why the connection ended, once it has.
    closed: CloseSlot,
    /// The task reading the socket. It owns the read half, so it is aborted on drop: dropping a client
    /// must close its connection.
    reader: tokio::task::JoinHandle<()>,
    /// Over UDP, where nothing closes when the task goes: the session's goodbye, said on drop.
    goodbye: Option<udp::Goodbye>,
}

impl Drop for ClientReceiver {
    fn drop(&mut self) {
        if let Some(goodbye) = &self.goodbye {
            goodbye.say();
        }
        self.reader.abort();
    }
}

impl ClientReceiver {
    /// Why the connection ended; `None` while it is open (or when the reason is not known yet: ask
    /// again after [`ClientReceiver::next_push`] returned `None`).
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.closed.get().cloned()
    }

    /// The next push; `None` when the connection has closed.
    pub async fn next_push(&mut self) -> Option<Push> {
        loop {
            let frame = self.next_frame().await?;
            if let Ok(push) = to_push(frame) {
                return Some(push);
            }
        }
    }

    /// The next frame from the server as it arrived, undecoded (answers to the client's own KeepAlives
    /// left out); `None` when the connection has closed. [`ClientReceiver::next_push`] is this frame
    /// decoded. This is for a receiver that decodes only what it needs: a 113 push read in place with
    /// [`group_core::proto::BroadcastView`] costs no allocation, where a [`Push::Broadcast`] costs a
    /// vector and a string per entry.
    pub async fn next_frame(&mut self) -> Option<ServerFrame> {
        match self.pending.pop_front() {
            Some(frame) => Some(frame),
            None => self.next_arrival().await,
        }
    }

    /// The next push if one has arrived, without waiting: `Ok(None)` when none has, [`ClientError::Closed`]
    /// when the connection has closed. Cheap enough to call every frame of a game loop.
    pub fn try_next_push(&mut self) -> Result<Option<Push>, ClientError> {
        while let Some(frame) = self.try_next_frame()? {
            if let Ok(push) = to_push(frame) {
                return Ok(Some(push));
            }
        }
        Ok(None)
    }

    /// [`ClientReceiver::next_frame`] without waiting: `Ok(None)` when no frame has arrived,
    /// [`ClientError::Closed`] when the connection has closed.
    pub fn try_next_frame(&mut self) -> Result<Option<ServerFrame>, ClientError> {
        if let Some(frame) = self.pending.pop_front() {
            return Ok(Some(frame));
        }
        loop {
            let Some(frame) = self.arrived.next() else {
                self.arrived = match self.inbox.try_recv() {
                    Ok(frames) => frames.into_iter(),
                    Err(mpsc::error::TryRecvError::Empty) => return Ok(None),
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        return Err(ClientError::Closed);
                    }
                };
                continue;
            };
            if !self.is_automatic(&frame) {
                return Ok(Some(frame));
            }
        }
    }

    /// The next frame off the wire that is not the answer to an automatic KeepAlive.
    async fn next_arrival(&mut self) -> Option<ServerFrame> {
        loop {
            let Some(frame) = self.arrived.next() else {
                self.arrived = self.inbox.recv().await?.into_iter();
                continue;
            };
            if !self.is_automatic(&frame) {
                return Some(frame);
            }
        }
    }

    /// Whether `frame` answers a KeepAlive the writer sent by itself (and counts it off).
    fn is_automatic(&self, frame: &ServerFrame) -> bool {
        frame.status != Status::Push
            && (frame.ver, frame.cmd) == (VER_CONTROL, cmd::KEEP_ALIVE)
            && self
                .keep_alives
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok()
    }
}

impl ClientSender {
    /// Sends raw bytes. Over WebSocket they go as one binary message.
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.queue
            .send(Bytes::copy_from_slice(bytes))
            .await
            .map_err(|_| ClientError::Closed)
    }

    /// Sends a request without waiting for its response.
    pub async fn send(&mut self, request: &Request) -> Result<(), ClientError> {
        let mut out = BytesMut::new();
        request.encode(&mut out);
        self.queue
            .send(out.freeze())
            .await
            .map_err(|_| ClientError::Closed)
    }

    /// Broadcasts to the other members (no Ok response; a refusal arrives on the receiver).
    pub async fn broadcast(
        &mut self,
        group: GroupId,
        message: Bytes,
        reliable: bool,
    ) -> Result<(), ClientError> {
        self.send(&Request::Broadcast {
            group,
            reliable,
            message,
        })
        .await
    }
}

impl Client {
    /// Connects over TCP with the default [`ClientOptions`].
    pub async fn connect_tcp(addr: SocketAddr) -> Result<Client, ClientError> {
        Client::connect_tcp_with(addr, ClientOptions::default()).await
    }

    /// Connects over TCP.
    pub async fn connect_tcp_with(
        addr: SocketAddr,
        options: ClientOptions,
    ) -> Result<Client, ClientError> {
        let stream = within(options.connect_timeout, TcpStream::connect(addr)).await??;
        stream.set_nodelay(true)?;
        let (reader, writer) = stream.into_split();
        Ok(Client::over_stream(reader, Box::new(writer), options))
    }

    /// Connects over TCP with TLS, checking the server's certificate as `tls` says.
    pub async fn connect_tls(
        addr: SocketAddr,
        tls: &ClientTls,
        options: ClientOptions,
    ) -> Result<Client, ClientError> {
        let handshake = async {
            let tcp = TcpStream::connect(addr).await?;
            tcp.set_nodelay(true)?;
            tls.connect(tcp).await
        };
        let stream = within(options.connect_timeout, handshake).await??;
        let (reader, writer) = tokio::io::split(stream);
        Ok(Client::over_stream(reader, Box::new(writer), options))
    }

    fn over_stream<R: tokio::io::AsyncRead + Unpin + Send + 'static>(
        reader: R,
        writer: Box<dyn tokio::io::AsyncWrite + Send + Unpin>,
        options: ClientOptions,
    ) -> Client {
        let (frames, inbox) = mpsc::channel(INBOX);
        let closed = CloseSlot::default();
        let reader = tokio::spawn(io::read_tcp(reader, frames, closed.clone()));
        Client::new(Writer::Tcp(writer), inbox, (reader, None), closed, options)
    }

    /// Connects over WebSocket (`ws://addr/`) with the default [`ClientOptions`].
    pub async fn connect_ws(addr: SocketAddr) -> Result<Client, ClientError> {
        Client::connect_ws_with(addr, ClientOptions::default()).await
    }

    /// Connects over WebSocket (`ws://addr/`).
    pub async fn connect_ws_with(
        addr: SocketAddr,
        options: ClientOptions,
    ) -> Result<Client, ClientError> {
        Client::connect_websocket(addr, None, options).await
    }

    /// Connects over WebSocket with TLS (`wss://name/`, the name from `tls`), checking the server's
    /// certificate as `tls` says.
    pub async fn connect_wss(
        addr: SocketAddr,
        tls: &ClientTls,
        options: ClientOptions,
    ) -> Result<Client, ClientError> {
        Client::connect_websocket(addr, Some(tls), options).await
    }

    async fn connect_websocket(
        addr: SocketAddr,
        tls: Option<&ClientTls>,
        options: ClientOptions,
    ) -> Result<Client, ClientError> {
        let handshake = async {
            let tcp = TcpStream::connect(addr).await?;
            tcp.set_nodelay(true)?;
            let (url, stream) = match tls {
                None => (format!("ws://{addr}/"), Stream::Plain(tcp)),
                Some(tls) => {
                    let name = tls.server_name();
                    let host = match name.parse::<std::net::Ipv6Addr>() {
                        Ok(_) => format!("[{name}]"),
                        Err(_) => name,
                    };
                    let url = format!("wss://{host}:{}/", addr.port());
                    (url, tls.connect(tcp).await?)
                }
            };
            client_async(url, stream)
                .await
                .map_err(|e| ClientError::WebSocket(e.to_string()))
        };
        let (ws, _) = within(options.connect_timeout, handshake).await??;
        let (sink, messages) = ws.split();
        let (frames, inbox) = mpsc::channel(INBOX);
        let closed = CloseSlot::default();
        let reader = tokio::spawn(io::read_ws(messages, frames, closed.clone()));
        Ok(Client::new(
            Writer::Ws(sink),
            inbox,
            (reader, None),
            closed,
            options,
        ))
    }

    fn new(
        writer: Writer,
        inbox: mpsc::Receiver<Arrived>,
        (reader, goodbye): (tokio::task::JoinHandle<()>, Option<udp::Goodbye>),
        closed: CloseSlot,
        options: ClientOptions,
    ) -> Client {
        let (queue, outbox) = mpsc::channel(OUTBOX);
        let keep_alives = Arc::new(AtomicU64::new(0));
        let (keep_alive, setting) = watch::channel(options.keep_alive);
        tokio::spawn(io::write_loop(writer, outbox, setting, keep_alives.clone()));
        Client {
            sender: ClientSender { queue },
            receiver: ClientReceiver {
                inbox,
                arrived: Vec::new().into_iter(),
                pending: VecDeque::new(),
                keep_alives,
                closed,
                reader,
                goodbye,
            },
            waiting: VecDeque::new(),
            request_timeout: options.request_timeout,
            keep_alive: KeepAlive(Arc::new(keep_alive)),
        }
    }

    /// Changes how long the client may be silent before it sends KeepAlive (`None`: never), from now on.
    pub fn set_keep_alive(&self, every: Option<Duration>) {
        self.keep_alive.set(every);
    }

    /// A handle that changes the keep-alive interval, also after [`Client::into_split`].
    pub fn keep_alive_handle(&self) -> KeepAlive {
        self.keep_alive.clone()
    }

    /// The next push if one has arrived, without waiting (see [`ClientReceiver::try_next_push`]).
    pub fn try_next_push(&mut self) -> Result<Option<Push>, ClientError> {
        self.receiver.try_next_push()
    }

    /// Connects over UDP with KCP with the default [`ClientOptions`].
    pub async fn connect_udp(addr: SocketAddr) -> Result<Client, ClientError> {
        Client::connect_udp_with(addr, ClientOptions::default()).await
    }

    /// Connects over UDP with KCP (the kcp2k-style envelope); returns once the handshake completed.
    pub async fn connect_udp_with(
        addr: SocketAddr,
        options: ClientOptions,
    ) -> Result<Client, ClientError> {
        let local: SocketAddr = if addr.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            ([0u16; 8], 0).into()
        };
        let socket = tokio::net::UdpSocket::bind(local).await?;
        socket.connect(addr).await?;
        let (tx, inbox) = mpsc::channel(INBOX);
        let (outgoing, requests) = mpsc::channel(OUTBOX);
        let (ready_tx, ready) = tokio::sync::oneshot::channel();
        let closed = CloseSlot::default();
        let socket = Arc::new(socket);
        let goodbye = udp::Goodbye::new(socket.clone());
        let reader = tokio::spawn(udp::run(
            socket,
            requests,
            tx,
            ready_tx,
            closed.clone(),
            goodbye.clone(),
        ));
        match tokio::time::timeout(options.connect_timeout, ready).await {
            Ok(Ok(())) => Ok(Client::new(
                Writer::Udp(outgoing),
                inbox,
                (reader, Some(goodbye)),
                closed,
                options,
            )),
            Ok(Err(_)) => Err(ClientError::Closed),
            Err(_) => {
                reader.abort();
                Err(ClientError::Timeout(options.connect_timeout))
            }
        }
    }

    /// Splits into a sender and a receiver that can be used at once (from different tasks or one
    /// `select!`). Responses to requests sent after the split arrive on the receiver as pushes. Keep the
    /// sender alive as long as the connection should stay open: dropping it shuts the socket's sending
    /// side, which the server takes as the client leaving.
    pub fn into_split(self) -> (ClientSender, ClientReceiver) {
        (self.sender, self.receiver)
    }

    /// Sends raw bytes (tests use it to send garbage). Over WebSocket they go as one binary message.
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.sender.send_raw(bytes).await
    }

    /// Sends a request without waiting for its response.
    pub async fn send(&mut self, request: &Request) -> Result<(), ClientError> {
        self.sender.send(request).await
    }

    /// Sends a request and waits for its response; a Bad or Err response is an error. After the
    /// configured request timeout it fails with [`ClientError::Timeout`]; the late answer is dropped.
    pub async fn request(&mut self, request: &Request) -> Result<Bytes, ClientError> {
        if self.waiting.len() >= MAX_ABANDONED {
            return Err(ClientError::Protocol(format!(
                "{} requests are still unanswered",
                self.waiting.len()
            )));
        }
        let timeout = self.request_timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let mut frame = BytesMut::new();
        request.encode(&mut frame);
        // Room first, then the frame and its place in `waiting` together, with no await between:
        // dropped before, nothing was sent; dropped after, the answer is expected and recognised.
        let permit = tokio::time::timeout_at(deadline, self.sender.queue.reserve())
            .await
            .map_err(|_| ClientError::Timeout(timeout))?
            .map_err(|_| ClientError::Closed)?;
        permit.send(frame.freeze());
        self.waiting.push_back(request.ver_cmd());
        loop {
            let frame = tokio::time::timeout_at(deadline, self.receiver.next_arrival())
                .await
                .map_err(|_| ClientError::Timeout(timeout))?
                .ok_or(ClientError::Closed)?;
            if frame.status == Status::Push || self.waiting.front() != Some(&(frame.ver, frame.cmd))
            {
                // Checked now, as the caller's request is what read it; handed out later.
                to_push(frame.clone())?;
                self.receiver.pending.push_back(frame);
                continue;
            }
            self.waiting.pop_front();
            if !self.waiting.is_empty() {
                continue; // The answer to an abandoned request: its caller is gone.
            }
            return match frame.status {
                Status::Ok => Ok(frame.payload),
                _ => Err(ClientError::Refused(parse_error(&frame.payload)?)),
            };
        }
    }

    /// The next push; `None` when the connection has closed.
    pub async fn next_push(&mut self) -> Option<Push> {
        self.receiver.next_push().await
    }

    /// Opens the session: Hello with `uid` and `token` (empty when the server has no secret).
    pub async fn hello(&mut self, uid: &str, token: &str) -> Result<Sid, ClientError> {
        let request = Request::Hello {
            uid: uid.into(),
            token: Bytes::copy_from_slice(token.as_bytes()),
        };
        let payload = self.request(&request).await?;
        let sid: [u8; 16] = payload[..]
            .try_into()
            .map_err(|_| ClientError::Protocol("sid is not 16 bytes".into()))?;
        Ok(Sid(sid))
    }

    /// Creates a group.
    pub async fn create(&mut self, params: CreateRequest) -> Result<GroupId, ClientError> {
        group_id(&self.request(&Request::Create(params)).await?)
    }

    /// Joins a group; a non-empty message is pushed to the other members.
    pub async fn join(&mut self, group: GroupId, message: &[u8]) -> Result<GroupId, ClientError> {
        let message = Bytes::copy_from_slice(message);
        group_id(&self.request(&Request::Join { group, message }).await?)
    }

    /// Leaves a group; a non-empty message is pushed to the remaining members.
    pub async fn leave(&mut self, group: GroupId, message: &[u8]) -> Result<GroupId, ClientError> {
        let message = Bytes::copy_from_slice(message);
        group_id(&self.request(&Request::Leave { group, message }).await?)
    }

    /// Joins a random open group, or creates one.
    pub async fn rand_join(&mut self, params: RandJoinRequest) -> Result<GroupId, ClientError> {
        group_id(&self.request(&Request::RandJoin(params)).await?)
    }

    /// Broadcasts to the other members. There is no Ok response: a refusal arrives as [`Push::Refused`].
    pub async fn broadcast(
        &mut self,
        group: GroupId,
        message: Bytes,
        reliable: bool,
    ) -> Result<(), ClientError> {
        self.sender.broadcast(group, message, reliable).await
    }

    /// Echo.
    pub async fn ping(&mut self, payload: &[u8]) -> Result<Bytes, ClientError> {
        self.request(&Request::Ping(Bytes::copy_from_slice(payload)))
            .await
    }

    /// Keeps an otherwise idle session alive.
    pub async fn keep_alive(&mut self) -> Result<(), ClientError> {
        self.request(&Request::KeepAlive).await.map(|_| ())
    }

    /// Ends the session; the server closes the connection.
    pub async fn fin(&mut self) -> Result<(), ClientError> {
        self.request(&Request::Fin).await.map(|_| ())
    }

    /// Waits until the server closes the connection, discarding anything still sent.
    pub async fn closed(&mut self) {
        while self.receiver.inbox.recv().await.is_some() {}
    }
}

/// `future`, or [`ClientError::Timeout`] after `limit`.
async fn within<T>(
    limit: Duration,
    future: impl std::future::Future<Output = T>,
) -> Result<T, ClientError> {
    tokio::time::timeout(limit, future)
        .await
        .map_err(|_| ClientError::Timeout(limit))
}

fn group_id(payload: &Bytes) -> Result<GroupId, ClientError> {
    GroupId::from_bytes(payload)
        .map_err(|e| ClientError::Protocol(format!("bad group ID in response: {e}")))
}

fn parse_error(payload: &Bytes) -> Result<ErrorPayload, ClientError> {
    parse_error_payload(payload)
        .map_err(|e| ClientError::Protocol(format!("bad error payload: {e}")))
}

fn to_push(frame: ServerFrame) -> Result<Push, ClientError> {
    let protocol = |e: group_core::proto::PushError| ClientError::Protocol(e.to_string());
    if frame.status == Status::Ok {
        return Ok(Push::Response(frame));
    }
    if frame.status != Status::Push {
        let error = parse_error(&frame.payload)?;
        return Ok(Push::Refused {
            ver: frame.ver,
            cmd: frame.cmd,
            error,
        });
    }
    Ok(match (frame.ver, frame.cmd) {
        (VER_GROUP, cmd::JOIN) => {
            let p = parse_member_push(&frame.payload).map_err(protocol)?;
            Push::Joined {
                group: p.group,
                uid: p.uid,
                message: p.message,
            }
        }
        (VER_GROUP, cmd::LEAVE) => {
            let p = parse_member_push(&frame.payload).map_err(protocol)?;
            Push::Left {
                group: p.group,
                uid: p.uid,
                message: p.message,
            }
        }
        (VER_GROUP, cmd::BROADCAST) => {
            let (group, entries) = parse_broadcast_push(&frame.payload).map_err(protocol)?;
            Push::Broadcast { group, entries }
        }
        (VER_CONTROL, cmd::OFFLINE) => Push::Offline,
        (ver, cmd) if ver >= VER_CUSTOM_MIN => Push::Custom {
            ver,
            cmd,
            payload: frame.payload,
        },
        _ => Push::Other(frame),
    })
}
