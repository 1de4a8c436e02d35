//! Ticks that announce from the tick thread, broadcasts that do not wait, drain, random join.

use super::*;

#[test]
fn ticks_call_back_and_may_use_the_blocking_api() {
    let (server, addr, _) = start();
    let server = server.0;
    let rt = client_runtime();
    let mut alice = connect(&rt, addr, "alice");
    let group = create(&rt, &mut alice);
    // SAFETY: a live server; the callback's userdata is the server, alive until the end of the test.
    unsafe {
        let r = group_server_set_tick(
            server,
            group.as_bytes().as_ptr(),
            999,
            None,
            std::ptr::null_mut(),
        );
        assert_eq!(
            r,
            group_result::GROUP_RESULT_INVALID_ARGUMENT,
            "ticks are at least a second apart"
        );
        let r = group_server_set_tick(
            server,
            group.as_bytes().as_ptr(),
            1000,
            Some(tick),
            server.cast(),
        );
        assert_eq!(r, group_result::GROUP_RESULT_OK);
    }
    // The tick's announce reaches alice: the blocking API worked from the tick thread.
    loop {
        match bounded(&rt, alice.next_push()) {
            Some(Push::Broadcast { entries, .. }) if entries[0].message[..] == b"tick"[..] => break,
            Some(_) => {}
            None => panic!("alice's connection closed"),
        }
    }
    assert!(
        TICKS
            .lock()
            .unwrap()
            .iter()
            .all(|r| *r == group_result::GROUP_RESULT_OK)
    );
    // Ticks are events too.
    let mut event = std::mem::MaybeUninit::<group_event>::uninit();
    let mut uid = [0u8; 64];
    let mut needed = 0usize;
    let mut saw_tick = false;
    // SAFETY: real buffers; a live server.
    while unsafe {
        group_server_poll_event(
            server,
            event.as_mut_ptr(),
            uid.as_mut_ptr(),
            64,
            &mut needed,
        )
    } == group_result::GROUP_RESULT_OK
    {
        // SAFETY: written on OK.
        let event = unsafe { event.assume_init() };
        saw_tick |= event.kind == group_event_kind::GROUP_EVENT_TICK as u32
            && event.group == *group.as_bytes();
    }
    assert!(saw_tick);
    // SAFETY: a live server; interval 0 stops the tick.
    unsafe {
        let r = group_server_set_tick(
            server,
            group.as_bytes().as_ptr(),
            0,
            None,
            std::ptr::null_mut(),
        );
        assert_eq!(r, group_result::GROUP_RESULT_OK);
        let unknown = [b'0'; GROUP_ID_LEN];
        let r = group_server_set_tick(server, unknown.as_ptr(), 1000, None, std::ptr::null_mut());
        assert_eq!(r, group_result::GROUP_RESULT_NOT_FOUND);
    }
}

#[test]
fn broadcasts_queued_without_waiting_arrive_and_their_refusals_become_events() {
    let (server, addr, _) = start();
    let server = server.0;
    let rt = client_runtime();
    let mut alice = connect(&rt, addr, "alice");
    let mut bob = connect(&rt, addr, "bob");
    let group = create(&rt, &mut alice);
    bounded(&rt, bob.join(group, b"")).unwrap();
    let nowait = |uid: &[u8]| {
        // SAFETY: a live server; real pointers and lengths.
        unsafe {
            group_server_broadcast_nowait(
                server,
                group.as_bytes().as_ptr(),
                uid.as_ptr(),
                uid.len(),
                1,
                113,
                b"quick".as_ptr(),
                5,
                1,
            )
        }
    };
    // Not blocking, so allowed even where blocking calls are refused (inside a runtime, as in a callback).
    rt.block_on(async { assert_eq!(nowait(b"alice"), group_result::GROUP_RESULT_OK) });
    loop {
        match bounded(&rt, bob.next_push()) {
            Some(Push::Broadcast { entries, .. }) => {
                assert_eq!(
                    (entries[0].uid.as_str(), &entries[0].message[..]),
                    ("alice", &b"quick"[..])
                );
                break;
            }
            Some(_) => {}
            None => panic!("bob's connection closed"),
        }
    }
    assert_eq!(
        nowait(b"carol"),
        group_result::GROUP_RESULT_OK,
        "queued; refused later"
    );
    let mut event = std::mem::MaybeUninit::<group_event>::uninit();
    let mut uid = [0u8; 64];
    let mut needed = 0usize;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        assert!(std::time::Instant::now() < deadline, "no refusal event");
        // SAFETY: real buffers; a live server.
        let r = unsafe {
            group_server_poll_event(
                server,
                event.as_mut_ptr(),
                uid.as_mut_ptr(),
                64,
                &mut needed,
            )
        };
        if r != group_result::GROUP_RESULT_OK {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        }
        // SAFETY: written on OK.
        let event = unsafe { event.assume_init_read() };
        if event.kind == group_event_kind::GROUP_EVENT_BROADCAST_REFUSED as u32 {
            assert_eq!((&uid[..event.uid_len], event.reason), (&b"carol"[..], 6));
            assert_eq!(event.group, *group.as_bytes());
            break;
        }
    }
}

