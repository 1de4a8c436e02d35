//! The simulation loop on one virtual clock, membership news, the checks, and random steps.

use super::*;

impl Cluster {
    // ----- the loop -----

    /// Drains one node's outputs: frames to its clients (checked), mesh messages onto the network.
    pub(crate) fn drain(&mut self, i: usize) {
        let Some(node) = self.nodes[i].as_mut() else {
            return;
        };
        let mut out = Drained::default();
        let _deadline = node.drain(self.now, &mut out);
        self.coverage.remote_joins += out.remote_joins;
        for waited in out.join_waits {
            self.coverage.longest_join_wait = self.coverage.longest_join_wait.max(waited);
        }
        for t in out.frames {
            (self.now, i, t.conn, &t.frame[..]).hash(&mut self.hasher);
            self.on_frame(t.conn, &t.frame);
        }
        for m in out.mesh {
            let Some(to) = self.index_of(m.to) else {
                continue;
            };
            trace(self.now, &format!("{i} -> {to}"), &m.message);
            let frame = mesh::encode(&m.message);
            (self.now, i, to, &frame).hash(&mut self.hasher);
            if !self.reachable(i, to) || self.rng.below(1000) < self.loss as usize {
                continue;
            }
            let delay = ms(1 + self.rng.below(40) as u64);
            let link = self.link_clock.entry((i, to)).or_insert(Instant::ZERO);
            let at = self.now.saturating_add(delay).max(*link);
            *link = at;
            self.seq += 1;
            self.in_flight.push(Reverse((at, self.seq, i, to, frame)));
        }
    }

    pub(crate) fn on_frame(&mut self, conn: ConnId, frame: &Bytes) {
        let Some(client) = self.clients.get_mut(&conn) else {
            return;
        };
        let mut buf = bytes::BytesMut::from(&frame[..]);
        let frame = decode_server_frame(&mut buf, u32::MAX).unwrap().unwrap();
        match (frame.ver, frame.cmd, frame.status) {
            (VER_GROUP, cmd::CREATE | cmd::JOIN, Status::Ok) => {
                let id = GroupId::from_bytes(&frame.payload).unwrap();
                client.groups.insert(id);
            }
            (_, _, Status::Bad) => {
                client
                    .refusals
                    .push(parse_error_payload(&frame.payload).unwrap().code);
            }
            (VER_GROUP, cmd::LEAVE, Status::Ok) => {
                let id = GroupId::from_bytes(&frame.payload).unwrap();
                client.groups.remove(&id);
            }
            (VER_GROUP, cmd::BROADCAST, Status::Push) => {
                let (group, entries) = parse_broadcast_push(&frame.payload).unwrap();
                assert!(
                    client.groups.contains(&group),
                    "broadcast push to non-member {} of {group}",
                    client.uid
                );
                for entry in entries {
                    let id = u64::from_be_bytes(entry.message[..8].try_into().unwrap());
                    assert!(
                        client.received.insert(id),
                        "broadcast {id} delivered twice to {}",
                        client.uid
                    );
                    let starts = self.sessions_from.get(&entry.uid);
                    let session =
                        starts.map_or(0, |s| s.iter().filter(|from| **from <= id).count());
                    let sender = (group, entry.uid.clone(), session);
                    let latest = client.latest_from.entry(sender).or_insert(0);
                    assert!(
                        id > *latest,
                        "{} got broadcast {id} from {:?} after its later {}",
                        client.uid,
                        entry.uid,
                        *latest
                    );
                    *latest = id;
                }
                self.pushes_checked += 1;
            }
            (VER_GROUP, cmd::JOIN | cmd::LEAVE, Status::Push) => {
                let push = parse_member_push(&frame.payload).unwrap();
                assert!(
                    client.groups.contains(&push.group),
                    "member push to non-member {} of {}",
                    client.uid,
                    push.group
                );
                if push.message == b"rejoin"[..] && push.uid == client.uid {
                    client.rejoins += 1;
                    self.coverage.rejoin_pushes += 1;
                }
                self.pushes_checked += 1;
            }
            _ => {}
        }
    }

