#include "commands.hpp"

#include "agentvisor/guest_protocol.hpp"
#include "agentvisor/json.hpp"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>

extern char** environ;

namespace agentvisor::guest {

struct command_table::command {
  uint64_t id = 0;
  pid_t pid = -1;
  unique_fd pipes[3]; ///< our ends: stdin (write), stdout, stderr (read)
  std::string stdin_data;
  std::size_t stdin_off = 0;
  std::string output[3]; ///< [1] stdout, [2] stderr
  bool truncated = false;
  bool timed_out = false;
  bool finished = false;
  int wstatus = 0;
  steady::time_point started;
  steady::time_point deadline;
  steady::time_point ended;
};

namespace {


/// posix_spawn attributes and file actions, destroyed on scope exit.
struct spawn_setup {
  posix_spawnattr_t attr;
  posix_spawn_file_actions_t actions;
  spawn_setup() {
    posix_spawnattr_init(&attr);
    posix_spawn_file_actions_init(&actions);
  }
  ~spawn_setup() {
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attr);
  }
  spawn_setup(const spawn_setup&) = delete;
  spawn_setup& operator=(const spawn_setup&) = delete;
};

void set_nonblocking(int fd) {
  int fl = ::fcntl(fd, F_GETFL);
  if (fl >= 0) ::fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

} // namespace

command_table::command_table() = default;

command_table::~command_table() {
  for (auto& c : cmds_) {
    if (c->finished) continue;
    ::kill(-c->pid, SIGKILL);
    ::waitpid(c->pid, nullptr, 0);
  }
}

status command_table::start(uint64_t id, const workspace& ws, const tool_args& args) {
  simdjson::dom::element argv_el;
  if (!args.find("argv", argv_el)) return tool_args::invalid("argv", "missing");
  simdjson::dom::array argv_arr;
  if (argv_el.get_array().get(argv_arr)) return tool_args::invalid("argv", "expected an array of strings");
  std::vector<std::string> argv;
  for (auto item : argv_arr) {
    std::string_view s;
    if (item.get_string().get(s)) return tool_args::invalid("argv", "expected an array of strings");
    if (s.find('\0') != std::string_view::npos)
      return tool_args::invalid("argv", "argv[" + std::to_string(argv.size()) + "] contains a NUL byte");
    argv.emplace_back(s);
  }
  if (argv.empty() || argv[0].empty()) return tool_args::invalid("argv", "must name a program");

  uint64_t timeout_ms = command_default_timeout_ms;
  if (auto st = args.get("timeout_ms", timeout_ms, false)) return st;
  if (timeout_ms == 0 || timeout_ms > command_max_timeout_ms)
    return tool_args::invalid("timeout_ms", "must be between 1 and 86400000");
  std::string_view cwd;
  std::string_view input;
  if (auto st = args.get("cwd", cwd, false)) return st;
  if (auto st = args.get("stdin", input, false)) return st;

  if (cmds_.size() >= command_max_running)
    return tool_error{tool_errc::exec_failed, "too many commands running (at most 64)"};

  unique_fd cwd_fd; // empty: the workspace root
  if (args.has("cwd")) {
    auto fd = ws.open_path(cwd, O_PATH | O_DIRECTORY);
    if (!fd) {
      fd.err().message.insert(0, "cwd: ");
      return std::move(fd.err());
    }
    cwd_fd = std::move(*fd);
  }

  // Three pipes; ends[i][0] is the child's, ends[i][1] ours.
  unique_fd ends[3][2];
  for (int i = 0; i < 3; ++i) {
    int p[2];
    if (::pipe2(p, O_CLOEXEC) != 0) return errno_error("execute_command: pipe", errno);
    if (i == 0) {
      ends[i][0].reset(p[0]);
      ends[i][1].reset(p[1]);
    } else {
      ends[i][0].reset(p[1]);
      ends[i][1].reset(p[0]);
    }
    set_nonblocking(ends[i][1].get());
  }

  spawn_setup s;
  sigset_t none;
  sigset_t all;
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawnattr_setflags(&s.attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK |
                                      POSIX_SPAWN_SETSIGDEF);
  posix_spawnattr_setpgroup(&s.attr, 0);
  posix_spawnattr_setsigmask(&s.attr, &none);
  posix_spawnattr_setsigdefault(&s.attr, &all);
  for (int i = 0; i < 3; ++i) posix_spawn_file_actions_adddup2(&s.actions, ends[i][0].get(), i);
  posix_spawn_file_actions_addfchdir_np(&s.actions, cwd_fd ? cwd_fd.get() : ws.root_fd());

  std::vector<char*> cargv;
  cargv.reserve(argv.size() + 1);
  for (auto& a : argv) cargv.push_back(a.data());
  cargv.push_back(nullptr);

  auto c = std::make_unique<command>();
  int rc = ::posix_spawnp(&c->pid, cargv[0], &s.actions, &s.attr, cargv.data(), environ);
  if (rc != 0) {
    std::string m = "argv[0] \"" + argv[0] + "\": " + std::strerror(rc);
    return tool_error{tool_errc::exec_failed, std::move(m)};
  }
  // Under a cgroup OOM the kernel should kill a command before the guest:
  // commands run at oom_score_adj 500, written as soon as posix_spawn
  // returns (the command has exec'd and owns its /proc entry by then).
  // Not the guest lowering its own: that needs CAP_SYS_RESOURCE, which user
  // namespaces and some hosts (this CI's) do not grant, and the guest cannot
  // write its own entry at all (set-uid made it non-dumpable). A process
  // the command forks before the write lands keeps 0.
  // posix_spawn returns once the child released our memory in exec, a
  // moment before the kernel makes it dumpable (its /proc entry ours to
  // write): under load that moment shows as EACCES, so retry briefly.
  {
    auto path = "/proc/" + std::to_string(c->pid) + "/oom_score_adj";
    auto until = steady::now() + std::chrono::milliseconds(20);
    for (;;) {
      int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
      if (fd >= 0) {
        (void) !::write(fd, "500", 3);
        ::close(fd);
        break;
      }
      if ((errno != EACCES && errno != EPERM) || steady::now() >= until)
        break;
      timespec nap{0, 50'000};
      ::nanosleep(&nap, nullptr);
    }
  }
  c->id = id;
  c->started = steady::now();
  c->deadline = c->started + std::chrono::milliseconds(timeout_ms);
  for (int i = 0; i < 3; ++i) c->pipes[i] = std::move(ends[i][1]);
  if (input.empty())
    c->pipes[0].reset(); // EOF at once
  else
    c->stdin_data.assign(input);
  cmds_.push_back(std::move(c));
  return std::nullopt;
}

void command_table::add_pollfds(std::vector<pollfd>& fds,
                                std::vector<std::pair<std::size_t, int>>& owners) const {
  for (std::size_t i = 0; i < cmds_.size(); ++i) {
    const auto& c = *cmds_[i];
    if (c.finished) continue;
    for (int s = 0; s < 3; ++s) {
      if (!c.pipes[s]) continue;
      fds.push_back(pollfd{c.pipes[s].get(), static_cast<short>(s == 0 ? POLLOUT : POLLIN), 0});
      owners.emplace_back(i, s);
    }
  }
}

void command_table::drain(command& c, int stream) {
  char buf[64 * 1024];
  // Bounded so that a chatty command cannot hold the loop for long.
  for (int rounds = 0; rounds < 64 && c.pipes[stream]; ++rounds) {
    ssize_t n = ::read(c.pipes[stream].get(), buf, sizeof buf);
    if (n > 0) {
      auto& o = c.output[stream];
      auto k = static_cast<std::size_t>(n);
      std::size_t room = command_max_output - o.size();
      if (k > room) {
        c.truncated = true;
        k = room;
      }
      o.append(buf, k);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) return;
    c.pipes[stream].reset(); // EOF or error
  }
}

void command_table::on_ready(std::size_t index, int stream, short revents) {
  if (index >= cmds_.size()) return;
  auto& c = *cmds_[index];
  if (stream != 0) {
    drain(c, stream);
    return;
  }
  if (revents & (POLLERR | POLLHUP)) {
    c.pipes[0].reset(); // the command closed its stdin
    return;
  }
  while (c.stdin_off < c.stdin_data.size()) {
    ssize_t n = ::write(c.pipes[0].get(), c.stdin_data.data() + c.stdin_off,
                        c.stdin_data.size() - c.stdin_off);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) return;
      break; // EPIPE: the command does not want the rest
    }
    c.stdin_off += static_cast<std::size_t>(n);
  }
  c.pipes[0].reset();
  std::string().swap(c.stdin_data);
}

