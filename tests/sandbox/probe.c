/* sandbox_probe: tries one thing a sandboxed agent must not be able to do
 * (or one it must) and prints "ok" or "denied: <errno text>". Copied into a
 * workspace by the sandbox tests and run there by execute_command. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static int report(int rc) {
  if (rc < 0) { printf("denied: %s\n", strerror(errno)); return 1; }
  printf("ok\n");
  return 0;
}

int main(int argc, char** argv) {
  if (argc < 2) return 2;
  const char* what = argv[1];
  if (!strcmp(what, "read")) return report(open(argv[2], O_RDONLY));
  if (!strcmp(what, "write")) return report(open(argv[2], O_WRONLY | O_CREAT, 0644));
  if (!strcmp(what, "mount")) return report(mount("none", "/tmp", "tmpfs", 0, NULL));
  if (!strcmp(what, "unshare")) return report(unshare(CLONE_NEWUSER));
  if (!strcmp(what, "raw_socket")) return report(socket(AF_INET, SOCK_RAW, IPPROTO_ICMP));
  if (!strcmp(what, "ptrace")) {
    pid_t child = fork();
    if (child == 0) { pause(); _exit(0); }
    int rc = (int) ptrace(PTRACE_ATTACH, child, NULL, NULL);
    int err = errno;
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    errno = err;
    return report(rc);
  }
  if (!strcmp(what, "connect")) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0) return report(s);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons((unsigned short) atoi(argv[2]));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return report(connect(s, (struct sockaddr*) &a, sizeof a));
  }
  if (!strcmp(what, "forkbomb")) {
    /* Fork until the pids limit says no; report how many, then clean up. */
    int n = 0;
    for (;;) {
      pid_t p = fork();
      if (p == 0) { pause(); _exit(0); }
      if (p < 0) break;
      if (++n > 100000) break;
    }
    printf("forked %d then: %s\n", n, strerror(errno));
    fflush(stdout);
    kill(0, SIGKILL); /* our process group: the command's own */
    return 0;
  }
  if (!strcmp(what, "alloc")) {
    /* Touch memory until the OOM killer stops us. */
    for (;;) {
      char* p = malloc(1 << 20);
      if (!p) { printf("malloc failed\n"); return 1; }
      memset(p, 1, 1 << 20);
    }
  }
  return 2;
}
