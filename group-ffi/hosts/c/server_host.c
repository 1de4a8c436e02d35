/* A C99 host of the group server: creates a server from JSON, registers a Before-join hook that refuses
 * "mallory" and two After-join hooks (the first stops the chain for "carol"), starts it, drives clients through the C client API over TCP, WebSocket and UDP (create, join,
 * a join refused with the hook's code, broadcast, leave) and one over raw TCP (the refusal's bytes), uses the
 * server API, misuses handles (a free from inside a callback, double frees, calls on freed handles) and
 * times poll(0), then stops and frees everything, checking every result. Exits non-zero on the first
 * failure. Built and run (also under valgrind) by group-ffi/tests/hosts.rs. */
#define _POSIX_C_SOURCE 200112L

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "group.h"

#define CHECK(cond, what)                                                   \
    do {                                                                    \
        if (!(cond)) {                                                      \
            fprintf(stderr, "server_host: %s failed (line %d)\n", what, __LINE__); \
            return 1;                                                       \
        }                                                                   \
    } while (0)

static int expect(group_result_t got, group_result_t want, const char *what) {
    if (got == want) {
        return 0;
    }
    uint8_t message[256];
    size_t written = 0;
    group_result_message(got, message, sizeof message, &written);
    fprintf(stderr, "server_host: %s: got %u (%.*s), wanted %u\n", what, (unsigned)got, (int)written,
            (const char *)message, (unsigned)want);
    return 1;
}

static int read_all(int fd, uint8_t *buf, size_t len) {
    size_t done = 0;
    while (done < len) {
        ssize_t n = read(fd, buf + done, len - done);
        if (n <= 0) {
            return -1;
        }
        done += (size_t)n;
    }
    return 0;
}

/* Opens a TCP connection to the server. */
static int connect_to(uint16_t port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) {
        return -1;
    }
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Sends one request frame (ver, cmd, payload) and reads the response into `payload_out` (at most `cap`
 * bytes); returns the status byte, or -1. */
static int request(int fd, uint8_t ver, uint16_t cmd, const uint8_t *payload, uint32_t len,
                   uint8_t *payload_out, uint32_t cap, uint32_t *out_len) {
    uint8_t header[7] = {ver, (uint8_t)(cmd >> 8), (uint8_t)cmd, (uint8_t)(len >> 24),
                         (uint8_t)(len >> 16), (uint8_t)(len >> 8), (uint8_t)len};
    if (write(fd, header, sizeof header) != (ssize_t)sizeof header) {
        return -1;
    }
    if (len > 0 && write(fd, payload, len) != (ssize_t)len) {
        return -1;
    }
    uint8_t response[8];
    if (read_all(fd, response, sizeof response) != 0) {
        return -1;
    }
    uint32_t n = ((uint32_t)response[4] << 24) | ((uint32_t)response[5] << 16) |
                 ((uint32_t)response[6] << 8) | (uint32_t)response[7];
    if (response[0] != ver || response[1] != (uint8_t)(cmd >> 8) || response[2] != (uint8_t)cmd ||
        n > cap || read_all(fd, payload_out, n) != 0) {
        return -1;
    }
    *out_len = n;
    return response[3];
}

/* Connects and says Hello as `uid`; returns the connection or -1. */
static int user(uint16_t port, const char *uid) {
    int fd = connect_to(port);
    if (fd < 0) {
        return -1;
    }
    uint8_t hello[1 + 64 + 2];
    size_t uid_len = strlen(uid);
    hello[0] = (uint8_t)uid_len;
    memcpy(hello + 1, uid, uid_len);
    hello[1 + uid_len] = 0;
    hello[2 + uid_len] = 0;
    uint8_t sid[64];
    uint32_t n = 0;
    if (request(fd, 0, 4, hello, (uint32_t)(uid_len + 3), sid, sizeof sid, &n) != 1 || n != 16) {
        close(fd);
        return -1;
    }
    return fd;
}

/* The Before-join hook: refuses "mallory" with code 1001, lets everyone else in. Runs on a server thread
 * and answers at once, from inside the callback. */
