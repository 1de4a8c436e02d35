//! The client's own task. It owns the connection, takes the host's submissions in order, sends one
//! request at a time, matches each answer to its submission, times calls out, and hands everything the
//! host should see (pushes, completions, connection state) to one bounded queue the host polls.
//!
//! Why one request at a time: the protocol matches answers to requests by (ver, cmd) in order, and a
//! remote join may be answered after a later request; one in flight keeps the match exact. Pushes keep
//! flowing to the host while a request waits. A request that times out is *abandoned*: its late answer
//! is recognised and dropped, so it never completes the next call.
//!
//! Nothing here waits on the host: when the host's queue is full the task holds at most
//! [`MAX_HELD`] more pushes (only while a call waits for its answer, so that a blocking call never
//! deadlocks behind pushes nobody reads), then stops reading the socket: backpressure reaches the server.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use group_core::GroupId;
use group_core::proto::{CreateRequest, RandJoinRequest, Request};
use group_net::client::{
    Client, ClientError, ClientReceiver, ClientSender, CloseReason, KeepAlive, Push,
};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::result::group_result;

/// Events waiting for the host, at most; then the task stops reading (see the module docs).
pub(crate) const EVENT_QUEUE: usize = 65_536;
/// Pushes held beyond a full event queue while a call waits for its answer, at most.
const MAX_HELD: usize = 65_536;
/// Submissions waiting to be sent, at most: a non-blocking submit past it returns `GROUP_RESULT_BUSY`.
pub(crate) const SUBMISSION_QUEUE: usize = 1024;
/// How long the task waits for the server to close after Fin when the client is freed.
const FIN_WAIT: Duration = Duration::from_millis(500);

/// What the host asked for.
pub(crate) enum Operation {
    Hello {
        uid: String,
        token: Bytes,
    },
    Create(CreateRequest),
    RandJoin(RandJoinRequest),
    Join {
        group: GroupId,
        message: Bytes,
    },
    Leave {
        group: GroupId,
        message: Bytes,
    },
    Custom {
        ver: u8,
        cmd: u16,
        payload: Bytes,
    },
    /// No answer on success (a refusal arrives as a push), so no completion either.
    Broadcast {
        group: GroupId,
        message: Bytes,
        reliable: bool,
    },
    /// Changes the keep-alive interval (in order with the rest; no completion).
    SetKeepAlive(Option<Duration>),
}

impl Operation {
    /// Whether the server answers it (and so the host gets a completion).
    fn is_answered(&self) -> bool {
        !matches!(
            self,
            Operation::Broadcast { .. } | Operation::SetKeepAlive(_)
        )
    }

    /// Whether its Ok answer is a group ID.
    fn answers_group(&self) -> bool {
        matches!(
            self,
            Operation::Create(_)
                | Operation::RandJoin(_)
                | Operation::Join { .. }
                | Operation::Leave { .. }
        )
    }

    /// The request it sends; `None` for a local setting.
    fn request(self) -> Option<Request> {
        Some(match self {
            Operation::Hello { uid, token } => Request::Hello { uid, token },
            Operation::Create(params) => Request::Create(params),
            Operation::RandJoin(params) => Request::RandJoin(params),
            Operation::Join { group, message } => Request::Join { group, message },
            Operation::Leave { group, message } => Request::Leave { group, message },
            Operation::Custom { ver, cmd, payload } => Request::Custom { ver, cmd, payload },
            Operation::Broadcast {
                group,
                message,
                reliable,
            } => Request::Broadcast {
                group,
                reliable,
                message,
            },
            Operation::SetKeepAlive(_) => return None,
        })
    }
}

/// Where a completion goes.
pub(crate) enum Reply {
    /// To the host's event queue (a non-blocking submission).
    Event,
    /// To the blocking call waiting for it.
    Wait(oneshot::Sender<Completion>),
}

/// One submission: an operation, its ID, how long it may take (`None`: the client's default).
pub(crate) struct Submission {
    pub op: u64,
    pub operation: Operation,
    pub timeout: Option<Duration>,
    pub reply: Reply,
}

