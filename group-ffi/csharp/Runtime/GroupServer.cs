// A group server hosted in this process: the C# wrapper of group_server_* (see Group.cs for the ground rules).

using System;
using System.Collections.Generic;
using System.Runtime.InteropServices;
using Group.Native;

namespace Group
{
    using AOT;

    /// <summary>A server hosted in this process. Register hooks, commands and messages, then Start; Dispose
    /// stops it (one second of grace) and frees it. Every method may be called from any thread, but the
    /// blocking ones (all but Next, Reply, TryPollEvent, Port) not from the server's own callbacks, where they
    /// throw GroupException with GROUP_RESULT_WRONG_THREAD; ticks are the exception and may call them.
    /// Dispose it: there is no finalizer, since stopping a server from the finalizer thread could block it
    /// (a server never disposed runs until the process ends).</summary>
    public sealed unsafe class Server : IDisposable
    {
        IntPtr handle;
        // Everything native code holds a pointer to lives until the server is freed.
        readonly List<GCHandle> pinned = new List<GCHandle>();
        readonly GCHandle self;
        Action<ServerEvent> eventRaised;

        // Static delegates for the native side: kept alive for the process, and static as IL2CPP requires.
        static readonly NativeMethods.group_server_add_hook_callback_delegate HookThunk = OnHook;
        static readonly NativeMethods.group_server_add_command_callback_delegate CommandThunk = OnHook;
        static readonly NativeMethods.group_server_set_tick_callback_delegate TickThunk = OnTick;
        static readonly NativeMethods.group_server_set_message_callback_delegate MessageThunk = OnMessage;
        static readonly NativeMethods.group_server_set_event_callback_callback_delegate EventThunk = OnEvent;

        /// <summary>Creates a server from a JSON configuration (group-server's format; "{}" for every default)
        /// with workerThreads runtime threads (0: two). Throws naming the bad key of a refused configuration.</summary>
        public Server(string configJson, uint workerThreads = 0)
        {
            var text = Interop.Utf8(configJson);
            var json = Interop.NonEmpty(text);
            var length = text.Length;
            group_server* raw;
            group_result result;
            fixed (byte* p = json)
            {
                result = NativeMethods.group_server_new(p, (UIntPtr)length, workerThreads, &raw);
                if (result == group_result.GROUP_RESULT_INVALID_CONFIG)
                {
                    var why = new byte[1024];
                    UIntPtr written;
                    fixed (byte* w = why)
                    {
                        NativeMethods.group_config_error(p, (UIntPtr)length, w, (UIntPtr)why.Length, &written);
                        Interop.Check(result, "group_server_new: " + Interop.Utf8(w, (int)written));
                    }
                }
            }
            Interop.Check(result, "group_server_new");
            handle = (IntPtr)raw;
            self = GCHandle.Alloc(this);
        }

        group_server* Raw
        {
            get
            {
                if (handle == IntPtr.Zero) throw new ObjectDisposedException("Server");
                return (group_server*)handle;
            }
        }

        void* Keep(object target)
        {
            var h = GCHandle.Alloc(target);
            lock (pinned) pinned.Add(h);
            return (void*)GCHandle.ToIntPtr(h);
        }

        /// <summary>Runs hook for every command of that kind, before it is carried out (it may refuse it) or after
        /// it succeeded. The hook answers call.Token with Next, now or later. Before Start only.</summary>
        public void AddHook(HookCommand command, HookPhase phase, Action<HookCall> hook)
        {
            var state = Keep(new Registration { Server = this, Hook = hook });
            Interop.Check(NativeMethods.group_server_add_hook(Raw, (uint)command, (uint)phase, HookThunk, state),
                "group_server_add_hook");
        }

        /// <summary>Handles the server's own command (ver 2 and up); answer with Reply or Next. Before Start only.</summary>
        public void AddCommand(byte ver, ushort cmd, Action<HookCall> handler)
        {
            var state = Keep(new Registration { Server = this, Hook = handler });
            Interop.Check(NativeMethods.group_server_add_command(Raw, ver, cmd, CommandThunk, state),
                "group_server_add_command");
        }

        /// <summary>Produces the discard or rejoin message from (group, uid, sid); at most 4096 bytes. It runs on
        /// a thread of its own; the server waits for it at most 20 ms, then sends the message empty. Before Start
        /// only.</summary>
        public void SetMessage(MessageKind kind, Func<GroupId, string, byte[], byte[]> produce)
        {
            var state = Keep(new Registration { Server = this, Message = produce });
            Interop.Check(NativeMethods.group_server_set_message(Raw, (uint)kind, MessageThunk, state),
                "group_server_set_message");
        }

