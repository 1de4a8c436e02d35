//! The Rust server API (Diarkis's Group package) on a cloneable [`ServerHandle`].
//!
//! Every call is data ([`group_core::Call`]) handed to the node task, which feeds it to the core with
//! the time of the call and answers with what the core said: the same path a simulation drives. The
//! handle exposes operations and questions, never the node's state.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use group_core::proto::CreateRequest;
use group_core::{
    BroadcastError, Call, CreateError, GroupId, GroupSnapshot, Handled, Input, JoinError,
    JoinStatus, LeaveError, Node, NodeAddr, TickError,
};
use tokio::sync::{mpsc, oneshot};

use crate::hooks::HookFuture;
use crate::inbox::{Answer, NodeInput, TickRunner, answer_to};

/// Marks a group's tick callback finished when dropped.
struct TickDone(Arc<AtomicBool>);

impl Drop for TickDone {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// A tick callback: runs on its own task each time the group's timer fires.
pub type TickFn = Arc<dyn Fn(GroupId, ServerHandle) -> HookFuture<()> + Send + Sync>;

/// Inputs waiting for the node task, at most. Readers wait when it is full: backpressure to clients.
pub(crate) const INPUT_QUEUE: usize = 8192;

/// The node's own numbers, for the metrics listener.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NodeGauges {
    pub connections: usize,
    pub sessions: usize,
    /// Groups this node holds: owned and copies.
    pub groups: usize,
    pub live_nodes: usize,
    /// Draining or drained: handing its groups over.
    pub offline: bool,
    pub census: group_core::GroupCensus,
    pub counters: group_core::NodeCounters,
}

