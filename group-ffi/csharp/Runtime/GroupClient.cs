// A game client over TCP, WebSocket or UDP: the C# wrapper of group_client_* (see Group.cs).
//
// Two ways to use it. A game loop (Unity's Update) uses the non-blocking half: Client.ConnectAsync, the
// Submit* calls (each returns an operation ID at once, optionally with a completion callback), and
// Dispatch() once per frame, which raises every event that has arrived (pushes, completions, connection
// state) on the calling thread. Tools and tests may use the blocking calls (Hello, Create, Join, ...) and
// TryPoll instead.

using System;
using System.Collections.Generic;
using Group.Native;

namespace Group
{
    public enum PushKind : uint { Joined = 1, Left = 2, Broadcast = 3, Offline = 4, Refused = 5, Custom = 9 }

    /// <summary>Something the server sent without being asked: a join, a leave, one broadcast entry (an empty
    /// Uid is the server's announce), Offline, a refused broadcast (Code), or a push of the server code's own
    /// (Custom: Ver and Cmd, the payload in Message).</summary>
    public struct Push
    {
        public PushKind Kind;
        public GroupId Group;
        public string Uid;
        public byte[] Message;
        public ushort Code;
        public byte Ver;
        public ushort Cmd;
    }

    public enum ClientEventKind : uint
    {
        Joined = 1, Left = 2, Broadcast = 3, Offline = 4, Refused = 5,
        /// <summary>A submitted operation completed: Op names it, Result says how.</summary>
        Completed = 6,
        /// <summary>The connection is up (the first event of every client).</summary>
        Connected = 7,
        /// <summary>The connection ended or could not be made: Reason, and the Message says more.</summary>
        Disconnected = 8,
        /// <summary>A push of the server code's own: Ver and Cmd, the payload in Message.</summary>
        Custom = 9,
    }

    public enum DisconnectReason : uint { None = 0, ServerClosed = 1, Network = 2, Protocol = 3, ConnectFailed = 4, ConnectTimedOut = 5 }

    /// <summary>One event as Dispatch raises it. Valid only during the handler: the byte segments point into the
    /// client's reused buffer, so that dispatching allocates nothing. Copy what you keep (Uid, Group and
    /// MessageBytes() copy).</summary>
    public struct ClientEvent
    {
        public ClientEventKind Kind;
        /// <summary>For Completed: the ID its Submit* call returned.</summary>
        public ulong Op;
        /// <summary>For Completed: OK, REFUSED (Code, and the refusal's text in Message), TIMED_OUT or DISCONNECTED.</summary>
        public group_result Result;
        public DisconnectReason Reason;
        /// <summary>A refusal's protocol code (a refused completion or broadcast).</summary>
        public ushort Code;
        /// <summary>For Custom: the push's version byte and command.</summary>
        public byte Ver;
        public ushort Cmd;
        /// <summary>The 52 bytes of the group (zeros when there is none).</summary>
        public ArraySegment<byte> GroupBytes;
        public ArraySegment<byte> UidBytes;
        /// <summary>The push's message; Hello's session ID; a custom request's reply; a refusal's or
        /// disconnection's text.</summary>
        public ArraySegment<byte> Message;

        public bool Succeeded { get { return Result == group_result.GROUP_RESULT_OK; } }
        /// <summary>Allocates a string.</summary>
        public string Uid { get { return System.Text.Encoding.UTF8.GetString(UidBytes.Array, UidBytes.Offset, UidBytes.Count); } }
        /// <summary>Allocates a GroupId.</summary>
        public GroupId Group
        {
            get
            {
                var id = new byte[Interop.GroupIdLength];
                Array.Copy(GroupBytes.Array, GroupBytes.Offset, id, 0, id.Length);
                return new GroupId(id);
            }
        }
        /// <summary>Allocates a copy of the message.</summary>
        public byte[] MessageBytes()
        {
            var copy = new byte[Message.Count];
            Array.Copy(Message.Array, Message.Offset, copy, 0, copy.Length);
            return copy;
        }
        /// <summary>The message as UTF-8 text (allocates).</summary>
        public string MessageText { get { return System.Text.Encoding.UTF8.GetString(Message.Array, Message.Offset, Message.Count); } }
        /// <summary>Whether this event's group is `group`, without allocating.</summary>
        public bool IsGroup(GroupId group)
        {
            var bytes = group.Bytes;
            for (int i = 0; i < bytes.Length; i++)
                if (GroupBytes.Array[GroupBytes.Offset + i] != bytes[i]) return false;
            return true;
        }
    }