        /// <summary>Raised on the server's node thread for every event; it must return at once. The polling
        /// queue (TryPollEvent) receives every event as well.</summary>
        public event Action<ServerEvent> EventRaised
        {
            add
            {
                lock (pinned)
                {
                    var first = eventRaised == null;
                    eventRaised += value;
                    if (first)
                        Interop.Check(NativeMethods.group_server_set_event_callback(Raw, EventThunk,
                            (void*)GCHandle.ToIntPtr(self)), "group_server_set_event_callback");
                }
            }
            remove { lock (pinned) eventRaised -= value; }
        }

        /// <summary>Binds the listeners; returns once they accept connections.</summary>
        public void Start() { Interop.Check(NativeMethods.group_server_start(Raw), "group_server_start"); }

        /// <summary>The port a listener is bound to (the real one for port 0).</summary>
        public ushort Port(Transport transport)
        {
            ushort port;
            Interop.Check(NativeMethods.group_server_port(Raw, (uint)transport, &port), "group_server_port");
            return port;
        }

        /// <summary>Answers a hook's token: code 0 goes on; 1000-65535 refuses with that code and message (for an
        /// After hook: stops the remaining After hooks of the command, which already happened). Other codes throw.
        /// False when the token was answered already or timed out.</summary>
        public bool Next(ulong token, ushort code = 0, string message = "")
        {
            var text = Interop.Utf8(message);
            fixed (byte* p = Interop.NonEmpty(text))
            {
                var r = NativeMethods.group_next(Raw, token, code, p, (UIntPtr)text.Length);
                if (r == group_result.GROUP_RESULT_NOT_FOUND) return false;
                Interop.Check(r, "group_next");
                return true;
            }
        }

        /// <summary>Answers a custom command's token with an Ok response carrying payload.</summary>
        public bool Reply(ulong token, byte[] payload)
        {
            payload = payload ?? new byte[0];
            fixed (byte* p = Interop.NonEmpty(payload))
            {
                var r = NativeMethods.group_reply(Raw, token, p, (UIntPtr)payload.Length);
                if (r == group_result.GROUP_RESULT_NOT_FOUND) return false;
                Interop.Check(r, "group_reply");
                return true;
            }
        }

        /// <summary>Creates a group owned by this node; creator (a uid with a session here, or null) joins it
        /// when join is set.</summary>
        public GroupId NewGroup(string creator, bool allowEmpty, bool join, ushort ttlS, ushort intervalMs = 0)
        {
            var uid = Interop.Utf8(creator);
            var id = new byte[Interop.GroupIdLength];
            ushort refusal = 0;
            fixed (byte* u = Interop.NonEmpty(uid))
            fixed (byte* g = id)
            {
                var r = NativeMethods.group_server_new_group(Raw, u, (UIntPtr)uid.Length, allowEmpty ? (byte)1 : (byte)0,
                    join ? (byte)1 : (byte)0, ttlS, intervalMs, g, &refusal);
                Interop.Check(r, "group_server_new_group", refusal);
            }
            return new GroupId(id);
        }

        delegate group_result MemberCall(byte* group, byte* uid, UIntPtr uidLen, byte* message, UIntPtr messageLen, ushort* refusal);

        void Member(string call, GroupId group, string uid, byte[] message, MemberCall native)
        {
            var u = Interop.Utf8(uid);
            message = message ?? new byte[0];
            ushort refusal = 0;
            fixed (byte* g = group.Bytes)
            fixed (byte* up = Interop.NonEmpty(u))
            fixed (byte* m = Interop.NonEmpty(message))
            {
                var r = native(g, up, (UIntPtr)u.Length, m, (UIntPtr)message.Length, &refusal);
                Interop.Check(r, call, refusal);
            }
        }

        /// <summary>Joins uid (a session here) to group; the others get a ver/cmd push when message is not empty.</summary>
        public void Join(GroupId group, string uid, byte[] message = null, byte ver = 1, ushort cmd = 111)
        {
            var raw = Raw;
            Member("group_server_join", group, uid, message,
                (g, u, ul, m, ml, refusal) => NativeMethods.group_server_join(raw, g, u, ul, m, ml, ver, cmd, refusal));
        }

