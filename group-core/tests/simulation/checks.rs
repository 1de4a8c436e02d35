//! The per-step checks of the simulation: what the node put out is recorded, checked push by push, and
//! reconciled with the model.

use super::*;

/// What one step's drain put out, in the order the node gave it.
#[derive(Default)]
struct Drained {
    transmits: Vec<Transmit>,
    events: Vec<Event>,
}

impl Sink for Drained {
    fn transmit(&mut self, transmit: Transmit) -> bool {
        self.transmits.push(transmit);
        true
    }
    fn event(&mut self, event: Event) {
        self.events.push(event);
    }
    fn mesh(&mut self, transmit: MeshTransmit) {
        panic!("a node alone sends nothing to other nodes: {transmit:?}");
    }
}

/// The per-step pipeline: drain, record what was accepted, check every push, reconcile the model with the
/// node's state, and check the state invariants.
impl Sim {
    pub(crate) fn finish_step(&mut self, kind: StepKind, broadcast: Option<(u64, GroupId)>) {
        self.steps += 1;
        let mut out = Drained::default();
        let _deadline = self.node.drain(self.now, &mut out);
        let mut frames = Vec::new();
        for t in out.transmits {
            (self.steps, t.conn, &t.frame[..], t.reliable).hash(&mut self.hasher);
            let mut buf = BytesMut::from(&t.frame[..]);
            let frame = decode_server_frame(&mut buf, u32::MAX)
                .unwrap()
                .expect("one whole frame per transmit");
            assert!(buf.is_empty(), "one transmit is exactly one frame");
            frames.push((t.conn, frame));
        }
        for event in out.events {
            format!("{event:?}").hash(&mut self.hasher);
            if let Event::Close { conn, reason } = event {
                self.open.retain(|c| *c != conn);
                match reason {
                    CloseReason::Idle => self.coverage.idle_closes += 1,
                    CloseReason::Replaced => self.coverage.replacements += 1,
                    _ => {}
                }
            }
        }
        if let (Some((seq, group)), StepKind::Request(conn)) = (broadcast, &kind) {
            let refused = frames
                .iter()
                .any(|(c, f)| c == conn && f.status == Status::Bad);
            if !refused {
                let uid = self.model.conn_uid[conn].clone();
                self.record(seq, group, uid);
            }
        }
        for (conn, frame) in &frames {
            let closing_notice = frame.status == Status::Bad && frame.cmd == cmd::CLOSING;
            if let (StepKind::Request(requester), false) = (&kind, frame.status == Status::Push) {
                // The one exception: a connection replaced by the requester's Hello is told why.
                assert!(
                    conn == requester || closing_notice,
                    "responses go to the requester only"
                );
            }
            if frame.status == Status::Push {
                self.check_push(&kind, *conn, frame);
            } else if frame.status == Status::Bad {
                self.coverage.refusals += 1;
            }
        }
        self.reconcile();
    }

    /// A push must reach a member of its group (before the step for timer steps, which only shrink
    /// membership; after it for the others, whose pushes go to members who stay), never its own sender.
    pub(crate) fn check_push(&mut self, kind: &StepKind, conn: ConnId, frame: &ServerFrame) {
        self.pushes_checked += 1;
        assert_eq!(frame.ver, VER_GROUP, "only group pushes in this simulation");
        let uid = match kind {
            StepKind::Timeout => self.model.conn_uid.get(&conn).cloned(),
            _ => self.node.session_of(conn).map(|(u, _)| u.to_string()),
        }
        .unwrap_or_else(|| panic!("push to {conn:?}, which has no session"));
        let group = GroupId::from_bytes(&frame.payload[..52]).unwrap();
        let is_member = match kind {
            StepKind::Timeout => self.model.memberships.contains_key(&(uid.clone(), group)),
            _ => self
                .node
                .group_snapshot(&group)
                .is_some_and(|g| g.members.contains_key(&uid)),
        };
        assert!(
            is_member,
            "push {} for {group} to non-member {uid}",
            frame.cmd
        );
        match frame.cmd {
            cmd::JOIN | cmd::LEAVE => {
                let push = parse_member_push(&frame.payload).unwrap();
                assert_ne!(push.uid, uid, "a member is never told about itself");
            }
            cmd::BROADCAST => {
                let (_, entries) = parse_broadcast_push(&frame.payload).unwrap();
                assert!(!entries.is_empty());
                if entries.len() > 1 {
                    self.coverage.merged_pushes += 1;
                }
                let received = self.model.received.entry((uid.clone(), group)).or_default();
                for entry in entries {
                    let seq: u64 = std::str::from_utf8(&entry.message[1..])
                        .unwrap()
                        .parse()
                        .unwrap();
                    let sent = &self.model.sent[&seq];
                    assert_eq!(
                        (sent.group, &sent.sender),
                        (group, &entry.uid),
                        "entry matches what was sent"
                    );
                    assert_ne!(entry.uid, uid, "no broadcast back to its sender");
                    if let Some(last) = received.last() {
                        assert!(
                            sent.position > *last,
                            "in order, never twice: {} after {last}",
                            sent.position
                        );
                    }
                    received.push(sent.position);
                }
            }
            other => panic!("unexpected push cmd {other}"),
        }
    }

