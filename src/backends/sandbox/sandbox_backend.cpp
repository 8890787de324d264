#include "sandbox_backend.hpp"

#include "cgroup.hpp"
#include "sandbox.hpp"
#include "template.hpp"
#include "../spawn_faults.hpp"

#include "agentvisor/guest_protocol.hpp"
#include "agentvisor/log.hpp"

#include <caf/all.hpp>

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstring>
#include <algorithm>
#include <deque>
#include <filesystem>
#include <map>
#include <set>
#include <optional>

extern char** environ;

namespace agentvisor::sandbox {

namespace fs = std::filesystem;

// --- The host side ------------------------------------------------------------

struct prepared_host {
  backend_options opts;
  std::optional<cgroup_instance> inst;
  std::string cgroup_error; ///< why spawns must fail when inst is empty
  int lock_fd = -1;
  std::string rootfs;
  std::string guest;
  bool user_namespace = false;
  size_t stale_removed = 0;
  pid_t template_pid = -1;
  int control_fd = -1;
  /// The backend actor watches (and reaps) the template from then on.
  bool adopted = false;

  prepared_host() = default;
  prepared_host(const prepared_host&) = delete;
  prepared_host& operator=(const prepared_host&) = delete;
  ~prepared_host() {
    if (control_fd >= 0)
      ::close(control_fd); // the template exits on EOF
    if (!adopted && template_pid > 0)
      ::waitpid(template_pid, nullptr, 0);
    if (lock_fd >= 0)
      ::close(lock_fd);
  }
};

namespace {

struct template_proc {
  pid_t pid = -1;
  int control_fd = -1;
};

// socketpair + posix_spawn of `agentvisor-guest --template` with the other
// end as its fd 3. Does not wait for the template's ready line.
result<template_proc> launch_template(const std::string& guest) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0)
    return error::from_errno("socketpair for the template process", errno);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, sv[1], 3);
  const char* argv[] = {guest.c_str(), "--template", nullptr};
  pid_t pid = -1;
  int rc = ::posix_spawn(&pid, guest.c_str(), &fa, nullptr,
                         const_cast<char* const*>(argv), environ);
  posix_spawn_file_actions_destroy(&fa);
  ::close(sv[1]);
  if (rc != 0) {
    ::close(sv[0]);
    return error::from_errno("start the template process " + guest, rc);
  }
  return template_proc{pid, sv[0]};
}

// Start-up only: waits up to 10 s for the template's first line.
result<void> await_template_ready(const template_proc& t) {
  pollfd p{t.control_fd, POLLIN, 0};
  if (::poll(&p, 1, 10000) <= 0)
    return error{"the template process did not start within 10 s"};
  char buf[4096];
  auto n = ::recv(t.control_fd, buf, sizeof buf, 0);
  if (n <= 0)
    return error{"the template process exited before it was ready"};
  auto r = decode_spawn_reply({buf, static_cast<size_t>(n)});
  if (!r)
    return r.err();
  if (r->kind != reply_kind::ready)
    return error{"the template process failed to start: " + r->error};
  return {};
}

result<int> take_instance_lock(const std::string& state_dir, const std::string& instance) {
  auto path = state_dir + "/" + instance + ".lock";
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0)
    return error::from_errno("open the instance lock " + path, errno);
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    int err = errno;
    ::close(fd);
    if (err == EWOULDBLOCK)
      return error{"another supervisor runs instance '" + instance + "' (" + path
                   + " is locked)"};
    return error::from_errno("lock " + path, err);
  }
  return fd;
}

