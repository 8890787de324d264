// Tests of the libuv I/O thread (include/agentvisor/io.hpp): real child
// processes, real pipes, sockets and signals. A scoped_actor is every
// command's reply_to; each receive has a 10 s guard, and no test sleeps to
// synchronize: commands run in order, so a 0 ms timer is a fence proving the
// loop has run everything submitted before it.

#include "agentvisor/io.hpp"

#include "../support/cgroup2_scratch.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/after.hpp>
#include <caf/deep_to_string.hpp>
#include <caf/scoped_actor.hpp>

#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <optional>
#include <string>
#include <thread>
#include <variant>
#include <vector>

using namespace agentvisor::io;
using namespace std::chrono_literals;

namespace {

// --- Receiving ---------------------------------------------------------------

struct timed_out {};

using any_msg =
  std::variant<timed_out, io_failed, process_started, process_exited,
               timer_fired, fd_ready, signal_received, tcp_listening,
               tcp_accepted, tcp_connected, stream_data, stream_line,
               stream_closed>;

std::string describe(const any_msg& m) {
  return std::visit(
    [](const auto& x) -> std::string {
      if constexpr (std::is_same_v<std::decay_t<decltype(x)>, timed_out>)
        return "nothing (timed out)";
      else
        return caf::deep_to_string(x);
    },
    m);
}

/// The next message for `self`, or timed_out after `t`.
any_msg next(caf::scoped_actor& self, std::chrono::milliseconds t = 10s) {
  any_msg out = timed_out{};
  auto take = [&out](const auto& x) { out = x; };
  self->receive([&](const io_failed& x) { take(x); },
                [&](const process_started& x) { take(x); },
                [&](const process_exited& x) { take(x); },
                [&](const timer_fired& x) { take(x); },
                [&](const fd_ready& x) { take(x); },
                [&](const signal_received& x) { take(x); },
                [&](const tcp_listening& x) { take(x); },
                [&](const tcp_accepted& x) { take(x); },
                [&](const tcp_connected& x) { take(x); },
                [&](const stream_data& x) { take(x); },
                [&](const stream_line& x) { take(x); },
                [&](const stream_closed& x) { take(x); },
                caf::after(t) >> [] {});
  return out;
}

/// The next message, which must be a T.
template <class T>
T expect(caf::scoped_actor& self) {
  auto m = next(self);
  auto* x = std::get_if<T>(&m);
  REQUIRE_MESSAGE(x != nullptr, "expected " << caf::deep_to_string(T{})
                                            << ", got " << describe(m));
  return *x;
}

// --- fds -----------------------------------------------------------------------

/// Closes its fd unless release()d (handed to the I/O thread).
struct fd_guard {
  int fd = -1;
  fd_guard() = default;
  explicit fd_guard(int f) : fd(f) {
  }
  fd_guard(const fd_guard&) = delete;
  fd_guard& operator=(const fd_guard&) = delete;
  ~fd_guard() {
    reset();
  }
  void reset() {
    if (fd >= 0)
      ::close(fd);
    fd = -1;
  }
  int release() {
    return std::exchange(fd, -1);
  }
};

size_t open_fd_count() {
  size_t n = 0;
  for ([[maybe_unused]] auto& entry :
       std::filesystem::directory_iterator("/proc/self/fd"))
    ++n;
  return n;
}

bool fd_is_open(int fd) {
  return ::fcntl(fd, F_GETFD) != -1 || errno != EBADF;
}

void set_io_timeouts(int fd) {
  timeval tv{10, 0};
  REQUIRE(::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) == 0);
  REQUIRE(::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) == 0);
}

std::pair<int, int> make_socketpair() {
  int sp[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) == 0);
  set_io_timeouts(sp[1]);
  return {sp[0], sp[1]};
}

void send_all(int fd, const std::string& bytes) {
  size_t done = 0;
  while (done < bytes.size()) {
    auto n = ::send(fd, bytes.data() + done, bytes.size() - done, MSG_NOSIGNAL);
    REQUIRE_MESSAGE(n > 0, "send: " << std::strerror(errno));
    done += static_cast<size_t>(n);
  }
}

/// Reads until `n` bytes or EOF; fails on the 10 s socket timeout.
std::string recv_n(int fd, size_t n) {
  std::string out;
  char buf[65536];
  while (out.size() < n) {
    auto got = ::recv(fd, buf, std::min(sizeof buf, n - out.size()), 0);
    REQUIRE_MESSAGE(got >= 0, "recv: " << std::strerror(errno));
    if (got == 0)
      break;
    out.append(buf, static_cast<size_t>(got));
  }
  return out;
}

/// Reads until EOF.
std::string recv_all(int fd) {
  return recv_n(fd, std::string::npos);
}

