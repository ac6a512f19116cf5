/*
 * tcp_pair: one TCP exchange of known size on 127.0.0.1 between a server and its forked
 * client, both in the caller's cgroup.
 *
 *   tcp_pair UP DOWN   the client sends UP bytes and half-closes; the server reads them all,
 *                      answers DOWN bytes and closes; the client reads them all.
 * Prints "port SERVER_PORT" and exits 0 when every byte arrived, 1 otherwise.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static char buf[16384];

static long pump_out(int fd, long total)
{
    long sent = 0;
    while (sent < total) {
        long chunk = total - sent < (long)sizeof(buf) ? total - sent : (long)sizeof(buf);
        ssize_t n = write(fd, buf, chunk);
        if (n <= 0)
            return sent;
        sent += n;
    }
    return sent;
}

static long drain_in(int fd)
{
    long got = 0;
    ssize_t n;
    while ((n = read(fd, buf, sizeof(buf))) > 0)
        got += n;
    return got;
}

static int client(struct sockaddr_in *addr, long up, long down)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(fd, (struct sockaddr *)addr, sizeof(*addr)) != 0)
        return 1;
    if (pump_out(fd, up) != up)
        return 1;
    shutdown(fd, SHUT_WR);
    long got = drain_in(fd);
    close(fd);
    return got == down ? 0 : 1;
}

int main(int argc, char **argv)
{
    if (argc != 3)
        return 2;
    long up = atol(argv[1]), down = atol(argv[2]);
    struct sockaddr_in addr = {.sin_family = AF_INET};
    socklen_t len = sizeof(addr);
    int listener = socket(AF_INET, SOCK_STREAM, 0);

    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(listener, (struct sockaddr *)&addr, sizeof(addr)) || listen(listener, 1))
        return 1;
    getsockname(listener, (struct sockaddr *)&addr, &len);
    printf("port %d\n", ntohs(addr.sin_port));
    fflush(stdout);

    pid_t pid = fork();
    if (pid == 0)
        _exit(client(&addr, up, down));
    int conn = accept(listener, NULL, NULL);
    long got = drain_in(conn);
    long sent = pump_out(conn, down);
    close(conn);
    close(listener);
    int status = 0;
    waitpid(pid, &status, 0);
    return got == up && sent == down && WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1;
}
