//! What every connection does, whatever its transport: register with the node, turn frames into requests
//! (checking Hello tokens and running hooks and custom handlers on the way), and report the end.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use group_core::proto::{CLIENT_HEADER_LEN, ClientFrame, Request, VER_CONTROL, cmd, code};
use group_core::{Call, ConnId, Input, Outcome, Sid, Uid};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::auth::TokenVerifier;
use crate::budget::{ByteRate, ConnBudget, InboundCharge, RequestRate, ServerBudget, Verdict};
use crate::hooks::{Command, HookContext, Hooks, Stop, guarded};
use crate::inbox::{Answer, ConnWriter, LastWords, NodeInput, WriterEnd, answer_to};
use crate::throttle::Throttle;

/// Everything connections share: where inputs go and what to check on the way.
pub(crate) struct Shared {
    pub inputs: mpsc::Sender<NodeInput>,
    pub hooks: Hooks,
    pub verifier: Option<TokenVerifier>,
    pub max_payload: u32,
    pub outbound_queue: usize,
    /// `limits.maxBufferedBytes`: what every connection's buffers count against.
    pub budget: Arc<ServerBudget>,
    /// `limits.maxQueuedBytesPerConnection`.
    pub max_queued_bytes: usize,
    /// Inbound bytes one connection may have on their way to the node: an eighth of
    /// `maxQueuedBytesPerConnection` (128 KiB by default), and at least one largest frame. Kept small
    /// because the node handles inputs in order: a flooding connection's frames queued ahead of a
    /// well-behaved member's broadcast are latency for that member.
    pub inbound_share: usize,
    /// `limits.maxRequestsPerSecond`.
    pub max_requests_per_second: u32,
    /// `limits.maxInboundBytesPerSecond`.
    pub max_inbound_bytes_per_second: usize,
    /// `tls.cert`/`tls.key`: the TCP and WebSocket listeners' TLS.
    pub tls: Option<Arc<crate::tls::ServerTls>>,
    /// The server's counters.
    pub stats: Arc<crate::inbox::Stats>,
    /// `server.exposeCommands`.
    pub exposed: crate::config::ExposedCommands,
    /// `server.writerThreads`: where TCP writers run when not on the server's runtime.
    pub writer_pool: Option<crate::writer_pool::WriterPool>,
}

/// Frames other than Hello a connection may send before its Hello is answered. A client says Hello
/// first; one that sends more is probing or flooding. Without this bound, `maxRequestsPerSecond` let a connection that
/// never said Hello send two seconds' worth of frames (2,000 at the default) before it was cut: 20
/// WebSocket connections pinging flat out made the server answer 20,000 pings in a burst (the hostile
/// suite's WebSocket phase).
pub(crate) const MAX_FRAMES_BEFORE_HELLO: u32 = 16;

/// The node task is gone (the server stopped): the connection ends.
#[derive(Debug)]
pub(crate) struct Stopped;

/// One connection's request side.
pub(crate) struct Connection {
    pub conn: ConnId,
    shared: Arc<Shared>,
    /// The session as of this connection's last Hello; hooks need the uid and sid.
    session: Option<(Uid, Sid)>,
    /// True once the connection must read no further (Fin, failed Hello).
    finished: bool,
    /// Frames other than Hello (requests and transport control frames) received before a session: at
    /// most [`MAX_FRAMES_BEFORE_HELLO`].
    before_hello: u32,
    rate: RequestRate,
    bytes: ByteRate,
    /// Inbound bytes this connection may have on their way to the node (`Shared::inbound_share`): beyond
    /// it the reader waits, and so does the client (transport flow control).
    inbound: Arc<Semaphore>,
    /// The charge of the frame being dispatched, handed to the node with the input it becomes.
    charge: Mutex<Option<InboundCharge>>,
}