int connect_tcp(int family, const char* ip, uint16_t port) {
  int fd = ::socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(fd >= 0);
  set_io_timeouts(fd);
  sockaddr_storage ss{};
  socklen_t len;
  if (family == AF_INET) {
    auto* sin = reinterpret_cast<sockaddr_in*>(&ss);
    sin->sin_family = AF_INET;
    sin->sin_port = htons(port);
    REQUIRE(::inet_pton(AF_INET, ip, &sin->sin_addr) == 1);
    len = sizeof(sockaddr_in);
  } else {
    auto* sin6 = reinterpret_cast<sockaddr_in6*>(&ss);
    sin6->sin6_family = AF_INET6;
    sin6->sin6_port = htons(port);
    REQUIRE(::inet_pton(AF_INET6, ip, &sin6->sin6_addr) == 1);
    len = sizeof(sockaddr_in6);
  }
  REQUIRE_MESSAGE(::connect(fd, reinterpret_cast<sockaddr*>(&ss), len) == 0,
                  "connect: " << std::strerror(errno));
  return fd;
}

bool ipv6_loopback_available() {
  fd_guard fd{::socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0)};
  if (fd.fd < 0)
    return false;
  sockaddr_in6 sin6{};
  sin6.sin6_family = AF_INET6;
  sin6.sin6_addr = in6addr_loopback;
  return ::bind(fd.fd, reinterpret_cast<sockaddr*>(&sin6), sizeof sin6) == 0;
}

// --- Children made outside libuv -------------------------------------------

int pidfd_open(pid_t pid) {
  return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0u));
}

/// fork()s a child that only calls _exit(code) (safe in a threaded parent).
pid_t fork_exiting(int code) {
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0)
    ::_exit(code);
  return pid;
}

/// fork()s a child that execve()s `sleep 30` (argv built before the fork).
pid_t fork_sleeper() {
  static char sleep_path[] = "/bin/sleep";
  static char thirty[] = "30";
  char* argv[] = {sleep_path, thirty, nullptr};
  char* envp[] = {nullptr};
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::execve(sleep_path, argv, envp);
    ::_exit(127);
  }
  return pid;
}

/// A process_spec with just argv (the rest defaulted).
process_spec command(std::vector<std::string> argv) {
  process_spec spec;
  spec.argv = std::move(argv);
  return spec;
}

// --- The fixture ----------------------------------------------------------------

/// An actor system, a started io_thread and a scoped_actor, destroyed in the
/// order CAF needs (the scoped_actor first, the system last).
struct fixture {
  caf::actor_system_config cfg;
  caf::actor_system sys{cfg};
  io_thread io;
  caf::scoped_actor self{sys};
  bool stopped = false;

  fixture() {
    std::string err;
    REQUIRE_MESSAGE(io.start(&err), err);
    CHECK(io.running());
  }

  ~fixture() {
    stop_and_check();
  }

  /// stop(), then uv_walk's verdict: nothing open.
  void stop_and_check() {
    if (stopped)
      return;
    stopped = true;
    auto report = io.stop();
    CHECK(report.open_handles == 0);
    for (auto& type : report.open_handle_types)
      MESSAGE("still open after stop: " << type);
    CHECK_FALSE(io.running());
  }

  /// Proves the loop ran every command submitted before this call.
  void fence() {
    auto id = io.start_timer(self, 0ms);
    auto t = expect<timer_fired>(self);
    REQUIRE(t.id == id);
  }

  /// Collects messages until `done` says so (or fails on a 10 s silence).
  template <class Done>
  std::vector<any_msg> collect(Done done) {
    std::vector<any_msg> out;
    while (!done(out)) {
      auto m = next(self);
      REQUIRE_MESSAGE(!std::holds_alternative<timed_out>(m),
                      "timed out after " << out.size() << " messages");
      out.push_back(std::move(m));
    }
    return out;
  }
};

template <class T>
const T* find_msg(const std::vector<any_msg>& msgs) {
  for (auto& m : msgs)
    if (auto* x = std::get_if<T>(&m))
      return x;
  return nullptr;
}

} // namespace

// --- Processes -----------------------------------------------------------------

TEST_CASE_FIXTURE(fixture,
                  "spawn_process reports the pid, then the child's exit code") {
  auto id = io.spawn_process(self, command({"/bin/sh", "-c", "exit 3"}));
  auto started = expect<process_started>(self);
  CHECK(started.id == id);
  CHECK(started.pid > 0);
  auto exited = expect<process_exited>(self);
  CHECK(exited.id == id);
  CHECK(exited.pid == started.pid);
  CHECK(exited.exit_status == 3);
  CHECK(exited.term_signal == 0);
}

TEST_CASE_FIXTURE(fixture,
                  "kill with SIGKILL ends a spawned child with term_signal 9") {
  auto id = io.spawn_process(self, command({"sleep", "30"}));
  auto started = expect<process_started>(self);
  REQUIRE(started.id == id);
  io.kill(id, SIGKILL);
  auto exited = expect<process_exited>(self);
  CHECK(exited.id == id);
  CHECK(exited.pid == started.pid);
  CHECK(exited.term_signal == SIGKILL);
  // The id is dead now: a late kill is ignored, not an error.
  io.kill(id, SIGKILL);
  fence();
}

