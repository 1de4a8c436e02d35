//! Seeds given as names (`mesh.seeds: ["group-mesh.default.svc.cluster.local:8100"]`): resolved at
//! start and every [`RESOLVE_EVERY`], so that a node started before its peers' names resolve, or a
//! cluster whose pods come and go behind one name, still finds the others. Membership reads the latest
//! list each time it announces itself.

use std::net::{SocketAddr, SocketAddrV4};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::throttle::Throttle;

/// How often names are resolved again.
pub(crate) const RESOLVE_EVERY: Duration = Duration::from_secs(10);
/// How long one resolution may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);
/// Addresses one name may contribute.
const MAX_PER_NAME: usize = 64;

/// Resolves `names` until `stop` fires, publishing `fixed` plus every IPv4 address they resolve to.
pub(crate) async fn resolve_loop(
    fixed: Vec<SocketAddrV4>,
    names: Vec<String>,
    seeds: watch::Sender<Vec<SocketAddrV4>>,
    stop: CancellationToken,
) {
    loop {
        let mut all = fixed.clone();
        for name in &names {
            for addr in resolve(name).await {
                if !all.contains(&addr) {
                    all.push(addr);
                }
            }
        }
        seeds.send_if_modified(|current| {
            let changed = *current != all;
            *current = all;
            changed
        });
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(RESOLVE_EVERY) => {}
        }
    }
}

/// The IPv4 addresses `name` (`host:port`) resolves to now; none (logged, throttled) if it does not.
pub(crate) async fn resolve(name: &str) -> Vec<SocketAddrV4> {
    match tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host(name)).await {
        Ok(Ok(addrs)) => addrs
            .filter_map(|addr| match addr {
                SocketAddr::V4(v4) => Some(v4),
                SocketAddr::V6(_) => None,
            })
            .take(MAX_PER_NAME)
            .collect(),
        failed => {
            static UNRESOLVED: Throttle = Throttle::new();
            if let Some(more) = UNRESOLVED.allow() {
                let why = match failed {
                    Ok(Err(e)) => e.to_string(),
                    _ => "timed out".to_string(),
                };
                tracing::warn!(%name, "mesh seed does not resolve (yet): {why} (and {more} more since the last line)");
            }
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Only names /etc/hosts answers: tests send no traffic beyond loopback, DNS queries included.
    #[tokio::test]
    async fn localhost_resolves_to_its_ipv4_address_only() {
        let addrs = resolve("localhost:8100").await;
        assert_eq!(
            addrs,
            vec!["127.0.0.1:8100".parse::<SocketAddrV4>().unwrap()]
        );
    }

    #[tokio::test]
    async fn the_list_holds_fixed_seeds_and_resolved_ones_once_each() {
        let (tx, mut rx) = watch::channel(Vec::new());
        let stop = CancellationToken::new();
        let fixed = vec![
            "127.0.0.1:8100".parse().unwrap(),
            "10.0.0.9:8100".parse().unwrap(),
        ];
        let names = vec!["localhost:8100".to_string()];
        let task = tokio::spawn(resolve_loop(fixed, names, tx, stop.clone()));
        rx.changed().await.unwrap();
        let seeds = rx.borrow().clone();
        assert_eq!(
            seeds.len(),
            2,
            "localhost's 127.0.0.1 was already listed: {seeds:?}"
        );
        stop.cancel();
        task.await.unwrap();
    }
}
