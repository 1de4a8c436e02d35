//! The cost of the C ABI for a broadcast: the same broadcast issued through `group_server_broadcast` (what
//! a C, C++ or C# host calls) and through group-net's Rust API, to one server (hosted through the C ABI)
//! in the same run. Calling an `extern "C"` function from Rust is the calling convention a C program
//! uses, so this is a C host's cost without a C toolchain in the benchmark.
//!
//! - `rust_async`: a task on the server's runtime awaits `ServerHandle::broadcast` (a Rust backend's path).
//! - `rust_block_on`: a host thread blocks on `ServerHandle::broadcast` (the same shape as the C call).
//! - `c_abi`: a host thread calls `group_server_broadcast` (argument checks, copies, the panic boundary,
//!   then the same blocking call).
//! - `rust_nowait` and `c_abi_nowait`: a host thread queues the broadcast without waiting for the node
//!   task (`ServerHandle::broadcast_nowait`, `group_server_broadcast_nowait`).
//!
//! The broadcast goes to a group with no other member: the call alone, since delivery costs the same on
//! every path. A blocking call's time swings between runs with the state of the runtime's threads, more
//! than the two paths differ, so the figure to compare C with Rust is the `paired` line printed at the
//! end (see `paired_ratios`). Run with `cargo bench -p group-ffi --bench ffi_cost`.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use group_core::GroupId;
use group_core::proto::CreateRequest;
use group_ffi::*;
use group_net::client::Client;

const MESSAGE: &[u8] = b"a 32-byte game state update.....";

/// One server hosted through the C ABI, with "alice" alone in one group; her connection stays open on a
/// background thread. Both the C calls and the Rust calls go to this server, on its runtime.
struct Setup {
    server: *mut group_server,
    group: GroupId,
    _clients: std::thread::JoinHandle<()>,
}

impl Setup {
    fn server(&self) -> &group_server {
        // SAFETY: live from `setup` until freed at the end of `bench`.
        unsafe { &*self.server }
    }

    fn handle(&self) -> &group_net::ServerHandle {
        self.server().handle().unwrap()
    }
}

/// TCP only, on a loopback port of the system's choosing; sessions are not ended for idleness during the
/// run (alice only ever sends through the server API).
const CONFIG: &str = r#"{"server": {"tcp": "127.0.0.1:0", "ws": null, "udp": null},
                         "mesh": {"bind": "127.0.0.1:0"}, "limits": {"connectionTtl": 86400}}"#;

fn setup() -> Setup {
    let mut server: *mut group_server = std::ptr::null_mut();
    let mut port = 0u16;
    // SAFETY: real pointers; the server is freed at the end of `bench`.
    unsafe {
        assert_eq!(
            group_server_new(CONFIG.as_ptr(), CONFIG.len(), 2, &mut server),
            group_result::GROUP_RESULT_OK
        );
        assert_eq!(group_server_start(server), group_result::GROUP_RESULT_OK);
        assert_eq!(
            group_server_port(server, 1, &mut port),
            group_result::GROUP_RESULT_OK
        );
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let clients = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let group = rt.block_on(async {
            let params = CreateRequest {
                allow_empty: false,
                join: true,
                ttl_s: 600,
                interval_ms: 0,
            };
            let mut alice = Client::connect_tcp(addr).await.unwrap();
            alice.hello("alice", "").await.unwrap();
            let group = alice.create(params).await.unwrap();
            tokio::spawn(async move { while alice.next_push().await.is_some() {} });
            group
        });
        tx.send(group).unwrap();
        rt.block_on(std::future::pending::<()>());
    });
    let group = rx.recv_timeout(Duration::from_secs(30)).unwrap();
    Setup {
        server,
        group,
        _clients: clients,
    }
}

fn c_broadcast(server: *const group_server, group: &GroupId) {
    let mut refusal = 0u16;
    // SAFETY: a live server; real pointers and lengths.
    let r = unsafe {
        group_server_broadcast(
            server,
            group.as_bytes().as_ptr(),
            b"alice".as_ptr(),
            5,
            1,
            113,
            MESSAGE.as_ptr(),
            MESSAGE.len(),
            1,
            &mut refusal,
        )
    };
    assert_eq!(r, group_result::GROUP_RESULT_OK, "refusal {refusal}");
}