TEST_CASE_FIXTURE(fixture,
                  "spawn of a nonexistent binary answers io_failed naming it") {
  auto id =
    io.spawn_process(self, command({"/nonexistent/agentvisor-no-such-tool"}));
  auto failed = expect<io_failed>(self);
  CHECK(failed.id == id);
  CHECK(failed.what.find("/nonexistent/agentvisor-no-such-tool")
        != std::string::npos);
  CHECK(failed.what.find("no such file or directory") != std::string::npos);
  MESSAGE(failed.what);
  // An empty argv fails too, without a spawn.
  auto empty = io.spawn_process(self, {});
  CHECK(expect<io_failed>(self).id == empty);
}

TEST_CASE_FIXTURE(fixture, "spawn_process applies env and cwd") {
  process_spec spec;
  spec.argv = {"/bin/sh", "-c",
               "test \"$AGENTVISOR_T\" = yes && test \"$(pwd)\" = / "
               "&& test -z \"$HOME\""};
  spec.env = {"AGENTVISOR_T=yes", "PATH=/usr/bin:/bin"};
  spec.cwd = "/";
  io.spawn_process(self, spec);
  expect<process_started>(self);
  CHECK(expect<process_exited>(self).exit_status == 0);
}

TEST_CASE_FIXTURE(fixture, "a spawned child starts with no blocked signals") {
  // The loop thread blocks SIGPIPE for itself; its children must not
  // inherit that mask.
  io.spawn_process(self, command({"/bin/sh", "-c",
                           "exec grep -Eq '^SigBlk:[[:space:]]+0+$' "
                           "/proc/self/status"}));
  expect<process_started>(self);
  CHECK(expect<process_exited>(self).exit_status == 0);
}

TEST_CASE_FIXTURE(fixture, "spawn_process hands stdio to the child and closes "
                           "the supervisor's copies") {
  auto [ours, childs] = make_socketpair();
  fd_guard child_end{childs};
  auto stream = io.open_line_stream(self, ours);
  process_spec spec;
  spec.argv = {"/bin/sh", "-c", "echo one; echo two >&2"};
  spec.stdio = {-1, child_end.fd, child_end.fd};
  int child_fd = child_end.release(); // the loop closes it after the spawn
  auto proc = io.spawn_process(self, spec);
  // Order between the process and the stream messages is not fixed.
  auto msgs = collect([&](const std::vector<any_msg>& v) {
    return find_msg<process_exited>(v) && find_msg<stream_closed>(v);
  });
  std::vector<std::string> lines;
  for (auto& m : msgs) {
    if (auto* l = std::get_if<stream_line>(&m)) {
      CHECK(l->id == stream);
      lines.push_back(l->line);
    }
  }
  CHECK(lines == std::vector<std::string>{"one", "two"});
  CHECK(find_msg<process_exited>(msgs)->id == proc);
  // EOF came: no copy of the child's end stayed open in the supervisor.
  CHECK(find_msg<stream_closed>(msgs)->reason.empty());
  CHECK(find_msg<stream_closed>(msgs)->id == stream);
  CHECK_FALSE(fd_is_open(child_fd));
}

TEST_CASE_FIXTURE(fixture,
                  "a pidfd-watched child made with fork reports its exit code") {
  pid_t pid = fork_exiting(7);
  int pidfd = pidfd_open(pid);
  REQUIRE_MESSAGE(pidfd >= 0, "pidfd_open: " << std::strerror(errno));
  auto id = io.watch_pidfd(self, pidfd, pid);
  auto exited = expect<process_exited>(self);
  CHECK(exited.id == id);
  CHECK(exited.pid == pid);
  CHECK(exited.exit_status == 7);
  CHECK(exited.term_signal == 0);
  // The loop reaped it.
  errno = 0;
  CHECK(::waitpid(pid, nullptr, WNOHANG) == -1);
  CHECK(errno == ECHILD);
}

TEST_CASE_FIXTURE(fixture,
                  "kill on a pidfd-watched child signals it through the pidfd") {
  pid_t pid = fork_sleeper();
  int pidfd = pidfd_open(pid);
  REQUIRE(pidfd >= 0);
  auto id = io.watch_pidfd(self, pidfd, pid);
  io.kill(id, SIGKILL);
  auto exited = expect<process_exited>(self);
  CHECK(exited.id == id);
  CHECK(exited.pid == pid);
  CHECK(exited.term_signal == SIGKILL);
}

TEST_CASE_FIXTURE(fixture, "kill on a handle that is no process answers "
                           "io_failed") {
  auto timer = io.start_timer(self, 1h);
  io.kill(timer, SIGTERM);
  auto failed = expect<io_failed>(self);
  CHECK(failed.id == timer);
  CHECK(failed.what.find("not a process") != std::string::npos);
}

// --- Timers ----------------------------------------------------------------------

TEST_CASE_FIXTURE(fixture, "a one-shot timer fires once") {
  auto id = io.start_timer(self, 10ms);
  CHECK(expect<timer_fired>(self).id == id);
  // Had it fired again, that would come before this later, longer timer.
  auto later = io.start_timer(self, 50ms);
  CHECK(expect<timer_fired>(self).id == later);
  io.close(id); // dead id: ignored
  fence();
}

