#include "vm_backend.hpp"

#include "api.hpp"
#include "../spawn_faults.hpp"

#include "agentvisor/guest_protocol.hpp"
#include "agentvisor/log.hpp"
#include "agentvisor/vm_control.hpp"

#include <caf/all.hpp>
#include <simdjson.h>

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <deque>
#include <filesystem>
#include <map>
#include <optional>
#include <set>

namespace agentvisor::microvm {

namespace api = firecracker::api;

namespace fs = std::filesystem;

std::string find_program(const std::string& name) {
  if (name.empty())
    return {};
  if (name.find('/') != std::string::npos)
    return ::access(name.c_str(), X_OK) == 0 ? fs::absolute(name).string() : std::string{};
  const char* path = std::getenv("PATH");
  std::string_view rest = path ? path : "/usr/local/bin:/usr/bin:/bin";
  while (!rest.empty()) {
    auto colon = rest.find(':');
    auto dir = rest.substr(0, colon);
    rest.remove_prefix(colon == std::string_view::npos ? rest.size() : colon + 1);
    auto candidate = (dir.empty() ? std::string{"."} : std::string{dir}) + "/" + name;
    if (::access(candidate.c_str(), X_OK) == 0)
      return candidate;
  }
  return {};
}

vm::boot_params boot_params_for(const agent_spec& spec, std::string transport) {
  vm::boot_params p;
  p.transport = std::move(transport);
  p.heartbeat_ms = spec.heartbeat_ms;
  p.allow_faults = spec.allow_faults;
  p.pids = spec.pids;
  p.memory_bytes = spec.memory_bytes;
  p.workspace_device = "/dev/vda";
  p.workspace_bytes = spec.workspace_bytes;
  p.agent_id = spec.id;
  return p;
}

namespace {

/// mke2fs lives in /usr/sbin, which a non-root PATH may lack.
std::string mke2fs_path() {
  for (const char* p : {"/usr/sbin/mke2fs", "/sbin/mke2fs"})
    if (::access(p, X_OK) == 0)
      return p;
  return "mke2fs";
}

} // namespace

// --- The actor ------------------------------------------------------------------

namespace {

/// A spawn held back by a slow_spawn fault, then started.
using backends::delayed_spawn_atom;

using fc_actor = backend_actor::extend<
  caf::reacts_to<io::stream_line>, caf::reacts_to<io::stream_closed>,
  caf::reacts_to<io::process_started>, caf::reacts_to<io::process_exited>,
  caf::reacts_to<io::fd_ready>, caf::reacts_to<io::timer_fired>,
  caf::reacts_to<io::io_failed>, caf::reacts_to<delayed_spawn_atom, uint64_t>>;

/// Where a VM is on its way up. Phases only move forward.
enum class phase : uint8_t {
  mkfs,        ///< mke2fs makes the workspace image
  configuring, ///< firecracker runs; API calls until InstanceStart
  booting,     ///< waiting for the guest's `booted` and both connections
  running,     ///< the owner has its agent_started
};

/// How a VM comes up (vmm_config::snapshots).
enum class boot_kind : uint8_t {
  cold,        ///< boots the agent's kernel command line
  restore,     ///< restores its shape's snapshot; `start` says who it is
  template_vm, ///< boots parked, is snapshotted, then killed: no agent
};

/// The interval between attempts to connect to a fresh firecracker's API
/// socket (it creates the socket a few ms after exec).
constexpr std::chrono::milliseconds api_retry{10};

/// After the guest reported its agent's exit, the VM reboots (reboot=k ends
/// firecracker); a VMM still there after this is killed.
constexpr std::chrono::milliseconds poweroff_timeout{3000};

/// After the VMM's exit, how long its control stream may take to report its
/// last lines and EOF (the socket's peer is gone: it is already there).
constexpr std::chrono::milliseconds drain_timeout{1000};

/// A shape's snapshot: files in templates_dir/<shape>, and what its parked
/// template booted with (a qemu restore must be started the same way).
struct snapshot_template {
  bool ready = false;
  std::string dir;
  vm::boot_params params;
};

struct vm_rec {
  std::string id;
  caf::actor owner;
  agent_spec spec;
  boot_kind boot = boot_kind::cold;
  /// Its snapshot template's key and a copy of it (restore, template_vm):
  /// the shape's entry may be dropped while this VM still starts.
  std::string shape;
  snapshot_template snap;
  /// template_vm: the snapshot is complete (its VMM is killed next).
  bool snapshot_taken = false;
  /// template_vm (firecracker): the API calls in flight take the snapshot.
  bool snapshotting = false;
  api::vm_paths paths;
  phase ph = phase::mkfs;
  std::optional<caf::typed_response_promise<agent_started>> rp; ///< until answered
  bool started = false;  ///< the owner has its agent_started
  bool orphaned = false; ///< its owner ended
  std::string abort;     ///< why the spawn is being torn down (kills wait for exits)

  io::handle_id mkfs_proc = 0;
  io::handle_id vmm_proc = 0;
  int pid = 0;
  io::handle_id boot_timer = 0;
  io::handle_id stop_timer = 0;     ///< stop's grace, or the poweroff timeout
  io::handle_id retry_timer = 0;    ///< API connect retry
  io::handle_id drain_timer = 0;    ///< after the VMM's exit, bounds the control drain

  /// The vsock listeners (the loop owns their fds) and what they accepted.
  io::handle_id listen_channel = 0, listen_control = 0;
  int listen_channel_fd = -1, listen_control_fd = -1;
  io::handle_id channel = 0, control = 0;
  io::handle_id qmp = 0; ///< qemu only

  /// API calls still to make, and the one in flight.
  std::deque<api::request> calls;
  io::handle_id api_watch = 0;
  int api_fd = -1; ///< owned by the loop once api_watch exists
  std::optional<api::response_parser> parser;

  bool booted = false;
  /// The VMM is gone; finish() waits for the control channel's last lines.
  bool vmm_exited = false;
  int vmm_code = 0, vmm_signal = 0;
  std::optional<vm::exited> guest_exit;
  vm::usage last_usage;
  /// qemu: the balloon device's latest statistics (QMP), 0 until one came.
  uint64_t balloon_total = 0, balloon_available = 0;
  bool balloon_asked = false; ///< a qom-get is in flight
};

using backends::queued_spawn;

struct backend_state {
  io::io_thread* io = nullptr;
  vmm_config opts;
  std::string binary; ///< resolved
  std::string jailer; ///< resolved; empty: no jailer
  std::map<std::string, vm_rec> vms;
  std::map<io::handle_id, std::string> handles; ///< handle -> agent
  std::set<caf::actor_addr> monitored;
  armed_spawn_faults armed;
  backends::held_spawns delayed;
  /// Snapshot templates by shape, and the shapes whose template failed
  /// (their agents boot cold from then on, rather than retry each spawn).
  std::string templates_dir; ///< state_dir/templates/<instance>
  std::map<std::string, snapshot_template> templates;
  std::set<std::string> broken_shapes;
  static inline const char* name = "microvm_backend";

