// A static helper copied into test rootfs: tries one privileged operation and
// prints "<op> ok" or "<op> errno=<n>".
#include <fcntl.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

int main(int argc, char** argv) {
  if (argc < 2) return 2;
  const char* op = argv[1];
  long rc = -1;
  if (!strcmp(op, "mount")) rc = mount("none", "/tmp", "tmpfs", 0, nullptr);
  else if (!strcmp(op, "unshare")) rc = unshare(CLONE_NEWUTS);
  else if (!strcmp(op, "keyctl")) rc = syscall(SYS_keyctl, 1 /*KEYCTL_JOIN_SESSION_KEYRING*/, 0);
  else if (!strcmp(op, "ptrace")) rc = ptrace(PTRACE_ATTACH, 1, nullptr, nullptr);
  else if (!strcmp(op, "init_module")) rc = syscall(SYS_finit_module, -1, "", 0);
  else if (!strcmp(op, "chown")) rc = chown("/dev", 1, 1);
  else return 2;
  if (rc < 0) printf("%s errno=%d\n", op, errno);
  else printf("%s ok\n", op);
  return 0;
}