// keep_workspaces: the workspace is a detached tmpfs that vanishes with its
// last fd, so its files are copied to the state directory first.
void copy_tree(int src_dir, const std::string& dst) {
  ::mkdir(dst.c_str(), 0755);
  int dup = ::dup(src_dir);
  DIR* d = dup >= 0 ? ::fdopendir(dup) : nullptr;
  if (!d) {
    if (dup >= 0)
      ::close(dup);
    return;
  }
  while (auto* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name == "." || name == "..")
      continue;
    auto target = dst + "/" + name;
    if (e->d_type == DT_DIR) {
      int sub = ::openat(src_dir, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      if (sub >= 0) {
        copy_tree(sub, target);
        ::close(sub);
      }
    } else if (e->d_type == DT_REG) {
      int in = ::openat(src_dir, name.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
      int out = ::open(target.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
      char buf[65536];
      ssize_t n;
      while (in >= 0 && out >= 0 && (n = ::read(in, buf, sizeof buf)) > 0)
        if (::write(out, buf, static_cast<size_t>(n)) != n)
          break;
      if (in >= 0)
        ::close(in);
      if (out >= 0)
        ::close(out);
    }
  }
  ::closedir(d);
}

} // namespace

std::string default_guest_binary(const std::string& exe) {
  auto dir = fs::path{exe}.parent_path();
  for (auto candidate : {dir / "agentvisor-guest", dir.parent_path() / "guest" / "agentvisor-guest"})
    if (::access(candidate.c_str(), X_OK) == 0)
      return candidate.string();
  return (dir / "agentvisor-guest").string();
}

result<std::shared_ptr<prepared_host>> prepare_host(const backend_options& opts) {
  auto host = std::make_shared<prepared_host>();
  host->opts = opts;
  host->user_namespace = ::geteuid() != 0;
  std::error_code ec;
  fs::create_directories(fs::path{opts.state_dir} / "rootfs", ec);
  if (ec)
    return error{"cannot create state directory " + opts.state_dir + "/rootfs: " + ec.message()};
  host->rootfs = opts.state_dir + "/rootfs";
  auto lock = take_instance_lock(opts.state_dir, opts.instance);
  if (!lock)
    return lock.err();
  host->lock_fd = *lock;
  // Without cgroups the supervisor still starts; every spawn then fails
  // with this reason (which names what is missing).
  if (auto layout = detect_cgroups(); !layout) {
    host->cgroup_error = layout.err().message;
  } else if (auto inst = cgroup_instance::open(*layout, opts.instance); !inst) {
    host->cgroup_error = inst.err().message
                         + (host->user_namespace
                              ? " (cgroups need root: a delegated cgroup v2 subtree is not supported yet)"
                              : "");
  } else {
    // We hold the instance lock: whatever is left under it is a dead
    // earlier supervisor's, never a live one's.
    auto removed = inst->remove_stale();
    if (!removed)
      return removed.err();
    host->stale_removed = *removed;
    host->inst = std::move(*inst);
  }
  host->guest = opts.guest_binary;
  if (host->guest.empty()) {
    char exe[4096];
    auto n = ::readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0)
      host->guest = default_guest_binary(std::string{exe, static_cast<size_t>(n)});
  }
  if (::access(host->guest.c_str(), X_OK) != 0)
    return error::from_errno("guest binary " + host->guest, errno);
  auto t = launch_template(host->guest);
  if (!t)
    return t.err();
  host->template_pid = t->pid;
  host->control_fd = t->control_fd;
  if (auto ready = await_template_ready(*t); !ready) {
    ::kill(t->pid, SIGKILL);
    return ready.err();
  }
  return host;
}

int template_pid(const prepared_host& host) {
  return host.template_pid;
}

size_t stale_removed(const prepared_host& host) {
  return host.stale_removed;
}

std::string describe(const prepared_host& host) {
  std::string s = "sandbox backend: guest " + host.guest + ", template pid "
                  + std::to_string(host.template_pid) + ", "
                  + (host.user_namespace ? "unprivileged (user namespaces)" : "root");
  if (host.inst) {
    s += ", cgroup ";
    s += host.inst->layout().version == cgroup_version::v2 ? "v2 " : "v1 ";
    s += host.inst->dirs().front();
    if (host.stale_removed)
      s += ", removed " + std::to_string(host.stale_removed) + " stale agent cgroup(s)";
  } else {
    s += ", no cgroups: " + host.cgroup_error;
  }
  return s;
}

