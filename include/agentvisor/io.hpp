#pragma once
/// The libuv I/O thread: one uv loop on its own thread, the only place that
/// touches child processes, timers, signals, watched fds and sockets.
///
/// Data flow is one-way and visible: actors submit commands (any thread,
/// lock-free for them: a mutex-guarded queue woken by uv_async_send); the
/// loop answers only by sending CAF messages (the structs below) to the actor
/// named in the command. Nothing else is shared between the two sides.
///
/// Every command returns a handle_id at once (allocated atomically, so the
/// caller knows it before the loop has run the command); every message names
/// the handle_id it is about. A command that fails on the loop answers with
/// io_failed for that id.
///
/// Order: the loop runs commands in the order they were submitted (across
/// all submitting threads, in the order they took the queue's lock), and the
/// messages to one actor arrive in the order the loop sent them. So the reply
/// to a later command proves an earlier one has run (tests use a 0 ms timer
/// as such a fence).
///
/// Lifecycle: commands submitted before start() wait in the queue and run
/// when the loop starts. Commands submitted once stop() has begun do not run:
/// those with a reply_to answer io_failed ("io_thread is stopped") at once,
/// from the submitting thread; fds they would have owned are closed; kill,
/// write, rearm and close are dropped. After stop() no message is sent.
///
/// Lifetime: stop the io_thread before the caf::actor_system it sends to is
/// destroyed (the loop holds caf::actor handles until then).

#include <caf/actor.hpp>
#include <caf/meta/type_name.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace agentvisor::io {

using handle_id = uint64_t;

// --- Messages the I/O thread sends to actors ------------------------------

/// A command could not be carried out (names the call and errno text).
struct io_failed {
  handle_id id = 0;
  std::string what;
};

/// spawn_process started the child.
struct process_started {
  handle_id id = 0;
  int pid = 0;
};

/// A child (spawned or watched through its pidfd) ended. Exactly one of
/// exit_status (term_signal == 0) or term_signal is meaningful.
struct process_exited {
  handle_id id = 0;
  int pid = 0;
  int64_t exit_status = 0;
  int term_signal = 0;
};

struct timer_fired {
  handle_id id = 0;
};

/// A watched fd became ready. For fd_mode::eventfd the loop has already
/// read the 8-byte counter (so the watch does not fire again for the same
/// event) and `counter` holds it.
struct fd_ready {
  handle_id id = 0;
  int fd = -1;
  bool readable = false;
  bool writable = false;
  bool disconnected = false;
  uint64_t counter = 0;
  /// fd_mode::file_changed: the file's content after the change.
  std::string content;
};

struct signal_received {
  handle_id id = 0;
  int signum = 0;
};

/// listen_tcp is bound; `port` is the real port (useful when 0 was asked).
struct tcp_listening {
  handle_id id = 0;
  std::string host;
  uint16_t port = 0;
};

/// A connection accepted on listener `listener`; `id` names the connection.
struct tcp_accepted {
  handle_id listener = 0;
  handle_id id = 0;
  std::string peer;
};

/// connect_tcp is connected; `peer` is the address it reached ("127.0.0.1:80").
struct tcp_connected {
  handle_id id = 0;
  std::string peer;
};

/// Bytes read from a connection, as they came.
struct stream_data {
  handle_id id = 0;
  std::string bytes;
};

/// One line (without its '\n') from a line stream.
struct stream_line {
  handle_id id = 0;
  std::string line;
};