  backend_state() = default;
  backend_state(const backend_state&) = delete;
  backend_state& operator=(const backend_state&) = delete;

  /// No VM may outlive its backend: kill the VMMs (through the I/O thread,
  /// which knows whether each pid is still ours) and remove their files.
  ~backend_state() {
    for (auto& [id, v] : vms) {
      if (io && v.mkfs_proc)
        io->kill(v.mkfs_proc, SIGKILL);
      if (io && v.vmm_proc)
        io->kill(v.vmm_proc, SIGKILL);
      for (auto h : {v.listen_channel, v.listen_control, v.control, v.qmp, v.api_watch,
                     v.boot_timer, v.stop_timer, v.retry_timer, v.drain_timer})
        if (io && h)
          io->close(h);
      if (v.listen_channel_fd >= 0 && !v.listen_channel)
        ::close(v.listen_channel_fd);
      if (v.listen_control_fd >= 0 && !v.listen_control)
        ::close(v.listen_control_fd);
      if (v.api_fd >= 0 && !v.api_watch)
        ::close(v.api_fd);
      std::error_code ec;
      fs::remove_all(v.paths.dir, ec);
    }
    std::error_code ec;
    if (!templates_dir.empty())
      fs::remove_all(templates_dir, ec);
  }
};

using self_ptr = fc_actor::stateful_pointer<backend_state>;

caf::error backend_error(const std::string& text) {
  return caf::make_error(caf::sec::runtime_error, text);
}

caf::actor as_actor(self_ptr self) {
  return caf::actor_cast<caf::actor>(self);
}

bool valid_name(const std::string& s) {
  if (s.empty() || s.size() > 64 || s == "." || s == "..")
    return false;
  for (char c : s)
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
          || c == '_' || c == '.' || c == '-'))
      return false;
  return true;
}

vm_rec* vm_of(backend_state& st, io::handle_id id, bool forget) {
  auto h = st.handles.find(id);
  if (h == st.handles.end())
    return nullptr;
  auto it = st.vms.find(h->second);
  if (forget)
    st.handles.erase(h);
  return it == st.vms.end() ? nullptr : &it->second;
}

void drop_handle(self_ptr self, io::handle_id& h) {
  if (!h)
    return;
  self->state.handles.erase(h);
  self->state.io->close(h);
  h = 0;
}

std::string transport_of(const backend_state& st) {
  return st.opts.kind == vmm_kind::qemu ? "virtio-serial" : "vsock";
}

/// VMs of one shape can share a snapshot: the VM's memory and its disk's
/// size are fixed in it (vCPUs are the backend's).
std::string shape_of(const agent_spec& s) {
  return std::to_string(vm_memory_mib(s.memory_bytes)) + "m-" + std::to_string(s.workspace_bytes);
}

/// What the VM's guest boots with: the agent's parameters, or for a
/// template (and a restore, which must match it) the parked template's.
vm::boot_params boot_params_of(const backend_state& st, const vm_rec& v) {
  if (v.boot == boot_kind::restore)
    return v.snap.params;
  auto p = boot_params_for(v.spec, transport_of(st));
  p.park = v.boot == boot_kind::template_vm;
  return p;
}

std::string qemu_state_file(const snapshot_template& t) {
  return t.dir + "/vmstate";
}
std::string fc_snapshot_file(const snapshot_template& t) {
  return t.dir + "/snapshot";
}
std::string fc_memory_file(const snapshot_template& t) {
  return t.dir + "/memory";
}

/// A shape's snapshot failed to make or to restore: its agents boot cold.
void drop_template(self_ptr self, const std::string& shape, const std::string& why) {
  auto& st = self->state;
  auto t = st.templates.find(shape);
  if (t == st.templates.end())
    return;
  std::error_code ec;
  fs::remove_all(t->second.dir, ec); // a restore reading it keeps its open file
  st.templates.erase(t);
  st.broken_shapes.insert(shape);
  spdlog::warn("{} backend: snapshot of shape {} dropped ({}); its agents boot cold",
               st.opts.name, shape, why);
}

