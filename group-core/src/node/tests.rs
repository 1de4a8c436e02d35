//! Behaviour of one node, rule by rule. The randomized whole-node simulation is in `tests/simulation.rs`.

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

#[test]
fn commands_before_hello_are_refused_and_hello_once_per_connection() {
    let mut h = Harness::new();
    let c = ConnId(1);
    h.connect(c).unwrap();
    h.request(c, Request::Ping(Bytes::from_static(b"x")));
    assert_eq!(error_code(&h.take(c)[0]), code::NOT_GREETED);
    h.request(
        c,
        Request::Hello {
            uid: "a".into(),
            token: Bytes::new(),
        },
    );
    assert_eq!(h.take(c)[0].status, Status::Ok);
    h.request(
        c,
        Request::Hello {
            uid: "b".into(),
            token: Bytes::new(),
        },
    );
    assert_eq!(error_code(&h.take(c)[0]), code::ALREADY_GREETED);
    h.request(c, Request::Ping(Bytes::from_static(b"x")));
    assert_eq!(&h.take(c)[0].payload[..], b"x");
    assert_eq!(
        h.node.session_of(c).map(|(u, _)| u.to_string()),
        Some("a".into())
    );
}

#[test]
fn second_hello_with_same_uid_replaces_and_discards_the_older_session() {
    let mut h = Harness::new();
    let old = h.user(1, "alice");
    let bob = h.user(2, "bob");
    let g = h.create(old, false, true, 60, 0);
    h.join(bob, g, b"");
    let old_sid = h.node.session_of(old).unwrap().1;
    let new = h.user(3, "alice");
    assert_ne!(
        h.node.session_of(new).unwrap().1,
        old_sid,
        "a new session gets a new sid"
    );
    assert!(h.log.events.contains(&Event::Close {
        conn: old,
        reason: CloseReason::Replaced
    }));
    // Bob saw alice leave through discard; the new alice is in no group.
    let pushes = h.take(bob);
    assert_eq!(
        (pushes[0].cmd, pushes[0].status),
        (cmd::LEAVE, Status::Push)
    );
    assert_eq!(h.node.user_group_ids("alice"), Some(&[][..]));
    // Frames arriving late on the replaced connection are dropped.
    h.request(old, Request::KeepAlive);
    assert!(h.take(old).is_empty());
}

#[test]
fn create_rules_follow_diarkis() {
    let mut h = Harness::new();
    let c = h.user(1, "a");
    for (allow_empty, join, ttl, expected) in [
        (true, true, 10, code::CREATE_TTL_TOO_SHORT),
        (false, false, 60, code::CREATE_EMPTY_WITHOUT_JOIN),
    ] {
        h.request(
            c,
            Request::Create(CreateRequest {
                allow_empty,
                join,
                ttl_s: ttl,
                interval_ms: 0,
            }),
        );
        assert_eq!(error_code(&h.take(c)[0]), expected);
    }
    let merged = h.create(c, true, true, 11, 100);
    let unmerged = h.create(c, true, true, 11, 99);
    assert_eq!(
        h.node.group_snapshot(&merged).unwrap().interval,
        Duration::from_millis(100)
    );
    assert_eq!(
        h.node.group_snapshot(&unmerged).unwrap().interval,
        Duration::ZERO
    );
    let layout = merged.layout().unwrap();
    assert_eq!(layout.owner, h.node.config().addr);
    assert_ne!(merged, unmerged, "IDs are unique even at the same instant");

    let _done = h.call(Call::SetOffline);
    let offline = h.take(c);
    assert_eq!(
        (offline[0].ver, offline[0].cmd, offline[0].status),
        (0, cmd::OFFLINE, Status::Push)
    );
    h.request(
        c,
        Request::Create(CreateRequest {
            allow_empty: true,
            join: true,
            ttl_s: 60,
            interval_ms: 0,
        }),
    );
    assert_eq!(error_code(&h.take(c)[0]), code::CREATE_NODE_OFFLINE);
}

