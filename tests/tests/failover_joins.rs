//! Three `group-server` processes at default settings (only the merge interval is 0, as in every test
//! here). A group is created on node 1 with members on nodes 2 and 3, then node 1 is SIGKILLed. New users
//! on both survivors keep joining the group, one attempt every 100 ms: no join may be answered 200 "group
//! not found" (the group lives on in its copies), and every survivor must get a successful join. The
//! time from the kill to the first successful join on each survivor is printed: a measurement, not an
//! assertion (docs/CLUSTER.md quotes it).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::{Duration, Instant};

use group_core::GroupId;
use group_core::proto::code;
use group_net::client::ClientError;
use group_tests::clients::{bounded, group_with_two_backups, user};
use group_tests::{Node, config_file};

const CONFIG: &str = r#"{ "group": { "sendInterval": 0 } }"#;

/// How long a survivor keeps trying before the test fails.
const PATIENCE: Duration = Duration::from_secs(12);

/// Joins `group` as new users of `node`, one attempt every 100 ms, until one succeeds. Returns the time
/// of the first success after `killed` and the refusal codes seen before it.
async fn join_until_ok(
    node: &Node,
    name: &str,
    group: GroupId,
    killed: Instant,
) -> (Duration, Vec<u16>) {
    let mut refusals = Vec::new();
    for attempt in 0.. {
        assert!(
            killed.elapsed() < PATIENCE,
            "{name}: no successful join within {PATIENCE:?}; refusals {refusals:?}"
        );
        let started = Instant::now();
        let mut client = user(node, &format!("{name}-{attempt}")).await;
        match bounded("a join", client.join(group, b"")).await {
            Ok(_) => return (killed.elapsed(), refusals),
            Err(ClientError::Refused(e)) => refusals.push(e.code),
            Err(e) => panic!("{name}: join failed without a refusal: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100).saturating_sub(started.elapsed())).await;
    }
    unreachable!()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_joins_while_the_owner_dies_never_hear_not_found() {
    let config = config_file("failover-joins", CONFIG);
    let n1 = Node::start(&config, &[]);
    let seed = n1.addr("mesh");
    let n2 = Node::start(&config, &[seed]);
    let n3 = Node::start(&config, &[seed]);

    let mut owner = user(&n1, "owner").await;
    let group = group_with_two_backups(&mut owner).await;
    let mut b = user(&n2, "b").await;
    let mut c = user(&n3, "c").await;
    bounded("b joins", b.join(group, b"")).await.unwrap();
    bounded("c joins", c.join(group, b"")).await.unwrap();

    let killed = Instant::now();
    n1.signal("-KILL");
    let ((on_2, refused_2), (on_3, refused_3)) = tokio::join!(
        join_until_ok(&n2, "n2", group, killed),
        join_until_ok(&n3, "n3", group, killed)
    );
    eprintln!("first successful join after the owner's SIGKILL: node 2 {on_2:?}, node 3 {on_3:?}");
    eprintln!("refusals before it: node 2 {refused_2:?}, node 3 {refused_3:?}");
    for refusals in [&refused_2, &refused_3] {
        assert!(
            !refusals.contains(&code::JOIN_GROUP_NOT_FOUND),
            "a join heard 'not found' while the group lived: {refusals:?}"
        );
    }
    drop((b, c, n2, n3));
    let _ = std::fs::remove_file(&config);
}
