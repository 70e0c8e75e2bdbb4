/* floor: the least work a durable Maildir delivery can do, as a yardstick.
 *
 * Per message: open tmp/NAME with O_CREAT|O_EXCL, write, fsync, link into new/NAME,
 * fsync new/, unlink tmp/NAME. No parsing, no header lines, no checks.
 *
 *   floor one MAILDIR [nosync|nodirsync]
 *                                       one message from stdin (run once per message);
 *                                       nodirsync: the file's fsync but not new/'s, which
 *                                       is what safecat and mdeliver do
 *   floor files MAILDIR LIST [nosync]   every file named in LIST, in this one process
 *   floor mbox MAILDIR MBOX [nosync|batch]
 *                                       every message of an mbox (split at "From " after
 *                                       a blank line, From_ line dropped), in-process;
 *                                       batch: stage 2048 messages, one syncfs, link
 *                                       them all, one fsync of new/ (replay's design)
 *
 * In-process modes print one JSON object: messages, wall seconds, user and system CPU.
 *
 * Built with -DWITH_SQLITE and SQLite's amalgamation (bench/run.sh does it as floor-dedup):
 *
 *   floor-dedup one MAILDIR STORE [lookup]
 *                                       `floor one` inside the least SQLite work a delivery with
 *                                       `--dedup` does (src/dedup.rs): open STORE as mailkeep
 *                                       sets it up, claim a new key, store the message, commit
 *                                       the key, close. What it costs above `floor one` is the
 *                                       price of an SQLite store per process, whatever the
 *                                       program around it does. lookup: open the store and look
 *                                       the key up, write nothing, the least any dedup check
 *                                       kept in SQLite can cost a process
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

enum sync_mode { FULL, NOSYNC, NODIRSYNC, BATCH };

static int tmpfd, newfd;
static char host[256];
static unsigned long q;

static void die(const char *what) { perror(what); exit(75); }

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void open_maildir(const char *md) {
    int d = open(md, O_DIRECTORY | O_RDONLY | O_CLOEXEC);
    if (d < 0) die(md);
    tmpfd = openat(d, "tmp", O_DIRECTORY | O_RDONLY | O_CLOEXEC);
    newfd = openat(d, "new", O_DIRECTORY | O_RDONLY | O_CLOEXEC);
    if (tmpfd < 0 || newfd < 0) die("tmp/ or new/");
    close(d);
    if (gethostname(host, sizeof host - 1) < 0) strcpy(host, "localhost");
}

/* Creates tmp/NAME exclusively; returns the fd and leaves the name in `name`. */
static int create(char *name, size_t len) {
    for (;;) {
        struct timeval t;
        gettimeofday(&t, NULL);
        snprintf(name, len, "%ld.M%ldP%dQ%lu.%s", (long)t.tv_sec, (long)t.tv_usec, (int)getpid(), ++q, host);
        int fd = openat(tmpfd, name, O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd >= 0) return fd;
        if (errno != EEXIST) die("create");
    }
}

static void write_all(int fd, const char *p, size_t n) {
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0) { if (errno == EINTR) continue; die("write"); }
        p += w;
        n -= (size_t)w;
    }
}

static void publish(const char *name, int sync_dir) {
    if (linkat(tmpfd, name, newfd, name, 0) < 0) die("link");
    if (sync_dir && fsync(newfd) < 0) die("fsync new/");
    if (unlinkat(tmpfd, name, 0) < 0) die("unlink");
}

#ifdef WITH_SQLITE
#include "sqlite3.h"

static sqlite3 *db;
static int lookup_only;

