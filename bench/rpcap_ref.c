/* Reference RPCAP client for the capture benchmark: what libpcap itself does with rpcap:// + pcap_dump.
 *
 *   rpcap_ref URL FILTER OUT.pcap SECONDS [READ_TIMEOUT_MS]
 *
 * Opens URL (rpcap://host:port/iface) with null auth, excludes its own RPCAP traffic
 * (PCAP_OPENFLAG_NOCAPTURE_RPCAP, as our client does), starts the capture, prints "ready" on stderr,
 * dumps every packet until SECONDS have passed, then prints one JSON line on stdout:
 * {"written": N, "ps_recv": .., "ps_drop": .., "ps_ifdrop": ..} (pcap_stats: rpcapd's counters).
 * Link against the remote-enabled libpcap.a built from the same source as rpcapd.
 */
#include <pcap/pcap.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static pcap_t *handle;
static unsigned long long written;

static void on_alarm(int sig) { (void)sig; pcap_breakloop(handle); }

static void dump(u_char *user, const struct pcap_pkthdr *h, const u_char *bytes) {
    pcap_dump(user, h, bytes);
    written++;
}

int main(int argc, char **argv) {
    char errbuf[PCAP_ERRBUF_SIZE];
    struct bpf_program program;
    struct pcap_stat stats;
    struct sigaction sa;
    pcap_dumper_t *out;
    int rc, timeout_ms;

    if (argc < 5) {
        fprintf(stderr, "usage: %s rpcap://HOST:PORT/IFACE FILTER OUT.pcap SECONDS [READ_TIMEOUT_MS]\n", argv[0]);
        return 2;
    }
    timeout_ms = argc > 5 ? atoi(argv[5]) : 1000;
    handle = pcap_open(argv[1], 65535, PCAP_OPENFLAG_NOCAPTURE_RPCAP, timeout_ms, NULL, errbuf);
    if (handle == NULL) { fprintf(stderr, "pcap_open: %s\n", errbuf); return 1; }
    if (pcap_compile(handle, &program, argv[2], 1, PCAP_NETMASK_UNKNOWN) == -1
        || pcap_setfilter(handle, &program) == -1) {
        fprintf(stderr, "filter: %s\n", pcap_geterr(handle)); return 1;
    }
    pcap_freecode(&program);
    out = pcap_dump_open(handle, argv[3]);
    if (out == NULL) { fprintf(stderr, "pcap_dump_open: %s\n", pcap_geterr(handle)); return 1; }

    /* The remote capture starts on the first read; do that before saying "ready". */
    if (pcap_dispatch(handle, 1, dump, (u_char *)out) < 0) {
        fprintf(stderr, "start: %s\n", pcap_geterr(handle)); return 1;
    }
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sa.sa_flags = SA_RESTART;   /* recv() mid-packet resumes; select() still returns EINTR */
    sigaction(SIGALRM, &sa, NULL);
    alarm((unsigned)atoi(argv[4]));
    fprintf(stderr, "ready\n");

    rc = pcap_loop(handle, -1, dump, (u_char *)out);
    if (rc == PCAP_ERROR) { fprintf(stderr, "pcap_loop: %s\n", pcap_geterr(handle)); return 1; }
    pcap_dump_close(out);
    if (pcap_stats(handle, &stats) == -1) {
        fprintf(stderr, "pcap_stats: %s\n", pcap_geterr(handle));
        memset(&stats, 0, sizeof stats);
    }
    printf("{\"written\": %llu, \"ps_recv\": %u, \"ps_drop\": %u, \"ps_ifdrop\": %u}\n",
           written, stats.ps_recv, stats.ps_drop, stats.ps_ifdrop);
    pcap_close(handle);
    return 0;
}
