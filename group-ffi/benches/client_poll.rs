//! What `group_client_poll_push(client, 0, ...)` and `group_client_poll_event(client, 0, ...)` cost a game
//! loop on an idle client: the call a C, C++ or C# host makes every frame. Criterion's figure, then the p50 and p99 of 500 single calls timed one by
//! one (what a frame pays). Run with `cargo bench -p group-ffi --bench client_poll`.

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use group_ffi::*;

const CONFIG: &str = r#"{"server": {"tcp": "127.0.0.1:0", "ws": null, "udp": null},
                         "mesh": {"bind": "127.0.0.1:0"}}"#;

fn poll_once(client: *mut group_client) -> group_result {
    let mut push = std::mem::MaybeUninit::<group_push>::uninit();
    let mut buf = [0u8; 256];
    let mut needed = 0usize;
    // SAFETY: a live client and real buffers.
    unsafe {
        group_client_poll_push(
            client,
            0,
            push.as_mut_ptr(),
            buf.as_mut_ptr(),
            buf.len(),
            &mut needed,
        )
    }
}

fn poll_event_once(client: *mut group_client) -> group_result {
    let mut event = std::mem::MaybeUninit::<group_client_event>::uninit();
    let mut buf = [0u8; 256];
    let mut needed = 0usize;
    // SAFETY: a live client and real buffers.
    unsafe {
        group_client_poll_event(
            client,
            0,
            event.as_mut_ptr(),
            buf.as_mut_ptr(),
            buf.len(),
            &mut needed,
        )
    }
}

fn bench(c: &mut Criterion) {
    let mut server: *mut group_server = std::ptr::null_mut();
    let mut client: *mut group_client = std::ptr::null_mut();
    let mut port = 0u16;
    let (mut sid, mut refusal) = ([0u8; 16], 0u16);
    // SAFETY: real pointers; both are freed at the end.
    unsafe {
        assert_eq!(
            group_server_new(CONFIG.as_ptr(), CONFIG.len(), 1, &mut server),
            group_result::GROUP_RESULT_OK
        );
        assert_eq!(group_server_start(server), group_result::GROUP_RESULT_OK);
        assert_eq!(
            group_server_port(server, 1, &mut port),
            group_result::GROUP_RESULT_OK
        );
        let addr = format!("127.0.0.1:{port}");
        let r = group_client_connect(1, addr.as_ptr(), addr.len(), &mut client);
        assert_eq!(r, group_result::GROUP_RESULT_OK);
        let uid = "idle";
        let r = group_client_hello(
            client,
            uid.as_ptr(),
            uid.len(),
            std::ptr::null(),
            0,
            sid.as_mut_ptr(),
            &mut refusal,
        );
        assert_eq!(r, group_result::GROUP_RESULT_OK);
    }
    c.bench_function("group_client_poll_push_timeout_0_idle", |b| {
        b.iter(|| {
            assert_eq!(
                black_box(poll_once(client)),
                group_result::GROUP_RESULT_NOT_FOUND
            )
        })
    });
    // The Connected event is first in the queue; take it so that the idle poll finds nothing.
    while poll_event_once(client) == group_result::GROUP_RESULT_OK {}
    c.bench_function("group_client_poll_event_timeout_0_idle", |b| {
        b.iter(|| {
            assert_eq!(
                black_box(poll_event_once(client)),
                group_result::GROUP_RESULT_NOT_FOUND
            )
        })
    });
    let mut single: Vec<Duration> = (0..500)
        .map(|_| {
            let start = Instant::now();
            let r = poll_once(client);
            let took = start.elapsed();
            assert_eq!(r, group_result::GROUP_RESULT_NOT_FOUND);
            took
        })
        .collect();
    single.sort();
    println!(
        "single calls: p50 {:?}, p99 {:?} over {} calls",
        single[single.len() / 2],
        single[single.len() * 99 / 100],
        single.len()
    );
    // SAFETY: freed once each; nothing uses them afterwards.
    unsafe {
        group_client_free(client);
        group_server_free(server);
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