    /// Runs everything due up to `until`, in time order.
    pub(crate) fn run_until(&mut self, until: Instant) {
        loop {
            let timer = self
                .nodes
                .iter()
                .enumerate()
                .filter_map(|(i, n)| Some((n.as_ref()?.poll_timeout()?, i)))
                .min();
            let message = self.in_flight.peek().map(|Reverse(m)| m.0);
            let news = self.news.peek().map(|Reverse(n)| n.0);
            let next = [timer.map(|t| t.0), message, news]
                .into_iter()
                .flatten()
                .min();
            let Some(at) = next.filter(|at| *at <= until) else {
                break;
            };
            self.now = self.now.max(at);
            if message == Some(at) {
                let Reverse((_, _, from, to, frame)) = self.in_flight.pop().unwrap();
                if self.reachable(from, to) {
                    let decoded = mesh::decode(&frame).unwrap();
                    let now = self.now;
                    let mesh = Input::Mesh {
                        from: addr(from),
                        message: decoded,
                    };
                    let _done = self.nodes[to].as_mut().unwrap().handle(mesh, now);
                    self.drain(to);
                }
            } else if news == Some(at) {
                let Reverse((_, _, news)) = self.news.pop().unwrap();
                self.apply_news(news);
            } else if let Some((_, i)) = timer {
                let now = self.now;
                let _done = self.nodes[i].as_mut().unwrap().handle(Input::Timeout, now);
                self.drain(i);
            }
        }
        self.now = self.now.max(until);
    }

    pub(crate) fn apply_news(&mut self, news: News) {
        if std::env::var("SIM_TRACE").is_ok() {
            let (kind, obs, subject) = match news {
                News::Up(o, s) => ("up", o, s),
                News::Down(o, s) => ("down", o, s),
                News::LinkDown(o, s) => ("link down", o, s),
            };
            eprintln!(
                "{:?} news {obs} sees {subject} {kind} (reachable {})",
                self.now,
                self.reachable(obs, subject)
            );
        }
        match news {
            News::Down(obs, subject)
                if self.nodes[obs].is_some() && !self.reachable(obs, subject) =>
            {
                let node = self.nodes[obs].as_mut().unwrap();
                let _done = node.handle(Input::NodeDown(addr(subject)), self.now);
                self.drain(obs);
            }
            News::LinkDown(obs, subject)
                if self.nodes[obs].is_some() && !self.reachable(obs, subject) =>
            {
                let node = self.nodes[obs].as_mut().unwrap();
                let _done = node.handle(Input::LinkDown(addr(subject)), self.now);
                self.drain(obs);
            }
            News::Up(obs, subject) if self.reachable(obs, subject) => {
                let node = self.nodes[obs].as_mut().unwrap();
                let _done = node.handle(Input::NodeUp(addr(subject)), self.now);
                self.drain(obs);
            }
            _ => {}
        }
    }

    /// Runs until no mesh message is in flight (at most 5 s more), so that a check sees no change half-way.
    pub(crate) fn run_until_quiet(&mut self) {
        for _ in 0..5000 {
            if self.in_flight.is_empty() {
                return;
            }
            self.run_for(ms(1));
        }
        panic!("the mesh never went quiet");
    }

    pub(crate) fn run_for(&mut self, d: Duration) {
        let until = self.now.saturating_add(d);
        self.run_until(until);
    }

    pub(crate) fn members_of(&self, group: &GroupId) -> Vec<ConnId> {
        self.clients
            .values()
            .filter(|c| c.groups.contains(group))
            .map(|c| c.conn)
            .collect()
    }

    pub(crate) fn owner_of(&self, group: &GroupId) -> Option<usize> {
        self.nodes.iter().enumerate().find_map(|(i, n)| {
            let s = n.as_ref()?.group_snapshot(group)?;
            (s.owner == Some(addr(i))).then_some(i)
        })
    }

    /// Every live copy of every group agrees with its live owner on the members.
    pub(crate) fn assert_copies_agree(&mut self) {
        self.run_until_quiet();
        for (i, node) in self.nodes.iter().enumerate() {
            let Some(node) = node else { continue };
            for id in node.group_ids() {
                let copy = node.group_snapshot(id).unwrap();
                let Some(owner) = copy.owner.and_then(|o| self.index_of(o)) else {
                    continue;
                };
                let Some(owner_node) = self.nodes[owner].as_ref() else {
                    continue;
                };
                let truth = owner_node
                    .group_snapshot(id)
                    .unwrap_or_else(|| panic!("node {i} holds {id} that its owner {owner} lacks"));
                assert_eq!(
                    copy.members.keys().collect::<Vec<_>>(),
                    truth.members.keys().collect::<Vec<_>>(),
                    "node {i}'s copy of {id} disagrees with owner {owner}; node {i} sees live {:?}; \
                     copy {:?} at {:?}, owner's {:?} at {:?}",
                    node.live_nodes().collect::<Vec<_>>(),
                    copy.owner,
                    copy.version,
                    truth.owner,
                    truth.version
                );
            }
        }
    }