#[test]
fn join_and_leave_errors_carry_the_group_and_notify_only_with_a_message() {
    let mut h = Harness::new();
    let a = h.user(1, "a");
    let b = h.user(2, "b");
    let g = h.create(a, false, true, 60, 0);
    let missing = GroupId::generate(999_999_999, h.node.config().addr, &[]);

    let bad = h.join(b, missing, b"");
    assert_eq!(error_code(&bad), code::JOIN_GROUP_NOT_FOUND);
    assert_eq!(
        parse_error_payload(&bad.payload).unwrap().group,
        Some(missing)
    );

    assert_eq!(h.join(b, g, b"").status, Status::Ok);
    assert!(h.take(a).is_empty(), "empty join message: no push");
    assert_eq!(error_code(&h.join(b, g, b"")), code::JOIN_ALREADY_MEMBER);

    h.request(
        b,
        Request::Leave {
            group: g,
            message: Bytes::from_static(b"bye"),
        },
    );
    assert_eq!(&h.take(b)[0].payload[..], g.as_bytes());
    let push = parse_member_push(&h.take(a)[0].payload).unwrap();
    assert_eq!((push.uid.as_str(), &push.message[..]), ("b", &b"bye"[..]));

    h.request(
        b,
        Request::Leave {
            group: g,
            message: Bytes::new(),
        },
    );
    assert_eq!(error_code(&h.take(b)[0]), code::LEAVE_NOT_MEMBER);
    h.request(
        b,
        Request::Leave {
            group: missing,
            message: Bytes::new(),
        },
    );
    assert_eq!(error_code(&h.take(b)[0]), code::LEAVE_GROUP_NOT_FOUND);

    assert_eq!(h.join(b, g, b"hi").status, Status::Ok);
    let push = h.take(a).remove(0);
    assert_eq!(
        (
            push.cmd,
            &parse_member_push(&push.payload).unwrap().message[..]
        ),
        (cmd::JOIN, &b"hi"[..])
    );
}

#[test]
fn server_side_operations_use_the_given_ver_and_cmd() {
    let mut h = Harness::new();
    let a = h.user(1, "a");
    let b = h.user(2, "b");
    let g = h.create(a, false, true, 60, 0);
    let join = |uid: &str, message: &'static [u8], ver, cmd| Call::Join {
        group: g,
        uid: uid.into(),
        message: Bytes::from_static(message),
        ver,
        cmd,
    };
    let leave = |message: &'static [u8], ver, cmd| Call::Leave {
        group: g,
        uid: "b".into(),
        message: Bytes::from_static(message),
        ver,
        cmd,
    };
    assert_eq!(
        h.call(join("b", b"j", 5, 500)),
        Handled::Join(Ok(JoinStatus::Joined))
    );
    let broadcast = Call::Broadcast {
        group: g,
        uid: "b".into(),
        ver: 6,
        cmd: 600,
        message: Bytes::from_static(b"m"),
        reliable: false,
    };
    assert_eq!(h.call(broadcast), Handled::Broadcast(Ok(())));
    assert_eq!(h.call(leave(b"l", 7, 700)), Handled::Leave(Ok(())));
    let got: Vec<(u8, u16)> = h.take(a).iter().map(|f| (f.ver, f.cmd)).collect();
    assert_eq!(got, vec![(5, 500), (6, 600), (7, 700)]);
    assert!(h.take(b).is_empty());
    let Handled::Leave(Err(err)) = h.call(leave(b"", 1, 112)) else {
        panic!("b left already")
    };
    let err = GroupError::from(err);
    assert!(err.is_leave_error() && !err.is_join_error());
    assert!(matches!(
        h.call(join("nobody", b"", 1, 111)),
        Handled::Join(Err(JoinError::UnknownUser { .. }))
    ));
}

#[test]
fn broadcast_reaches_the_other_members_with_one_shared_encoding() {
    let mut h = Harness::new();
    let a = h.user(1, "a");
    let others: Vec<ConnId> = (2..6).map(|i| h.user(i, &format!("u{i}"))).collect();
    let outsider = h.user(9, "outsider");
    let g = h.create(a, false, true, 60, 0);
    for &c in &others {
        h.join(c, g, b"");
    }
    h.broadcast(a, g, b"hello");
    assert!(
        h.take(a).is_empty(),
        "no echo to the sender, no Ok on success"
    );
    assert!(h.take(outsider).is_empty());
    let raws: Vec<Bytes> = h.log.sent.iter().map(|(_, _, raw)| raw.clone()).collect();
    assert_eq!(raws.len(), others.len());
    assert!(
        raws.windows(2).all(|w| w[0].as_ptr() == w[1].as_ptr()),
        "one allocation shared by all"
    );
    let (group, entries) = parse_broadcast_push(&h.log.sent[0].1.payload).unwrap();
    assert_eq!(
        (group, entries[0].uid.as_str(), &entries[0].message[..]),
        (g, "a", &b"hello"[..])
    );
    h.log.sent.clear();

    h.broadcast(outsider, g, b"x");
    let refused = h.take(outsider).remove(0);
    assert_eq!(error_code(&refused), code::BROADCAST_NOT_MEMBER);
    assert_eq!(
        parse_error_payload(&refused.payload).unwrap().group,
        Some(g)
    );

    h.node
        .announce(&g, 1, cmd::BROADCAST, Bytes::from_static(b"ann"), true)
        .unwrap();
    h.drain();
    let to_a = h.take(a);
    let (_, entries) = parse_broadcast_push(&to_a[0].payload).unwrap();
    assert_eq!(
        entries[0].uid, "",
        "announce has no sender and reaches everyone"
    );
}