        /// <summary>Removes uid from group; the rest get a ver/cmd push when message is not empty.</summary>
        public void Leave(GroupId group, string uid, byte[] message = null, byte ver = 1, ushort cmd = 112)
        {
            var raw = Raw;
            Member("group_server_leave", group, uid, message,
                (g, u, ul, m, ml, refusal) => NativeMethods.group_server_leave(raw, g, u, ul, m, ml, ver, cmd, refusal));
        }

        /// <summary>Sends message from member uid to the other members, on every node.</summary>
        public void Broadcast(GroupId group, string uid, byte[] message, bool reliable = true, byte ver = 1, ushort cmd = 113)
        {
            var raw = Raw;
            var rel = reliable ? (byte)1 : (byte)0;
            Member("group_server_broadcast", group, uid, message,
                (g, u, ul, m, ml, refusal) => NativeMethods.group_server_broadcast(raw, g, u, ul, ver, cmd, m, ml, rel, refusal));
        }

        /// <summary>Queues a broadcast from member uid and returns at once (about 0.4 microseconds instead of a
        /// round trip between threads); allowed on any thread, callbacks included. A refusal arrives later as a
        /// BroadcastRefused event. False when the server's queue is full (nothing was queued).</summary>
        public bool BroadcastNoWait(GroupId group, string uid, byte[] message, bool reliable = true, byte ver = 1, ushort cmd = 113)
        {
            var u = Interop.Utf8(uid);
            message = message ?? new byte[0];
            fixed (byte* g = group.Bytes)
            fixed (byte* up = Interop.NonEmpty(u))
            fixed (byte* m = Interop.NonEmpty(message))
            {
                var r = NativeMethods.group_server_broadcast_nowait(Raw, g, up, (UIntPtr)u.Length, ver, cmd, m,
                    (UIntPtr)message.Length, reliable ? (byte)1 : (byte)0);
                if (r == group_result.GROUP_RESULT_BUSY) return false;
                Interop.Check(r, "group_server_broadcast_nowait");
                return true;
            }
        }

        /// <summary>Sends message to every member from the server itself (an entry with an empty uid).</summary>
        public void Announce(GroupId group, byte[] message, bool reliable = true, byte ver = 1, ushort cmd = 113)
        {
            message = message ?? new byte[0];
            ushort refusal = 0;
            fixed (byte* g = group.Bytes)
            fixed (byte* m = Interop.NonEmpty(message))
            {
                var r = NativeMethods.group_server_announce(Raw, g, ver, cmd, m, (UIntPtr)message.Length,
                    reliable ? (byte)1 : (byte)0, &refusal);
                Interop.Check(r, "group_server_announce", refusal);
            }
        }

        static string NodeText(group_node_addr node)
        {
            return node.ip[0] + "." + node.ip[1] + "." + node.ip[2] + "." + node.ip[3] + ":" + node.port;
        }

        /// <summary>The mesh addresses ("ip:port") of the nodes holding members of group (Diarkis's
        /// GetMemberMeshNodes); null when this node knows no such group.</summary>
        public string[] MemberNodes(GroupId group)
        {
            var capacity = 8;
            for (;;)
            {
                var nodes = new group_node_addr[capacity];
                UIntPtr count;
                group_result r;
                fixed (byte* g = group.Bytes)
                fixed (group_node_addr* n = nodes)
                {
                    r = NativeMethods.group_server_member_nodes(Raw, g, n, (UIntPtr)capacity, &count);
                }
                if (r == group_result.GROUP_RESULT_NOT_FOUND) return null;
                if (r == group_result.GROUP_RESULT_BUFFER_TOO_SMALL) { capacity = (int)count; continue; }
                Interop.Check(r, "group_server_member_nodes");
                var result = new string[(int)count];
                for (var i = 0; i < result.Length; i++) result[i] = NodeText(nodes[i]);
                return result;
            }
        }

        /// <summary>Pushes payload with the server's own ver (2 and up) and cmd to user uid, connected to this
        /// node; its client gets a Custom push. False when uid has no session here.</summary>
        public bool PushToUser(string uid, byte ver, ushort cmd, byte[] payload)
        {
            var u = Interop.Utf8(uid);
            payload = payload ?? new byte[0];
            fixed (byte* up = Interop.NonEmpty(u))
            fixed (byte* p = Interop.NonEmpty(payload))
            {
                var r = NativeMethods.group_server_push_to_user(Raw, up, (UIntPtr)u.Length, ver, cmd, p, (UIntPtr)payload.Length);
                if (r == group_result.GROUP_RESULT_NOT_FOUND) return false;
                Interop.Check(r, "group_server_push_to_user");
                return true;
            }
        }

