// group.hpp: a small C++17 wrapper over the C ABI in group.h, usable in an engine module built with
// exceptions and RTTI off (Unreal). RAII handles (a server is stopped and freed, a client closed and
// freed, when the object goes); every call returns a group::Result<T> (a value, or an Error with the
// result code and, for refusals, the protocol error code). Define GROUP_HPP_EXCEPTIONS before including
// it to also get Result::value_or_throw(). Hand-written; it only calls functions of group.h, and its
// names stay inside namespace group (no `check`, `verify` or `ensure` that an engine macro could eat).
#ifndef GROUP_HPP
#define GROUP_HPP

#include <algorithm>
#include <array>
#include <cstdint>
#include <iterator>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

#ifdef GROUP_HPP_EXCEPTIONS
#include <stdexcept>
#endif

#include "group.h"

namespace group {

using GroupId = std::array<std::uint8_t, GROUP_ID_LEN>;

// Why a call failed: `result` is the group_result_t, `refusal` the protocol code when the server refused.
struct Error {
    group_result_t result = GROUP_RESULT_OK;
    std::uint16_t refusal = 0;
    const char *call = "";

    // The library's text for `result`.
    std::string message() const {
        std::uint8_t buf[256];
        std::size_t written = 0;
        group_result_message(result, buf, sizeof buf, &written);
        return std::string(call) + ": " + std::string(reinterpret_cast<const char *>(buf), written);
    }
};

// A value, or the Error that prevented it.
template <class T>
class [[nodiscard]] Result {
public:
    Result(T value) : state_(std::move(value)) {}
    Result(Error error) : state_(error) {}

    bool ok() const { return state_.index() == 0; }
    explicit operator bool() const { return ok(); }
    // Only when ok().
    T &value() { return *std::get_if<T>(&state_); }
    const T &value() const { return *std::get_if<T>(&state_); }
    // Only when !ok().
    const Error &error() const { return *std::get_if<Error>(&state_); }
    T value_or(T fallback) const { return ok() ? value() : std::move(fallback); }

#ifdef GROUP_HPP_EXCEPTIONS
    T &value_or_throw() {
        if (!ok()) {
            throw std::runtime_error(error().message());
        }
        return value();
    }
#endif

private:
    std::variant<T, Error> state_;
};

// What a call with no value returns.
struct Done {};
using Status = Result<Done>;

namespace detail {

inline const std::uint8_t *as_bytes(std::string_view text) {
    return reinterpret_cast<const std::uint8_t *>(text.data());
}

inline Status status_of(group_result_t code, const char *call, std::uint16_t refusal = 0) {
    if (code != GROUP_RESULT_OK) {
        return Error{code, refusal, call};
    }
    return Done{};
}

struct FreeServer {
    void operator()(group_server_t *server) const { (void)group_server_free(server); }
};

struct FreeClient {
    void operator()(group_client_t *client) const { (void)group_client_free(client); }
};

}  // namespace detail

// A server hosted in this process. Hooks and commands are added before start().
class Server {
public:
    static Result<Server> create(std::string_view config_json, std::uint32_t worker_threads = 0) {
        group_server_t *raw = nullptr;
        group_result_t code = group_server_new(detail::as_bytes(config_json), config_json.size(), worker_threads, &raw);
        if (code != GROUP_RESULT_OK) {
            return Error{code, 0, "group_server_new"};
        }
        return Server(raw);
    }

    Status add_hook(std::uint32_t command, std::uint32_t phase, group_hook_fn_t callback, void *userdata) {
        return detail::status_of(group_server_add_hook(server_.get(), command, phase, callback, userdata),
                                 "group_server_add_hook");
    }

    // The server's own command (ver 2 and up), answered by token with group_reply or group_next.
    Status add_command(std::uint8_t ver, std::uint16_t cmd, group_hook_fn_t callback, void *userdata) {
        return detail::status_of(group_server_add_command(server_.get(), ver, cmd, callback, userdata),
                                 "group_server_add_command");
    }

    Status set_event_callback(group_event_fn_t callback, void *userdata) {
        return detail::status_of(group_server_set_event_callback(server_.get(), callback, userdata),
                                 "group_server_set_event_callback");
    }

    Status start() { return detail::status_of(group_server_start(server_.get()), "group_server_start"); }

