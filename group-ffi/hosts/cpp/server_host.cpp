// A C++17 host of the group server through group.hpp (RAII over the C ABI): a Before-join hook refusing
// "mallory", clients over TCP, WebSocket and UDP, create, join, a refused join, broadcast, leave, announce.
// Exits non-zero on the first failure. Built and run by group-ffi/tests/cpp_host.rs.
#include <unistd.h>  // engines include it first: it declares int group_member(gid_t)

#include <cstdio>
#include <cstring>
#include <string>

#include "group.hpp"

namespace {

int failures = 0;

void expect(bool ok, const char *what) {
    if (!ok) {
        std::fprintf(stderr, "cpp_host: %s failed\n", what);
        ++failures;
    }
}

// Refuses mallory, lets everyone else in; answers at once from the server's thread.
void before_join(void *userdata, const group_hook_call_t *call, std::uint64_t token) {
    const auto *server = static_cast<const group::Server *>(userdata);
    std::string uid(reinterpret_cast<const char *>(call->uid), call->uid_len);
    if (uid == "mallory") {
        server->next(token, 1001, "no mallory");
    } else {
        server->next(token);
    }
}

std::string addr(const group::Server &server, std::uint32_t transport) {
    return "127.0.0.1:" + std::to_string(server.port(transport));
}

// The next push of `kind`, skipping others.
std::optional<group::Push> next_of(group::Client &client, std::uint32_t kind) {
    for (int i = 0; i < 20; ++i) {
        auto push = client.poll(5000);
        if (!push) {
            return std::nullopt;
        }
        if (push->kind == kind) {
            return push;
        }
    }
    return std::nullopt;
}

}  // namespace

int main() {
    try {
        group::Server server(
            R"({"server": {"tcp": "127.0.0.1:0", "ws": "127.0.0.1:0", "udp": "127.0.0.1:0", "drainTimeout": 300},
                "mesh": {"bind": "127.0.0.1:0"}})");
        server.add_hook(GROUP_COMMAND_JOIN, GROUP_HOOK_BEFORE, before_join, &server);
        server.start();

        group::Client alice(GROUP_TRANSPORT_TCP, addr(server, GROUP_TRANSPORT_TCP));
        group::Client bob(GROUP_TRANSPORT_WS, addr(server, GROUP_TRANSPORT_WS));
        group::Client carol(GROUP_TRANSPORT_UDP, addr(server, GROUP_TRANSPORT_UDP));
        group::Client mallory(GROUP_TRANSPORT_TCP, addr(server, GROUP_TRANSPORT_TCP));
        alice.hello("alice");
        bob.hello("bob");
        carol.hello("carol");
        mallory.hello("mallory");

        group::GroupId group = alice.create(false, true, 60);
        bob.join(group, "hi");
        auto joined = next_of(alice, GROUP_PUSH_JOINED);
        expect(joined && joined->uid == "bob" && joined->message == "hi", "alice sees bob's join");
        carol.join(group);
        try {
            mallory.join(group);
            expect(false, "mallory is refused");
        } catch (const group::Error &e) {
            expect(e.result == GROUP_RESULT_REFUSED && e.refusal == 1001, "the hook's code");
        }
        expect(mallory.refusal_message() == "no mallory", "the hook's message");

        alice.broadcast(group, "hello all");
        for (group::Client *member : {&bob, &carol}) {
            auto push = next_of(*member, GROUP_PUSH_BROADCAST);
            expect(push && push->uid == "alice" && push->message == "hello all", "the broadcast arrives");
        }
        server.announce(group, "from the server");
        auto announce = next_of(bob, GROUP_PUSH_BROADCAST);
        expect(announce && announce->uid.empty() && announce->message == "from the server", "the announce");
        expect(server.broadcast_nowait(group, "alice", "no wait"), "a broadcast queued without waiting");
        auto quick = next_of(bob, GROUP_PUSH_BROADCAST);
        expect(quick && quick->uid == "alice" && quick->message == "no wait", "the queued broadcast arrives");
        carol.leave(group);
        expect(server.next(424242) == GROUP_RESULT_NOT_FOUND, "an unknown token is an error code");
        // A drain pushes Offline, waits (at most drainTimeout, 300 ms here: the clients stay), and stops.
        server.drain();
        auto offline = next_of(alice, GROUP_PUSH_OFFLINE);
        expect(offline.has_value(), "the drain told alice to go");
    } catch (const group::Error &e) {
        std::fprintf(stderr, "cpp_host: %s (refusal %u)\n", e.what(), static_cast<unsigned>(e.refusal));
        return 1;
    }
    if (failures == 0) {
        std::printf("cpp_host: ok\n");
    }
    return failures == 0 ? 0 : 1;
}