TEST_CASE_FIXTURE(fixture, "a repeating timer fires until closed") {
  auto id = io.start_timer(self, 5ms, 5ms);
  for (int i = 0; i < 3; ++i)
    CHECK(expect<timer_fired>(self).id == id);
  io.close(id);
  // Fires sent before the loop ran close() may still be queued for us.
  auto fence_id = io.start_timer(self, 0ms);
  for (;;) {
    auto t = expect<timer_fired>(self);
    if (t.id == fence_id)
      break;
    CHECK(t.id == id);
  }
  // From now on nothing: a live 5 ms timer would fire ~10 times in 50 ms.
  auto later = io.start_timer(self, 50ms);
  CHECK(expect<timer_fired>(self).id == later);
}

// --- fd watches ------------------------------------------------------------------

TEST_CASE_FIXTURE(fixture, "watch_fd reports a readable pipe once until "
                           "rearmed") {
  int p[2];
  REQUIRE(::pipe2(p, O_CLOEXEC) == 0);
  fd_guard rd{p[0]}, wr{p[1]};
  auto id = io.watch_fd(self, rd.fd, fd_mode::readable);
  REQUIRE(::write(wr.fd, "x", 1) == 1);
  auto ready = expect<fd_ready>(self);
  CHECK(ready.id == id);
  CHECK(ready.fd == rd.fd);
  CHECK(ready.readable);
  CHECK_FALSE(ready.writable);
  // Not drained, yet no flood: the watch paused after one fd_ready.
  auto later = io.start_timer(self, 50ms);
  CHECK(expect<timer_fired>(self).id == later);
  char c;
  REQUIRE(::read(rd.fd, &c, 1) == 1);
  io.rearm(id);
  REQUIRE(::write(wr.fd, "y", 1) == 1);
  ready = expect<fd_ready>(self);
  CHECK(ready.id == id);
  CHECK(ready.readable);
  stop_and_check(); // before the fds close
}

TEST_CASE_FIXTURE(fixture, "watch_fd reports writable and a peer hangup") {
  auto [a, b] = make_socketpair();
  fd_guard fa{a}, fb{b};
  auto w = io.watch_fd(self, fa.fd, fd_mode::writable);
  auto ready = expect<fd_ready>(self);
  CHECK(ready.id == w);
  CHECK(ready.writable);
  io.close(w);
  auto r = io.watch_fd(self, fa.fd, fd_mode::readable);
  fence();
  fb.reset();
  ready = expect<fd_ready>(self);
  CHECK(ready.id == r);
  CHECK(ready.disconnected);
  stop_and_check();
}

TEST_CASE_FIXTURE(fixture, "watch_fd in eventfd mode reports the counter") {
  fd_guard efd{::eventfd(0, EFD_CLOEXEC)};
  REQUIRE(efd.fd >= 0);
  auto id = io.watch_fd(self, efd.fd, fd_mode::eventfd);
  fence();
  REQUIRE(::eventfd_write(efd.fd, 5) == 0);
  auto ready = expect<fd_ready>(self);
  CHECK(ready.id == id);
  CHECK(ready.readable);
  CHECK(ready.counter == 5);
  // The loop drained the counter: the next event reports only what is new.
  REQUIRE(::eventfd_write(efd.fd, 2) == 0);
  ready = expect<fd_ready>(self);
  CHECK(ready.counter == 2);
  stop_and_check();
  CHECK(fd_is_open(efd.fd)); // the caller's fd stays the caller's
}

TEST_CASE_FIXTURE(fixture, "watch_fd in file_changed mode reports cgroup.events as a "
                           "process enters and leaves a cgroup on this host's cgroup2 "
                           "mount") {
  // cgroup.events signals POLLPRI on a change of "populated", like v2's
  // memory.events does on an OOM kill; it works on any cgroup2 mount, so
  // this runs for real even where v2 offers no memory controller.
  auto made = test_support::cgroup2_scratch::create("io");
  if (!made.skip.empty()) {
    MESSAGE("skipped: " << made.skip);
    return;
  }
  REQUIRE_MESSAGE(made.cgroup, made.error);
  auto& cg = *made.cgroup;
  fd_guard events{::open((cg.path() + "/cgroup.events").c_str(), O_RDONLY | O_CLOEXEC)};
  REQUIRE_MESSAGE(events.fd >= 0, "open cgroup.events: " << std::strerror(errno));
  auto id = io.watch_fd(self, events.fd, fd_mode::file_changed);
  fence();
  // Every report carries the whole file; the first may still show the
  // state at open time, so read until the expected state shows.
  auto until = [&](const std::string& state) {
    std::vector<std::string> seen;
    for (;;) {
      auto m = next(self);
      auto* ready = std::get_if<fd_ready>(&m);
      INFO("reports so far: " << seen.size());
      REQUIRE_MESSAGE(ready != nullptr, "waiting for '" << state << "', got " << describe(m));
      CHECK(ready->id == id);
      CHECK(ready->fd == events.fd);
      seen.push_back(ready->content);
      REQUIRE_MESSAGE(ready->content.rfind("populated ", 0) == 0, ready->content);
      if (ready->content.find(state) != std::string::npos)
        return seen;
    }
  };
  pid_t pid = fork_sleeper();
  auto moved = cg.move_in(pid);
  if (!moved.empty()) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
  }
  REQUIRE_MESSAGE(moved.empty(), moved);
  auto in = until("populated 1\n");
  MESSAGE(in.size() << " report(s) until populated 1");
  REQUIRE(::kill(pid, SIGKILL) == 0);
  REQUIRE(::waitpid(pid, nullptr, 0) == pid);
  auto out = until("populated 0\n");
  MESSAGE(out.size() << " report(s) until populated 0");
  // Reports come per change, not as a level-triggered flood.
  fence();
  auto quiet = next(self, 200ms);
  CHECK_MESSAGE(std::holds_alternative<timed_out>(quiet), "unexpected " << describe(quiet));
  io.close(id);
  fence(); // the loop no longer polls the fd: it may be closed now
}