/// How a submitted operation ended.
#[derive(Debug, Clone)]
pub(crate) struct Completion {
    pub op: u64,
    pub result: group_result,
    /// The protocol code of a refusal; 0 otherwise.
    pub code: u16,
    /// The group created, joined or left.
    pub group: Option<GroupId>,
    /// Hello: the 16-byte session ID; a custom request: the reply; a refusal: its message.
    pub payload: Bytes,
}

impl Completion {
    fn failed(op: u64, result: group_result) -> Completion {
        Completion {
            op,
            result,
            code: 0,
            group: None,
            payload: Bytes::new(),
        }
    }
}

/// Why the connection is not (or no longer) usable, for the host's state event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Disconnect {
    ServerClosed,
    Network,
    Protocol,
    ConnectFailed,
    ConnectTimedOut,
}

/// What the host's poll hands out.
pub(crate) enum ClientEvent {
    Push(Push),
    Completed(Completion),
    Connected,
    Disconnected { reason: Disconnect, message: String },
}

/// What the host keeps to talk to the task.
pub(crate) struct Channels {
    pub submissions: mpsc::Sender<Submission>,
    pub events: mpsc::Receiver<ClientEvent>,
    pub stop: oneshot::Sender<()>,
}

/// The task's ends of [`Channels`].
pub(crate) struct TaskEnds {
    submissions: mpsc::Receiver<Submission>,
    events: mpsc::Sender<ClientEvent>,
    stop: oneshot::Receiver<()>,
}

/// Makes the channels between the host and the task.
pub(crate) fn channels() -> (Channels, TaskEnds) {
    let (submit, submissions) = mpsc::channel(SUBMISSION_QUEUE);
    let (events_tx, events) = mpsc::channel(EVENT_QUEUE);
    let (stop_tx, stop) = oneshot::channel();
    (
        Channels {
            submissions: submit,
            events,
            stop: stop_tx,
        },
        TaskEnds {
            submissions,
            events: events_tx,
            stop,
        },
    )
}

/// Connects, then serves the host until the connection ends or the host frees the client.
pub(crate) async fn run(
    connecting: impl std::future::Future<Output = Result<Client, ClientError>>,
    default_timeout: Duration,
    mut ends: TaskEnds,
) {
    let client = tokio::select! {
        connected = connecting => connected,
        _ = &mut ends.stop => return,
    };
    let client = match client {
        Ok(client) => client,
        Err(error) => {
            let reason = match error {
                ClientError::Timeout(_) => Disconnect::ConnectTimedOut,
                _ => Disconnect::ConnectFailed,
            };
            let message = format!("could not connect: {error}");
            return fail_all(ends, reason, message).await;
        }
    };
    let keep_alive = client.keep_alive_handle();
    let (sender, receiver) = client.into_split();
    let mut session = Session {
        sender,
        receiver,
        keep_alive,
        events: ends.events.clone(),
        current: None,
        abandoned: VecDeque::new(),
        held: VecDeque::new(),
        default_timeout,
    };
    session.deliver(ClientEvent::Connected);
    let ended = session.serve(&mut ends.submissions, &mut ends.stop).await;
    let Session {
        sender,
        receiver,
        current,
        held,
        ..
    } = session;
    let (reason, message) = match ended {
        Ended::Stopped => return finish(sender, receiver).await,
        Ended::HostGone => return,
        Ended::Closed => {
            let reason = receiver.close_reason();
            let code = match reason {
                Some(CloseReason::Network(_)) => Disconnect::Network,
                Some(CloseReason::Protocol(_)) => Disconnect::Protocol,
                _ => Disconnect::ServerClosed,
            };
            let text =
                reason.map_or_else(|| CloseReason::ServerClosed.to_string(), |r| r.to_string());
            (code, text)
        }
    };
    drop(sender);
    // What was held still reaches the host, before the completions of the calls the close ended.
    for event in held {
        if ends.events.send(event).await.is_err() {
            return;
        }
    }
    if let Some(in_flight) = current {
        complete(
            &ends.events,
            in_flight.reply,
            Completion::failed(in_flight.op, group_result::GROUP_RESULT_DISCONNECTED),
        )
        .await;
    }
    fail_all(ends, reason, message).await;
}