    /// <summary>How a client connects and how long its calls may take (0: the defaults: 5000, 10000, 3000).</summary>
    public struct ClientOptions
    {
        public uint ConnectTimeoutMs;
        public uint RequestTimeoutMs;
        public uint KeepAliveMs;
    }

    /// <summary>One connection. Calls must not overlap: use a client from one thread at a time (Unity: the
    /// main thread). Its own native thread keeps the session alive whether or not you poll. Dispose says Fin
    /// and closes.</summary>
    public sealed unsafe class Client : IDisposable
    {
        IntPtr handle;
        byte[] buffer = new byte[512];
        /// <summary>The group bytes of the event being dispatched (reused: no allocation per event).</summary>
        readonly byte[] groupBuffer = new byte[Interop.GroupIdLength];
        /// <summary>Completion callbacks of submitted operations, by operation ID.</summary>
        readonly Dictionary<ulong, Action<ClientEvent>> completions = new Dictionary<ulong, Action<ClientEvent>>();
        bool connected;

        /// <summary>Raised by Dispatch for every event that has no completion callback of its own.</summary>
        public event Action<ClientEvent> EventReceived;

        /// <summary>True between the Connected and Disconnected events (as Dispatch saw them).</summary>
        public bool IsConnected { get { return connected; } }

        Client(IntPtr raw) { handle = raw; }

        /// <summary>Starts connecting and returns at once: the first event Dispatch raises is Connected, or
        /// Disconnected with the Reason. Submissions made before are sent once the connection is up.</summary>
        public static Client ConnectAsync(Transport transport, string address, ClientOptions options = default(ClientOptions))
        {
            var addr = Interop.Utf8(address);
            var native = Native(options);
            group_client* raw;
            fixed (byte* a = Interop.NonEmpty(addr))
            {
                Interop.Check(NativeMethods.group_client_connect_async((uint)transport, a, (UIntPtr)addr.Length, &native, &raw),
                    "group_client_connect_async " + address);
            }
            return new Client((IntPtr)raw);
        }

        static group_client_options Native(ClientOptions options)
        {
            return new group_client_options
            {
                connect_timeout_ms = options.ConnectTimeoutMs,
                request_timeout_ms = options.RequestTimeoutMs,
                keep_alive_ms = options.KeepAliveMs,
            };
        }

        /// <summary>As ConnectAsync, with TLS (Tcp, or Ws as wss://): the server's certificate must name
        /// serverName and chain to a CA in caPem (PEM text), or with caPem null to one of the public web's
        /// CAs. Udp, or an unusable name or CA text, throws.</summary>
        public static Client ConnectTlsAsync(Transport transport, string address, string serverName, string caPem = null,
            ClientOptions options = default(ClientOptions))
        {
            var addr = Interop.Utf8(address);
            var name = Interop.Utf8(serverName);
            var ca = caPem == null ? new byte[0] : Interop.Utf8(caPem);
            var native = Native(options);
            group_client* raw;
            fixed (byte* a = Interop.NonEmpty(addr))
            fixed (byte* n = Interop.NonEmpty(name))
            fixed (byte* c = Interop.NonEmpty(ca))
            {
                Interop.Check(NativeMethods.group_client_connect_tls((uint)transport, a, (UIntPtr)addr.Length, n,
                        (UIntPtr)name.Length, ca.Length == 0 ? null : c, (UIntPtr)ca.Length, &native, &raw),
                    "group_client_connect_tls " + address);
            }
            return new Client((IntPtr)raw);
        }

        /// <summary>Connects, blocking until connected (at most 5 s).</summary>
        public Client(Transport transport, string address)
        {
            var addr = Interop.Utf8(address);
            group_client* raw;
            fixed (byte* a = Interop.NonEmpty(addr))
            {
                Interop.Check(NativeMethods.group_client_connect((uint)transport, a, (UIntPtr)addr.Length, &raw),
                    "group_client_connect " + address);
            }
            handle = (IntPtr)raw;
        }

        group_client* Raw
        {
            get
            {
                if (handle == IntPtr.Zero) throw new ObjectDisposedException("Client");
                return (group_client*)handle;
            }
        }

