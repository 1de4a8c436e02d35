//! Hooks (order, async, rejection reaching the client, After only after success), custom command
//! handlers, and Hello authentication on and off.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::{Transport, bounded, config, connect, next_push, start, user};
use group_core::proto::{CreateRequest, Request, code};
use group_net::auth::{Claims, mint_token, mint_token_with};
use group_net::client::{ClientError, Push};
use group_net::{Command, Rejection, ServerBuilder, ServerConfig, StartError};

type Log = Arc<Mutex<Vec<String>>>;

fn record(log: &Log, line: impl Into<String>) {
    log.lock().unwrap().push(line.into());
}

fn create() -> CreateRequest {
    CreateRequest {
        allow_empty: false,
        join: true,
        ttl_s: 60,
        interval_ms: 0,
    }
}

#[tokio::test]
async fn before_hooks_run_in_order_may_await_and_stop_the_command_with_their_code() {
    let log: Log = Arc::default();
    let (l1, l2, l3, l4) = (log.clone(), log.clone(), log.clone(), log.clone());
    let builder = ServerBuilder::new(config())
        .before(Command::Join, move |ctx| {
            let log = l1.clone();
            async move {
                // An asynchronous hook: waits on something else before deciding (a database, say).
                let (tx, rx) = tokio::sync::oneshot::channel();
                tokio::spawn(async move { tx.send(()).ok() });
                rx.await.ok();
                record(&log, format!("before-1 {}", ctx.uid));
                Ok(())
            }
        })
        .before(Command::Join, move |ctx| {
            let log = l2.clone();
            async move {
                record(&log, format!("before-2 {}", ctx.uid));
                if &*ctx.uid == "mallory" {
                    return Err(Rejection::new(1042, "mallory may not join"));
                }
                Ok(())
            }
        })
        .after(Command::Join, move |ctx| {
            let log = l3.clone();
            async move { record(&log, format!("after {} {}", ctx.uid, ctx.group.is_some())) }
        })
        .after(Command::Broadcast, move |ctx| {
            let log = l4.clone();
            async move { record(&log, format!("after-broadcast {}", ctx.uid)) }
        });
    let server = start(builder).await;
    let mut alice = user(&server, Transport::Tcp, "alice").await;
    let mut mallory = user(&server, Transport::Ws, "mallory").await;
    let mut bob = user(&server, Transport::Tcp, "bob").await;
    let group = bounded("create", alice.create(create())).await.unwrap();

    let refused = bounded("join", mallory.join(group, b"")).await.unwrap_err();
    let ClientError::Refused(error) = &refused else {
        panic!("{refused:?}")
    };
    assert_eq!(
        (error.code, error.message.as_str(), error.group),
        (1042, "mallory may not join", Some(group))
    );
    bounded("join", bob.join(group, b"")).await.unwrap();
    // A refused broadcast (mallory is not a member) runs no After hook; bob's does.
    bounded(
        "send",
        mallory.broadcast(group, Bytes::from_static(b"x"), true),
    )
    .await
    .unwrap();
    let Push::Refused { error, .. } = next_push(&mut mallory).await else {
        panic!()
    };
    assert_eq!(error.code, code::BROADCAST_NOT_MEMBER);
    bounded("send", bob.broadcast(group, Bytes::from_static(b"y"), true))
        .await
        .unwrap();
    next_push(&mut alice).await;
    bounded("ping", bob.ping(b"")).await.unwrap(); // after-hooks of bob's broadcast ran before this answer

    let log = log.lock().unwrap().clone();
    assert_eq!(
        log,
        vec![
            "before-1 mallory",
            "before-2 mallory",
            "before-1 bob",
            "before-2 bob",
            "after bob true",
            "after-broadcast bob",
        ]
    );
}

#[tokio::test]
async fn custom_commands_are_answered_by_their_handler_or_refused_without_one() {
    let builder = ServerBuilder::new(config()).on_command(2, 10, |ctx| async move {
        let Request::Custom { payload, .. } = ctx.request else {
            unreachable!()
        };
        if payload.is_empty() {
            return Err(Rejection::new(1001, "empty question"));
        }
        Ok(Bytes::from(format!(
            "{} asked {}",
            ctx.uid,
            String::from_utf8_lossy(&payload)
        )))
    });
    let server = start(builder).await;
    let mut alice = user(&server, Transport::Ws, "alice").await;
    let ask = |payload: &'static [u8], cmd| Request::Custom {
        ver: 2,
        cmd,
        payload: Bytes::from_static(payload),
    };
    let answer = bounded("custom", alice.request(&ask(b"why", 10)))
        .await
        .unwrap();
    assert_eq!(&answer[..], b"alice asked why");
    let refused = bounded("custom", alice.request(&ask(b"", 10)))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some(1001));
    let unhandled = bounded("custom", alice.request(&ask(b"?", 11)))
        .await
        .unwrap_err();
    assert_eq!(unhandled.code(), Some(code::NO_HANDLER));

    let reserved = ServerBuilder::new(config())
        .on_command(1, 500, |_| async { Ok(Bytes::new()) })
        .start()
        .await;
    assert!(matches!(
        reserved,
        Err(StartError::ReservedCommand { ver: 1, cmd: 500 })
    ));
}