bool command_table::on_exit(pid_t pid) {
  for (auto& cp : cmds_) {
    auto& c = *cp;
    if (c.finished || c.pid != pid) continue;
    // Not reaped yet, so the group id cannot have been reused: kill what the
    // command left behind (background jobs), then reap it.
    ::kill(-pid, SIGKILL);
    while (::waitpid(pid, &c.wstatus, 0) < 0 && errno == EINTR) {
    }
    c.finished = true;
    c.ended = steady::now();
    c.pipes[0].reset();
    for (int s = 1; s < 3; ++s) {
      // The writers are gone: read what is left, then close.
      for (int rounds = 0; rounds < 2 && c.pipes[s]; ++rounds) drain(c, s);
      c.pipes[s].reset();
    }
    return true;
  }
  return false;
}

void command_table::on_time(steady::time_point now) {
  for (auto& c : cmds_) {
    if (c->finished || c->timed_out || c->deadline > now) continue;
    c->timed_out = true;
    ::kill(-c->pid, SIGKILL);
  }
}

std::optional<steady::time_point> command_table::next_deadline() const {
  std::optional<steady::time_point> next;
  for (auto& c : cmds_) {
    if (c->finished || c->timed_out) continue;
    if (!next || c->deadline < *next) next = c->deadline;
  }
  return next;
}