        /// <summary>Throws for a failed call, with the refusal's text when the server refused.</summary>
        void Check(group_result result, string call, ushort refusal)
        {
            if (result == group_result.GROUP_RESULT_OK) return;
            string text = null;
            if (result == group_result.GROUP_RESULT_REFUSED)
            {
                var buf = new byte[1024];
                UIntPtr written;
                fixed (byte* b = buf)
                {
                    if (NativeMethods.group_client_refusal_message(Raw, b, (UIntPtr)buf.Length, &written) ==
                        group_result.GROUP_RESULT_OK)
                        text = Interop.Utf8(b, (int)written);
                }
            }
            throw new GroupException(call, result, refusal, text);
        }

        /// <summary>How long the client may stay silent before its own thread sends a KeepAlive (default 3000 ms,
        /// 0: never). The session lives whether or not the game polls (a loading screen included).</summary>
        public void SetKeepAlive(uint intervalMs)
        {
            Check(NativeMethods.group_client_set_keep_alive(Raw, intervalMs), "group_client_set_keep_alive", 0);
        }

        /// <summary>Says Hello as uid; returns the 16-byte session ID.</summary>
        public byte[] Hello(string uid, string token = "")
        {
            var u = Interop.Utf8(uid);
            var t = Interop.Utf8(token);
            var sid = new byte[16];
            ushort refusal = 0;
            fixed (byte* up = Interop.NonEmpty(u))
            fixed (byte* tp = Interop.NonEmpty(t))
            fixed (byte* s = sid)
            {
                var r = NativeMethods.group_client_hello(Raw, up, (UIntPtr)u.Length, tp, (UIntPtr)t.Length, s, &refusal);
                Check(r, "group_client_hello", refusal);
            }
            return sid;
        }

        public GroupId Create(bool allowEmpty, bool join, ushort ttlS, ushort intervalMs = 0)
        {
            var id = new byte[Interop.GroupIdLength];
            ushort refusal = 0;
            fixed (byte* g = id)
            {
                var r = NativeMethods.group_client_create(Raw, allowEmpty ? (byte)1 : (byte)0, join ? (byte)1 : (byte)0,
                    ttlS, intervalMs, g, &refusal);
                Check(r, "group_client_create", refusal);
            }
            return new GroupId(id);
        }

        /// <summary>Joins a random group with room, or creates one when none has; returns its ID.</summary>
        public GroupId RandomJoin(bool allowEmpty, ushort ttlS, ushort intervalMs = 0, byte[] message = null)
        {
            message = message ?? new byte[0];
            var id = new byte[Interop.GroupIdLength];
            ushort refusal = 0;
            fixed (byte* m = Interop.NonEmpty(message))
            fixed (byte* g = id)
            {
                var r = NativeMethods.group_client_random_join(Raw, allowEmpty ? (byte)1 : (byte)0, ttlS, intervalMs, m,
                    (UIntPtr)message.Length, g, &refusal);
                Check(r, "group_client_random_join", refusal);
            }
            return new GroupId(id);
        }

        public void Join(GroupId group, byte[] message = null)
        {
            message = message ?? new byte[0];
            ushort refusal = 0;
            fixed (byte* g = group.Bytes)
            fixed (byte* m = Interop.NonEmpty(message))
            {
                Check(NativeMethods.group_client_join(Raw, g, m, (UIntPtr)message.Length, &refusal), "group_client_join", refusal);
            }
        }

        public void Leave(GroupId group, byte[] message = null)
        {
            message = message ?? new byte[0];
            ushort refusal = 0;
            fixed (byte* g = group.Bytes)
            fixed (byte* m = Interop.NonEmpty(message))
            {
                Check(NativeMethods.group_client_leave(Raw, g, m, (UIntPtr)message.Length, &refusal), "group_client_leave", refusal);
            }
        }

        /// <summary>Sends the server's own command (ver 2 and up) and returns its reply's payload.</summary>
        public byte[] Request(byte ver, ushort cmd, byte[] payload)
        {
            payload = payload ?? new byte[0];
            var reply = new byte[1024];
            UIntPtr length;
            ushort refusal = 0;
            fixed (byte* p = Interop.NonEmpty(payload))
            fixed (byte* r = reply)
            {
                var result = NativeMethods.group_client_request(Raw, ver, cmd, p, (UIntPtr)payload.Length, r,
                    (UIntPtr)reply.Length, &length, &refusal);
                if (result == group_result.GROUP_RESULT_OK) return Interop.Copy(r, (int)length);
                if (result != group_result.GROUP_RESULT_BUFFER_TOO_SMALL) Check(result, "group_client_request", refusal);
            }
            reply = new byte[(int)length];
            fixed (byte* r = Interop.NonEmpty(reply))
            {
                Check(NativeMethods.group_client_last_reply(Raw, r, (UIntPtr)reply.Length, &length), "group_client_last_reply", 0);
            }
            return reply;
        }