// --- The actor ------------------------------------------------------------------

namespace {

/// A spawn held back by a slow_spawn fault, then started.
using backends::delayed_spawn_atom;

using sandbox_actor = backend_actor::extend<
  caf::reacts_to<io::stream_line>, caf::reacts_to<io::stream_closed>,
  caf::reacts_to<io::process_exited>, caf::reacts_to<io::fd_ready>,
  caf::reacts_to<io::timer_fired>, caf::reacts_to<io::io_failed>,
  caf::reacts_to<delayed_spawn_atom, uint64_t>>;

struct agent_rec {
  std::string id;
  caf::actor owner;
  agent_cgroup cgroup;
  uint64_t limit_bytes = 0;
  int workspace_fd = -1;
  io::handle_id channel = 0;
  io::handle_id oom_watch = 0;
  io::handle_id proc_watch = 0;
  io::handle_id timer = 0; ///< stop's grace period, then cgroup removal retries
  int pid = 0;
  bool started = false; ///< the owner has its agent_started
  bool orphaned = false; ///< its owner ended: kill it as soon as it runs
  bool oom_seen = false;
  bool exited = false;
  int exit_code = 0;
  int signal = 0;
  uint64_t peak_bytes = 0;
  int removal_tries = 0;
};

struct pending_spawn {
  std::string id;
  caf::typed_response_promise<agent_started> rp;
};

/// Spawn requests sent to the template and not answered yet, at most. The
/// template sets sandboxes up one at a time anyway; a burst beyond this
/// (a thousand agents started at once) would fill the control socket, whose
/// send then fails with EAGAIN, and each request holds fds (channel,
/// workspace) while it waits. The rest wait in `queued`, unprepared.
constexpr size_t max_spawns_in_flight = 64;

using backends::queued_spawn;

struct backend_state {
  io::io_thread* io = nullptr;
  std::shared_ptr<prepared_host> host;
  std::map<std::string, agent_rec> agents;
  std::map<io::handle_id, std::string> handles; ///< watch/timer id -> agent
  std::map<uint64_t, pending_spawn> pending;    ///< template request -> spawn
  /// Spawns beyond max_spawns_in_flight, in arrival order.
  std::deque<queued_spawn> queued;
  uint64_t next_req = 0;
  int restarts = 0;
  std::chrono::steady_clock::time_point last_restart;
  std::string broken; ///< why spawns are refused; empty while healthy
  io::handle_id template_stream = 0;
  io::handle_id template_watch = 0;
  /// Owners this actor monitors: an owner that dies takes its agents with it.
  std::set<caf::actor_addr> monitored;
  /// Chaos: spawns still to fail or delay, and the spawns being delayed.
  armed_spawn_faults armed;
  backends::held_spawns delayed;
  static inline const char* name = "sandbox_backend";

  backend_state() = default;
  backend_state(const backend_state&) = delete;
  backend_state& operator=(const backend_state&) = delete;

  /// Runs when the actor terminates, on its own thread: no agent may
  /// outlive its backend.
  ~backend_state() {
    for (auto& [id, a] : agents) {
      (void) a.cgroup.kill_all();
      if (a.workspace_fd >= 0)
        ::close(a.workspace_fd);
      // The sandboxes' processes take a moment to leave their cgroups.
      for (int i = 0; i < 200 && !a.cgroup.remove(); ++i)
        ::usleep(5000);
    }
    if (!host)
      return;
    if (host->inst)
      host->inst->remove();
    if (host->control_fd >= 0) {
      ::close(host->control_fd); // the template exits on EOF
      host->control_fd = -1;
    }
    // The I/O thread's stream holds the socket too: without its close the
    // template would see no EOF until the I/O thread stops.
    if (io && template_stream)
      io->close(template_stream);
    reap_template(host->template_pid);
  }