/// A stream or connection closed; `reason` is empty for a clean EOF, else it
/// names what happened ("line over 1048576 bytes", "read: Connection reset").
/// After this message the id is dead: the loop has closed the handle.
struct stream_closed {
  handle_id id = 0;
  std::string reason;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, io_failed& x) {
  return f(caf::meta::type_name("io_failed"), x.id, x.what);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, process_started& x) {
  return f(caf::meta::type_name("process_started"), x.id, x.pid);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, process_exited& x) {
  return f(caf::meta::type_name("process_exited"), x.id, x.pid, x.exit_status,
           x.term_signal);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, timer_fired& x) {
  return f(caf::meta::type_name("timer_fired"), x.id);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, fd_ready& x) {
  return f(caf::meta::type_name("fd_ready"), x.id, x.fd, x.readable,
           x.writable, x.disconnected, x.counter, x.content);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, signal_received& x) {
  return f(caf::meta::type_name("signal_received"), x.id, x.signum);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, tcp_listening& x) {
  return f(caf::meta::type_name("tcp_listening"), x.id, x.host, x.port);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, tcp_accepted& x) {
  return f(caf::meta::type_name("tcp_accepted"), x.listener, x.id, x.peer);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, tcp_connected& x) {
  return f(caf::meta::type_name("tcp_connected"), x.id, x.peer);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, stream_data& x) {
  return f(caf::meta::type_name("stream_data"), x.id, x.bytes);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, stream_line& x) {
  return f(caf::meta::type_name("stream_line"), x.id, x.line);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, stream_closed& x) {
  return f(caf::meta::type_name("stream_closed"), x.id, x.reason);
}

// --- Commands --------------------------------------------------------------

/// A child process for spawn_process. `stdio[i]` becomes the child's fd i
/// (-1: /dev/null for 0..2, nothing past 2); fds past 2 are how a child
/// inherits e.g. a socketpair end. argv[0] is looked up in PATH.
struct process_spec {
  std::vector<std::string> argv;
  /// Empty: inherit the supervisor's environment.
  std::vector<std::string> env;
  std::string cwd;
  std::vector<int> stdio = {-1, -1, -1};
  /// true: the loop owns the fds in `stdio` and closes them in the
  /// supervisor once the child has its copies (or the spawn failed, or the
  /// command was dropped by stop()), each distinct fd once. false: the caller
  /// keeps them (e.g. to pass its own stderr), and may close them once
  /// process_started or io_failed arrived.
  bool close_stdio = true;
};

enum class fd_mode : uint8_t {
  readable,
  writable,
  /// An eventfd: the loop reads the counter and reports it (cgroup v1 OOM).
  eventfd,
  /// A file that signals changes with POLLPRI, such as cgroup v2's
  /// memory.events: the loop re-reads it from offset 0 (which re-arms the
  /// notification) and reports its content in fd_ready::content. Keeps firing
  /// like eventfd.
  file_changed,
};

/// What stop() found: handles still open after every close ran (must be 0).
struct stop_report {
  size_t open_handles = 0;
  std::vector<std::string> open_handle_types;
};

class io_thread {
public:
  io_thread();
  ~io_thread(); ///< stop()s if still running.
  io_thread(const io_thread&) = delete;
  io_thread& operator=(const io_thread&) = delete;

  /// Starts the loop thread. Returns false (with `error_out` set) when libuv
  /// could not set up its loop or async handle, when already started, or
  /// after stop() (an io_thread runs once).
  bool start(std::string* error_out = nullptr);

  /// Closes every handle (killing no process: spawned children are left to
  /// their owners, who must have killed them), runs the loop until all close
  /// callbacks ran, joins the thread and walks the loop (uv_walk). Sends no
  /// message for the handles it closes. Idempotent: a second call returns the
  /// first report. Thread-safe, but never call it from the loop thread.
  stop_report stop();

  bool running() const noexcept;

  /// Spawns a child with uv_spawn: process_started, later process_exited
  /// (after which the id is dead). Children are reaped by libuv.
  handle_id spawn_process(caf::actor reply_to, process_spec spec);

  /// Watches a child that someone else created (clone3 with a pidfd): when
  /// the pidfd is readable the loop reaps it (waitid P_PIDFD) and sends
  /// process_exited. The loop takes ownership of `pidfd` and closes it.
  /// close() on the id stops watching without reaping: the owner reaps.
  handle_id watch_pidfd(caf::actor reply_to, int pidfd, int pid);

