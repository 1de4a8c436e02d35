// A C# (Mono, C# 7) host of the group server through the wrapper in group-ffi/csharp: a Before-join hook
// written in C# refuses "mallory", and an After-join hook stops the rest of its chain for "carol"; clients over TCP, WebSocket and UDP create, join (mallory is refused with
// the hook's code and message), broadcast and leave; the server API creates a group, refuses a join, lists a
// user's groups, snapshots a group, and ticks a group that announces to its members; a custom command
// written in C# answers a client; events arrive both by polling and by the EventRaised event. Exits non-zero on the first thing that is not as expected.

using System;
using System.Linq;
using System.Text;
using System.Threading;
using Group;
using Group.Native;

static class ServerHost
{
    static void Expect(bool ok, string what)
    {
        if (!ok) throw new Exception("expected: " + what);
    }

    static byte[] Bytes(string text) { return Encoding.UTF8.GetBytes(text); }
    static string Text(byte[] bytes) { return Encoding.UTF8.GetString(bytes); }

    // Waits for the next push of kind (skipping others) and returns it.
    static Push NextOf(Client client, PushKind kind)
    {
        for (var tries = 0; tries < 20; tries++)
        {
            Push push;
            if (!client.TryPoll(5000, out push)) break;
            if (push.Kind == kind) return push;
        }
        throw new Exception("no push of kind " + kind + " came");
    }

    static Client Connect(Server server, Transport transport, string uid)
    {
        var client = new Client(transport, "127.0.0.1:" + server.Port(transport));
        client.Hello(uid);
        return client;
    }