static void before_join(void *userdata, const group_hook_call_t *call, uint64_t token) {
    const group_server_t *server = (const group_server_t *)userdata;
    static const char refusal[] = "no mallory";
    if (call->uid_len == 7 && memcmp(call->uid, "mallory", 7) == 0) {
        group_next(server, token, 1001, (const uint8_t *)refusal, sizeof refusal - 1);
    } else {
        group_next(server, token, 0, NULL, 0);
    }
}

/* What the After-join hooks saw; read once the server has stopped (its threads are joined by then). */
static int after_first_saw_carol = 0;
static int after_second_saw_bob = 0;
static int after_second_saw_carol = 0;

static int is_uid(const group_hook_call_t *call, const char *uid) {
    size_t len = strlen(uid);
    return call->uid_len == len && memcmp(call->uid, uid, len) == 0;
}

/* The first After-join hook: answers carol's join with an error, which stops the rest of the After chain
 * (Diarkis's next(err)); carol is a member all the same. */
static void after_join_first(void *userdata, const group_hook_call_t *call, uint64_t token) {
    const group_server_t *server = (const group_server_t *)userdata;
    static const char failure[] = "after failed";
    if (is_uid(call, "carol")) {
        /* A code below 1000 is the server's own: refused at the call, and the token stays unanswered. */
        if (group_next(server, token, 999, NULL, 0) == GROUP_RESULT_INVALID_ARGUMENT) {
            after_first_saw_carol = 1;
        }
        group_next(server, token, 1005, (const uint8_t *)failure, sizeof failure - 1);
    } else {
        group_next(server, token, 0, NULL, 0);
    }
}

/* The second After-join hook: must not run for carol. */
static void after_join_second(void *userdata, const group_hook_call_t *call, uint64_t token) {
    const group_server_t *server = (const group_server_t *)userdata;
    after_second_saw_bob |= is_uid(call, "bob");
    after_second_saw_carol |= is_uid(call, "carol");
    group_next(server, token, 0, NULL, 0);
}

/* A client of `server` over `transport` that has said Hello as `uid`. */
static group_client_t *client_for(const group_server_t *server, uint32_t transport, const char *uid) {
    uint16_t port = 0;
    if (group_server_port(server, transport, &port) != GROUP_RESULT_OK) {
        return NULL;
    }
    char addr[32];
    int len = snprintf(addr, sizeof addr, "127.0.0.1:%u", (unsigned)port);
    group_client_t *client = NULL;
    if (expect(group_client_connect(transport, (const uint8_t *)addr, (size_t)len, &client),
               GROUP_RESULT_OK, "group_client_connect")) {
        return NULL;
    }
    uint8_t sid[16];
    uint16_t refusal = 0;
    if (expect(group_client_hello(client, (const uint8_t *)uid, strlen(uid), NULL, 0, sid, &refusal),
               GROUP_RESULT_OK, "group_client_hello")) {
        group_client_free(client);
        return NULL;
    }
    return client;
}

/* Waits for the next push of `kind` (skipping others) and checks its uid and message. */
static int expect_push(group_client_t *client, uint32_t kind, const char *uid, const char *message) {
    uint8_t buf[512];
    for (int tries = 0; tries < 20; tries++) {
        group_push_t push;
        size_t needed = 0;
        group_result_t r = group_client_poll_push(client, 5000, &push, buf, sizeof buf, &needed);
        if (expect(r, GROUP_RESULT_OK, "group_client_poll_push")) {
            return 1;
        }
        if (push.kind != kind) {
            continue;
        }
        CHECK(push.uid_len == strlen(uid) && memcmp(buf, uid, push.uid_len) == 0, "the push's uid");
        CHECK(push.message_len == strlen(message) && memcmp(buf + push.uid_len, message, push.message_len) == 0,
              "the push's message");
        return 0;
    }
    fprintf(stderr, "server_host: no push of kind %u came\n", (unsigned)kind);
    return 1;
}

