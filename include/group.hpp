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
#include <vector>

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

inline std::uint8_t *as_writable(std::string &text) { return reinterpret_cast<std::uint8_t *>(text.data()); }

// Calls `fill(buffer, capacity, &count)` with a growing vector until everything fits.
template <class T, class Fill>
Result<std::vector<T>> grow(Fill fill, const char *call) {
    std::vector<T> items(8);
    for (;;) {
        std::size_t count = 0;
        group_result_t code = fill(items.data(), items.size(), &count);
        if (code == GROUP_RESULT_BUFFER_TOO_SMALL && count > items.size()) {
            items.resize(count);
            continue;
        }
        if (code != GROUP_RESULT_OK) {
            return Error{code, 0, call};
        }
        items.resize(count);
        return items;
    }
}

}  // namespace detail

// The library's version ("0.1.0"); compare with GROUP_VERSION_* to detect a header that does not match.
inline std::string_view version() { return group_version(); }

// Why a configuration is refused (the key and the problem), or an empty string when it is valid.
inline std::string config_error(std::string_view config_json) {
    std::string text(512, '\0');
    std::size_t written = 0;
    group_result_t code = group_config_error(detail::as_bytes(config_json), config_json.size(),
                                             detail::as_writable(text), text.size(), &written);
    if (code == GROUP_RESULT_BUFFER_TOO_SMALL) {
        text.resize(written);
        code = group_config_error(detail::as_bytes(config_json), config_json.size(), detail::as_writable(text),
                                  text.size(), &written);
    }
    text.resize(code == GROUP_RESULT_OK ? 0 : written);
    return text;
}

// Routes the library's log lines to `callback` (UE_LOG, for example) up to `max_level` (1 error ... 5
// trace; 0 off). NULL clears it. Applies to every server and client in the process.
inline Status set_log_callback(group_log_fn_t callback, std::uint32_t max_level, void *userdata) {
    return detail::status_of(group_set_log_callback(callback, max_level, userdata), "group_set_log_callback");
}

// One server event, copied out of the server's queue.
struct ServerEvent {
    group_event_t raw;
    std::string uid;
};

