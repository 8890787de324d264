#pragma once
/// The template process: a small single-threaded process (agentvisor-guest
/// --template) that clones sandboxes on request. Cloning from it rather than
/// from the supervisor is what makes a spawn cost about a millisecond: its
/// page tables are tiny, it is single-threaded so the child may run the
/// guest without exec, and the supervisor's threads never block in clone.
///
/// Supervisor -> template: one SOCK_SEQPACKET datagram per request, a JSON
/// object with the fds it needs attached (SCM_RIGHTS). Template ->
/// supervisor: newline-terminated JSON lines on the same socket:
///   {"type":"ready"}                                    once, at start
///   {"type":"spawned","req":N,"pid":P}                   setup succeeded
///   {"type":"failed","req":N,"pid":P,"error":"..."}      setup failed (P is
///       0 when no child was created; otherwise reap it)
/// Children are cloned with CLONE_PARENT: they are the supervisor's own
/// children, so it reaps them through pidfds and sees their exit status.

#include "sandbox.hpp"

#include "agentvisor/error.hpp"

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace agentvisor::sandbox {

/// What the guest inside needs besides the sandbox itself.
struct guest_settings {
  uint32_t heartbeat_ms = 1000;
  bool allow_faults = false;
};

struct spawn_request {
  uint64_t req = 0;
  sandbox_spec spec;
  guest_settings guest;
};

/// Sends a request with its fds (channel, and the workspace and cgroup v2
/// fds when set) without blocking. The fds stay open in the caller.
result<void> send_spawn_request(int sock, const spawn_request& r);

/// The template's side: decodes a datagram and the fds that came with it
/// (taking ownership of them: they are closed on error).
result<spawn_request> decode_spawn_request(std::string_view json,
                                           std::vector<int> fds);

enum class reply_kind : uint8_t { ready, spawned, failed };

struct spawn_reply {
  reply_kind kind = reply_kind::ready;
  uint64_t req = 0;
  int pid = 0;
  std::string error;
};

result<spawn_reply> decode_spawn_reply(std::string_view line);
std::string encode_spawn_reply(const spawn_reply& r);

/// What a sandbox runs once it is set up (the guest's main loop).
using guest_entry = int (*)(const spawn_request& r);

/// How the template prepares for cheap spawns.
struct template_options {
  /// Network namespaces kept ready (netns_pool.hpp); 0: every sandbox's is
  /// created by clone. The pool is filled before `ready` and refilled while
  /// no setup is in flight. Needs root; without it the pool stays empty and
  /// spawns cost what they did.
  std::size_t netns_pool = 4;
};

/// The template's main loop over `control_fd`; returns when the supervisor
/// closes the socket. Returns the process exit code.
int run_template(int control_fd, guest_entry entry, const template_options& opts = {});

} // namespace agentvisor::sandbox