/// The last lines of the serial console, for a boot failure's log record.
std::string console_tail(const vm_rec& v) {
  int fd = ::open(v.paths.console_log.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return {};
  struct stat sb{};
  ::fstat(fd, &sb);
  constexpr off_t tail = 2048;
  std::string out(static_cast<size_t>(std::min<off_t>(sb.st_size, tail)), '\0');
  auto n = ::pread(fd, out.data(), out.size(), sb.st_size - static_cast<off_t>(out.size()));
  ::close(fd);
  out.resize(n > 0 ? static_cast<size_t>(n) : 0);
  return out;
}

/// Releases everything a VM holds once no process of it runs: handles, the
/// directory; tells the owner agent_exited if it had its agent_started.
void finish(self_ptr self, vm_rec& v, int vmm_code, int vmm_signal) {
  auto& st = self->state;
  for (auto* h : {&v.boot_timer, &v.stop_timer, &v.retry_timer, &v.drain_timer, &v.listen_channel,
                  &v.listen_control, &v.control, &v.qmp, &v.api_watch})
    drop_handle(self, *h);
  v.api_fd = v.listen_channel_fd = v.listen_control_fd = -1;
  // The channel closes by itself: the VMM's end is gone, so the owner sees
  // EOF (stream_closed). A channel accepted but never handed over is ours.
  if (!v.started && v.channel)
    st.io->close(v.channel);
  std::error_code ec;
  if (st.opts.keep_workspaces && v.started) {
    // The image moves (same file system: state_dir), mountable with -o loop.
    auto dir = fs::path(st.opts.state_dir) / "workspaces" / st.opts.instance;
    fs::create_directories(dir, ec);
    if (!ec)
      fs::rename(v.paths.workspace_host, dir / (v.id + ".ext4"), ec);
    if (ec)
      log::agent(v.id).error("cannot keep its workspace {}: {}", v.paths.workspace_host,
                             ec.message());
    ec.clear();
  }
  fs::remove_all(v.paths.dir, ec);
  if (ec)
    log::agent(v.id).error("cannot remove {}: {}", v.paths.dir, ec.message());
  if (v.boot == boot_kind::template_vm) {
    auto t = st.templates.find(v.shape);
    if (v.snapshot_taken && t != st.templates.end()) {
      t->second.ready = true;
      spdlog::info("{} backend: snapshot of shape {} ready in {}", st.opts.name, v.shape,
                   t->second.dir);
    } else {
      drop_template(self, v.shape,
                    v.abort.empty() ? "its template VM ended before the snapshot" : v.abort);
    }
  }
  if (v.rp) {
    auto why = v.abort.empty() ? st.opts.name + " exited before the guest booted ("
                                   + (vmm_signal ? "signal " + std::to_string(vmm_signal)
                                                 : "code " + std::to_string(vmm_code))
                                   + ")"
                               : v.abort;
    v.rp->deliver(backend_error("agent " + v.id + ": " + why));
    v.rp.reset();
  }
  if (v.started) {
    agent_exited e{v.id, vmm_code, vmm_signal, false, v.last_usage.memory_peak_bytes};
    if (v.guest_exit) {
      e.exit_code = v.guest_exit->code;
      e.signal = v.guest_exit->signal;
      e.oom = v.guest_exit->oom;
      e.peak_bytes = std::max(e.peak_bytes, v.guest_exit->peak_bytes);
    }
    log::agent(v.id).info("exited: {} {}{}", e.signal ? "signal" : "code",
                          e.signal ? e.signal : e.exit_code, e.oom ? " (OOM kill)" : "");
    caf::anon_send(v.owner, e);
  }
  auto id = v.id; // `v` lives in the map
  st.vms.erase(id);
}

/// Tears a VM down: kills what runs; finish() follows the last exit. With
/// nothing running (a failure before any process), finishes at once.
void abort_vm(self_ptr self, vm_rec& v, const std::string& why) {
  auto& st = self->state;
  if (v.abort.empty())
    v.abort = why;
  if (v.rp)
    log::agent(v.id).warn("spawn failed: {}", why);
  if (v.mkfs_proc)
    st.io->kill(v.mkfs_proc, SIGKILL);
  if (v.vmm_proc)
    st.io->kill(v.vmm_proc, SIGKILL);
  if (!v.mkfs_proc && !v.vmm_proc)
    finish(self, v, 0, SIGKILL);
}

void kill_vm(self_ptr self, vm_rec& v, const std::string& why) {
  if (v.rp) {
    abort_vm(self, v, why);
    return;
  }
  if (v.vmm_proc)
    self->state.io->kill(v.vmm_proc, SIGKILL);
}

/// A listening Unix socket, non-blocking: firecracker connects to it for
/// each guest-initiated vsock connection.
result<int> listen_unix(const std::string& path) {
  sockaddr_un addr{};
  if (path.size() >= sizeof addr.sun_path)
    return error{"socket path too long (" + std::to_string(path.size()) + " bytes, at most "
                 + std::to_string(sizeof addr.sun_path - 1) + "): " + path};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return error::from_errno("socket", errno);
  ::unlink(path.c_str());
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0
      || ::listen(fd, 4) != 0) {
    int err = errno;
    ::close(fd);
    return error::from_errno("listen on " + path, err);
  }
  return fd;
}

/// The first control line: init starts the agent with this environment
/// (and, restored from a template, with the agent's parameters). A template
/// gets none: it stays parked until it is snapshotted.
void send_start(self_ptr self, vm_rec& v) {
  auto& st = self->state;
  if (v.boot == boot_kind::template_vm)
    return;
  vm::start s{v.spec.env, {}};
  if (v.boot == boot_kind::restore)
    s.params = vm::to_cmdline(boot_params_for(v.spec, transport_of(st)));
  std::string line;
  vm::encode(vm::host_request{std::move(s)}, line);
  st.io->write(v.control, std::move(line));
}

void start_api_call(self_ptr self, vm_rec& v);

/// qemu's exec: migration URIs run a shell command: single-quote the path.
std::optional<std::string> shell_quoted(const std::string& path) {
  if (path.find('\'') != std::string::npos)
    return std::nullopt;
  return "'" + path + "'";
}

void qmp_write(self_ptr self, vm_rec& v, const std::string& execute, const std::string& id,
               const std::string& arguments = {}) {
  std::string line = "{\"execute\":\"" + execute + "\",\"id\":\"" + id + "\"";
  if (!arguments.empty())
    line += ",\"arguments\":" + arguments;
  self->state.io->write(v.qmp, line + "}\n");
}

/// Migration reports its progress as MIGRATION events only when asked.
void qmp_migration_events(self_ptr self, vm_rec& v) {
  qmp_write(self, v, "migrate-set-capabilities", "mcaps",
            R"({"capabilities":[{"capability":"events","state":true}]})");
}

/// A template's guest is parked: pause the VM and write its snapshot.
void take_snapshot(self_ptr self, vm_rec& v) {
  auto& st = self->state;
  const auto& t = v.snap;
  if (st.opts.kind == vmm_kind::qemu) {
    auto file = shell_quoted(qemu_state_file(t));
    if (!file)
      return abort_vm(self, v, "a snapshot path with a quote: " + qemu_state_file(t));
    qmp_migration_events(self, v);
    qmp_write(self, v, "stop", "pause");
    qmp_write(self, v, "migrate", "migrate", "{\"uri\":\"exec:cat > " + *file + "\"}");
    return;
  }
  v.snapshotting = true;
  v.calls = {api::pause_vm(), api::create_snapshot(fc_snapshot_file(t), fc_memory_file(t))};
  start_api_call(self, v);
}

/// The snapshot is on disk: the template's VMM goes; finish() marks the
/// shape ready.
void snapshot_done(self_ptr self, vm_rec& v) {
  v.snapshot_taken = true;
  v.snapshotting = false;
  drop_handle(self, v.boot_timer);
  log::agent(v.id).debug("snapshot taken; ending the template VM");
  if (v.vmm_proc)
    self->state.io->kill(v.vmm_proc, SIGKILL);
}

void next_api_call(self_ptr self, vm_rec& v);
void maybe_ready(self_ptr self, vm_rec& v);

/// One API call: a fresh non-blocking connection, the request written at
/// once (a few hundred bytes: a new Unix socket's buffer takes it whole),
/// the answer read as the I/O thread reports the socket readable.
void start_api_call(self_ptr self, vm_rec& v) {
  auto& st = self->state;
  const auto& path = v.paths.api_socket;
  sockaddr_un addr{};
  if (path.size() >= sizeof addr.sun_path)
    return abort_vm(self, v, "API socket path too long: " + path);
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return abort_vm(self, v, std::string{"API socket: "} + std::strerror(errno));
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    int err = errno;
    ::close(fd);
    if (err == ENOENT || err == ECONNREFUSED || err == EAGAIN) {
      // Not there yet: the boot timer bounds the retries.
      v.retry_timer = st.io->start_timer(as_actor(self), api_retry);
      st.handles[v.retry_timer] = v.id;
      return;
    }
    return abort_vm(self, v, "connect to the API socket " + path + ": " + std::strerror(err));
  }
  auto bytes = api::encode(v.calls.front());
  auto n = ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
  if (n != static_cast<ssize_t>(bytes.size())) {
    int err = n < 0 ? errno : EAGAIN;
    ::close(fd);
    return abort_vm(self, v, api::describe(v.calls.front()) + ": send: " + std::strerror(err));
  }
  v.api_fd = fd;
  v.parser.emplace();
  v.api_watch = st.io->watch_fd(as_actor(self), fd, io::fd_mode::readable, true);
  st.handles[v.api_watch] = v.id;
}