    static void Run()
    {
        var version = string.Format("{0}.{1}.{2}", NativeMethods.GROUP_VERSION_MAJOR,
            NativeMethods.GROUP_VERSION_MINOR, NativeMethods.GROUP_VERSION_PATCH);
        unsafe
        {
            var native = new string((sbyte*)NativeMethods.group_version());
            Expect(native == version, "the library's version matches the bindings' (" + native + ")");
        }

        try
        {
            new Server("{\"group\": {\"relayLimit\": 0}}").Dispose();
            Expect(false, "a bad configuration is refused");
        }
        catch (GroupException e)
        {
            Expect(e.Result == group_result.GROUP_RESULT_INVALID_CONFIG, "INVALID_CONFIG");
            Expect(e.Message.Contains("group.relayLimit"), "the error names the key: " + e.Message);
        }

        try
        {
            Client.ConnectTlsAsync(Transport.Udp, "127.0.0.1:1", "game.example").Dispose();
            Expect(false, "TLS over UDP is refused");
        }
        catch (GroupException e)
        {
            Expect(e.Result == group_result.GROUP_RESULT_INVALID_ARGUMENT, "ConnectTlsAsync refuses UDP");
        }

        // The allocation measurement below sends 2200 broadcasts at once: above the default
        // limits.maxRequestsPerSecond (1000), which would refuse the rest with code 16.
        const string config = "{\"server\": {\"tcp\": \"127.0.0.1:0\", \"ws\": \"127.0.0.1:0\", \"udp\": \"127.0.0.1:0\"}," +
                              " \"limits\": {\"maxRequestsPerSecond\": 100000}," +
                              " \"mesh\": {\"bind\": \"127.0.0.1:0\"}}";
        var logLines = 0;
        Log.SetCallback((level, line) => Interlocked.Increment(ref logLines), LogLevel.Trace);
        using (var server = new Server(config, 2))
        {
            var hooked = 0;
            server.AddHook(HookCommand.Join, HookPhase.Before, call =>
            {
                Interlocked.Increment(ref hooked);
                if (call.Uid == "mallory") server.Next(call.Token, 1001, "no mallory");
                else server.Next(call.Token);
            });
            // Two After-join hooks: the first answers carol's join with an error, which stops the rest of the
            // chain (Diarkis's next(err)); carol is a member all the same.
            int afterFirstCarol = 0, afterSecondBob = 0, afterSecondCarol = 0;
            server.AddHook(HookCommand.Join, HookPhase.After, call =>
            {
                if (call.Uid != "carol") { server.Next(call.Token); return; }
                // A code below 1000 is the server's own: refused at the call.
                try { server.Next(call.Token, 999, "not mine"); }
                catch (GroupException) { Interlocked.Exchange(ref afterFirstCarol, 1); }
                server.Next(call.Token, 1005, "after failed");
            });
            server.AddHook(HookCommand.Join, HookPhase.After, call =>
            {
                if (call.Uid == "bob") Interlocked.Exchange(ref afterSecondBob, 1);
                if (call.Uid == "carol") Interlocked.Exchange(ref afterSecondCarol, 1);
                server.Next(call.Token);
            });
            server.SetMessage(MessageKind.Discard, (group, uid, sid) => Bytes("gone:" + uid));
            // The server's own command 2/7, written in C#: answers with the payload reversed.
            server.AddCommand(2, 7, call => server.Reply(call.Token, call.Payload.Reverse().ToArray()));
            var raised = 0;
            server.EventRaised += e => { if (e.Kind == ServerEventKind.SessionOpened) Interlocked.Increment(ref raised); };
            server.Start();
            Expect(server.Port(Transport.Tcp) != 0, "a real port");

            using (var alice = Connect(server, Transport.Tcp, "alice"))
            using (var bob = Connect(server, Transport.WebSocket, "bob"))
            using (var carol = Connect(server, Transport.Udp, "carol"))
            using (var mallory = Connect(server, Transport.Tcp, "mallory"))
            {
                Expect(Text(alice.Request(2, 7, Bytes("abc"))) == "cba", "the C# command answered");
                var big = new string('x', 3000) + "y";
                Expect(Text(alice.Request(2, 7, Bytes(big))) == "y" + new string('x', 3000), "a reply larger than 1 KiB");
                try
                {
                    alice.Request(2, 8, null);
                    Expect(false, "a command without a handler is refused");
                }
                catch (GroupException e)
                {
                    Expect(e.Refusal == 9, "refused with code 9 (NO_HANDLER)");
                }

                var group = alice.Create(false, true, 60);
                bob.Join(group, Bytes("hi"));
                var joined = NextOf(alice, PushKind.Joined);
                Expect(joined.Uid == "bob" && Text(joined.Message) == "hi", "alice sees bob's join");
                carol.Join(group);
                try
                {
                    mallory.Join(group);
                    Expect(false, "mallory is refused");
                }
                catch (GroupException e)
                {
                    Expect(e.Result == group_result.GROUP_RESULT_REFUSED && e.Refusal == 1001, "the hook's code");
                    Expect(e.RefusalMessage == "no mallory", "the hook's message: " + e.RefusalMessage);
                }
                Expect(hooked == 3, "the C# hook ran for every join");

                alice.Broadcast(group, Bytes("hello all"));
                foreach (var member in new[] { bob, carol })
                {
                    var push = NextOf(member, PushKind.Broadcast);
                    Expect(push.Uid == "alice" && Text(push.Message) == "hello all", "the broadcast arrives");
                }
                carol.Leave(group, Bytes("bye"));
                var left = NextOf(alice, PushKind.Left);
                Expect(left.Uid == "carol" && Text(left.Message) == "bye", "alice sees carol leave");
                // carol's leave was handled after her join's After chain, on her connection.
                Expect(Volatile.Read(ref afterFirstCarol) == 1, "the first After hook ran for carol; Next refused code 999");
                Expect(Volatile.Read(ref afterSecondCarol) == 0, "an After hook's error stops the chain");
                Expect(SpinWait.SpinUntil(() => Volatile.Read(ref afterSecondBob) == 1, 5000),
                    "the second After hook ran for bob");

                // The server API.
                var ids = server.GroupIds("alice");
                Expect(ids != null && ids.Length == 1 && ids[0].Equals(group), "alice's groups");
                Expect(server.GroupIds("nobody") == null, "no session, no list");
                var snapshot = server.Snapshot(group);
                Expect(snapshot != null && snapshot.Members.Select(m => m.Uid).SequenceEqual(new[] { "alice", "bob" }),
                    "the snapshot lists alice and bob");
                Expect(snapshot.Owner == "127.0.0.1:" + server.Port(Transport.Mesh), "owned by this node");
                Expect(snapshot.Members.All(m => m.Node == snapshot.Owner), "each member's node");
                var nodes = server.MemberNodes(group);
                Expect(nodes != null && nodes.SequenceEqual(new[] { snapshot.Owner }), "the member nodes");
                Expect(server.MemberNodes(new GroupId(Encoding.ASCII.GetBytes(new string('z', 52)))) == null, "no such group");
                Expect(server.PushToUser("bob", 2, 9, Bytes("direct")), "pushed to bob");
                Expect(!server.PushToUser("nobody", 2, 9, null), "no session, no push");
                var custom = NextOf(bob, PushKind.Custom);
                Expect(custom.Ver == 2 && custom.Cmd == 9 && Text(custom.Message) == "direct", "bob's custom push");
                var other = server.NewGroup(null, true, false, 60);
                try
                {
                    server.Join(other, "nobody");
                    Expect(false, "joining a user with no session is refused");
                }
                catch (GroupException e)
                {
                    Expect(e.Refusal == 6, "refused with code 6 (UNKNOWN_USER)");
                }
                server.Join(other, "alice");
                Expect(server.LatestGroup("alice").Value.Equals(other), "the latest group");

                // A broadcast that does not wait arrives; one from a user with no session becomes an event.
                Expect(server.BroadcastNoWait(group, "alice", Bytes("no wait")), "queued");
                var quick = NextOf(bob, PushKind.Broadcast);
                Expect(quick.Uid == "alice" && Text(quick.Message) == "no wait", "the queued broadcast arrives");
                Expect(server.BroadcastNoWait(group, "nobody", Bytes("x")), "queued, refused later");

                // A tick written in C# announces from the tick thread.
                server.SetTick(group, 1000, g => server.Announce(g, Bytes("tick")));
                var tick = NextOf(bob, PushKind.Broadcast);
                Expect(tick.Uid == "" && Text(tick.Message) == "tick", "the tick's announce reaches bob");
                server.SetTick(group, 0, null);

                // Bob goes: alice hears the discard message produced in C#.
                bob.Dispose();
                var gone = NextOf(alice, PushKind.Left);
                Expect(gone.Uid == "bob" && Text(gone.Message) == "gone:bob", "the discard message");
            }

            var opened = 0;
            var sawAlice = false;
            var refused = false;
            ServerEvent e2;
            for (var waited = 0; (opened < 4 || !refused) && waited < 10000; )
            {
                if (!server.TryPollEvent(out e2)) { Thread.Sleep(10); waited += 10; continue; }
                refused |= e2.Kind == ServerEventKind.BroadcastRefused && e2.Uid == "nobody" && e2.Reason == 6;
                if (e2.Kind != ServerEventKind.SessionOpened) continue;
                opened++;
                sawAlice |= e2.Uid == "alice";
            }
            Expect(opened == 4 && sawAlice, "four sessions opened, alice's among them (polled)");
            Expect(refused, "the queued broadcast from nobody was refused with code 6 (an event)");
            Expect(raised == 4, "four sessions opened (raised)");
            Expect(!server.Next(12345), "an unknown token is refused, not a crash");
            GameLoop(server);
            Log.SetCallback(null, LogLevel.Off);
            Expect(logLines > 0, "the library's log lines reach C# (" + logLines + ")");
            server.Stop();
        }
    }

