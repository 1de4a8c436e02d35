//! What every connection does, whatever its transport: register with the node, turn frames into requests
//! (checking Hello tokens and running hooks and custom handlers on the way), and report the end.

use crate::throttle::Throttle;
use std::sync::Arc;

use bytes::Bytes;
use group_core::proto::{ClientFrame, Request, VER_CONTROL, cmd, code};
use group_core::{Call, ConnId, Input, Outcome, Sid, Uid};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::auth::TokenVerifier;
use crate::hooks::{Command, HookContext, Hooks, Stop, guarded};
use crate::inbox::{Answer, ConnWriter, LastWords, NodeInput, WriterEnd, answer_to};

/// Everything connections share: where inputs go and what to check on the way.
pub(crate) struct Shared {
    pub inputs: mpsc::Sender<NodeInput>,
    pub hooks: Hooks,
    pub verifier: Option<TokenVerifier>,
    pub max_payload: u32,
    pub outbound_queue: usize,
}

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
}

impl Connection {
    /// Registers a new connection with the node. Returns the connection and what its writer needs.
    pub async fn open(
        conn: ConnId,
        shared: Arc<Shared>,
    ) -> Result<(Connection, WriterEnd), Stopped> {
        let (queue, receiver) = mpsc::channel(shared.outbound_queue);
        let kill = CancellationToken::new();
        let last_words = LastWords::default();
        let (reply, answer) = oneshot::channel();
        let writer = ConnWriter {
            queue,
            stop: kill.clone(),
            last_words: last_words.clone(),
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
                    shared,
                    session: None,
                    finished: false,
                },
                WriterEnd {
                    queue: receiver,
                    kill,
                    last_words,
                },
            )),
            Ok(Err(e)) => {
                tracing::warn!(conn = conn.0, "connection refused by the node: {e}");
                Err(Stopped)
            }
            Err(_) => Err(Stopped),
        }
    }

    /// True after Fin or a refused Hello: the reader should stop reading.
    pub fn finished(&self) -> bool {
        self.finished
    }

    pub fn max_payload(&self) -> u32 {
        self.shared.max_payload
    }

    async fn send(&self, input: Input) -> Result<(), Stopped> {
        let input = NodeInput::core(input);
        self.shared.inputs.send(input).await.map_err(|_| Stopped)
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

    /// Handles one whole frame from the client.
    pub async fn dispatch(&mut self, frame: ClientFrame) -> Result<(), Stopped> {
        let request = match Request::parse(&frame) {
            Ok(request) => request,
            // The node answers Bad with the parse error's code.
            Err(_) => {
                let conn = self.conn;
                return self.send(Input::Frame { conn, frame }).await;
            }
        };
        match &request {
            Request::Hello { uid, token } => {
                return self.hello(uid.clone(), token.clone(), request).await;
            }
            Request::Fin => self.finished = true,
            Request::Custom { ver, cmd, .. } => {
                if let (Some(handler), Some(ctx)) =
                    (self.shared.hooks.custom(*ver, *cmd), self.context(&request))
                {
                    let input =
                        match guarded("a command handler", self.shared.hooks.timeout, handler(ctx))
                            .await
                        {
                            Ok(Ok(payload)) => Input::Call(Call::Respond {
                                conn: self.conn,
                                ver: *ver,
                                cmd: *cmd,
                                payload,
                            }),
                            Ok(Err(rejection)) => {
                                self.stopped(*ver, *cmd, None, Stop::Rejected(rejection))
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
