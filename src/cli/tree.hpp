#pragma once
/// The whole supervisor inside this process: the enabled backends (config
/// `backends`) behind one backend router, resource governor, spawner, HTTP
/// API and metrics over one actor system and one I/O thread, with the root
/// actor that shuts them down in order. Used by
/// `agentvisor supervisor` and by `agentvisor chaos run` (which needs the
/// very same tree to inject faults into).

#include "agentvisor/backend.hpp"
#include "agentvisor/config.hpp"
#include "agentvisor/error.hpp"
#include "agentvisor/io.hpp"
#include "agentvisor/metrics.hpp"

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace agentvisor::cli {

class supervisor_tree {
public:
  /// Builds every enabled backend (blocking: the sandbox backend takes the
  /// instance lock, removes stale cgroups and starts its template) and
  /// starts every actor, the API listening. An error names the step, e.g.
  /// "the qemu backend is not built into this binary yet"; what was built
  /// before the failure is ended again.
  /// `listen` overrides api.listen (port 0: any free port, which a config
  /// may not ask for).
  static result<std::unique_ptr<supervisor_tree>> start(const config& cfg,
                                                        std::optional<host_port> listen = {});

  ~supervisor_tree();
  supervisor_tree(const supervisor_tree&) = delete;
  supervisor_tree& operator=(const supervisor_tree&) = delete;

  caf::actor_system& system() noexcept { return sys_; }
  io::io_thread& io() noexcept { return io_; }
  const caf::actor& spawner() const noexcept { return spawner_; }
  const caf::actor& governor() const noexcept { return governor_; }
  /// The backend router: what the spawner, vm_actors and chaos runs use.
  const backend_actor& backend() const noexcept { return router_; }
  /// The API's bound port (api.listen with port 0 picks one).
  uint16_t port() const noexcept { return port_; }
  const std::string& host() const noexcept { return host_; }
  const std::string& token() const noexcept { return token_; }
  /// Null when metrics.enabled is false.
  const std::shared_ptr<metrics::metrics>& metrics() const noexcept { return metrics_; }

  /// SIGINT and SIGTERM start the ordered shutdown (a second one quits at
  /// once).
  void watch_signals();

  /// Blocks until the root actor ended (a signal, or the spawner
  /// escalated), then ends the rest. Exit code: exit_ok, or exit_failure
  /// after an escalation or with I/O handles left open.
  int wait();

  /// Starts the ordered shutdown now (as SIGTERM would), then wait().
  int stop();

private:
  supervisor_tree();

  /// Ends the backends (after the router and everything that uses them),
  /// each killing what agents it still runs.
  void end_backends();

  caf::actor_system_config sys_cfg_;
  caf::actor_system sys_;
  io::io_thread io_;
  std::shared_ptr<metrics::metrics> metrics_;
  /// The enabled backends, in build order (config `backends`).
  std::vector<std::pair<backend_kind, backend_actor>> backends_;
  backend_actor router_;
  caf::actor governor_;
  caf::actor spawner_;
  caf::actor api_;
  caf::actor root_;
  uint16_t port_ = 0;
  std::string host_;
  std::string token_;
  bool io_started_ = false;
  bool ended_ = false;
  int code_ = 0;
};

} // namespace agentvisor::cli