    // Runs frames (Dispatch on each client, then the rest of a 1 ms frame) until done() or 10 s.
    static void Frames(Func<bool> done, params Client[] clients)
    {
        for (var frame = 0; frame < 10000 && !done(); frame++)
        {
            foreach (var client in clients) client.Dispatch();
            Thread.Sleep(1);
        }
    }

    // Two clients as a Unity game drives them: ConnectAsync, Submit* with completion callbacks, and Dispatch
    // once per frame on this (the "main") thread. Then a burst of broadcasts is dispatched while the bytes
    // this thread allocates are counted: dispatching a push allocates nothing.
    static void GameLoop(Server server)
    {
        var options = new ClientOptions { RequestTimeoutMs = 20000 };
        using (var host = Client.ConnectAsync(Transport.Tcp, "127.0.0.1:" + server.Port(Transport.Tcp), options))
        using (var guest = Client.ConnectAsync(Transport.WebSocket, "127.0.0.1:" + server.Port(Transport.WebSocket), options))
        {
            GroupId? group = null;
            var joined = false;
            host.SubmitHello("host");
            host.SubmitCreate(false, true, 60, 0, 0, e =>
            {
                Expect(e.Succeeded, "the game-loop create succeeds");
                group = e.Group;
            });
            guest.SubmitHello("guest", "", 0, e => Expect(e.Succeeded && e.Message.Count == 16, "Hello gives the sid"));
            Frames(() => group.HasValue && host.IsConnected && guest.IsConnected, host, guest);
            Expect(group.HasValue, "the create completed through Dispatch");
            guest.SubmitJoin(group.Value, Bytes("guest here"), 0, e => joined = e.Succeeded);
            var heard = "";
            host.EventReceived += e => { if (e.Kind == ClientEventKind.Joined) heard = e.Uid + ":" + e.MessageText; };
            Frames(() => joined && heard != "", host, guest);
            Expect(joined && heard == "guest:guest here", "the join completed and the host heard it");

            ulong refusedOp = 0;
            ushort refusedCode = 0;
            refusedOp = guest.SubmitRequest(2, 77, Bytes("?"), 2000, e => refusedCode = e.Code);
            Frames(() => refusedCode != 0, guest);
            Expect(refusedOp != 0 && refusedCode == 9, "an unknown command completes refused with code 9");

            // The allocation measurement: pushes of 64 bytes, all sent before the window opens.
            const int Warm = 200, Measured = 2000;
            var payload = new byte[64];
            var received = 0;
            var bytes = 0L;
            var inGroup = true;
            guest.EventReceived += e =>
            {
                if (e.Kind != ClientEventKind.Broadcast) return;
                received++;
                bytes += e.Message.Count;
                inGroup &= e.IsGroup(group.Value);
            };
            for (var i = 0; i < Warm; i++) host.Broadcast(group.Value, payload);
            Frames(() => received >= Warm, guest);
            for (var i = 0; i < Measured; i++) host.Broadcast(group.Value, payload);
            var before = GC.GetAllocatedBytesForCurrentThread();
            for (var frame = 0; frame < 10000 && received < Warm + Measured; frame++)
            {
                guest.Dispatch();
                if (received < Warm + Measured) Thread.Sleep(1);
            }
            var allocated = GC.GetAllocatedBytesForCurrentThread() - before;
            Expect(received == Warm + Measured && bytes == 64L * received && inGroup, "every broadcast dispatched");
            Console.WriteLine("csharp_host: Dispatch allocated " + allocated + " bytes for " + Measured + " pushes");
            Expect(allocated == 0, "dispatching pushes allocates nothing (" + allocated + " bytes)");
        }
    }

