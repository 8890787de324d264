#pragma once
/// Logging on spdlog: one stderr logger, plain or JSON lines, level from the
/// config. Records about an agent carry its id as a field (`agent=` in plain
/// text, `"agent":` in JSON) so an operator can follow one agent:
///
///     agentvisor::log::agent(id).info("ready in {} ms", ms);
///     spdlog::info("listening on {}", addr);   // records about no agent

#include "agentvisor/config.hpp"

#include <spdlog/spdlog.h>

#include <string_view>
#include <utility>

namespace agentvisor::log {

/// Installs the default logger (stderr, synchronous: a record is written
/// before the call returns, so nothing is lost when the process dies).
void init(log_level level, log_format format);

/// Formats one record; exposed for tests.
std::unique_ptr<spdlog::formatter> make_formatter(log_format format);

namespace detail {
/// The agent the record being logged on this thread is about. Set only for
/// the duration of one agent_logger call, read by our formatter.
inline thread_local std::string_view current_agent;

struct agent_scope {
  explicit agent_scope(std::string_view id) : prev(current_agent) {
    current_agent = id;
  }
  ~agent_scope() { current_agent = prev; }
  agent_scope(const agent_scope&) = delete;
  agent_scope& operator=(const agent_scope&) = delete;
  std::string_view prev;
};
} // namespace detail

/// Logs records that carry an agent id.
class agent_logger {
public:
  explicit agent_logger(std::string_view id) : id_(id) {}

  template <class... Args>
  void log(spdlog::level::level_enum lvl, spdlog::format_string_t<Args...> f,
           Args&&... args) const {
    auto* lg = spdlog::default_logger_raw();
    if (!lg->should_log(lvl))
      return;
    detail::agent_scope scope{id_};
    lg->log(lvl, f, std::forward<Args>(args)...);
  }
  template <class... Args>
  void debug(spdlog::format_string_t<Args...> f, Args&&... args) const {
    log(spdlog::level::debug, f, std::forward<Args>(args)...);
  }
  template <class... Args>
  void info(spdlog::format_string_t<Args...> f, Args&&... args) const {
    log(spdlog::level::info, f, std::forward<Args>(args)...);
  }
  template <class... Args>
  void warn(spdlog::format_string_t<Args...> f, Args&&... args) const {
    log(spdlog::level::warn, f, std::forward<Args>(args)...);
  }
  template <class... Args>
  void error(spdlog::format_string_t<Args...> f, Args&&... args) const {
    log(spdlog::level::err, f, std::forward<Args>(args)...);
  }

private:
  std::string_view id_;
};

inline agent_logger agent(std::string_view id) { return agent_logger{id}; }

} // namespace agentvisor::log