/* The server pushes to one user with its own ver/cmd; the client gets a GROUP_PUSH_CUSTOM carrying them. */
static int push_to_user(const group_server_t *server, group_client_t *bob) {
    if (expect(group_server_push_to_user(server, (const uint8_t *)"bob", 3, 2, 9, (const uint8_t *)"direct", 6),
               GROUP_RESULT_OK, "group_server_push_to_user") ||
        expect(group_server_push_to_user(server, (const uint8_t *)"nobody", 6, 2, 9, NULL, 0),
               GROUP_RESULT_NOT_FOUND, "a push to a user with no session") ||
        expect(group_server_push_to_user(server, (const uint8_t *)"bob", 3, 1, 113, NULL, 0),
               GROUP_RESULT_INVALID_ARGUMENT, "a push with the protocol's own ver")) {
        return 1;
    }
    uint8_t buf[64];
    group_push_t push;
    size_t needed = 0;
    for (int tries = 0; tries < 20; tries++) {
        if (expect(group_client_poll_push(bob, 5000, &push, buf, sizeof buf, &needed), GROUP_RESULT_OK,
                   "group_client_poll_push")) {
            return 1;
        }
        if (push.kind == GROUP_PUSH_CUSTOM) {
            CHECK(push.ver == 2 && push.cmd == 9, "the custom push's ver and cmd");
            CHECK(push.uid_len == 0 && push.message_len == 6 && memcmp(buf, "direct", 6) == 0,
                  "the custom push's payload");
            return 0;
        }
    }
    fprintf(stderr, "server_host: no custom push came\n");
    return 1;
}

/* An event callback that frees its own server (refused: WRONG_THREAD) and replaces itself (no deadlock). */
static group_result_t freed_from_callback = GROUP_RESULT_OK;
static int misuse_events = 0;

static void misusing_callback(void *userdata, const group_event_t *event, const uint8_t *uid) {
    group_server_t *server = (group_server_t *)userdata;
    (void)event;
    (void)uid;
    misuse_events += 1;
    freed_from_callback = group_server_free(server);
    group_server_set_event_callback(server, NULL, NULL);
}

/* Misuse gets result codes, never a crash or a hang: a free and a callback replacement from inside the
 * event callback, a double free, calls on freed handles. Then times poll(0) on an idle client. */
static int misuse(void) {
    const char *config = "{\"server\": {\"tcp\": \"127.0.0.1:0\", \"ws\": null, \"udp\": null},"
                         " \"mesh\": {\"bind\": \"127.0.0.1:0\"}}";
    group_server_t *server = NULL;
    uint16_t port = 0;
    if (expect(group_server_new((const uint8_t *)config, strlen(config), 1, &server), GROUP_RESULT_OK,
               "misuse: new") ||
        expect(group_server_set_event_callback(server, misusing_callback, server), GROUP_RESULT_OK,
               "misuse: event callback") ||
        expect(group_server_start(server), GROUP_RESULT_OK, "misuse: start") ||
        expect(group_server_port(server, GROUP_TRANSPORT_TCP, &port), GROUP_RESULT_OK, "misuse: port")) {
        return 1;
    }
    group_client_t *client = client_for(server, GROUP_TRANSPORT_TCP, "idle");
    CHECK(client != NULL, "misuse: a client");
    for (int i = 0; i < 500 && misuse_events == 0; ++i) {
        struct timespec nap = {0, 10000000};
        nanosleep(&nap, NULL);
    }
    CHECK(misuse_events == 1, "misuse: the callback ran once and removed itself");
    if (expect(freed_from_callback, GROUP_RESULT_WRONG_THREAD, "misuse: free from the event callback")) {
        return 1;
    }
    /* poll(0) on an idle client: what a game loop pays every frame (a figure, not an assertion). */
    group_push_t push;
    uint8_t buf[256];
    size_t needed = 0;
    struct timespec start, end;
    long samples[500];
    for (int i = 0; i < 500; ++i) {
        clock_gettime(CLOCK_MONOTONIC, &start);
        group_result_t r = group_client_poll_push(client, 0, &push, buf, sizeof buf, &needed);
        clock_gettime(CLOCK_MONOTONIC, &end);
        if (expect(r, GROUP_RESULT_NOT_FOUND, "misuse: poll(0) on an idle client")) {
            return 1;
        }
        samples[i] = (end.tv_sec - start.tv_sec) * 1000000000L + (end.tv_nsec - start.tv_nsec);
    }
    for (int i = 1; i < 500; ++i) { /* insertion sort: 500 samples */
        long v = samples[i];
        int j = i - 1;
        while (j >= 0 && samples[j] > v) {
            samples[j + 1] = samples[j];
            --j;
        }
        samples[j + 1] = v;
    }
    printf("server_host: poll(0) on an idle client: p50 %ld ns, p99 %ld ns\n", samples[250], samples[495]);
    if (expect(group_client_free(client), GROUP_RESULT_OK, "misuse: free the client") ||
        expect(group_client_free(client), GROUP_RESULT_INVALID_HANDLE, "misuse: free the client twice") ||
        expect(group_client_poll_push(client, 0, &push, buf, sizeof buf, &needed), GROUP_RESULT_INVALID_HANDLE,
               "misuse: poll a freed client") ||
        expect(group_server_free(server), GROUP_RESULT_OK, "misuse: free the server") ||
        expect(group_server_free(server), GROUP_RESULT_INVALID_HANDLE, "misuse: free the server twice") ||
        expect(group_server_start(server), GROUP_RESULT_INVALID_HANDLE, "misuse: start a freed server")) {
        return 1;
    }
    return 0;
}

