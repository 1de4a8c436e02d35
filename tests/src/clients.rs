//! Client-side helpers shared by the multi-process tests: a bound on every wait, a user that said Hello,
//! and a group whose ID names two backups.

use std::future::Future;
use std::time::Duration;

use group_core::GroupId;
use group_core::proto::CreateRequest;
use group_net::client::Client;

use crate::Node;

/// `future`, or a panic naming `what` after 15 s: no test waits forever.
pub async fn bounded<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(15), future)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// A TCP client of `node` that said Hello as `uid`.
pub async fn user(node: &Node, uid: &str) -> Client {
    let mut client = bounded("connect", Client::connect_tcp(node.addr("tcp")))
        .await
        .unwrap();
    bounded("hello", client.hello(uid, "")).await.unwrap();
    client
}

/// What the tests create: a group that is not kept empty, its creator joined, no merging.
pub fn params() -> CreateRequest {
    CreateRequest {
        allow_empty: false,
        join: true,
        ttl_s: 60,
        interval_ms: 0,
    }
}

/// Creates a group on `client`'s node once that node sees the two others (its ID then names two backups).
pub async fn group_with_two_backups(client: &mut Client) -> GroupId {
    group_with_backups(client, 2).await
}

/// Creates a group on `client`'s node once that node sees `backups` other nodes (its ID then names that
/// many backups, at most two): the cluster has formed.
pub async fn group_with_backups(client: &mut Client, backups: usize) -> GroupId {
    bounded("the cluster forms", async {
        loop {
            let group = client.create(params()).await.unwrap();
            if group.layout().unwrap().backups.iter().flatten().count() == backups {
                return group;
            }
            client.leave(group, b"").await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}