        /// <summary>Sends message to the other members; a refusal comes later as a Refused push.</summary>
        public void Broadcast(GroupId group, byte[] message, bool reliable = true)
        {
            message = message ?? new byte[0];
            fixed (byte* g = group.Bytes)
            fixed (byte* m = Interop.NonEmpty(message))
            {
                var r = NativeMethods.group_client_broadcast(Raw, g, m, (UIntPtr)message.Length, reliable ? (byte)1 : (byte)0);
                Check(r, "group_client_broadcast", 0);
            }
        }

        /// <summary>The next push within timeoutMs (0: no wait). False when none came; throws when the
        /// connection closed. Skips completions and connection events: a client that submits polls with
        /// Dispatch instead.</summary>
        public bool TryPoll(uint timeoutMs, out Push push)
        {
            for (;;)
            {
                group_push raw;
                UIntPtr needed;
                group_result r;
                fixed (byte* b = buffer)
                {
                    r = NativeMethods.group_client_poll_push(Raw, timeoutMs, &raw, b, (UIntPtr)buffer.Length, &needed);
                    if (r == group_result.GROUP_RESULT_OK)
                    {
                        var uidLen = (int)raw.uid_len;
                        push = new Push
                        {
                            Kind = (PushKind)raw.kind,
                            Group = GroupId.From(raw.group),
                            Uid = Interop.Utf8(b, uidLen),
                            Message = Interop.Copy(b + uidLen, (int)raw.message_len),
                            Code = raw.code,
                            Ver = raw.ver,
                            Cmd = raw.cmd,
                        };
                        return true;
                    }
                }
                if (r == group_result.GROUP_RESULT_BUFFER_TOO_SMALL)
                {
                    buffer = new byte[(int)needed];
                    continue;
                }
                push = new Push();
                if (r == group_result.GROUP_RESULT_NOT_FOUND) return false;
                Check(r, "group_client_poll_push", 0);
            }
        }

        ulong Submitted(group_result result, string call, ulong op, Action<ClientEvent> completed)
        {
            Check(result, call, 0);
            if (completed != null) completions[op] = completed;
            return op;
        }

        static byte Flag(bool value) { return value ? (byte)1 : (byte)0; }

        /// <summary>Queues Hello and returns its operation ID; the completion's Message is the session ID.
        /// timeoutMs 0: the client's request timeout. A full queue (1024 waiting) throws with GROUP_RESULT_BUSY.</summary>
        public ulong SubmitHello(string uid, string token = "", uint timeoutMs = 0, Action<ClientEvent> completed = null)
        {
            var u = Interop.Utf8(uid);
            var t = Interop.Utf8(token);
            ulong op;
            fixed (byte* up = Interop.NonEmpty(u))
            fixed (byte* tp = Interop.NonEmpty(t))
            {
                var r = NativeMethods.group_client_submit_hello(Raw, up, (UIntPtr)u.Length, tp, (UIntPtr)t.Length, timeoutMs, &op);
                return Submitted(r, "group_client_submit_hello", op, completed);
            }
        }

        /// <summary>Queues a Create; the completion's Group is the new group.</summary>
        public ulong SubmitCreate(bool allowEmpty, bool join, ushort ttlS, ushort intervalMs = 0, uint timeoutMs = 0,
            Action<ClientEvent> completed = null)
        {
            ulong op;
            var r = NativeMethods.group_client_submit_create(Raw, Flag(allowEmpty), Flag(join), ttlS, intervalMs, timeoutMs, &op);
            return Submitted(r, "group_client_submit_create", op, completed);
        }

        /// <summary>Queues a random join; the completion's Group is the group joined or created.</summary>
        public ulong SubmitRandomJoin(bool allowEmpty, ushort ttlS, ushort intervalMs = 0, byte[] message = null,
            uint timeoutMs = 0, Action<ClientEvent> completed = null)
        {
            message = message ?? new byte[0];
            ulong op;
            fixed (byte* m = Interop.NonEmpty(message))
            {
                var r = NativeMethods.group_client_submit_random_join(Raw, Flag(allowEmpty), ttlS, intervalMs, m,
                    (UIntPtr)message.Length, timeoutMs, &op);
                return Submitted(r, "group_client_submit_random_join", op, completed);
            }
        }

