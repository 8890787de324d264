#pragma once
/// The synchronous tools: read_file, write_file, search, list_directory.
/// Each reads its arguments, appends its result object to `out` and returns
/// nothing, or returns the tool_error to answer with (what it appended is
/// then discarded by the caller). execute_command lives in commands.hpp.

#include "workspace.hpp"

#include <simdjson.h>

#include <cstdint>
#include <string>
#include <string_view>

namespace agentvisor::guest {

/// Limits, documented in docs/guest-protocol.md. Every result must fit in
/// one line of at most max_guest_line_bytes (1 MiB): read_file's content is
/// at most 512 KiB (base64: 683 KiB), and search and list_directory stop
/// adding entries once their result object would pass 768 KiB.
inline constexpr uint64_t read_default_bytes = uint64_t{512} << 10;
inline constexpr uint64_t read_max_bytes = uint64_t{512} << 10;
inline constexpr std::size_t search_max_result_bytes = std::size_t{768} << 10;
inline constexpr std::size_t list_max_result_bytes = std::size_t{768} << 10;
inline constexpr uint64_t search_default_results = 100;
inline constexpr uint64_t search_max_results = 10000;
inline constexpr uint64_t search_max_file_bytes = uint64_t{16} << 20;
inline constexpr std::size_t search_max_depth = 64;
inline constexpr std::size_t search_max_line_text = 1024;
inline constexpr std::size_t search_max_regex_line = 16 * 1024;
inline constexpr std::size_t list_max_entries = 10000;
/// A search walks for at most this long (the loop is blocked meanwhile).
inline constexpr int search_max_ms = 2000;

/// A tool's `args` object; every error names the argument:
/// `argument "path": expected a string`.
class tool_args {
public:
  explicit tool_args(simdjson::dom::object obj) noexcept : obj_(obj) {}

  bool has(std::string_view name) const;
  status get(std::string_view name, std::string_view& out, bool required) const;
  status get(std::string_view name, uint64_t& out, bool required) const;
  status get(std::string_view name, bool& out, bool required) const;
  /// The member `name` as an element, if present.
  bool find(std::string_view name, simdjson::dom::element& out) const;

  static tool_error invalid(std::string_view name, std::string_view what);

private:
  simdjson::dom::object obj_;
};

/// Buffers reused from call to call, so small calls allocate nothing.
struct tool_buffers {
  std::string data;
};

status read_file(const workspace& ws, const tool_args& args, std::string& out, tool_buffers& buf);
status write_file(const workspace& ws, const tool_args& args, std::string& out, tool_buffers& buf);
status search(const workspace& ws, const tool_args& args, std::string& out, tool_buffers& buf);
status list_directory(const workspace& ws, const tool_args& args, std::string& out, tool_buffers& buf);

/// Decodes standard base64 (padding optional, no whitespace) into `out`.
/// False on a character outside the alphabet or a bad length.
bool base64_decode(std::string_view in, std::string& out);

} // namespace agentvisor::guest