TEST_CASE_FIXTURE(fixture, "an adopted fd is closed when its watch closes") {
  int efd = ::eventfd(0, EFD_CLOEXEC);
  REQUIRE(efd >= 0);
  auto id = io.watch_fd(self, efd, fd_mode::eventfd, true);
  fence();
  CHECK(fd_is_open(efd));
  io.close(id);
  fence();
  CHECK_FALSE(fd_is_open(efd));
}

TEST_CASE_FIXTURE(fixture, "watch_fd on a closed fd answers io_failed") {
  int p[2];
  REQUIRE(::pipe2(p, O_CLOEXEC) == 0);
  ::close(p[0]);
  ::close(p[1]);
  auto id = io.watch_fd(self, p[0], fd_mode::readable);
  auto failed = expect<io_failed>(self);
  CHECK(failed.id == id);
  CHECK(failed.what.find("fd " + std::to_string(p[0])) != std::string::npos);
  MESSAGE(failed.what);
}

// --- Signals ---------------------------------------------------------------------

TEST_CASE_FIXTURE(fixture, "watch_signal reports SIGUSR1 raised by the test") {
  auto id = io.watch_signal(self, SIGUSR1);
  fence(); // the handler is installed
  REQUIRE(::raise(SIGUSR1) == 0);
  auto sig = expect<signal_received>(self);
  CHECK(sig.id == id);
  CHECK(sig.signum == SIGUSR1);
  REQUIRE(::raise(SIGUSR1) == 0);
  CHECK(expect<signal_received>(self).id == id);
}

// --- TCP -------------------------------------------------------------------------

namespace {

struct tcp_pair {
  handle_id listener;
  uint16_t port;
  handle_id conn;
  fd_guard client;
};

/// Listens on `host`:0, connects a plain socket, returns both ends.
void open_tcp(fixture& f, int family, const char* host, tcp_pair& out) {
  out.listener = f.io.listen_tcp(f.self, host, 0);
  auto listening = expect<tcp_listening>(f.self);
  REQUIRE(listening.id == out.listener);
  CHECK(listening.host == host);
  REQUIRE(listening.port != 0);
  out.port = listening.port;
  out.client.fd = connect_tcp(family, host, out.port);
  auto accepted = expect<tcp_accepted>(f.self);
  CHECK(accepted.listener == out.listener);
  CHECK(accepted.id != out.listener);
  out.conn = accepted.id;
  MESSAGE("peer " << accepted.peer);
  if (family == AF_INET)
    CHECK(accepted.peer.rfind("127.0.0.1:", 0) == 0);
  else
    CHECK(accepted.peer.rfind("[::1]:", 0) == 0);
}

/// stream_data for `id` until `n` bytes arrived.
std::string read_stream(fixture& f, handle_id id, size_t n) {
  std::string got;
  while (got.size() < n) {
    auto data = expect<stream_data>(f.self);
    REQUIRE(data.id == id);
    got += data.bytes;
  }
  return got;
}

} // namespace

TEST_CASE_FIXTURE(fixture, "a TCP listener accepts, echoes through write and "
                           "reports a peer close") {
  tcp_pair t;
  open_tcp(*this, AF_INET, "127.0.0.1", t);
  send_all(t.client.fd, "ping");
  CHECK(read_stream(*this, t.conn, 4) == "ping");
  io.write(t.conn, "pong");
  CHECK(recv_n(t.client.fd, 4) == "pong");
  t.client.reset();
  auto closed = expect<stream_closed>(self);
  CHECK(closed.id == t.conn);
  CHECK(closed.reason.empty());
  // The id is dead: writes to it are ignored.
  io.write(t.conn, "late");
  fence();
}

TEST_CASE_FIXTURE(fixture, "writes to a connection arrive in order") {
  tcp_pair t;
  open_tcp(*this, AF_INET, "127.0.0.1", t);
  std::string expected;
  for (int i = 0; i < 2000; ++i) {
    auto chunk = std::to_string(i) + ",";
    expected += chunk;
    io.write(t.conn, chunk);
  }
  CHECK(recv_n(t.client.fd, expected.size()) == expected);
}

