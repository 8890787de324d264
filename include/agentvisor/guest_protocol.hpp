#pragma once
/// The guest protocol: newline-delimited JSON between the supervisor (host)
/// and `agentvisor-guest` (PID 1 of a sandbox), one object a line.
/// docs/guest-protocol.md documents every message and field; keep the two in
/// step. The codec here is shared by both ends; it has no behaviour.

#include "agentvisor/error.hpp"

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

namespace agentvisor::guest {

/// The protocol's major version. A host refuses a guest whose `hello`
/// carries another one.
inline constexpr uint32_t protocol_version = 1;

/// The longest host -> guest line, newline excluded. Longer lines are a
/// protocol error (the guest answers `protocol_error` and skips the line).
inline constexpr std::size_t max_line_bytes = std::size_t{1} << 20;

/// The longest guest -> host line, newline excluded: the same 1 MiB. The
/// guest caps what its tools return so their results fit (read_file 512 KiB,
/// execute_command 256 KiB per stream, search and list_directory by encoded
/// size), and as a last guard answers `too_large` instead of writing a
/// longer line. The host's channel closes on a longer line
/// (io::stream_closed "line over 1048576 bytes"), a protocol error.
inline constexpr std::size_t max_guest_line_bytes = std::size_t{1} << 20;

/// The longest `error.message` or `protocol_error.message` the encoders
/// write, as escaped JSON text with its quotes. Messages may quote what the
/// host sent (an unknown tool's name), so they are cut (at a character
/// boundary, ending in "...") to keep every line short.
inline constexpr std::size_t max_message_bytes = 4096;

// --- Error codes of tool results -------------------------------------------

/// Why a tool call failed; spelled in JSON as the enumerator's name.
enum class tool_errc : uint8_t {
  invalid_args,    ///< missing/ill-typed argument, bad regex, bad base64
  path_escape,     ///< the path leaves the workspace (`..`, symlink, absolute)
  not_found,       ///< no such file or directory
  io_error,        ///< any other failed syscall (errno text in the message)
  too_large,       ///< a size limit was exceeded
  timeout,         ///< reserved: execute_command reports timeouts in its result
  unknown_tool,    ///< `call.tool` names no tool
  exec_failed,     ///< execute_command could not start the program
  faults_disabled, ///< a `fault` arrived but the guest runs without --allow-faults
};

std::string_view to_string(tool_errc x) noexcept;
/// The code named `name`, or nothing.
std::optional<tool_errc> tool_errc_from_string(std::string_view name) noexcept;

/// The `error` member of a failed result.
struct tool_error {
  tool_errc code = tool_errc::io_error;
  std::string message;
  bool operator==(const tool_error&) const = default;
};

// --- guest -> host ----------------------------------------------------------

/// First line the guest writes.
struct hello {
  uint32_t version = protocol_version;
  int64_t pid = 0;
  std::string guest; ///< "agentvisor-guest 0.1.0"
  bool operator==(const hello&) const = default;
};

/// The workspace exists, is a directory and is writable; calls may come.
struct ready {
  bool operator==(const ready&) const = default;
};

/// Sent every --heartbeat-ms.
struct heartbeat {
  uint64_t seq = 0;          ///< 1, 2, 3, ...
  uint64_t memory_bytes = 0; ///< the cgroup's usage, or summed VmRSS
  uint64_t uptime_ms = 0;    ///< since the guest started
  bool operator==(const heartbeat&) const = default;
};

/// The answer to a `call` (or to a `fault` that carried an id).
struct call_result {
  uint64_t id = 0;
  bool ok = true;
  /// When ok: the tool's result, a JSON object as text ("{}" if empty).
  std::string result_json = "{}";
  /// When !ok.
  tool_error error;
  bool operator==(const call_result&) const = default;
};

/// The host sent a line the guest could not use; the guest carries on.
struct protocol_error {
  std::string message;
  bool operator==(const protocol_error&) const = default;
};

/// Last line before the guest exits on `shutdown`.
struct bye {
  bool operator==(const bye&) const = default;
};

using guest_message =
  std::variant<hello, ready, heartbeat, call_result, protocol_error, bye>;

// --- host -> guest ----------------------------------------------------------

/// Run a tool. `args_json` is a JSON object as text; encode copies it
/// verbatim (so it must be valid), decode gives it minified ("{}" if absent).
struct call {
  uint64_t id = 0;
  std::string tool;
  std::string args_json = "{}";
  bool operator==(const call&) const = default;
};

/// Kill running commands, say `bye`, exit 0.
struct shutdown {
  bool operator==(const shutdown&) const = default;
};

enum class fault_kind : uint8_t { exit, abort, oom, cpu_hog, disk_fill, fork_bomb, garbage };

std::string_view to_string(fault_kind x) noexcept;
std::optional<fault_kind> fault_kind_from_string(std::string_view name) noexcept;

/// Which bad line a `garbage` fault makes the guest write (tests and chaos
/// runs of the host's handling of a misbehaving guest).
enum class garbage_kind : uint8_t {
  malformed,     ///< a line that is not JSON
  oversized,     ///< a line of max_guest_line_bytes + 1 bytes
  unknown_type,  ///< {"type":"teleport"}
  orphan_result, ///< a result for garbage_result_id, which no host assigns
};

std::string_view to_string(garbage_kind x) noexcept;
std::optional<garbage_kind> garbage_kind_from_string(std::string_view name) noexcept;

/// The id of the result a `garbage` `orphan_result` fault writes. Hosts
/// number calls from 1 and never reach it.
inline constexpr uint64_t garbage_result_id = UINT64_MAX;

/// Chaos testing; honoured only by a guest started with --allow-faults.
struct fault {
  fault_kind kind = fault_kind::exit;
  /// When set, the guest reports on the fault with a `result` for this id.
  std::optional<uint64_t> id;
  int32_t code = 0;   ///< exit status for `exit`
  uint32_t ms = 1000; ///< duration for `cpu_hog`
  /// The bad line for `garbage` (encoded and decoded for that kind only).
  garbage_kind what = garbage_kind::malformed;
  bool operator==(const fault&) const = default;
};

using host_message = std::variant<call, shutdown, fault>;

// --- encoding -----------------------------------------------------------------

/// Each appends one line, '\n' included, to `out`.
void encode(const hello& x, std::string& out);
void encode(const ready& x, std::string& out);
void encode(const heartbeat& x, std::string& out);
void encode(const call_result& x, std::string& out);
void encode(const protocol_error& x, std::string& out);
void encode(const bye& x, std::string& out);
void encode(const call& x, std::string& out);
void encode(const shutdown& x, std::string& out);
void encode(const fault& x, std::string& out);
void encode(const guest_message& x, std::string& out);
void encode(const host_message& x, std::string& out);

/// The line for `x`, '\n' included.
template <class T>
std::string encode(const T& x) {
  std::string out;
  encode(x, out);
  return out;
}

/// A successful result whose body `result_json` (a JSON object) is already
/// written: what encode(call_result) appends, without building the struct.
void encode_result_ok(uint64_t id, std::string_view result_json, std::string& out);

/// A failed result. A message longer than max_message_bytes is cut.
void encode_result_error(uint64_t id, tool_errc code, std::string_view message,
                         std::string& out);

/// The guest's last guard on its line limit: if the line appended to `out`
/// from `mark` on (a result for call `id`, newline included) is longer than
/// max_guest_line_bytes without its newline, replaces it with a `too_large`
/// error result for `id` that says how long it was. Returns whether it did.
bool fit_result_line(std::string& out, std::size_t mark, uint64_t id);

// --- decoding -----------------------------------------------------------------

/// Decodes lines; keeps its parser and buffers between calls, so one decoder
/// per connection avoids allocating per line. Not thread-safe.
/// A trailing "\n" (or "\r\n") on the line is allowed.
/// Errors read like `call.id: expected an unsigned integer`,
/// `unknown message type "foo"`, `line is not valid JSON: ...`.
class decoder {
public:
  decoder();
  ~decoder();
  decoder(decoder&&) noexcept;
  decoder& operator=(decoder&&) noexcept;

  /// A line the guest received (from the host). Longer than max_line_bytes
  /// is an error.
  result<host_message> decode_host(std::string_view line);

  /// A line the host received (from the guest). Longer than
  /// max_guest_line_bytes is an error. Hosts use guest_session
  /// (guest_session.hpp), which also judges the line's place in the
  /// conversation.
  result<guest_message> decode_guest(std::string_view line);

private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

/// One-shot conveniences (each builds a decoder).
result<host_message> decode_host_message(std::string_view line);
result<guest_message> decode_guest_message(std::string_view line);

} // namespace agentvisor::guest
