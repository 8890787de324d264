#include "faults.hpp"

#include "agentvisor/guest_protocol.hpp"
#include "agentvisor/json.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <system_error>
#include <thread>

namespace agentvisor::guest {

void fault_exit(int code) {
  ::_exit(code);
}

void fault_abort() {
  std::abort();
}

namespace {

[[noreturn]] void allocate_until_killed() {
  // Pin the guest's own code and data first: otherwise, near the limit, the
  // kernel keeps reclaiming and re-reading them (no swap takes the anonymous
  // pages), and the guest thrashes for seconds before the OOM kill, long
  // enough for the watchdog to call it hung. Best effort: RLIMIT_MEMLOCK
  // may be too small, and then it thrashes a little longer.
  (void) ::mlockall(MCL_CURRENT);
  std::size_t chunk = std::size_t{64} << 20;
  std::size_t total = 0;
  const auto page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  while (true) {
    void* p = ::mmap(nullptr, chunk, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
      if (chunk > page) {
        chunk /= 2;
        continue;
      }
      std::fprintf(stderr, "agentvisor-guest: oom fault: no memory left after %zu MiB and no OOM kill\n",
                   total >> 20);
      std::abort();
    }
    std::memset(p, 0xA5, chunk); // touch every page
    total += chunk;
  }
}

} // namespace

void fault_oom() {
  try {
    std::thread(allocate_until_killed).detach();
  } catch (const std::system_error& e) {
    std::fprintf(stderr, "agentvisor-guest: oom fault: no thread (%s), allocating inline\n",
                 e.what());
    allocate_until_killed();
  }
}

std::size_t fault_garbage(garbage_kind what, std::string& out) {
  const std::size_t start = out.size();
  switch (what) {
    case garbage_kind::malformed:
      out += "this is not JSON {\"type\":\"heartbeat\"";
      break;
    case garbage_kind::oversized: {
      // A well-formed heartbeat but for its size: one byte over the limit.
      constexpr std::string_view head =
        "{\"type\":\"heartbeat\",\"seq\":0,\"memory_bytes\":0,\"uptime_ms\":0,\"padding\":\"";
      constexpr std::string_view tail = "\"}";
      out += head;
      out.append(max_guest_line_bytes + 1 - head.size() - tail.size(), 'x');
      out += tail;
      break;
    }
    case garbage_kind::unknown_type:
      out += "{\"type\":\"teleport\"}";
      break;
    case garbage_kind::orphan_result:
      encode_result_ok(garbage_result_id, "{}", out);
      out.pop_back(); // its newline: added below like the others'
      break;
  }
  const std::size_t n = out.size() - start;
  out += '\n';
  return n;
}

namespace {

/// In a job child: undo what the guest set up for itself.
void child_reset() {
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  ::signal(SIGPIPE, SIG_DFL);
  ::signal(SIGTERM, SIG_DFL);
  ::signal(SIGINT, SIG_DFL);
}

void report(int fd, unsigned long long count, int err) {
  char buf[48];
  int n = std::snprintf(buf, sizeof buf, "%llu %d\n", count, err);
  if (n > 0) (void)!::write(fd, buf, static_cast<std::size_t>(n));
}

uint64_t now_ms() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000 + static_cast<uint64_t>(ts.tv_nsec) / 1'000'000;
}

[[noreturn]] void cpu_hog_child(int fd, uint32_t ms) {
  uint64_t start = now_ms();
  volatile uint64_t sink = 0;
  while (now_ms() - start < ms)
    for (int i = 0; i < 100000; ++i) sink = sink + static_cast<uint64_t>(i);
  report(fd, now_ms() - start, 0);
  ::_exit(0);
}

[[noreturn]] void disk_fill_child(int fd, const workspace& ws) {
  auto file = ws.open_relative(disk_fill_file, disk_fill_file, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (!file) {
    report(fd, 0, errno != 0 ? errno : EIO);
    ::_exit(1);
  }
  static char block[1 << 20];
  std::memset(block, 0x5A, sizeof block);
  unsigned long long written = 0;
  while (true) {
    ssize_t n = ::write(file->get(), block, sizeof block);
    if (n > 0) {
      written += static_cast<unsigned long long>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    int e = n < 0 ? errno : ENOSPC;
    ::fsync(file->get());
    report(fd, written, e);
    ::_exit(e == ENOSPC || e == EDQUOT ? 0 : 1);
  }
}

[[noreturn]] void fork_bomb_child(int fd) {
  ::setpgid(0, 0);
  // If memory runs out before pids.max does (large processes: a sanitizer
  // build), the OOM killer must pick the bomb, not the guest. Raising one's
  // own score needs no privilege, but the entry of a process forked from
  // the set-uid guest is root's until it is dumpable again.
  ::prctl(PR_SET_DUMPABLE, 1);
  if (int adj = ::open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC); adj >= 0) {
    (void) !::write(adj, "1000", 4);
    ::close(adj);
  }
  unsigned long long forked = 0;
  int err = 0;
  while (true) {
    pid_t p = ::fork();
    if (p == 0) {
      while (true) ::pause();
    }
    if (p < 0) {
      err = errno;
      break;
    }
    ++forked;
  }
  report(fd, forked, err);
  ::kill(0, SIGKILL); // the whole group, this process included
  ::_exit(0);
}

} // namespace

fault_jobs::~fault_jobs() {
  for (auto& j : jobs_) {
    if (j.reaped) continue;
    ::kill(-j.pid, SIGKILL);
    ::waitpid(j.pid, nullptr, 0);
  }
}

status fault_jobs::start(const fault& f, const workspace& ws) {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) return errno_error("fault: pipe", errno);
  unique_fd rd(p[0]);
  unique_fd wr(p[1]);
  pid_t pid = ::fork();
  if (pid < 0) return errno_error("fault: fork", errno);
  if (pid == 0) {
    child_reset();
    rd.release(); // never close in the child: no destructor runs anyway
    switch (f.kind) {
      case fault_kind::cpu_hog: cpu_hog_child(wr.get(), f.ms);
      case fault_kind::disk_fill: disk_fill_child(wr.get(), ws);
      case fault_kind::fork_bomb: fork_bomb_child(wr.get());
      default: ::_exit(127);
    }
  }
  // Its own process group (fork_bomb also sets it from inside).
  ::setpgid(pid, pid);
  ::fcntl(rd.get(), F_SETFL, O_NONBLOCK);
  job j;
  j.f = f;
  j.pid = pid;
  j.report = std::move(rd);
  jobs_.push_back(std::move(j));
  return std::nullopt;
}