TEST_CASE_FIXTURE(fixture, "close_after_write flushes queued writes, then "
                           "closes the connection without a message") {
  tcp_pair t;
  open_tcp(*this, AF_INET, "127.0.0.1", t);
  // Larger than the socket buffers: most of it is still queued in libuv
  // when close_after_write arrives.
  std::string big(8 << 20, '\0');
  for (size_t i = 0; i < big.size(); ++i)
    big[i] = static_cast<char>('a' + i % 26);
  io.write(t.conn, big);
  io.write(t.conn, "END");
  io.close_after_write(t.conn);
  io.write(t.conn, "after close: dropped");
  auto got = recv_all(t.client.fd);
  CHECK(got.size() == big.size() + 3);
  CHECK(got == big + "END");
  fence(); // no stream_closed for a close the owner asked for
}

TEST_CASE_FIXTURE(fixture, "close of a connection by its owner sends no "
                           "stream_closed and the peer sees EOF") {
  tcp_pair t;
  open_tcp(*this, AF_INET, "127.0.0.1", t);
  io.close(t.conn);
  CHECK(recv_all(t.client.fd).empty());
  fence();
}

TEST_CASE_FIXTURE(fixture, "a TCP listener works on IPv6 loopback") {
  if (!ipv6_loopback_available()) {
    MESSAGE("no IPv6 loopback here: skipping");
    return;
  }
  tcp_pair t;
  open_tcp(*this, AF_INET6, "::1", t);
  send_all(t.client.fd, "six");
  CHECK(read_stream(*this, t.conn, 3) == "six");
  io.write(t.conn, "ok");
  CHECK(recv_n(t.client.fd, 2) == "ok");
}

TEST_CASE_FIXTURE(fixture, "listen_tcp failures answer io_failed with the "
                           "address") {
  auto first = io.listen_tcp(self, "127.0.0.1", 0);
  auto listening = expect<tcp_listening>(self);
  REQUIRE(listening.id == first);
  auto second = io.listen_tcp(self, "127.0.0.1", listening.port);
  auto failed = expect<io_failed>(self);
  CHECK(failed.id == second);
  CHECK(failed.what.find("127.0.0.1:" + std::to_string(listening.port))
        != std::string::npos);
  CHECK(failed.what.find("address already in use") != std::string::npos);
  MESSAGE(failed.what);
  auto bad = io.listen_tcp(self, "localhost", 0);
  failed = expect<io_failed>(self);
  CHECK(failed.id == bad);
  CHECK(failed.what.find("'localhost'") != std::string::npos);
}

TEST_CASE_FIXTURE(fixture, "connect_tcp reaches a listener, carries bytes both "
                           "ways, and reports the peer's close") {
  auto listener = io.listen_tcp(self, "127.0.0.1", 0);
  auto listening = expect<tcp_listening>(self);
  REQUIRE(listening.id == listener);
  auto client = io.connect_tcp(self, "127.0.0.1", listening.port);
  // Written before the connection is up: libuv holds it until then.
  io.write(client, "early");
  // The two ends report on their own; take both in either order.
  std::optional<tcp_accepted> accepted;
  std::optional<tcp_connected> connected;
  std::string at_server;
  while (!accepted || !connected || at_server.size() < 5) {
    auto m = next(self);
    if (auto* a = std::get_if<tcp_accepted>(&m))
      accepted = *a;
    else if (auto* c = std::get_if<tcp_connected>(&m))
      connected = *c;
    else if (auto* d = std::get_if<stream_data>(&m))
      at_server += d->bytes;
    else
      FAIL("unexpected " << describe(m));
  }
  CHECK(connected->id == client);
  CHECK(connected->peer == "127.0.0.1:" + std::to_string(listening.port));
  CHECK(at_server == "early");
  io.write(accepted->id, "reply");
  CHECK(read_stream(*this, client, 5) == "reply");
  io.close(accepted->id);
  auto closed = expect<stream_closed>(self);
  CHECK(closed.id == client);
  CHECK(closed.reason.empty());
  io.close(listener);
  fence();
}

TEST_CASE_FIXTURE(fixture, "connect_tcp failures answer io_failed naming the "
                           "address") {
  // A port just bound and released: nobody listens there.
  auto listener = io.listen_tcp(self, "127.0.0.1", 0);
  auto listening = expect<tcp_listening>(self);
  io.close(listener);
  fence();
  auto refused = io.connect_tcp(self, "127.0.0.1", listening.port);
  auto failed = expect<io_failed>(self);
  CHECK(failed.id == refused);
  CHECK(failed.what.find("127.0.0.1:" + std::to_string(listening.port))
        != std::string::npos);
  CHECK(failed.what.find("connection refused") != std::string::npos);
  MESSAGE(failed.what);
  auto bad = io.connect_tcp(self, "localhost", 80);
  failed = expect<io_failed>(self);
  CHECK(failed.id == bad);
  CHECK(failed.what.find("'localhost'") != std::string::npos);
  // Closed while connecting: no message at all.
  auto early = io.connect_tcp(self, "127.0.0.1", listening.port);
  io.close(early);
  fence();
}

// --- Line streams ----------------------------------------------------------------