/// The API socket is readable: read what is there, and either finish the
/// call or wait for more.
void on_api_readable(self_ptr self, vm_rec& v) {
  auto& st = self->state;
  char buf[4096];
  result<bool> done = false;
  for (;;) {
    auto n = ::recv(v.api_fd, buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
      break;
    if (n < 0) {
      done = error::from_errno("recv", errno);
      break;
    }
    done = n == 0 ? v.parser->finish() : v.parser->feed({buf, static_cast<size_t>(n)});
    if (!done || *done || n == 0)
      break;
  }
  auto call = v.calls.front();
  if (done && !*done) {
    st.io->rearm(v.api_watch);
    return;
  }
  drop_handle(self, v.api_watch); // the loop closes the fd
  v.api_fd = -1;
  auto failed = [&](const std::string& why) {
    if (v.boot == boot_kind::restore)
      drop_template(self, v.shape, "restoring agent " + v.id + ": " + why);
    abort_vm(self, v, why);
  };
  if (!done)
    return failed(api::describe(call) + ": " + done.err().message);
  auto response = v.parser->get();
  v.parser.reset();
  if (auto ok = api::check(response, api::describe(call)); !ok)
    return failed(ok.err().message);
  log::agent(v.id).debug("firecracker: {} -> {}", api::describe(call), response.status);
  v.calls.pop_front();
  next_api_call(self, v);
}

void next_api_call(self_ptr self, vm_rec& v) {
  if (!v.calls.empty())
    return start_api_call(self, v);
  if (v.snapshotting)
    return snapshot_done(self, v);
  v.ph = phase::booting;
  log::agent(v.id).debug("firecracker: instance {}, waiting for the guest",
                         v.boot == boot_kind::restore ? "restored" : "started");
}

/// Who reads the guest channel: the agent's owner. A template has no agent
/// (nothing comes before `start`): we hold its channel, and drop its lines.
caf::actor channel_reader(self_ptr self, const vm_rec& v) {
  return v.boot == boot_kind::template_vm ? as_actor(self) : v.owner;
}

/// An accepted vsock connection becomes a line stream: the guest channel
/// to the owner, the control channel to us.
void accept_on(self_ptr self, vm_rec& v, bool channel) {
  auto& st = self->state;
  auto& listen = channel ? v.listen_channel : v.listen_control;
  auto& lfd = channel ? v.listen_channel_fd : v.listen_control_fd;
  if (!listen)
    return;
  int fd = ::accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC);
  if (fd < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
      return st.io->rearm(listen);
    return abort_vm(self, v, std::string{"accept on the vsock socket: "} + std::strerror(errno));
  }
  // One connection per port: the listener is done (the loop closes its fd).
  drop_handle(self, listen);
  lfd = -1;
  if (channel) {
    // The guest's lines go straight to the owner; one over the protocol's
    // limit closes the channel ("line over 1048576 bytes").
    v.channel = st.io->open_line_stream(channel_reader(self, v), fd, guest::max_guest_line_bytes);
    maybe_ready(self, v);
  } else {
    v.control = st.io->open_line_stream(as_actor(self), fd, vm::max_control_line_bytes);
    st.handles[v.control] = v.id;
    send_start(self, v);
  }
}

/// The spawn is answered once the guest booted and its channel is ours.
void maybe_ready(self_ptr self, vm_rec& v) {
  auto& st = self->state;
  if (!v.booted || !v.rp)
    return;
  if (!v.channel && v.listen_channel)
    accept_on(self, v, true); // its connection came before the booted line
  if (!v.channel)
    return;
  drop_handle(self, v.boot_timer);
  if (v.orphaned) {
    abort_vm(self, v, "its owner ended during the spawn");
    return;
  }
  v.ph = phase::running;
  v.started = true;
  log::agent(v.id).debug("{} VM booted: pid {}", st.opts.name, v.pid);
  v.rp->deliver(agent_started{v.id, v.pid, v.channel, st.opts.name});
  v.rp.reset();
  if (v.qmp) {
    // The balloon's statistics, refreshed by the guest as often as it
    // sends usage (at least every second: QMP counts whole seconds).
    auto secs = std::max<uint32_t>(1, v.spec.heartbeat_ms / 1000);
    st.io->write(v.qmp, "{\"execute\":\"qom-set\",\"id\":\"poll\",\"arguments\":{\"path\":"
                        "\"/machine/peripheral/balloon0\",\"property\":"
                        "\"guest-stats-polling-interval\",\"value\":" + std::to_string(secs) + "}}\n");
  }
}

void on_control_line(self_ptr self, vm_rec& v, const std::string& line) {
  auto& st = self->state;
  auto ev = vm::decode_guest_event(line);
  if (!ev) {
    log::agent(v.id).error("control channel: {}; killing the VM", ev.err().message);
    return kill_vm(self, v, "control channel: " + ev.err().message);
  }
  std::visit(
    [&](auto& e) {
      using T = std::decay_t<decltype(e)>;
      if constexpr (std::is_same_v<T, vm::parked>) {
        if (v.boot != boot_kind::template_vm || v.snapshot_taken)
          return kill_vm(self, v, "control channel: parked, but this VM is no template");
        log::agent(v.id).debug("guest parked; taking the snapshot of shape {}", v.shape);
        take_snapshot(self, v);
      } else if constexpr (std::is_same_v<T, vm::booted>) {
        log::agent(v.id).debug("guest booted: kernel {}, {} bytes, {} ms", e.kernel,
                               e.memory_bytes, e.boot_ms);
        v.booted = true;
        maybe_ready(self, v);
      } else if constexpr (std::is_same_v<T, vm::oom>) {
        log::agent(v.id).warn("OOM kill in its VM (limit {} bytes, peak {})", e.limit_bytes,
                              e.peak_bytes);
        v.last_usage.oom_kills++;
        if (v.started)
          caf::anon_send(v.owner, agent_oom{v.id, e.limit_bytes, e.peak_bytes});
      } else if constexpr (std::is_same_v<T, vm::usage>) {
        v.last_usage = e;
        if (v.qmp && v.started && !v.balloon_asked) {
          v.balloon_asked = true;
          st.io->write(v.qmp, "{\"execute\":\"qom-get\",\"id\":\"balloon\",\"arguments\":"
                              "{\"path\":\"/machine/peripheral/balloon0\",\"property\":"
                              "\"guest-stats\"}}\n");
        }
      } else if constexpr (std::is_same_v<T, vm::exited>) {
        v.guest_exit = e;
        // The guest reboots next, which ends firecracker (reboot=k).
        drop_handle(self, v.stop_timer);
        v.stop_timer = st.io->start_timer(as_actor(self), poweroff_timeout);
        st.handles[v.stop_timer] = v.id;
      } else if constexpr (std::is_same_v<T, vm::init_failed>) {
        log::agent(v.id).error("guest init failed: {}", e.message);
        kill_vm(self, v, "guest init failed: " + e.message);
      }
    },
    *ev);
}