        /// <summary>The group uid joined or created last (Diarkis's GetLatestGroupID), or null.</summary>
        public GroupId? LatestGroup(string uid)
        {
            var u = Interop.Utf8(uid);
            var id = new byte[Interop.GroupIdLength];
            fixed (byte* up = Interop.NonEmpty(u))
            fixed (byte* g = id)
            {
                var r = NativeMethods.group_server_latest_group(Raw, up, (UIntPtr)u.Length, g);
                if (r == group_result.GROUP_RESULT_NOT_FOUND) return null;
                Interop.Check(r, "group_server_latest_group");
            }
            return new GroupId(id);
        }

        /// <summary>The groups uid is in, in join order; null when uid has no session here.</summary>
        public GroupId[] GroupIds(string uid)
        {
            var u = Interop.Utf8(uid);
            var capacity = 8;
            for (;;)
            {
                var ids = new byte[capacity * Interop.GroupIdLength];
                UIntPtr count;
                group_result r;
                fixed (byte* up = Interop.NonEmpty(u))
                fixed (byte* g = ids)
                {
                    r = NativeMethods.group_server_group_ids(Raw, up, (UIntPtr)u.Length, g, (UIntPtr)capacity, &count);
                }
                if (r == group_result.GROUP_RESULT_NOT_FOUND) return null;
                if (r == group_result.GROUP_RESULT_BUFFER_TOO_SMALL) { capacity = (int)count; continue; }
                Interop.Check(r, "group_server_group_ids");
                var result = new GroupId[(int)count];
                for (var i = 0; i < result.Length; i++)
                {
                    var one = new byte[Interop.GroupIdLength];
                    Array.Copy(ids, i * Interop.GroupIdLength, one, 0, one.Length);
                    result[i] = new GroupId(one);
                }
                return result;
            }
        }

        /// <summary>A snapshot of group, or null when this node knows no such group.</summary>
        public GroupSnapshot Snapshot(GroupId group)
        {
            var capacity = 16;
            for (;;)
            {
                var members = new group_member[capacity];
                group_snapshot view;
                UIntPtr count;
                group_result r;
                fixed (byte* g = group.Bytes)
                fixed (group_member* m = members)
                {
                    r = NativeMethods.group_server_snapshot(Raw, g, &view, m, (UIntPtr)capacity, &count);
                }
                if (r == group_result.GROUP_RESULT_NOT_FOUND) return null;
                if (r == group_result.GROUP_RESULT_BUFFER_TOO_SMALL) { capacity = (int)count; continue; }
                Interop.Check(r, "group_server_snapshot");
                var list = new Member[(int)count];
                for (var i = 0; i < list.Length; i++)
                {
                    fixed (group_member* one = &members[i])
                    {
                        list[i] = new Member
                        {
                            Uid = Interop.Utf8(one->uid, (int)one->uid_len),
                            Sid = Interop.Copy(one->sid, 16),
                            Node = NodeText(one->node),
                        };
                    }
                }
                return new GroupSnapshot
                {
                    AllowEmpty = view.allow_empty != 0,
                    IsStatic = view.is_static != 0,
                    Owner = view.has_owner != 0 ? NodeText(view.owner) : null,
                    TtlMs = view.ttl_ms,
                    IntervalMs = view.interval_ms,
                    MemberNodeCount = (int)view.member_node_count,
                    Epoch = view.epoch,
                    Seq = view.seq,
                    Members = list,
                };
            }
        }

        /// <summary>Calls tick every intervalMs (1000 or more; 0 stops) while group exists here. The tick runs on a
        /// server thread that may call the blocking API (Announce, Broadcast, ...).</summary>
        public void SetTick(GroupId group, uint intervalMs, Action<GroupId> tick)
        {
            var state = tick == null ? null : Keep(new Registration { Server = this, Tick = tick });
            fixed (byte* g = group.Bytes)
            {
                var thunk = tick == null ? null : TickThunk;
                Interop.Check(NativeMethods.group_server_set_tick(Raw, g, intervalMs, thunk, state), "group_server_set_tick");
            }
        }

        /// <summary>Takes the node offline: no new groups, clients get the Offline push, owned groups move.</summary>
        public void SetOffline() { Interop.Check(NativeMethods.group_server_set_offline(Raw), "group_server_set_offline"); }

