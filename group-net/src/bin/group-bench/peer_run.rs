//! A run against redis-server or nats-server (`--target redis|nats --server ADDR`), with the load shape of
//! a group run: `--clients` connections in `--groups` channels, the first `--senders` of each publishing
//! at `--rate` (or flat out within `--window`), the others subscribed. The same messages (send time and
//! sequence number up front), the same latency samples and the same summary as a group run, so the figures
//! compare one to one.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use tokio::task::JoinSet;

use crate::peers::{Peer, Publisher, Subscriber};
use crate::{Ack, Args, Run, Watch, message, pacing, record, wait_turn};

fn channel(group: usize) -> String {
    format!("bench-g{group}")
}

/// One connection of the run, as its place in the load shape decides.
enum Role {
    Publisher(Publisher),
    Subscriber(Subscriber),
}

pub async fn run(args: Arc<Args>, peer: Peer) -> Result<crate::Outcome, String> {
    let addr = args
        .server
        .ok_or("--target redis|nats needs --server ADDR (a server you started)")?;
    let count_writes = crate::countable_pid(&args, args.server_pid)?;
    let groups = args.groups.clamp(1, args.clients / 2);
    let per_group = args.clients / groups;
    let senders = args.senders.clamp(1, per_group.saturating_sub(1).max(1));

    // Connect, with progress: member k of group g is client k * groups + g, as in a group run.
    let connect_started = Instant::now();
    let roles = crate::connect_all(args.clients, args.connect_parallel, move |i| {
        let (g, k) = (i % groups, i / groups);
        async move {
            Ok(if k < senders {
                Role::Publisher(Publisher::connect(peer, addr).await?)
            } else {
                Role::Subscriber(Subscriber::connect(peer, addr, &channel(g)).await?)
            })
        }
    })
    .await?;
    eprintln!(
        "{} connections in {:.1}s",
        args.clients,
        connect_started.elapsed().as_secs_f64()
    );
    eprintln!(
        "{:?}: {groups} channel(s), {senders} publisher(s) and ~{} subscribers each; sending for {}s",
        peer,
        per_group - senders,
        args.duration
    );

    let run = Run::begin(args.clone(), senders);
    let (start, until, drain_until) = (run.start, run.until, run.drain_until());
    let counters = run.counters.clone();
    let acks: Vec<Arc<Ack>> = (0..groups).map(|_| Ack::new()).collect();
    let cpu = crate::CpuWindow::start(args.server_pid, count_writes, args.duration)?;
    let mut receivers = JoinSet::new();
    let mut publishers = JoinSet::new();
    let mut acking = vec![false; groups];
    for (i, role) in roles.into_iter().enumerate() {
        let (g, k) = (i % groups, i / groups);
        let ack = acks.get(g).ok_or("no group")?.clone();
        match role {
            Role::Publisher(publisher) => {
                publishers.spawn(publish(publisher, run.clone(), ack, g, k as u64));
            }
            Role::Subscriber(subscriber) => {
                let first = acking
                    .get_mut(g)
                    .is_some_and(|a| !std::mem::replace(a, true));
                let watch = Watch {
                    uid: String::new(),
                    counters: counters.clone(),
                    ack: first.then_some(ack),
                };
                receivers.spawn(subscribe(subscriber, start, drain_until, watch));
            }
        }
    }
    crate::progress(&counters, start, until).await;
    let cpu = cpu.stop().await?;
    while publishers.join_next().await.is_some() {}
    let mut samples = Vec::new();
    while let Some(joined) = receivers.join_next().await {
        samples.extend(joined.unwrap_or_default());
    }
    Ok(crate::Outcome {
        groups,
        senders,
        receivers_per_message: per_group - senders,
        samples,
        counters,
        cpu,
    })
}

async fn publish(mut publisher: Publisher, run: Arc<Run>, ack: Arc<Ack>, group: usize, index: u64) {
    let channel = channel(group);
    let mut ticker = pacing(&run.args);
    let mut seq = index;
    let step = run.senders as u64;
    while wait_turn(&mut ticker, &run, &ack, seq).await {
        let payload = message(run.start, seq, run.args.size);
        if publisher.publish(&channel, &payload).await.is_err() {
            run.counters.disconnected.fetch_add(1, Ordering::Relaxed);
            return;
        }
        run.counters.sent.fetch_add(1, Ordering::Relaxed);
        seq += step;
    }
}

async fn subscribe(
    mut subscriber: Subscriber,
    start: Instant,
    until: Instant,
    watch: Watch,
) -> Vec<u32> {
    let mut samples = Vec::new();
    // One timer for the whole run: a fresh one per message, armed and then cancelled when the message
    // won, was about 4% of the bench, and the bench is what limits a flat-out run with 100 members.
    let over = tokio::time::sleep_until(until.into());
    tokio::pin!(over);
    loop {
        let next = tokio::select! {
            next = subscriber.next_message() => next,
            () = &mut over => break,
        };
        let Ok(Some(payload)) = next else {
            if let Err(e) = next {
                eprintln!("subscriber: {e}");
            }
            watch.counters.disconnected.fetch_add(1, Ordering::Relaxed);
            break;
        };
        let now = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        record(&watch, &mut samples, &payload, now, 0);
    }
    samples
}

#[cfg(test)]
mod tests {
    #[test]
    fn channels_are_named_by_group() {
        assert_eq!(super::channel(3), "bench-g3");
    }
}