TEST_CASE_FIXTURE(fixture, "a line stream splits lines across partial "
                           "writes") {
  auto [ours, peer_fd] = make_socketpair();
  fd_guard peer{peer_fd};
  auto id = io.open_line_stream(self, ours, 16);
  auto line = [&] {
    auto l = expect<stream_line>(self);
    CHECK(l.id == id);
    return l.line;
  };
  send_all(peer.fd, "ab");
  send_all(peer.fd, "c\nde");
  CHECK(line() == "abc"); // "de" is held by the loop now
  send_all(peer.fd, "f\n\ng");
  CHECK(line() == "def");
  CHECK(line() == "");
  send_all(peer.fd, "h\r\n");
  CHECK(line() == "gh\r"); // split at '\n' only
  send_all(peer.fd, "1\n2\n3\n");
  CHECK(line() == "1");
  CHECK(line() == "2");
  CHECK(line() == "3");
  // Exactly max_line bytes is still a line.
  send_all(peer.fd, std::string(16, 'x') + "\n");
  CHECK(line() == std::string(16, 'x'));
  io.write(id, "pong\n");
  CHECK(recv_n(peer.fd, 5) == "pong\n");
}

TEST_CASE_FIXTURE(fixture, "a line over max_line closes the line stream with "
                           "a reason naming the limit") {
  auto [ours, peer_fd] = make_socketpair();
  fd_guard peer{peer_fd};
  auto id = io.open_line_stream(self, ours, 16);
  send_all(peer.fd, "ok\n" + std::string(17, 'a') + "\nnever\n");
  CHECK(expect<stream_line>(self).line == "ok");
  auto closed = expect<stream_closed>(self);
  CHECK(closed.id == id);
  CHECK(closed.reason == "line over 16 bytes");
  CHECK(recv_all(peer.fd).empty()); // the loop closed its end
}

TEST_CASE_FIXTURE(fixture, "a partial line over max_line closes the line "
                           "stream before its newline comes") {
  auto [ours, peer_fd] = make_socketpair();
  fd_guard peer{peer_fd};
  auto id = io.open_line_stream(self, ours, 16);
  send_all(peer.fd, std::string(10, 'a'));
  send_all(peer.fd, std::string(10, 'b'));
  auto closed = expect<stream_closed>(self);
  CHECK(closed.id == id);
  CHECK(closed.reason == "line over 16 bytes");
}

TEST_CASE_FIXTURE(fixture, "a partial last line is delivered at EOF") {
  auto [ours, peer_fd] = make_socketpair();
  fd_guard peer{peer_fd};
  auto id = io.open_line_stream(self, ours);
  send_all(peer.fd, "full\ntail");
  REQUIRE(::shutdown(peer.fd, SHUT_WR) == 0);
  CHECK(expect<stream_line>(self).line == "full");
  auto last = expect<stream_line>(self);
  CHECK(last.id == id);
  CHECK(last.line == "tail");
  auto closed = expect<stream_closed>(self);
  CHECK(closed.id == id);
  CHECK(closed.reason.empty());
}

TEST_CASE_FIXTURE(fixture, "a write to a line stream whose peer is gone "
                           "closes it with a reason") {
  auto [ours, peer_fd] = make_socketpair();
  auto id = io.open_line_stream(self, ours);
  fence();
  ::close(peer_fd); // the loop sees EOF (or EPIPE on the write): one close
  io.write(id, "anyone?\n");
  auto closed = expect<stream_closed>(self);
  CHECK(closed.id == id);
  MESSAGE("reason: '" << closed.reason << "'");
  fence(); // exactly one stream_closed, and the process survived SIGPIPE
}

// --- Shutdown and lifecycle ------------------------------------------------------

TEST_CASE_FIXTURE(fixture, "stop closes every handle still open") {
  tcp_pair t;
  open_tcp(*this, AF_INET, "127.0.0.1", t);
  io.start_timer(self, 1ms, 1ms);
  io.start_timer(self, 1h);
  io.write(t.conn, std::string(4 << 20, 'q')); // a write still queued
  auto [ours, peer_fd] = make_socketpair();
  fd_guard peer{peer_fd};
  io.open_line_stream(self, ours);
  fd_guard efd{::eventfd(0, EFD_CLOEXEC)};
  io.watch_fd(self, efd.fd, fd_mode::eventfd);
  io.watch_signal(self, SIGUSR2);
  io.spawn_process(self, command({"sleep", "30"}));
  pid_t sleeper = 0;
  for (;;) { // timer fires interleave with the spawn's answer
    auto m = next(self);
    REQUIRE_FALSE(std::holds_alternative<timed_out>(m));
    if (auto* s = std::get_if<process_started>(&m)) {
      sleeper = s->pid;
      break;
    }
  }
  auto report = io.stop();
  stopped = true;
  CHECK(report.open_handles == 0);
  CHECK(report.open_handle_types.empty());
  CHECK_FALSE(io.running());
  // The connection and the line stream are closed: their peers see EOF
  // (after whatever part of the queued write made it out).
  recv_all(t.client.fd);
  CHECK(recv_all(peer.fd).empty());
  // Children are left to their owners: this one is still ours to reap.
  REQUIRE(::kill(sleeper, SIGKILL) == 0);
  int status = 0;
  CHECK(::waitpid(sleeper, &status, 0) == sleeper);
  CHECK(WIFSIGNALED(status));
}

