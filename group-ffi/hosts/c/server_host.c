/* A C99 host of the group server: creates a server from JSON, starts it, checks a client can say Hello over
 * TCP, stops it and frees it, checking every result. Exits non-zero on the first failure.
 * Built and run (also under valgrind) by group-ffi/tests/c_host.rs. */
#define _POSIX_C_SOURCE 200112L

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "group.h"

#define CHECK(cond, what)                                                   \
    do {                                                                    \
        if (!(cond)) {                                                      \
            fprintf(stderr, "server_host: %s failed (line %d)\n", what, __LINE__); \
            return 1;                                                       \
        }                                                                   \
    } while (0)

static int expect(group_result got, group_result want, const char *what) {
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

/* Says Hello as "alice" over TCP and checks the Ok response carries a 16-byte session ID. */
static int hello(uint16_t port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(fd >= 0, "socket");
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK(connect(fd, (struct sockaddr *)&addr, sizeof addr) == 0, "connect");
    /* ver 0, cmd 4 (Hello), len 8: uid_len 5, "alice", token_len 0 */
    const uint8_t request[] = {0, 0, 4, 0, 0, 0, 8, 5, 'a', 'l', 'i', 'c', 'e', 0, 0};
    CHECK(write(fd, request, sizeof request) == (ssize_t)sizeof request, "write Hello");
    uint8_t response[8 + 16];
    CHECK(read_all(fd, response, sizeof response) == 0, "read the Hello response");
    CHECK(response[0] == 0 && response[1] == 0 && response[2] == 4, "response echoes ver 0 cmd 4");
    CHECK(response[3] == 1, "status Ok");
    CHECK(response[4] == 0 && response[5] == 0 && response[6] == 0 && response[7] == 16, "16-byte sid");
    close(fd);
    return 0;
}

int main(void) {
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
    group_server *server = NULL;
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
        "{\"server\": {\"tcp\": \"127.0.0.1:0\", \"ws\": null, \"udp\": null},"
        " \"mesh\": {\"bind\": \"127.0.0.1:0\"}}";
    if (expect(group_server_new((const uint8_t *)config, strlen(config), 2, &server), GROUP_RESULT_OK,
               "group_server_new")) {
        return 1;
    }
    CHECK(server != NULL, "a server");
    if (expect(group_server_start(server), GROUP_RESULT_OK, "group_server_start")) {
        return 1;
    }
    uint16_t port = 0;
    if (expect(group_server_port(server, GROUP_TRANSPORT_TCP, &port), GROUP_RESULT_OK,
               "group_server_port")) {
        return 1;
    }
    CHECK(port != 0, "a real port");
    if (expect(group_server_port(server, GROUP_TRANSPORT_WS, &port), GROUP_RESULT_NOT_FOUND,
               "a disabled listener")) {
        return 1;
    }
    if (hello(port) != 0) {
        return 1;
    }
    if (expect(group_server_stop(server, 1000), GROUP_RESULT_OK, "group_server_stop")) {
        return 1;
    }
    group_server_free(server);
    group_server_free(NULL);
    printf("server_host: ok\n");
    return 0;
}