/// qemu: three socketpairs it inherits as fds 3-5 (guest channel, control,
/// QMP), its argv says everything else. No API calls follow.
void start_qemu(self_ptr self, vm_rec& v) {
  auto& st = self->state;
  int pairs[3][2];
  for (int i = 0; i < 3; ++i) {
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pairs[i]) != 0) {
      int err = errno;
      for (int j = 0; j < i; ++j) {
        ::close(pairs[j][0]);
        ::close(pairs[j][1]);
      }
      return abort_vm(self, v, std::string{"socketpair: "} + std::strerror(err));
    }
  }
  microvm::qemu_files files{v.paths.dir, v.paths.workspace_host, v.paths.console_log, 3, 4, 5};
  io::process_spec ps;
  ps.argv = st.opts.qemu_argv(v.spec, files, boot_params_of(st, v));
  if (v.boot == boot_kind::restore) {
    // The same machine as the template's, its RAM and devices read from
    // the snapshot once QMP says where (on_qmp_line).
    ps.argv.push_back("-incoming");
    ps.argv.push_back("defer");
  }
  int log_fd = ::open(v.paths.console_log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
  ps.stdio = {-1, log_fd, log_fd, pairs[0][1], pairs[1][1], pairs[2][1]};
  ps.close_stdio = true;
  ps.cwd = v.paths.dir;
  v.vmm_proc = st.io->spawn_process(as_actor(self), std::move(ps));
  st.handles[v.vmm_proc] = v.id;
  // The guest's lines go straight to the owner; one over the protocol's
  // limit closes the channel ("line over 1048576 bytes").
  v.channel = st.io->open_line_stream(channel_reader(self, v), pairs[0][0],
                                      guest::max_guest_line_bytes);
  v.control = st.io->open_line_stream(as_actor(self), pairs[1][0], vm::max_control_line_bytes);
  st.handles[v.control] = v.id;
  send_start(self, v);
  v.qmp = st.io->open_line_stream(as_actor(self), pairs[2][0], 1 << 16);
  st.handles[v.qmp] = v.id;
  v.ph = phase::booting;
}

/// A snapshot could not be taken (template) or restored: the template is
/// dropped and the VM torn down (a restore's spawn fails; the supervisor's
/// retry boots cold).
void snapshot_failed(self_ptr self, vm_rec& v, const std::string& why) {
  if (v.boot == boot_kind::cold)
    return log::agent(v.id).warn("{}", why);
  auto what = (v.boot == boot_kind::restore ? "restore: " : "snapshot: ") + why;
  drop_template(self, v.shape, what);
  abort_vm(self, v, what);
}

/// qemu's MIGRATION event: a template's snapshot written, or a restore's
/// read (its VM is paused, as its template was: resume it).
void on_migration(self_ptr self, vm_rec& v, simdjson::dom::element doc) {
  std::string_view status;
  if (doc["data"]["status"].get(status) != simdjson::SUCCESS)
    return;
  log::agent(v.id).debug("qmp migration {}", status);
  if (status == "failed" || status == "cancelled")
    return snapshot_failed(self, v, "qemu migration " + std::string{status});
  if (status != "completed")
    return;
  if (v.boot == boot_kind::template_vm)
    snapshot_done(self, v);
  else if (v.boot == boot_kind::restore)
    qmp_write(self, v, "cont", "cont");
}

/// One QMP line: the greeting asks for capabilities negotiation, whose
/// answer asks query-status; a VM not running before its guest booted
/// fails the spawn at once (qemu pauses a VM it cannot run: a KVM internal
/// error) instead of at the boot timeout. qemu's events
/// (SHUTDOWN, RESET, GUEST_PANICKED, STOP, ...) are logged with the agent;
/// an error answer is a warning. QMP is qemu's, not the guest's: a line
/// that does not parse is logged and dropped.
void on_qmp_line(self_ptr self, vm_rec& v, const std::string& line) {
  simdjson::dom::parser parser; // a few lines per VM: no parser kept
  simdjson::dom::element doc;
  if (parser.parse(line).get(doc) != simdjson::SUCCESS) {
    log::agent(v.id).warn("qmp: not JSON: {}", line.substr(0, 200));
    return;
  }
  if (doc["QMP"].error() == simdjson::SUCCESS) {
    self->state.io->write(v.qmp, "{\"execute\":\"qmp_capabilities\",\"id\":\"caps\"}\n");
    return;
  }
  std::string_view text;
  if (doc["event"].get(text) == simdjson::SUCCESS) {
    // Migration (snapshots) reports every pass: detail, not news.
    if (text.starts_with("MIGRATION"))
      log::agent(v.id).debug("qmp event {}", text);
    else
      log::agent(v.id).info("qmp event {}", text);
    if (text == "MIGRATION")
      return on_migration(self, v, doc);
    // qemu pauses a VM it cannot run on (a KVM internal error): fail the
    // spawn now rather than at the boot timeout. The console says more.
    // (A template is paused for its snapshot, a restore until resumed.)
    if (text == "STOP" && !v.booted && v.rp && v.boot == boot_kind::cold)
      abort_vm(self, v, "qemu paused the VM before its guest booted (a KVM internal error?): "
                          + console_tail(v));
    return;
  }
  std::string_view id;
  if (doc["id"].get(id) != simdjson::SUCCESS)
    id = {};
  if (id == "balloon")
    v.balloon_asked = false;
  if (doc["error"]["desc"].get(text) == simdjson::SUCCESS) {
    if (id == "mcaps" || id == "incoming" || id == "pause" || id == "migrate" || id == "cont")
      return snapshot_failed(self, v, "qmp " + std::string{id} + ": " + std::string{text});
    // Statistics are asked every heartbeat: their refusal is no news.
    if (id == "balloon")
      log::agent(v.id).debug("qmp balloon: {}", text);
    else
      log::agent(v.id).warn("qmp {}: {}", id, text);
    return;
  }
  if (id == "balloon") {
    // -1 marks a statistic the guest has not given (yet).
    int64_t total = -1, available = -1;
    auto stats = doc["return"]["stats"];
    if (stats["stat-total-memory"].get(total) == simdjson::SUCCESS && total > 0)
      v.balloon_total = static_cast<uint64_t>(total);
    if (stats["stat-available-memory"].get(available) == simdjson::SUCCESS && available >= 0)
      v.balloon_available = static_cast<uint64_t>(available);
    return;
  }
  if (id == "caps" && v.boot == boot_kind::restore) {
    auto file = shell_quoted(qemu_state_file(v.snap));
    if (!file)
      return snapshot_failed(self, v, "a snapshot path with a quote");
    qmp_migration_events(self, v);
    qmp_write(self, v, "migrate-incoming", "incoming", "{\"uri\":\"exec:cat " + *file + "\"}");
    return;
  }
  if (id == "caps" || id == "cont") {
    // A VM that fails at once (a KVM internal error) may stop before QMP
    // sends events: ask for its status right after the negotiation too.
    qmp_write(self, v, "query-status", "status");
    return;
  }
  if (id == "status" && doc["return"]["status"].get(text) == simdjson::SUCCESS) {
    if (text == "running" || text == "prelaunch") {
      log::agent(v.id).debug("qemu status: {} (pid {})", text, v.pid);
    } else if (!v.booted && v.rp) {
      abort_vm(self, v, "qemu's VM is in state \"" + std::string{text}
                          + "\" before its guest booted: " + console_tail(v));
    } else {
      log::agent(v.id).warn("qemu status: {}", text);
    }
  }
}