#[test]
fn merged_broadcasts_flush_once_per_interval_in_order_without_own_entries() {
    let mut h = Harness::new();
    let a = h.user(1, "a");
    let b = h.user(2, "b");
    let c = h.user(3, "c");
    let g = h.create(a, false, true, 60, 200);
    h.join(b, g, b"");
    h.join(c, g, b"");
    h.broadcast(a, g, b"1");
    h.advance(Duration::from_millis(50));
    h.broadcast(b, g, b"2");
    h.broadcast(a, g, b"3");
    assert!(h.log.sent.is_empty(), "nothing before the interval");
    h.advance(Duration::from_millis(149));
    assert!(h.log.sent.is_empty());
    h.advance(Duration::from_millis(1));
    let texts = |frames: Vec<ServerFrame>| -> Vec<Vec<(String, Bytes)>> {
        frames
            .iter()
            .map(|f| {
                parse_broadcast_push(&f.payload)
                    .unwrap()
                    .1
                    .into_iter()
                    .map(|e| (e.uid, e.message))
                    .collect()
            })
            .collect()
    };
    let e = |u: &str, m: &'static [u8]| (u.to_string(), Bytes::from_static(m));
    assert_eq!(
        texts(h.take(c)),
        vec![vec![e("a", b"1"), e("b", b"2"), e("a", b"3")]]
    );
    assert_eq!(texts(h.take(a)), vec![vec![e("b", b"2")]]);
    assert_eq!(texts(h.take(b)), vec![vec![e("a", b"1"), e("a", b"3")]]);
    h.advance(Duration::from_secs(1));
    assert!(h.log.sent.is_empty(), "an empty buffer sends nothing");
}

#[test]
fn merge_buffer_flushes_early_rather_than_outgrow_max_merge_bytes() {
    let mut h = Harness::with(|c| {
        c.limits = Limits {
            max_merge_bytes: 200,
            ..Limits::default()
        }
    });
    let a = h.user(1, "a");
    let b = h.user(2, "b");
    let g = h.create(a, false, true, 60, 1000);
    h.join(b, g, b"");
    for _ in 0..5 {
        h.broadcast(a, g, &[b'x'; 40]); // 46 wire bytes each: the fourth one does not fit after 52 + 3 x 46.
    }
    let early = h.take(b);
    assert_eq!(early.len(), 1);
    assert_eq!(parse_broadcast_push(&early[0].payload).unwrap().1.len(), 3);
    assert!(early[0].payload.len() <= 200);
    h.advance(Duration::from_secs(1));
    assert_eq!(
        parse_broadcast_push(&h.take(b)[0].payload).unwrap().1.len(),
        2
    );
}

#[test]
fn fin_and_disconnect_discard_with_the_custom_message() {
    let mut h = Harness::new();
    h.node
        .set_discard_message(Box::new(|_, uid, _| Bytes::from(format!("{uid} is gone"))));
    let a = h.user(1, "a");
    let b = h.user(2, "b");
    let c = h.user(3, "c");
    let g = h.create(a, true, true, 60, 0);
    let g2 = h.create(a, false, true, 60, 0);
    h.join(b, g, b"");
    h.join(c, g, b"");
    h.request(b, Request::Fin);
    assert_eq!(h.take(b)[0].status, Status::Ok);
    assert!(h.log.events.contains(&Event::Close {
        conn: b,
        reason: CloseReason::Fin
    }));
    let push = parse_member_push(&h.take(a)[0].payload).unwrap();
    assert_eq!(
        (push.uid.as_str(), &push.message[..]),
        ("b", &b"b is gone"[..])
    );
    assert_eq!(h.take(c).len(), 1);

    let _done = h.input(Input::Disconnect(a));
    assert!(h.take(c)[0].cmd == cmd::LEAVE);
    assert!(
        h.node.group_snapshot(&g2).is_none(),
        "a's own non-allow_empty group went with a"
    );
    assert!(h.log.events.contains(&Event::GroupDeleted { group: g2 }));
    assert_eq!(h.node.group_snapshot(&g).unwrap().members.len(), 1);
}

