//! Behaviour of one node, rule by rule, through the shared drain loop. The randomized whole-node
//! simulation is in `tests/simulation.rs`; the cluster's in `tests/cluster_sim/`.

mod driver;
mod sessions_and_groups;

use std::time::Duration;

use bytes::{Bytes, BytesMut};

use super::*;
use crate::config::{Limits, StaticGroup};
use crate::proto::{
    self, ClientFrame, CreateRequest, RandJoinRequest, Request, ServerFrame, Status, cmd, code,
    decode_server_frame, parse_broadcast_push, parse_error_payload, parse_member_push,
};

const STATIC_ID: &str = "STATIC-GROUP-000000000000000000000000000000000000000";

struct Harness {
    node: Node,
    now: Instant,
    log: Log,
}

/// What the node put out, recorded by the shared drain loop.
#[derive(Default)]
struct Log {
    /// Every frame sent, decoded, with the raw Bytes (to check sharing).
    sent: Vec<(ConnId, ServerFrame, Bytes)>,
    events: Vec<Event>,
    /// Every mesh message, with the time the harness drained it.
    mesh: Vec<(Instant, MeshTransmit)>,
    /// The harness's time, for `mesh`.
    now: Instant,
}

impl Sink for Log {
    fn transmit(&mut self, t: Transmit) -> bool {
        let mut buf = BytesMut::from(&t.frame[..]);
        let frame = decode_server_frame(&mut buf, u32::MAX).unwrap().unwrap();
        assert!(buf.is_empty(), "one transmit is exactly one frame");
        self.sent.push((t.conn, frame, t.frame));
        true
    }
    fn event(&mut self, event: Event) {
        self.events.push(event);
    }
    fn mesh(&mut self, transmit: MeshTransmit) {
        self.mesh.push((self.now, transmit));
    }
}

impl Harness {
    fn new() -> Self {
        Self::with(|_| {})
    }

    fn with(tweak: impl FnOnce(&mut NodeConfig)) -> Self {
        let mut config = NodeConfig {
            seed: 42,
            ..NodeConfig::default()
        };
        config.group.static_groups.push(StaticGroup {
            id: STATIC_ID.parse().unwrap(),
            interval: Duration::ZERO,
        });
        tweak(&mut config);
        Harness {
            node: Node::new(config, Instant::ZERO).unwrap(),
            now: Instant::ZERO,
            log: Log::default(),
        }
    }

    fn drain(&mut self) {
        self.log.now = self.now;
        let _deadline = self.node.drain(self.now, &mut self.log);
    }

    /// Feeds one input at the harness's time and drains what it produced.
    fn input(&mut self, input: Input) -> Handled {
        let handled = self.node.handle(input, self.now);
        self.drain();
        handled
    }

    fn call(&mut self, call: Call) -> Handled {
        self.input(Input::Call(call))
    }

    fn connect(&mut self, conn: ConnId) -> Result<(), ConnectError> {
        let Handled::Connect(result) = self.input(Input::Connect(conn)) else {
            panic!("a connect is answered with its result")
        };
        result
    }

    /// Sends a request and returns its outcome.
    fn outcome(&mut self, conn: ConnId, request: Request) -> Outcome {
        let Handled::Request(outcome) = self.input(Input::Request { conn, request }) else {
            panic!("a request is answered with its outcome")
        };
        outcome
    }

    fn user(&mut self, conn: u64, uid: &str) -> ConnId {
        let c = ConnId(conn);
        self.connect(c).unwrap();
        self.request(
            c,
            Request::Hello {
                uid: uid.into(),
                token: Bytes::new(),
            },
        );
        let ok = self.take(c);
        assert_eq!(ok.len(), 1);
        assert_eq!((ok[0].status, ok[0].payload.len()), (Status::Ok, 16));
        c
    }

    fn request(&mut self, conn: ConnId, request: Request) {
        let _outcome = self.outcome(conn, request);
    }

    /// Frames sent to `conn` since the last take.
    fn take(&mut self, conn: ConnId) -> Vec<ServerFrame> {
        let (mine, rest) = std::mem::take(&mut self.log.sent)
            .into_iter()
            .partition(|(c, _, _)| *c == conn);
        self.log.sent = rest;
        mine.into_iter().map(|(_, f, _)| f).collect()
    }

    fn create(
        &mut self,
        conn: ConnId,
        allow_empty: bool,
        join: bool,
        ttl_s: u16,
        interval_ms: u16,
    ) -> GroupId {
        self.request(
            conn,
            Request::Create(CreateRequest {
                allow_empty,
                join,
                ttl_s,
                interval_ms,
            }),
        );
        let frames = self.take(conn);
        assert_eq!(
            frames[0].status,
            Status::Ok,
            "{:?}",
            parse_error_payload(&frames[0].payload)
        );
        GroupId::from_bytes(&frames[0].payload).unwrap()
    }

    fn join(&mut self, conn: ConnId, group: GroupId, message: &'static [u8]) -> ServerFrame {
        self.request(
            conn,
            Request::Join {
                group,
                message: Bytes::from_static(message),
            },
        );
        self.take(conn).remove(0)
    }

    fn broadcast(&mut self, conn: ConnId, group: GroupId, message: &'static [u8]) {
        self.request(
            conn,
            Request::Broadcast {
                group,
                reliable: true,
                message: Bytes::from_static(message),
            },
        );
    }

    /// Advances virtual time to `now + by`, running every deadline on the way, in order.
    fn advance(&mut self, by: Duration) {
        let end = self.now.saturating_add(by);
        while let Some(at) = self.node.poll_timeout().filter(|at| *at <= end) {
            self.now = at.max(self.now);
            let _done = self.input(Input::Timeout);
        }
        self.now = end;
    }
}

fn error_code(frame: &ServerFrame) -> u16 {
    assert_eq!(frame.status, Status::Bad);
    parse_error_payload(&frame.payload).unwrap().code
}