/// Why a server API call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// The server has stopped.
    #[error("server stopped")]
    Stopped,
    /// The node's input queue is full: a call that does not wait was not queued. Retry later, or make
    /// the waiting call (which waits for room).
    #[error("the node's input queue is full ({INPUT_QUEUE} calls waiting)")]
    Busy,
    /// See [`CreateError`].
    #[error(transparent)]
    Create(#[from] CreateError),
    /// See [`JoinError`].
    #[error(transparent)]
    Join(#[from] JoinError),
    /// See [`LeaveError`].
    #[error(transparent)]
    Leave(#[from] LeaveError),
    /// See [`BroadcastError`].
    #[error(transparent)]
    Broadcast(#[from] BroadcastError),
    /// See [`TickError`].
    #[error(transparent)]
    Tick(#[from] TickError),
    /// A push with ver 0 or 1: those are the protocol's own pushes, whose payloads clients parse (a
    /// member push, a broadcast): server code pushes with ver 2 and up.
    #[error("ver {ver} is the protocol's own: pushes from server code use ver 2 and up")]
    ReservedVersion {
        /// The version byte given.
        ver: u8,
    },
    /// The node answered a call with the answer to another kind of call: a bug in this server. Please
    /// report it with the text.
    #[error("internal error: unexpected answer {0}")]
    Internal(String),
}

impl ApiError {
    /// Diarkis's IsNewGroupError.
    #[doc(alias = "IsNewGroupError")]
    pub fn is_create_error(&self) -> bool {
        matches!(self, ApiError::Create(_))
    }
    /// Diarkis's IsJoinError.
    #[doc(alias = "IsJoinError")]
    pub fn is_join_error(&self) -> bool {
        matches!(self, ApiError::Join(_))
    }
    /// Diarkis's IsLeaveError.
    #[doc(alias = "IsLeaveError")]
    pub fn is_leave_error(&self) -> bool {
        matches!(self, ApiError::Leave(_))
    }
}

/// The answer to one kind of call arrived for another.
fn unexpected(answer: Answer) -> ApiError {
    ApiError::Internal(format!("{answer:?}"))
}

/// The server API. Cheap to clone; every call runs on the node task, in order.
#[derive(Clone)]
pub struct ServerHandle {
    inputs: mpsc::Sender<NodeInput>,
}

impl std::fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerHandle")
    }
}

impl ServerHandle {
    pub(crate) fn new(inputs: mpsc::Sender<NodeInput>) -> Self {
        ServerHandle { inputs }
    }

    /// Hands `message` to the node task (waiting for room) and waits for its answer.
    async fn ask(
        &self,
        make: impl FnOnce(oneshot::Sender<Answer>) -> NodeInput,
    ) -> Result<Answer, ApiError> {
        let (reply, answer) = oneshot::channel();
        self.inputs
            .send(make(reply))
            .await
            .map_err(|_| ApiError::Stopped)?;
        answer.await.map_err(|_| ApiError::Stopped)
    }

    /// Makes a call and waits for the core's answer.
    async fn call(&self, call: Call) -> Result<Answer, ApiError> {
        self.ask(|reply| NodeInput::Core {
            charge: None,
            input: Input::Call(call),
            reply: Some(answer_to(reply)),
        })
        .await
    }

    /// Answers a question from the core's getters.
    async fn read<T: Send + 'static>(
        &self,
        question: impl FnOnce(&Node) -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let (reply, answer) = oneshot::channel();
        let read = Box::new(move |node: &Node| {
            let _ = reply.send(question(node));
        });
        self.inputs
            .send(NodeInput::Read(read))
            .await
            .map_err(|_| ApiError::Stopped)?;
        answer.await.map_err(|_| ApiError::Stopped)
    }

    /// Creates a group (Diarkis's NewGroup); `creator` joins it when `params.join` is set.
    #[doc(alias = "NewGroup")]
    pub async fn new_group(
        &self,
        params: CreateRequest,
        creator: Option<String>,
    ) -> Result<GroupId, ApiError> {
        match self.call(Call::Create { params, creator }).await? {
            Answer::Handled(Handled::Create(result)) => result.map_err(ApiError::from),
            other => Err(unexpected(other)),
        }
    }

    /// Joins `uid` to a group; the other members get a `ver`/`cmd` push when `message` is non-empty. A
    /// group owned by another node is joined by asking it: the call returns when it answered.
    #[doc(alias = "Join")]
    pub async fn join(
        &self,
        group: GroupId,
        uid: String,
        message: Bytes,
        ver: u8,
        cmd: u16,
    ) -> Result<(), ApiError> {
        let call = Call::Join {
            group,
            uid,
            message,
            ver,
            cmd,
        };
        match self.call(call).await? {
            Answer::Handled(Handled::Join(Ok(JoinStatus::Joined))) => Ok(()),
            Answer::Handled(Handled::Join(Err(e))) => Err(e.into()),
            Answer::Joined(result) => result.map_err(ApiError::from),
            other => Err(unexpected(other)),
        }
    }

    /// Removes `uid` from a group; the remaining members get a `ver`/`cmd` push when `message` is non-empty.
    #[doc(alias = "Leave")]
    pub async fn leave(
        &self,
        group: GroupId,
        uid: String,
        message: Bytes,
        ver: u8,
        cmd: u16,
    ) -> Result<(), ApiError> {
        let call = Call::Leave {
            group,
            uid,
            message,
            ver,
            cmd,
        };
        match self.call(call).await? {
            Answer::Handled(Handled::Leave(result)) => result.map_err(ApiError::from),
            other => Err(unexpected(other)),
        }
    }

    /// Broadcasts `message` from member `uid` to the other members.
    #[doc(alias = "Broadcast")]
    pub async fn broadcast(
        &self,
        group: GroupId,
        uid: String,
        ver: u8,
        cmd: u16,
        message: Bytes,
        reliable: bool,
    ) -> Result<(), ApiError> {
        let call = Call::Broadcast {
            group,
            uid,
            ver,
            cmd,
            message,
            reliable,
        };
        match self.call(call).await? {
            Answer::Handled(Handled::Broadcast(result)) => result.map_err(ApiError::from),
            other => Err(unexpected(other)),
        }
    }

    /// Queues a broadcast from member `uid` and returns at once, without waiting for the node task: for a
    /// host thread (a game loop, a C caller) that must not block for a round trip between threads. A
    /// refusal (no such group, not a member) is handed to `refused` on the node task instead, with the
    /// group and the uid; it must return at once. [`ApiError::Busy`] when the node's input queue is full.
    #[allow(clippy::too_many_arguments)]
    pub fn broadcast_nowait(
        &self,
        group: GroupId,
        uid: String,
        ver: u8,
        cmd: u16,
        message: Bytes,
        reliable: bool,
        refused: impl FnOnce(BroadcastError, GroupId, String) + Send + 'static,
    ) -> Result<(), ApiError> {
        let sender = uid.clone();
        let call = Call::Broadcast {
            group,
            uid,
            ver,
            cmd,
            message,
            reliable,
        };
        let reply = Box::new(move |answer: Answer| {
            if let Answer::Handled(Handled::Broadcast(Err(e))) = answer {
                refused(e, group, sender);
            }
        });
        let message = NodeInput::Core {
            charge: None,
            input: Input::Call(call),
            reply: Some(reply),
        };
        self.inputs.try_send(message).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => ApiError::Busy,
            mpsc::error::TrySendError::Closed(_) => ApiError::Stopped,
        })
    }

    /// Sends `message` to every member from the server itself (an entry with an empty uid).
    #[doc(alias = "Announce")]
    pub async fn announce(
        &self,
        group: GroupId,
        ver: u8,
        cmd: u16,
        message: Bytes,
        reliable: bool,
    ) -> Result<(), ApiError> {
        let call = Call::Announce {
            group,
            ver,
            cmd,
            message,
            reliable,
        };
        match self.call(call).await? {
            Answer::Handled(Handled::Broadcast(result)) => result.map_err(ApiError::from),
            other => Err(unexpected(other)),
        }
    }

    /// The groups `uid` is in, in join order (GetGroupIDList); `None` if no such session here.
    #[doc(alias = "GetGroupIDList")]
    pub async fn group_ids(&self, uid: String) -> Result<Option<Vec<GroupId>>, ApiError> {
        self.read(move |node| node.user_group_ids(&uid).map(<[GroupId]>::to_vec))
            .await
    }

    /// The group `uid` joined or created last, if it still exists (Diarkis's GetLatestGroupID).
    #[doc(alias = "GetLatestGroupID")]
    pub async fn latest_group_id(&self, uid: String) -> Result<Option<GroupId>, ApiError> {
        self.read(move |node| node.latest_group_id(&uid)).await
    }

    /// The mesh addresses of the nodes holding members of a group (GetMemberMeshNodes).
    #[doc(alias = "GetMemberMeshNodes")]
    pub async fn member_mesh_nodes(
        &self,
        group: GroupId,
    ) -> Result<Option<Vec<NodeAddr>>, ApiError> {
        self.read(move |node| node.member_nodes(&group).map(|n| n.into_iter().collect()))
            .await
    }

    /// A snapshot of a group.
    pub async fn snapshot(&self, group: GroupId) -> Result<Option<GroupSnapshot>, ApiError> {
        self.read(move |node| node.group_snapshot(&group)).await
    }

    /// The other nodes of the cluster that the membership layer (or their own mesh link) reports alive.
    pub async fn live_nodes(&self) -> Result<Vec<NodeAddr>, ApiError> {
        self.read(|node| node.live_nodes().collect()).await
    }

    /// What the metrics listener reports of the node, read in one visit.
    pub(crate) async fn gauges(&self) -> Result<NodeGauges, ApiError> {
        self.read(|node| NodeGauges {
            connections: node.connection_count(),
            sessions: node.sessions().count(),
            groups: node.group_ids().count(),
            live_nodes: node.live_nodes().count(),
            offline: node.is_offline(),
            census: node.group_census(),
            counters: node.counters(),
        })
        .await
    }

    /// Client connections the node tracks.
    pub async fn connection_count(&self) -> Result<usize, ApiError> {
        self.read(Node::connection_count).await
    }

    /// Calls `callback` every `interval` while the group exists (`None` stops it), each call on a task of
    /// its own. Calls never overlap: a tick that comes while the previous call is still running is
    /// skipped, counted (`Server::ticks_skipped`, `group_ticks_skipped_total`) and logged.
    #[doc(alias = "SetOnTick")]
    pub async fn set_tick<F, Fut>(
        &self,
        group: GroupId,
        interval: Option<Duration>,
        callback: F,
    ) -> Result<(), ApiError>
    where
        F: Fn(GroupId, ServerHandle) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let callback: TickFn = Arc::new(move |g, h| Box::pin(callback(g, h)));
        let handle = self.clone();
        let running = Arc::new(AtomicBool::new(false));
        let runner: TickRunner = Arc::new(move |group| {
            if running.swap(true, Ordering::AcqRel) {
                return false;
            }
            let done = TickDone(running.clone());
            let run = callback(group, handle.clone());
            tokio::spawn(async move {
                let _done = done; // also when the callback panics
                run.await;
            });
            true
        });
        let answer = self
            .ask(|reply| NodeInput::SetTick {
                group,
                interval,
                callback: interval.map(|_| runner),
                reply: answer_to(reply),
            })
            .await?;
        match answer {
            Answer::Handled(Handled::Tick(result)) => result.map_err(ApiError::from),
            other => Err(unexpected(other)),
        }
    }

    /// Pushes (status 0xFF) a frame with the server code's own `ver` (2 and up) and `cmd` to a connected
    /// user; false if the user has no session here; [`ApiError::ReservedVersion`] for ver 0 or 1.
    pub async fn push_to_user(
        &self,
        uid: String,
        ver: u8,
        cmd: u16,
        payload: Bytes,
    ) -> Result<bool, ApiError> {
        if ver < group_core::proto::VER_CUSTOM_MIN {
            return Err(ApiError::ReservedVersion { ver });
        }
        let call = Call::PushToUser {
            uid,
            ver,
            cmd,
            payload,
        };
        match self.call(call).await? {
            Answer::Handled(Handled::Pushed(pushed)) => Ok(pushed),
            other => Err(unexpected(other)),
        }
    }

    /// Takes the node offline: no new groups, every client gets the Offline push, and the groups this node
    /// owns move to their first live backup.
    pub async fn set_offline(&self) -> Result<(), ApiError> {
        match self.call(Call::SetOffline).await? {
            Answer::Handled(Handled::Done) => Ok(()),
            other => Err(unexpected(other)),
        }
    }
}
