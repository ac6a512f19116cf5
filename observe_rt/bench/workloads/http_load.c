/*
 * http_load: a small HTTP/1.0 load generator for the probe benchmark (loopback only).
 * Built static by `observe-rt bench` (gcc -static -O2) into the probe benchmark's image and
 * run inside the pod, against busybox httpd in the same network namespace.
 *
 *   http_load PORT SECONDS WORKERS PATH
 *       WORKERS processes each loop for SECONDS: connect to 127.0.0.1:PORT, GET PATH,
 *       read the answer to its end, close. A new connection per request, so every request
 *       is also one TCP flow for the probes.
 *   prints "requests N errors E bytes B seconds S"
 * The address is fixed to 127.0.0.1 on purpose: this tool never sends traffic elsewhere.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* One request; returns the bytes read, or -1 on any error. */
static long one_request(int port, const char *request, size_t length)
{
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    long total = -1;
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) == 0 &&
        write(fd, request, length) == (ssize_t)length) {
        char buffer[16384];
        ssize_t got;
        total = 0;
        while ((got = read(fd, buffer, sizeof buffer)) > 0)
            total += got;
        if (got < 0 || total == 0)
            total = -1;
    }
    close(fd);
    return total;
}

static void worker(int port, double seconds, const char *path, int out)
{
    char request[512];
    int length = snprintf(request, sizeof request, "GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n",
                          path);
    long counts[3] = {0, 0, 0}; /* requests, errors, bytes */
    double end = now_s() + seconds;
    while (now_s() < end) {
        long got = one_request(port, request, (size_t)length);
        if (got < 0)
            counts[1]++;
        else {
            counts[0]++;
            counts[2] += got;
        }
    }
    if (write(out, counts, sizeof counts) != sizeof counts)
        _exit(1);
    _exit(0);
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: %s PORT SECONDS WORKERS PATH\n", argv[0]);
        return 2;
    }
    int port = atoi(argv[1]), workers = atoi(argv[3]);
    double seconds = atof(argv[2]);
    if (port <= 0 || port > 65535 || seconds <= 0 || workers <= 0 || workers > 256) {
        fprintf(stderr, "bad PORT, SECONDS or WORKERS\n");
        return 2;
    }
    int pipe_fds[2];
    if (pipe(pipe_fds) != 0)
        return 1;
    double start = now_s();
    for (int i = 0; i < workers; i++)
        if (fork() == 0) {
            close(pipe_fds[0]);
            worker(port, seconds, argv[4], pipe_fds[1]);
        }
    close(pipe_fds[1]);
    long sums[3] = {0, 0, 0}, counts[3];
    while (read(pipe_fds[0], counts, sizeof counts) == sizeof counts)
        for (int k = 0; k < 3; k++)
            sums[k] += counts[k];
    while (wait(NULL) > 0)
        ;
    printf("requests %ld errors %ld bytes %ld seconds %.3f\n", sums[0], sums[1], sums[2],
           now_s() - start);
    return 0;
}
