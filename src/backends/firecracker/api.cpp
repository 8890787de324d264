#include "api.hpp"

#include "agentvisor/json.hpp"

#include <http_parser.h>
#include <simdjson.h>

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

namespace agentvisor::firecracker::api {

namespace {

constexpr std::size_t max_body_bytes = 1 << 20;

request put_json(std::string method, std::string path, std::string body) {
  return request{std::move(method), std::move(path), std::move(body)};
}

} // namespace

std::string encode(const request& r) {
  std::string out;
  out.reserve(160 + r.body.size());
  out += r.method;
  out += ' ';
  out += r.path;
  out += " HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n";
  if (!r.body.empty()) {
    out += "Content-Type: application/json\r\nContent-Length: ";
    out += std::to_string(r.body.size());
    out += "\r\n";
  }
  out += "\r\n";
  out += r.body;
  return out;
}

std::string describe(const request& r) {
  return r.method + " " + r.path;
}

request put_machine_config(uint32_t vcpus, uint64_t mem_size_mib) {
  std::string b;
  json::writer w(b);
  w.begin_object()
    .field("vcpu_count", vcpus)
    .field("mem_size_mib", mem_size_mib)
    .field("smt", false)
    .end_object();
  return put_json("PUT", "/machine-config", std::move(b));
}

request put_boot_source(std::string_view kernel, std::string_view boot_args,
                        std::string_view initrd) {
  std::string b;
  json::writer w(b);
  w.begin_object().field("kernel_image_path", kernel).field("boot_args", boot_args);
  if (!initrd.empty())
    w.field("initrd_path", initrd);
  w.end_object();
  return put_json("PUT", "/boot-source", std::move(b));
}

request put_drive(std::string_view drive_id, std::string_view path_on_host,
                  bool is_root_device, bool is_read_only) {
  std::string b;
  json::writer w(b);
  w.begin_object()
    .field("drive_id", drive_id)
    .field("path_on_host", path_on_host)
    .field("is_root_device", is_root_device)
    .field("is_read_only", is_read_only)
    .end_object();
  // Drive ids are [A-Za-z0-9_]: nothing to percent-encode in the path.
  return put_json("PUT", "/drives/" + std::string{drive_id}, std::move(b));
}

request put_vsock(uint32_t guest_cid, std::string_view uds_path) {
  std::string b;
  json::writer w(b);
  w.begin_object().field("guest_cid", guest_cid).field("uds_path", uds_path).end_object();
  return put_json("PUT", "/vsock", std::move(b));
}

request instance_start() {
  return put_json("PUT", "/actions", R"({"action_type":"InstanceStart"})");
}

request pause_vm() {
  return put_json("PATCH", "/vm", R"({"state":"Paused"})");
}

request resume_vm() {
  return put_json("PATCH", "/vm", R"({"state":"Resumed"})");
}

request create_snapshot(std::string_view snapshot_path, std::string_view mem_file_path) {
  std::string b;
  json::writer w(b);
  w.begin_object()
    .field("snapshot_type", "Full")
    .field("snapshot_path", snapshot_path)
    .field("mem_file_path", mem_file_path)
    .end_object();
  return put_json("PUT", "/snapshot/create", std::move(b));
}

request load_snapshot(std::string_view snapshot_path, std::string_view mem_file_path,
                      bool resume) {
  std::string b;
  json::writer w(b);
  w.begin_object().field("snapshot_path", snapshot_path).key("mem_backend").begin_object()
    .field("backend_type", "File")
    .field("backend_path", mem_file_path)
    .end_object()
    .field("resume_vm", resume)
    .end_object();
  return put_json("PUT", "/snapshot/load", std::move(b));
}

// --- response_parser -----------------------------------------------------------

struct response_parser::impl {
  http_parser parser{};
  http_parser_settings settings{};
  response res;
  bool done = false;
  bool too_large = false;

  impl() {
    http_parser_init(&parser, HTTP_RESPONSE);
    parser.data = this;
    http_parser_settings_init(&settings);
    settings.on_body = [](http_parser* p, const char* at, size_t n) {
      auto* self = static_cast<impl*>(p->data);
      if (self->res.body.size() + n > max_body_bytes) {
        self->too_large = true;
        return 1;
      }
      self->res.body.append(at, n);
      return 0;
    };
    settings.on_headers_complete = [](http_parser* p) {
      static_cast<impl*>(p->data)->res.status = static_cast<int>(p->status_code);
      return 0;
    };
    settings.on_message_complete = [](http_parser* p) {
      auto* self = static_cast<impl*>(p->data);
      self->done = true;
      // One response per parser: stop here (bytes after it are ignored).
      http_parser_pause(p, 1);
      return 0;
    };
  }