    pub(crate) fn reconcile(&mut self) {
        let now = self.now;
        // Membership indexes agree in both directions.
        let mut from_users = BTreeSet::new();
        for (uid, _) in self.node.sessions() {
            let groups = self.node.user_group_ids(uid).unwrap();
            let distinct: BTreeSet<_> = groups.iter().collect();
            assert_eq!(
                distinct.len(),
                groups.len(),
                "{uid} listed in a group twice"
            );
            for g in groups {
                from_users.insert((uid.to_string(), *g));
            }
        }
        let mut from_groups = BTreeSet::new();
        let snapshots: Vec<_> = self
            .node
            .group_ids()
            .map(|id| self.node.group_snapshot(id).unwrap())
            .collect();
        for snapshot in &snapshots {
            for uid in snapshot.members.keys() {
                from_groups.insert((uid.clone(), snapshot.id));
            }
        }
        assert_eq!(
            from_users, from_groups,
            "user->groups and group->members disagree"
        );

        // Memberships that began this step start receiving from the group's current send position.
        let old: BTreeSet<_> = self.model.memberships.keys().cloned().collect();
        for pair in from_users.difference(&old) {
            let start = self.model.sent_per_group.get(&pair.1).map_or(0, Vec::len);
            self.model.memberships.insert(pair.clone(), start);
            self.model.received.insert(pair.clone(), Vec::new());
        }
        for pair in old.difference(&from_users) {
            self.model.memberships.remove(pair);
            self.model.received.remove(pair);
        }

        // TTL: empty groups without allow_empty are gone at once; allow_empty ones exactly at empty+ttl.
        let present: BTreeMap<GroupId, bool> = snapshots
            .iter()
            .map(|s| (s.id, s.members.is_empty()))
            .collect();
        for s in &snapshots {
            self.model.groups.entry(s.id).or_insert_with(|| {
                self.known_groups.push(s.id);
                GroupModel {
                    allow_empty: s.allow_empty,
                    is_static: s.is_static,
                    ttl: s.ttl,
                    empty_since: None,
                }
            });
        }
        let mut deleted = vec![];
        for (id, g) in self.model.groups.iter_mut() {
            match present.get(id) {
                None => {
                    assert!(!g.is_static, "static group {id} disappeared");
                    if g.allow_empty {
                        let since = g
                            .empty_since
                            .unwrap_or_else(|| panic!("{id} deleted while not known empty"));
                        assert!(
                            now >= since.saturating_add(g.ttl),
                            "{id} deleted before its ttl ran out"
                        );
                        self.coverage.ttl_deletions += 1;
                    }
                    deleted.push(*id);
                }
                Some(true) => {
                    assert!(
                        g.allow_empty || g.is_static,
                        "empty group {id} without allow_empty still exists"
                    );
                    let since = *g.empty_since.get_or_insert(now);
                    if !g.is_static {
                        assert!(now < since.saturating_add(g.ttl), "{id} outlived its ttl");
                    }
                }
                Some(false) => g.empty_since = None,
            }
        }
        for id in deleted {
            self.model.groups.remove(&id);
        }
        self.model.conn_uid = self
            .open
            .iter()
            .filter_map(|c| Some((*c, self.node.session_of(*c)?.0.to_string())))
            .collect();
        assert!(
            self.node.timer_count() <= MAX_CONNS as usize * 4 + 3 * 40 + 64,
            "timer heap stays bounded"
        );
    }

    /// Every member still in a group at the end got every broadcast sent to it since it joined, except its
    /// own, and nothing else since then.
    pub(crate) fn check_completeness(&self) {
        for ((uid, group), start) in &self.model.memberships {
            let senders = self
                .model
                .sent_per_group
                .get(group)
                .map(Vec::as_slice)
                .unwrap_or_default();
            let expected: Vec<usize> = (*start..senders.len())
                .filter(|&p| senders[p] != *uid)
                .collect();
            let got: Vec<usize> = self.model.received[&(uid.clone(), *group)]
                .iter()
                .copied()
                .filter(|p| p >= start)
                .collect();
            assert_eq!(
                got, expected,
                "{uid} in {group}: received vs sent since joining"
            );
        }
    }
}
