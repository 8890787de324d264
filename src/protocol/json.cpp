#include "agentvisor/json.hpp"

#include <array>
#include <charconv>
#include <cmath>

namespace agentvisor::json {

namespace {

/// What a byte needs in a JSON string: 0 = copy, 1 = control character,
/// 2 = `"` or `\`, 3 = start of a multi-byte (or invalid) UTF-8 sequence.
constexpr std::array<uint8_t, 256> byte_class = [] {
  std::array<uint8_t, 256> t{};
  for (int i = 0; i < 0x20; ++i) t[i] = 1;
  t['"'] = 2;
  t['\\'] = 2;
  for (int i = 0x80; i < 0x100; ++i) t[i] = 3;
  return t;
}();

constexpr std::string_view replacement = "\xEF\xBF\xBD"; // U+FFFD

/// Length of the valid UTF-8 sequence starting at s[i] (a byte >= 0x80), or
/// 0 when it is invalid; then `*bad` is the length of the maximal invalid
/// subpart (what one U+FFFD replaces).
std::size_t utf8_sequence(const unsigned char* s, std::size_t i, std::size_t n,
                          std::size_t* bad) noexcept {
  unsigned char b0 = s[i];
  std::size_t len;
  unsigned char lo = 0x80;
  unsigned char hi = 0xBF;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    len = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    len = 3;
    if (b0 == 0xE0) lo = 0xA0;        // overlong
    else if (b0 == 0xED) hi = 0x9F;   // surrogates
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    len = 4;
    if (b0 == 0xF0) lo = 0x90;        // overlong
    else if (b0 == 0xF4) hi = 0x8F;   // above U+10FFFF
  } else {
    *bad = 1;
    return 0;
  }
  for (std::size_t k = 1; k < len; ++k) {
    if (i + k >= n) {
      *bad = k;
      return 0;
    }
    unsigned char c = s[i + k];
    unsigned char l = k == 1 ? lo : 0x80;
    unsigned char h = k == 1 ? hi : 0xBF;
    if (c < l || c > h) {
      *bad = k;
      return 0;
    }
  }
  return len;
}

/// Walks `s` and reports copyable runs and replacement text to `sink`.
template <class Sink>
void escape(std::string_view sv, Sink& sink) {
  auto* s = reinterpret_cast<const unsigned char*>(sv.data());
  std::size_t n = sv.size();
  std::size_t run = 0;
  std::size_t i = 0;
  while (i < n) {
    uint8_t cls = byte_class[s[i]];
    if (cls == 0) {
      ++i;
      continue;
    }
    if (cls == 3) {
      std::size_t bad = 0;
      std::size_t len = utf8_sequence(s, i, n, &bad);
      if (len != 0) {
        i += len;
        continue;
      }
      sink.copy(sv.data() + run, i - run);
      sink.literal(replacement);
      i += bad;
      run = i;
      continue;
    }
    sink.copy(sv.data() + run, i - run);
    unsigned char c = s[i];
    switch (c) {
      case '"': sink.literal("\\\""); break;
      case '\\': sink.literal("\\\\"); break;
      case '\b': sink.literal("\\b"); break;
      case '\f': sink.literal("\\f"); break;
      case '\n': sink.literal("\\n"); break;
      case '\r': sink.literal("\\r"); break;
      case '\t': sink.literal("\\t"); break;
      default: {
        static constexpr char hex[] = "0123456789abcdef";
        char u[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 0xF]};
        sink.literal(std::string_view{u, 6});
      }
    }
    ++i;
    run = i;
  }
  sink.copy(sv.data() + run, n - run);
}

struct append_sink {
  std::string& out;
  void copy(const char* p, std::size_t n) { out.append(p, n); }
  void literal(std::string_view s) { out += s; }
};

struct count_sink {
  std::size_t n = 0;
  void copy(const char*, std::size_t k) noexcept { n += k; }
  void literal(std::string_view s) noexcept { n += s.size(); }
};

} // namespace

void append_string(std::string& out, std::string_view s) {
  out += '"';
  append_sink sink{out};
  escape(s, sink);
  out += '"';
}

std::size_t escaped_size(std::string_view s) noexcept {
  count_sink sink;
  escape(s, sink);
  return sink.n + 2;
}

std::size_t escaped_prefix(std::string_view sv, std::size_t max_size) noexcept {
  if (max_size < 2) return 0;
  const std::size_t budget = max_size - 2; // the quotes
  auto* s = reinterpret_cast<const unsigned char*>(sv.data());
  const std::size_t n = sv.size();
  std::size_t used = 0;
  std::size_t i = 0;
  while (i < n) {
    std::size_t step = 1; // bytes of `s` this character takes
    std::size_t cost = 1; // bytes it escapes to
    switch (byte_class[s[i]]) {
      case 0: break;
      case 2: cost = 2; break; // a quote or backslash, escaped
      case 1: {
        unsigned char c = s[i];
        bool named = c == '\b' || c == '\f' || c == '\n' || c == '\r' || c == '\t';
        cost = named ? 2 : 6;
        break;
      }
      default: {
        std::size_t bad = 0;
        std::size_t len = utf8_sequence(s, i, n, &bad);
        step = len != 0 ? len : bad;
        cost = len != 0 ? len : replacement.size();
      }
    }
    if (used + cost > budget) break;
    used += cost;
    i += step;
  }
  return i;
}

void append_base64_string(std::string& out, std::string_view s) {
  static constexpr char alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  auto* p = reinterpret_cast<const unsigned char*>(s.data());
  std::size_t n = s.size();
  std::size_t at = out.size();
  out.resize(at + 2 + (n + 2) / 3 * 4);
  char* o = out.data() + at;
  *o++ = '"';
  std::size_t i = 0;
  for (; i + 3 <= n; i += 3) {
    uint32_t v = uint32_t{p[i]} << 16 | uint32_t{p[i + 1]} << 8 | p[i + 2];
    *o++ = alphabet[v >> 18];
    *o++ = alphabet[(v >> 12) & 63];
    *o++ = alphabet[(v >> 6) & 63];
    *o++ = alphabet[v & 63];
  }
  if (n - i == 1) {
    uint32_t v = uint32_t{p[i]} << 16;
    *o++ = alphabet[v >> 18];
    *o++ = alphabet[(v >> 12) & 63];
    *o++ = '=';
    *o++ = '=';
  } else if (n - i == 2) {
    uint32_t v = uint32_t{p[i]} << 16 | uint32_t{p[i + 1]} << 8;
    *o++ = alphabet[v >> 18];
    *o++ = alphabet[(v >> 12) & 63];
    *o++ = alphabet[(v >> 6) & 63];
    *o++ = '=';
  }
  *o = '"';
}

void append_number(std::string& out, int64_t x) {
  char buf[24];
  auto r = std::to_chars(buf, buf + sizeof buf, x);
  out.append(buf, r.ptr);
}

void append_number(std::string& out, uint64_t x) {
  char buf[24];
  auto r = std::to_chars(buf, buf + sizeof buf, x);
  out.append(buf, r.ptr);
}

void append_number(std::string& out, double x) {
  if (!std::isfinite(x)) {
    out += "null";
    return;
  }
  char buf[32];
  auto r = std::to_chars(buf, buf + sizeof buf, x);
  out.append(buf, r.ptr);
}

} // namespace agentvisor::json
