/*
 * null_echo: the floor for a UDP DNS server on this machine.
 *
 * It receives a datagram on 127.0.0.1:PORT, sets the QR (response) bit in the DNS
 * header and sends the same bytes back. No parsing, no answer records: whatever a
 * real server spends per query beyond this is the cost of being a DNS server.
 * One thread, one socket, blocking recvfrom/sendto, one syscall each way.
 *
 * Build: cc -O2 -o bench/out/null_echo bench/null_echo.c   (run.sh does this)
 * Run:   bench/out/null_echo PORT        (stops on SIGTERM/SIGINT)
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s PORT\n", argv[0]);
        return 2;
    }
    char *end;
    long port = strtol(argv[1], &end, 10);
    if (*end != '\0' || port < 1 || port > 65535) {
        fprintf(stderr, "null_echo: bad port '%s'\n", argv[1]);
        return 2;
    }

    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0) {
        perror("null_echo: socket");
        return 1;
    }
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((unsigned short)port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);     /* loopback only */
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
        perror("null_echo: bind");
        return 1;
    }
    fprintf(stderr, "null_echo: ready on 127.0.0.1:%ld\n", port);

    unsigned char pkt[65536];
    for (;;) {
        struct sockaddr_in peer;
        socklen_t plen = sizeof peer;
        ssize_t n = recvfrom(fd, pkt, sizeof pkt, 0, (struct sockaddr *)&peer, &plen);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            perror("null_echo: recvfrom");
            return 1;
        }
        if (n < 12)                  /* shorter than a DNS header: drop */
            continue;
        pkt[2] |= 0x80;              /* QR = 1: a "response" */
        if (sendto(fd, pkt, (size_t)n, 0, (struct sockaddr *)&peer, plen) < 0 && errno != EINTR
            && errno != EAGAIN && errno != ENOBUFS)
            perror("null_echo: sendto");
    }
}