#[test]
fn idle_connections_are_discarded_after_connection_ttl_and_keepalive_postpones_it() {
    let mut h = Harness::new();
    let a = h.user(1, "a");
    let b = h.user(2, "b");
    h.advance(Duration::from_secs(9));
    h.request(a, Request::KeepAlive);
    assert_eq!(h.take(a)[0].status, Status::Ok);
    h.advance(Duration::from_secs(1));
    assert!(h.log.events.contains(&Event::Close {
        conn: b,
        reason: CloseReason::Idle
    }));
    assert!(
        !h.log.events
            .iter()
            .any(|e| matches!(e, Event::Close { conn, .. } if *conn == a))
    );
    h.advance(Duration::from_millis(8_999));
    assert!(h.node.session_of(a).is_some());
    h.advance(Duration::from_millis(1));
    assert!(h.node.session_of(a).is_none());
    assert_eq!(h.node.connection_count(), 0);
    assert_eq!(h.node.timer_count(), 0, "no stale timer left behind");
}

#[test]
fn ttl_deletes_empty_allow_empty_groups_exactly_on_time_and_never_static_ones() {
    let mut h = Harness::with(|c| c.limits.connection_ttl = Duration::from_secs(86_400));
    let a = h.user(1, "a");
    let g = h.create(a, true, false, 30, 0);
    h.advance(Duration::from_secs(20));
    h.join(a, g, b"");
    h.advance(Duration::from_secs(20));
    h.request(
        a,
        Request::Leave {
            group: g,
            message: Bytes::new(),
        },
    );
    h.advance(Duration::from_millis(29_999));
    assert!(
        h.node.group_snapshot(&g).is_some(),
        "emptiness restarted the countdown"
    );
    h.advance(Duration::from_millis(1));
    assert!(h.node.group_snapshot(&g).is_none());

    let s: GroupId = STATIC_ID.parse().unwrap();
    assert_eq!(h.join(a, s, b"").status, Status::Ok);
    h.request(
        a,
        Request::Leave {
            group: s,
            message: Bytes::new(),
        },
    );
    h.advance(Duration::from_secs(3600));
    let snapshot = h.node.group_snapshot(&s).unwrap();
    assert!(snapshot.is_static && snapshot.owner.is_none());
}

#[test]
fn queries_report_join_order_snapshots_and_member_nodes() {
    let mut h = Harness::new();
    let a = h.user(1, "a");
    let b = h.user(2, "b");
    let g1 = h.create(b, false, true, 60, 0);
    let g2 = h.create(b, false, true, 60, 0);
    h.join(a, g2, b"");
    h.join(a, g1, b"");
    assert_eq!(h.node.user_group_ids("a"), Some(&[g2, g1][..]));
    assert_eq!(h.node.latest_group_id("a"), Some(g1));
    let snapshot = h.node.group_snapshot(&g1).unwrap();
    assert_eq!(snapshot.members.keys().collect::<Vec<_>>(), vec!["a", "b"]);
    assert_eq!(snapshot.members["a"], h.node.session_of(a).unwrap().1);
    assert_eq!(
        snapshot.member_nodes.iter().copied().collect::<Vec<_>>(),
        vec![h.node.config().addr]
    );
    assert_eq!(h.node.member_nodes(&g1), Some(snapshot.member_nodes));
    assert_eq!(h.node.latest_group_id("nobody"), None);
}