const SECRET: &str = "a-shared-secret-for-the-tests";

fn with_secret() -> ServerConfig {
    ServerConfig {
        auth_secret: Some(SECRET.into()),
        ..config()
    }
}

#[tokio::test]
async fn with_a_secret_only_valid_tokens_for_the_same_uid_open_a_session() {
    let server = start(ServerBuilder::new(with_secret())).await;
    let mut good = connect(&server, Transport::Tcp).await;
    let token = mint_token(SECRET.as_bytes(), "alice", Duration::from_secs(60));
    bounded("hello", good.hello("alice", &token)).await.unwrap();

    let expired = mint_token_with(
        SECRET.as_bytes(),
        &Claims {
            sub: "bob".into(),
            exp: 1,
            nbf: None,
        },
    );
    let in_an_hour = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let not_yet = mint_token_with(
        SECRET.as_bytes(),
        &Claims {
            sub: "bob".into(),
            exp: in_an_hour + 60,
            nbf: Some(in_an_hour),
        },
    );
    let cases = [
        ("bob", token.clone(), "token is for another uid"),
        ("bob", expired, "token expired"),
        ("bob", not_yet, "token not yet valid"),
        ("bob", "not.a.token".to_string(), "invalid token"),
        ("bob", String::new(), "invalid token"),
    ];
    for (uid, token, reason) in cases {
        for transport in [Transport::Tcp, Transport::Ws] {
            let mut client = connect(&server, transport).await;
            let refused = bounded("hello", client.hello(uid, &token))
                .await
                .unwrap_err();
            let ClientError::Refused(error) = refused else {
                panic!()
            };
            assert_eq!(error.code, code::AUTH_FAILED);
            assert_eq!(error.message, reason, "no parser details for the client");
            bounded("closed after a refused Hello", client.closed()).await;
        }
    }
    assert_eq!(
        &bounded("ping", good.ping(b"ok")).await.unwrap()[..],
        b"ok",
        "others are untouched"
    );
}

#[tokio::test]
async fn without_a_secret_any_uid_is_accepted() {
    let server = start(ServerBuilder::new(config())).await;
    let mut client = connect(&server, Transport::Tcp).await;
    bounded("hello", client.hello("anyone", "whatever"))
        .await
        .unwrap();
}

/// A panicking After hook that returns `()` as far as the type system knows.
fn after_hook_bug() {
    panic!("a bug in an After hook")
}

#[tokio::test]
async fn panicking_server_code_answers_err_and_the_connection_lives_on() {
    let builder = ServerBuilder::new(config())
        .before(Command::Join, |ctx| async move {
            assert!(&*ctx.uid != "boom", "a bug in a Before hook");
            Ok(())
        })
        .after(Command::Create, |_| async { after_hook_bug() })
        .on_command(3, 1, |_| async { panic!("a bug in a handler") });
    let server = start(builder).await;
    let mut boom = user(&server, Transport::Tcp, "boom").await;
    let group = bounded("create", boom.create(create()))
        .await
        .expect("an After panic does not undo the create");

    let failed = bounded("join", boom.join(group, b"")).await.unwrap_err();
    let ClientError::Refused(error) = failed else {
        panic!("{failed:?}")
    };
    assert_eq!((error.code, error.group), (code::HOOK_FAILED, Some(group)));
    let custom = Request::Custom {
        ver: 3,
        cmd: 1,
        payload: Bytes::new(),
    };
    let failed = bounded("custom", boom.request(&custom)).await.unwrap_err();
    assert_eq!(failed.code(), Some(code::HOOK_FAILED));
    assert_eq!(
        &bounded("ping", boom.ping(b"still here")).await.unwrap()[..],
        b"still here"
    );
}

#[tokio::test]
async fn a_hook_that_never_finishes_fails_the_request_after_hook_timeout() {
    let mut cfg = config();
    cfg.hook_timeout = Duration::from_secs(1);
    let builder = ServerBuilder::new(cfg).before(Command::Create, |_| std::future::pending());
    let server = start(builder).await;
    let mut alice = user(&server, Transport::Tcp, "alice").await;
    let started = std::time::Instant::now();
    let failed = bounded("create", alice.create(create())).await.unwrap_err();
    assert_eq!(failed.code(), Some(code::HOOK_FAILED));
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "not before the timeout"
    );
    assert_eq!(
        &bounded("ping", alice.ping(b"ok")).await.unwrap()[..],
        b"ok"
    );
}