impl Connection {
    /// Registers a new connection with the node. Returns the connection and what its writer needs.
    /// `direct`: a plain TCP connection's socket, which the node writes through when the writer is idle.
    pub async fn open(
        conn: ConnId,
        shared: Arc<Shared>,
        direct: Option<crate::direct::Direct>,
    ) -> Result<(Connection, WriterEnd), Stopped> {
        let (queue, receiver) = mpsc::channel(shared.outbound_queue);
        let kill = CancellationToken::new();
        let last_words = LastWords::default();
        let budget = ConnBudget::new(shared.budget.clone());
        let (reply, answer) = oneshot::channel();
        let writer = ConnWriter {
            queue,
            stop: kill.clone(),
            last_words: last_words.clone(),
            budget,
            flusher: shared
                .writer_pool
                .as_ref()
                .filter(|_| direct.is_some())
                .map(|pool| pool.thread_of(conn)),
            direct: direct.clone(),
        };
        shared
            .inputs
            .send(NodeInput::Connect {
                conn,
                writer,
                reply,
            })
            .await
            .map_err(|_| Stopped)?;
        match answer.await {
            Ok(Ok(())) => Ok((
                Connection {
                    conn,
                    session: None,
                    finished: false,
                    before_hello: 0,
                    rate: RequestRate::new(
                        shared.max_requests_per_second,
                        tokio::time::Instant::now(),
                    ),
                    bytes: ByteRate::new(
                        shared.max_inbound_bytes_per_second,
                        CLIENT_HEADER_LEN + shared.max_payload as usize,
                        tokio::time::Instant::now(),
                    ),
                    inbound: Arc::new(Semaphore::new(shared.inbound_share)),
                    charge: Mutex::new(None),
                    shared,
                },
                WriterEnd {
                    queue: receiver,
                    kill,
                    last_words,
                    direct,
                },
            )),
            Ok(Err(e)) => {
                tracing::warn!(conn = conn.0, "connection refused by the node: {e}");
                Err(Stopped)
            }
            Err(_) => Err(Stopped),
        }
    }

    /// Starts this connection's writer: on its writer thread with `server.writerThreads`, otherwise on
    /// the server's runtime.
    pub fn spawn_writer<F>(&self, writer: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match &self.shared.writer_pool {
            Some(pool) => pool.spawn(self.conn, writer),
            None => tokio::spawn(writer),
        }
    }

    /// True after Fin or a refused Hello: the reader should stop reading.
    pub fn finished(&self) -> bool {
        self.finished
    }

    pub fn max_payload(&self) -> u32 {
        self.shared.max_payload
    }

    /// The server's budget of buffered bytes, for the transport's own buffers.
    pub fn budget(&self) -> &Arc<ServerBudget> {
        &self.shared.budget
    }

    async fn send(&self, input: Input) -> Result<(), Stopped> {
        let input = NodeInput::Core {
            input,
            reply: None,
            charge: self.take_charge(),
        };
        self.shared.inputs.send(input).await.map_err(|_| Stopped)
    }

    fn take_charge(&self) -> Option<InboundCharge> {
        self.charge.lock().ok().and_then(|mut slot| slot.take())
    }

    /// Holds a frame's bytes against the server's budget and this connection's share of inbound bytes
    /// in flight, waiting for the share if the node has not caught up with this connection.
    async fn hold_inbound(&self, frame: &ClientFrame) -> Result<(), Stopped> {
        let bytes = CLIENT_HEADER_LEN + frame.payload.len();
        let share = u32::try_from(bytes.min(self.shared.inbound_share)).unwrap_or(u32::MAX);
        let permit = self
            .inbound
            .clone()
            .acquire_many_owned(share)
            .await
            .map_err(|_| Stopped)?;
        let charge = InboundCharge {
            _server: self.shared.budget.charge(bytes),
            _share: permit,
        };
        if let Ok(mut slot) = self.charge.lock() {
            *slot = Some(charge);
        }
        Ok(())
    }

    /// Counts a request against `maxRequestsPerSecond`. `Ok(true)`: go on. `Ok(false)`: it was refused
    /// (answered Bad, or the connection closed).
    async fn within_rate(&mut self, ver: u8, cmd: u16) -> Result<bool, Stopped> {
        match self.rate.check(tokio::time::Instant::now()) {
            Verdict::Allowed => Ok(true),
            Verdict::Refused => {
                let input = Input::Call(Call::Refuse {
                    conn: self.conn,
                    ver,
                    cmd,
                    code: code::RATE_LIMITED,
                    group: None,
                    message: "too many requests: over limits.maxRequestsPerSecond".into(),
                });
                self.send(input).await?;
                Ok(false)
            }
            Verdict::Cut => {
                self.cut_for_rate().await?;
                Ok(false)
            }
        }
    }

    async fn cut_for_rate(&mut self) -> Result<(), Stopped> {
        static CUT: Throttle = Throttle::new();
        if let Some(more) = CUT.allow() {
            tracing::warn!(
                conn = self.conn.0,
                "closing a connection that kept exceeding limits.maxRequestsPerSecond (and {more} more since the last line)"
            );
        }
        let why = "too many requests for too long: over limits.maxRequestsPerSecond";
        self.close_with_notice(code::RATE_LIMITED, why.into()).await
    }

