/// The libuv I/O thread (see include/agentvisor/io.hpp and docs/io.md).
///
/// Two sides share exactly one thing: `engine::queue_` (with `phase_`),
/// guarded by `engine::mtx_`. Everything else below `loop side` is touched by
/// the loop thread only, except the loop itself, which start() sets up before
/// the thread exists and stop() tears down after it has been joined.

#include "agentvisor/io.hpp"

#include "post.hpp"

#include <uv.h>

#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <deque>
#include <mutex>
#include <system_error>
#include <thread>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <variant>

namespace agentvisor::io {
namespace {

// --- Error text --------------------------------------------------------------

/// "no such file or directory (ENOENT)" for a libuv error code.
std::string uv_error(int err) {
  char text[128];
  char name[64];
  uv_strerror_r(err, text, sizeof text);
  uv_err_name_r(err, name, sizeof name);
  return std::string(text) + " (" + name + ")";
}

/// strerror for an errno value, thread-safe (GNU strerror_r).
std::string sys_error(int err) {
  char buf[128];
  return ::strerror_r(err, buf, sizeof buf);
}

void close_fd(int fd) {
  if (fd >= 0)
    ::close(fd);
}

/// Closes each distinct non-negative fd of `fds` once.
void close_distinct(std::vector<int> fds) {
  std::sort(fds.begin(), fds.end());
  fds.erase(std::unique(fds.begin(), fds.end()), fds.end());
  for (int fd : fds)
    close_fd(fd);
}

/// "127.0.0.1" / "::1" and the port of a socket address.
std::string ip_name(const sockaddr_storage& ss, uint16_t* port) {
  char ip[64] = {0};
  if (ss.ss_family == AF_INET) {
    auto* sin = reinterpret_cast<const sockaddr_in*>(&ss);
    uv_ip4_name(sin, ip, sizeof ip);
    *port = ntohs(sin->sin_port);
  } else if (ss.ss_family == AF_INET6) {
    auto* sin6 = reinterpret_cast<const sockaddr_in6*>(&ss);
    uv_ip6_name(sin6, ip, sizeof ip);
    *port = ntohs(sin6->sin6_port);
  } else {
    *port = 0;
  }
  return ip;
}

/// "127.0.0.1:4711" or "[::1]:4711".
std::string endpoint_name(const sockaddr_storage& ss) {
  uint16_t port = 0;
  auto ip = ip_name(ss, &port);
  if (ss.ss_family == AF_INET6)
    return "[" + ip + "]:" + std::to_string(port);
  return ip + ":" + std::to_string(port);
}

// --- Commands ------------------------------------------------------------------

struct spawn_cmd {
  handle_id id;
  caf::actor reply_to;
  process_spec spec;
};
struct pidfd_cmd {
  handle_id id;
  caf::actor reply_to;
  int pidfd;
  int pid;
};
struct kill_cmd {
  handle_id id;
  int signum;
};
struct timer_cmd {
  handle_id id;
  caf::actor reply_to;
  std::chrono::milliseconds delay;
  std::chrono::milliseconds repeat;
};
struct watch_fd_cmd {
  handle_id id;
  caf::actor reply_to;
  int fd;
  fd_mode mode;
  bool adopt;
};
struct rearm_cmd {
  handle_id id;
};
struct signal_cmd {
  handle_id id;
  caf::actor reply_to;
  int signum;
};
struct listen_cmd {
  handle_id id;
  caf::actor reply_to;
  std::string host;
  uint16_t port;
  int backlog;
};
struct connect_cmd {
  handle_id id;
  caf::actor reply_to;
  std::string host;
  uint16_t port;
};
struct line_stream_cmd {
  handle_id id;
  caf::actor reply_to;
  int fd;
  size_t max_line;
};
struct write_cmd {
  handle_id id;
  std::string bytes;
};
struct close_cmd {
  handle_id id;
  bool after_write;
};
struct stop_cmd {};

using command =
  std::variant<spawn_cmd, pidfd_cmd, kill_cmd, timer_cmd, watch_fd_cmd,
               rearm_cmd, signal_cmd, listen_cmd, connect_cmd, line_stream_cmd,
               write_cmd, close_cmd, stop_cmd>;

using detail::post;

/// A command that will never run: answer io_failed and close the fds it
/// would have owned. Runs on the submitting (or stopping) thread.
void discard(command& cmd) {
  auto refuse = [](const caf::actor& to, handle_id id, const char* what) {
    post(to, io_failed{id, std::string(what) + ": io_thread is stopped"});
  };
  std::visit(
    [&](auto& c) {
      using T = std::decay_t<decltype(c)>;
      if constexpr (std::is_same_v<T, spawn_cmd>) {
        if (c.spec.close_stdio)
          close_distinct(c.spec.stdio);
        refuse(c.reply_to, c.id, "spawn_process");
      } else if constexpr (std::is_same_v<T, pidfd_cmd>) {
        close_fd(c.pidfd);
        refuse(c.reply_to, c.id, "watch_pidfd");
      } else if constexpr (std::is_same_v<T, timer_cmd>) {
        refuse(c.reply_to, c.id, "start_timer");
      } else if constexpr (std::is_same_v<T, watch_fd_cmd>) {
        if (c.adopt)
          close_fd(c.fd);
        refuse(c.reply_to, c.id, "watch_fd");
      } else if constexpr (std::is_same_v<T, signal_cmd>) {
        refuse(c.reply_to, c.id, "watch_signal");
      } else if constexpr (std::is_same_v<T, listen_cmd>) {
        refuse(c.reply_to, c.id, "listen_tcp");
      } else if constexpr (std::is_same_v<T, connect_cmd>) {
        refuse(c.reply_to, c.id, "connect_tcp");
      } else if constexpr (std::is_same_v<T, line_stream_cmd>) {
        close_fd(c.fd);
        refuse(c.reply_to, c.id, "open_line_stream");
      }
      // kill, rearm, write, close, stop: nothing to answer, nothing owned.
    },
    cmd);
}

// --- Handle records (loop side) --------------------------------------------

class engine;

/// One live handle: its uv handle (at a stable address until its close
/// callback, which deletes the record), its id and whom to tell.
struct record {
  record(engine* e, handle_id i, caf::actor to, const char* k)
    : owner(e), id(i), reply_to(std::move(to)), kind(k) {
  }
  record(const record&) = delete;
  record& operator=(const record&) = delete;
  virtual ~record() = default;
  virtual uv_handle_t* handle() noexcept = 0;