static void sql_ok(int rc, const char *what) {
    if (rc == SQLITE_OK || rc == SQLITE_DONE || rc == SQLITE_ROW) return;
    fprintf(stderr, "floor-dedup: %s: %s\n", what, db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
    exit(75);
}

/* One statement with the key as ?1, the pid as ?2 and the time as ?3; returns its first
 * column when it gives a row (-1 otherwise). */
static long run(const char *query, const char *key) {
    sqlite3_stmt *st;
    sql_ok(sqlite3_prepare_v2(db, query, -1, &st, NULL), query);
    if (key) sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    if (sqlite3_bind_parameter_count(st) >= 3) {
        sqlite3_bind_int64(st, 2, getpid());
        sqlite3_bind_int64(st, 3, time(NULL));
    }
    int rc = sqlite3_step(st);
    sql_ok(rc, query);
    long v = rc == SQLITE_ROW ? (long)sqlite3_column_int64(st, 0) : -1;
    sqlite3_finalize(st);
    return v;
}

#define BODY_SQL "X'0000000000000000000000000000000000000000000000000000000000000000'"

/* Store::open and Store::claim of src/dedup.rs, with their settings and statements. */
static void dedup_claim(const char *store, const char *key) {
    sql_ok(sqlite3_open_v2(store, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX |
                                           SQLITE_OPEN_NOFOLLOW, NULL), store);
    sqlite3_busy_timeout(db, 30000);
    run("PRAGMA synchronous = NORMAL", NULL);
    sql_ok(sqlite3_db_config(db, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, (int *)0), "NO_CKPT_ON_CLOSE");
    run("PRAGMA wal_autocheckpoint = 64", NULL);
    if (run("PRAGMA user_version", NULL) < 2) {
        run("PRAGMA journal_mode = WAL", NULL);
        sql_ok(sqlite3_exec(db, "CREATE TABLE IF NOT EXISTS seen (user TEXT NOT NULL, folder TEXT NOT NULL, "
                                "msgid TEXT NOT NULL, body BLOB NOT NULL, committed INTEGER NOT NULL, file TEXT, "
                                "owner_pid INTEGER NOT NULL, at INTEGER NOT NULL, "
                                "PRIMARY KEY (user, folder, msgid, body)) WITHOUT ROWID;"
                                "CREATE INDEX IF NOT EXISTS seen_at ON seen(at); PRAGMA user_version = 2;",
                            NULL, NULL, NULL), "schema");
    }
    /* The body digest: a constant here (the key differs by Message-ID), a bound SHA-256 there. */
    if (lookup_only) {
        run("SELECT committed FROM seen WHERE user = 'alice' AND folder = 'INBOX' AND msgid = ?1 AND body = " BODY_SQL, key);
        return;
    }
    run("INSERT INTO seen (user, folder, msgid, body, committed, file, owner_pid, at) "
        "VALUES ('alice', 'INBOX', ?1, " BODY_SQL ", 0, NULL, ?2, ?3) ON CONFLICT DO NOTHING", key);
    if (sqlite3_changes(db) != 1) { fprintf(stderr, "floor-dedup: key %s taken\n", key); exit(75); }
    /* Store::owned: is another body known under this Message-ID? */
    run("SELECT EXISTS (SELECT 1 FROM seen WHERE user = 'alice' AND folder = 'INBOX' AND msgid = ?1 AND body <> " BODY_SQL ")",
        key);
}

/* Store::commit, then the connection closes as the process ends. */
static void dedup_commit(const char *key, const char *file) {
    if (lookup_only) {
        sql_ok(sqlite3_close(db), "close");
        return;
    }
    run("BEGIN", NULL);
    sqlite3_stmt *st;
    const char *q = "UPDATE seen SET committed = 1, file = ?2 WHERE user = 'alice' AND folder = 'INBOX' "
                    "AND msgid = ?1 AND body = " BODY_SQL " AND owner_pid = ?3";
    sql_ok(sqlite3_prepare_v2(db, q, -1, &st, NULL), q);
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, file, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, getpid());
    sql_ok(sqlite3_step(st), q);
    sqlite3_finalize(st);
    run("COMMIT", NULL);
    sql_ok(sqlite3_close(db), "close");
}
#endif

static void store(const char *p, size_t n, enum sync_mode mode) {
    char name[512];
    int fd = create(name, sizeof name);
    write_all(fd, p, n);
    if ((mode == FULL || mode == NODIRSYNC) && fsync(fd) < 0) die("fsync");
    close(fd);
    publish(name, mode == FULL);
}

static void report(long n, double t0) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("{\"messages\": %ld, \"wall_s\": %.6f, \"user_s\": %.6f, \"sys_s\": %.6f, \"max_rss_kb\": %ld}\n", n,
           now() - t0, ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6, ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6,
           ru.ru_maxrss);
}

/* Batch mode: names staged but not yet published. */
static char **staged;
static size_t nstaged, staged_bytes;
#define BATCH_MESSAGES 2048
#define BATCH_BYTES (64u << 20)

static void flush_batch(void) {
    if (!nstaged) return;
    if (syncfs(tmpfd) < 0) die("syncfs");
    for (size_t i = 0; i < nstaged; i++)
        if (linkat(tmpfd, staged[i], newfd, staged[i], 0) < 0) die("link");
    if (fsync(newfd) < 0) die("fsync new/");
    for (size_t i = 0; i < nstaged; i++) {
        unlinkat(tmpfd, staged[i], 0);
        free(staged[i]);
    }
    nstaged = staged_bytes = 0;
}

