// A C++17 host of the group server through group.hpp (RAII over the C ABI), built as an Unreal module is:
// -fno-exceptions -fno-rtti -Wshadow, with <unistd.h> and engine-style macros before the header. A
// Before-join hook refusing "mallory", clients over TCP, WebSocket and UDP, create, join, a refused join,
// broadcast, leave, announce, drain. Exits non-zero on the first failure. Built and run by
// group-ffi/tests/hosts.rs.
#include <unistd.h>  // engines include it first: it declares int group_member(gid_t)

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

// Unreal's assertion macros, defined before the wrapper as an engine module has them.
#define check(expr) ((void)(expr))
#define verify(expr) ((void)(expr))
#define ensure(expr) ((void)(expr))

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "group.hpp"

namespace {

int failures = 0;

void expect(bool ok, const char *what) {
    if (!ok) {
        std::fprintf(stderr, "cpp_host: %s failed\n", what);
        ++failures;
    }
}

// The value of a call that must succeed; a failure ends the host with the library's message.
template <class T>
T &must(group::Result<T> &result, const char *what) {
    if (!result) {
        std::fprintf(stderr, "cpp_host: %s: %s (refusal %u)\n", what, result.error().message().c_str(),
                     static_cast<unsigned>(result.error().refusal));
        std::exit(1);
    }
    return result.value();
}

template <class T>
T must(group::Result<T> &&result, const char *what) {
    return std::move(must(result, what));
}

// Refuses mallory, lets everyone else in; answers at once from the server's thread.
void before_join(void *userdata, const group_hook_call_t *call, std::uint64_t token) {
    const auto *server = static_cast<const group::Server *>(userdata);
    std::string uid(reinterpret_cast<const char *>(call->uid), call->uid_len);
    group::Status answered = uid == "mallory" ? server->next(token, 1001, "no mallory") : server->next(token);
    expect(answered.ok(), "the hook's answer");
}

std::string addr(const group::Server &server, std::uint32_t transport) {
    return "127.0.0.1:" + std::to_string(must(server.port(transport), "port"));
}

// The next push of `kind`, skipping others.
std::optional<group::Push> next_of(group::Client &client, std::uint32_t kind) {
    for (int i = 0; i < 20; ++i) {
        std::optional<group::Push> push = must(client.poll(5000), "poll");
        if (!push) {
            return std::nullopt;
        }
        if (push->kind == kind) {
            return push;
        }
    }
    return std::nullopt;
}

// A game loop's frame: dispatch what arrived, then "render" for a millisecond. Runs until `done()` or
// five seconds of frames.
template <class Handler, class Done>
void frames(group::Client &client, Handler &&handler, Done &&done) {
    for (int frame = 0; frame < 5000 && !done(); ++frame) {
        must(client.dispatch(handler), "dispatch");
        usleep(1000);
    }
}

// A member that never reads: a raw TCP connection that said Hello as `uid` (and read the answer); -1 on failure.
int raw_member(std::uint16_t port, const std::string &uid) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(port);
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, reinterpret_cast<sockaddr *>(&address), sizeof address) != 0) {
        return -1;
    }
    // Hello (ver 0, cmd 4): uid length, uid, an empty token.
    std::string frame{'\0', '\0', '\4', '\0', '\0', '\0', static_cast<char>(uid.size() + 3),
                      static_cast<char>(uid.size())};
    frame += uid;
    frame += std::string(2, '\0');
    char answer[8 + 16];
    std::size_t got = 0;
    if (write(fd, frame.data(), frame.size()) != static_cast<ssize_t>(frame.size())) {
        return -1;
    }
    while (got < sizeof answer) {
        ssize_t n = read(fd, answer + got, sizeof answer - got);
        if (n <= 0) {
            return -1;
        }
        got += static_cast<std::size_t>(n);
    }
    return fd;
}

// Members vanish (half of them with a reset) while 8 KB announces are written to them, in a process that
// keeps the default SIGPIPE disposition: a library write raising SIGPIPE on a thread that does not block it
// would end this host with status 141.
void vanishing_members(const group::Server &server) {
    std::uint16_t port = must(server.port(GROUP_TRANSPORT_TCP), "port");
    group::GroupId group = must(server.new_group("", true, false, 60), "new_group");
    std::vector<int> members;
    for (int i = 0; i < 20; ++i) {
        std::string uid = "vanish" + std::to_string(i);
        int fd = raw_member(port, uid);
        expect(fd >= 0, "a raw member connects");
        must(server.join(group, uid), "a raw member joins");
        members.push_back(fd);
    }
    std::string payload(8192, 'x');
    std::size_t closed = 0;
    for (int round = 0; round < 1000; ++round) {
        group::Status announced = server.announce(group, payload);
        expect(announced.ok() || closed == members.size(), "an 8 KB announce");
        if (round % 45 == 44 && closed < members.size()) {
            if (closed % 2 == 0) {
                linger reset{1, 0};
                setsockopt(members[closed], SOL_SOCKET, SO_LINGER, &reset, sizeof reset);
            }
            close(members[closed++]);
        }
    }
    for (; closed < members.size(); ++closed) {
        close(members[closed]);
    }
    std::printf("cpp_host: survived %zu members vanishing under 1000 announces of 8 KB\n", members.size());
}