#[test]
fn tick_fires_every_interval_until_cleared_or_deleted() {
    let mut h = Harness::new();
    let a = h.user(1, "a");
    let g = h.create(a, false, true, 60, 0);
    let tick = |interval| Call::SetTick { group: g, interval };
    assert_eq!(
        h.call(tick(Some(Duration::ZERO))),
        Handled::Tick(Err(TickError::ZeroInterval))
    );
    assert_eq!(
        h.call(tick(Some(Duration::from_secs(2)))),
        Handled::Tick(Ok(()))
    );
    h.request(a, Request::KeepAlive); // keep the session alive past the ticks
    h.advance(Duration::from_secs(5));
    let ticks = |h: &Harness| {
        h.log.events
            .iter()
            .filter(|e| **e == Event::Tick { group: g })
            .count()
    };
    assert_eq!(ticks(&h), 2);
    assert_eq!(h.call(tick(None)), Handled::Tick(Ok(())));
    h.request(a, Request::KeepAlive);
    h.advance(Duration::from_secs(5));
    assert_eq!(ticks(&h), 2);
}

#[test]
fn random_join_creates_then_fills_existing_groups() {
    let mut h = Harness::new();
    let a = h.user(1, "a");
    let b = h.user(2, "b");
    let params = RandJoinRequest {
        allow_empty: false,
        ttl_s: 60,
        interval_ms: 0,
        message: Bytes::from_static(b"hey"),
    };
    h.request(a, Request::RandJoin(params.clone()));
    let created = GroupId::from_bytes(&h.take(a)[0].payload).unwrap();
    h.request(b, Request::RandJoin(params.clone()));
    assert_eq!(GroupId::from_bytes(&h.take(b)[0].payload).unwrap(), created);
    assert_eq!(
        parse_member_push(&h.take(a)[0].payload).unwrap().message,
        Bytes::from_static(b"hey")
    );
    // Groups created by Create are not random-join candidates.
    let c = h.user(3, "c");
    let private = h.create(c, false, true, 60, 0);
    h.request(c, Request::RandJoin(params));
    assert_eq!(GroupId::from_bytes(&h.take(c)[0].payload).unwrap(), created);
    assert_ne!(created, private);
}

#[test]
fn limits_are_errors_not_panics() {
    let mut h = Harness::with(|c| {
        c.limits.max_groups = 3; // the static group counts
        c.limits.max_groups_per_user = 1;
        c.limits.max_members_per_group = 2;
        c.limits.max_connections = 4;
    });
    let a = h.user(1, "a");
    let b = h.user(2, "b");
    let c = h.user(3, "c");
    let g = h.create(a, false, true, 60, 0);
    h.request(
        a,
        Request::Create(CreateRequest {
            allow_empty: true,
            join: true,
            ttl_s: 60,
            interval_ms: 0,
        }),
    );
    assert_eq!(error_code(&h.take(a)[0]), code::CREATE_USER_GROUP_LIMIT);
    h.join(b, g, b"");
    assert_eq!(error_code(&h.join(c, g, b"")), code::JOIN_GROUP_FULL);
    let _ = h.create(c, false, true, 60, 0);
    let d = h.user(4, "d");
    h.request(
        d,
        Request::Create(CreateRequest {
            allow_empty: true,
            join: false,
            ttl_s: 60,
            interval_ms: 0,
        }),
    );
    assert_eq!(error_code(&h.take(d)[0]), code::CREATE_TOO_MANY_GROUPS);
    assert_eq!(
        error_code(&h.join(a, STATIC_ID.parse().unwrap(), b"")),
        code::JOIN_USER_GROUP_LIMIT
    );
    assert_eq!(
        h.connect(ConnId(5)),
        Err(ConnectError::TooManyConnections { max: 4 })
    );
    assert_eq!(
        h.connect(ConnId(4)),
        Err(ConnectError::DuplicateConnection)
    );
}

#[test]
fn bad_frames_get_bad_responses_and_oversized_frames_close() {
    let mut h = Harness::new();
    let a = h.user(1, "a");
    let b = h.user(2, "b");
    let g = h.create(a, false, true, 60, 0);
    h.join(b, g, b"");
    let frame = |ver, cmd, payload| Input::Frame {
        conn: a,
        frame: ClientFrame { ver, cmd, payload },
    };
    let _short = h.input(frame(1, 111, Bytes::from_static(b"short")));
    let _unknown = h.input(frame(0, 77, Bytes::new()));
    let codes: Vec<u16> = h.take(a).iter().map(error_code).collect();
    assert_eq!(codes, vec![code::MALFORMED, code::UNKNOWN_COMMAND]);
    let oversized = Input::Oversized {
        conn: a,
        ver: 1,
        cmd: 113,
        len: 1 << 30,
    };
    assert_eq!(h.input(oversized), Handled::Done);
    assert_eq!(error_code(&h.take(a)[0]), code::PAYLOAD_TOO_LARGE);
    assert!(h.log.events.contains(&Event::Close {
        conn: a,
        reason: CloseReason::FrameTooLarge
    }));
    assert_eq!(
        h.take(b)[0].cmd,
        cmd::LEAVE,
        "the violator was discarded; bob is unaffected"
    );
    h.broadcast(b, g, b"still works");
    assert!(h.take(b).is_empty());
}