    Result<std::uint16_t> port(std::uint32_t transport) const {
        std::uint16_t bound = 0;
        group_result_t code = group_server_port(server_.get(), transport, &bound);
        if (code != GROUP_RESULT_OK) {
            return Error{code, 0, "group_server_port"};
        }
        return bound;
    }

    // Answers a hook token: 0 lets the command go on, 1000+ refuses it with `message`.
    Status next(std::uint64_t token, std::uint32_t code = 0, std::string_view message = {}) const {
        return detail::status_of(group_next(server_.get(), token, code, detail::as_bytes(message), message.size()),
                                 "group_next");
    }

    Status announce(const GroupId &group, std::string_view message) const {
        std::uint16_t refusal = 0;
        group_result_t code = group_server_announce(server_.get(), group.data(), 1, 113, detail::as_bytes(message),
                                                    message.size(), 1, &refusal);
        return detail::status_of(code, "group_server_announce", refusal);
    }

    Status set_tick(const GroupId &group, std::uint32_t interval_ms, group_tick_fn_t callback, void *userdata) {
        return detail::status_of(group_server_set_tick(server_.get(), group.data(), interval_ms, callback, userdata),
                                 "group_server_set_tick");
    }

    // Queues a broadcast from member `uid` and returns at once (no round trip between threads); false when
    // the server's queue is full. A refusal arrives later as a GROUP_EVENT_BROADCAST_REFUSED event.
    Result<bool> broadcast_nowait(const GroupId &group, std::string_view uid, std::string_view message) const {
        group_result_t code = group_server_broadcast_nowait(server_.get(), group.data(), detail::as_bytes(uid),
                                                            uid.size(), 1, 113, detail::as_bytes(message),
                                                            message.size(), 1);
        if (code == GROUP_RESULT_BUSY) {
            return false;
        }
        if (code != GROUP_RESULT_OK) {
            return Error{code, 0, "group_server_broadcast_nowait"};
        }
        return true;
    }

    // Drains as SIGTERM does to group-server (offline, groups handed over, serving until the last client
    // has gone or server.drainTimeout passed), then stops.
    Status drain(std::uint32_t grace_ms = 1000) {
        return detail::status_of(group_server_drain(server_.get(), grace_ms), "group_server_drain");
    }

    Status stop(std::uint32_t grace_ms = 1000) {
        return detail::status_of(group_server_stop(server_.get(), grace_ms), "group_server_stop");
    }

    const group_server_t *get() const { return server_.get(); }

private:
    explicit Server(group_server_t *raw) : server_(raw) {}
    std::unique_ptr<group_server_t, detail::FreeServer> server_;
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
    static Result<Client> connect(std::uint32_t transport, std::string_view addr) {
        group_client_t *raw = nullptr;
        group_result_t code = group_client_connect(transport, detail::as_bytes(addr), addr.size(), &raw);
        if (code != GROUP_RESULT_OK) {
            return Error{code, 0, "group_client_connect"};
        }
        return Client(raw);
    }

    Status hello(std::string_view uid, std::string_view token = {}) {
        std::array<std::uint8_t, 16> sid{};
        std::uint16_t refusal = 0;
        group_result_t code = group_client_hello(client_.get(), detail::as_bytes(uid), uid.size(),
                                                 detail::as_bytes(token), token.size(), sid.data(), &refusal);
        return detail::status_of(code, "group_client_hello", refusal);
    }

    Result<GroupId> create(bool allow_empty, bool join, std::uint16_t ttl_s, std::uint16_t interval_ms = 0) {
        GroupId group{};
        std::uint16_t refusal = 0;
        group_result_t code = group_client_create(client_.get(), allow_empty, join, ttl_s, interval_ms,
                                                  group.data(), &refusal);
        if (code != GROUP_RESULT_OK) {
            return Error{code, refusal, "group_client_create"};
        }
        return group;
    }

    // Joins a random group with room, or creates one when none has.
    Result<GroupId> random_join(bool allow_empty, std::uint16_t ttl_s, std::uint16_t interval_ms = 0,
                                std::string_view message = {}) {
        GroupId group{};
        std::uint16_t refusal = 0;
        group_result_t code = group_client_random_join(client_.get(), allow_empty, ttl_s, interval_ms,
                                                       detail::as_bytes(message), message.size(), group.data(),
                                                       &refusal);
        if (code != GROUP_RESULT_OK) {
            return Error{code, refusal, "group_client_random_join"};
        }
        return group;
    }

