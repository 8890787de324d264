// The behaviour-free helpers of messages.hpp: names, error values and the
// type registration.

#include "agentvisor/messages.hpp"

#include <caf/actor_system_config.hpp>
#include <caf/make_message.hpp>
#include <caf/message.hpp>
#include <caf/sec.hpp>

#include <array>

namespace agentvisor {

std::string_view to_string(errc x) noexcept {
  switch (x) {
    case errc::bad_request: return "bad_request";
    case errc::not_found: return "not_found";
    case errc::over_budget: return "over_budget";
    case errc::budget_timeout: return "budget_timeout";
    case errc::spawn_failed: return "spawn_failed";
    case errc::agent_down: return "agent_down";
    case errc::draining: return "draining";
    case errc::timeout: return "timeout";
    case errc::escalated: return "escalated";
    case errc::internal: return "internal";
  }
  return "internal";
}

caf::error make_error(errc code, std::string message) {
  return caf::error(static_cast<uint8_t>(code), errc_category,
                    caf::make_message(std::move(message)));
}

namespace {

// The first string in an error's context, if any.
std::string context_text(const caf::error& err) {
  const auto& ctx = err.context();
  if (!ctx.empty() && ctx.match_element<std::string>(0))
    return ctx.get_as<std::string>(0);
  return {};
}

} // namespace

error_view view(const caf::error& err) {
  if (err.category() == errc_category && err.code() >= 1
      && err.code() <= static_cast<uint8_t>(errc::internal))
    return {static_cast<errc>(err.code()), context_text(err)};
  if (err.category() == down_category)
    return {errc::agent_down, describe(down_info_from(err, {}))};
  if (err.category() == caf::atom("system")) {
    auto s = static_cast<caf::sec>(err.code());
    if (s == caf::sec::request_timeout)
      return {errc::timeout, "no answer in time"};
    if (s == caf::sec::request_receiver_down)
      return {errc::agent_down, "the actor that owned the request is gone"};
  }
  // Other actors' errors (the backend's runtime_error) carry their sentence
  // as the context's first string.
  if (auto text = context_text(err); !text.empty())
    return {errc::internal, std::move(text)};
  return {errc::internal, caf::to_string(err)};
}

namespace {

constexpr std::array<std::string_view, 8> down_names = {
  "stopped", "exited", "crashed", "oom", "hung", "protocol_error", "spawn_failed", "evicted"};

} // namespace

std::string_view to_string(down_reason x) noexcept {
  auto i = static_cast<std::size_t>(x) - 1;
  return i < down_names.size() ? down_names[i] : "crashed";
}

std::optional<down_reason> down_reason_from_string(std::string_view name) noexcept {
  for (std::size_t i = 0; i < down_names.size(); ++i)
    if (down_names[i] == name)
      return static_cast<down_reason>(i + 1);
  return std::nullopt;
}

bool is_normal(const down_info& d) noexcept {
  return d.reason == down_reason::stopped
         || (d.reason == down_reason::exited && d.exit_code == 0);
}

std::string describe(const down_info& d) {
  std::string out(to_string(d.reason));
  if (!d.detail.empty())
    out += ": " + d.detail;
  return out;
}

caf::error make_down_error(const down_info& d) {
  return caf::error(static_cast<uint8_t>(d.reason), down_category,
                    caf::make_message(d.agent_id, static_cast<int32_t>(d.exit_code),
                                      static_cast<int32_t>(d.signal), d.detail));
}

down_info down_info_from(const caf::error& reason, std::string agent_id) {
  down_info d;
  d.agent_id = std::move(agent_id);
  if (reason.category() == down_category && reason.code() >= 1
      && reason.code() <= down_names.size()) {
    d.reason = static_cast<down_reason>(reason.code());
    const auto& ctx = reason.context();
    if (ctx.match_elements<std::string, int32_t, int32_t, std::string>()) {
      if (d.agent_id.empty())
        d.agent_id = ctx.get_as<std::string>(0);
      d.exit_code = ctx.get_as<int32_t>(1);
      d.signal = ctx.get_as<int32_t>(2);
      d.detail = ctx.get_as<std::string>(3);
    }
    return d;
  }
  d.reason = down_reason::crashed;
  d.detail = reason ? "its actor ended: " + caf::to_string(reason) : "its actor ended";
  return d;
}

std::string_view to_string(vm_state x) noexcept {
  switch (x) {
    case vm_state::spawning: return "spawning";
    case vm_state::ready: return "ready";
    case vm_state::busy: return "busy";
    case vm_state::draining: return "draining";
    case vm_state::stopped: return "stopped";
    case vm_state::failed: return "failed";
  }
  return "failed";
}

void register_messages(caf::actor_system_config& cfg) {
  cfg.add_message_type<agent_spec>("agent_spec")
    .add_message_type<agent_started>("agent_started")
    .add_message_type<agent_oom>("agent_oom")
    .add_message_type<agent_exited>("agent_exited")
    .add_message_type<agent_usage>("agent_usage")
    .add_message_type<down_info>("down_info")
    .add_message_type<tool_call>("tool_call")
    .add_message_type<tool_result>("tool_result")
    .add_message_type<fault_request>("fault_request")
    .add_message_type<vm_options>("vm_options")
    .add_message_type<agent_ready>("agent_ready")
    .add_message_type<agent_info>("agent_info")
    .add_message_type<std::vector<agent_info>>("std::vector<agent_info>")
    .add_message_type<agent_request>("agent_request")
    .add_message_type<agent_event>("agent_event")
    .add_message_type<spawn_fault>("spawn_fault")
    .add_message_type<grant_request>("grant_request")
    .add_message_type<grant>("grant")
    .add_message_type<budget>("budget")
    .add_message_type<governor_agent>("governor_agent")
    .add_message_type<governor_state>("governor_state")
    .add_message_type<evict_request>("evict_request");
  cfg.add_error_category(errc_category,
                         [](uint8_t code, caf::atom_value, const caf::message& ctx) {
                           std::string out(to_string(static_cast<errc>(code)));
                           if (!ctx.empty() && ctx.match_element<std::string>(0))
                             out += ": " + ctx.get_as<std::string>(0);
                           return out;
                         });
  cfg.add_error_category(down_category,
                         [](uint8_t code, caf::atom_value, const caf::message& ctx) {
                           return describe(down_info_from(
                             caf::error(code, down_category, ctx), {}));
                         });
}

} // namespace agentvisor