    /// Reads no further and has the node send closing notice `code` and close the connection.
    async fn close_with_notice(&mut self, code: u16, message: String) -> Result<(), Stopped> {
        self.finished = true;
        let input = Input::Call(Call::RefuseAndClose {
            conn: self.conn,
            ver: VER_CONTROL,
            cmd: cmd::CLOSING,
            code,
            message,
        });
        self.send(input).await
    }

    /// Counts a transport control frame (a WebSocket ping) against `maxRequestsPerSecond`: it costs the
    /// server an answer like any request. Over the rate it is ignored; far over, the connection closes.
    pub async fn control_frame(&mut self) -> Result<(), Stopped> {
        if !self.within_frames_before_hello().await? {
            return Ok(());
        }
        if self.rate.check(tokio::time::Instant::now()) == Verdict::Cut {
            self.cut_for_rate().await?;
        }
        Ok(())
    }

    /// Tells the node that a frame exceeded `maxPayload`; it answers Bad and closes.
    pub async fn oversized(&mut self, ver: u8, cmd: u16, len: u32) -> Result<(), Stopped> {
        self.finished = true;
        self.send(Input::Oversized {
            conn: self.conn,
            ver,
            cmd,
            len,
        })
        .await
    }

    /// Refuses a frame the transport could not deliver whole, and closes.
    pub async fn refuse_and_close(&mut self, code: u16, message: String) -> Result<(), Stopped> {
        self.finished = true;
        let input = Input::Call(Call::RefuseAndClose {
            conn: self.conn,
            ver: VER_CONTROL,
            cmd: 0,
            code,
            message,
        });
        self.send(input).await
    }

    /// The transport ended: the node discards the session.
    pub async fn disconnected(&self) {
        let _ = self.send(Input::Disconnect(self.conn)).await;
    }

    /// Sends a request; with `want_reply`, waits for what became of it and the session after it.
    async fn request(
        &self,
        request: Request,
        want_reply: bool,
    ) -> Result<Option<(Outcome, Option<(Uid, Sid)>)>, Stopped> {
        let input = Input::Request {
            conn: self.conn,
            request,
        };
        if !want_reply {
            self.send(input).await?;
            return Ok(None);
        }
        let (reply, answer) = oneshot::channel();
        let message = NodeInput::Core {
            input,
            reply: Some(answer_to(reply)),
            charge: self.take_charge(),
        };
        self.shared
            .inputs
            .send(message)
            .await
            .map_err(|_| Stopped)?;
        Ok(match answer.await {
            Ok(Answer::Request { outcome, session }) => Some((outcome, session)),
            _ => None,
        })
    }

    /// Counts a frame other than Hello received before the session exists. `Ok(false)`: one too many;
    /// the connection is closing with closing notice 3 NOT_GREETED.
    async fn within_frames_before_hello(&mut self) -> Result<bool, Stopped> {
        if self.session.is_some() {
            return Ok(true);
        }
        self.before_hello += 1;
        if self.before_hello <= MAX_FRAMES_BEFORE_HELLO {
            return Ok(true);
        }
        static CUT: Throttle = Throttle::new();
        if let Some(more) = CUT.allow() {
            tracing::info!(
                conn = self.conn.0,
                "closing a connection that sent {MAX_FRAMES_BEFORE_HELLO} frames without a Hello (and {more} more since the last line)"
            );
        }
        let why = format!("{MAX_FRAMES_BEFORE_HELLO} frames without a Hello");
        self.close_with_notice(code::NOT_GREETED, why).await?;
        Ok(false)
    }

