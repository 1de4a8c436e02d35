//! Ticks, random join, limits, bad frames, what the driver is told, and the cluster inputs.

use super::*;

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
        h.log
            .events
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
    assert_eq!(h.connect(ConnId(4)), Err(ConnectError::DuplicateConnection));
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
    assert_eq!(h.outcome(ConnId(77), Request::KeepAlive), Outcome::Ignored);
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
        assert!(
            matches!(outcome, Outcome::Pending { .. }),
            "join {n} waits for the owner"
        );
    }
    assert!(h.take(a).is_empty(), "both joins are in flight");
    assert_eq!(
        error_code(&h.join(a, remote(3), b"")),
        code::JOIN_USER_GROUP_LIMIT,
        "a third join in flight would pass maxGroupsPerUser"
    );
}

#[test]
fn poll_hands_out_frames_then_events_then_the_deadline_once() {
    let mut h = Harness::new();
    let c = ConnId(9);
    assert_eq!(
        h.node.handle(Input::Connect(c), h.now),
        Handled::Connect(Ok(()))
    );
    let hello = Request::Hello {
        uid: "a".into(),
        token: Bytes::new(),
    };
    let _outcome = h.node.handle(
        Input::Request {
            conn: c,
            request: hello,
        },
        h.now,
    );
    let kinds: Vec<&str> = std::iter::from_fn(|| h.node.poll())
        .map(|output| match output {
            Output::Transmit(_) => "transmit",
            Output::Event(_) => "event",
            Output::Mesh(_) => "mesh",
            Output::Timeout(_) => "timeout",
        })
        .collect();
    assert_eq!(kinds, ["transmit", "event", "timeout"]);
    assert_eq!(h.node.poll(), None, "nothing more until the next input");
}

/// A driver whose writer for one connection is full: it refuses that connection's frames.
struct Refusing {
    full: ConnId,
    log: Log,
}

impl Sink for Refusing {
    fn transmit(&mut self, t: Transmit) -> bool {
        t.conn != self.full && self.log.transmit(t)
    }
    fn event(&mut self, event: Event) {
        self.log.event(event);
    }
    fn mesh(&mut self, transmit: MeshTransmit) {
        self.log.mesh(transmit);
    }
}

#[test]
fn a_connection_the_driver_cannot_write_to_is_disconnected_by_the_drain() {
    let mut h = Harness::new();
    let a = h.user(1, "a");
    let slow = h.user(2, "slow");
    let g = h.create(a, false, true, 60, 0);
    h.join(slow, g, b"");
    let broadcast = Request::Broadcast {
        group: g,
        reliable: true,
        message: Bytes::from_static(b"m"),
    };
    let _outcome = h.node.handle(
        Input::Request {
            conn: a,
            request: broadcast,
        },
        h.now,
    );
    let mut driver = Refusing {
        full: slow,
        log: Log::default(),
    };
    let _deadline = h.node.drain(h.now, &mut driver);
    assert!(
        h.node.session_of(slow).is_none(),
        "the slow consumer is gone"
    );
    assert!(
        driver.log.events.iter().any(|e| matches!(
            e,
            Event::SessionDiscarded {
                reason: DiscardReason::Disconnected,
                ..
            }
        )),
        "{:?}",
        driver.log.events
    );
    let pushes: Vec<u16> = driver
        .log
        .sent
        .iter()
        .map(|(c, f, _)| {
            assert_eq!(*c, a, "nothing more for the slow one");
            f.cmd
        })
        .collect();
    assert_eq!(pushes, [cmd::LEAVE], "a hears that the slow one left");
}