  /// Points the uv handle back at this record; call after uv_*_init.
  void bind() noexcept {
    handle()->data = this;
  }

  engine* owner;
  handle_id id;
  caf::actor reply_to;
  const char* kind;
};

struct process_rec final : record {
  process_rec(engine* e, handle_id i, caf::actor to)
    : record(e, i, std::move(to), "process") {
  }
  uv_handle_t* handle() noexcept override {
    return reinterpret_cast<uv_handle_t*>(&proc);
  }
  uv_process_t proc{};
  int pid = 0;
};

struct pidfd_rec final : record {
  pidfd_rec(engine* e, handle_id i, caf::actor to, int fd, int p)
    : record(e, i, std::move(to), "pidfd watch"), pidfd(fd), pid(p) {
  }
  ~pidfd_rec() override {
    close_fd(pidfd); // after uv_close: the poll no longer watches it
  }
  uv_handle_t* handle() noexcept override {
    return reinterpret_cast<uv_handle_t*>(&poll);
  }
  uv_poll_t poll{};
  int pidfd;
  int pid;
};

struct timer_rec final : record {
  timer_rec(engine* e, handle_id i, caf::actor to, bool rep)
    : record(e, i, std::move(to), "timer"), repeating(rep) {
  }
  uv_handle_t* handle() noexcept override {
    return reinterpret_cast<uv_handle_t*>(&timer);
  }
  uv_timer_t timer{};
  bool repeating;
};

struct fd_rec final : record {
  fd_rec(engine* e, handle_id i, caf::actor to, int f, fd_mode m, bool own)
    : record(e, i, std::move(to), "fd watch"), fd(f), mode(m), adopt(own) {
  }
  ~fd_rec() override {
    if (adopt)
      close_fd(fd);
  }
  uv_handle_t* handle() noexcept override {
    return reinterpret_cast<uv_handle_t*>(&poll);
  }
  int events() const noexcept {
    switch (mode) {
      case fd_mode::readable:
        return UV_READABLE | UV_DISCONNECT;
      case fd_mode::writable:
        return UV_WRITABLE;
      case fd_mode::eventfd:
        return UV_READABLE;
      case fd_mode::file_changed:
        return UV_PRIORITIZED;
    }
    return UV_READABLE;
  }
  uv_poll_t poll{};
  int fd;
  fd_mode mode;
  bool adopt;
  bool armed = false;
};

struct signal_rec final : record {
  signal_rec(engine* e, handle_id i, caf::actor to)
    : record(e, i, std::move(to), "signal watch") {
  }
  uv_handle_t* handle() noexcept override {
    return reinterpret_cast<uv_handle_t*>(&sig);
  }
  uv_signal_t sig{};
};

struct listener_rec final : record {
  listener_rec(engine* e, handle_id i, caf::actor to)
    : record(e, i, std::move(to), "tcp listener") {
  }
  uv_handle_t* handle() noexcept override {
    return reinterpret_cast<uv_handle_t*>(&tcp);
  }
  uv_tcp_t tcp{};
};

/// A TCP connection (raw bytes) or a line stream over a pipe/socket fd.
struct stream_rec final : record {
  stream_rec(engine* e, handle_id i, caf::actor to, bool line_mode, size_t max)
    : record(e, i, std::move(to), line_mode ? "line stream" : "tcp connection"),
      lines(line_mode),
      max_line(max) {
  }
  uv_handle_t* handle() noexcept override {
    return reinterpret_cast<uv_handle_t*>(&h);
  }
  uv_stream_t* stream() noexcept {
    return reinterpret_cast<uv_stream_t*>(&h);
  }
  union {
    uv_tcp_t tcp;
    uv_pipe_t pipe;
  } h{};
  bool lines;
  size_t max_line;
  /// Line mode: bytes after the last '\n' (never contains a '\n').
  std::string partial;
  /// close_after_write was asked: reads stopped, writes refused.
  bool draining = false;
};

struct write_req {
  uv_write_t req{};
  std::string bytes;
};

record* rec_of(const void* h) {
  return static_cast<record*>(static_cast<const uv_handle_t*>(h)->data);
}

void on_close(uv_handle_t* h) {
  delete static_cast<record*>(h->data);
}

// --- The engine ----------------------------------------------------------------

class engine {
public:
  engine() = default;
  engine(const engine&) = delete;
  engine& operator=(const engine&) = delete;

  ~engine() {
    stop();
  }

  handle_id next_id() noexcept {
    return next_id_.fetch_add(1, std::memory_order_relaxed);
  }

  // -- Any thread --