fn rust_blocking(setup: &Setup) {
    let message = Bytes::copy_from_slice(MESSAGE);
    let call = setup
        .handle()
        .broadcast(setup.group, "alice".into(), 1, 113, message, true);
    setup.server().runtime().block_on(call).unwrap();
}

fn rust_nowait(setup: &Setup) -> Result<(), group_net::ApiError> {
    let message = Bytes::copy_from_slice(MESSAGE);
    let uid = "alice".to_string();
    let ignore = |_, _, _| {};
    setup
        .handle()
        .broadcast_nowait(setup.group, uid, 1, 113, message, true, ignore)
}

fn c_nowait(setup: &Setup) -> group_result {
    // SAFETY: a live server; real pointers and lengths.
    unsafe {
        group_server_broadcast_nowait(
            black_box(setup.server),
            setup.group.as_bytes().as_ptr(),
            b"alice".as_ptr(),
            5,
            1,
            113,
            MESSAGE.as_ptr(),
            MESSAGE.len(),
            1,
        )
    }
}

/// The blocking calls' times swing between runs (about 11 to 28 us here, either path ahead in different
/// runs) with the state of the runtime's threads, more than the two paths differ. Timed in the same loop,
/// call by call alternating, their ratio is steady: printed here as the figure to compare.
fn paired_ratios(setup: &Setup) {
    const PAIRS: u32 = 20_000;
    let (mut c_time, mut rust_time) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..PAIRS {
        let start = Instant::now();
        c_broadcast(black_box(setup.server), &setup.group);
        let middle = Instant::now();
        rust_blocking(setup);
        rust_time += middle.elapsed();
        c_time += middle - start;
    }
    let (mut c_nowait_time, mut rust_nowait_time) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..PAIRS {
        let start = Instant::now();
        while c_nowait(setup) == group_result::GROUP_RESULT_BUSY {}
        let middle = Instant::now();
        while rust_nowait(setup).is_err() {}
        rust_nowait_time += middle.elapsed();
        c_nowait_time += middle - start;
    }
    let per = |d: Duration| d.as_secs_f64() * 1e6 / f64::from(PAIRS);
    println!(
        "paired over {PAIRS} calls each: blocking c_abi {:.2} us / rust {:.2} us = {:.2}x; \
         nowait c_abi {:.3} us / rust {:.3} us = {:.2}x",
        per(c_time),
        per(rust_time),
        c_time.as_secs_f64() / rust_time.as_secs_f64(),
        per(c_nowait_time),
        per(rust_nowait_time),
        c_nowait_time.as_secs_f64() / rust_nowait_time.as_secs_f64(),
    );
}

fn bench(c: &mut Criterion) {
    let setup = setup();
    let mut g = c.benchmark_group("broadcast");
    g.measurement_time(Duration::from_secs(5));
    g.bench_function("rust_async", |b| {
        b.iter_custom(|iters| {
            let handle = setup.handle().clone();
            let group = setup.group;
            setup.server().runtime().block_on(async move {
                let task = tokio::spawn(async move {
                    let start = Instant::now();
                    for _ in 0..iters {
                        let message = Bytes::copy_from_slice(MESSAGE);
                        let call = handle.broadcast(group, "alice".into(), 1, 113, message, true);
                        call.await.unwrap();
                    }
                    start.elapsed()
                });
                task.await.unwrap()
            })
        })
    });
    g.bench_function("rust_block_on", |b| b.iter(|| rust_blocking(&setup)));
    g.bench_function("c_abi", |b| {
        b.iter(|| c_broadcast(black_box(setup.server), &setup.group))
    });
    // The calls that do not wait: a flat-out caller fills the node's queue, so a full queue (BUSY) is
    // retried and counted in the time: this is the sustained cost per broadcast.
    g.bench_function("rust_nowait", |b| {
        b.iter(|| {
            while let Err(e) = rust_nowait(&setup) {
                assert_eq!(e, group_net::ApiError::Busy);
                std::hint::spin_loop();
            }
        })
    });
    g.bench_function("c_abi_nowait", |b| {
        b.iter(|| {
            while let r = c_nowait(&setup)
                && r != group_result::GROUP_RESULT_OK
            {
                assert_eq!(r, group_result::GROUP_RESULT_BUSY);
                std::hint::spin_loop();
            }
        })
    });
    g.finish();
    paired_ratios(&setup);
    // SAFETY: freed once; nothing uses it afterwards.
    unsafe { group_server_free(setup.server) };
}

criterion_group!(benches, bench);
criterion_main!(benches);