/* Alice (TCP) creates a group; bob (WebSocket) and carol (UDP) join; mallory is refused by the hook;
 * alice's broadcast reaches bob and carol; carol leaves. All through the C client API. */
static int client_api(const group_server_t *server) {
    group_client_t *alice = client_for(server, GROUP_TRANSPORT_TCP, "alice");
    group_client_t *bob = client_for(server, GROUP_TRANSPORT_WS, "bob");
    group_client_t *carol = client_for(server, GROUP_TRANSPORT_UDP, "carol");
    group_client_t *mallory = client_for(server, GROUP_TRANSPORT_TCP, "mallory");
    CHECK(alice && bob && carol && mallory, "four clients over three transports");
    uint8_t group[GROUP_ID_LEN];
    uint16_t refusal = 0;
    if (expect(group_client_create(alice, 0, 1, 60, 0, group, &refusal), GROUP_RESULT_OK, "create") ||
        expect(group_client_join(bob, group, (const uint8_t *)"hi", 2, &refusal), GROUP_RESULT_OK, "bob joins") ||
        expect_push(alice, GROUP_PUSH_JOINED, "bob", "hi") ||
        expect(group_client_join(carol, group, NULL, 0, &refusal), GROUP_RESULT_OK, "carol joins") ||
        expect(group_client_join(mallory, group, NULL, 0, &refusal), GROUP_RESULT_REFUSED, "mallory")) {
        return 1;
    }
    CHECK(refusal == 1001, "the hook's code reaches the C client");
    uint8_t why[64];
    size_t why_len = 0;
    if (expect(group_client_refusal_message(mallory, why, sizeof why, &why_len), GROUP_RESULT_OK,
               "group_client_refusal_message")) {
        return 1;
    }
    CHECK(why_len == 10 && memcmp(why, "no mallory", 10) == 0, "the hook's message reaches the C client");
    if (expect(group_client_broadcast(alice, group, (const uint8_t *)"hello all", 9, 1), GROUP_RESULT_OK,
               "alice broadcasts") ||
        expect_push(bob, GROUP_PUSH_BROADCAST, "alice", "hello all") ||
        expect_push(carol, GROUP_PUSH_BROADCAST, "alice", "hello all") ||
        expect(group_client_leave(carol, group, NULL, 0, &refusal), GROUP_RESULT_OK, "carol leaves") ||
        push_to_user(server, bob)) {
        return 1;
    }
    group_client_free(alice);
    group_client_free(bob);
    group_client_free(carol);
    group_client_free(mallory);
    group_client_free(NULL);
    return 0;
}

/* Members vanish while 8 KB announces are written to them: the host keeps the default SIGPIPE disposition
 * (this program never touches it), so a write from the library to a closed peer that raised SIGPIPE on a
 * thread that does not block it would end this process with status 141. `rounds` announces; 20 members
 * that never read, who close (half with a reset, SO_LINGER 0) one by one along the way. */