#[tokio::test]
async fn an_after_hook_error_stops_the_rest_of_the_chain_but_not_the_command() {
    let log: Log = Arc::default();
    let (l1, l2, l3) = (log.clone(), log.clone(), log.clone());
    let builder = ServerBuilder::new(config())
        .after(Command::Join, move |ctx| {
            let log = l1.clone();
            async move {
                record(&log, format!("after-1 {}", ctx.uid));
                if &*ctx.uid == "yuki" {
                    return Err(Rejection::new(1005, "after failed"));
                }
                Ok(())
            }
        })
        .after(Command::Join, move |ctx| {
            let log = l2.clone();
            async move { record(&log, format!("after-2 {}", ctx.uid)) }
        })
        .after(Command::Leave, move |ctx| {
            let log = l3.clone();
            async move { record(&log, format!("after-leave {}", ctx.uid)) }
        });
    let server = start(builder).await;
    let mut alice = user(&server, Transport::Tcp, "alice").await;
    let mut yuki = user(&server, Transport::Tcp, "yuki").await;
    let mut bob = user(&server, Transport::Ws, "bob").await;
    let group = bounded("create", alice.create(create())).await.unwrap();
    bounded("join", yuki.join(group, b""))
        .await
        .expect("the join happened before its After hooks ran");
    bounded("join", bob.join(group, b"")).await.unwrap();
    // yuki is a member all the same: it can leave, and the Leave chain is a chain of its own.
    bounded("leave", yuki.leave(group, b"")).await.unwrap();
    bounded("ping", yuki.ping(b"")).await.unwrap();
    bounded("ping", bob.ping(b"")).await.unwrap();
    let log = log.lock().unwrap().clone();
    assert_eq!(
        log,
        vec![
            "after-1 yuki",
            "after-1 bob",
            "after-2 bob",
            "after-leave yuki"
        ]
    );
}

#[tokio::test]
async fn refusal_codes_must_be_in_the_application_range() {
    assert!(Rejection::try_new(0, "zero").is_err());
    assert!(Rejection::try_new(200, "a server code").is_err());
    let ok = Rejection::try_new(1000, "first application code").unwrap();
    assert_eq!((ok.code(), ok.message()), (1000, "first application code"));
    let error = Rejection::try_new(999, "x").unwrap_err().to_string();
    assert!(error.contains("999") && error.contains("1000"), "{error}");
    assert_eq!(Rejection::new(999, "x").code(), code::HOOK_FAILED);

    // In a hook, a bad code fails the request (Err 10) instead of reaching the client as a server code,
    // and `Rejection::failed` says "the server code failed" on purpose.
    let builder = ServerBuilder::new(config())
        .before(Command::Create, |_| async { Err(Rejection::new(200, "x")) })
        .before(Command::Join, |_| async {
            Err(Rejection::failed("the database is down"))
        });
    let server = start(builder).await;
    let mut alice = user(&server, Transport::Tcp, "alice").await;
    let failed = bounded("create", alice.create(create())).await.unwrap_err();
    assert_eq!(failed.code(), Some(code::HOOK_FAILED));
    let static_group = group_core::GroupId::from_bytes(&[b'a'; 52]).unwrap();
    let failed = bounded("join", alice.join(static_group, b""))
        .await
        .unwrap_err();
    let ClientError::Refused(error) = failed else {
        panic!("{failed:?}")
    };
    assert_eq!(error.code, code::HOOK_FAILED);
    assert!(!error.message.contains("database"), "{}", error.message);
}

#[tokio::test]
async fn unexposed_group_commands_are_refused_and_server_code_drives_the_groups() {
    let mut cfg = config();
    cfg.expose_commands = group_net::config::ExposedCommands::from_names(["broadcast"]).unwrap();
    let server = start(ServerBuilder::new(cfg)).await;
    let mut alice = user(&server, Transport::Tcp, "alice").await;
    let mut bob = user(&server, Transport::Ws, "bob").await;
    let refused = bounded("create", alice.create(create())).await.unwrap_err();
    assert_eq!(refused.code(), Some(code::NOT_EXPOSED));
    // Server code makes the group and puts both in it; the clients may only broadcast.
    let api = server.handle();
    let group = api.new_group(create(), None).await;
    assert!(
        group.is_err(),
        "join without a creator: refused by the core"
    );
    let params = CreateRequest {
        allow_empty: true,
        join: false,
        ..create()
    };
    let group = api.new_group(params, None).await.unwrap();
    for uid in ["alice", "bob"] {
        api.join(group, uid.into(), Bytes::new(), 1, 111)
            .await
            .unwrap();
    }
    let refused = bounded("leave", bob.leave(group, b"")).await.unwrap_err();
    let ClientError::Refused(error) = refused else {
        panic!("{refused:?}")
    };
    assert_eq!((error.code, error.group), (code::NOT_EXPOSED, Some(group)));
    bounded(
        "send",
        alice.broadcast(group, Bytes::from_static(b"hi"), true),
    )
    .await
    .unwrap();
    let Push::Broadcast { entries, .. } = next_push(&mut bob).await else {
        panic!("a broadcast")
    };
    assert_eq!(&entries[0].message[..], b"hi");
}