    // TLS for real: a server with the certificate the test made (GROUP_TEST_TLS_DIR: cert.pem, key.pem,
    // self-signed for game.example), and clients that trust it say Hello over TCP and wss.
    static void TlsClients()
    {
        var dir = Environment.GetEnvironmentVariable("GROUP_TEST_TLS_DIR");
        if (dir == null)
        {
            Console.WriteLine("csharp_host: GROUP_TEST_TLS_DIR not set: TLS not tried");
            return;
        }
        var cert = System.IO.Path.Combine(dir, "cert.pem");
        var key = System.IO.Path.Combine(dir, "key.pem");
        var config = "{\"server\": {\"tcp\": \"127.0.0.1:0\", \"ws\": \"127.0.0.1:0\", \"udp\": null}," +
                     " \"mesh\": {\"bind\": \"127.0.0.1:0\"}," +
                     " \"tls\": {\"cert\": \"" + cert + "\", \"key\": \"" + key + "\"}}";
        using (var server = new Server(config))
        {
            server.Start();
            var ca = System.IO.File.ReadAllText(cert);
            foreach (var transport in new[] { Transport.Tcp, Transport.WebSocket })
            {
                using (var client = Client.ConnectTlsAsync(transport, "127.0.0.1:" + server.Port(transport), "game.example", ca))
                {
                    var sid = client.Hello(transport == Transport.Tcp ? "tls-tcp" : "tls-wss");
                    Expect(sid.Length == 16, "a session over TLS (" + transport + ")");
                }
            }
            using (var stranger = Client.ConnectTlsAsync(Transport.Tcp, "127.0.0.1:" + server.Port(Transport.Tcp), "game.example"))
            {
                try
                {
                    stranger.Hello("stranger");
                    Expect(false, "a client that does not trust the certificate gets no session");
                }
                catch (GroupException)
                {
                }
            }
        }
        Console.WriteLine("csharp_host: tls ok");
    }

    static int Main()
    {
        try
        {
            Run();
            TlsClients();
        }
        catch (Exception e)
        {
            Console.Error.WriteLine("csharp_host: " + e);
            return 1;
        }
        Console.WriteLine("csharp_host: ok");
        return 0;
    }
}
