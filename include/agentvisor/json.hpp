#pragma once
/// A tiny JSON writer that appends to a std::string. No DOM, no allocation
/// beyond the string's own growth: callers keep one string and reuse it.
///
///   std::string out;
///   json::writer w(out);
///   w.begin_object().field("id", 7).field("ok", true).key("tags")
///    .begin_array().value("a").value("b").end_array().end_object();
///   // out == R"({"id":7,"ok":true,"tags":["a","b"]})"
///
/// Strings are escaped per RFC 8259: `"` and `\` and every control character
/// (U+0000..U+001F; \b \f \n \r \t by name, the rest as \u00XX). Invalid
/// UTF-8 (stray continuation bytes, truncated or overlong sequences,
/// surrogates, code points above U+10FFFF) is replaced by U+FFFD, one per
/// maximal invalid subpart, so the output is always valid UTF-8 and valid JSON.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace agentvisor::json {

/// Appends `s` as a quoted, escaped JSON string.
void append_string(std::string& out, std::string_view s);

/// Appends the bytes of `s` as a quoted standard base64 (RFC 4648, with
/// padding) JSON string. Base64 needs no escaping.
void append_base64_string(std::string& out, std::string_view s);

/// The length `append_string` would add for `s`, quotes included.
std::size_t escaped_size(std::string_view s) noexcept;

/// The length of the longest prefix of `s` whose `append_string` form,
/// quotes included, takes at most `max_size` bytes. The prefix ends between
/// characters: never inside a valid UTF-8 sequence nor inside an invalid
/// subpart that one U+FFFD replaces. 0 when `max_size` < 2.
std::size_t escaped_prefix(std::string_view s, std::size_t max_size) noexcept;

/// Appends integers and doubles in their shortest round-trip form; a double
/// that is NaN or infinite is written as `null` (JSON has neither).
void append_number(std::string& out, int64_t x);
void append_number(std::string& out, uint64_t x);
void append_number(std::string& out, double x);

/// Streams one JSON value (usually an object) into `out`. Commas are placed
/// from what was last written, so the writer keeps no stack; it trusts the
/// caller to nest begin/end calls correctly and to give every object member
/// a key.
class writer {
public:
  /// Appends to `out` from its current end.
  explicit writer(std::string& out) noexcept : out_(out), start_(out.size()) {}

  writer& begin_object() { sep(); out_ += '{'; return *this; }
  writer& end_object() { out_ += '}'; return *this; }
  writer& begin_array() { sep(); out_ += '['; return *this; }
  writer& end_array() { out_ += ']'; return *this; }

  /// An object member's name; the next value call writes its value.
  writer& key(std::string_view k) {
    sep();
    append_string(out_, k);
    out_ += ':';
    return *this;
  }

  writer& value(std::string_view s) { sep(); append_string(out_, s); return *this; }
  writer& value(const char* s) { return value(std::string_view{s}); }
  writer& value(bool b) { sep(); out_ += b ? "true" : "false"; return *this; }
  writer& value(std::nullptr_t) { sep(); out_ += "null"; return *this; }
  writer& value(double x) { sep(); append_number(out_, x); return *this; }
  writer& value(int x) { return integer(x); }
  writer& value(long x) { return integer(x); }
  writer& value(long long x) { return integer(x); }
  writer& value(unsigned x) { return unsigned_integer(x); }
  writer& value(unsigned long x) { return unsigned_integer(x); }
  writer& value(unsigned long long x) { return unsigned_integer(x); }

  /// A string value holding `bytes` base64-encoded.
  writer& value_base64(std::string_view bytes) { sep(); append_base64_string(out_, bytes); return *this; }

  /// A value that is already valid JSON text, copied as is.
  writer& raw(std::string_view json) { sep(); out_ += json; return *this; }

  /// key(k).value(v) in one call.
  template <class T>
  writer& field(std::string_view k, const T& v) { return key(k).value(v); }

  std::string& str() noexcept { return out_; }

private:
  writer& integer(long long x) { sep(); append_number(out_, static_cast<int64_t>(x)); return *this; }
  writer& unsigned_integer(unsigned long long x) { sep(); append_number(out_, static_cast<uint64_t>(x)); return *this; }

  /// A comma goes before a value or key unless it opens a container, follows
  /// a key, or is the first thing this writer writes.
  void sep() {
    if (out_.size() == start_) return;
    char last = out_.back();
    if (last != '{' && last != '[' && last != ':') out_ += ',';
  }

  std::string& out_;
  std::size_t start_;
};

} // namespace agentvisor::json