  /// Sends a signal to a process started by spawn_process or watched by
  /// watch_pidfd (pidfd_send_signal for the latter). Failures: io_failed.
  /// An id that is dead (the exit was already reported) is ignored.
  void kill(handle_id process, int signum);

  /// One-shot (repeat == 0) or repeating timer: timer_fired. A one-shot
  /// timer's id is dead once it fired.
  handle_id start_timer(caf::actor reply_to, std::chrono::milliseconds delay,
                        std::chrono::milliseconds repeat = {});

  /// Readiness watch on an fd (made non-blocking by libuv: the flag is on
  /// the shared open file description).
  ///
  /// readable/writable are one-shot: after an fd_ready the watch pauses
  /// until rearm(id), so a level-triggered fd the owner has not drained yet
  /// does not flood it. eventfd keeps firing: the loop drains the counter.
  ///
  /// adopt == false: the caller owns `fd` (it stays open after close()) and
  /// must keep it open until close(id) has run on the loop (the reply to a
  /// later command, or stop(), proves that). adopt == true: the loop owns it
  /// and closes it when the watch closes (or the command fails or is dropped).
  /// One fd can carry one watch at a time (libuv: "file exists").
  handle_id watch_fd(caf::actor reply_to, int fd, fd_mode mode,
                     bool adopt = false);

  /// Re-arms a paused readable/writable watch after its fd_ready.
  /// Ignored for dead ids and for armed watches.
  void rearm(handle_id watch);

  /// signal_received each time `signum` arrives (uv_signal).
  handle_id watch_signal(caf::actor reply_to, int signum);

  /// TCP listener: tcp_listening, then tcp_accepted and stream_data per
  /// connection, stream_closed when a connection ends. `host` is an IPv4 or
  /// IPv6 literal ("127.0.0.1", "::1", "0.0.0.0", "::"); empty means
  /// "0.0.0.0". Closing the listener leaves accepted connections open.
  handle_id listen_tcp(caf::actor reply_to, std::string host, uint16_t port,
                       int backlog = 128);

  /// Outgoing TCP connection to `host` (an IPv4 or IPv6 literal; no name
  /// lookup) and `port`: tcp_connected once connected, then stream_data as
  /// bytes arrive and stream_closed when the peer ends it, exactly like an
  /// accepted connection; write(), close() and close_after_write() work the
  /// same. Writes submitted before tcp_connected wait and go out once it is
  /// up. A failed connect (refused, unreachable, a bad literal) answers
  /// io_failed naming the address and the error, and the id is dead.
  handle_id connect_tcp(caf::actor reply_to, std::string host, uint16_t port);

  /// Newline-delimited stream over a connected socket or pipe fd (the loop
  /// takes ownership of `fd`): stream_line per line, split at '\n' only (a
  /// '\r' stays in the line); a line longer than `max_line` bytes closes the
  /// stream with stream_closed "line over <max_line> bytes" (lines before it
  /// are delivered). At EOF a partial last line (no '\n') is delivered as a
  /// stream_line, then stream_closed with an empty reason.
  handle_id open_line_stream(caf::actor reply_to, int fd,
                             size_t max_line = 1 << 20);

  /// Writes to a TCP connection or line stream, in order (bytes as given: a
  /// line stream adds no '\n'). A failed write closes the stream with
  /// stream_closed "write: ...". Dead ids are ignored.
  void write(handle_id stream, std::string bytes);

  /// Closes any handle: stops a timer or watch, closes a connection or
  /// stream (no stream_closed is sent for a close the owner asked for),
  /// stops watching a process. Unknown or dead ids are ignored.
  void close(handle_id id);

  /// Like close() for a stream, but only after queued writes are flushed
  /// (then shutdown(SHUT_WR) and close). Reads stop at once; no further
  /// message is sent for the id. For other handles it is close().
  void close_after_write(handle_id stream);

private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

} // namespace agentvisor::io