/// mke2fs is done: the VMM.
void start_vmm(self_ptr self, vm_rec& v) {
  auto& st = self->state;
  if (st.opts.kind == vmm_kind::qemu)
    return start_qemu(self, v);
  auto lch = listen_unix(v.paths.vsock_host + "_" + std::to_string(vm::vsock_channel_port));
  if (!lch)
    return abort_vm(self, v, lch.err().message);
  v.listen_channel_fd = *lch;
  v.listen_channel = st.io->watch_fd(as_actor(self), *lch, io::fd_mode::readable, true);
  st.handles[v.listen_channel] = v.id;
  auto lct = listen_unix(v.paths.vsock_host + "_" + std::to_string(vm::vsock_control_port));
  if (!lct)
    return abort_vm(self, v, lct.err().message);
  v.listen_control_fd = *lct;
  v.listen_control = st.io->watch_fd(as_actor(self), *lct, io::fd_mode::readable, true);
  st.handles[v.listen_control] = v.id;

  io::process_spec ps;
  if (st.jailer.empty()) {
    ps.argv = api::firecracker_argv(st.binary, v.paths.api_socket, api::vm_id(v.id));
  } else {
    // The jailed VMM (uid/gid) must reach the vsock sockets and the image.
    for (auto port : {vm::vsock_channel_port, vm::vsock_control_port}) {
      auto p = v.paths.vsock_host + "_" + std::to_string(port);
      if (::chown(p.c_str(), st.opts.uid, st.opts.gid) != 0)
        return abort_vm(self, v, std::string{"chown "} + p + ": " + std::strerror(errno));
    }
    ps.argv = api::jailer_argv(st.jailer, st.binary, api::vm_id(v.id), st.opts.uid,
                               st.opts.gid, v.paths.dir + "/jail");
  }
  int log_fd = ::open(v.paths.console_log.c_str(),
                      O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
  ps.stdio = {-1, log_fd, log_fd};
  ps.close_stdio = true;
  ps.cwd = v.paths.dir;
  v.vmm_proc = st.io->spawn_process(as_actor(self), std::move(ps));
  st.handles[v.vmm_proc] = v.id;
  v.ph = phase::configuring;

  if (v.boot == boot_kind::restore) {
    const auto& t = v.snap;
    v.calls = {api::load_snapshot(fc_snapshot_file(t), fc_memory_file(t), true)};
    return;
  }
  // A snapshot keeps the paths its VM was configured with: a template's are
  // relative to firecracker's working directory, its VM's directory, so
  // that each restore finds its own workspace and vsock sockets in its own.
  auto workspace = v.paths.workspace_vm, vsock = v.paths.vsock_vm;
  if (v.boot == boot_kind::template_vm) {
    workspace = fs::path(workspace).filename().string();
    vsock = fs::path(vsock).filename().string();
  }
  v.calls = {
    api::put_machine_config(st.opts.vcpus, vm_memory_mib(v.spec.memory_bytes)),
    api::put_boot_source(v.paths.kernel_vm, st.opts.kernel_cmdline(boot_params_of(st, v)),
                         v.paths.initrd_vm),
    api::put_drive("workspace", workspace),
    api::put_vsock(3, vsock),
    api::instance_start(),
  };
}

/// Everything before the VMM runs: the directory, the workspace image
/// (mke2fs runs as a child; its exit continues the spawn), the boot timer.
/// `rp`: the spawn's promise (none for a template).
caf::error create_vm(self_ptr self, const agent_spec& spec, const caf::actor& owner,
                     std::optional<caf::typed_response_promise<agent_started>> rp,
                     boot_kind boot, const std::string& shape);

/// Boots a shape's template VM: parked (no agent), snapshotted, killed.
/// Not an agent: no owner, no promise, an id no agent can have ('@').
void start_template(self_ptr self, const agent_spec& agent, const std::string& shape) {
  auto& st = self->state;
  auto& t = st.templates[shape];
  t.dir = st.templates_dir + "/" + shape;
  std::error_code ec;
  fs::remove_all(t.dir, ec);
  fs::create_directories(t.dir, ec);
  if (ec) {
    drop_template(self, shape, "cannot create " + t.dir + ": " + ec.message());
    return;
  }
  agent_spec spec = agent;
  spec.id = "@template-" + shape;
  spec.env.clear();
  t.params = boot_params_for(spec, transport_of(st));
  t.params.park = true;
  log::agent(spec.id).debug("booting the template of shape {} (for agent {})", shape, agent.id);
  if (auto err = create_vm(self, spec, nullptr, std::nullopt, boot_kind::template_vm, shape))
    drop_template(self, shape, caf::to_string(err));
}

/// With snapshots on, a shape's first spawn boots cold and starts its
/// template beside it; the spawns after it restore the template's snapshot.
caf::error begin_spawn(self_ptr self, const agent_spec& spec, const caf::actor& owner,
                       caf::typed_response_promise<agent_started> rp) {
  auto& st = self->state;
  if (!valid_name(spec.id))
    return backend_error("invalid agent id '" + spec.id + "': use 1-64 of [A-Za-z0-9_.-]");
  if (st.vms.count(spec.id))
    return backend_error("agent " + spec.id + " already exists");
  auto boot = boot_kind::cold;
  std::string shape;
  if (st.opts.snapshots) {
    shape = shape_of(spec);
    if (auto t = st.templates.find(shape); t != st.templates.end())
      boot = t->second.ready ? boot_kind::restore : boot_kind::cold;
    else if (!st.broken_shapes.count(shape))
      start_template(self, spec, shape);
  }
  if (boot != boot_kind::restore)
    return create_vm(self, spec, owner, std::move(rp), boot, {});
  log::agent(spec.id).debug("restoring the snapshot of shape {}", shape);
  return create_vm(self, spec, owner, std::move(rp), boot, shape);
}

caf::error create_vm(self_ptr self, const agent_spec& spec, const caf::actor& owner,
                     std::optional<caf::typed_response_promise<agent_started>> rp,
                     boot_kind boot, const std::string& shape) {
  auto& st = self->state;
  snapshot_template snap;
  if (boot != boot_kind::cold) {
    auto t = st.templates.find(shape);
    if (t == st.templates.end())
      return backend_error("agent " + spec.id + ": no snapshot of shape " + shape);
    snap = t->second;
  }
  api::layout_options lo;
  lo.vm_dir = st.opts.state_dir + "/vms/" + st.opts.instance + "/" + spec.id;
  lo.id = api::vm_id(spec.id);
  lo.kernel = st.opts.kernel;
  lo.initrd = st.opts.initrd;
  lo.jailed = !st.jailer.empty();
  lo.firecracker = st.binary;
  auto paths = api::layout(lo);

  std::error_code ec;
  fs::remove_all(paths.dir, ec); // a dead earlier supervisor's leftovers
  fs::create_directories(paths.chroot_root.empty() ? paths.dir : paths.chroot_root + "/run", ec);
  if (ec)
    return backend_error("agent " + spec.id + ": cannot create " + paths.dir + ": " + ec.message());

  auto& v = st.vms[spec.id];
  v.id = spec.id;
  v.owner = owner;
  v.spec = spec;
  v.paths = paths;
  v.rp = std::move(rp);
  v.boot = boot;
  v.shape = shape;
  v.snap = std::move(snap);
  if (owner && st.monitored.insert(owner.address()).second)
    self->monitor(owner);
  auto fail = [&](const std::string& why) {
    abort_vm(self, v, why); // answers the promise, removes the directory
    return caf::error{};
  };
  if (!paths.chroot_root.empty()) {
    // The jailed VMM sees only its chroot: link the image in (same file
    // system as state_dir, or the link fails and says so).
    for (auto [from, to] : {std::pair{paths.kernel_host, paths.kernel_vm},
                            std::pair{paths.initrd_host, paths.initrd_vm}}) {
      if (from.empty())
        continue;
      auto target = paths.chroot_root + to;
      if (::link(from.c_str(), target.c_str()) != 0)
        return fail("link " + from + " into the jailer's chroot: " + std::strerror(errno));
    }
    auto run = paths.chroot_root + "/run";
    if (::chown(run.c_str(), st.opts.uid, st.opts.gid) != 0)
      return fail("chown " + run + ": " + std::strerror(errno));
  }
  // A sparse file of the workspace's size; mke2fs makes it ext4.
  int img = ::open(paths.workspace_host.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (img < 0)
    return fail("create the workspace image " + paths.workspace_host + ": " + std::strerror(errno));
  bool sized = ::ftruncate(img, static_cast<off_t>(spec.workspace_bytes)) == 0;
  int err = errno;
  if (sized && !paths.chroot_root.empty() && ::fchown(img, st.opts.uid, st.opts.gid) != 0) {
    sized = false;
    err = errno;
  }
  ::close(img);
  if (!sized)
    return fail("size the workspace image " + paths.workspace_host + ": " + std::strerror(err));

  // A template boots, then writes its snapshot: twice the boot's time.
  auto timeout = std::chrono::milliseconds(st.opts.boot_timeout_ms);
  v.boot_timer = st.io->start_timer(as_actor(self),
                                    boot == boot_kind::template_vm ? 2 * timeout : timeout);
  st.handles[v.boot_timer] = v.id;
  io::process_spec mk;
  mk.argv = {mke2fs_path(), "-q", "-F", "-t", "ext4", paths.workspace_host};
  v.mkfs_proc = st.io->spawn_process(as_actor(self), std::move(mk));
  st.handles[v.mkfs_proc] = v.id;
  return {};
}

void on_process_exited(self_ptr self, vm_rec& v, const io::process_exited& m) {
  if (m.id == v.mkfs_proc) {
    v.mkfs_proc = 0;
    if (!v.abort.empty())
      return finish(self, v, 0, SIGKILL);
    if (m.term_signal || m.exit_status != 0)
      return abort_vm(self, v, "mke2fs for the workspace image failed ("
                                 + (m.term_signal ? "signal " + std::to_string(m.term_signal)
                                                  : "exit " + std::to_string(m.exit_status))
                                 + ")");
    return start_vmm(self, v);
  }
  if (m.id != v.vmm_proc)
    return;
  v.vmm_proc = 0;
  v.vmm_exited = true;
  v.vmm_code = static_cast<int>(m.exit_status);
  v.vmm_signal = m.term_signal;
  if (v.rp) {
    auto tail = console_tail(v);
    if (!tail.empty())
      log::agent(v.id).warn("{}'s console before it ended:\n{}", self->state.opts.name, tail);
  }
  // The guest's last control lines (its agent's exit) may still be on their
  // way through the I/O thread: the control stream's EOF comes after them.
  // A guest that connected and died at once may still sit in the vsock
  // listeners' backlogs, its lines unread: take those connections now.
  // (An accept that fails aborts the VM, which may end its record.)
  auto id = v.id;
  if (!v.control && v.listen_control)
    accept_on(self, v, false);
  if (self->state.vms.count(id) && !v.channel && v.listen_channel)
    accept_on(self, v, true);
  if (!self->state.vms.count(id))
    return;
  if (v.control) {
    v.drain_timer = self->state.io->start_timer(as_actor(self), drain_timeout);
    self->state.handles[v.drain_timer] = v.id;
    return;
  }
  finish(self, v, v.vmm_code, v.vmm_signal);
}

fc_actor::behavior_type running(self_ptr self) {
  return {
    [=](spawn_atom, agent_spec& spec, caf::actor& owner) -> caf::result<agent_started> {
      auto rp = self->make_response_promise<agent_started>();
      auto& st = self->state;
      if (backends::meet_spawn_fault(self, st.armed, st.delayed, spec, owner, rp))
        return rp;
      if (auto err = begin_spawn(self, spec, owner, rp))
        rp.deliver(std::move(err));
      return rp;
    },
    [=](delayed_spawn_atom, uint64_t ticket) {
      auto q = self->state.delayed.release(ticket);
      if (!q)
        return;
      if (auto err = begin_spawn(self, q->spec, q->owner, q->rp))
        q->rp.deliver(std::move(err));
    },
    [=](signal_atom, std::string& id, int32_t sig) {
      auto& st = self->state;
      if (auto it = st.vms.find(id); it != st.vms.end() && it->second.vmm_proc) {
        log::agent(id).warn("chaos: signal {} ({}) to its VMM", sig, strsignal(sig));
        st.io->kill(it->second.vmm_proc, sig);
      }
    },
    [=](spawn_fault_atom, spawn_fault& f) -> caf::result<uint32_t> {
      auto& st = self->state;
      if (!st.opts.allow_faults)
        return backend_error("spawn faults are off: set agents.allow_faults");
      return st.armed.arm(f);
    },
    [=](stop_atom, std::string& id, uint32_t grace_ms) {
      auto& st = self->state;
      auto it = st.vms.find(id);
      if (it == st.vms.end())
        return;
      auto& v = it->second;
      if (!v.started || !v.control) {
        kill_vm(self, v, "stopped before it booted");
        return;
      }
      std::string line;
      vm::encode(vm::host_request{vm::stop{grace_ms}}, line);
      st.io->write(v.control, std::move(line));
      drop_handle(self, v.stop_timer);
      v.stop_timer = st.io->start_timer(as_actor(self),
                                        std::chrono::milliseconds(grace_ms + stop_margin_ms));
      st.handles[v.stop_timer] = id;
    },
    [=](kill_atom, std::string& id) {
      auto& st = self->state;
      if (auto it = st.vms.find(id); it != st.vms.end())
        kill_vm(self, it->second, "killed before it booted");
    },
    [=](usage_atom, std::string& id) -> caf::result<agent_usage> {
      auto& st = self->state;
      auto it = st.vms.find(id);
      if (it == st.vms.end())
        return backend_error("no agent " + id);
      const auto& v = it->second;
      const auto& u = v.last_usage;
      return agent_usage{id, u.memory_bytes, u.memory_peak_bytes, u.pids, u.cpu_usage_ns,
                         u.oom_kills, v.balloon_total, v.balloon_available};
    },
    [=](io::stream_line& m) {
      auto* v = vm_of(self->state, m.id, false);
      if (v && v->control == m.id)
        on_control_line(self, *v, m.line);
      else if (v && v->qmp == m.id)
        on_qmp_line(self, *v, m.line);
    },
    [=](io::stream_closed& m) {
      // The guest closes the control channel as the VM goes down; the
      // VMM's exit ends the agent.
      auto* v = vm_of(self->state, m.id, true);
      if (v && v->qmp == m.id) {
        v->qmp = 0;
      } else if (v && v->control == m.id) {
        v->control = 0;
        if (v->vmm_exited)
          finish(self, *v, v->vmm_code, v->vmm_signal);
      }
    },
    [=](io::process_started& m) {
      auto* v = vm_of(self->state, m.id, false);
      if (!v || m.id != v->vmm_proc)
        return;
      v->pid = m.pid;
      if (v->abort.empty() && self->state.opts.kind == vmm_kind::firecracker)
        start_api_call(self, *v);
    },
    [=](io::process_exited& m) {
      if (auto* v = vm_of(self->state, m.id, true))
        on_process_exited(self, *v, m);
    },
    [=](io::fd_ready& m) {
      auto* v = vm_of(self->state, m.id, false);
      if (!v)
        return;
      if (m.id == v->api_watch)
        on_api_readable(self, *v);
      else if (m.id == v->listen_channel)
        accept_on(self, *v, true);
      else if (m.id == v->listen_control)
        accept_on(self, *v, false);
    },
    [=](io::timer_fired& m) {
      auto* v = vm_of(self->state, m.id, true);
      if (!v)
        return;
      if (m.id == v->retry_timer) {
        v->retry_timer = 0;
        if (v->abort.empty())
          start_api_call(self, *v);
      } else if (m.id == v->boot_timer) {
        v->boot_timer = 0;
        if (v->rp || v->boot == boot_kind::template_vm)
          abort_vm(self, *v, "boot timeout (the guest did not boot within "
                               + std::to_string(self->state.opts.boot_timeout_ms) + " ms)");
      } else if (m.id == v->drain_timer) {
        v->drain_timer = 0;
        finish(self, *v, v->vmm_code, v->vmm_signal);
      } else if (m.id == v->stop_timer) {
        v->stop_timer = 0; // a stop's grace ran out, or the VM did not power off
        if (v->vmm_proc)
          self->state.io->kill(v->vmm_proc, SIGKILL);
      }
    },
    [=](io::io_failed& m) {
      auto& st = self->state;
      auto* v = vm_of(st, m.id, false);
      spdlog::warn("{} backend: I/O command {} failed: {}", st.opts.name, m.id, m.what);
      if (!v)
        return;
      if (m.id == v->mkfs_proc || m.id == v->vmm_proc) {
        // The process never started: no exit will come.
        (m.id == v->mkfs_proc ? v->mkfs_proc : v->vmm_proc) = 0;
        st.handles.erase(m.id);
        abort_vm(self, *v, m.what);
      } else if (v->rp) {
        abort_vm(self, *v, m.what);
      }
    },
  };
}

fc_actor::behavior_type backend_impl(self_ptr self, io::io_thread* io, vmm_config opts) {
  auto& st = self->state;
  st.io = io;
  st.binary = find_program(opts.binary);
  if (st.binary.empty())
    st.binary = opts.binary;
  if (!opts.jailer.empty()) {
    st.jailer = find_program(opts.jailer);
    if (st.jailer.empty())
      st.jailer = opts.jailer;
  }
  st.opts = std::move(opts);
  // Snapshots are the VMM's and this image's: a dead supervisor's are stale.
  st.templates_dir = st.opts.state_dir + "/templates/" + st.opts.instance;
  std::error_code ec;
  fs::remove_all(st.templates_dir, ec);
  // No VM may outlive the actor that owns it: an owner that ends without
  // stopping its agents gets them killed here, cleaned up as usual.
  self->set_down_handler([self](caf::down_msg& dm) {
    auto& st = self->state;
    st.monitored.erase(dm.source);
    std::vector<std::string> ids;
    for (auto& [id, v] : st.vms)
      if (v.owner.address() == dm.source)
        ids.push_back(id);
    for (auto& id : ids) {
      auto it = st.vms.find(id);
      if (it == st.vms.end())
        continue;
      auto& v = it->second;
      v.orphaned = true;
      log::agent(id).warn("its owner ended ({}); killing its VM", caf::to_string(dm.reason));
      kill_vm(self, v, "its owner ended during the spawn");
    }
  });
  return running(self);
}

} // namespace

backend_actor spawn_vm_backend(caf::actor_system& sys, io::io_thread& io, vmm_config opts) {
  return sys.spawn(backend_impl, &io, std::move(opts));
}

} // namespace agentvisor::microvm
