// The idiomatic C# face of the group server's C ABI, for Unity (Mono or IL2CPP) and plain Mono hosts.
// It sits on the generated declarations in NativeMethods.g.cs (csbindgen) and adds what C# code expects:
// IDisposable handles, exceptions that carry the result and the protocol's refusal code and text, strings
// and byte arrays instead of pointers, C# delegates as hooks, and events. C# 7 only (Mono's mcs).
//
// Threads: hooks, custom commands, ticks, message callbacks and the EventRaised event run on the server's
// own threads (see docs/FFI.md). Unity's API is main-thread only: hand work over to the main thread, or
// poll events with TryPollEvent from Update(). Exceptions thrown by a C# callback never reach native code:
// a hook or command that throws is answered with code 1000 and the exception's message.

using System;
using System.Collections.Generic;
using System.Runtime.InteropServices;
using System.Text;
using Group.Native;

#if !UNITY_5_3_OR_NEWER
namespace AOT
{
    /// <summary>Marks a static method that native code calls back. Mono's full AOT and Unity's IL2CPP look
    /// for this attribute by name; Unity has its own (AOT.MonoPInvokeCallbackAttribute), other hosts get
    /// this one.</summary>
    [AttributeUsage(AttributeTargets.Method)]
    public sealed class MonoPInvokeCallbackAttribute : Attribute
    {
        public MonoPInvokeCallbackAttribute(Type type) { Type = type; }
        public Type Type { get; private set; }
    }
}
#endif

namespace Group
{
    using AOT;

    /// <summary>A call that failed: the library's result, and when the server refused, the protocol code
    /// (1xx create, 2xx join, 3xx leave, 4xx broadcast, 1000+ a hook's own) and its text.</summary>
    public sealed class GroupException : Exception
    {
        public GroupException(string call, group_result result, ushort refusal, string refusalMessage)
            : base(Describe(call, result, refusal, refusalMessage))
        {
            Result = result;
            Refusal = refusal;
            RefusalMessage = refusalMessage ?? "";
        }

        public group_result Result { get; private set; }
        public ushort Refusal { get; private set; }
        public string RefusalMessage { get; private set; }

        static string Describe(string call, group_result result, ushort refusal, string text)
        {
            var what = call + ": " + Interop.ResultMessage(result);
            if (result == group_result.GROUP_RESULT_REFUSED)
            {
                what += " (code " + refusal + (string.IsNullOrEmpty(text) ? ")" : ": " + text + ")");
            }
            return what;
        }
    }

    /// <summary>Small helpers around the generated declarations.</summary>
    internal static unsafe class Interop
    {
        public const int GroupIdLength = 52;
        public const int MaxUidLength = 64;

        public static string ResultMessage(group_result result)
        {
            var buf = new byte[256];
            UIntPtr written;
            fixed (byte* p = buf)
            {
                NativeMethods.group_result_message((uint)result, p, (UIntPtr)buf.Length, &written);
            }
            return Encoding.UTF8.GetString(buf, 0, (int)written);
        }

        public static void Check(group_result result, string call, ushort refusal = 0, string text = null)
        {
            if (result != group_result.GROUP_RESULT_OK)
            {
                throw new GroupException(call, result, refusal, text);
            }
        }

        public static byte[] Utf8(string text) { return Encoding.UTF8.GetBytes(text ?? ""); }

        public static string Utf8(byte* p, int len) { return len == 0 ? "" : new string((sbyte*)p, 0, len, Encoding.UTF8); }

        public static byte[] Copy(byte* p, int len)
        {
            var bytes = new byte[len];
            if (len > 0) Marshal.Copy((IntPtr)p, bytes, 0, len);
            return bytes;
        }

        /// <summary>An empty array has no address to pin: give native code a valid pointer anyway.</summary>
        public static byte[] NonEmpty(byte[] bytes) { return bytes == null || bytes.Length == 0 ? new byte[1] : bytes; }
    }

    public enum LogLevel : uint { Off = 0, Error = 1, Warn = 2, Info = 3, Debug = 4, Trace = 5 }

    /// <summary>Where the library's log lines go: nowhere until SetCallback (the library never writes to
    /// stderr). The callback runs on the library's threads; Unity's Debug.Log may be called from any thread
    /// (Group.Unity.GroupRunner.RouteLogsToConsole does exactly that).</summary>
    public static unsafe class Log
    {
        static Action<LogLevel, string> callback;
        // Kept alive for as long as native code may call it.
        static readonly NativeMethods.group_set_log_callback_callback_delegate native = OnLine;

