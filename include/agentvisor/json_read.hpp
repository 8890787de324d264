#pragma once
/// Reading JSON input that people write (the config, chaos scenarios) with
/// simdjson On-Demand, with errors that name the key path:
/// `agents.memory_mb: expected a positive integer, got "lots"`.
///
/// The config parser (src/core/config.cpp) and the scenario parser
/// (src/chaos/scenario.cpp) share these pieces so both word their errors the
/// same way; docs/configuration.md ("Error messages") describes the wording.
/// Plain code, no CAF.

#include <simdjson.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace agentvisor::json_read {

namespace od = simdjson::ondemand;

// --- Small text helpers. ---

/// Appends `s` JSON-escaped (no quotes): `"`, `\` and control characters.
void append_escaped(std::string& out, std::string_view s);
/// Appends `s` quoted and escaped.
void append_quoted(std::string& out, std::string_view s);
/// At most 40 bytes, cut at a UTF-8 character boundary, with "..." if cut.
std::string shorten(std::string_view s);
/// A user-supplied string for a message: quoted, escaped, shortened.
std::string quote(std::string_view s);
/// Control characters escaped, so a message cannot garble a log line.
std::string sanitize(std::string_view s);
std::string_view trim_right(std::string_view s);
bool all_digits(std::string_view s);
/// The JSON number grammar, to tell "too large" from "not a number".
bool is_json_number(std::string_view s);
/// Shortest text that reads back to the same double; NaN/inf as `null`.
void append_double(std::string& out, double x);
std::string double_text(double x);
/// A JSON value after "got": scalars as written, containers as {...}/[...].
std::string render(std::string_view raw_token, od::json_type type);
/// "prefix.key" (or "key"), the key's control characters escaped.
std::string join_path(std::string_view prefix, std::string_view key);
/// "prefix[i]".
std::string index_path(std::string_view prefix, std::size_t i);

// --- Value checks. ---

struct uint_range {
  uint64_t min;
  uint64_t max;
  /// 0 is accepted besides [min, max]: "detect from the host at start-up".
  bool zero_detects = false;
};

struct number_range {
  double lo;
  double hi;
  /// lo itself is refused ("a number > 0 and at most 1000").
  bool lo_exclusive = false;
};

/// What a string value failed: "expected <expected>, got X (<detail>)".
struct string_problem {
  std::string expected;
  std::string detail;
};
using string_check = std::optional<string_problem> (*)(std::string_view);

// --- The parse: one state per document, the first error wins. ---

struct parse_state {
  std::string_view text; ///< the padded copy, for byte offsets
  od::document* doc = nullptr;
  std::string error; ///< the first error; empty while all is well

  bool failed() const { return !error.empty(); }
  void fail(std::string msg) {
    if (error.empty())
      error = std::move(msg);
  }
  /// " at byte N (line L, column C)", or nothing when `at` is unknown.
  std::string where(const char* at) const;
  const char* doc_location();
  void malformed(std::string_view path, std::string_view what, const char* at);
  void malformed(std::string_view path, simdjson::error_code e, const char* at);
};

/// One value at `path`: each getter checks the JSON type and the range,
/// records "PATH: expected WHAT, got VALUE" on failure and returns false.
class value_reader {
public:
  value_reader(parse_state& st, std::string path, od::value& val);

  const std::string& path() const { return path_; }
  std::string_view raw() const { return raw_; }

  /// The value's JSON type; nullopt (with the error recorded) if malformed.
  std::optional<od::json_type> kind();
  /// Records "PATH: expected WHAT, got VALUE[ (DETAIL)]".
  void expected(std::string_view what, od::json_type type,
                std::string_view detail = {});
  /// Records "PATH: WHAT" as it is.
  void fail(std::string_view what);

  /// A plain non-negative integer literal in `r`, at most `type_max`.
  bool uint(uint64_t& out, uint_range r,
            uint64_t type_max = std::numeric_limits<uint64_t>::max());
  /// An integer literal, possibly negative, in [lo, hi].
  bool integer(int64_t& out, int64_t lo, int64_t hi);
  bool number(double& out, number_range r);
  bool boolean(bool& out);
  /// A string; `check` (may be null) judges its content.
  bool string(std::string& out, string_check check = nullptr);
  /// A string that must be one of `names`; `index` is its position.
  /// Else "expected one of a, b, c, got X".
  bool enumeration(std::size_t& index, std::span<const std::string_view> names);
  bool object(od::object& out);
  bool array(od::array& out);
  /// An object, as its JSON text as written (for a nested document that
  /// another parser reads, e.g. a scenario's supervisor overrides).
  bool object_text(std::string_view& out);

private:
  parse_state& st_;
  std::string path_;
  od::value& val_;
  std::string_view raw_;
};

/// Calls `member(key, path, value)` for each member of `obj` under `prefix`;
/// `member` returns false for a key it does not know ("PATH: unknown key").
/// Duplicate keys are errors. Stops at the first error.
void for_each_member(
  parse_state& st, od::object& obj, const std::string& prefix,
  const std::function<bool(std::string_view key, const std::string& path,
                           od::value& val)>& member);

/// Calls `element(i, path, value)` for each element of `arr` ("prefix[i]").
/// Stops at the first error.
void for_each_element(
  parse_state& st, od::array& arr, const std::string& prefix,
  const std::function<void(std::size_t i, const std::string& path,
                           od::value& val)>& element);

/// Parses `json`, whose top level must be an object, and hands it to `body`.
/// Returns the first error (empty on success): an empty document
/// ("malformed JSON: the document is empty" + `empty_hint`), a root that is
/// no object, malformed JSON, trailing content, or what `body` recorded.
std::string parse_root_object(
  std::string_view json, std::string_view empty_hint,
  const std::function<void(parse_state& st, od::object& root)>& body);

} // namespace agentvisor::json_read