static int vanishing_members(const group_server_t *server, int rounds) {
    uint16_t port = 0;
    if (expect(group_server_port(server, GROUP_TRANSPORT_TCP, &port), GROUP_RESULT_OK, "port")) {
        return 1;
    }
    uint8_t group[GROUP_ID_LEN];
    uint16_t refusal = 0;
    if (expect(group_server_new_group(server, NULL, 0, 1, 0, 60, 0, group, &refusal), GROUP_RESULT_OK,
               "a group for the vanishing members")) {
        return 1;
    }
    enum { MEMBERS = 20 };
    int fds[MEMBERS];
    for (int i = 0; i < MEMBERS; ++i) {
        char uid[16];
        int len = snprintf(uid, sizeof uid, "vanish%d", i);
        fds[i] = user(port, uid);
        CHECK(fds[i] >= 0, "a vanishing member connects");
        if (expect(group_server_join(server, group, (const uint8_t *)uid, (size_t)len, NULL, 0, 1, 111, &refusal),
                   GROUP_RESULT_OK, "a vanishing member joins")) {
            return 1;
        }
    }
    static uint8_t payload[8192];
    memset(payload, 'x', sizeof payload);
    int closed = 0;
    for (int round = 0; round < rounds; ++round) {
        group_result_t r = group_server_announce(server, group, 1, 113, payload, sizeof payload, 1, &refusal);
        /* Once every member is gone the group may be gone too; anything else is a failure. */
        CHECK(r == GROUP_RESULT_OK || (closed == MEMBERS && r == GROUP_RESULT_REFUSED), "an 8 KB announce");
        if (round % (rounds / (MEMBERS + 1)) == 0 && round > 0 && closed < MEMBERS) {
            if (closed % 2 == 0) {
                struct linger reset = {1, 0};
                setsockopt(fds[closed], SOL_SOCKET, SO_LINGER, &reset, sizeof reset);
            }
            close(fds[closed]);
            ++closed;
        }
    }
    for (; closed < MEMBERS; ++closed) {
        close(fds[closed]);
    }
    printf("server_host: survived %d members vanishing under %d announces of 8 KB\n", MEMBERS, rounds);
    return 0;
}

/* A client as a game loop drives it: connect, Hello, Create and an unknown command are submitted without
 * waiting, and each frame polls with timeout 0 until the three completions came, in submission order. */
static int game_loop_client(const group_server_t *server) {
    uint16_t port = 0;
    if (expect(group_server_port(server, GROUP_TRANSPORT_TCP, &port), GROUP_RESULT_OK, "port")) {
        return 1;
    }
    char addr[32];
    int len = snprintf(addr, sizeof addr, "127.0.0.1:%u", (unsigned)port);
    group_client_options_t options = {0, 0, 0};
    options.request_timeout_ms = 20000;
    group_client_t *client = NULL;
    uint64_t ops[3] = {0, 0, 0};
    if (expect(group_client_connect_async(GROUP_TRANSPORT_TCP, (const uint8_t *)addr, (size_t)len, &options,
                                          &client),
               GROUP_RESULT_OK, "group_client_connect_async") ||
        expect(group_client_submit_hello(client, (const uint8_t *)"erin", 4, NULL, 0, 0, &ops[0]), GROUP_RESULT_OK,
               "group_client_submit_hello") ||
        expect(group_client_submit_create(client, 1, 1, 60, 0, 0, &ops[1]), GROUP_RESULT_OK,
               "group_client_submit_create") ||
        expect(group_client_submit_request(client, 2, 77, NULL, 0, 0, &ops[2]), GROUP_RESULT_OK,
               "group_client_submit_request")) {
        return 1;
    }
    int connected = 0;
    int completed = 0;
    uint8_t buf[256];
    for (int frame = 0; frame < 30000 && completed < 3; ++frame) {
        group_client_event_t event;
        size_t needed = 0;
        group_result_t r = group_client_poll_event(client, 0, &event, buf, sizeof buf, &needed);
        if (r == GROUP_RESULT_NOT_FOUND) {
            struct timespec rest = {0, 1000000}; /* the rest of the frame */
            nanosleep(&rest, NULL);
            continue;
        }
        if (expect(r, GROUP_RESULT_OK, "group_client_poll_event")) {
            return 1;
        }
        if (event.kind == GROUP_CLIENT_EVENT_CONNECTED) {
            connected = 1;
        } else if (event.kind == GROUP_CLIENT_EVENT_COMPLETED) {
            CHECK(event.op == ops[completed], "completions come in submission order");
            group_result_t want = completed == 2 ? GROUP_RESULT_REFUSED : GROUP_RESULT_OK;
            CHECK(event.result == (uint32_t)want, "each completion's result");
            if (completed == 0) {
                CHECK(event.message_len == 16, "Hello completes with the session ID");
            } else if (completed == 1) {
                CHECK(event.group[0] != 0, "Create completes with the group's ID");
            } else {
                CHECK(event.code == 9, "an unknown command is refused with code 9");
            }
            ++completed;
        }
    }
    CHECK(connected && completed == 3, "connected and three completions without blocking");
    return expect(group_client_free(client), GROUP_RESULT_OK, "free the game-loop client");
}