    Status join(const GroupId &group, std::string_view message = {}) {
        std::uint16_t refusal = 0;
        group_result_t code = group_client_join(client_.get(), group.data(), detail::as_bytes(message),
                                                message.size(), &refusal);
        return detail::status_of(code, "group_client_join", refusal);
    }

    Status leave(const GroupId &group, std::string_view message = {}) {
        std::uint16_t refusal = 0;
        group_result_t code = group_client_leave(client_.get(), group.data(), detail::as_bytes(message),
                                                 message.size(), &refusal);
        return detail::status_of(code, "group_client_leave", refusal);
    }

    Status broadcast(const GroupId &group, std::string_view message, bool reliable = true) {
        return detail::status_of(group_client_broadcast(client_.get(), group.data(), detail::as_bytes(message),
                                                        message.size(), reliable),
                                 "group_client_broadcast");
    }

    // Sends the server's own command (ver 2 and up) and returns its reply's payload.
    Result<std::string> request(std::uint8_t ver, std::uint16_t cmd, std::string_view payload) {
        std::string reply(1024, '\0');
        std::size_t length = 0;
        std::uint16_t refusal = 0;
        group_result_t code = group_client_request(client_.get(), ver, cmd, detail::as_bytes(payload), payload.size(),
                                                   reinterpret_cast<std::uint8_t *>(reply.data()), reply.size(),
                                                   &length, &refusal);
        if (code == GROUP_RESULT_BUFFER_TOO_SMALL) {
            reply.resize(length);
            code = group_client_last_reply(client_.get(), reinterpret_cast<std::uint8_t *>(reply.data()),
                                           reply.size(), &length);
        }
        if (code != GROUP_RESULT_OK) {
            return Error{code, refusal, "group_client_request"};
        }
        reply.resize(length);
        return reply;
    }

    // How long the client may stay silent before its own thread sends a KeepAlive (default 3000 ms, 0: never).
    Status set_keep_alive(std::uint32_t interval_ms) {
        return detail::status_of(group_client_set_keep_alive(client_.get(), interval_ms),
                                 "group_client_set_keep_alive");
    }

    // The message of the last refusal this client received (a hook's own text, for example).
    Result<std::string> refusal_message() {
        std::string text(256, '\0');
        std::size_t written = 0;
        group_result_t code = group_client_refusal_message(
            client_.get(), reinterpret_cast<std::uint8_t *>(text.data()), text.size(), &written);
        if (code == GROUP_RESULT_BUFFER_TOO_SMALL) {
            text.resize(written);
            code = group_client_refusal_message(client_.get(), reinterpret_cast<std::uint8_t *>(text.data()),
                                                text.size(), &written);
        }
        if (code != GROUP_RESULT_OK) {
            return Error{code, 0, "group_client_refusal_message"};
        }
        text.resize(written);
        return text;
    }

    // The next push within `timeout_ms` (0: only what has arrived, without waiting), or nothing.
    Result<std::optional<Push>> poll(std::uint32_t timeout_ms) {
        std::string buf(256, '\0');
        for (;;) {
            group_push_t raw{};
            std::size_t needed = 0;
            group_result_t code = group_client_poll_push(client_.get(), timeout_ms, &raw,
                                                         reinterpret_cast<std::uint8_t *>(buf.data()), buf.size(),
                                                         &needed);
            if (code == GROUP_RESULT_NOT_FOUND) {
                return std::optional<Push>{};
            }
            if (code == GROUP_RESULT_BUFFER_TOO_SMALL) {
                buf.resize(needed);
                continue;
            }
            if (code != GROUP_RESULT_OK) {
                return Error{code, 0, "group_client_poll_push"};
            }
            Push push{raw.kind, {}, buf.substr(0, raw.uid_len), buf.substr(raw.uid_len, raw.message_len), raw.code};
            std::copy(std::begin(raw.group), std::end(raw.group), push.group.begin());
            return std::optional<Push>{std::move(push)};
        }
    }

private:
    explicit Client(group_client_t *raw) : client_(raw) {}
    std::unique_ptr<group_client_t, detail::FreeClient> client_;
};

}  // namespace group

#endif  // GROUP_HPP