    /// Every member broadcasts once; every other member must receive every broadcast within `within`.
    pub(crate) fn assert_all_exchange(&mut self, group: GroupId, within: Duration) {
        let members = self.members_of(&group);
        assert!(members.len() >= 2, "too few members left to exchange");
        let sent: Vec<(ConnId, u64)> = members
            .iter()
            .map(|c| (*c, self.broadcast(*c, group)))
            .collect();
        self.run_for(within);
        for member in &members {
            let client = &self.clients[member];
            for (sender, id) in &sent {
                if sender != member {
                    assert!(
                        client.received.contains(id),
                        "{} did not get broadcast {id} from {} within {within:?}",
                        client.uid,
                        self.clients[sender].uid
                    );
                }
            }
        }
    }

    /// A seeded random step: a client operation or a fault, then some time.
    pub(crate) fn random_step(&mut self) {
        let size = self.nodes.len();
        let live: Vec<usize> = (0..size).filter(|i| self.nodes[*i].is_some()).collect();
        let roll = self.rng.below(100);
        match roll {
            0..=1 if live.len() > 2 => {
                let victim = live[self.rng.below(live.len())];
                self.kill(victim);
            }
            2..=3 => {
                if let Some(dead) = (0..size).find(|i| self.nodes[*i].is_none()) {
                    self.restart(dead);
                }
            }
            4 if live.len() > 2 => {
                let a = live[self.rng.below(live.len())];
                let b = live[self.rng.below(live.len())];
                if a != b {
                    self.partition(a, b);
                }
            }
            5..=6 => self.heal(),
            7 => self.loss = 50,
            8..=14 => {
                let node = live[self.rng.below(live.len())];
                self.connect(node);
            }
            15..=22 => {
                if let Some(conn) = self.random_client() {
                    self.create(conn);
                }
            }
            23..=50 => {
                if let (Some(conn), false) = (self.random_client(), self.known_groups.is_empty()) {
                    let group = self.known_groups[self.rng.below(self.known_groups.len())];
                    self.join(conn, group);
                }
            }
            51..=56 => {
                let conn = self.random_client();
                let group = conn.and_then(|c| self.clients[&c].groups.iter().next().copied());
                if let (Some(conn), Some(group)) = (conn, group) {
                    let message = Bytes::from_static(b"bye");
                    self.request(conn, Request::Leave { group, message });
                }
            }
            57..=59 => {
                if let Some(conn) = self.random_client() {
                    let node = self.clients[&conn].node;
                    self.clients.remove(&conn);
                    let now = self.now;
                    let n = self.nodes[node].as_mut().unwrap();
                    let _done = n.handle(Input::Disconnect(conn), now);
                    self.drain(node);
                }
            }
            60..=62 => self.reconnect_elsewhere(),
            _ => {
                if let Some(conn) = self.random_client() {
                    let groups: Vec<GroupId> = self.clients[&conn].groups.iter().copied().collect();
                    if !groups.is_empty() {
                        let group = groups[self.rng.below(groups.len())];
                        self.broadcast(conn, group);
                    }
                }
            }
        }
        self.learn_groups();
        let pause = ms(self.rng.below(300) as u64);
        self.run_for(pause);
    }

    pub(crate) fn random_client(&mut self) -> Option<ConnId> {
        let conns: Vec<ConnId> = self.clients.keys().copied().collect();
        (!conns.is_empty()).then(|| conns[self.rng.below(conns.len())])
    }

    pub(crate) fn learn_groups(&mut self) {
        for c in self.clients.values() {
            for g in &c.groups {
                if !self.known_groups.contains(g) {
                    self.known_groups.push(*g);
                }
            }
        }
    }

    pub(crate) fn transcript(&self) -> u64 {
        self.hasher.finish()
    }
}
