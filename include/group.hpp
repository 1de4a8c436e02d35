// group.hpp: a small C++17 wrapper over the C ABI in group.h. RAII handles (a server is stopped and freed,
// a client closed and freed, when the object goes), errors as exceptions carrying the result code and, for
// refusals, the protocol error code. Hand-written (not generated); it only calls functions of group.h.
#ifndef GROUP_HPP
#define GROUP_HPP

#include <algorithm>
#include <array>
#include <cstdint>
#include <iterator>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

#include "group.h"

namespace group {

using GroupId = std::array<std::uint8_t, GROUP_ID_LEN>;

// A failed call: `result` is the group_result_t, `refusal` the protocol code when the server refused.
// (Calls are made before `refusal` is read: argument evaluation order is unspecified in C++.)
class Error : public std::runtime_error {
public:
    Error(group_result_t result, std::uint16_t refusal, const std::string &what)
        : std::runtime_error(what + ": " + message(result)), result(result), refusal(refusal) {}

    static std::string message(group_result_t result) {
        std::uint8_t buf[256];
        std::size_t written = 0;
        group_result_message(result, buf, sizeof buf, &written);
        return std::string(reinterpret_cast<const char *>(buf), written);
    }

    group_result_t result;
    std::uint16_t refusal;
};

inline void check(group_result_t result, const char *what, std::uint16_t refusal = 0) {
    if (result != GROUP_RESULT_OK) {
        throw Error(result, refusal, what);
    }
}

inline const std::uint8_t *bytes(std::string_view text) {
    return reinterpret_cast<const std::uint8_t *>(text.data());
}

// A server hosted in this process. Hooks are added before start().
class Server {
public:
    explicit Server(std::string_view config_json, std::uint32_t worker_threads = 0) {
        group_server_t *raw = nullptr;
        check(group_server_new(bytes(config_json), config_json.size(), worker_threads, &raw),
              "group_server_new");
        server_.reset(raw);
    }

    void add_hook(std::uint32_t command, std::uint32_t phase, group_hook_fn_t callback, void *userdata) {
        check(group_server_add_hook(server_.get(), command, phase, callback, userdata),
              "group_server_add_hook");
    }

    void start() { check(group_server_start(server_.get()), "group_server_start"); }

    std::uint16_t port(std::uint32_t transport) const {
        std::uint16_t port = 0;
        check(group_server_port(server_.get(), transport, &port), "group_server_port");
        return port;
    }

    // Answers a hook token: 0 lets the command go on, 1000+ refuses it with `message`.
    group_result_t next(std::uint64_t token, std::uint32_t code = 0, std::string_view message = {}) const {
        return group_next(server_.get(), token, code, bytes(message), message.size());
    }

    void announce(const GroupId &group, std::string_view message) const {
        std::uint16_t refusal = 0;
        group_result_t result = group_server_announce(server_.get(), group.data(), 1, 113, bytes(message), message.size(), 1,
                                    &refusal);
        check(result, "group_server_announce", refusal);
    }

    // Queues a broadcast from member `uid` and returns at once (no round trip between threads); false when
    // the server's queue is full. A refusal arrives later as a GROUP_EVENT_BROADCAST_REFUSED event.
    bool broadcast_nowait(const GroupId &group, std::string_view uid, std::string_view message) const {
        group_result_t result = group_server_broadcast_nowait(server_.get(), group.data(), bytes(uid), uid.size(), 1, 113,
                                                            bytes(message), message.size(), 1);
        if (result == GROUP_RESULT_BUSY) {
            return false;
        }
        check(result, "group_server_broadcast_nowait");
        return true;
    }

    // Drains as SIGTERM does to group-server (offline, groups handed over, serving until the last client
    // has gone or server.drainTimeout passed), then stops.
    void drain(std::uint32_t grace_ms = 1000) { check(group_server_drain(server_.get(), grace_ms), "group_server_drain"); }

    void stop(std::uint32_t grace_ms = 1000) { check(group_server_stop(server_.get(), grace_ms), "group_server_stop"); }

    const group_server_t *get() const { return server_.get(); }

private:
    struct Free {
        void operator()(group_server_t *server) const { group_server_free(server); }
    };
    std::unique_ptr<group_server_t, Free> server_;
};

// One push, copied out of the client.
struct Push {
    std::uint32_t kind;
    GroupId group;
    std::string uid;
    std::string message;
    std::uint16_t code;
};

// A client connection over one transport (GROUP_TRANSPORT_TCP, _UDP or _WS).
class Client {
public:
    Client(std::uint32_t transport, const std::string &addr) {
        group_client_t *raw = nullptr;
        check(group_client_connect(transport, bytes(addr), addr.size(), &raw), "group_client_connect");
        client_.reset(raw);
    }

