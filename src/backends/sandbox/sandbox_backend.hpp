#pragma once
/// The sandbox backend as an actor (backend_actor). It owns the template
/// process, this instance's cgroups and each agent's kernel resources (cgroup,
/// workspace mount, pidfd, OOM fd), and turns what the I/O thread reports
/// about them into agent_oom and agent_exited for each agent's owner.

#include "agentvisor/backend.hpp"
#include "agentvisor/error.hpp"
#include "agentvisor/io.hpp"

#include <caf/fwd.hpp>

#include <memory>
#include <string>

namespace agentvisor::sandbox {

struct backend_options {
  std::string instance = "default";
  std::string state_dir = "/var/lib/agentvisor";
  /// Empty: found next to the running executable.
  std::string guest_binary;
  uint64_t tmp_bytes = 64ull << 20;
  /// Copy a workspace to state_dir/workspaces/<instance>/<id> when its
  /// agent ends (the workspace itself is a tmpfs that ends with it).
  bool keep_workspaces = false;
  uint32_t uid = 20000;
  uint32_t gid = 20000;
  /// Chaos runs may arm spawn faults (agents.allow_faults).
  bool allow_faults = false;
};

/// The host side, made ready before any actor asks for a spawn: cgroups
/// detected, the instance lock taken (one supervisor per instance), cgroups
/// left by a dead earlier supervisor of this instance removed, the template
/// process started and ready. Blocking: call it at start-up.
struct prepared_host;

result<std::shared_ptr<prepared_host>> prepare_host(const backend_options& opts);

/// What prepare_host found, for start-up logs.
std::string describe(const prepared_host& host);

/// The template process's pid (it changes when the backend restarts it).
int template_pid(const prepared_host& host);

/// How many agent cgroups of a dead earlier supervisor prepare_host removed.
size_t stale_removed(const prepared_host& host);

/// Spawns the backend actor over a prepared host. The actor shuts the
/// template down and kills what agents remain when it terminates.
backend_actor spawn_sandbox_backend(caf::actor_system& sys, io::io_thread& io,
                                    std::shared_ptr<prepared_host> host);

/// Where agentvisor-guest lives when not configured: next to `exe`, or in
/// the build tree's src/guest beside src/cli.
std::string default_guest_binary(const std::string& exe);

} // namespace agentvisor::sandbox