        /// <summary>Takes the next queued event without waiting (for a game loop's Update).</summary>
        public bool TryPollEvent(out ServerEvent serverEvent)
        {
            group_event raw;
            var uid = new byte[Interop.MaxUidLength];
            UIntPtr needed;
            fixed (byte* u = uid)
            {
                var r = NativeMethods.group_server_poll_event(Raw, &raw, u, (UIntPtr)uid.Length, &needed);
                if (r == group_result.GROUP_RESULT_NOT_FOUND)
                {
                    serverEvent = new ServerEvent();
                    return false;
                }
                Interop.Check(r, "group_server_poll_event");
                serverEvent = ServerEvent.From(&raw, u);
                return true;
            }
        }

        /// <summary>Stops serving: leaves the cluster and closes every connection, waiting at most graceMs.</summary>
        public void Stop(uint graceMs = 1000) { Interop.Check(NativeMethods.group_server_stop(Raw, graceMs), "group_server_stop"); }

        /// <summary>Drains, as SIGTERM does to group-server: offline, owned groups handed over, serving until the
        /// last client has gone or server.drainTimeout passed, then stopped with graceMs. Blocking.</summary>
        public void Drain(uint graceMs = 1000) { Interop.Check(NativeMethods.group_server_drain(Raw, graceMs), "group_server_drain"); }

        /// <summary>Stops (if running) and frees the server; callbacks are released afterwards.</summary>
        public void Dispose()
        {
            var raw = handle;
            handle = IntPtr.Zero;
            if (raw != IntPtr.Zero)
            {
                NativeMethods.group_server_free((group_server*)raw);
                lock (pinned)
                {
                    foreach (var h in pinned) h.Free();
                    pinned.Clear();
                }
                self.Free();
            }
            GC.SuppressFinalize(this);
        }

        /// <summary>What a native callback's userdata stands for.</summary>
        sealed class Registration
        {
            public Server Server;
            public Action<HookCall> Hook;
            public Action<GroupId> Tick;
            public Func<GroupId, string, byte[], byte[]> Message;
        }

        static T Target<T>(void* userdata) where T : class
        {
            return GCHandle.FromIntPtr((IntPtr)userdata).Target as T;
        }

        [MonoPInvokeCallback(typeof(NativeMethods.group_server_add_hook_callback_delegate))]
        static void OnHook(void* userdata, group_hook_call* call, ulong token)
        {
            var registration = Target<Registration>(userdata);
            if (registration == null) return;
            try
            {
                registration.Hook(new HookCall
                {
                    Command = (HookCommand)call->command,
                    Ver = call->ver,
                    Cmd = call->cmd,
                    Uid = Interop.Utf8(call->uid, (int)call->uid_len),
                    Sid = Interop.Copy(call->sid, 16),
                    Group = call->group_len == (UIntPtr)Interop.GroupIdLength ? GroupId.From(call->group) : (GroupId?)null,
                    Payload = Interop.Copy(call->payload, (int)call->payload_len),
                    Token = token,
                });
            }
            catch (Exception e)
            {
                // Never let an exception unwind into native code; refuse the request instead (if unanswered).
                try { registration.Server.Next(token, 1000, "hook failed: " + e.Message); }
                catch (Exception) { }
            }
        }

        [MonoPInvokeCallback(typeof(NativeMethods.group_server_set_tick_callback_delegate))]
        static void OnTick(void* userdata, byte* group)
        {
            var registration = Target<Registration>(userdata);
            if (registration == null) return;
            try { registration.Tick(GroupId.From(group)); }
            catch (Exception) { }
        }

        [MonoPInvokeCallback(typeof(NativeMethods.group_server_set_message_callback_delegate))]
        static UIntPtr OnMessage(void* userdata, byte* group, byte* uid, UIntPtr uidLen, byte* sid, byte* buf, UIntPtr bufLen)
        {
            var registration = Target<Registration>(userdata);
            if (registration == null) return UIntPtr.Zero;
            try
            {
                var message = registration.Message(GroupId.From(group), Interop.Utf8(uid, (int)uidLen), Interop.Copy(sid, 16));
                if (message == null || message.Length > (int)bufLen) return UIntPtr.Zero;
                Marshal.Copy(message, 0, (IntPtr)buf, message.Length);
                return (UIntPtr)message.Length;
            }
            catch (Exception) { return UIntPtr.Zero; }
        }

        [MonoPInvokeCallback(typeof(NativeMethods.group_server_set_event_callback_callback_delegate))]
        static void OnEvent(void* userdata, group_event* e, byte* uid)
        {
            var server = Target<Server>(userdata);
            var handlers = server == null ? null : server.eventRaised;
            if (handlers == null) return;
            try { handlers(ServerEvent.From(e, uid)); }
            catch (Exception) { }
        }
    }
}