  bool start(std::string* error_out);
  stop_report stop();

  bool running() const {
    std::lock_guard<std::mutex> guard(mtx_);
    return phase_ == phase::running;
  }

  void submit(command cmd) {
    {
      std::lock_guard<std::mutex> guard(mtx_);
      if (phase_ == phase::idle || phase_ == phase::running) {
        queue_.push_back(std::move(cmd));
        // Under the lock: once stop() has set phase_ to stopping, nobody
        // calls uv_async_send again, so it never touches a closed loop.
        if (phase_ == phase::running)
          uv_async_send(&async_);
        return;
      }
    }
    discard(cmd);
  }

  // -- Loop thread: callbacks reach these through loop_.data / record --

  void on_async();
  void on_exit(process_rec* r, int64_t status, int term_signal);
  void on_pidfd(pidfd_rec* r, int status);
  void on_timer(timer_rec* r);
  void on_fd(fd_rec* r, int status, int events);
  void on_signal(signal_rec* r, int signum);
  void on_connection(listener_rec* l, int status);
  void on_connect(uv_connect_t* req, int status);
  void on_read(stream_rec* s, ssize_t n, const uv_buf_t* buf);
  void on_write(write_req* w, int status);
  void on_shutdown(uv_shutdown_t* req, int status);

  uv_buf_t read_buffer() noexcept {
    return uv_buf_init(readbuf_, sizeof readbuf_);
  }

private:
  enum class phase { idle, running, stopping, stopped };

  void run(spawn_cmd& c);
  void run(pidfd_cmd& c);
  void run(kill_cmd& c);
  void run(timer_cmd& c);
  void run(watch_fd_cmd& c);
  void run(rearm_cmd& c);
  void run(signal_cmd& c);
  void run(listen_cmd& c);
  void run(connect_cmd& c);
  void run(line_stream_cmd& c);
  void run(write_cmd& c);
  void run(close_cmd& c);
  void run(stop_cmd& c);

  void fail(const caf::actor& to, handle_id id, std::string what) {
    post(to, io_failed{id, std::move(what)});
  }

  record* find(handle_id id) {
    auto i = records_.find(id);
    return i == records_.end() ? nullptr : i->second;
  }

  /// Forgets the id and closes the handle; on_close deletes the record.
  void close_rec(record* r) {
    records_.erase(r->id);
    if (!uv_is_closing(r->handle()))
      uv_close(r->handle(), on_close);
  }

  /// The loop ends a stream: tell the owner why, then close it.
  void end_stream(stream_rec* s, std::string reason) {
    post(s->reply_to, stream_closed{s->id, std::move(reason)});
    close_rec(s);
  }

  void feed_lines(stream_rec* s, const char* data, size_t n);

  // -- Shared with submitters (guarded by mtx_) --
  mutable std::mutex mtx_;
  phase phase_ = phase::idle;
  std::deque<command> queue_;

  std::atomic<handle_id> next_id_{1};

  // -- Lifecycle (start/stop serialize on lifecycle_mtx_) --
  std::mutex lifecycle_mtx_;
  bool loop_ready_ = false;
  bool stopped_ = false;
  stop_report report_;
  std::thread thread_;

