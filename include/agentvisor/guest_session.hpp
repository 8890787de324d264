#pragma once
/// guest_session: the host's side of one guest channel, as plain code (no
/// CAF, no I/O). Whoever owns an agent (the vm_actor) keeps one per channel,
/// feeds it every io::stream_line and the io::stream_closed of that channel,
/// and sends the lines it encodes with io_thread::write.
///
/// It turns lines into events and judges them. Bad input from a guest is a
/// protocol error (an `error` whose message names what was wrong); the owner
/// then terminates the agent (backend kill) and carries on:
///
///   auto ev = session.on_line(line.line);
///   if (!ev) { log(ev.err().message); kill the agent; return; }
///   std::visit(..., *ev); // hello, ready, heartbeat, call_result, ...
///
/// It also keeps the calls in flight (pending ids), so that a result for no
/// call is caught and so that, when the agent goes down, the owner can answer
/// every call still waiting (fail_all_pending) and none is lost.
///
/// The rules are those of docs/guest-protocol.md ("The host's session").
/// Not thread-safe: one owner.

#include "agentvisor/error.hpp"
#include "agentvisor/guest_protocol.hpp"

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace agentvisor::guest {

/// The channel ended without a protocol error. `reason` is empty for a clean
/// EOF, else what broke the stream as the I/O thread said it ("read:
/// connection reset by peer"): the guest died rather than misbehaved.
struct channel_closed {
  std::string reason;
  bool operator==(const channel_closed&) const = default;
};

/// What a line or the channel's end means to the owner. `call_result` comes
/// only for a call the session was waiting for (and ends that wait);
/// `protocol_error` is the guest refusing a line the host sent (the guest
/// carries on; it means a bug on the host's side, to be logged).
using session_event =
  std::variant<hello, ready, heartbeat, call_result, protocol_error, bye, channel_closed>;

/// Where a session is. Calls make sense only in `ready`.
enum class session_phase : uint8_t {
  awaiting_hello, ///< nothing received yet
  awaiting_ready, ///< hello received (the right version)
  ready,          ///< ready received: calls may go out
  said_bye,       ///< bye received: the guest is exiting
  closed,         ///< the channel ended (on_closed)
  failed,         ///< a protocol error was found; the agent must go
};

std::string_view to_string(session_phase x) noexcept;

class guest_session {
public:
  /// A line to write to the channel ('\n' included) and the id it carries
  /// (0 for a fault that reports nothing, and for shutdown).
  struct outgoing {
    uint64_t id = 0;
    std::string line;
  };

  guest_session();
  ~guest_session();
  guest_session(guest_session&&) noexcept;
  guest_session& operator=(guest_session&&) noexcept;
  guest_session(const guest_session&) = delete;
  guest_session& operator=(const guest_session&) = delete;

  // --- host -> guest --------------------------------------------------------

  /// Encodes a call to `tool` with `args_json` (a JSON object), assigning the
  /// next id (1, 2, 3, ...) and remembering it as pending. Refuses, with an
  /// error naming the tool, a call the guest would refuse (its line over
  /// max_line_bytes, args that are not one JSON object): such a call would
  /// never get a result. A raw newline inside `args_json` is removed (the
  /// args are re-encoded minified), so it cannot split the line.
  result<outgoing> call(std::string_view tool, std::string_view args_json = "{}");

  /// Encodes a chaos fault. Kinds that report (cpu_hog, disk_fill,
  /// fork_bomb, garbage) get the next id and are pending until their result;
  /// the others (exit, abort, oom) end the guest and carry no id. `f.id` is
  /// ignored.
  outgoing fault(fault f);

  /// Encodes `shutdown`.
  std::string shutdown();

  // --- guest -> host --------------------------------------------------------

  /// Judges one line from the guest (without its '\n'). An event, or a
  /// protocol error: a malformed line, a line over max_guest_line_bytes, an
  /// unknown or ill-formed message, a line before hello that is not hello, a
  /// second hello or ready, a hello with another protocol version, a result
  /// for an id no call waits for, a line after bye. After the first protocol
  /// error the session is failed and every later line gets that same error
  /// (the owner should ignore lines once it has acted on the first).
  result<session_event> on_line(std::string_view line);

  /// The channel ended with the I/O thread's reason. A line over the limit
  /// ("line over 1048576 bytes") is a protocol error; anything else is a
  /// channel_closed event (empty reason: a clean EOF). The session is closed
  /// afterwards (or failed).
  result<session_event> on_closed(std::string_view reason);

  // --- calls in flight ------------------------------------------------------

  /// Forgets every pending call and returns their ids, ascending, so that the
  /// owner can answer each with the agent's down reason.
  std::vector<uint64_t> fail_all_pending();

  bool is_pending(uint64_t id) const noexcept;
  std::size_t pending_count() const noexcept { return pending_.size(); }
  /// What the pending call `id` asked for (a tool name, or "fault <kind>").
  std::optional<std::string> pending_what(uint64_t id) const;

  // --- state ----------------------------------------------------------------

  session_phase phase() const noexcept { return phase_; }
  bool failed() const noexcept { return phase_ == session_phase::failed; }
  /// The guest's hello, once received.
  const std::optional<hello>& peer() const noexcept { return peer_; }
  /// The first protocol error, once failed.
  const std::string& failure() const noexcept { return failure_; }

private:
  result<session_event> fail(std::string message);
  uint64_t next_id() noexcept { return ++last_id_; }

  decoder dec_;
  session_phase phase_ = session_phase::awaiting_hello;
  std::optional<hello> peer_;
  std::map<uint64_t, std::string> pending_; ///< id -> what it asked for
  uint64_t last_id_ = 0;
  std::string failure_;
};

} // namespace agentvisor::guest
