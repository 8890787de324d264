#include "agent.hpp"

#include "commands.hpp"
#include "faults.hpp"
#include "tools.hpp"
#include "workspace.hpp"

#include "agentvisor/guest_protocol.hpp"
#include "agentvisor/json.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <linux/close_range.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <simdjson.h>

#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>

#ifndef AGENTVISOR_VERSION
#define AGENTVISOR_VERSION "0.0.0"
#endif

namespace agentvisor::guest {

namespace {

constexpr std::size_t read_chunk = 64 * 1024;

/// Reads a decimal number at the start of the file `path`.
bool read_number_file(const char* path, uint64_t& out) {
  int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  char buf[64];
  ssize_t n = ::read(fd, buf, sizeof buf);
  ::close(fd);
  if (n <= 0) return false;
  auto r = std::from_chars(buf, buf + n, out);
  return r.ec == std::errc{};
}

/// Sum of the resident sets of the processes in /proc (pages from statm).
uint64_t proc_rss_bytes() {
  DIR* d = ::opendir("/proc");
  if (d == nullptr) return 0;
  static const auto page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  uint64_t total = 0;
  int dfd = ::dirfd(d);
  char path[64];
  char buf[256];
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] < '1' || e->d_name[0] > '9') continue;
    std::size_t len = std::strlen(e->d_name);
    if (len + sizeof "/statm" > sizeof path) continue;
    std::memcpy(path, e->d_name, len);
    std::memcpy(path + len, "/statm", sizeof "/statm");
    int fd = ::openat(dfd, path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) continue;
    ssize_t n = ::read(fd, buf, sizeof buf);
    ::close(fd);
    if (n <= 0) continue;
    // "size resident shared ..." in pages.
    const char* p = static_cast<const char*>(std::memchr(buf, ' ', static_cast<std::size_t>(n)));
    if (p == nullptr) continue;
    uint64_t resident = 0;
    std::from_chars(p + 1, buf + n, resident);
    total += resident * page;
  }
  ::closedir(d);
  return total;
}

/// Makes sure fds 0, 1 and 2 are open, so that no pipe we create lands on
/// them (a sandbox's PID 1 may start with them closed).
void occupy_std_fds() {
  for (int fd = 0; fd < 3; ++fd) {
    if (::fcntl(fd, F_GETFD) >= 0) continue;
    int n = ::open("/dev/null", O_RDWR);
    if (n < 0) {
      int p[2];
      if (::pipe(p) != 0) return;
      n = p[0];
      if (p[1] != fd) ::close(p[1]);
      else n = p[1];
    }
    if (n != fd) {
      ::dup2(n, fd);
      ::close(n);
    }
  }
}

class agent {
public:
  explicit agent(const agent_options& opts) : opts_(opts), started_(steady::now()) {}

  int run();

private:
  bool setup();
  void on_channel();
  void process(std::string_view data);
  void handle_line(std::string_view line);
  void handle_call(call& c);
  void handle_fault(const fault& f);
  void on_signals();
  void reap();
  void on_heartbeat();
  void send_protocol_error(std::string_view message);
  void flush();
  void flush_blocking(int timeout_ms);
  int finish(bool say_bye);

  agent_options opts_;
  steady::time_point started_;
  std::optional<workspace> ws_;
  unique_fd sig_fd_;
  unique_fd timer_fd_;
  int chan_ = -1;

  decoder decoder_;
  simdjson::dom::parser args_parser_;
  tool_buffers bufs_;
  command_table commands_;
  fault_jobs jobs_;

  std::string in_;          ///< an incomplete line carried between reads
  bool discarding_ = false; ///< skipping the rest of an over-long line
  std::string out_;         ///< lines not yet written to the channel
  std::size_t out_pos_ = 0; ///< how much of out_ is written
  char chunk_[read_chunk];

  uint64_t seq_ = 0;
  bool host_gone_ = false;
  bool shutting_down_ = false;
  std::vector<pollfd> fds_;
  std::vector<std::pair<std::size_t, int>> owners_;
};