bool fault_jobs::on_exit(pid_t pid) {
  for (auto& j : jobs_) {
    if (j.reaped || j.pid != pid) continue;
    ::kill(-pid, SIGKILL);
    while (::waitpid(pid, &j.wstatus, 0) < 0 && errno == EINTR) {
    }
    j.reaped = true;
    j.reaped_at = std::chrono::steady_clock::now();
    char buf[64];
    ssize_t n = ::read(j.report.get(), buf, sizeof buf - 1);
    if (n > 0) j.text.assign(buf, static_cast<std::size_t>(n));
    j.report.reset();
    return true;
  }
  return false;
}

void fault_jobs::flush_results(std::string& out) {
  std::size_t kept = 0;
  for (std::size_t i = 0; i < jobs_.size(); ++i) {
    auto& j = jobs_[i];
    bool finished = j.reaped && ((::kill(-j.pid, 0) != 0 && errno == ESRCH) ||
                                 std::chrono::steady_clock::now() - j.reaped_at >
                                   std::chrono::seconds(5));
    if (!finished) {
      if (kept != i) jobs_[kept] = std::move(jobs_[i]);
      ++kept;
      continue;
    }
    if (!j.f.id) continue;
    unsigned long long count = 0;
    int err = 0;
    std::string_view t = j.text;
    auto r = std::from_chars(t.data(), t.data() + t.size(), count);
    bool reported = r.ec == std::errc{};
    if (reported && r.ptr < t.data() + t.size())
      std::from_chars(r.ptr + 1, t.data() + t.size(), err);

    json::writer w(out);
    w.begin_object().field("type", "result").field("id", *j.f.id).field("ok", true)
      .key("result").begin_object().field("kind", to_string(j.f.kind)).field("pid", j.pid);
    switch (j.f.kind) {
      case fault_kind::cpu_hog: w.field("ms", static_cast<uint64_t>(count)); break;
      case fault_kind::disk_fill: w.field("path", disk_fill_file).field("bytes", static_cast<uint64_t>(count)); break;
      case fault_kind::fork_bomb: w.field("forked", static_cast<uint64_t>(count)); break;
      default: break;
    }
    if (err != 0) w.field("error", std::strerror(err));
    w.key("exit_code");
    if (WIFEXITED(j.wstatus)) w.value(WEXITSTATUS(j.wstatus)); else w.value(nullptr);
    w.key("signal");
    if (WIFSIGNALED(j.wstatus)) w.value(WTERMSIG(j.wstatus)); else w.value(nullptr);
    w.field("reported", reported).end_object().end_object();
    out += '\n';
  }
  jobs_.resize(kept);
}

void fault_jobs::kill_all() {
  for (auto& j : jobs_) ::kill(-j.pid, SIGKILL);
}

} // namespace agentvisor::guest