// A group as its node sees it, with its members ordered by uid.
struct Snapshot {
    group_snapshot_t info;
    std::vector<group_member_t> members;
};

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

    // Creates a group on behalf of `creator` (empty: the server itself), as a client's Create would.
    Result<GroupId> new_group(std::string_view creator, bool allow_empty, bool join, std::uint16_t ttl_s,
                              std::uint16_t interval_ms = 0) const {
        GroupId group{};
        std::uint16_t refusal = 0;
        group_result_t code = group_server_new_group(server_.get(), detail::as_bytes(creator), creator.size(),
                                                     allow_empty, join, ttl_s, interval_ms, group.data(), &refusal);
        if (code != GROUP_RESULT_OK) {
            return Error{code, refusal, "group_server_new_group"};
        }
        return group;
    }

    // Joins member `uid` (a session on this node) to `group`; the others get a join push (ver/cmd) when
    // `message` is not empty.
    Status join(const GroupId &group, std::string_view uid, std::string_view message = {}, std::uint8_t ver = 1,
                std::uint16_t cmd = 111) const {
        std::uint16_t refusal = 0;
        group_result_t code = group_server_join(server_.get(), group.data(), detail::as_bytes(uid), uid.size(),
                                                detail::as_bytes(message), message.size(), ver, cmd, &refusal);
        return detail::status_of(code, "group_server_join", refusal);
    }

    Status leave(const GroupId &group, std::string_view uid, std::string_view message = {}, std::uint8_t ver = 1,
                 std::uint16_t cmd = 112) const {
        std::uint16_t refusal = 0;
        group_result_t code = group_server_leave(server_.get(), group.data(), detail::as_bytes(uid), uid.size(),
                                                 detail::as_bytes(message), message.size(), ver, cmd, &refusal);
        return detail::status_of(code, "group_server_leave", refusal);
    }

    // Broadcasts as member `uid` and waits for the node to take it (see broadcast_nowait for a game loop).
    Status broadcast(const GroupId &group, std::string_view uid, std::string_view message, bool reliable = true,
                     std::uint8_t ver = 1, std::uint16_t cmd = 113) const {
        std::uint16_t refusal = 0;
        group_result_t code = group_server_broadcast(server_.get(), group.data(), detail::as_bytes(uid), uid.size(),
                                                     ver, cmd, detail::as_bytes(message), message.size(), reliable,
                                                     &refusal);
        return detail::status_of(code, "group_server_broadcast", refusal);
    }

    // Pushes `payload` with the server's own `ver` (2 and up) and `cmd` to user `uid`, connected to this node;
    // the client gets a GROUP_PUSH_CUSTOM. NOT_FOUND when the user has no session here.
    Status push_to_user(std::string_view uid, std::uint8_t ver, std::uint16_t cmd, std::string_view payload) const {
        return detail::status_of(group_server_push_to_user(server_.get(), detail::as_bytes(uid), uid.size(), ver, cmd,
                                                           detail::as_bytes(payload), payload.size()),
                                 "group_server_push_to_user");
    }

    // The newest group `uid` joined or created on this node.
    Result<GroupId> latest_group(std::string_view uid) const {
        GroupId group{};
        group_result_t code = group_server_latest_group(server_.get(), detail::as_bytes(uid), uid.size(), group.data());
        if (code != GROUP_RESULT_OK) {
            return Error{code, 0, "group_server_latest_group"};
        }
        return group;
    }

    // The groups `uid` is in, in join order.
    Result<std::vector<GroupId>> group_ids(std::string_view uid) const {
        auto fill = [&](GroupId *out, std::size_t capacity, std::size_t *count) {
            return group_server_group_ids(server_.get(), detail::as_bytes(uid), uid.size(),
                                          capacity == 0 ? nullptr : out->data(), capacity, count);
        };
        return detail::grow<GroupId>(fill, "group_server_group_ids");
    }

    // The mesh addresses of the nodes holding members of `group`.
    Result<std::vector<group_node_addr_t>> member_nodes(const GroupId &group) const {
        auto fill = [&](group_node_addr_t *out, std::size_t capacity, std::size_t *count) {
            return group_server_member_nodes(server_.get(), group.data(), out, capacity, count);
        };
        return detail::grow<group_node_addr_t>(fill, "group_server_member_nodes");
    }

    Result<Snapshot> snapshot(const GroupId &group) const {
        Snapshot snapshot{};
        auto fill = [&](group_member_t *out, std::size_t capacity, std::size_t *count) {
            return group_server_snapshot(server_.get(), group.data(), &snapshot.info, out, capacity, count);
        };
        Result<std::vector<group_member_t>> members = detail::grow<group_member_t>(fill, "group_server_snapshot");
        if (!members) {
            return members.error();
        }
        snapshot.members = std::move(members.value());
        return snapshot;
    }

    // The next event from the server's queue without waiting, or nothing.
    Result<std::optional<ServerEvent>> poll_event() const {
        ServerEvent event{};
        event.uid.resize(GROUP_MAX_UID_LEN);
        std::size_t needed = 0;
        group_result_t code = group_server_poll_event(server_.get(), &event.raw, detail::as_writable(event.uid),
                                                      event.uid.size(), &needed);
        if (code == GROUP_RESULT_NOT_FOUND) {
            return std::optional<ServerEvent>{};
        }
        if (code != GROUP_RESULT_OK) {
            return Error{code, 0, "group_server_poll_event"};
        }
        event.uid.resize(event.raw.uid_len);
        return std::optional<ServerEvent>{std::move(event)};
    }

    // Answers a custom command's token with an Ok response carrying `payload`.
    Status reply(std::uint64_t token, std::string_view payload) const {
        return detail::status_of(group_reply(server_.get(), token, detail::as_bytes(payload), payload.size()),
                                 "group_reply");
    }

    // Replaces a built-in message (a group_message_kind_t) with the host's own.
    Status set_message(std::uint32_t kind, group_message_fn_t callback, void *userdata) const {
        return detail::status_of(group_server_set_message(server_.get(), kind, callback, userdata),
                                 "group_server_set_message");
    }

    // Takes this node offline: members get the offline push; new groups are created elsewhere.
    Status set_offline() const {
        return detail::status_of(group_server_set_offline(server_.get()), "group_server_set_offline");
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

// One client event (a push, a completion or a connection-state change), copied out of the client.
struct ClientEvent {
    std::uint32_t kind;    // a group_client_event_kind_t
    std::uint64_t op;      // the operation a GROUP_CLIENT_EVENT_COMPLETED completes
    std::uint32_t result;  // for a completion: a group_result_t
    std::uint32_t reason;  // for GROUP_CLIENT_EVENT_DISCONNECTED: a group_disconnect_reason_t
    std::uint16_t code;    // a refusal's protocol code
    GroupId group;
    std::string uid;
    std::string message;  // the session ID (Hello), the reply (a custom request), a refusal's or reason's text
};

// A client connection over one transport (GROUP_TRANSPORT_TCP, _UDP or _WS).
//
// A game loop uses the non-blocking half: connect_async, submit_* (each returns an operation ID at once)
// and dispatch(handler) once per frame, which hands every event that has arrived to `handler` on the
// calling thread. The blocking calls (connect, hello, create, ...) wait on the caller's thread and are
// meant for tools and tests.
class Client {
public:
    // Returns at once; the first event is GROUP_CLIENT_EVENT_CONNECTED or _DISCONNECTED with a reason.
    // `options` may be null (the defaults).
    static Result<Client> connect_async(std::uint32_t transport, std::string_view addr,
                                        const group_client_options_t *options = nullptr) {
        group_client_t *raw = nullptr;
        group_result_t code =
            group_client_connect_async(transport, detail::as_bytes(addr), addr.size(), options, &raw);
        if (code != GROUP_RESULT_OK) {
            return Error{code, 0, "group_client_connect_async"};
        }
        return Client(raw);
    }

    // As connect_async, with TLS (TCP, or WebSocket as wss): the server's certificate must name
    // `server_name` and chain to a CA in `ca_pem` (PEM text), or with an empty `ca_pem` to one of the public
    // web's CAs. UDP, or an unusable name or CA text, is GROUP_RESULT_INVALID_ARGUMENT.
    static Result<Client> connect_tls(std::uint32_t transport, std::string_view addr, std::string_view server_name,
                                      std::string_view ca_pem = {},
                                      const group_client_options_t *options = nullptr) {
        group_client_t *raw = nullptr;
        group_result_t code = group_client_connect_tls(transport, detail::as_bytes(addr), addr.size(),
                                                       detail::as_bytes(server_name), server_name.size(),
                                                       detail::as_bytes(ca_pem), ca_pem.size(), options, &raw);
        if (code != GROUP_RESULT_OK) {
            return Error{code, 0, "group_client_connect_tls"};
        }
        return Client(raw);
    }

    // The submit_* calls queue an operation and return its ID; its completion comes as an event.
    // `timeout_ms` 0: the client's request timeout.
    Result<std::uint64_t> submit_hello(std::string_view uid, std::string_view token = {},
                                       std::uint32_t timeout_ms = 0) {
        std::uint64_t op = 0;
        group_result_t code = group_client_submit_hello(client_.get(), detail::as_bytes(uid), uid.size(),
                                                   detail::as_bytes(token), token.size(), timeout_ms, &op);
        return submitted(code, op, "group_client_submit_hello");
    }

    Result<std::uint64_t> submit_create(bool allow_empty, bool join, std::uint16_t ttl_s,
                                        std::uint16_t interval_ms = 0, std::uint32_t timeout_ms = 0) {
        std::uint64_t op = 0;
        group_result_t code =
            group_client_submit_create(client_.get(), allow_empty, join, ttl_s, interval_ms, timeout_ms, &op);
        return submitted(code, op, "group_client_submit_create");
    }

    Result<std::uint64_t> submit_random_join(bool allow_empty, std::uint16_t ttl_s, std::uint16_t interval_ms = 0,
                                             std::string_view message = {}, std::uint32_t timeout_ms = 0) {
        std::uint64_t op = 0;
        group_result_t code = group_client_submit_random_join(client_.get(), allow_empty, ttl_s, interval_ms,
                                                         detail::as_bytes(message), message.size(), timeout_ms, &op);
        return submitted(code, op, "group_client_submit_random_join");
    }

    Result<std::uint64_t> submit_join(const GroupId &group, std::string_view message = {},
                                      std::uint32_t timeout_ms = 0) {
        std::uint64_t op = 0;
        group_result_t code = group_client_submit_join(client_.get(), group.data(), detail::as_bytes(message),
                                                  message.size(), timeout_ms, &op);
        return submitted(code, op, "group_client_submit_join");
    }

    Result<std::uint64_t> submit_leave(const GroupId &group, std::string_view message = {},
                                       std::uint32_t timeout_ms = 0) {
        std::uint64_t op = 0;
        group_result_t code = group_client_submit_leave(client_.get(), group.data(), detail::as_bytes(message),
                                                   message.size(), timeout_ms, &op);
        return submitted(code, op, "group_client_submit_leave");
    }

    Result<std::uint64_t> submit_request(std::uint8_t ver, std::uint16_t cmd, std::string_view payload,
                                         std::uint32_t timeout_ms = 0) {
        std::uint64_t op = 0;
        group_result_t code = group_client_submit_request(client_.get(), ver, cmd, detail::as_bytes(payload),
                                                     payload.size(), timeout_ms, &op);
        return submitted(code, op, "group_client_submit_request");
    }

    // The next event within `timeout_ms` (0: only what has arrived), or nothing.
    Result<std::optional<ClientEvent>> poll_event(std::uint32_t timeout_ms) {
        for (;;) {
            group_client_event_t raw{};
            std::size_t needed = 0;
            group_result_t code = group_client_poll_event(client_.get(), timeout_ms, &raw,
                                                          detail::as_writable(buffer_), buffer_.size(), &needed);
            if (code == GROUP_RESULT_NOT_FOUND) {
                return std::optional<ClientEvent>{};
            }
            if (code == GROUP_RESULT_BUFFER_TOO_SMALL) {
                buffer_.resize(needed);
                continue;
            }
            if (code != GROUP_RESULT_OK) {
                return Error{code, 0, "group_client_poll_event"};
            }
            ClientEvent event{raw.kind, raw.op, raw.result, raw.reason, raw.code, {},
                              buffer_.substr(0, raw.uid_len), buffer_.substr(raw.uid_len, raw.message_len)};
            std::copy(std::begin(raw.group), std::end(raw.group), event.group.begin());
            return std::optional<ClientEvent>{std::move(event)};
        }
    }

    // Hands every event that has arrived to `handler(const ClientEvent &)` on this thread, without
    // waiting: call it once per frame. An error (GROUP_RESULT_DISCONNECTED once the connection is gone
    // and every event was handed out) stops it.
    template <class Handler>
    Status dispatch(Handler &&handler) {
        for (;;) {
            Result<std::optional<ClientEvent>> next = poll_event(0);
            if (!next) {
                return next.error();
            }
            if (!next.value()) {
                return Done{};
            }
            handler(*next.value());
        }
    }

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
    explicit Client(group_client_t *raw) : client_(raw), buffer_(256, '\0') {}

    // Takes `op` after the call wrote it (an argument list would not order the two).
    static Result<std::uint64_t> submitted(group_result_t code, std::uint64_t op, const char *call) {
        if (code != GROUP_RESULT_OK) {
            return Error{code, 0, call};
        }
        return op;
    }

    std::unique_ptr<group_client_t, detail::FreeClient> client_;
    std::string buffer_;  // the uid and message of the event being copied out
};

}  // namespace group

#endif  // GROUP_HPP