bool agent::setup() {
  occupy_std_fds();
  chan_ = opts_.channel_fd;
  if (::fcntl(chan_, F_GETFD) < 0) {
    std::fprintf(stderr, "agentvisor-guest: channel fd %d is not open\n", chan_);
    return false;
  }
  // Commands inherit nothing but 0, 1 and 2: not the channel (it would hide
  // the host's EOF), nor whatever the sandbox builder left open.
  if (::close_range(3, ~0U, CLOSE_RANGE_CLOEXEC) != 0) ::fcntl(chan_, F_SETFD, FD_CLOEXEC);
  int fl = ::fcntl(chan_, F_GETFL);
  ::fcntl(chan_, F_SETFL, fl | O_NONBLOCK);

  // Write errors come back as EPIPE; children get SIG_DFL back at spawn.
  ::signal(SIGPIPE, SIG_IGN);
  // Orphans are ours to reap even when we are not PID 1 (tests, debugging).
  ::prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);

  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGCHLD);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  ::sigprocmask(SIG_BLOCK, &set, nullptr);
  sig_fd_.reset(::signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC));
  timer_fd_.reset(::timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC));
  if (!sig_fd_ || !timer_fd_) {
    std::perror("agentvisor-guest: signalfd/timerfd");
    return false;
  }
  itimerspec its{};
  its.it_value.tv_sec = opts_.heartbeat_ms / 1000;
  its.it_value.tv_nsec = static_cast<long>(opts_.heartbeat_ms % 1000) * 1'000'000;
  its.it_interval = its.it_value;
  ::timerfd_settime(timer_fd_.get(), 0, &its, nullptr);
  return true;
}

int agent::run() {
  if (!setup()) return 2;

  encode(hello{protocol_version, static_cast<int64_t>(::getpid()),
               "agentvisor-guest " AGENTVISOR_VERSION},
         out_);
  flush();

  auto ws = workspace::open(opts_.workspace);
  result<void> ok = ws ? ws->check_ready() : result<void>(ws.err());
  if (!ok) {
    std::fprintf(stderr, "agentvisor-guest: %s\n", ok.err().message.c_str());
    flush_blocking(1000);
    return 2;
  }
  ws_.emplace(std::move(*ws));
  encode(ready{}, out_);
  flush();

  while (true) {
    fds_.clear();
    owners_.clear();
    short chan_events = POLLIN;
    if (out_pos_ < out_.size()) chan_events |= POLLOUT;
    fds_.push_back(pollfd{chan_, chan_events, 0});
    fds_.push_back(pollfd{sig_fd_.get(), POLLIN, 0});
    fds_.push_back(pollfd{timer_fd_.get(), POLLIN, 0});
    commands_.add_pollfds(fds_, owners_);

    int timeout = -1;
    if (auto d = commands_.next_deadline()) {
      auto left = std::chrono::ceil<std::chrono::milliseconds>(*d - steady::now()).count();
      timeout = left < 0 ? 0 : static_cast<int>(std::min<int64_t>(left, 1 << 30));
    }
    int n = ::poll(fds_.data(), fds_.size(), timeout);
    if (n < 0 && errno != EINTR) {
      std::perror("agentvisor-guest: poll");
      return finish(false);
    }
    if (n > 0) {
      if (fds_[0].revents & POLLOUT) flush();
      if (fds_[0].revents & (POLLIN | POLLHUP | POLLERR)) on_channel();
      if (fds_[1].revents & POLLIN) on_signals();
      if (fds_[2].revents & POLLIN) on_heartbeat();
      for (std::size_t i = 3; i < fds_.size(); ++i)
        if (fds_[i].revents != 0)
          commands_.on_ready(owners_[i - 3].first, owners_[i - 3].second, fds_[i].revents);
    }
    commands_.on_time(steady::now());
    commands_.flush_results(out_);
    jobs_.flush_results(out_);
    flush();
    if (shutting_down_) return finish(true);
    if (host_gone_) return finish(false);
  }
}

int agent::finish(bool say_bye) {
  commands_.kill_all();
  jobs_.kill_all();
  if (say_bye && !host_gone_) {
    encode(bye{}, out_);
    flush_blocking(2000);
  }
  return 0;
}