/* Drains the event queue until `opened` sessions opened and `discarded` ended have been seen (at most 30 s:
 * valgrind is slow), checking that "alice" opened one. */
static int events(const group_server_t *server, int opened, int discarded) {
    int seen_opened = 0, seen_discarded = 0, alice = 0;
    for (int waited_ms = 0; waited_ms < 30000;) {
        group_event_t event;
        uint8_t uid[64];
        size_t needed = 0;
        group_result_t r = group_server_poll_event(server, &event, uid, sizeof uid, &needed);
        if (r == GROUP_RESULT_NOT_FOUND) {
            if (seen_opened >= opened && seen_discarded >= discarded) {
                break;
            }
            struct timespec pause = {0, 10 * 1000 * 1000};
            nanosleep(&pause, NULL);
            waited_ms += 10;
            continue;
        }
        if (expect(r, GROUP_RESULT_OK, "group_server_poll_event")) {
            return 1;
        }
        if (event.kind == GROUP_EVENT_SESSION_OPENED) {
            seen_opened++;
            alice |= event.uid_len == 5 && memcmp(uid, "alice", 5) == 0;
        } else if (event.kind == GROUP_EVENT_SESSION_DISCARDED) {
            seen_discarded++;
        }
    }
    CHECK(seen_opened == opened, "every Hello became a session-opened event");
    CHECK(seen_discarded == discarded, "every closed client became a session-discarded event");
    CHECK(alice, "the events carry the uid");
    return 0;
}

/* Alice creates a group, bob joins it, mallory is refused by the hook with its code and message. */
static int clients(uint16_t port) {
    int alice = user(port, "alice");
    int bob = user(port, "bob");
    int mallory = user(port, "mallory");
    CHECK(alice >= 0 && bob >= 0 && mallory >= 0, "three clients say Hello");
    const uint8_t create[] = {1, 1, 0, 60, 0, 0}; /* allow_empty, join, ttl 60 s, no merging */
    uint8_t group[256];
    uint32_t n = 0;
    CHECK(request(alice, 1, 110, create, sizeof create, group, sizeof group, &n) == 1 && n == 52,
          "alice creates a group");
    uint8_t reply[256];
    uint32_t m = 0;
    CHECK(request(bob, 1, 111, group, 52, reply, sizeof reply, &m) == 1 && m == 52 &&
              memcmp(reply, group, 52) == 0,
          "bob joins");
    CHECK(request(mallory, 1, 111, group, 52, reply, sizeof reply, &m) == 4, "mallory is refused (Bad)");
    /* code:u16, gid_len:u8, group_id[52], message */
    CHECK(m == 2 + 1 + 52 + 10, "the refusal carries the group and the hook's message");
    CHECK(reply[0] == 0x03 && reply[1] == 0xe9, "the hook's code, 1001");
    CHECK(memcmp(reply + 3 + 52, "no mallory", 10) == 0, "the hook's message");
    close(alice);
    close(bob);
    close(mallory);
    return 0;
}

