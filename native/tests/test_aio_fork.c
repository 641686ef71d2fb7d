/* A file used in a forked child fails with -ECHILD instead of waiting for an
 * engine thread that does not exist there; the parent's file keeps working.
 * The engine and worker threads block signals (issue 18, item 13). */
#include <signal.h>
#include <sys/wait.h>
#include <dirent.h>

#include "tm_test.h"

#define LEN (64 << 10)

static void tm_test_child_gets_echild(int backend) {
    char path[512];
    tm_test_path(path, sizeof(path), "fork");
    tm_file *f = tm_test_open(path, backend, 4, 16384);
    unsigned char *buf = tm_test_buffer(LEN, 2);
    TM_CHECK_EQ(tm_test_transfer(f, TM_OP_WRITE, buf, LEN, 0), LEN);
    tm_request *held = NULL;
    TM_CHECK_EQ(tm_file_submit(f, TM_OP_READ, buf, LEN, 0, &held), 0);
    pid_t pid = fork();
    TM_CHECK(pid >= 0);
    if (pid == 0) {
        alarm(10);  /* a hang in the child is a failure */
        tm_request *r = NULL;
        int64_t res = 0;
        int ok = tm_file_submit(f, TM_OP_WRITE, buf, LEN, 0, &r) == -ECHILD && r == NULL &&
                 tm_request_wait(held, NULL) == -ECHILD &&
                 tm_request_wait_for(held, 1000, &res, NULL) == -ECHILD &&
                 tm_request_poll(held) == -ECHILD && tm_file_sync(f) == -ECHILD &&
                 tm_file_inflight(f) == -ECHILD && tm_file_close(f) == -ECHILD;
        tm_request_free(held);  /* the parent's: left alone */
        _exit(ok ? 0 : 3);
    }
    int status = 0;
    TM_CHECK_EQ(waitpid(pid, &status, 0), pid);
    TM_CHECK(WIFEXITED(status));
    TM_CHECK_EQ(WEXITSTATUS(status), 0);
    TM_CHECK_EQ(tm_request_wait(held, NULL), LEN);
    tm_request_free(held);
    TM_CHECK_EQ(tm_test_transfer(f, TM_OP_WRITE, buf, LEN, LEN), LEN);
    TM_CHECK_EQ(tm_file_close(f), 0);
    munmap(buf, LEN);
    unlink(path);
    printf("ok child_gets_echild %s\n", tm_backend_name(backend));
}

/* SigBlk of thread tid, from /proc. */
static unsigned long long blocked_signals(const char *tid) {
    char p[320], line[256];
    snprintf(p, sizeof(p), "/proc/self/task/%s/status", tid);
    FILE *fp = fopen(p, "r");
    if (!fp) return 0;
    unsigned long long mask = 0;
    while (fgets(line, sizeof(line), fp))
        if (sscanf(line, "SigBlk: %llx", &mask) == 1) break;
    fclose(fp);
    return mask;
}

/* Every thread but this one (the engine, the workers) blocks SIGINT and SIGTERM. */
static void tm_test_threads_block_signals(int backend) {
    char path[512];
    tm_test_path(path, sizeof(path), "sigmask");
    tm_file *f = tm_test_open(path, backend, 4, 16384);
    char self[32];
    snprintf(self, sizeof(self), "%d", (int)getpid());
    DIR *d = opendir("/proc/self/task");
    TM_CHECK(d != NULL);
    int others = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.' || strcmp(e->d_name, self) == 0) continue;
        unsigned long long m = blocked_signals(e->d_name);
        TM_CHECK(m & (1ULL << (SIGINT - 1)));
        TM_CHECK(m & (1ULL << (SIGTERM - 1)));
        others++;
    }
    closedir(d);
    TM_CHECK(others >= 1);
    TM_CHECK_EQ(tm_file_close(f), 0);
    unlink(path);
    printf("ok threads_block_signals %s (%d threads)\n", tm_backend_name(backend), others);
}

int main(void) {
    alarm(60);
    int backends[3];
    int n = tm_test_backends(backends);
    for (int i = 0; i < n; i++) {
        tm_test_child_gets_echild(backends[i]);
        tm_test_threads_block_signals(backends[i]);
    }
    return 0;
}