  // -- Loop side --
  uv_loop_t loop_{};
  uv_async_t async_{};
  std::unordered_map<handle_id, record*> records_;
  char readbuf_[64 * 1024];
};

engine* engine_of(const void* h) {
  return static_cast<engine*>(static_cast<const uv_handle_t*>(h)->loop->data);
}

// --- Lifecycle -----------------------------------------------------------------

bool engine::start(std::string* error_out) {
  auto failed = [&](std::string what) {
    if (error_out)
      *error_out = std::move(what);
    return false;
  };
  std::lock_guard<std::mutex> life(lifecycle_mtx_);
  if (stopped_)
    return failed("io_thread::start: already stopped (an io_thread runs once)");
  if (loop_ready_)
    return failed("io_thread::start: already started");
  if (int err = uv_loop_init(&loop_); err < 0)
    return failed("uv_loop_init: " + uv_error(err));
  loop_.data = this;
  if (int err = uv_async_init(&loop_, &async_, [](uv_async_t* a) {
        engine_of(a)->on_async();
      });
      err < 0) {
    uv_loop_close(&loop_);
    return failed("uv_async_init: " + uv_error(err));
  }
  try {
    thread_ = std::thread([this] {
      // A write to a socket whose peer is gone must fail with EPIPE, not
      // kill the supervisor. Blocked in this thread only: the process-wide
      // disposition stays the application's. (uv_spawn resets the mask in
      // its children.)
      sigset_t set;
      sigemptyset(&set);
      sigaddset(&set, SIGPIPE);
      pthread_sigmask(SIG_BLOCK, &set, nullptr);
      uv_run(&loop_, UV_RUN_DEFAULT);
    });
  } catch (const std::system_error& e) {
    uv_close(reinterpret_cast<uv_handle_t*>(&async_), nullptr);
    uv_run(&loop_, UV_RUN_NOWAIT);
    uv_loop_close(&loop_);
    return failed(std::string("io_thread::start: std::thread: ") + e.what());
  }
  loop_ready_ = true;
  std::lock_guard<std::mutex> guard(mtx_);
  phase_ = phase::running;
  if (!queue_.empty()) // commands submitted before start()
    uv_async_send(&async_);
  return true;
}

stop_report engine::stop() {
  std::lock_guard<std::mutex> life(lifecycle_mtx_);
  if (stopped_)
    return report_;
  {
    std::lock_guard<std::mutex> guard(mtx_);
    phase_ = phase::stopping;
    if (loop_ready_) {
      queue_.emplace_back(stop_cmd{});
      uv_async_send(&async_);
    }
  }
  if (loop_ready_) {
    thread_.join();
    // The loop thread is gone: this thread owns the loop now.
    uv_walk(
      &loop_,
      [](uv_handle_t* h, void* arg) {
        auto* rep = static_cast<stop_report*>(arg);
        ++rep->open_handles;
        rep->open_handle_types.emplace_back(
          uv_handle_type_name(uv_handle_get_type(h)));
      },
      &report_);
    // UV_EBUSY if something is still open: then the report says what.
    uv_loop_close(&loop_);
  }
  std::deque<command> rest; // submitted before a start() that never came
  {
    std::lock_guard<std::mutex> guard(mtx_);
    rest.swap(queue_);
    phase_ = phase::stopped;
  }
  for (auto& cmd : rest)
    discard(cmd);
  stopped_ = true;
  return report_;
}

void engine::on_async() {
  std::deque<command> batch;
  {
    std::lock_guard<std::mutex> guard(mtx_);
    batch.swap(queue_);
  }
  for (auto& cmd : batch)
    std::visit([this](auto& c) { run(c); }, cmd);
}

void engine::run(stop_cmd&) {
  // No command can follow: submitters saw phase_ == stopping.
  auto all = std::move(records_);
  records_.clear();
  for (auto& entry : all)
    close_rec(entry.second);
  // Anything else (the async handle; a record not in the map) closes too.
  uv_walk(
    &loop_,
    [](uv_handle_t* h, void*) {
      if (uv_is_closing(h))
        return;
      auto* self = engine_of(h);
      uv_close(h, h == reinterpret_cast<uv_handle_t*>(&self->async_)
                    ? nullptr
                    : on_close);
    },
    nullptr);
  // uv_run returns once the close callbacks have run: nothing is active.
}

// --- Processes -----------------------------------------------------------------

void engine::run(spawn_cmd& c) {
  auto& spec = c.spec;
  struct stdio_closer {
    process_spec& spec;
    ~stdio_closer() {
      if (spec.close_stdio)
        close_distinct(spec.stdio);
    }
  } closer{spec};
  if (spec.argv.empty())
    return fail(c.reply_to, c.id, "spawn_process: empty argv");
  std::vector<char*> args;
  for (auto& a : spec.argv)
    args.push_back(a.data());
  args.push_back(nullptr);
  std::vector<char*> env;
  for (auto& e : spec.env)
    env.push_back(e.data());
  env.push_back(nullptr);
  std::vector<uv_stdio_container_t> stdio(spec.stdio.size());
  for (size_t i = 0; i < stdio.size(); ++i) {
    if (spec.stdio[i] < 0) {
      stdio[i].flags = UV_IGNORE;
    } else {
      stdio[i].flags = UV_INHERIT_FD;
      stdio[i].data.fd = spec.stdio[i];
    }
  }
  uv_process_options_t opts{};
  opts.exit_cb = [](uv_process_t* p, int64_t status, int term_signal) {
    auto* r = static_cast<process_rec*>(rec_of(p));
    r->owner->on_exit(r, status, term_signal);
  };
  opts.file = args[0];
  opts.args = args.data();
  opts.env = spec.env.empty() ? nullptr : env.data();
  opts.cwd = spec.cwd.empty() ? nullptr : spec.cwd.c_str();
  opts.stdio_count = static_cast<int>(stdio.size());
  opts.stdio = stdio.data();
  auto* r = new process_rec(this, c.id, c.reply_to);
  int err = uv_spawn(&loop_, &r->proc, &opts);
  r->bind();
  if (err < 0) {
    fail(c.reply_to, c.id,
         "spawn '" + spec.argv[0] + "'"
           + (spec.cwd.empty() ? "" : " in '" + spec.cwd + "'") + ": "
           + uv_error(err));
    uv_close(r->handle(), on_close); // a failed uv_spawn still needs it
    return;
  }
  r->pid = r->proc.pid;
  records_.emplace(c.id, r);
  post(c.reply_to, process_started{c.id, r->pid});
}

void engine::on_exit(process_rec* r, int64_t status, int term_signal) {
  post(r->reply_to, process_exited{r->id, r->pid, status, term_signal});
  close_rec(r);
}

void engine::run(pidfd_cmd& c) {
  auto* r = new pidfd_rec(this, c.id, c.reply_to, c.pidfd, c.pid);
  if (int err = uv_poll_init(&loop_, &r->poll, c.pidfd); err < 0) {
    fail(c.reply_to, c.id,
         "watch_pidfd: uv_poll_init(pidfd " + std::to_string(c.pidfd)
           + ", pid " + std::to_string(c.pid) + "): " + uv_error(err));
    delete r; // never initialized: no uv_close; closes the pidfd
    return;
  }
  r->bind();
  records_.emplace(c.id, r);
  int err = uv_poll_start(&r->poll, UV_READABLE, [](uv_poll_t* p, int status,
                                                    int) {
    auto* rec = static_cast<pidfd_rec*>(rec_of(p));
    rec->owner->on_pidfd(rec, status);
  });
  if (err < 0) {
    fail(c.reply_to, c.id,
         "watch_pidfd: uv_poll_start(pid " + std::to_string(c.pid)
           + "): " + uv_error(err));
    close_rec(r);
  }
}

void engine::on_pidfd(pidfd_rec* r, int status) {
  auto where = [r] {
    return "(pidfd " + std::to_string(r->pidfd) + ", pid "
           + std::to_string(r->pid) + ")";
  };
  if (status < 0) {
    fail(r->reply_to, r->id, "watch_pidfd: poll " + where() + ": "
                               + uv_error(status));
    return close_rec(r);
  }
  siginfo_t info{};
  int rc;
  do
    rc = ::waitid(P_PIDFD, static_cast<id_t>(r->pidfd), &info,
                  WEXITED | WNOHANG);
  while (rc < 0 && errno == EINTR);
  if (rc < 0) {
    fail(r->reply_to, r->id,
         "watch_pidfd: waitid(P_PIDFD) " + where() + ": " + sys_error(errno));
    return close_rec(r);
  }
  if (info.si_pid == 0)
    return; // readable but not yet reapable: wait for the next wakeup
  process_exited msg{r->id, r->pid, 0, 0};
  if (info.si_code == CLD_EXITED)
    msg.exit_status = info.si_status;
  else // CLD_KILLED, CLD_DUMPED
    msg.term_signal = info.si_status;
  post(r->reply_to, msg);
  close_rec(r);
}

void engine::run(kill_cmd& c) {
  auto* r = find(c.id);
  if (!r)
    return; // dead: its exit was (or is being) reported
  auto what = [&](const char* call, int pid) {
    return std::string("kill: ") + call + "(pid " + std::to_string(pid)
           + ", signal " + std::to_string(c.signum) + "): ";
  };
  if (auto* p = dynamic_cast<process_rec*>(r)) {
    if (int err = uv_process_kill(&p->proc, c.signum); err < 0)
      fail(r->reply_to, c.id, what("uv_process_kill", p->pid) + uv_error(err));
  } else if (auto* w = dynamic_cast<pidfd_rec*>(r)) {
    if (::syscall(SYS_pidfd_send_signal, w->pidfd, c.signum, nullptr, 0u) < 0)
      fail(r->reply_to, c.id,
           what("pidfd_send_signal", w->pid) + sys_error(errno));
  } else {
    fail(r->reply_to, c.id, "kill: handle " + std::to_string(c.id) + " is a "
                              + r->kind + ", not a process");
  }
}

// --- Timers, fds, signals ------------------------------------------------------

void engine::run(timer_cmd& c) {
  auto* r = new timer_rec(this, c.id, c.reply_to, c.repeat.count() > 0);
  if (int err = uv_timer_init(&loop_, &r->timer); err < 0) {
    fail(c.reply_to, c.id, "start_timer: uv_timer_init: " + uv_error(err));
    delete r;
    return;
  }
  r->bind();
  records_.emplace(c.id, r);
  auto ms = [](std::chrono::milliseconds d) {
    return static_cast<uint64_t>(std::max<int64_t>(d.count(), 0));
  };
  int err = uv_timer_start(
    &r->timer,
    [](uv_timer_t* t) {
      auto* rec = static_cast<timer_rec*>(rec_of(t));
      rec->owner->on_timer(rec);
    },
    ms(c.delay), ms(c.repeat));
  if (err < 0) {
    fail(c.reply_to, c.id, "start_timer: uv_timer_start: " + uv_error(err));
    close_rec(r);
  }
}

void engine::on_timer(timer_rec* r) {
  post(r->reply_to, timer_fired{r->id});
  if (!r->repeating)
    close_rec(r);
}

void fd_cb(uv_poll_t* p, int status, int events) {
  auto* rec = static_cast<fd_rec*>(rec_of(p));
  rec->owner->on_fd(rec, status, events);
}

void engine::run(watch_fd_cmd& c) {
  auto* r = new fd_rec(this, c.id, c.reply_to, c.fd, c.mode, c.adopt);
  if (int err = uv_poll_init(&loop_, &r->poll, c.fd); err < 0) {
    fail(c.reply_to, c.id, "watch_fd: uv_poll_init(fd " + std::to_string(c.fd)
                             + "): " + uv_error(err));
    delete r; // never initialized; closes an adopted fd
    return;
  }
  r->bind();
  records_.emplace(c.id, r);
  if (int err = uv_poll_start(&r->poll, r->events(), fd_cb); err < 0) {
    fail(c.reply_to, c.id, "watch_fd: uv_poll_start(fd " + std::to_string(c.fd)
                             + "): " + uv_error(err));
    return close_rec(r);
  }
  r->armed = true;
}

void engine::run(rearm_cmd& c) {
  auto* r = dynamic_cast<fd_rec*>(find(c.id));
  if (!r || r->armed)
    return;
  if (int err = uv_poll_start(&r->poll, r->events(), fd_cb); err < 0) {
    fail(r->reply_to, r->id, "rearm: uv_poll_start(fd " + std::to_string(r->fd)
                               + "): " + uv_error(err));
    return close_rec(r);
  }
  r->armed = true;
}

void engine::on_fd(fd_rec* r, int status, int events) {
  if (status < 0) {
    fail(r->reply_to, r->id, "watch_fd: poll fd " + std::to_string(r->fd)
                               + ": " + uv_error(status));
    return close_rec(r);
  }
  fd_ready msg{r->id, r->fd, (events & UV_READABLE) != 0,
               (events & UV_WRITABLE) != 0, (events & UV_DISCONNECT) != 0, 0, {}};
  if (r->mode == fd_mode::eventfd) {
    uint64_t counter = 0;
    ssize_t n;
    do
      n = ::read(r->fd, &counter, sizeof counter);
    while (n < 0 && errno == EINTR);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
      return; // someone else drained it first
    if (n != static_cast<ssize_t>(sizeof counter)) {
      fail(r->reply_to, r->id,
           "watch_fd: read eventfd " + std::to_string(r->fd) + ": "
             + (n < 0 ? sys_error(errno)
                      : "short read of " + std::to_string(n) + " bytes"));
      return close_rec(r);
    }
    msg.counter = counter;
  } else if (r->mode == fd_mode::file_changed) {
    char buf[4096];
    ssize_t n;
    do
      n = ::pread(r->fd, buf, sizeof buf, 0);
    while (n < 0 && errno == EINTR);
    if (n < 0) {
      fail(r->reply_to, r->id, "watch_fd: read " + std::to_string(r->fd) + ": "
                                 + sys_error(errno));
      return close_rec(r);
    }
    msg.content.assign(buf, static_cast<size_t>(n));
  } else {
    uv_poll_stop(&r->poll); // one-shot until rearm()
    r->armed = false;
  }
  post(r->reply_to, msg);
}

void engine::run(signal_cmd& c) {
  auto* r = new signal_rec(this, c.id, c.reply_to);
  if (int err = uv_signal_init(&loop_, &r->sig); err < 0) {
    fail(c.reply_to, c.id, "watch_signal: uv_signal_init: " + uv_error(err));
    delete r;
    return;
  }
  r->bind();
  records_.emplace(c.id, r);
  int err = uv_signal_start(
    &r->sig,
    [](uv_signal_t* s, int signum) {
      auto* rec = static_cast<signal_rec*>(rec_of(s));
      rec->owner->on_signal(rec, signum);
    },
    c.signum);
  if (err < 0) {
    fail(c.reply_to, c.id, "watch_signal: uv_signal_start(signal "
                             + std::to_string(c.signum) + "): " + uv_error(err));
    close_rec(r);
  }
}

void engine::on_signal(signal_rec* r, int signum) {
  post(r->reply_to, signal_received{r->id, signum});
}

// --- Streams -------------------------------------------------------------------

void alloc_cb(uv_handle_t* h, size_t, uv_buf_t* buf) {
  // One buffer for all: on_read consumes it before the next read.
  *buf = engine_of(h)->read_buffer();
}

void read_cb(uv_stream_t* st, ssize_t n, const uv_buf_t* buf) {
  auto* s = static_cast<stream_rec*>(rec_of(st));
  s->owner->on_read(s, n, buf);
}

void engine::run(listen_cmd& c) {
  std::string host = c.host.empty() ? "0.0.0.0" : c.host;
  std::string where = (host.find(':') != std::string::npos ? "[" + host + "]"
                                                           : host)
                      + ":" + std::to_string(c.port);
  sockaddr_storage addr{};
  if (uv_ip4_addr(host.c_str(), c.port, reinterpret_cast<sockaddr_in*>(&addr))
        != 0
      && uv_ip6_addr(host.c_str(), c.port,
                     reinterpret_cast<sockaddr_in6*>(&addr))
           != 0)
    return fail(c.reply_to, c.id,
                "listen_tcp: '" + host + "' is not an IPv4 or IPv6 address");
  auto* r = new listener_rec(this, c.id, c.reply_to);
  if (int err = uv_tcp_init(&loop_, &r->tcp); err < 0) {
    fail(c.reply_to, c.id, "listen_tcp: uv_tcp_init: " + uv_error(err));
    delete r;
    return;
  }
  r->bind();
  records_.emplace(c.id, r);
  // uv_tcp_bind reports EADDRINUSE only from uv_listen.
  int err = uv_tcp_bind(&r->tcp, reinterpret_cast<const sockaddr*>(&addr), 0);
  if (err < 0) {
    fail(c.reply_to, c.id, "listen_tcp: bind " + where + ": " + uv_error(err));
    return close_rec(r);
  }
  err = uv_listen(reinterpret_cast<uv_stream_t*>(&r->tcp), c.backlog,
                  [](uv_stream_t* server, int status) {
                    auto* l = static_cast<listener_rec*>(rec_of(server));
                    l->owner->on_connection(l, status);
                  });
  if (err < 0) {
    fail(c.reply_to, c.id, "listen_tcp: listen " + where + ": " + uv_error(err));
    return close_rec(r);
  }
  sockaddr_storage bound{};
  int len = sizeof bound;
  err = uv_tcp_getsockname(&r->tcp, reinterpret_cast<sockaddr*>(&bound), &len);
  if (err < 0) {
    fail(c.reply_to, c.id,
         "listen_tcp: getsockname " + where + ": " + uv_error(err));
    return close_rec(r);
  }
  uint16_t port = 0;
  auto ip = ip_name(bound, &port);
  post(c.reply_to, tcp_listening{c.id, std::move(ip), port});
}

void engine::on_connection(listener_rec* l, int status) {
  if (status < 0) // e.g. EMFILE: keep listening, tell the owner
    return fail(l->reply_to, l->id, "listen_tcp: accept: " + uv_error(status));
  auto* s = new stream_rec(this, next_id(), l->reply_to, false, 0);
  if (int err = uv_tcp_init(&loop_, &s->h.tcp); err < 0) {
    fail(l->reply_to, l->id, "listen_tcp: uv_tcp_init: " + uv_error(err));
    delete s;
    return;
  }
  s->bind();
  if (int err = uv_accept(reinterpret_cast<uv_stream_t*>(&l->tcp), s->stream());
      err < 0) {
    fail(l->reply_to, l->id, "listen_tcp: accept: " + uv_error(err));
    uv_close(s->handle(), on_close);
    return;
  }
  records_.emplace(s->id, s);
  sockaddr_storage peer{};
  int len = sizeof peer;
  std::string peer_name = "?";
  if (uv_tcp_getpeername(&s->h.tcp, reinterpret_cast<sockaddr*>(&peer), &len)
      == 0)
    peer_name = endpoint_name(peer);
  post(l->reply_to, tcp_accepted{l->id, s->id, std::move(peer_name)});
  if (int err = uv_read_start(s->stream(), alloc_cb, read_cb); err < 0)
    end_stream(s, "read_start: " + uv_error(err));
}

/// The connect request and where it goes (for the messages).
struct connect_req {
  uv_connect_t req{};
  std::string where;
};

void engine::run(connect_cmd& c) {
  std::string where = (c.host.find(':') != std::string::npos ? "[" + c.host + "]"
                                                             : c.host)
                      + ":" + std::to_string(c.port);
  sockaddr_storage addr{};
  if (uv_ip4_addr(c.host.c_str(), c.port, reinterpret_cast<sockaddr_in*>(&addr))
        != 0
      && uv_ip6_addr(c.host.c_str(), c.port,
                     reinterpret_cast<sockaddr_in6*>(&addr))
           != 0)
    return fail(c.reply_to, c.id,
                "connect_tcp: '" + c.host + "' is not an IPv4 or IPv6 address");
  auto* s = new stream_rec(this, c.id, c.reply_to, false, 0);
  if (int err = uv_tcp_init(&loop_, &s->h.tcp); err < 0) {
    fail(c.reply_to, c.id, "connect_tcp: uv_tcp_init: " + uv_error(err));
    delete s;
    return;
  }
  s->bind();
  records_.emplace(c.id, s);
  auto* req = new connect_req;
  req->where = std::move(where);
  req->req.data = req;
  // Writes submitted before the connection is up wait in libuv's queue.
  int err = uv_tcp_connect(&req->req, &s->h.tcp, reinterpret_cast<const sockaddr*>(&addr),
                           [](uv_connect_t* r, int status) {
                             engine_of(r->handle)->on_connect(r, status);
                           });
  if (err < 0) {
    fail(c.reply_to, c.id, "connect_tcp: connect " + req->where + ": " + uv_error(err));
    delete req;
    close_rec(s);
  }
}

void engine::on_connect(uv_connect_t* r, int status) {
  std::unique_ptr<connect_req> req{static_cast<connect_req*>(r->data)};
  auto* s = static_cast<stream_rec*>(rec_of(r->handle));
  // ECANCELED: closed by its owner (close(), stop()) while connecting.
  if (uv_is_closing(s->handle()))
    return;
  if (status < 0) {
    fail(s->reply_to, s->id, "connect_tcp: connect " + req->where + ": " + uv_error(status));
    return close_rec(s);
  }
  post(s->reply_to, tcp_connected{s->id, req->where});
  if (int err = uv_read_start(s->stream(), alloc_cb, read_cb); err < 0)
    end_stream(s, "read_start: " + uv_error(err));
}

void engine::run(line_stream_cmd& c) {
  auto* s = new stream_rec(this, c.id, c.reply_to, true, c.max_line);
  if (int err = uv_pipe_init(&loop_, &s->h.pipe, 0); err < 0) {
    fail(c.reply_to, c.id, "open_line_stream: uv_pipe_init: " + uv_error(err));
    close_fd(c.fd);
    delete s;
    return;
  }
  s->bind();
  if (int err = uv_pipe_open(&s->h.pipe, c.fd); err < 0) {
    fail(c.reply_to, c.id, "open_line_stream: uv_pipe_open(fd "
                             + std::to_string(c.fd) + "): " + uv_error(err));
    close_fd(c.fd); // not adopted by the handle
    uv_close(s->handle(), on_close);
    return;
  }
  records_.emplace(c.id, s);
  if (int err = uv_read_start(s->stream(), alloc_cb, read_cb); err < 0) {
    fail(c.reply_to, c.id, "open_line_stream: read_start(fd "
                             + std::to_string(c.fd) + "): " + uv_error(err));
    close_rec(s);
  }
}

void engine::on_read(stream_rec* s, ssize_t n, const uv_buf_t* buf) {
  if (n > 0) {
    if (s->lines)
      feed_lines(s, buf->base, static_cast<size_t>(n));
    else
      post(s->reply_to,
              stream_data{s->id, std::string(buf->base, static_cast<size_t>(n))});
    return;
  }
  if (n == 0)
    return; // EAGAIN
  if (n == UV_EOF) {
    if (s->lines && !s->partial.empty())
      post(s->reply_to, stream_line{s->id, std::move(s->partial)});
    return end_stream(s, "");
  }
  end_stream(s, "read: " + uv_error(static_cast<int>(n)));
}

void engine::feed_lines(stream_rec* s, const char* data, size_t n) {
  auto& buf = s->partial;
  size_t scan = buf.size(); // the old bytes hold no '\n'
  buf.append(data, n);
  size_t start = 0;
  for (;;) {
    auto pos = buf.find('\n', scan);
    if (pos == std::string::npos)
      break;
    if (pos - start > s->max_line)
      return end_stream(s, "line over " + std::to_string(s->max_line)
                             + " bytes");
    post(s->reply_to, stream_line{s->id, buf.substr(start, pos - start)});
    start = scan = pos + 1;
  }
  buf.erase(0, start);
  if (buf.size() > s->max_line)
    end_stream(s, "line over " + std::to_string(s->max_line) + " bytes");
}

void engine::run(write_cmd& c) {
  auto* r = find(c.id);
  if (!r)
    return;
  auto* s = dynamic_cast<stream_rec*>(r);
  if (!s)
    return fail(r->reply_to, c.id, "write: handle " + std::to_string(c.id)
                                     + " is a " + r->kind + ", not a stream");
  if (s->draining || c.bytes.empty())
    return;
  auto* w = new write_req;
  w->bytes = std::move(c.bytes);
  w->req.data = w;
  uv_buf_t b = uv_buf_init(w->bytes.data(),
                           static_cast<unsigned>(w->bytes.size()));
  int err = uv_write(&w->req, s->stream(), &b, 1,
                     [](uv_write_t* req, int status) {
                       auto* wr = static_cast<write_req*>(req->data);
                       engine_of(req->handle)->on_write(wr, status);
                     });
  if (err < 0) {
    delete w;
    end_stream(s, "write: " + uv_error(err));
  }
}

void engine::on_write(write_req* w, int status) {
  auto* s = static_cast<stream_rec*>(rec_of(w->req.handle));
  delete w;
  // ECANCELED: the handle is closing (close(), stop()); nothing to report.
  if (status < 0 && !uv_is_closing(s->handle())) {
    if (s->draining)
      close_rec(s); // the owner asked for the close: no message
    else
      end_stream(s, "write: " + uv_error(status));
  }
}

void engine::run(close_cmd& c) {
  auto* r = find(c.id);
  if (!r)
    return;
  auto* s = dynamic_cast<stream_rec*>(r);
  if (!c.after_write || !s)
    return close_rec(r);
  if (s->draining)
    return;
  s->draining = true;
  uv_read_stop(s->stream());
  auto* req = new uv_shutdown_t{};
  // uv_shutdown runs after the queued writes: then FIN, then close.
  int err = uv_shutdown(req, s->stream(), [](uv_shutdown_t* q, int status) {
    engine_of(q->handle)->on_shutdown(q, status);
  });
  if (err < 0) {
    delete req;
    close_rec(s);
  }
}

void engine::on_shutdown(uv_shutdown_t* req, int) {
  auto* s = rec_of(req->handle);
  delete req;
  if (!uv_is_closing(s->handle()))
    close_rec(s);
}

} // namespace

// --- io_thread: a thin front over the engine -----------------------------------

struct io_thread::impl {
  engine eng;
};

io_thread::io_thread() : impl_(std::make_unique<impl>()) {
}

io_thread::~io_thread() {
  stop();
}

bool io_thread::start(std::string* error_out) {
  return impl_->eng.start(error_out);
}

stop_report io_thread::stop() {
  return impl_->eng.stop();
}

bool io_thread::running() const noexcept {
  return impl_->eng.running();
}

handle_id io_thread::spawn_process(caf::actor reply_to, process_spec spec) {
  auto id = impl_->eng.next_id();
  impl_->eng.submit(spawn_cmd{id, std::move(reply_to), std::move(spec)});
  return id;
}

handle_id io_thread::watch_pidfd(caf::actor reply_to, int pidfd, int pid) {
  auto id = impl_->eng.next_id();
  impl_->eng.submit(pidfd_cmd{id, std::move(reply_to), pidfd, pid});
  return id;
}

void io_thread::kill(handle_id process, int signum) {
  impl_->eng.submit(kill_cmd{process, signum});
}

handle_id io_thread::start_timer(caf::actor reply_to,
                                 std::chrono::milliseconds delay,
                                 std::chrono::milliseconds repeat) {
  auto id = impl_->eng.next_id();
  impl_->eng.submit(timer_cmd{id, std::move(reply_to), delay, repeat});
  return id;
}

handle_id io_thread::watch_fd(caf::actor reply_to, int fd, fd_mode mode,
                              bool adopt) {
  auto id = impl_->eng.next_id();
  impl_->eng.submit(watch_fd_cmd{id, std::move(reply_to), fd, mode, adopt});
  return id;
}

void io_thread::rearm(handle_id watch) {
  impl_->eng.submit(rearm_cmd{watch});
}

handle_id io_thread::watch_signal(caf::actor reply_to, int signum) {
  auto id = impl_->eng.next_id();
  impl_->eng.submit(signal_cmd{id, std::move(reply_to), signum});
  return id;
}

handle_id io_thread::listen_tcp(caf::actor reply_to, std::string host,
                                uint16_t port, int backlog) {
  auto id = impl_->eng.next_id();
  impl_->eng.submit(
    listen_cmd{id, std::move(reply_to), std::move(host), port, backlog});
  return id;
}

handle_id io_thread::connect_tcp(caf::actor reply_to, std::string host,
                                 uint16_t port) {
  auto id = impl_->eng.next_id();
  impl_->eng.submit(connect_cmd{id, std::move(reply_to), std::move(host), port});
  return id;
}

handle_id io_thread::open_line_stream(caf::actor reply_to, int fd,
                                      size_t max_line) {
  auto id = impl_->eng.next_id();
  impl_->eng.submit(line_stream_cmd{id, std::move(reply_to), fd, max_line});
  return id;
}

void io_thread::write(handle_id stream, std::string bytes) {
  impl_->eng.submit(write_cmd{stream, std::move(bytes)});
}

void io_thread::close(handle_id id) {
  impl_->eng.submit(close_cmd{id, false});
}

void io_thread::close_after_write(handle_id stream) {
  impl_->eng.submit(close_cmd{stream, true});
}

} // namespace agentvisor::io