    /// Handles one whole frame from the client.
    pub async fn dispatch(&mut self, frame: ClientFrame) -> Result<(), Stopped> {
        let hello = (frame.ver, frame.cmd) == (VER_CONTROL, cmd::HELLO);
        if !hello && !self.within_frames_before_hello().await? {
            return Ok(());
        }
        if !self.within_rate(frame.ver, frame.cmd).await? {
            return Ok(());
        }
        let size = CLIENT_HEADER_LEN + frame.payload.len();
        let wait = self.bytes.take(size, tokio::time::Instant::now());
        if !wait.is_zero() {
            // Reading this connection slower is all it takes: its sender waits on flow control.
            tokio::time::sleep(wait).await;
        }
        self.hold_inbound(&frame).await?;
        let request = match Request::parse(&frame) {
            Ok(request) => {
                if matches!(request, Request::Broadcast { .. }) {
                    let broadcasts = &self.shared.stats.broadcasts;
                    broadcasts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                request
            }
            // The node answers Bad with the parse error's code.
            Err(_) => {
                let conn = self.conn;
                return self.send(Input::Frame { conn, frame }).await;
            }
        };
        // Before Hello the node answers NOT_GREETED, whatever the command.
        if self.session.is_some() && !self.shared.exposed.allows(&request) {
            let (ver, cmd) = request.ver_cmd();
            let input = Input::Call(Call::Refuse {
                conn: self.conn,
                ver,
                cmd,
                code: code::NOT_EXPOSED,
                group: request.group().copied(),
                message: "this server does not take this command from clients".into(),
            });
            return self.send(input).await;
        }
        match &request {
            Request::Hello { uid, token } => {
                return self.hello(uid.clone(), token.clone(), request).await;
            }
            Request::Fin => self.finished = true,
            Request::Custom { ver, cmd, .. } => {
                if let (Some(handler), Some(ctx)) =
                    (self.shared.hooks.custom(*ver, *cmd), self.context(&request))
                {
                    let started = tokio::time::Instant::now();
                    let handled =
                        guarded("a command handler", self.shared.hooks.timeout, handler(ctx)).await;
                    self.shared.hooks.timings.custom_ran(started.elapsed());
                    let input = match handled {
                        Ok(Ok(payload)) => Input::Call(Call::Respond {
                            conn: self.conn,
                            ver: *ver,
                            cmd: *cmd,
                            payload,
                        }),
                        Ok(Err(rejection)) => {
                            let stop = rejection.into_stop("a command handler");
                            self.stopped(*ver, *cmd, None, stop)
                        }
                        Err(stop) => self.stopped(*ver, *cmd, None, stop),
                    };
                    return self.send(input).await;
                }
            }
            _ => {}
        }
        let hooked = Command::of(&request)
            .filter(|c| self.shared.hooks.has_before(*c) || self.shared.hooks.has_after(*c));
        let (Some(command), Some(mut ctx)) = (hooked, self.context(&request)) else {
            self.request(request, false).await?;
            return Ok(());
        };
        if let Err(stop) = self.shared.hooks.run_before(command, &ctx).await {
            let (ver, cmd) = request.ver_cmd();
            return self
                .send(self.stopped(ver, cmd, request.group().copied(), stop))
                .await;
        }
        let want_after = self.shared.hooks.has_after(command);
        let reply = self.request(request, want_after).await?;
        if let Some((Outcome::Accepted { group }, _)) = reply {
            ctx.group = group;
            self.shared.hooks.run_after(command, &ctx).await;
        }
        Ok(())
    }

    async fn hello(&mut self, uid: String, token: Bytes, request: Request) -> Result<(), Stopped> {
        let refused = self
            .shared
            .verifier
            .as_ref()
            .and_then(|v| v.verify(&token, &uid).err());
        if let Some(e) = refused {
            static REFUSED: Throttle = Throttle::new();
            if let Some(more) = REFUSED.allow() {
                tracing::info!(conn = self.conn.0, %uid, "Hello refused: {e} (and {more} more since the last line)");
            }
            self.finished = true;
            let input = Input::Call(Call::RefuseAndClose {
                conn: self.conn,
                ver: VER_CONTROL,
                cmd: cmd::HELLO,
                code: code::AUTH_FAILED,
                message: e.client_message().to_string(),
            });
            return self.send(input).await;
        }
        if let Some(session) = self
            .request(request, true)
            .await?
            .and_then(|(_, session)| session)
        {
            self.session = Some(session);
        }
        Ok(())
    }

    /// The response to a request that server code stopped: Bad for a rejection, Err for a failure.
    fn stopped(&self, ver: u8, cmd: u16, group: Option<group_core::GroupId>, stop: Stop) -> Input {
        match stop {
            Stop::Rejected(r) => Input::Call(Call::Refuse {
                conn: self.conn,
                ver,
                cmd,
                code: r.code,
                group,
                message: r.message,
            }),
            Stop::Failed(message) => Input::Call(Call::Fail {
                conn: self.conn,
                ver,
                cmd,
                group,
                message,
            }),
        }
    }

    fn context(&self, request: &Request) -> Option<HookContext> {
        let (uid, sid) = self.session.clone()?;
        let (ver, cmd) = request.ver_cmd();
        Some(HookContext {
            conn: self.conn,
            uid,
            sid,
            ver,
            cmd,
            request: request.clone(),
            group: request.group().copied(),
        })
    }
}