int main(int argc, char **argv) {
    /* Under valgrind the host runs a lighter load (`server_host 200`). */
    int load = argc > 1 ? atoi(argv[1]) : 2000;
    if (load < 100) {
        load = 100;
    }
    char version[32];
    snprintf(version, sizeof version, "%d.%d.%d", GROUP_VERSION_MAJOR, GROUP_VERSION_MINOR,
             GROUP_VERSION_PATCH);
    CHECK(strcmp(group_version(), version) == 0, "group_version matches the header's macros");

    uint8_t text[256];
    size_t written = 0;
    if (expect(group_result_message(GROUP_RESULT_NULL_ARGUMENT, text, sizeof text, &written),
               GROUP_RESULT_OK, "group_result_message")) {
        return 1;
    }
    CHECK(written > 0 && written < sizeof text, "a message was written");

    const char *bad = "{\"group\": {\"relayLimit\": 0}}";
    group_server_t *server = NULL;
    if (expect(group_server_new((const uint8_t *)bad, strlen(bad), 1, &server),
               GROUP_RESULT_INVALID_CONFIG, "a bad configuration is refused")) {
        return 1;
    }
    CHECK(server == NULL, "out-parameters are written only on success");
    if (expect(group_config_error((const uint8_t *)bad, strlen(bad), text, sizeof text - 1, &written),
               GROUP_RESULT_INVALID_CONFIG, "group_config_error")) {
        return 1;
    }
    text[written] = 0;
    CHECK(strstr((const char *)text, "group.relayLimit") != NULL, "the error names the key");

    const char *config =
        "{\"server\": {\"tcp\": \"127.0.0.1:0\", \"ws\": \"127.0.0.1:0\", \"udp\": \"127.0.0.1:0\"},"
        " \"mesh\": {\"bind\": \"127.0.0.1:0\"}}";
    if (expect(group_server_new((const uint8_t *)config, strlen(config), 2, &server), GROUP_RESULT_OK,
               "group_server_new")) {
        return 1;
    }
    CHECK(server != NULL, "a server");
    if (expect(group_server_add_hook(server, GROUP_COMMAND_JOIN, GROUP_HOOK_BEFORE, before_join, server),
               GROUP_RESULT_OK, "group_server_add_hook") ||
        expect(group_server_add_hook(server, GROUP_COMMAND_JOIN, GROUP_HOOK_AFTER, after_join_first, server),
               GROUP_RESULT_OK, "the first After-join hook") ||
        expect(group_server_add_hook(server, GROUP_COMMAND_JOIN, GROUP_HOOK_AFTER, after_join_second, server),
               GROUP_RESULT_OK, "the second After-join hook")) {
        return 1;
    }
    if (expect(group_server_start(server), GROUP_RESULT_OK, "group_server_start")) {
        return 1;
    }
    uint16_t port = 0;
    if (expect(group_server_port(server, GROUP_TRANSPORT_TCP, &port), GROUP_RESULT_OK,
               "group_server_port")) {
        return 1;
    }
    CHECK(port != 0, "a real port");
    if (expect(group_server_port(server, 99, &port), GROUP_RESULT_INVALID_ARGUMENT,
               "an unknown transport")) {
        return 1;
    }
    if (clients(port) != 0 || client_api(server) != 0 || events(server, 7, 7) != 0 ||
        game_loop_client(server) != 0 || vanishing_members(server, load) != 0 || misuse() != 0) {
        return 1;
    }
    if (expect(group_next(server, 12345, 0, NULL, 0), GROUP_RESULT_NOT_FOUND,
               "an unknown token is an error, not a crash")) {
        return 1;
    }
    /* The server API from C: a group with no creator, a refused join with the protocol's code. */
    uint8_t group[GROUP_ID_LEN];
    uint16_t refusal = 0;
    if (expect(group_server_new_group(server, NULL, 0, 1, 0, 60, 0, group, &refusal), GROUP_RESULT_OK,
               "group_server_new_group")) {
        return 1;
    }
    if (expect(group_server_join(server, group, (const uint8_t *)"nobody", 6, NULL, 0, 1, 111, &refusal),
               GROUP_RESULT_REFUSED, "joining a user with no session")) {
        return 1;
    }
    CHECK(refusal == 6, "refused with code 6 (UNKNOWN_USER)");
    if (expect(group_server_announce(server, group, 1, 113, (const uint8_t *)"hi", 2, 1, &refusal),
               GROUP_RESULT_OK, "group_server_announce")) {
        return 1;
    }
    if (expect(group_server_set_offline(server), GROUP_RESULT_OK, "group_server_set_offline")) {
        return 1;
    }
    if (expect(group_server_stop(server, 1000), GROUP_RESULT_OK, "group_server_stop")) {
        return 1;
    }
    CHECK(after_first_saw_carol && after_second_saw_bob,
          "the After-join hooks ran (and group_next refused code 999)");
    CHECK(!after_second_saw_carol, "an After hook's error stops the rest of the chain");
    group_server_free(server);
    group_server_free(NULL);
    printf("server_host: ok\n");
    return 0;
}