        public ulong SubmitJoin(GroupId group, byte[] message = null, uint timeoutMs = 0, Action<ClientEvent> completed = null)
        {
            message = message ?? new byte[0];
            ulong op;
            fixed (byte* g = group.Bytes)
            fixed (byte* m = Interop.NonEmpty(message))
            {
                var r = NativeMethods.group_client_submit_join(Raw, g, m, (UIntPtr)message.Length, timeoutMs, &op);
                return Submitted(r, "group_client_submit_join", op, completed);
            }
        }

        public ulong SubmitLeave(GroupId group, byte[] message = null, uint timeoutMs = 0, Action<ClientEvent> completed = null)
        {
            message = message ?? new byte[0];
            ulong op;
            fixed (byte* g = group.Bytes)
            fixed (byte* m = Interop.NonEmpty(message))
            {
                var r = NativeMethods.group_client_submit_leave(Raw, g, m, (UIntPtr)message.Length, timeoutMs, &op);
                return Submitted(r, "group_client_submit_leave", op, completed);
            }
        }

        /// <summary>Queues the server's own command (ver 2 and up); the completion's Message is the reply.</summary>
        public ulong SubmitRequest(byte ver, ushort cmd, byte[] payload, uint timeoutMs = 0, Action<ClientEvent> completed = null)
        {
            payload = payload ?? new byte[0];
            ulong op;
            fixed (byte* p = Interop.NonEmpty(payload))
            {
                var r = NativeMethods.group_client_submit_request(Raw, ver, cmd, p, (UIntPtr)payload.Length, timeoutMs, &op);
                return Submitted(r, "group_client_submit_request", op, completed);
            }
        }

        /// <summary>Raises every event that has arrived, on this thread, without waiting: call it once per frame
        /// (Unity: from Update). A completion goes to its Submit* callback when it has one, every other event to
        /// EventReceived. Returns how many events it raised. Allocates nothing per event (the handlers see
        /// segments of a reused buffer) except when a buffer must grow for a bigger message.</summary>
        public int Dispatch()
        {
            int raised = 0;
            for (;;)
            {
                group_client_event raw;
                UIntPtr needed;
                group_result r;
                fixed (byte* b = buffer)
                {
                    r = NativeMethods.group_client_poll_event(Raw, 0, &raw, b, (UIntPtr)buffer.Length, &needed);
                }
                if (r == group_result.GROUP_RESULT_BUFFER_TOO_SMALL)
                {
                    buffer = new byte[Math.Max((int)needed, buffer.Length * 2)];
                    continue;
                }
                if (r == group_result.GROUP_RESULT_NOT_FOUND || r == group_result.GROUP_RESULT_DISCONNECTED) return raised;
                Check(r, "group_client_poll_event", 0);
                Raise(&raw);
                raised++;
            }
        }

        void Raise(group_client_event* raw)
        {
            for (int i = 0; i < groupBuffer.Length; i++) groupBuffer[i] = raw->group[i];
            var uidLen = (int)raw->uid_len;
            var e = new ClientEvent
            {
                Kind = (ClientEventKind)raw->kind,
                Op = raw->op,
                Result = (group_result)raw->result,
                Reason = (DisconnectReason)raw->reason,
                Code = raw->code,
                Ver = raw->ver,
                Cmd = raw->cmd,
                GroupBytes = new ArraySegment<byte>(groupBuffer),
                UidBytes = new ArraySegment<byte>(buffer, 0, uidLen),
                Message = new ArraySegment<byte>(buffer, uidLen, (int)raw->message_len),
            };
            if (e.Kind == ClientEventKind.Connected) connected = true;
            if (e.Kind == ClientEventKind.Disconnected) connected = false;
            Action<ClientEvent> completed;
            if (e.Kind == ClientEventKind.Completed && completions.TryGetValue(e.Op, out completed))
            {
                completions.Remove(e.Op);
                completed(e);
                return;
            }
            var handler = EventReceived;
            if (handler != null) handler(e);
        }

        /// <summary>Says Fin, closes the connection, frees the client.</summary>
        public void Dispose()
        {
            var raw = handle;
            handle = IntPtr.Zero;
            if (raw != IntPtr.Zero) NativeMethods.group_client_free((group_client*)raw);
            GC.SuppressFinalize(this);
        }
    }
}
