/* drive: runs one command per message, as an MTA does, and measures it.
 *
 *   drive LISTFILE OUTDIR -- COMMAND [ARG]...
 *
 * For each path in LISTFILE (one a line), forks, makes that file the child's stdin
 * (stdout and stderr go to OUTDIR/stderr.log, appended), execs COMMAND and waits for it
 * with wait4. Prints one JSON object: messages, failures (non-zero exit or signal), the
 * wall time of the whole loop, the children's user and system CPU (summed) and the
 * largest child's peak RSS. The driver itself does nothing else between children, so its
 * overhead (one fork+open+wait per message) is the same for every tool.
 *
 *   drive -s COMMAND [ARG]...
 *
 * Start-up probe: runs COMMAND with stdin an empty pipe that stays open, waits until the
 * child blocks in read(0, ...) (from /proc/PID/syscall), and prints the CPU time it used
 * so far (/proc/PID/schedstat, nanoseconds, user+system incl. exec and dynamic linking).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double tv(struct timeval t) { return t.tv_sec + t.tv_usec / 1e6; }

static int startup_probe(char **argv) {
    int p[2];
    if (pipe(p) < 0) { perror("pipe"); return 2; }
    pid_t pid = fork();
    if (pid < 0) { perror("fork"); return 2; }
    if (pid == 0) {
        dup2(p[0], 0);
        close(p[0]);
        close(p[1]);
        execvp(argv[0], argv);
        _exit(127);
    }
    close(p[0]);
    char path[64], buf[256];
    snprintf(path, sizeof path, "/proc/%d/syscall", (int)pid);
    double deadline = now() + 10;
    int blocked = 0;
    while (now() < deadline) {
        int fd = open(path, O_RDONLY);
        if (fd < 0) break;
        ssize_t n = read(fd, buf, sizeof buf - 1);
        close(fd);
        if (n > 0) {
            buf[n] = 0;
            /* syscall 0 is read(2) on x86-64; its first argument is the fd. */
            if (strncmp(buf, "0 0x0 ", 6) == 0) {
                /* still in the syscall? check the state is S (sleeping) */
                char st[64];
                snprintf(st, sizeof st, "/proc/%d/stat", (int)pid);
                int sfd = open(st, O_RDONLY);
                char sb[512];
                ssize_t m = sfd >= 0 ? read(sfd, sb, sizeof sb - 1) : -1;
                if (sfd >= 0) close(sfd);
                if (m > 0) {
                    sb[m] = 0;
                    char *rp = strrchr(sb, ')');
                    if (rp && rp[2] == 'S') { blocked = 1; break; }
                }
            }
        }
        usleep(200);
    }
    long long ns = -1;
    if (blocked) {
        snprintf(path, sizeof path, "/proc/%d/schedstat", (int)pid);
        FILE *f = fopen(path, "r");
        if (f) { if (fscanf(f, "%lld", &ns) != 1) ns = -1; fclose(f); }
    }
    kill(pid, SIGKILL);
    close(p[1]);
    waitpid(pid, NULL, 0);
    printf("{\"blocked_in_read\": %s, \"cpu_ns\": %lld}\n", blocked ? "true" : "false", ns);
    return blocked ? 0 : 1;
}

int main(int argc, char **argv) {
    if (argc >= 3 && strcmp(argv[1], "-s") == 0) return startup_probe(argv + 2);
    if (argc < 5 || strcmp(argv[3], "--") != 0) {
        fprintf(stderr, "usage: drive LISTFILE OUTDIR -- COMMAND [ARG]...\n       drive -s COMMAND [ARG]...\n");
        return 2;
    }
    FILE *list = fopen(argv[1], "r");
    if (!list) { perror(argv[1]); return 2; }
    /* Read every path first: no file reading of the list inside the timed loop. */
    size_t cap = 1024, n = 0;
    char **paths = malloc(cap * sizeof *paths);
    char line[4096];
    while (fgets(line, sizeof line, list)) {
        line[strcspn(line, "\n")] = 0;
        if (!*line) continue;
        if (n == cap) paths = realloc(paths, (cap *= 2) * sizeof *paths);
        paths[n++] = strdup(line);
    }
    fclose(list);
    char errpath[4096];
    snprintf(errpath, sizeof errpath, "%s/stderr.log", argv[2]);
    int errfd = open(errpath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (errfd < 0) { perror(errpath); return 2; }
    char **cmd = argv + 4;
    long failures = 0;
    int first_status = 0;
    double utime = 0, stime = 0;
    long maxrss = 0;
    double t0 = now();
    for (size_t i = 0; i < n; i++) {
        int in = open(paths[i], O_RDONLY | O_CLOEXEC);
        if (in < 0) { perror(paths[i]); return 2; }
        pid_t pid = fork();
        if (pid < 0) { perror("fork"); return 2; }
        if (pid == 0) {
            dup2(in, 0);
            dup2(errfd, 1);
            dup2(errfd, 2);
            execvp(cmd[0], cmd);
            _exit(127);
        }
        close(in);
        int status;
        struct rusage ru;
        while (wait4(pid, &status, 0, &ru) < 0) {
            if (errno != EINTR) { perror("wait4"); return 2; }
        }
        utime += tv(ru.ru_utime);
        stime += tv(ru.ru_stime);
        if (ru.ru_maxrss > maxrss) maxrss = ru.ru_maxrss;
        if (!(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
            if (!failures) first_status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
            failures++;
        }
    }
    double wall = now() - t0;
    printf("{\"messages\": %zu, \"failures\": %ld, \"first_failure_status\": %d, \"wall_s\": %.6f, "
           "\"user_s\": %.6f, \"sys_s\": %.6f, \"max_rss_kb\": %ld}\n",
           n, failures, first_status, wall, utime, stime, maxrss);
    return 0;
}