#[test]
fn custom_commands_without_a_handler_are_refused_and_server_code_answers_the_others() {
    let mut h = Harness::new();
    let a = h.user(1, "a");
    let custom = Request::Custom {
        ver: 2,
        cmd: 9,
        payload: Bytes::from_static(b"q"),
    };
    assert_eq!(
        h.outcome(a, custom),
        Outcome::Refused {
            code: code::NO_HANDLER
        }
    );
    let refusal = h.take(a).remove(0);
    assert_eq!((refusal.ver, refusal.cmd), (2, 9));
    assert_eq!(
        parse_error_payload(&refusal.payload).unwrap().message,
        "no handler for ver 2 cmd 9"
    );
    // A command server code intercepted is answered through the node.
    let respond = Call::Respond {
        conn: a,
        ver: 2,
        cmd: 9,
        payload: Bytes::from_static(b"answer"),
    };
    assert_eq!(h.call(respond), Handled::Done);
    let push = |uid: &str| Call::PushToUser {
        uid: uid.into(),
        ver: 3,
        cmd: 1,
        payload: Bytes::from_static(b"pushed"),
    };
    assert_eq!(h.call(push("a")), Handled::Pushed(true));
    assert_eq!(h.call(push("nobody")), Handled::Pushed(false));
    let frames = h.take(a);
    assert_eq!(
        (frames[0].status, &frames[0].payload[..]),
        (Status::Ok, &b"answer"[..])
    );
    assert_eq!((frames[1].status, frames[1].ver), (Status::Push, 3));
    let _ = proto::VER_CUSTOM_MIN;
}

#[test]
fn request_outcomes_tell_the_driver_what_happened() {
    let mut h = Harness::new();
    let a = h.user(1, "a");
    let create = Request::Create(CreateRequest {
        allow_empty: false,
        join: true,
        ttl_s: 60,
        interval_ms: 0,
    });
    let Outcome::Accepted { group: Some(g) } = h.outcome(a, create) else {
        panic!()
    };
    let join_again = Request::Join {
        group: g,
        message: Bytes::new(),
    };
    assert_eq!(
        h.outcome(a, join_again),
        Outcome::Refused {
            code: code::JOIN_ALREADY_MEMBER
        }
    );
    let broadcast = Request::Broadcast {
        group: g,
        reliable: false,
        message: Bytes::new(),
    };
    assert_eq!(
        h.outcome(a, broadcast),
        Outcome::Accepted { group: Some(g) }
    );
    assert_eq!(
        h.outcome(a, Request::KeepAlive),
        Outcome::Accepted { group: None }
    );
    let garbage = ClientFrame {
        ver: 1,
        cmd: 110,
        payload: Bytes::from_static(b"?"),
    };
    assert_eq!(
        h.input(Input::Frame {
            conn: a,
            frame: garbage
        }),
        Handled::Request(Outcome::Refused {
            code: code::MALFORMED
        })
    );
    assert_eq!(
        h.outcome(ConnId(77), Request::KeepAlive),
        Outcome::Ignored
    );
}

#[test]
fn fail_sends_an_err_response_and_keeps_the_connection() {
    let mut h = Harness::new();
    let a = h.user(1, "a");
    let fail = Call::Fail {
        conn: a,
        ver: 1,
        cmd: cmd::JOIN,
        group: None,
        message: "hook panicked".into(),
    };
    assert_eq!(h.call(fail), Handled::Done);
    let frame = h.take(a).remove(0);
    assert_eq!(
        (
            frame.status,
            parse_error_payload(&frame.payload).unwrap().code
        ),
        (Status::Err, code::HOOK_FAILED)
    );
    assert!(h.node.session_of(a).is_some());
}

