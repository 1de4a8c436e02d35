//! Building the simulated cluster, its faults, and its clients.

use super::*;

impl Cluster {
    pub(crate) fn new(seed: u64, size: usize) -> Self {
        Cluster::build(seed, size, Duration::ZERO)
    }

    /// A cluster whose nodes merge the pushes of groups they do not own every `send_interval`.
    pub(crate) fn build(seed: u64, size: usize, send_interval: Duration) -> Self {
        let mut cluster = Cluster {
            send_interval,
            nodes: Vec::new(),
            now: Instant::ZERO,
            rng: SplitMix64::new(seed),
            seed,
            restarts: 0,
            in_flight: BinaryHeap::new(),
            link_clock: BTreeMap::new(),
            news: BinaryHeap::new(),
            seq: 0,
            loss: 0,
            cut: BTreeSet::new(),
            clients: BTreeMap::new(),
            next_conn: 0,
            next_broadcast: 0,
            known_groups: vec![static_group()],
            hasher: DefaultHasher::new(),
            pushes_checked: 0,
            coverage: Coverage::default(),
            sessions_from: BTreeMap::new(),
        };
        for i in 0..size {
            let node = cluster.boot(i);
            cluster.nodes.push(Some(node));
        }
        for a in 0..size {
            for b in 0..size {
                if a != b {
                    let node = cluster.nodes[a].as_mut().unwrap();
                    let _done = node.handle(Input::NodeUp(addr(b)), Instant::ZERO);
                }
            }
        }
        cluster
    }

    pub(crate) fn boot(&mut self, i: usize) -> Node {
        self.restarts += 1;
        let mut config = NodeConfig {
            addr: addr(i),
            seed: self.seed ^ (self.restarts << 32),
            ..NodeConfig::default()
        };
        config.group.send_interval = self.send_interval;
        // Patience (x 4 tries) outlasts membership's DETECT, as the defaults (2 s x 4 against ~5 s) do.
        config.limits.mesh_request_timeout = ms(1000);
        config.limits.mesh_sync_interval = SYNC;
        config.limits.connection_ttl = Duration::from_secs(3600);
        config.limits.max_groups_per_user = 8;
        config.group.static_groups = vec![StaticGroup {
            id: static_group(),
            interval: Duration::ZERO,
        }];
        let mut node = Node::new(config, self.now).unwrap();
        node.set_rejoin_message(Box::new(|_, _, _| Bytes::from_static(b"rejoin")));
        node
    }

    pub(crate) fn reachable(&self, a: usize, b: usize) -> bool {
        self.nodes[a].is_some()
            && self.nodes[b].is_some()
            && !self.cut.contains(&(a.min(b), a.max(b)))
    }

    pub(crate) fn index_of(&self, node: NodeAddr) -> Option<usize> {
        (0..self.nodes.len()).find(|i| addr(*i) == node)
    }

    pub(crate) fn tell_later(&mut self, news: News, delay: Duration) {
        self.seq += 1;
        self.news
            .push(Reverse((self.now.saturating_add(delay), self.seq, news)));
    }

    // ----- faults -----

    pub(crate) fn kill(&mut self, i: usize) {
        self.coverage.kills += 1;
        self.nodes[i] = None;
        self.clients.retain(|_, c| c.node != i);
        for obs in 0..self.nodes.len() {
            if obs != i {
                // The links break at once (the process's sockets are reset); membership takes longer.
                self.tell_later(News::LinkDown(obs, i), ms(5));
                self.tell_later(News::Down(obs, i), DETECT);
            }
        }
    }

    /// A restarted node is a new member to the membership layer (SWIM gives it a new identity): every
    /// node that still had the old one as live hears it went down before it hears the new one came up.
    pub(crate) fn restart(&mut self, i: usize) {
        for obs in 0..self.nodes.len() {
            if let Some(n) = self.nodes[obs].as_mut() {
                let _done = n.handle(Input::NodeDown(addr(i)), self.now);
                self.drain(obs);
            }
        }
        let node = self.boot(i);
        self.nodes[i] = Some(node);
        for other in 0..self.nodes.len() {
            if other != i {
                self.tell_later(News::Up(other, i), ms(100));
                self.tell_later(News::Up(i, other), ms(100));
            }
        }
    }