TEST_CASE_FIXTURE(fixture, "stop twice is fine and an io_thread runs once") {
  auto first = io.stop();
  stopped = true;
  CHECK(first.open_handles == 0);
  auto second = io.stop();
  CHECK(second.open_handles == 0);
  CHECK_FALSE(io.running());
  std::string err;
  CHECK_FALSE(io.start(&err));
  CHECK(err.find("stopped") != std::string::npos);
}

TEST_CASE_FIXTURE(fixture, "commands after stop answer io_failed and close "
                           "the fds they carry") {
  stop_and_check();
  auto before = open_fd_count();
  {
    auto [ours, peer_fd] = make_socketpair();
    fd_guard peer{peer_fd};
    auto stream = io.open_line_stream(self, ours);
    CHECK(expect<io_failed>(self).id == stream);

    pid_t pid = fork_exiting(0);
    int pidfd = pidfd_open(pid);
    REQUIRE(pidfd >= 0);
    auto watch = io.watch_pidfd(self, pidfd, pid);
    CHECK(expect<io_failed>(self).id == watch);
    REQUIRE(::waitpid(pid, nullptr, 0) == pid);

    int p[2];
    REQUIRE(::pipe2(p, O_CLOEXEC) == 0);
    fd_guard rd{p[0]};
    process_spec spec;
    spec.argv = {"true"};
    spec.stdio = {-1, p[1], p[1]};
    auto proc = io.spawn_process(self, spec);
    auto failed = expect<io_failed>(self);
    CHECK(failed.id == proc);
    CHECK(failed.what == "spawn_process: io_thread is stopped");

    int efd = ::eventfd(0, EFD_CLOEXEC);
    auto fdw = io.watch_fd(self, efd, fd_mode::eventfd, true);
    CHECK(expect<io_failed>(self).id == fdw);

    auto timer = io.start_timer(self, 1ms);
    CHECK(expect<io_failed>(self).id == timer);
    auto sig = io.watch_signal(self, SIGUSR1);
    CHECK(expect<io_failed>(self).id == sig);
    auto listener = io.listen_tcp(self, "127.0.0.1", 0);
    CHECK(expect<io_failed>(self).id == listener);
    // No reply_to: dropped without a word.
    io.kill(stream, SIGKILL);
    io.write(stream, "x");
    io.rearm(fdw);
    io.close(stream);
    io.close_after_write(stream);
    CHECK(std::holds_alternative<timed_out>(next(self, 100ms)));
  }
  CHECK(open_fd_count() == before);
}

TEST_CASE("commands submitted before start run once the loop starts") {
  caf::actor_system_config cfg;
  caf::actor_system sys{cfg};
  io_thread io;
  {
    caf::scoped_actor self{sys};
    auto id = io.start_timer(self, 0ms);
    CHECK_FALSE(io.running());
    REQUIRE(io.start());
    CHECK(expect<timer_fired>(self).id == id);
    CHECK(io.stop().open_handles == 0);
  }
}

TEST_CASE("an io_thread never started answers queued commands with io_failed "
          "and closes their fds") {
  caf::actor_system_config cfg;
  caf::actor_system sys{cfg};
  caf::scoped_actor self{sys};
  auto before = open_fd_count();
  {
    io_thread io;
    auto [ours, peer_fd] = make_socketpair();
    fd_guard peer{peer_fd};
    auto id = io.open_line_stream(self, ours);
    CHECK(io.stop().open_handles == 0);
    CHECK(expect<io_failed>(self).id == id);
  }
  CHECK(open_fd_count() == before);
  {
    io_thread io; // the destructor stops it
    io.start_timer(self, 0ms);
  }
  CHECK(std::holds_alternative<io_failed>(next(self)));
}

TEST_CASE_FIXTURE(fixture, "commands from many threads all run, with "
                           "distinct ids") {
  constexpr int threads = 4;
  constexpr int per_thread = 100;
  std::vector<std::vector<handle_id>> ids(threads);
  {
    std::vector<std::thread> workers;
    for (int i = 0; i < threads; ++i)
      workers.emplace_back([&, i] {
        for (int j = 0; j < per_thread; ++j)
          ids[static_cast<size_t>(i)].push_back(io.start_timer(self, 0ms));
      });
    for (auto& w : workers)
      w.join();
  }
  std::vector<handle_id> all;
  for (auto& v : ids)
    all.insert(all.end(), v.begin(), v.end());
  std::sort(all.begin(), all.end());
  CHECK(std::adjacent_find(all.begin(), all.end()) == all.end());
  std::vector<handle_id> fired;
  for (int i = 0; i < threads * per_thread; ++i)
    fired.push_back(expect<timer_fired>(self).id);
  std::sort(fired.begin(), fired.end());
  CHECK(fired == all);
}
