/* UDP echo for the networking e2e test (built static into a scratch image).
 *   udpecho PORT              answer each datagram with "$HOSTNAME <datagram>"
 *   udpecho -c IP PORT TEXT   send TEXT, print the answer (exit 1 after 2 s without one)
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

static int client(const char *ip, int port, const char *text) {
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in to = {0};
    to.sin_family = AF_INET;
    to.sin_port = htons(port);
    if (inet_pton(AF_INET, ip, &to.sin_addr) != 1) { fprintf(stderr, "bad address\n"); return 2; }
    struct timeval tv = {2, 0};
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    sendto(s, text, strlen(text), 0, (struct sockaddr *)&to, sizeof to);
    char buf[2048];
    ssize_t n = recv(s, buf, sizeof buf - 1, 0);
    if (n < 0) { fprintf(stderr, "no answer\n"); return 1; }
    buf[n] = 0;
    printf("%s\n", buf);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 5 && strcmp(argv[1], "-c") == 0) return client(argv[2], atoi(argv[3]), argv[4]);
    int port = argc > 1 ? atoi(argv[1]) : 5353;
    const char *tag = getenv("HOSTNAME");
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = INADDR_ANY;
    if (bind(s, (struct sockaddr *)&a, sizeof a) < 0) { perror("bind"); return 1; }
    char buf[2048], out[2200];
    for (;;) {
        struct sockaddr_in peer;
        socklen_t len = sizeof peer;
        ssize_t n = recvfrom(s, buf, sizeof buf - 1, 0, (struct sockaddr *)&peer, &len);
        if (n < 0) continue;
        buf[n] = 0;
        int m = snprintf(out, sizeof out, "%s %s", tag ? tag : "?", buf);
        sendto(s, out, m, 0, (struct sockaddr *)&peer, len);
    }
}