  /// The I/O thread's watch reaps the template while it runs, but it may be
  /// stopped before the template has seen EOF: wait here (bounded), so no
  /// zombie is left in a process that goes on (tests, a restarted backend).
  static void reap_template(pid_t pid) {
    if (pid <= 0)
      return;
    int fd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
    if (fd < 0)
      return; // reaped already
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 2000) == 0) {
      ::syscall(SYS_pidfd_send_signal, fd, SIGKILL, nullptr, 0);
      ::poll(&p, 1, 1000);
    }
    ::close(fd);
    ::waitpid(pid, nullptr, WNOHANG); // ECHILD when the I/O thread was first
  }
};

using self_ptr = sandbox_actor::stateful_pointer<backend_state>;

caf::error backend_error(const std::string& text) {
  return caf::make_error(caf::sec::runtime_error, text);
}

// The agent a watch or timer belongs to, or nullptr for a late message about
// an agent that is already gone. `forget` drops the handle's entry (a
// process watch or a timer is dead once it reported).
agent_rec* agent_of(backend_state& st, io::handle_id id, bool forget) {
  auto h = st.handles.find(id);
  if (h == st.handles.end())
    return nullptr;
  auto it = st.agents.find(h->second);
  if (forget)
    st.handles.erase(h);
  return it == st.agents.end() ? nullptr : &it->second;
}

int pidfd_open(pid_t pid) {
  return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
}

caf::actor as_actor(self_ptr self) {
  return caf::actor_cast<caf::actor>(self);
}

// Lets the I/O thread tell us about the template process.
void adopt_template(self_ptr self) {
  auto& st = self->state;
  st.host->adopted = true;
  int reply_fd = ::dup(st.host->control_fd);
  st.template_stream = st.io->open_line_stream(as_actor(self), reply_fd, 64 * 1024);
  int pidfd = pidfd_open(st.host->template_pid);
  st.template_watch = st.io->watch_pidfd(as_actor(self), pidfd, st.host->template_pid);
}

// Releases everything an agent held; retries the cgroup removal on a timer
// while the last processes of the sandbox are still exiting. Tells the
// owner agent_exited once done (if the owner knew about the agent).
void finish(self_ptr self, agent_rec& a) {
  auto& st = self->state;
  if (a.oom_watch) {
    st.handles.erase(a.oom_watch);
    st.io->close(a.oom_watch);
    a.oom_watch = 0;
  }
  if (a.workspace_fd >= 0) {
    if (st.host->opts.keep_workspaces) {
      auto dir = st.host->opts.state_dir + "/workspaces";
      ::mkdir(dir.c_str(), 0755);
      dir += "/" + st.host->opts.instance;
      ::mkdir(dir.c_str(), 0755);
      copy_tree(a.workspace_fd, dir + "/" + a.id);
    }
    ::close(a.workspace_fd);
    a.workspace_fd = -1;
  }
  (void) a.cgroup.kill_all();
  if (auto r = a.cgroup.remove(); !r) {
    if (r.err().sys_errno == EBUSY && ++a.removal_tries < 200) {
      a.timer = st.io->start_timer(as_actor(self), std::chrono::milliseconds(10));
      st.handles[a.timer] = a.id;
      return;
    }
    log::agent(a.id).error("{}", r.err().message);
  }
  if (a.started)
    log::agent(a.id).info("exited: {} {}{}", a.signal ? "signal" : "code",
                          a.signal ? a.signal : a.exit_code, a.oom_seen ? " (OOM kill)" : "");
  if (a.started)
    caf::anon_send(a.owner, agent_exited{a.id, a.exit_code, a.signal, a.oom_seen, a.peak_bytes});
  auto id = a.id; // `a` lives in the map
  st.agents.erase(id);
}

void fail_spawn(self_ptr self, agent_rec& a, const std::string& why) {
  log::agent(a.id).warn("spawn failed: {}", why);
  a.exited = true;
  if (a.channel)
    self->state.io->close(a.channel);
  finish(self, a);
}