void agent::on_channel() {
  for (int rounds = 0; rounds < 16; ++rounds) {
    ssize_t n = ::read(chan_, chunk_, sizeof chunk_);
    if (n > 0) {
      process(std::string_view(chunk_, static_cast<std::size_t>(n)));
      if (shutting_down_) return;
      if (static_cast<std::size_t>(n) < sizeof chunk_) return;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) return;
    host_gone_ = true; // EOF, or the channel broke
    return;
  }
}

void agent::process(std::string_view data) {
  while (!data.empty() && !shutting_down_) {
    auto nl = data.find('\n');
    if (discarding_) {
      if (nl == std::string_view::npos) return;
      discarding_ = false;
      data.remove_prefix(nl + 1);
      continue;
    }
    if (nl == std::string_view::npos) {
      if (in_.size() + data.size() > max_line_bytes) {
        send_protocol_error("line is longer than " + std::to_string(max_line_bytes) +
                            " bytes; skipped");
        in_.clear();
        discarding_ = true;
        return;
      }
      in_.append(data);
      return;
    }
    if (in_.empty()) {
      handle_line(data.substr(0, nl));
    } else {
      in_.append(data.substr(0, nl));
      handle_line(in_);
      in_.clear();
    }
    data.remove_prefix(nl + 1);
  }
}

void agent::send_protocol_error(std::string_view message) {
  encode(protocol_error{std::string(message)}, out_);
}

void agent::handle_line(std::string_view line) {
  auto msg = decoder_.decode_host(line);
  if (!msg) {
    send_protocol_error(msg.err().message);
    return;
  }
  if (auto* c = std::get_if<call>(&*msg)) {
    handle_call(*c);
  } else if (auto* f = std::get_if<fault>(&*msg)) {
    handle_fault(*f);
  } else {
    shutting_down_ = true;
  }
}

void agent::handle_call(call& c) {
  using tool_fn = status (*)(const workspace&, const tool_args&, std::string&, tool_buffers&);
  const bool exec = c.tool == "execute_command";
  tool_fn fn = nullptr;
  if (c.tool == "read_file") fn = &read_file;
  else if (c.tool == "write_file") fn = &write_file;
  else if (c.tool == "search") fn = &search;
  else if (c.tool == "list_directory") fn = &list_directory;
  else if (!exec) {
    encode_result_error(c.id, tool_errc::unknown_tool, "unknown tool \"" + c.tool + "\"", out_);
    return;
  }

  // args_json is minified simdjson output: give it the padding the parser
  // wants so it parses in place.
  c.args_json.reserve(c.args_json.size() + simdjson::SIMDJSON_PADDING);
  simdjson::dom::object obj;
  if (args_parser_.parse(c.args_json).get_object().get(obj)) {
    encode_result_error(c.id, tool_errc::invalid_args, "args: expected an object", out_);
    return;
  }
  tool_args args(obj);

  const std::size_t mark = out_.size();
  status st;
  try {
    if (exec) {
      st = commands_.start(c.id, *ws_, args);
    } else {
      json::writer w(out_);
      w.begin_object().field("type", "result").field("id", c.id).field("ok", true).key("result");
      st = fn(*ws_, args, out_, bufs_);
      if (!st) out_ += "}\n";
    }
  } catch (const std::exception& e) {
    st = tool_error{tool_errc::io_error, std::string("internal error: ") + e.what()};
  }
  if (st) {
    out_.resize(mark);
    encode_result_error(c.id, st->code, st->message, out_);
  }
  // The tools cap their results to fit; this is the last guard.
  fit_result_line(out_, mark, c.id);
  // A big file read leaves a big buffer behind; do not keep it.
  if (bufs_.data.capacity() > (std::size_t{1} << 20)) std::string().swap(bufs_.data);
}

