// A game client over TCP, WebSocket or UDP: the C# wrapper of group_client_* (see Group.cs).

using System;
using Group.Native;

namespace Group
{
    public enum PushKind : uint { Joined = 1, Left = 2, Broadcast = 3, Offline = 4, Refused = 5 }

    /// <summary>Something the server sent without being asked: a join, a leave, one broadcast entry (an empty
    /// Uid is the server's announce), Offline, or a refused broadcast (Code).</summary>
    public struct Push
    {
        public PushKind Kind;
        public GroupId Group;
        public string Uid;
        public byte[] Message;
        public ushort Code;
    }

    /// <summary>One connection. Calls are blocking until the server answers (Broadcast until sent) and must not
    /// overlap: use a client from one thread at a time. Dispose says Fin and closes.</summary>
    public sealed unsafe class Client : IDisposable
    {
        IntPtr handle;
        byte[] buffer = new byte[512];

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

        /// <summary>How long the client may stay silent before TryPoll sends a KeepAlive for it (default 3000 ms,
        /// 0: never). A client that polls every frame stays connected with nothing else to send.</summary>
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
        /// connection closed.</summary>
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
