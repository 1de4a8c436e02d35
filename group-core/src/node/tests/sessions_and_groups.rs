//! Sessions, groups, broadcasts, merging, discard and TTL.

use super::*;

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
    // The replaced connection was told why before it closed.
    let told = h.take(old);
    let last = told.last().expect("a closing notice");
    assert_eq!(
        (last.ver, last.cmd, last.status),
        (0, cmd::CLOSING, Status::Bad)
    );
    assert_eq!(error_code(last), code::CLOSED_REPLACED);
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
        !h.log
            .events
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
    assert_eq!(snapshot.member_node["a"], h.node.config().addr);
    assert_eq!(h.node.member_nodes(&g1), Some(snapshot.member_nodes));
    assert_eq!(h.node.latest_group_id("nobody"), None);
}

#[test]
fn the_latest_group_is_the_newest_joined_or_created() {
    let mut h = Harness::with(|c| c.limits.connection_ttl = Duration::from_secs(86_400));
    let a = h.user(1, "a");
    let joined = h.create(a, false, true, 60, 0);
    assert_eq!(h.node.latest_group_id("a"), Some(joined));
    // Created without joining: newest all the same (Diarkis's GetLatestGroupID).
    let created = h.create(a, true, false, 11, 0);
    assert_eq!(h.node.user_group_ids("a"), Some(&[joined][..]));
    assert_eq!(h.node.latest_group_id("a"), Some(created));
    // Once the created group is gone, the newest group `a` is still in counts.
    h.advance(Duration::from_secs(30));
    assert!(h.node.group_snapshot(&created).is_none());
    assert_eq!(h.node.latest_group_id("a"), Some(joined));
}

#[test]
fn a_node_that_stalled_gives_its_sessions_a_grace_before_it_calls_them_idle() {
    let mut h = Harness::new();
    let a = h.user(1, "a");
    let b = h.user(2, "b");
    // The process was frozen: its next timer (the 10 s idle check) is served 25 s after the start.
    h.now = h.now.saturating_add(Duration::from_secs(25));
    let _done = h.input(Input::Timeout);
    assert!(h.node.session_of(a).is_some() && h.node.session_of(b).is_some());
    // a's KeepAlive, read from its socket after the stall, keeps it; b stays silent.
    h.request(a, Request::KeepAlive);
    h.advance(Duration::from_millis(1_999));
    assert!(h.node.session_of(b).is_some(), "two seconds to be heard");
    h.advance(Duration::from_millis(1));
    assert!(h.node.session_of(b).is_none(), "then silence is silence");
    assert!(h.node.session_of(a).is_some());
}

/// Sends a Create and returns the refusal code (0 on success).
fn create_code(h: &mut Harness, conn: ConnId, allow_empty: bool, join: bool, ttl_s: u16) -> u16 {
    let params = CreateRequest {
        allow_empty,
        join,
        ttl_s,
        interval_ms: 0,
    };
    h.request(conn, Request::Create(params));
    let answer = h.take(conn);
    let last = answer.last().expect("an answer");
    if last.status == Status::Ok {
        0
    } else {
        error_code(last)
    }
}

#[test]
fn a_create_asking_for_a_ttl_beyond_max_ttl_is_refused() {
    let mut h = Harness::with(|c| c.group.max_ttl = Duration::from_secs(600));
    let a = h.user(1, "a");
    assert_eq!(
        create_code(&mut h, a, true, false, 601),
        code::CREATE_TTL_TOO_LONG
    );
    assert_eq!(create_code(&mut h, a, true, false, 600), 0);
}

#[test]
fn one_user_cannot_create_more_than_its_share_even_after_leaving_them() {
    let mut h = Harness::with(|c| {
        c.limits.max_groups_created_per_user = 3;
        c.limits.connection_ttl = Duration::from_secs(86_400);
    });
    let flooder = h.user(1, "flooder");
    let other = h.user(2, "other");
    for _ in 0..3 {
        // Empty groups it is not even in: maxGroupsPerUser does not see them.
        assert_eq!(create_code(&mut h, flooder, true, false, 60), 0);
    }
    assert_eq!(
        create_code(&mut h, flooder, true, false, 60),
        code::CREATE_USER_CREATE_LIMIT
    );
    assert_eq!(
        create_code(&mut h, other, true, false, 60),
        0,
        "others still create"
    );
    // Reconnecting as the same user changes nothing; the groups' expiry does.
    h.request(flooder, Request::Fin);
    let again = h.user(3, "flooder");
    assert_eq!(
        create_code(&mut h, again, true, false, 60),
        code::CREATE_USER_CREATE_LIMIT
    );
    h.advance(Duration::from_secs(61));
    assert_eq!(
        create_code(&mut h, again, true, false, 60),
        0,
        "expired groups no longer count"
    );
}

#[test]
fn a_connection_that_never_says_hello_is_closed_after_hello_timeout_whatever_it_sends() {
    let mut h = Harness::with(|c| c.limits.connection_ttl = Duration::from_secs(60));
    let greeted = h.user(1, "greeted");
    let lurker = ConnId(2);
    let _connected = h.input(Input::Connect(lurker));
    for _ in 0..4 {
        h.advance(Duration::from_secs(1));
        // KeepAlive before Hello is refused, and does not buy the lurker more time.
        h.request(lurker, Request::KeepAlive);
    }
    assert!(
        !h.log
            .events
            .iter()
            .any(|e| matches!(e, Event::Close { conn, .. } if *conn == lurker))
    );
    let _refusals = h.take(lurker);
    h.advance(Duration::from_secs(1));
    assert!(h.log.events.contains(&Event::Close {
        conn: lurker,
        reason: CloseReason::HelloTimeout
    }));
    let told = h.take(lurker);
    assert_eq!(told.len(), 1, "one closing notice");
    assert_eq!(
        (told[0].cmd, error_code(&told[0])),
        (cmd::CLOSING, code::CLOSED_HELLO_TIMEOUT)
    );
    assert!(
        h.node.session_of(greeted).is_some(),
        "a greeted connection is not touched"
    );
}