void agent::handle_fault(const fault& f) {
  if (!opts_.allow_faults) {
    constexpr std::string_view msg =
      "faults are disabled (start agentvisor-guest with --allow-faults)";
    if (f.id)
      encode_result_error(*f.id, tool_errc::faults_disabled, msg, out_);
    else
      send_protocol_error(msg);
    return;
  }
  switch (f.kind) {
    case fault_kind::exit:
      flush();
      fault_exit(f.code);
    case fault_kind::abort:
      flush();
      fault_abort();
    case fault_kind::oom:
      flush();
      fault_oom();
      return;
    case fault_kind::garbage: {
      std::size_t bytes = fault_garbage(f.what, out_);
      if (f.id) {
        std::string report;
        json::writer(report).begin_object().field("kind", "garbage")
          .field("what", to_string(f.what)).field("bytes", static_cast<uint64_t>(bytes)).end_object();
        encode_result_ok(*f.id, report, out_);
      }
      return;
    }
    default:
      break;
  }
  if (auto st = jobs_.start(f, *ws_)) {
    if (f.id)
      encode_result_error(*f.id, st->code, st->message, out_);
    else
      send_protocol_error("fault " + std::string(to_string(f.kind)) + ": " + st->message);
  }
}

void agent::on_signals() {
  signalfd_siginfo si;
  bool child = false;
  while (::read(sig_fd_.get(), &si, sizeof si) == static_cast<ssize_t>(sizeof si)) {
    if (si.ssi_signo == SIGCHLD)
      child = true;
    else
      shutting_down_ = true; // SIGTERM, SIGINT: as a shutdown message
  }
  if (child) reap();
}

void agent::reap() {
  // Look before reaping (WNOWAIT): a command's process group is killed while
  // its leader is still a zombie, so its id cannot have been reused.
  while (true) {
    siginfo_t si{};
    if (::waitid(P_ALL, 0, &si, WEXITED | WNOHANG | WNOWAIT) != 0) return;
    if (si.si_pid == 0) return;
    pid_t pid = si.si_pid;
    if (commands_.on_exit(pid) || jobs_.on_exit(pid)) continue;
    ::waitpid(pid, nullptr, 0); // an orphan: discard its status
  }
}

void agent::on_heartbeat() {
  uint64_t expirations = 0;
  if (::read(timer_fd_.get(), &expirations, sizeof expirations) < 0) return;
  // A host that reads nothing gets no more heartbeats piled up for it.
  if (out_.size() - out_pos_ > (std::size_t{1} << 20)) return;
  heartbeat hb;
  hb.seq = ++seq_;
  if (opts_.memory_file.empty() || !read_number_file(opts_.memory_file.c_str(), hb.memory_bytes))
    hb.memory_bytes = proc_rss_bytes();
  hb.uptime_ms = static_cast<uint64_t>(
    std::chrono::duration_cast<std::chrono::milliseconds>(steady::now() - started_).count());
  encode(hb, out_);
}

void agent::flush() {
  while (out_pos_ < out_.size()) {
    ssize_t n = ::write(chan_, out_.data() + out_pos_, out_.size() - out_pos_);
    if (n > 0) {
      out_pos_ += static_cast<std::size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) break;
    host_gone_ = true; // EPIPE and the like
    out_.clear();
    out_pos_ = 0;
    return;
  }
  if (out_pos_ == out_.size()) {
    out_.clear();
    out_pos_ = 0;
    if (out_.capacity() > (std::size_t{4} << 20)) std::string().swap(out_);
  } else if (out_pos_ > (std::size_t{1} << 20)) {
    out_.erase(0, out_pos_);
    out_pos_ = 0;
  }
}

void agent::flush_blocking(int timeout_ms) {
  auto deadline = steady::now() + std::chrono::milliseconds(timeout_ms);
  while (out_pos_ < out_.size() && !host_gone_) {
    flush();
    if (out_pos_ >= out_.size() || host_gone_) return;
    auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - steady::now()).count();
    if (left <= 0) return;
    pollfd p{chan_, POLLOUT, 0};
    ::poll(&p, 1, static_cast<int>(left));
  }
}

} // namespace

int run_agent(const agent_options& opts) {
  auto a = std::make_unique<agent>(opts);
  return a->run();
}

} // namespace agentvisor::guest
