// The built-in profile, equivalent to Kubernetes' RuntimeDefault (the
// containerd/moby default): an allow-list of ordinary syscalls; namespace
// creation, mounting, keyrings, module loading, ptrace, bpf, perf, kexec,
// reboot, clock setting and the like fall through to EPERM.
#include <sched.h>

#include "skiff/runtime/spec.h"

namespace skiff::runtime {

Seccomp RuntimeDefaultSeccomp() {
  Seccomp s;
  s.default_action = "SCMP_ACT_ERRNO";
  s.default_errno_ret = 1;  // EPERM
  s.architectures = {"SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"};
  SeccompSyscall allow;
  allow.action = "SCMP_ACT_ALLOW";
  allow.names = {
      "accept", "accept4", "access", "adjtimex", "alarm", "bind", "brk", "cachestat", "capget", "capset",
      "chdir", "chmod", "chown", "chown32", "clock_adjtime", "clock_getres", "clock_gettime",
      "clock_nanosleep", "close", "close_range", "connect", "copy_file_range", "creat", "dup", "dup2",
      "dup3", "epoll_create", "epoll_create1", "epoll_ctl", "epoll_ctl_old", "epoll_pwait",
      "epoll_pwait2", "epoll_wait", "epoll_wait_old", "eventfd", "eventfd2", "execve", "execveat",
      "exit", "exit_group", "faccessat", "faccessat2", "fadvise64", "fallocate", "fanotify_mark",
      "fchdir", "fchmod", "fchmodat", "fchmodat2", "fchown", "fchownat", "fcntl", "fdatasync",
      "fgetxattr", "flistxattr", "flock", "fork", "fremovexattr", "fsetxattr", "fstat", "fstatfs",
      "fsync", "ftruncate", "futex", "futex_requeue", "futex_time64", "futex_wait", "futex_waitv",
      "futex_wake", "futimesat", "getcpu", "getcwd", "getdents", "getdents64", "getegid", "geteuid",
      "getgid", "getgroups", "getitimer", "getpeername", "getpgid", "getpgrp", "getpid", "getppid",
      "getpriority", "getrandom", "getresgid", "getresuid", "getrlimit", "get_robust_list",
      "getrusage", "getsid", "getsockname", "getsockopt", "get_thread_area", "gettid",
      "gettimeofday", "getuid", "getxattr", "inotify_add_watch", "inotify_init", "inotify_init1",
      "inotify_rm_watch", "io_cancel", "ioctl", "io_destroy", "io_getevents", "io_pgetevents",
      "ioprio_get", "ioprio_set", "io_setup", "io_submit", "ipc", "kill", "landlock_add_rule",
      "landlock_create_ruleset", "landlock_restrict_self", "lchown", "lgetxattr", "link", "linkat",
      "listen", "listxattr", "llistxattr", "lremovexattr", "lseek", "lsetxattr", "lstat", "madvise",
      "map_shadow_stack", "membarrier", "memfd_create", "memfd_secret", "mincore", "mkdir", "mkdirat",
      "mknod", "mknodat", "mlock", "mlock2", "mlockall", "mmap", "mprotect", "mq_getsetattr",
      "mq_notify", "mq_open", "mq_timedreceive", "mq_timedsend", "mq_unlink", "mremap", "msgctl",
      "msgget", "msgrcv", "msgsnd", "msync", "munlock", "munlockall", "munmap", "name_to_handle_at",
      "nanosleep", "newfstatat", "open", "openat", "openat2", "pause", "pidfd_open",
      "pidfd_send_signal", "pipe", "pipe2", "pkey_alloc", "pkey_free", "pkey_mprotect", "poll",
      "ppoll", "prctl", "pread64", "preadv", "preadv2", "prlimit64", "process_mrelease", "pselect6",
      "pwrite64", "pwritev", "pwritev2", "read", "readahead", "readlink", "readlinkat", "readv",
      "recv", "recvfrom", "recvmmsg", "recvmsg", "remap_file_pages", "removexattr", "rename",
      "renameat", "renameat2", "restart_syscall", "rmdir", "rseq", "rt_sigaction", "rt_sigpending",
      "rt_sigprocmask", "rt_sigqueueinfo", "rt_sigreturn", "rt_sigsuspend", "rt_sigtimedwait",
      "rt_tgsigqueueinfo", "sched_getaffinity", "sched_getattr", "sched_getparam",
      "sched_get_priority_max", "sched_get_priority_min", "sched_getscheduler",
      "sched_rr_get_interval", "sched_setaffinity", "sched_setattr", "sched_setparam",
      "sched_setscheduler", "sched_yield", "seccomp", "select", "semctl", "semget", "semop",
      "semtimedop", "send", "sendfile", "sendmmsg", "sendmsg", "sendto", "setfsgid", "setfsuid",
      "setgid", "setgroups", "setitimer", "setpgid", "setpriority", "setregid", "setresgid",
      "setresuid", "setreuid", "setrlimit", "set_robust_list", "setsid", "setsockopt",
      "set_thread_area", "set_tid_address", "setuid", "setxattr", "shmat", "shmctl", "shmdt",
      "shmget", "shutdown", "sigaltstack", "signalfd", "signalfd4", "sigreturn", "socketcall",
      "socketpair", "splice", "stat", "statfs", "statx", "symlink", "symlinkat", "sync",
      "sync_file_range", "syncfs", "sysinfo", "tee", "tgkill", "time", "timer_create",
      "timer_delete", "timer_getoverrun", "timer_gettime", "timer_settime", "timerfd_create",
      "timerfd_gettime", "timerfd_settime", "times", "tkill", "truncate", "ugetrlimit", "umask",
      "uname", "unlink", "unlinkat", "utime", "utimensat", "utimes", "vfork", "vmsplice", "wait4",
      "waitid", "waitpid", "write", "writev", "arch_prctl", "modify_ldt", "socket", "getpgrp",
  };
  s.syscalls.push_back(allow);
  // personality: only the harmless personas.
  for (uint64_t persona : {0x0ull, 0x0008ull, 0x20000ull, 0x20008ull, 0xffffffffull}) {
    SeccompSyscall p;
    p.names = {"personality"};
    p.action = "SCMP_ACT_ALLOW";
    p.args.push_back({0, persona, 0, "SCMP_CMP_EQ"});
    s.syscalls.push_back(p);
  }
  // clone: allowed unless it asks for a new namespace.
  SeccompSyscall clone;
  clone.names = {"clone"};
  clone.action = "SCMP_ACT_ALLOW";
  const uint64_t kNsFlags = CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID |
                            CLONE_NEWNET | CLONE_NEWCGROUP;
  clone.args.push_back({0, kNsFlags, 0, "SCMP_CMP_MASKED_EQ"});
  s.syscalls.push_back(clone);
  // clone3 cannot be filtered by flags (they sit behind a pointer): ENOSYS
  // makes libcs fall back to clone.
  SeccompSyscall clone3;
  clone3.names = {"clone3"};
  clone3.action = "SCMP_ACT_ERRNO";
  clone3.errno_ret = 38;  // ENOSYS
  s.syscalls.push_back(clone3);
  return s;
}

}  // namespace skiff::runtime