#[test]
fn refuse_and_close_answers_then_closes() {
    let mut h = Harness::new();
    let a = h.user(1, "a");
    let refuse = Call::RefuseAndClose {
        conn: a,
        ver: 0,
        cmd: cmd::HELLO,
        code: code::AUTH_FAILED,
        message: "token expired".into(),
    };
    assert_eq!(h.call(refuse), Handled::Done);
    let frame = h.take(a).remove(0);
    assert_eq!(
        parse_error_payload(&frame.payload).unwrap().message,
        "token expired"
    );
    assert!(h.log.events.contains(&Event::Close {
        conn: a,
        reason: CloseReason::Rejected
    }));
    assert!(h.node.session_of(a).is_none());
}

#[test]
fn new_groups_name_the_next_live_nodes_as_backups() {
    use std::net::Ipv4Addr;
    let node = |port| NodeAddr::new(Ipv4Addr::LOCALHOST, port);
    let mut h = Harness::new(); // this node is 127.0.0.1:8100
    let a = h.user(1, "a");
    let alone = h.create(a, true, true, 60, 0);
    assert_eq!(
        alone.layout().unwrap().backups,
        [None, None],
        "a cluster of one has no backups"
    );
    for port in [8099, 8101, 8105, 8100] {
        let _done = h.input(Input::NodeUp(node(port))); // 8100 is this node itself: ignored
    }
    let id = h.create(a, true, true, 60, 0);
    assert_eq!(
        id.layout().unwrap().backups,
        [Some(node(8101)), Some(node(8105))]
    );
    let _done = h.input(Input::NodeDown(node(8105)));
    let id = h.create(a, true, true, 60, 0);
    assert_eq!(
        id.layout().unwrap().backups,
        [Some(node(8101)), Some(node(8099))],
        "wraps around"
    );
    let _done = h.input(Input::NodeDown(node(8101)));
    let _done = h.input(Input::NodeDown(node(8099)));
    assert!(h.node.backup_candidates().is_empty());
}

#[test]
fn a_server_api_join_arms_its_deadline_from_the_time_of_the_call() {
    use crate::cluster::mesh::MeshMessage;
    use std::net::Ipv4Addr;
    let peer = NodeAddr::new(Ipv4Addr::LOCALHOST, 8101);
    let mut h = Harness::new();
    let _done = h.input(Input::NodeUp(peer));
    let _a = h.user(1, "a");
    let remote = GroupId::generate(1_000, peer, &[]);
    // Nothing happens for 7 s: the last input before the call is at 0.
    let called_at = h.now.saturating_add(Duration::from_secs(7));
    h.now = called_at;
    let join = Call::Join {
        group: remote,
        uid: "a".into(),
        message: Bytes::new(),
        ver: 1,
        cmd: cmd::JOIN,
    };
    assert!(matches!(
        h.call(join),
        Handled::Join(Ok(JoinStatus::Pending(_)))
    ));
    let timeout = h.node.config().limits.mesh_request_timeout;
    let requests = |h: &Harness| -> Vec<Instant> {
        let asks = h.log.mesh.iter();
        asks.filter(|(_, m)| matches!(m.message, MeshMessage::JoinRequest { .. }))
            .map(|(at, _)| *at)
            .collect()
    };
    assert_eq!(requests(&h), vec![called_at]);
    h.advance(timeout - Duration::from_millis(1));
    assert_eq!(requests(&h).len(), 1, "no retry before the timeout");
    h.advance(Duration::from_millis(1));
    assert_eq!(
        requests(&h),
        vec![called_at, called_at.saturating_add(timeout)],
        "the retry comes one timeout after the call"
    );
}

#[test]
fn joins_in_flight_count_against_the_users_group_limit() {
    use std::net::Ipv4Addr;
    let peer = NodeAddr::new(Ipv4Addr::LOCALHOST, 8101);
    let mut h = Harness::with(|config| config.limits.max_groups_per_user = 2);
    let _done = h.input(Input::NodeUp(peer));
    let a = h.user(1, "a");
    let remote = |n| GroupId::generate(n, peer, &[]);
    let join = |group| Request::Join {
        group,
        message: Bytes::new(),
    };
    for n in 1..=2 {
        let outcome = h.outcome(a, join(remote(n)));
        assert!(matches!(outcome, Outcome::Pending { .. }), "join {n} waits for the owner");
    }
    assert!(h.take(a).is_empty(), "both joins are in flight");
    assert_eq!(
        error_code(&h.join(a, remote(3), b"")),
        code::JOIN_USER_GROUP_LIMIT,
        "a third join in flight would pass maxGroupsPerUser"
    );
}
