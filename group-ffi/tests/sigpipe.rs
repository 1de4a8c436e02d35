//! A host that keeps the default SIGPIPE disposition (every C, C++ and C# host; Rust programs ignore it
//! at start, which hid this) survives members vanishing while 8 KB broadcasts are written to them.
//! This test binary restores the default disposition for its whole process, so it holds this one test.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use bytes::Bytes;
use group_core::proto::CreateRequest;
use group_ffi::*;
use group_net::client::Client;

/// The sender broadcasts flat out, above the default `limits.maxRequestsPerSecond` (1000) and
/// `maxInboundBytesPerSecond` (1 MiB).
const CONFIG: &str = r#"{"server": {"tcp": "127.0.0.1:0", "ws": null, "udp": null},
                         "limits": {"maxRequestsPerSecond": 1000000, "maxInboundBytesPerSecond": 1073741824},
                         "mesh": {"bind": "127.0.0.1:0"}}"#;

/// The test's clients stand for other machines: their own writes must not be what kills the process.
fn client_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .on_thread_start(|| {
            let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
            // SAFETY: initialises the set, then blocks SIGPIPE for this client thread only.
            unsafe {
                libc::sigemptyset(set.as_mut_ptr());
                libc::sigaddset(set.as_mut_ptr(), libc::SIGPIPE);
                libc::pthread_sigmask(libc::SIG_BLOCK, set.as_ptr(), std::ptr::null_mut());
            }
        })
        .enable_all()
        .build()
        .unwrap()
}

/// With two workers the writes go through a writer thread; with one (the runtime an engine host that
/// keeps its other cores picks) the worker writes its members itself.
#[test]
fn members_vanishing_under_broadcast_load_do_not_kill_a_host_with_default_sigpipe() {
    // SAFETY: a C host's disposition; this test binary runs nothing else.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    for workers in [2, 1] {
        survives_members_vanishing(workers);
    }
}

fn survives_members_vanishing(workers: u32) {
    let mut server: *mut group_server = std::ptr::null_mut();
    let mut port = 0u16;
    // SAFETY: real pointers; the server is freed at the end of the test.
    unsafe {
        assert_eq!(
            group_server_new(CONFIG.as_ptr(), CONFIG.len(), workers, &mut server),
            group_result::GROUP_RESULT_OK
        );
        assert_eq!(group_server_start(server), group_result::GROUP_RESULT_OK);
        assert_eq!(
            group_server_port(server, 1, &mut port),
            group_result::GROUP_RESULT_OK
        );
    }
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let rt = client_runtime();
    let survived = rt.block_on(async move {
        let mut sender = Client::connect_tcp(addr).await.unwrap();
        sender.hello("sender", "").await.unwrap();
        let params = CreateRequest {
            allow_empty: true,
            join: true,
            ttl_s: 60,
            interval_ms: 0,
        };
        let group = sender.create(params).await.unwrap();
        for round in 0..3 {
            let mut members = Vec::new();
            for i in 0..20 {
                let mut member = Client::connect_tcp(addr).await.unwrap();
                member.hello(&format!("m{round}-{i}"), "").await.unwrap();
                member.join(group, b"").await.unwrap();
                members.push(member);
            }
            let message = Bytes::from(vec![7u8; 8192]);
            for n in 0..700 {
                sender
                    .broadcast(group, message.clone(), true)
                    .await
                    .unwrap();
                if n % 35 == 0 {
                    // Gone without reading what is queued for it: the server's next write is refused.
                    drop(members.pop());
                }
            }
            // The node has taken every broadcast of the round (the sender's inputs are handled in
            // order) before the next round's members join: otherwise they join while the round's
            // backlog still fans out, and a member that does not read during the others' joins is
            // rightly cut as a slow consumer, which is not what this test is about.
            let settled = sender.ping(b"round over");
            tokio::time::timeout(Duration::from_secs(10), settled)
                .await
                .expect("the round's broadcasts are taken")
                .unwrap();
        }
        tokio::time::timeout(Duration::from_secs(10), sender.ping(b"still here")).await
    });
    let echo = survived.expect("the server answers").unwrap();
    assert_eq!(&echo[..], b"still here");
    drop(rt);
    // SAFETY: created above, freed once.
    unsafe { group_server_free(server) };
}
