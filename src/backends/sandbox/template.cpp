#include "template.hpp"

#include "netns_pool.hpp"

#include "agentvisor/json.hpp"

#include <simdjson.h>

#include <poll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstring>
#include <map>

namespace agentvisor::sandbox {

namespace {

constexpr size_t max_request_bytes = 64 * 1024;
constexpr size_t max_fds = 4;

void close_all(const std::vector<int>& fds) {
  for (int fd : fds)
    if (fd >= 0)
      ::close(fd);
}

} // namespace

result<void> send_spawn_request(int sock, const spawn_request& r) {
  const auto& s = r.spec;
  std::vector<int> fds{s.channel_fd};
  int ws_index = -1, cg_index = -1;
  if (s.workspace_fd >= 0) {
    ws_index = static_cast<int>(fds.size());
    fds.push_back(s.workspace_fd);
  }
  if (s.cgroup_v2_fd >= 0) {
    cg_index = static_cast<int>(fds.size());
    fds.push_back(s.cgroup_v2_fd);
  }
  std::string body;
  json::writer w{body};
  w.begin_object()
    .field("req", r.req)
    .field("id", s.agent_id)
    .field("hostname", s.hostname)
    .field("rootfs", s.rootfs_dir)
    .field("workspace_fd", ws_index)
    .field("workspace_bytes", s.workspace_bytes)
    .field("tmp_bytes", s.tmp_bytes)
    .field("cgroup_fd", cg_index)
    .field("memory_file", s.memory_file)
    .field("uid", s.uid)
    .field("gid", s.gid)
    .field("userns", s.user_namespace)
    .field("heartbeat_ms", r.guest.heartbeat_ms)
    .field("allow_faults", r.guest.allow_faults)
    .key("cgroup_procs")
    .begin_array();
  for (const auto& p : s.cgroup_procs)
    w.value(p);
  w.end_array().key("env").begin_array();
  for (const auto& kv : s.env)
    w.value(kv);
  w.end_array().end_object();
  if (body.size() > max_request_bytes)
    return error{"spawn request for " + s.agent_id + " is too large"};

  iovec iov{body.data(), body.size()};
  alignas(cmsghdr) char ctrl[CMSG_SPACE(sizeof(int) * max_fds)]{};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = ctrl;
  msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
  auto* c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
  std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  if (::sendmsg(sock, &msg, MSG_DONTWAIT | MSG_NOSIGNAL) < 0)
    return error::from_errno("send spawn request for " + s.agent_id
                               + " to the template process", errno);
  return {};
}

result<spawn_request> decode_spawn_request(std::string_view json,
                                           std::vector<int> fds) {
  auto bad = [&](std::string what) -> result<spawn_request> {
    close_all(fds);
    return error{"spawn request: " + what};
  };
  simdjson::ondemand::parser parser;
  simdjson::padded_string padded{json};
  simdjson::ondemand::document doc;
  if (parser.iterate(padded).get(doc))
    return bad("not valid JSON");
  spawn_request r;
  auto& s = r.spec;
  int64_t ws = -1, cg = -1;
  auto get_str = [&](const char* key, std::string& out) {
    std::string_view v;
    if (doc[key].get_string().get(v))
      return false;
    out = v;
    return true;
  };
  auto get_u64 = [&](const char* key, uint64_t& out) { return !doc[key].get_uint64().get(out); };
  uint64_t uid = 0, gid = 0, hb = 0;
  bool userns = false, faults = false;
  if (!get_u64("req", r.req))
    return bad("req: expected an unsigned integer");
  if (!get_str("id", s.agent_id) || !get_str("hostname", s.hostname)
      || !get_str("rootfs", s.rootfs_dir) || !get_str("memory_file", s.memory_file))
    return bad("id, hostname, rootfs, memory_file: expected strings");
  if (doc["workspace_fd"].get_int64().get(ws) || !get_u64("workspace_bytes", s.workspace_bytes)
      || !get_u64("tmp_bytes", s.tmp_bytes) || doc["cgroup_fd"].get_int64().get(cg)
      || !get_u64("uid", uid) || !get_u64("gid", gid) || doc["userns"].get_bool().get(userns)
      || !get_u64("heartbeat_ms", hb) || doc["allow_faults"].get_bool().get(faults))
    return bad("a numeric or boolean field is missing or mistyped");
  simdjson::ondemand::array procs;
  if (doc["cgroup_procs"].get_array().get(procs))
    return bad("cgroup_procs: expected an array");
  for (auto p : procs) {
    std::string_view v;
    if (p.get_string().get(v))
      return bad("cgroup_procs: expected strings");
    s.cgroup_procs.emplace_back(v);
  }
  simdjson::ondemand::array env;
  if (doc["env"].get_array().get(env))
    return bad("env: expected an array");
  for (auto e : env) {
    std::string_view v;
    if (e.get_string().get(v) || v.find('=') == std::string_view::npos)
      return bad("env: expected KEY=VALUE strings");
    s.env.emplace_back(v);
  }
  auto fd_at = [&](int64_t i) { return i >= 0 && static_cast<size_t>(i) < fds.size() ? fds[i] : -2; };
  if (fds.empty())
    return bad("no channel fd attached");
  s.channel_fd = fds[0];
  s.workspace_fd = ws < 0 ? -1 : fd_at(ws);
  s.cgroup_v2_fd = cg < 0 ? -1 : fd_at(cg);
  if (s.workspace_fd == -2 || s.cgroup_v2_fd == -2)
    return bad("an fd index points past the attached fds");
  s.uid = static_cast<uid_t>(uid);
  s.gid = static_cast<gid_t>(gid);
  s.user_namespace = userns;
  r.guest.heartbeat_ms = static_cast<uint32_t>(hb);
  r.guest.allow_faults = faults;
  return r;
}

std::string encode_spawn_reply(const spawn_reply& r) {
  std::string out;
  json::writer w{out};
  w.begin_object();
  switch (r.kind) {
    case reply_kind::ready: w.field("type", "ready"); break;
    case reply_kind::spawned: w.field("type", "spawned"); break;
    case reply_kind::failed: w.field("type", "failed"); break;
  }
  if (r.kind != reply_kind::ready)
    w.field("req", r.req).field("pid", r.pid);
  if (r.kind == reply_kind::failed)
    w.field("error", r.error);
  w.end_object();
  out += '\n';
  return out;
}

result<spawn_reply> decode_spawn_reply(std::string_view line) {
  simdjson::ondemand::parser parser;
  simdjson::padded_string padded{line};
  simdjson::ondemand::document doc;
  if (parser.iterate(padded).get(doc))
    return error{"template reply is not valid JSON: " + std::string{line.substr(0, 200)}};
  std::string_view type;
  if (doc["type"].get_string().get(type))
    return error{"template reply without a type: " + std::string{line.substr(0, 200)}};
  spawn_reply r;
  if (type == "ready")
    return r;
  if (type != "spawned" && type != "failed")
    return error{"template reply of unknown type " + std::string{type}};
  r.kind = type == "spawned" ? reply_kind::spawned : reply_kind::failed;
  int64_t pid = 0;
  if (doc["req"].get_uint64().get(r.req) || doc["pid"].get_int64().get(pid))
    return error{"template reply without req or pid: " + std::string{line.substr(0, 200)}};
  r.pid = static_cast<int>(pid);
  if (r.kind == reply_kind::failed) {
    std::string_view e;
    if (doc["error"].get_string().get(e))
      return error{"template failure without an error text"};
    r.error = e;
  }
  return r;
}

namespace {

struct pending_setup {
  uint64_t req;
  int pid;
  std::string agent_id;
};

guest_entry g_entry = nullptr;

int sandbox_entry(void* arg) {
  // The template ignores terminal signals; the guest decides its own.
  for (int sig : {SIGINT, SIGTERM, SIGPIPE, SIGHUP})
    ::signal(sig, SIG_DFL);
  return g_entry(*static_cast<const spawn_request*>(arg));
}

void reply(int fd, const spawn_reply& r) {
  auto line = encode_spawn_reply(r);
  // Blocking is fine here: the template has nothing else to do, and a
  // supervisor that stops reading has bigger problems.
  if (::send(fd, line.data(), line.size(), MSG_NOSIGNAL) < 0 && errno == EPIPE)
    ::_exit(0);
}

} // namespace

int run_template(int control_fd, guest_entry entry, const template_options& opts) {
  g_entry = entry;
  // Terminal signals go to the supervisor, which shuts us down by closing
  // the socket; die with it if it dies.
  ::signal(SIGINT, SIG_IGN);
  ::signal(SIGPIPE, SIG_IGN);
  ::prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
  auto filter = build_seccomp();
  if (!filter) {
    reply(control_fd, {reply_kind::failed, 0, 0, filter.err().message});
    return 1;
  }
  // An optimisation: without root the pool stays disabled and every
  // sandbox gets its network namespace from clone.
  netns_pool pool{opts.netns_pool};
  while (pool.enabled() && !pool.full())
    (void) pool.fill_one();
  reply(control_fd, {reply_kind::ready, 0, 0, {}});

  std::map<int, pending_setup> pending; // status fd -> request
  std::vector<char> buf(max_request_bytes + 1);
  std::vector<pollfd> pfds;
  for (;;) {
    pfds.clear();
    pfds.push_back({control_fd, POLLIN, 0});
    for (const auto& [fd, _] : pending)
      pfds.push_back({fd, POLLIN, 0});
    // Refill the pool only while no setup is in flight, so that a reply
    // never waits behind it; requests that arrive meanwhile come first.
    bool refill = pool.enabled() && !pool.full() && pending.empty();
    int ready = ::poll(pfds.data(), pfds.size(), refill ? 0 : -1);
    if (ready < 0) {
      if (errno == EINTR)
        continue;
      return 1;
    }
    if (ready == 0) {
      (void) pool.fill_one();
      continue;
    }
    for (size_t i = 1; i < pfds.size(); ++i) {
      if (!pfds[i].revents)
        continue;
      auto node = pending.extract(pfds[i].fd);
      auto& p = node.mapped();
      if (auto ok = wait_setup(pfds[i].fd, p.agent_id); ok)
        reply(control_fd, {reply_kind::spawned, p.req, p.pid, {}});
      else
        reply(control_fd, {reply_kind::failed, p.req, p.pid, ok.err().message});
    }
    if (!pfds[0].revents)
      continue;
    iovec iov{buf.data(), buf.size()};
    alignas(cmsghdr) char ctrl[CMSG_SPACE(sizeof(int) * max_fds)]{};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = ctrl;
    msg.msg_controllen = sizeof ctrl;
    auto n = ::recvmsg(control_fd, &msg, MSG_CMSG_CLOEXEC);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return 0; // the supervisor closed the socket
    std::vector<int> fds;
    for (auto* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
        continue;
      size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      auto* data = reinterpret_cast<int*>(CMSG_DATA(c));
      fds.insert(fds.end(), data, data + count);
    }
    if ((msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) != 0) {
      close_all(fds);
      reply(control_fd, {reply_kind::failed, 0, 0, "spawn request truncated"});
      continue;
    }
    auto req = decode_spawn_request({buf.data(), static_cast<size_t>(n)}, fds);
    if (!req) {
      reply(control_fd, {reply_kind::failed, 0, 0, req.err().message});
      continue;
    }
    if (!req->spec.user_namespace)
      req->spec.netns_fd = pool.take(); // -1 when empty: clone makes one
    auto child = clone_sandbox(req->spec, *filter, sandbox_entry, &*req, true);
    close_all(fds); // the child has its own copies
    if (req->spec.netns_fd >= 0)
      ::close(req->spec.netns_fd);
    if (!child) {
      reply(control_fd, {reply_kind::failed, req->req, 0, child.err().message});
      continue;
    }
    ::close(child->pidfd); // the supervisor opens its own: it is the parent
    pending.emplace(child->status_fd,
                    pending_setup{req->req, child->pid, req->spec.agent_id});
  }
}

} // namespace agentvisor::sandbox
