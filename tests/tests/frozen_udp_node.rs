//! A `group-server` process at default settings, frozen with SIGSTOP for 6 s while its UDP member waits
//! for an answer (a node stalled: a paused VM, a host swapping). Over TCP the kernel acknowledges for
//! the frozen process and the client waits; over UDP nothing answers, and KCP's dead link alone (20
//! unanswered sends) ended the client's session after about 3.5 s. The client now gives a silent node
//! the default `connectionTtl` (10 s), as the node gives a silent client: after the freeze the request
//! is answered and the member still gets its group's broadcasts.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use bytes::Bytes;
use group_net::client::{Client, Push};
use group_tests::clients::{bounded, params, user};
use group_tests::{Node, config_file};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_udp_client_waits_out_a_six_second_freeze_of_its_node() {
    let config = config_file("frozen-udp", "{}");
    let node = Node::start(&config, &[]);
    let mut owner = user(&node, "owner").await;
    let group = bounded("create", owner.create(params())).await.unwrap();
    let mut member = bounded("connect", Client::connect_udp(node.addr("udp")))
        .await
        .unwrap();
    bounded("hello", member.hello("member", "")).await.unwrap();
    bounded("join", member.join(group, b"hi")).await.unwrap();
    let Push::Joined { uid, .. } = bounded("the join push", owner.next_push()).await.unwrap()
    else {
        panic!("the owner did not hear the join")
    };
    assert_eq!(uid, "member");

    node.signal("-STOP");
    let (answer, ()) = tokio::join!(member.ping(b"frozen?"), async {
        tokio::time::sleep(Duration::from_secs(6)).await;
        node.signal("-CONT");
    });
    assert_eq!(
        answer.unwrap(),
        &b"frozen?"[..],
        "answered after the freeze"
    );

    bounded(
        "send",
        owner.broadcast(group, Bytes::from_static(b"after"), true),
    )
    .await
    .unwrap();
    let got = bounded("the broadcast after the freeze", member.next_push()).await;
    assert!(
        matches!(&got, Some(Push::Broadcast { entries, .. }) if entries.iter().any(|e| e.message == "after")),
        "{got:?}"
    );
}