// The whole of a small text file, or "" if it cannot be read (no exceptions here).
std::string read_file(const std::string &path) {
    std::string text;
    std::FILE *file = std::fopen(path.c_str(), "rb");
    if (file == nullptr) {
        return text;
    }
    char buffer[4096];
    std::size_t got = 0;
    while ((got = std::fread(buffer, 1, sizeof buffer, file)) > 0) {
        text.append(buffer, got);
    }
    std::fclose(file);
    return text;
}

// TLS for real: a second server with the certificate the test made (GROUP_TEST_TLS_DIR: cert.pem, key.pem,
// self-signed for game.example), and clients that trust it say Hello over TCP and wss.
void tls_clients() {
    const char *dir = std::getenv("GROUP_TEST_TLS_DIR");
    if (dir == nullptr) {
        std::printf("cpp_host: GROUP_TEST_TLS_DIR not set: TLS not tried\n");
        return;
    }
    std::string cert = std::string(dir) + "/cert.pem";
    std::string key = std::string(dir) + "/key.pem";
    group::Server server = must(group::Server::create(
        R"({"server": {"tcp": "127.0.0.1:0", "ws": "127.0.0.1:0", "udp": null}, "mesh": {"bind": "127.0.0.1:0"},
            "tls": {"cert": ")" + cert + R"(", "key": ")" + key + R"("}})"), "create the TLS server");
    must(server.start(), "start the TLS server");
    std::string ca = read_file(cert);
    expect(!ca.empty(), "the certificate reads");
    for (std::uint32_t transport : {GROUP_TRANSPORT_TCP, GROUP_TRANSPORT_WS}) {
        group::Client client =
            must(group::Client::connect_tls(transport, addr(server, transport), "game.example", ca), "connect_tls");
        must(client.hello(transport == GROUP_TRANSPORT_TCP ? "tls-tcp" : "tls-wss"), "hello over TLS");
    }
    auto untrusted = group::Client::connect_tls(GROUP_TRANSPORT_TCP, addr(server, GROUP_TRANSPORT_TCP), "game.example");
    expect(!untrusted || !untrusted.value().hello("stranger").ok(), "a client that does not trust the certificate gets no session");
    std::printf("cpp_host: tls ok\n");
}

group::Client connected(const group::Server &server, std::uint32_t transport, const char *uid) {
    group::Client client = must(group::Client::connect(transport, addr(server, transport)), "connect");
    must(client.hello(uid), "hello");
    return client;
}

}  // namespace

