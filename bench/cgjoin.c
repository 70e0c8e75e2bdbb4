/* cgjoin: join a cgroup, then exec a program. bench/relay.py puts it before
 * `mailkeep deliver` in Exim's pipe transport, so the copier's CPU time is counted apart
 * from Exim's (the pipe is started by Exim and would be in Exim's cgroup).
 * usage: cgjoin CGROUP_PROCS_FILE PROGRAM [ARGS...]
 * Its own exec (a few hundred microseconds) is counted in Exim's cgroup. */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: cgjoin CGROUP_PROCS_FILE PROGRAM [ARGS...]\n");
        return 64;
    }
    int fd = open(argv[1], O_WRONLY | O_CLOEXEC);
    char pid[24];
    int n = snprintf(pid, sizeof pid, "%d\n", (int)getpid());
    if (fd < 0 || write(fd, pid, (size_t)n) != n) {
        perror("cgjoin: cannot join the cgroup");
        return 75;
    }
    close(fd);
    execv(argv[2], argv + 2);
    perror("cgjoin: exec");
    return 75;
}
