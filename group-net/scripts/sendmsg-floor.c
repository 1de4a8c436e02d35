/* The kernel's cost of one TCP send on loopback, with nothing else around it: the floor under
 * group-server's (and redis's) cost per write in docs/BENCHMARKS.md's fan-out comparison.
 *
 * Usage: sendmsg-floor SLICES SENDS BYTES
 * Sends SENDS messages of BYTES bytes, each one sendmsg() of SLICES equal slices, on CPU 0, to a
 * reader on CPU 1 that discards them, and prints the sender's system and user time per send. It
 * pauses 50 us every 64 sends so that the reader keeps up and the sender never blocks. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_SLICES 64
#define MAX_BYTES 65536
/* How long the accept and any one send may wait for the reader: a reader that died ends the run with
 * an error instead of a hang. */
#define STALL_SECONDS 10

static void run_on(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(0, sizeof set, &set) != 0) {
        perror("sendmsg-floor: sched_setaffinity (needs 2 CPUs)");
        exit(1);
    }
}

static double micros(struct timeval t) { return t.tv_sec * 1e6 + t.tv_usec; }

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s SLICES SENDS BYTES\n", argv[0]);
        return 2;
    }
    int slices = atoi(argv[1]);
    long sends = atol(argv[2]);
    int bytes = atoi(argv[3]);
    if (slices < 1 || slices > MAX_SLICES || sends < 1 || bytes < slices || bytes > MAX_BYTES) {
        fprintf(stderr, "sendmsg-floor: SLICES 1-%d, SENDS at least 1, BYTES SLICES-%d\n", MAX_SLICES,
                MAX_BYTES);
        return 2;
    }

    int listener = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = 0};
    inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
    socklen_t len = sizeof addr;
    struct timeval stall = {.tv_sec = STALL_SECONDS};
    if (listener < 0 || setsockopt(listener, SOL_SOCKET, SO_RCVTIMEO, &stall, sizeof stall) != 0 ||
        bind(listener, (struct sockaddr *)&addr, sizeof addr) != 0 ||
        listen(listener, 1) != 0 || getsockname(listener, (struct sockaddr *)&addr, &len) != 0) {
        perror("sendmsg-floor: listen on 127.0.0.1");
        return 1;
    }

    pid_t reader = fork();
    if (reader < 0) {
        perror("sendmsg-floor: fork");
        return 1;
    }
    if (reader == 0) {
        run_on(1);
        int conn = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(conn, (struct sockaddr *)&addr, sizeof addr) != 0) _exit(1);
        static char sink[MAX_BYTES];
        while (read(conn, sink, sizeof sink) > 0) {
        }
        _exit(0);
    }
    run_on(0);
    int conn = accept(listener, NULL, NULL);
    int on = 1;
    if (conn < 0 || setsockopt(conn, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on) != 0 ||
        setsockopt(conn, SOL_SOCKET, SO_SNDTIMEO, &stall, sizeof stall) != 0) {
        perror("sendmsg-floor: accept (did the reader start?)");
        return 1;
    }

    static char data[MAX_BYTES];
    struct iovec iov[MAX_SLICES];
    int slice = bytes / slices;
    for (int i = 0; i < slices; i++) {
        iov[i].iov_base = data + i * slice;
        iov[i].iov_len = i == slices - 1 ? (size_t)(bytes - i * slice) : (size_t)slice;
    }
    struct msghdr msg = {.msg_iov = iov, .msg_iovlen = slices};

    struct rusage before, after;
    getrusage(RUSAGE_SELF, &before);
    for (long i = 0; i < sends; i++) {
        if (sendmsg(conn, &msg, MSG_NOSIGNAL) != bytes) {
            perror("sendmsg-floor: sendmsg sent less than asked");
            return 1;
        }
        if (i % 64 == 63) usleep(50);
    }
    getrusage(RUSAGE_SELF, &after);
    close(conn);
    waitpid(reader, NULL, 0);

    printf("%d bytes in %2d slices: system %.2f us, user %.2f us per send\n", bytes, slices,
           (micros(after.ru_stime) - micros(before.ru_stime)) / sends,
           (micros(after.ru_utime) - micros(before.ru_utime)) / sends);
    return 0;
}