int main() {
    auto made = group::Server::create(
        R"({"server": {"tcp": "127.0.0.1:0", "ws": "127.0.0.1:0", "udp": "127.0.0.1:0", "drainTimeout": 300},
            "mesh": {"bind": "127.0.0.1:0"}})");
    group::Server &server = must(made, "create the server");
    must(server.add_hook(GROUP_COMMAND_JOIN, GROUP_HOOK_BEFORE, before_join, &server), "add_hook");
    must(server.start(), "start");

    group::Client alice = connected(server, GROUP_TRANSPORT_TCP, "alice");
    group::Client bob = connected(server, GROUP_TRANSPORT_WS, "bob");
    group::Client carol = connected(server, GROUP_TRANSPORT_UDP, "carol");
    group::Client mallory = connected(server, GROUP_TRANSPORT_TCP, "mallory");

    group::GroupId group = must(alice.create(false, true, 60), "create");
    must(bob.join(group, "hi"), "bob joins");
    auto joined = next_of(alice, GROUP_PUSH_JOINED);
    expect(joined && joined->uid == "bob" && joined->message == "hi", "alice sees bob's join");
    must(carol.join(group), "carol joins");
    group::Status refused = mallory.join(group);
    expect(!refused && refused.error().result == GROUP_RESULT_REFUSED && refused.error().refusal == 1001,
           "the hook's code");
    expect(must(mallory.refusal_message(), "refusal message") == "no mallory", "the hook's message");

    must(alice.broadcast(group, "hello all"), "broadcast");
    for (group::Client *member : {&bob, &carol}) {
        auto push = next_of(*member, GROUP_PUSH_BROADCAST);
        expect(push && push->uid == "alice" && push->message == "hello all", "the broadcast arrives");
    }
    must(server.announce(group, "from the server"), "announce");
    auto announce = next_of(bob, GROUP_PUSH_BROADCAST);
    expect(announce && announce->uid.empty() && announce->message == "from the server", "the announce");
    expect(must(server.broadcast_nowait(group, "alice", "no wait"), "nowait"), "a broadcast queued without waiting");
    auto quick = next_of(bob, GROUP_PUSH_BROADCAST);
    expect(quick && quick->uid == "alice" && quick->message == "no wait", "the queued broadcast arrives");

    // A client as a game loop drives it: nothing below waits on the network.
    group::Client dave = must(group::Client::connect_async(GROUP_TRANSPORT_TCP, addr(server, GROUP_TRANSPORT_TCP)),
                              "connect_async");
    std::uint64_t hello = must(dave.submit_hello("dave"), "submit_hello");
    std::uint64_t join = must(dave.submit_join(group, "dave is here"), "submit_join");
    bool up = false;
    int completed = 0;
    std::string from_alice;
    auto on_event = [&](const group::ClientEvent &event) {
        if (event.kind == GROUP_CLIENT_EVENT_CONNECTED) {
            up = true;
        } else if (event.kind == GROUP_CLIENT_EVENT_COMPLETED) {
            expect(event.result == GROUP_RESULT_OK, "a completion succeeds");
            expect(event.op == (completed == 0 ? hello : join), "completions come in submission order");
            expect(completed == 0 ? event.message.size() == 16 : event.group == group, "the completion's value");
            ++completed;
        } else if (event.kind == GROUP_CLIENT_EVENT_BROADCAST) {
            from_alice = event.message;
        }
    };
    frames(dave, on_event, [&] { return completed == 2; });
    expect(up && completed == 2, "connected, said hello and joined without blocking");
    must(alice.broadcast(group, "to the game loop"), "broadcast to dave");
    frames(dave, on_event, [&] { return !from_alice.empty(); });
    expect(from_alice == "to the game loop", "dave's frame loop receives the broadcast");
    std::uint64_t unknown_command = must(dave.submit_request(2, 77, "?", 2000), "submit_request");
    std::uint16_t refusal = 0;
    frames(dave, [&](const group::ClientEvent &event) {
        if (event.kind == GROUP_CLIENT_EVENT_COMPLETED && event.op == unknown_command) {
            refusal = event.code;
        }
    }, [&] { return refusal != 0; });
    expect(refusal == 9, "a command with no handler completes refused with code 9");

    // The server's questions.
    group::Snapshot snapshot = must(server.snapshot(group), "snapshot");
    expect(snapshot.members.size() == 4 && snapshot.info.member_count == 4, "four members");
    std::vector<group::GroupId> groups = must(server.group_ids("alice"), "group_ids");
    expect(groups.size() == 1 && groups[0] == group, "alice is in one group");
    expect(must(server.member_nodes(group), "member_nodes").size() == 1, "one node holds the members");
    expect(must(server.latest_group("alice"), "latest_group") == group, "alice's latest group");
    std::optional<group::ServerEvent> event = must(server.poll_event(), "poll_event");
    expect(event.has_value(), "the server queued events");
    expect(group::config_error(R"({"limits": {"maxConnections": "many"}})").find("maxConnections") !=
               std::string::npos,
           "config_error names the key");
    expect(group::config_error("{}").empty(), "a valid configuration has no error");
    auto no_tls_over_udp = group::Client::connect_tls(GROUP_TRANSPORT_UDP, "127.0.0.1:1", "game.example");
    expect(!no_tls_over_udp && no_tls_over_udp.error().result == GROUP_RESULT_INVALID_ARGUMENT,
           "connect_tls refuses UDP with INVALID_ARGUMENT");

    vanishing_members(server);
    tls_clients();

    must(carol.leave(group), "leave");
    group::Status unknown = server.next(424242);
    expect(!unknown && unknown.error().result == GROUP_RESULT_NOT_FOUND, "an unknown token is an error code");
    // A drain pushes Offline, waits (at most drainTimeout, 300 ms here: the clients stay), and stops.
    must(server.drain(), "drain");
    auto offline = next_of(alice, GROUP_PUSH_OFFLINE);
    expect(offline.has_value(), "the drain told alice to go");
    if (failures == 0) {
        std::printf("cpp_host: ok\n");
    }
    return failures == 0 ? 0 : 1;
}
