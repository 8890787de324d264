// GCC 12 reports -Wmaybe-uninitialized inside libstdc++'s <variant> when a
// decoded message moves into its result (see protocol.cpp): the pragma
// covers the header's lines only.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <variant>
#pragma GCC diagnostic pop

#include "agentvisor/guest_session.hpp"

#include <array>

namespace agentvisor::guest {

namespace {

constexpr std::array<std::string_view, 6> phase_names = {
  "awaiting_hello", "awaiting_ready", "ready", "said_bye", "closed", "failed",
};

/// The `type` of a decoded guest message, as on the wire.
std::string_view type_of(const guest_message& m) noexcept {
  constexpr std::array<std::string_view, 6> names = {
    "hello", "ready", "heartbeat", "result", "protocol_error", "bye",
  };
  return names[m.index()];
}

/// `s` for a message: quoted, cut to a readable length.
std::string shown(std::string_view s) {
  constexpr std::size_t max = 64;
  std::string out = "\"";
  out += s.substr(0, max);
  out += s.size() > max ? "...\"" : "\"";
  return out;
}

bool reports(fault_kind k) noexcept {
  return k == fault_kind::cpu_hog || k == fault_kind::disk_fill ||
         k == fault_kind::fork_bomb || k == fault_kind::garbage;
}

} // namespace

std::string_view to_string(session_phase x) noexcept {
  return phase_names[static_cast<std::size_t>(x)];
}

guest_session::guest_session() = default;
guest_session::~guest_session() = default;
guest_session::guest_session(guest_session&&) noexcept = default;
guest_session& guest_session::operator=(guest_session&&) noexcept = default;

// --- host -> guest --------------------------------------------------------------

result<guest_session::outgoing> guest_session::call(std::string_view tool,
                                                    std::string_view args_json) {
  guest::call c{last_id_ + 1, std::string(tool),
                std::string(args_json.empty() ? std::string_view{"{}"} : args_json)};
  std::string line = encode(c);
  // Check the line with the guest's own decoder: what passes here, the guest
  // accepts, so the call gets a result.
  auto back = dec_.decode_host(line);
  if (!back)
    return error{"call " + shown(tool) + " cannot be sent: " + back.err().message};
  if (line.find('\n') != line.size() - 1)
    line = encode(std::get<guest::call>(*back)); // minified args: one line
  const uint64_t id = next_id();
  pending_.emplace(id, std::move(c.tool));
  return outgoing{id, std::move(line)};
}

guest_session::outgoing guest_session::fault(guest::fault f) {
  f.id.reset();
  if (reports(f.kind)) {
    f.id = next_id();
    pending_.emplace(*f.id, "fault " + std::string(to_string(f.kind)));
  }
  return outgoing{f.id.value_or(0), encode(f)};
}

std::string guest_session::shutdown() {
  return encode(guest::shutdown{});
}

// --- guest -> host --------------------------------------------------------------

result<session_event> guest_session::fail(std::string message) {
  phase_ = session_phase::failed;
  failure_ = std::move(message);
  return error{failure_};
}

result<session_event> guest_session::on_line(std::string_view line) {
  if (phase_ == session_phase::failed) return error{failure_};
  if (phase_ == session_phase::closed) return fail("a line after the channel closed");
  auto decoded = dec_.decode_guest(line);
  if (!decoded) return fail(std::move(decoded).err().message);
  guest_message& msg = *decoded;
  const std::string_view type = type_of(msg);

  if (auto* h = std::get_if<hello>(&msg)) {
    if (phase_ == session_phase::said_bye) return fail("hello after bye");
    if (phase_ != session_phase::awaiting_hello)
      return fail("a second hello (the guest said hello before)");
    if (h->version != protocol_version)
      return fail("guest speaks protocol " + std::to_string(h->version) + ", we speak " +
                  std::to_string(protocol_version));
    peer_ = *h;
    phase_ = session_phase::awaiting_ready;
    return session_event{std::move(*h)};
  }
  if (phase_ == session_phase::awaiting_hello)
    return fail(std::string(type) + " before hello");
  if (phase_ == session_phase::said_bye)
    return fail(std::string(type) + " after bye");

  if (std::holds_alternative<ready>(msg)) {
    if (phase_ == session_phase::ready) return fail("a second ready (the guest said ready before)");
    phase_ = session_phase::ready;
    return session_event{ready{}};
  }
  if (auto* r = std::get_if<call_result>(&msg)) {
    if (pending_.erase(r->id) == 0)
      return fail("result for id " + std::to_string(r->id) + ", which no call is waiting for");
    return session_event{std::move(*r)};
  }
  if (std::holds_alternative<bye>(msg)) {
    phase_ = session_phase::said_bye;
    return session_event{bye{}};
  }
  if (auto* hb = std::get_if<heartbeat>(&msg)) return session_event{*hb};
  return session_event{std::get<protocol_error>(std::move(msg))};
}

result<session_event> guest_session::on_closed(std::string_view reason) {
  if (phase_ == session_phase::failed) return error{failure_};
  if (reason.starts_with("line over "))
    return fail("the guest sent a " + std::string(reason));
  phase_ = session_phase::closed;
  return session_event{channel_closed{std::string(reason)}};
}

// --- calls in flight ------------------------------------------------------------

std::vector<uint64_t> guest_session::fail_all_pending() {
  std::vector<uint64_t> ids;
  ids.reserve(pending_.size());
  for (const auto& [id, what] : pending_) ids.push_back(id);
  pending_.clear();
  return ids;
}

bool guest_session::is_pending(uint64_t id) const noexcept {
  return pending_.count(id) != 0;
}

std::optional<std::string> guest_session::pending_what(uint64_t id) const {
  auto it = pending_.find(id);
  if (it == pending_.end()) return std::nullopt;
  return it->second;
}

} // namespace agentvisor::guest