// Everything the supervisor side does for a spawn before the template clones:
// the cgroup, its OOM watch, the workspace, the channel.
caf::error begin_spawn(self_ptr self, const agent_spec& spec, const caf::actor& owner,
                       caf::typed_response_promise<agent_started> rp) {
  auto& st = self->state;
  auto& host = *st.host;
  if (!valid_name(spec.id))
    return backend_error("invalid agent id '" + spec.id
                         + "': use 1-64 of [A-Za-z0-9_.-]");
  if (st.agents.count(spec.id))
    return backend_error("agent " + spec.id + " already exists");
  if (!host.inst)
    return backend_error("agent " + spec.id + ": cannot create cgroups: " + host.cgroup_error);
  if (!st.broken.empty())
    return backend_error("agent " + spec.id + ": " + st.broken);
  auto cg = agent_cgroup::create(*host.inst, spec.id,
                                 {spec.memory_bytes, spec.pids, spec.cpu_weight});
  if (!cg)
    return backend_error("agent " + spec.id + ": " + cg.err().message);
  auto& a = st.agents[spec.id];
  a.id = spec.id;
  a.owner = owner;
  if (owner && st.monitored.insert(owner.address()).second)
    self->monitor(owner);
  a.cgroup = std::move(*cg);
  a.limit_bytes = spec.memory_bytes;
  auto cleanup = [&](const std::string& why) {
    std::string text = "agent " + spec.id + ": " + why;
    fail_spawn(self, a, text);
    return backend_error(text);
  };
  auto oom = a.cgroup.open_oom_fd();
  if (!oom)
    return cleanup(oom.err().message);
  a.oom_watch = st.io->watch_fd(as_actor(self), *oom,
                                a.cgroup.version() == cgroup_version::v1 ? io::fd_mode::eventfd
                                                                         : io::fd_mode::file_changed,
                                true);
  st.handles[a.oom_watch] = a.id;
  if (!host.user_namespace) {
    auto ws = make_workspace_mount(spec.workspace_bytes, host.opts.uid, host.opts.gid);
    if (!ws)
      return cleanup(ws.err().message);
    a.workspace_fd = *ws;
  }
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
    return cleanup(std::string{"socketpair for the channel: "} + std::strerror(errno));
  // The guest's lines go straight to the owner; one over the protocol's
  // limit closes the channel ("line over 1048576 bytes").
  a.channel = st.io->open_line_stream(owner, sv[0], guest::max_guest_line_bytes);

  spawn_request req;
  req.req = ++st.next_req;
  auto& s = req.spec;
  s.agent_id = spec.id;
  s.hostname = spec.id;
  s.rootfs_dir = host.rootfs;
  s.channel_fd = sv[1];
  s.workspace_fd = a.workspace_fd;
  s.workspace_bytes = spec.workspace_bytes;
  s.tmp_bytes = host.opts.tmp_bytes;
  s.uid = host.opts.uid;
  s.gid = host.opts.gid;
  s.user_namespace = host.user_namespace;
  s.env = spec.env;
  int cgroup_fd = -1;
  if (a.cgroup.version() == cgroup_version::v1) {
    for (const auto& d : a.cgroup.dirs())
      s.cgroup_procs.push_back(d + "/cgroup.procs");
    s.memory_file = a.cgroup.memory_dir() + "/memory.usage_in_bytes";
  } else {
    cgroup_fd = ::open(a.cgroup.memory_dir().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    s.cgroup_v2_fd = cgroup_fd;
    s.memory_file = a.cgroup.memory_dir() + "/memory.current";
  }
  req.guest.heartbeat_ms = spec.heartbeat_ms;
  req.guest.allow_faults = spec.allow_faults;
  auto sent = send_spawn_request(host.control_fd, req);
  ::close(sv[1]);
  if (cgroup_fd >= 0)
    ::close(cgroup_fd);
  if (!sent)
    return cleanup(sent.err().message);
  st.pending.emplace(req.req, pending_spawn{spec.id, std::move(rp)});
  return {};
}

/// A stop or kill for a spawn still queued: it never starts, and its
/// requester hears so at once. False when `id` is not queued.
bool drop_queued(self_ptr self, const std::string& id) {
  auto& q = self->state.queued;
  auto it = std::find_if(q.begin(), q.end(), [&](const queued_spawn& x) { return x.spec.id == id; });
  if (it == q.end())
    return false;
  auto rp = it->rp;
  q.erase(it);
  rp.deliver(backend_error("agent " + id + ": stopped before its spawn started"));
  return true;
}

/// Starts queued spawns while there is room in flight.
void start_queued(self_ptr self) {
  auto& st = self->state;
  while (!st.queued.empty() && st.pending.size() < max_spawns_in_flight) {
    auto q = std::move(st.queued.front());
    st.queued.pop_front();
    if (auto err = begin_spawn(self, q.spec, q.owner, q.rp))
      q.rp.deliver(std::move(err));
  }
}

void on_template_reply(self_ptr self, const std::string& line) {
  auto& st = self->state;
  auto r = decode_spawn_reply(line);
  if (!r) {
    spdlog::error("sandbox backend: {}", r.err().message);
    return;
  }
  if (r->kind == reply_kind::ready) {
    spdlog::info("sandbox backend: template process {} ready", st.host->template_pid);
    return;
  }
  auto it = st.pending.find(r->req);
  if (it == st.pending.end()) {
    spdlog::error("sandbox backend: template reply for unknown request {}: {}", r->req, line);
    return;
  }
  auto p = std::move(it->second);
  st.pending.erase(it);
  start_queued(self);
  auto ait = st.agents.find(p.id);
  if (ait == st.agents.end())
    return;
  auto& a = ait->second;
  if (r->pid > 0) {
    // Our child (CLONE_PARENT): the pid cannot be reused before we reap it.
    a.pid = r->pid;
    int pidfd = pidfd_open(r->pid);
    a.proc_watch = st.io->watch_pidfd(as_actor(self), pidfd, r->pid);
    st.handles[a.proc_watch] = a.id;
  }
  if (r->kind == reply_kind::spawned && a.orphaned) {
    log::agent(a.id).warn("its owner ended during the spawn; killing it");
    st.io->kill(a.proc_watch, SIGKILL);
    p.rp.deliver(backend_error("agent " + a.id + ": its owner ended during the spawn"));
    return;
  }
  if (r->kind == reply_kind::spawned) {
    a.started = true;
    log::agent(a.id).debug("sandbox set up: pid {}", a.pid);
    p.rp.deliver(agent_started{a.id, a.pid, a.channel, "sandbox"});
    return;
  }
  p.rp.deliver(backend_error(r->error));
  if (a.channel)
    st.io->close(a.channel);
  a.channel = 0;
  if (r->pid <= 0)
    fail_spawn(self, a, r->error);
  // else: finish() runs when the failed child's exit is reported.
}

sandbox_actor::behavior_type running(self_ptr self);

void on_template_lost(self_ptr self, const std::string& why) {
  auto& st = self->state;
  if (!st.template_watch && !st.template_stream)
    return;
  // A template that keeps dying (a broken binary) is not restarted forever.
  auto now = std::chrono::steady_clock::now();
  if (now - st.last_restart > std::chrono::seconds(10))
    st.restarts = 0;
  st.last_restart = now;
  if (++st.restarts > 5) {
    st.broken = "the template process died " + std::to_string(st.restarts)
                + " times within 10 s (last: " + why + ")";
    spdlog::error("sandbox backend: {}; no more spawns", st.broken);
    return;
  }
  spdlog::error("sandbox backend: the template process is gone ({}); restarting it", why);
  if (st.template_stream)
    st.io->close(st.template_stream);
  st.template_stream = st.template_watch = 0;
  for (auto& [req, p] : st.pending) {
    p.rp.deliver(backend_error("agent " + p.id + ": the template process died during the spawn"));
    if (auto it = st.agents.find(p.id); it != st.agents.end() && !it->second.pid)
      fail_spawn(self, it->second, "template died");
  }
  st.pending.clear();
  ::close(st.host->control_fd);
  st.host->control_fd = -1;
  auto t = launch_template(st.host->guest);
  if (!t) {
    spdlog::error("sandbox backend: {}", t.err().message);
    return;
  }
  st.host->template_pid = t->pid;
  st.host->control_fd = t->control_fd;
  // Requests sent from now on wait in the new socket until the template
  // reads them: no spawn is refused while it restarts.
  adopt_template(self);
  start_queued(self);
}

sandbox_actor::behavior_type running(self_ptr self) {
  return {
    [=](spawn_atom, agent_spec& spec, caf::actor& owner) -> caf::result<agent_started> {
      // Once a promise exists it owns the response: errors go through it
      // too (a returned error would reach nobody).
      auto rp = self->make_response_promise<agent_started>();
      auto& st = self->state;
      if (backends::meet_spawn_fault(self, st.armed, st.delayed, spec, owner, rp))
        return rp;
      if (st.pending.size() >= max_spawns_in_flight) {
        st.queued.push_back(queued_spawn{std::move(spec), std::move(owner), rp});
        return rp;
      }
      if (auto err = begin_spawn(self, spec, owner, rp))
        rp.deliver(std::move(err));
      return rp;
    },
    [=](delayed_spawn_atom, uint64_t ticket) {
      auto& st = self->state;
      auto q = st.delayed.release(ticket);
      if (!q)
        return;
      if (st.pending.size() >= max_spawns_in_flight) {
        st.queued.push_back(std::move(*q));
        return;
      }
      if (auto err = begin_spawn(self, q->spec, q->owner, q->rp))
        q->rp.deliver(std::move(err));
    },
    [=](signal_atom, std::string& id, int32_t sig) {
      auto& st = self->state;
      if (auto it = st.agents.find(id); it != st.agents.end() && it->second.proc_watch) {
        log::agent(id).warn("chaos: signal {} ({})", sig, strsignal(sig));
        st.io->kill(it->second.proc_watch, sig);
      }
    },
    [=](spawn_fault_atom, spawn_fault& f) -> caf::result<uint32_t> {
      auto& st = self->state;
      if (!st.host->opts.allow_faults)
        return backend_error("spawn faults are off: set agents.allow_faults");
      return st.armed.arm(f);
    },
    [=](stop_atom, std::string& id, uint32_t grace_ms) {
      auto& st = self->state;
      if (drop_queued(self, id))
        return;
      auto it = st.agents.find(id);
      if (it == st.agents.end() || !it->second.proc_watch)
        return;
      st.io->kill(it->second.proc_watch, SIGTERM);
      auto t = st.io->start_timer(as_actor(self), std::chrono::milliseconds(grace_ms));
      st.handles[t] = id;
      it->second.timer = t;
    },
    [=](kill_atom, std::string& id) {
      auto& st = self->state;
      if (drop_queued(self, id))
        return;
      if (auto it = st.agents.find(id); it != st.agents.end() && it->second.proc_watch)
        st.io->kill(it->second.proc_watch, SIGKILL);
    },
    [=](usage_atom, std::string& id) -> caf::result<agent_usage> {
      auto& st = self->state;
      auto it = st.agents.find(id);
      if (it == st.agents.end())
        return backend_error("no agent " + id);
      auto u = it->second.cgroup.usage();
      if (!u)
        return backend_error("agent " + id + ": " + u.err().message);
      return agent_usage{id, u->memory_bytes, u->memory_peak_bytes, u->pids,
                         u->cpu_usage_ns, u->oom_kills, 0, 0};
    },
    [=](io::stream_line& m) {
      if (m.id == self->state.template_stream)
        on_template_reply(self, m.line);
    },
    [=](io::stream_closed& m) {
      if (m.id == self->state.template_stream) {
        self->state.template_stream = 0;
        on_template_lost(self, "its socket closed" + (m.reason.empty() ? "" : ": " + m.reason));
      }
    },
    [=](io::process_exited& m) {
      auto& st = self->state;
      if (m.id == st.template_watch) {
        st.template_watch = 0;
        on_template_lost(self, "exit " + std::to_string(m.exit_status) + ", signal "
                                 + std::to_string(m.term_signal));
        return;
      }
      auto* ap = agent_of(st, m.id, true);
      if (!ap)
        return;
      auto& a = *ap;
      a.proc_watch = 0;
      a.exited = true;
      a.exit_code = static_cast<int>(m.exit_status);
      a.signal = m.term_signal;
      if (a.timer) {
        st.handles.erase(a.timer);
        st.io->close(a.timer);
        a.timer = 0;
      }
      if (auto u = a.cgroup.usage()) {
        a.peak_bytes = u->memory_peak_bytes;
        // The OOM killer's SIGKILL: the eventfd fires first, and by the time
        // the victim has exited the counter agrees.
        if (a.signal == SIGKILL && u->oom_kills > 0)
          a.oom_seen = true;
      }
      if (a.signal != SIGKILL)
        a.oom_seen = false;
      finish(self, a);
    },
    [=](io::fd_ready& m) {
      auto& st = self->state;
      auto* ap = agent_of(st, m.id, false);
      if (!ap || ap->oom_watch != m.id)
        return;
      auto& a = *ap;
      a.oom_seen = true;
      auto u = a.cgroup.usage();
      a.peak_bytes = u ? u->memory_peak_bytes : a.limit_bytes;
      log::agent(a.id).warn("OOM kill in its cgroup (limit {} bytes, peak {})",
                            a.limit_bytes, a.peak_bytes);
      if (a.started)
        caf::anon_send(a.owner, agent_oom{a.id, a.limit_bytes, a.peak_bytes});
    },
    [=](io::timer_fired& m) {
      auto& st = self->state;
      auto* ap = agent_of(st, m.id, true);
      if (!ap)
        return;
      auto& a = *ap;
      a.timer = 0;
      if (!a.exited) {
        if (a.proc_watch) // the grace period of a stop ran out
          st.io->kill(a.proc_watch, SIGKILL);
        return;
      }
      finish(self, a); // retry the cgroup removal
    },
    [=](io::io_failed& m) {
      spdlog::warn("sandbox backend: I/O command {} failed: {}", m.id, m.what);
    },
  };
}

sandbox_actor::behavior_type backend_impl(self_ptr self, io::io_thread* io,
                                          std::shared_ptr<prepared_host> host) {
  self->state.io = io;
  self->state.host = std::move(host);
  // No machine may outlive the actor that owns it: an owner that ends
  // without stopping its agents (a bug, a crash) gets them killed here, and
  // their exit is still cleaned up as usual.
  self->set_down_handler([self](caf::down_msg& dm) {
    auto& st = self->state;
    st.monitored.erase(dm.source);
    for (auto& [id, a] : st.agents) {
      if (a.owner.address() != dm.source || a.exited)
        continue;
      a.orphaned = true;
      if (a.proc_watch) {
        log::agent(id).warn("its owner ended ({}); killing it", caf::to_string(dm.reason));
        st.io->kill(a.proc_watch, SIGKILL);
      }
    }
  });
  adopt_template(self);
  return running(self);
}

} // namespace

backend_actor spawn_sandbox_backend(caf::actor_system& sys, io::io_thread& io,
                                    std::shared_ptr<prepared_host> host) {
  return sys.spawn(backend_impl, &io, std::move(host));
}

} // namespace agentvisor::sandbox