    void hello(std::string_view uid, std::string_view token = {}) {
        std::array<std::uint8_t, 16> sid{};
        std::uint16_t refusal = 0;
        group_result_t result = group_client_hello(client_.get(), bytes(uid), uid.size(), bytes(token), token.size(), sid.data(),
                                 &refusal);
        check(result, "group_client_hello", refusal);
    }

    GroupId create(bool allow_empty, bool join, std::uint16_t ttl_s, std::uint16_t interval_ms = 0) {
        GroupId group{};
        std::uint16_t refusal = 0;
        group_result_t result = group_client_create(client_.get(), allow_empty, join, ttl_s, interval_ms, group.data(), &refusal);
        check(result, "group_client_create", refusal);
        return group;
    }

    // Joins a random group with room, or creates one when none has.
    GroupId random_join(bool allow_empty, std::uint16_t ttl_s, std::uint16_t interval_ms = 0,
                        std::string_view message = {}) {
        GroupId group{};
        std::uint16_t refusal = 0;
        group_result_t result = group_client_random_join(client_.get(), allow_empty, ttl_s, interval_ms, bytes(message),
                                                       message.size(), group.data(), &refusal);
        check(result, "group_client_random_join", refusal);
        return group;
    }

    void join(const GroupId &group, std::string_view message = {}) {
        std::uint16_t refusal = 0;
        group_result_t result = group_client_join(client_.get(), group.data(), bytes(message), message.size(), &refusal);
        check(result, "group_client_join", refusal);
    }

    void leave(const GroupId &group, std::string_view message = {}) {
        std::uint16_t refusal = 0;
        group_result_t result = group_client_leave(client_.get(), group.data(), bytes(message), message.size(), &refusal);
        check(result, "group_client_leave", refusal);
    }

    void broadcast(const GroupId &group, std::string_view message, bool reliable = true) {
        check(group_client_broadcast(client_.get(), group.data(), bytes(message), message.size(), reliable),
              "group_client_broadcast");
    }

    // Sends the server's own command (ver 2 and up) and returns its reply's payload.
    std::string request(std::uint8_t ver, std::uint16_t cmd, std::string_view payload) {
        std::string reply(1024, '\0');
        std::size_t length = 0;
        std::uint16_t refusal = 0;
        group_result_t result = group_client_request(client_.get(), ver, cmd, bytes(payload), payload.size(),
                                                   reinterpret_cast<std::uint8_t *>(reply.data()), reply.size(),
                                                   &length, &refusal);
        if (result == GROUP_RESULT_BUFFER_TOO_SMALL) {
            reply.resize(length);
            result = group_client_last_reply(client_.get(), reinterpret_cast<std::uint8_t *>(reply.data()),
                                             reply.size(), &length);
        }
        check(result, "group_client_request", refusal);
        reply.resize(length);
        return reply;
    }

    // How long the client may stay silent before poll() sends a KeepAlive for it (default 3000 ms, 0: never).
    void set_keep_alive(std::uint32_t interval_ms) {
        check(group_client_set_keep_alive(client_.get(), interval_ms), "group_client_set_keep_alive");
    }

    // The message of the last refusal this client received (a hook's own text, for example).
    std::string refusal_message() {
        std::string buf(256, '\0');
        std::size_t written = 0;
        group_result_t result = group_client_refusal_message(
            client_.get(), reinterpret_cast<std::uint8_t *>(buf.data()), buf.size(), &written);
        if (result == GROUP_RESULT_BUFFER_TOO_SMALL) {
            buf.resize(written);
            result = group_client_refusal_message(
                client_.get(), reinterpret_cast<std::uint8_t *>(buf.data()), buf.size(), &written);
        }
        check(result, "group_client_refusal_message");
        buf.resize(written);
        return buf;
    }

    // The next push within `timeout_ms`, or nothing.
    std::optional<Push> poll(std::uint32_t timeout_ms) {
        std::string buf(256, '\0');
        for (;;) {
            group_push_t raw{};
            std::size_t needed = 0;
            group_result_t result = group_client_poll_push(client_.get(), timeout_ms, &raw,
                                                         reinterpret_cast<std::uint8_t *>(buf.data()),
                                                         buf.size(), &needed);
            if (result == GROUP_RESULT_NOT_FOUND) {
                return std::nullopt;
            }
            if (result == GROUP_RESULT_BUFFER_TOO_SMALL) {
                buf.resize(needed);
                continue;
            }
            check(result, "group_client_poll_push");
            Push push{raw.kind, {}, buf.substr(0, raw.uid_len), buf.substr(raw.uid_len, raw.message_len), raw.code};
            std::copy(std::begin(raw.group), std::end(raw.group), push.group.begin());
            return push;
        }
    }

private:
    struct Free {
        void operator()(group_client_t *client) const { group_client_free(client); }
    };
    std::unique_ptr<group_client_t, Free> client_;
};

}  // namespace group

#endif  // GROUP_HPP