void command_table::flush_results(std::string& out) {
  std::size_t kept = 0;
  for (std::size_t i = 0; i < cmds_.size(); ++i) {
    auto& c = *cmds_[i];
    if (!c.finished) {
      if (kept != i) cmds_[kept] = std::move(cmds_[i]);
      ++kept;
      continue;
    }
    // Cut a stream whose escaped form would not fit its share of the line.
    std::string_view streams[3];
    for (int s = 1; s < 3; ++s) {
      streams[s] = c.output[s];
      std::size_t keep = json::escaped_prefix(streams[s], command_max_output_json);
      if (keep < streams[s].size()) {
        streams[s] = streams[s].substr(0, keep);
        c.truncated = true;
      }
    }
    const std::size_t mark = out.size();
    json::writer w(out);
    w.begin_object().field("type", "result").field("id", c.id).field("ok", true)
      .key("result").begin_object().key("exit_code");
    if (WIFEXITED(c.wstatus)) w.value(WEXITSTATUS(c.wstatus)); else w.value(nullptr);
    w.key("signal");
    if (WIFSIGNALED(c.wstatus)) w.value(WTERMSIG(c.wstatus)); else w.value(nullptr);
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(c.ended - c.started).count();
    w.field("stdout", streams[1])
      .field("stderr", streams[2])
      .field("timed_out", c.timed_out)
      .field("truncated", c.truncated)
      .field("duration_ms", static_cast<int64_t>(ms))
      .end_object().end_object();
    out += '\n';
    fit_result_line(out, mark, c.id);
  }
  cmds_.resize(kept);
}

void command_table::kill_all() {
  for (auto& c : cmds_)
    if (!c->finished) ::kill(-c->pid, SIGKILL);
}

} // namespace agentvisor::guest
