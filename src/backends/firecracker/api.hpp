#pragma once
/// A client of Firecracker's HTTP API (the `--api-sock` Unix socket), with no
/// CAF and no I/O loop: one function per API call returns the request, encode()
/// turns it into HTTP/1.1 bytes, response_parser reads the answer (over
/// http-parser), and check() turns an error answer into an error carrying
/// Firecracker's `fault_message`. The backend actor drives the bytes through
/// the I/O thread without blocking; call() runs one request over a connected
/// socket with blocking I/O, for tests and tools (never inside an actor).
///
/// Also here, because they are plain data: the argv of a firecracker or
/// jailer process, and where a VM's files live on the host and as the VMM
/// sees them (the two differ under the jailer's chroot).
///
/// Targets Firecracker 1.x (API paths and field names of its
/// swagger/firecracker.yaml).

#include "agentvisor/error.hpp"

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace agentvisor::firecracker::api {

/// One API call: method, path and JSON body (empty: no body).
struct request {
  std::string method;
  std::string path;
  std::string body;
};

/// Method, path, `Host: localhost`, `Accept: application/json`, and with a
/// body `Content-Type: application/json` and `Content-Length`; the
/// connection stays open (Firecracker keeps it alive; we close it).
std::string encode(const request& r);

// --- The calls ---------------------------------------------------------------

/// PUT /machine-config {"vcpu_count","mem_size_mib","smt":false}.
request put_machine_config(uint32_t vcpus, uint64_t mem_size_mib);
/// PUT /boot-source {"kernel_image_path","boot_args"[,"initrd_path"]}.
request put_boot_source(std::string_view kernel, std::string_view boot_args,
                        std::string_view initrd = {});
/// PUT /drives/{id} {"drive_id","path_on_host","is_root_device","is_read_only"}.
request put_drive(std::string_view drive_id, std::string_view path_on_host,
                  bool is_root_device = false, bool is_read_only = false);
/// PUT /vsock {"guest_cid","uds_path"}: guest-initiated connections to port
/// P reach the host as connections to `<uds_path>_<P>`.
request put_vsock(uint32_t guest_cid, std::string_view uds_path);
/// PUT /actions {"action_type":"InstanceStart"}.
request instance_start();
/// PATCH /vm {"state":"Paused"} and {"state":"Resumed"}.
request pause_vm();
request resume_vm();
/// PUT /snapshot/create {"snapshot_type":"Full","snapshot_path","mem_file_path"}
/// (the VM must be paused).
request create_snapshot(std::string_view snapshot_path, std::string_view mem_file_path);
/// PUT /snapshot/load {"snapshot_path","mem_backend":{"backend_type":"File",
/// "backend_path"},"resume_vm"} (in a fresh firecracker, before any other
/// configuration).
request load_snapshot(std::string_view snapshot_path, std::string_view mem_file_path,
                      bool resume_vm = true);

// --- Responses ---------------------------------------------------------------

struct response {
  int status = 0;
  std::string body;
};

/// Incremental parser of one response (http-parser, HTTP_RESPONSE mode).
class response_parser {
public:
  response_parser();
  ~response_parser();
  response_parser(response_parser&&) noexcept;
  response_parser& operator=(response_parser&&) noexcept;

  /// Feeds the next bytes. True once the response is complete; an error for
  /// malformed input or a body over 1 MiB.
  result<bool> feed(std::string_view bytes);
  /// The peer closed: completes a response whose body runs to EOF, else an
  /// error ("closed before the response was complete").
  result<bool> finish();
  bool complete() const noexcept;
  /// Valid once complete.
  const response& get() const noexcept;

private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

/// 2xx: ok. Otherwise an error "<what>: HTTP <status>: <fault_message>" (the
/// body as sent when it holds no fault_message).
result<void> check(const response& r, std::string_view what);

/// "PUT /drives/workspace": names a call in errors and logs.
std::string describe(const request& r);

/// Blocking: writes `r` on the connected socket `fd` and reads the answer,
/// waiting at most `timeout` in all. For tests and command-line tools.
result<response> call(int fd, const request& r, std::chrono::milliseconds timeout);

/// Blocking: connects to the Unix socket `path`, call()s, closes.
result<response> call_unix(const std::string& path, const request& r,
                           std::chrono::milliseconds timeout);

// --- Processes and paths -------------------------------------------------------

/// Where one VM's files are, on the host and as the VMM names them (its
/// API body paths). Without the jailer both are the same absolute paths.
struct vm_paths {
  std::string dir;          ///< host: the per-VM directory (removed at the end)
  std::string api_socket;   ///< host path we connect to
  std::string vsock_host;   ///< host path of the vsock uds (listeners: _1024, _1025)
  std::string workspace_host;
  std::string console_log;  ///< host: the VMM's stdout/stderr (serial console)
  /// As the VMM sees them (inside the chroot under the jailer).
  std::string kernel_vm, initrd_vm, workspace_vm, vsock_vm;
  /// Under the jailer: the chroot's root on the host (files the VMM needs
  /// are linked in there); empty without.
  std::string chroot_root;
  /// The kernel and initrd to link into the chroot (host paths).
  std::string kernel_host, initrd_host;
};

struct layout_options {
  std::string vm_dir;   ///< state_dir/vms/<instance>/<id>
  std::string id;       ///< the jailer's --id (the agent id)
  std::string kernel;   ///< host paths
  std::string initrd;
  bool jailed = false;
  /// The firecracker binary: the chroot path contains its file name.
  std::string firecracker = "firecracker";
};

/// The jailer puts its chroot at <chroot-base>/<exec-file name>/<id>/root;
/// our chroot base is <vm_dir>/jail.
vm_paths layout(const layout_options& o);

/// Firecracker's and the jailer's --id allows [A-Za-z0-9-], at most 64: the
/// agent id with every other character turned into '-'. Only a label (each
/// VM has its own directory), so a collision does no harm.
std::string vm_id(std::string_view agent_id);

/// `firecracker --api-sock <api_socket> --id <id>`.
std::vector<std::string> firecracker_argv(const std::string& firecracker,
                                          const std::string& api_socket,
                                          const std::string& id);

/// `jailer --id <id> --exec-file <firecracker> --uid U --gid G
///  --chroot-base-dir <vm_dir>/jail -- --api-sock /run/firecracker.socket`.
std::vector<std::string> jailer_argv(const std::string& jailer, const std::string& firecracker,
                                     const std::string& id, uint32_t uid, uint32_t gid,
                                     const std::string& chroot_base);

/// The API socket's path inside the jailer's chroot.
inline constexpr std::string_view jailed_api_socket = "/run/firecracker.socket";

} // namespace agentvisor::firecracker::api
