/* Load generator for the capture benchmark: RATE datagrams/s of SIZE bytes to 127.0.0.1:PORT for SECONDS.
 *
 *   udp_load PORT RATE SECONDS [SIZE]
 *
 * Each payload starts with the 8-byte tag "RTPBENCH" and a big-endian 64-bit counter (0, 1, 2, ...), so a
 * capture can be checked packet by packet. Paced against CLOCK_MONOTONIC: whatever is due is sent at once,
 * then it sleeps 50 us; prints {"sent": N, "failed": N, "elapsed": S} on stdout.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    unsigned char payload[65507];
    struct sockaddr_in dest;
    struct timespec nap = {0, 50000};
    uint64_t sent = 0, failed = 0, total, due, i;
    double rate, seconds, start, elapsed;
    int fd, size, sndbuf = 4 << 20;

    if (argc < 4) { fprintf(stderr, "usage: %s PORT RATE SECONDS [SIZE]\n", argv[0]); return 2; }
    rate = atof(argv[2]);
    seconds = atof(argv[3]);
    size = argc > 4 ? atoi(argv[4]) : 200;
    if (size < 16 || size > (int)sizeof payload) { fprintf(stderr, "SIZE must be 16..65507\n"); return 2; }
    total = (uint64_t)(rate * seconds + 0.5);
    memset(payload, 'x', (size_t)size);
    memcpy(payload, "RTPBENCH", 8);
    fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0) { perror("socket"); return 1; }
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
    memset(&dest, 0, sizeof dest);
    dest.sin_family = AF_INET;
    dest.sin_port = htons((uint16_t)atoi(argv[1]));
    dest.sin_addr.s_addr = htonl(INADDR_LOOPBACK);

    start = now();
    while (sent + failed < total) {
        due = (uint64_t)((now() - start) * rate) + 1;
        if (due > total) due = total;
        for (i = sent + failed; i < due; i++) {
            uint64_t be = ((uint64_t)htonl((uint32_t)(i >> 32))) | ((uint64_t)htonl((uint32_t)i) << 32);
            memcpy(payload + 8, &be, 8);
            if (sendto(fd, payload, (size_t)size, 0, (struct sockaddr *)&dest, sizeof dest) == size) sent++;
            else failed++;
        }
        if (sent + failed < total) nanosleep(&nap, NULL);
    }
    elapsed = now() - start;
    printf("{\"sent\": %llu, \"failed\": %llu, \"elapsed\": %.6f}\n",
           (unsigned long long)sent, (unsigned long long)failed, elapsed);
    return 0;
}