  result<bool> run(const char* data, size_t n) {
    if (done)
      return true;
    http_parser_execute(&parser, &settings, data, n);
    auto err = HTTP_PARSER_ERRNO(&parser);
    if (done)
      return true;
    if (too_large)
      return error{"firecracker API: response body over 1048576 bytes"};
    if (err != HPE_OK)
      return error{std::string{"firecracker API: malformed response: "}
                   + http_errno_name(err) + " (" + http_errno_description(err) + ")"};
    return false;
  }
};

response_parser::response_parser() : impl_(std::make_unique<impl>()) {}
response_parser::~response_parser() = default;
response_parser::response_parser(response_parser&&) noexcept = default;
response_parser& response_parser::operator=(response_parser&&) noexcept = default;

result<bool> response_parser::feed(std::string_view bytes) {
  if (bytes.empty())
    return impl_->done;
  return impl_->run(bytes.data(), bytes.size());
}

result<bool> response_parser::finish() {
  auto r = impl_->run(nullptr, 0); // EOF: ends a body that runs to the close
  if (!r)
    return r;
  if (!*r)
    return error{"firecracker API: the connection closed before the response was complete"};
  return true;
}

bool response_parser::complete() const noexcept {
  return impl_->done;
}

const response& response_parser::get() const noexcept {
  return impl_->res;
}

result<void> check(const response& r, std::string_view what) {
  if (r.status >= 200 && r.status < 300)
    return {};
  std::string text = std::string{what} + ": HTTP " + std::to_string(r.status);
  std::string detail = r.body;
  if (!r.body.empty()) {
    simdjson::ondemand::parser p;
    simdjson::padded_string padded{r.body};
    auto doc = p.iterate(padded);
    std::string_view fault;
    if (!doc.error() && doc.find_field("fault_message").get_string().get(fault) == simdjson::SUCCESS)
      detail = std::string{fault};
  }
  if (!detail.empty())
    text += ": " + detail;
  return error{std::move(text)};
}

// --- Blocking calls --------------------------------------------------------------

result<response> call(int fd, const request& r, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  auto left = [&] {
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                deadline - std::chrono::steady_clock::now()).count();
    return ms < 0 ? 0 : static_cast<int>(ms);
  };
  auto bytes = encode(r);
  size_t sent = 0;
  while (sent < bytes.size()) {
    auto n = ::send(fd, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
    if (n > 0) {
      sent += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      pollfd p{fd, POLLOUT, 0};
      if (::poll(&p, 1, left()) <= 0)
        return error{describe(r) + ": timed out sending the request"};
      continue;
    }
    return error::from_errno(describe(r) + ": send", errno);
  }
  response_parser parser;
  char buf[4096];
  for (;;) {
    pollfd p{fd, POLLIN, 0};
    int pr = ::poll(&p, 1, left());
    if (pr < 0 && errno == EINTR)
      continue;
    if (pr <= 0)
      return error{describe(r) + ": no response within "
                   + std::to_string(timeout.count()) + " ms"};
    auto n = ::recv(fd, buf, sizeof buf, 0);
    if (n < 0 && (errno == EINTR || errno == EAGAIN))
      continue;
    if (n < 0)
      return error::from_errno(describe(r) + ": recv", errno);
    auto done = n == 0 ? parser.finish() : parser.feed({buf, static_cast<size_t>(n)});
    if (!done)
      return error{describe(r) + ": " + done.err().message};
    if (*done)
      return parser.get();
  }
}

result<response> call_unix(const std::string& path, const request& r,
                           std::chrono::milliseconds timeout) {
  sockaddr_un addr{};
  if (path.size() >= sizeof addr.sun_path)
    return error{"firecracker API socket path too long: " + path};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return error::from_errno("socket", errno);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    int err = errno;
    ::close(fd);
    return error::from_errno("connect " + path, err);
  }
  auto res = call(fd, r, timeout);
  ::close(fd);
  return res;
}

// --- Processes and paths -----------------------------------------------------------

vm_paths layout(const layout_options& o) {
  vm_paths p;
  p.dir = o.vm_dir;
  p.console_log = o.vm_dir + "/console.log";
  p.kernel_host = o.kernel;
  p.initrd_host = o.initrd;
  if (!o.jailed) {
    p.api_socket = o.vm_dir + "/api.sock";
    p.vsock_host = p.vsock_vm = o.vm_dir + "/v.sock";
    p.workspace_host = p.workspace_vm = o.vm_dir + "/workspace.ext4";
    p.kernel_vm = o.kernel;
    p.initrd_vm = o.initrd;
    return p;
  }
  auto exec_name = std::filesystem::path{o.firecracker}.filename().string();
  p.chroot_root = o.vm_dir + "/jail/" + exec_name + "/" + o.id + "/root";
  p.api_socket = p.chroot_root + std::string{jailed_api_socket};
  p.vsock_vm = "/v.sock";
  p.vsock_host = p.chroot_root + p.vsock_vm;
  p.workspace_vm = "/workspace.ext4";
  p.workspace_host = p.chroot_root + p.workspace_vm;
  p.kernel_vm = "/kernel";
  p.initrd_vm = o.initrd.empty() ? "" : "/initrd";
  return p;
}

std::string vm_id(std::string_view agent_id) {
  std::string out{agent_id.substr(0, 64)};
  for (auto& c : out)
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-'))
      c = '-';
  return out.empty() ? "vm" : out;
}

std::vector<std::string> firecracker_argv(const std::string& firecracker,
                                          const std::string& api_socket,
                                          const std::string& id) {
  return {firecracker, "--api-sock", api_socket, "--id", id};
}

std::vector<std::string> jailer_argv(const std::string& jailer, const std::string& firecracker,
                                     const std::string& id, uint32_t uid, uint32_t gid,
                                     const std::string& chroot_base) {
  return {jailer,
          "--id", id,
          "--exec-file", firecracker,
          "--uid", std::to_string(uid),
          "--gid", std::to_string(gid),
          "--chroot-base-dir", chroot_base,
          "--",
          "--api-sock", std::string{jailed_api_socket}};
}

} // namespace agentvisor::firecracker::api