/// Sends the host the state event, then completes every submission still coming with
/// `GROUP_RESULT_DISCONNECTED` until the host frees the client.
async fn fail_all(mut ends: TaskEnds, reason: Disconnect, message: String) {
    ends.submissions.close();
    let _ = ends
        .events
        .send(ClientEvent::Disconnected { reason, message })
        .await;
    while let Some(submission) = ends.submissions.recv().await {
        if !submission.operation.is_answered() {
            continue;
        }
        let failed = Completion::failed(submission.op, group_result::GROUP_RESULT_DISCONNECTED);
        complete(&ends.events, submission.reply, failed).await;
    }
}

async fn complete(events: &mpsc::Sender<ClientEvent>, reply: Reply, completion: Completion) {
    match reply {
        Reply::Event => {
            let _ = events.send(ClientEvent::Completed(completion)).await;
        }
        Reply::Wait(waiting) => {
            let _ = waiting.send(completion);
        }
    }
}

/// The host freed the client: say Fin and give the server a moment to close, so that the session ends
/// at once instead of after `connectionTtl`.
async fn finish(mut sender: ClientSender, mut receiver: ClientReceiver) {
    if sender.send(&Request::Fin).await.is_err() {
        return;
    }
    let _ = tokio::time::timeout(FIN_WAIT, async {
        while receiver.next_push().await.is_some() {}
    })
    .await;
}

/// How [`Session::serve`] ended.
enum Ended {
    /// The host freed the client.
    Stopped,
    /// The host's end of the event queue is gone (the client is being torn down).
    HostGone,
    /// The connection closed.
    Closed,
}

/// The request on the wire, waiting for its answer.
struct InFlight {
    op: u64,
    key: (u8, u16),
    /// Whether the Ok answer is a group ID.
    answers_group: bool,
    deadline: Instant,
    reply: Reply,
}

struct Session {
    sender: ClientSender,
    receiver: ClientReceiver,
    keep_alive: KeepAlive,
    events: mpsc::Sender<ClientEvent>,
    current: Option<InFlight>,
    /// (ver, cmd) of requests that timed out and whose answers are still due, in order.
    abandoned: VecDeque<(u8, u16)>,
    /// Events the host's full queue could not take yet, in order.
    held: VecDeque<ClientEvent>,
    default_timeout: Duration,
}

impl Session {
    async fn serve(
        &mut self,
        submissions: &mut mpsc::Receiver<Submission>,
        stop: &mut oneshot::Receiver<()>,
    ) -> Ended {
        // A handle of its own, so that waiting for room does not borrow `self` (once, not per event).
        let events = self.events.clone();
        loop {
            let deadline = self.current.as_ref().map(|c| c.deadline);
            let may_read =
                self.held.is_empty() || (self.current.is_some() && self.held.len() < MAX_HELD);
            // A host that submits but never polls would make completions pile up in `held`: past the
            // bound, submissions wait in their queue (and the host's next submit gets BUSY).
            let may_start = self.current.is_none() && self.held.len() < MAX_HELD;
            tokio::select! {
                biased;
                _ = &mut *stop => return Ended::Stopped,
                permit = events.reserve(), if !self.held.is_empty() => {
                    let Ok(permit) = permit else { return Ended::HostGone };
                    if let Some(event) = self.held.pop_front() {
                        permit.send(event);
                    }
                }
                push = self.receiver.next_push(), if may_read => match push {
                    None => return Ended::Closed,
                    Some(push) => self.received(push),
                },
                () = sleep_until(deadline), if deadline.is_some() => self.time_out(),
                submission = submissions.recv(), if may_start => match submission {
                    None => return Ended::Stopped,
                    Some(submission) => {
                        if !self.start(submission).await {
                            return Ended::Closed;
                        }
                    }
                },
            }
            if self.events.is_closed() {
                return Ended::HostGone;
            }
        }
    }