#[test]
fn a_drain_pushes_offline_and_ends_once_the_last_client_has_gone() {
    let (server, addr, _) = start();
    let raw = server.0 as usize;
    let rt = client_runtime();
    let mut alice = connect(&rt, addr, "alice");
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let drainer = std::thread::spawn(move || {
        // SAFETY: the server outlives this thread: the test joins it before the guard frees the server.
        let r = unsafe { group_server_drain(raw as *const group_server, 1000) };
        let _ = done_tx.send(r);
    });
    assert_eq!(bounded(&rt, alice.next_push()), Some(Push::Offline));
    assert!(
        done_rx.try_recv().is_err(),
        "the drain waits while a client is connected"
    );
    drop(alice);
    let r = done_rx.recv_timeout(Duration::from_secs(20)).unwrap();
    assert_eq!(r, group_result::GROUP_RESULT_OK);
    drainer.join().unwrap();
    let mut port = 0u16;
    // SAFETY: a live (drained) server.
    let r = unsafe { group_server_port(server.0, 1, &mut port) };
    assert_eq!(r, group_result::GROUP_RESULT_NOT_STARTED);
}

#[test]
fn a_random_join_creates_a_group_then_fills_it() {
    let (_server, addr, _) = start();
    let text = addr.to_string();
    let mut group = [[0u8; GROUP_ID_LEN]; 2];
    let mut clients = Vec::new();
    for (i, uid) in ["alice", "bob"].into_iter().enumerate() {
        let mut c: *mut group_client = std::ptr::null_mut();
        let (mut sid, mut refusal) = ([0u8; 16], 0u16);
        // SAFETY: real pointers and lengths; each client is freed once below.
        unsafe {
            let r = group_client_connect(1, text.as_ptr(), text.len(), &mut c);
            assert_eq!(r, group_result::GROUP_RESULT_OK);
            let r = group_client_hello(
                c,
                uid.as_ptr(),
                uid.len(),
                std::ptr::null(),
                0,
                sid.as_mut_ptr(),
                &mut refusal,
            );
            assert_eq!(r, group_result::GROUP_RESULT_OK);
            let r = group_client_random_join(
                c,
                0,
                60,
                0,
                b"hey".as_ptr(),
                3,
                group[i].as_mut_ptr(),
                &mut refusal,
            );
            assert_eq!(r, group_result::GROUP_RESULT_OK, "refusal {refusal}");
        }
        clients.push(c);
    }
    assert_eq!(
        group[0], group[1],
        "bob landed in the group alice's random join created"
    );
    let mut push = std::mem::MaybeUninit::<group_push>::uninit();
    let (mut buf, mut needed) = ([0u8; 64], 0usize);
    // SAFETY: a live client; real buffers. Then each client is freed once.
    unsafe {
        let r = group_client_poll_push(
            clients[0],
            10_000,
            push.as_mut_ptr(),
            buf.as_mut_ptr(),
            buf.len(),
            &mut needed,
        );
        assert_eq!(r, group_result::GROUP_RESULT_OK);
        let push = push.assume_init_read();
        assert_eq!(push.kind, group_push_kind::GROUP_PUSH_JOINED as u32);
        assert_eq!(&buf[..push.uid_len + push.message_len], b"bobhey");
        for c in clients {
            group_client_free(c);
        }
    }
}