static void stage(const char *p, size_t n) {
    char name[512];
    int fd = create(name, sizeof name);
    write_all(fd, p, n);
    close(fd);
    staged[nstaged++] = strdup(name);
    staged_bytes += n;
    if (nstaged == BATCH_MESSAGES || staged_bytes >= BATCH_BYTES) flush_batch();
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: floor one|files|mbox MAILDIR [INPUT] [nosync|nodirsync|batch]\n");
        return 64;
    }
    const char *mode_s = argv[1];
    open_maildir(argv[2]);
    enum sync_mode mode = FULL;
    const char *last = argv[argc - 1];
    if (strcmp(last, "nosync") == 0) mode = NOSYNC;
    if (strcmp(last, "batch") == 0) mode = BATCH;
    if (strcmp(last, "nodirsync") == 0) mode = NODIRSYNC;

    if (strcmp(mode_s, "one") == 0) {
        /* Streams stdin into the tmp file, 64 KiB at a time. */
        char name[512], buf[65536];
#ifdef WITH_SQLITE
        /* A new key per message, as in the benchmark's corpus (every Message-ID unique). */
        char key[128];
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        snprintf(key, sizeof key, "%ld.%09ld.%d@floor", (long)ts.tv_sec, ts.tv_nsec, (int)getpid());
        if (argc < 4) { fprintf(stderr, "usage: floor-dedup one MAILDIR STORE [lookup]\n"); return 64; }
        lookup_only = argc >= 5 && strcmp(argv[4], "lookup") == 0;
        dedup_claim(argv[3], key);
#endif
        int fd = create(name, sizeof name);
        for (;;) {
            ssize_t r = read(0, buf, sizeof buf);
            if (r < 0) { if (errno == EINTR) continue; die("read"); }
            if (r == 0) break;
            write_all(fd, buf, (size_t)r);
        }
        if ((mode == FULL || mode == NODIRSYNC) && fsync(fd) < 0) die("fsync");
        close(fd);
        publish(name, mode == FULL);
#ifdef WITH_SQLITE
        dedup_commit(key, name);
#endif
        return 0;
    }
    if (strcmp(mode_s, "files") == 0 && argc >= 4) {
        FILE *list = fopen(argv[3], "r");
        if (!list) die(argv[3]);
        char path[4096];
        size_t cap = 1 << 20;
        char *buf = malloc(cap);
        long n = 0;
        double t0 = now();
        while (fgets(path, sizeof path, list)) {
            path[strcspn(path, "\n")] = 0;
            if (!*path) continue;
            int in = open(path, O_RDONLY | O_CLOEXEC);
            if (in < 0) die(path);
            size_t len = 0;
            for (;;) {
                if (len == cap) buf = realloc(buf, cap *= 2);
                ssize_t r = read(in, buf + len, cap - len);
                if (r < 0) die("read");
                if (r == 0) break;
                len += (size_t)r;
            }
            close(in);
            store(buf, len, mode);
            n++;
        }
        report(n, t0);
        return 0;
    }
    if (strcmp(mode_s, "mbox") == 0 && argc >= 4) {
        int in = open(argv[3], O_RDONLY | O_CLOEXEC);
        struct stat st;
        if (in < 0 || fstat(in, &st) < 0) die(argv[3]);
        const char *base = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, in, 0);
        if (base == MAP_FAILED) die("mmap");
        madvise((void *)base, (size_t)st.st_size, MADV_SEQUENTIAL);
        const char *end = base + st.st_size, *p = base;
        staged = malloc(BATCH_MESSAGES * sizeof *staged);
        long n = 0;
        double t0 = now();
        while (p < end) {
            /* p is at a From_ line: the message starts after it. */
            const char *body = memchr(p, '\n', (size_t)(end - p));
            body = body ? body + 1 : end;
            const char *next = body;
            for (;;) {
                next = memmem(next, (size_t)(end - next), "\n\nFrom ", 7);
                if (!next) { next = end; break; }
                next += 2;
                break;
            }
            /* the blank line before the next From_ line belongs to the mbox, not the message */
            size_t len = (size_t)(next - body);
            if (next != end && len > 0) len--;
            if (mode == BATCH) stage(body, len); else store(body, len, mode);
            n++;
            p = next;
        }
        if (mode == BATCH) flush_batch();
        report(n, t0);
        return 0;
    }
    fprintf(stderr, "floor: bad arguments\n");
    return 64;
}