    /// Sends a submission; false when the connection is gone.
    async fn start(&mut self, submission: Submission) -> bool {
        let Submission {
            op,
            operation,
            timeout,
            reply,
        } = submission;
        if let Operation::SetKeepAlive(every) = operation {
            self.keep_alive.set(every);
            return true;
        }
        let is_answered = operation.is_answered();
        let answers_group = operation.answers_group();
        let Some(request) = operation.request() else {
            return true;
        };
        let key = request.ver_cmd();
        if self.sender.send(&request).await.is_err() {
            if is_answered {
                let failed = Completion::failed(op, group_result::GROUP_RESULT_DISCONNECTED);
                self.finish_call(reply, failed);
            }
            return false;
        }
        if is_answered {
            let deadline = Instant::now() + timeout.unwrap_or(self.default_timeout);
            self.current = Some(InFlight {
                op,
                key,
                answers_group,
                deadline,
                reply,
            });
        }
        true
    }

    fn received(&mut self, push: Push) {
        let key = match &push {
            Push::Response(frame) => (frame.ver, frame.cmd),
            Push::Refused { ver, cmd, .. } => (*ver, *cmd),
            _ => return self.deliver(ClientEvent::Push(push)),
        };
        if self.abandoned.front() == Some(&key) {
            self.abandoned.pop_front();
            return; // the answer to a call that timed out: its caller was told already
        }
        let answers_current = self.current.as_ref().is_some_and(|c| c.key == key);
        if !answers_current {
            // A refused broadcast (it has no Ok), or an answer nobody asked for: the host sees it.
            if matches!(push, Push::Refused { .. }) {
                self.deliver(ClientEvent::Push(push));
            }
            return;
        }
        let Some(in_flight) = self.current.take() else {
            return;
        };
        let completion = answer(&in_flight, push);
        self.finish_call(in_flight.reply, completion);
    }

    fn time_out(&mut self) {
        if let Some(in_flight) = self.current.take() {
            self.abandoned.push_back(in_flight.key);
            let timed_out = Completion::failed(in_flight.op, group_result::GROUP_RESULT_TIMED_OUT);
            self.finish_call(in_flight.reply, timed_out);
        }
    }

    fn finish_call(&mut self, reply: Reply, completion: Completion) {
        match reply {
            Reply::Event => self.deliver(ClientEvent::Completed(completion)),
            Reply::Wait(waiting) => {
                let _ = waiting.send(completion);
            }
        }
    }

    /// Into the host's queue, or held (in order) while it is full.
    fn deliver(&mut self, event: ClientEvent) {
        if !self.held.is_empty() {
            self.held.push_back(event);
            return;
        }
        if let Err(mpsc::error::TrySendError::Full(event)) = self.events.try_send(event) {
            self.held.push_back(event);
        }
    }
}

/// The completion an answer makes.
fn answer(in_flight: &InFlight, push: Push) -> Completion {
    let op = in_flight.op;
    match push {
        Push::Response(frame) if in_flight.answers_group => {
            match GroupId::from_bytes(&frame.payload) {
                Ok(group) => Completion {
                    op,
                    result: group_result::GROUP_RESULT_OK,
                    code: 0,
                    group: Some(group),
                    payload: Bytes::new(),
                },
                Err(_) => Completion::failed(op, group_result::GROUP_RESULT_PROTOCOL),
            }
        }
        Push::Response(frame) => Completion {
            op,
            result: group_result::GROUP_RESULT_OK,
            code: 0,
            group: None,
            payload: frame.payload,
        },
        Push::Refused { error, .. } => Completion {
            op,
            result: group_result::GROUP_RESULT_REFUSED,
            code: error.code,
            group: error.group,
            payload: Bytes::from(error.message.into_bytes()),
        },
        _ => Completion::failed(op, group_result::GROUP_RESULT_PROTOCOL),
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