        /// <summary>Sends lines up to maxLevel to callback; null (or LogLevel.Off) turns logging off. Applies to
        /// every server and client in the process.</summary>
        public static void SetCallback(Action<LogLevel, string> lines, LogLevel maxLevel)
        {
            callback = lines;
            var r = lines == null
                ? NativeMethods.group_set_log_callback(null, 0, null)
                : NativeMethods.group_set_log_callback(native, (uint)maxLevel, null);
            Interop.Check(r, "group_set_log_callback");
        }

        [MonoPInvokeCallback(typeof(NativeMethods.group_set_log_callback_callback_delegate))]
        static void OnLine(void* userdata, uint level, byte* message, UIntPtr len)
        {
            var lines = callback;
            if (lines == null) return;
            try { lines((LogLevel)level, Interop.Utf8(message, (int)len)); }
            catch (Exception) { }
        }
    }

    /// <summary>A group's 52-byte ID (printable ASCII).</summary>
    public struct GroupId : IEquatable<GroupId>
    {
        readonly byte[] bytes;

        public GroupId(byte[] bytes)
        {
            if (bytes == null || bytes.Length != Interop.GroupIdLength)
                throw new ArgumentException("a group ID is 52 bytes");
            this.bytes = (byte[])bytes.Clone();
        }

        internal static unsafe GroupId From(byte* p) { return new GroupId(Interop.Copy(p, Interop.GroupIdLength)); }

        internal byte[] Bytes { get { return bytes ?? new byte[Interop.GroupIdLength]; } }

        public byte[] ToArray() { return (byte[])Bytes.Clone(); }
        public override string ToString() { return Encoding.ASCII.GetString(Bytes); }
        public bool Equals(GroupId other) { return ToString() == other.ToString(); }
        public override bool Equals(object obj) { return obj is GroupId && Equals((GroupId)obj); }
        public override int GetHashCode() { return ToString().GetHashCode(); }
    }

    public enum Transport : uint { Tcp = 1, Udp = 2, WebSocket = 3, Mesh = 4 }
    public enum HookCommand : uint { Create = 1, Join = 2, Leave = 3, Broadcast = 4, Custom = 5 }
    public enum HookPhase : uint { Before = 1, After = 2 }
    public enum MessageKind : uint { Discard = 1, Rejoin = 2 }

    /// <summary>A hooked request or a custom command. Answer its Token with Server.Next (or Server.Reply for a
    /// custom command), at once or later, from any thread.</summary>
    public sealed class HookCall
    {
        public HookCommand Command;
        public byte Ver;
        public ushort Cmd;
        public string Uid;
        public byte[] Sid;
        /// <summary>The group the request names; null for create (Before).</summary>
        public GroupId? Group;
        /// <summary>The request's payload as the client sent it (docs/PROTOCOL.md).</summary>
        public byte[] Payload;
        public ulong Token;
    }

    public enum ServerEventKind : uint { SessionOpened = 1, SessionDiscarded = 2, GroupDeleted = 3, Tick = 4, BroadcastRefused = 5 }

    /// <summary>Something that happened on the server. Uid and Sid are set for session events, Group for
    /// group events; Reason (1 Fin, 2 disconnected, 3 idle, 4 replaced, 5 protocol violation) for discards,
    /// the protocol code for BroadcastRefused (which has Group and Uid).</summary>
    public struct ServerEvent
    {
        public ServerEventKind Kind;
        public string Uid;
        public byte[] Sid;
        public GroupId? Group;
        public uint Reason;

        internal static unsafe ServerEvent From(group_event* e, byte* uid)
        {
            var kind = (ServerEventKind)e->kind;
            var hasGroup = kind == ServerEventKind.GroupDeleted || kind == ServerEventKind.Tick ||
                           kind == ServerEventKind.BroadcastRefused;
            return new ServerEvent
            {
                Kind = kind,
                Uid = Interop.Utf8(uid, (int)e->uid_len),
                Sid = Interop.Copy(e->sid, 16),
                Group = hasGroup ? GroupId.From(e->group) : (GroupId?)null,
                Reason = e->reason,
            };
        }
    }

    /// <summary>A member in a snapshot.</summary>
    public struct Member
    {
        public string Uid;
        public byte[] Sid;
        /// <summary>"ip:port": the mesh address of the node the member is connected to.</summary>
        public string Node;
    }

    /// <summary>A group as this node sees it.</summary>
    public sealed class GroupSnapshot
    {
        public bool AllowEmpty;
        public bool IsStatic;
        /// <summary>"ip:port" of the owning node; null for a static group.</summary>
        public string Owner;
        public ulong TtlMs;
        public ulong IntervalMs;
        public int MemberNodeCount;
        public uint Epoch;
        public ulong Seq;
        public Member[] Members;
    }
}