    pub(crate) fn partition(&mut self, a: usize, b: usize) {
        self.coverage.partitions += 1;
        self.cut.insert((a.min(b), a.max(b)));
        self.tell_later(News::Down(a, b), DETECT);
        self.tell_later(News::Down(b, a), DETECT);
    }

    pub(crate) fn heal(&mut self) {
        for (a, b) in std::mem::take(&mut self.cut) {
            self.tell_later(News::Up(a, b), ms(100));
            self.tell_later(News::Up(b, a), ms(100));
        }
        self.loss = 0;
    }

    // ----- clients -----

    pub(crate) fn connect(&mut self, node: usize) -> ConnId {
        let uid = format!("u{}", self.next_conn + 1);
        self.connect_as(node, &uid)
    }

    /// A client on `node` that says Hello as `uid`.
    pub(crate) fn connect_as(&mut self, node: usize, uid: &str) -> ConnId {
        self.next_conn += 1;
        let conn = ConnId(self.next_conn);
        let uid = uid.to_string();
        let now = self.now;
        let n = self.nodes[node].as_mut().unwrap();
        let connected = n.handle(Input::Connect(conn), now);
        assert_eq!(connected, Handled::Connect(Ok(())));
        self.clients.insert(
            conn,
            Client {
                node,
                conn,
                uid: uid.clone(),
                groups: BTreeSet::new(),
                received: BTreeSet::new(),
                latest_from: BTreeMap::new(),
                rejoins: 0,
                refusals: Vec::new(),
            },
        );
        self.request(
            conn,
            Request::Hello {
                uid,
                token: Bytes::new(),
            },
        );
        conn
    }

    /// A player reconnects through another live node (a load balancer's choice) as the same uid and
    /// joins its groups again at once, before its old node has heard of the new session. The old
    /// connection is forgotten here: the player has left it.
    pub(crate) fn reconnect_elsewhere(&mut self) {
        let Some(old) = self.random_client() else {
            return;
        };
        let from = self.clients[&old].node;
        let others: Vec<usize> = (0..self.nodes.len())
            .filter(|i| *i != from && self.nodes[*i].is_some())
            .collect();
        if others.is_empty() {
            return;
        }
        let node = others[self.rng.below(others.len())];
        let player = self.clients.remove(&old).unwrap();
        let starts = self.sessions_from.entry(player.uid.clone()).or_default();
        starts.push(self.next_broadcast + 1);
        let new = self.connect_as(node, &player.uid);
        for group in player.groups {
            self.join(new, group);
        }
        self.coverage.reconnects += 1;
    }

    pub(crate) fn request(&mut self, conn: ConnId, request: Request) {
        let Some(node) = self.clients.get(&conn).map(|c| c.node) else {
            return;
        };
        let now = self.now;
        if let Some(n) = self.nodes[node].as_mut() {
            let _outcome = n.handle(Input::Request { conn, request }, now);
        }
        self.drain(node);
    }

    pub(crate) fn create(&mut self, conn: ConnId) {
        let params = CreateRequest {
            allow_empty: self.rng.chance(50),
            join: true,
            ttl_s: 30,
            interval_ms: 0,
        };
        self.request(conn, Request::Create(params));
    }

    pub(crate) fn join(&mut self, conn: ConnId, group: GroupId) {
        let message = Bytes::from_static(b"hi");
        self.request(conn, Request::Join { group, message });
    }

    pub(crate) fn broadcast(&mut self, conn: ConnId, group: GroupId) -> u64 {
        self.next_broadcast += 1;
        let id = self.next_broadcast;
        let message = Bytes::copy_from_slice(&id.to_be_bytes());
        self.request(
            conn,
            Request::Broadcast {
                group,
                reliable: true,
                message,
            },
        );
        id
    }
}
