// Reading hand-written JSON with errors that name the key path; shared by
// the config parser and the chaos scenario parser (json_read.hpp).

#include "agentvisor/json_read.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>

namespace agentvisor::json_read {
namespace {

// Longest value rendered after "got"; longer ones are cut with "...".
constexpr std::size_t max_rendered = 40;

bool is_digit(char c) {
  return c >= '0' && c <= '9';
}

// A range bound for a message: whole numbers in full ("100000", where the
// shortest form would be "1e+05"), others in their shortest form.
std::string bound_text(double x) {
  if (std::isfinite(x) && std::fabs(x) < 1e15 && x == std::trunc(x))
    return std::to_string(static_cast<int64_t>(x));
  return double_text(x);
}

} // namespace

// --- Small text helpers. ---

void append_escaped(std::string& out, std::string_view s) {
  static constexpr char hex[] = "0123456789abcdef";
  for (char c : s) {
    auto u = static_cast<unsigned char>(c);
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (u < 0x20) {
          out += "\\u00";
          out += hex[u >> 4];
          out += hex[u & 0xf];
        } else {
          out += c;
        }
    }
  }
}

void append_quoted(std::string& out, std::string_view s) {
  out += '"';
  append_escaped(out, s);
  out += '"';
}

// Cuts at a UTF-8 character boundary so messages stay valid UTF-8.
std::string shorten(std::string_view s) {
  if (s.size() <= max_rendered)
    return std::string{s};
  std::size_t cut = max_rendered - 3;
  while (cut > 0 && (static_cast<unsigned char>(s[cut]) & 0xC0) == 0x80)
    --cut;
  std::string out{s.substr(0, cut)};
  out += "...";
  return out;
}

std::string quote(std::string_view s) {
  std::string out;
  append_quoted(out, s);
  return shorten(out);
}

std::string sanitize(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (static_cast<unsigned char>(c) < 0x20)
      append_escaped(out, std::string_view{&c, 1});
    else
      out += c;
  }
  return out;
}

std::string_view trim_right(std::string_view s) {
  while (!s.empty()
         && (s.back() == ' ' || s.back() == '\t' || s.back() == '\n'
             || s.back() == '\r'))
    s.remove_suffix(1);
  return s;
}

bool all_digits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), is_digit);
}

bool is_json_number(std::string_view s) {
  std::size_t i = 0;
  std::size_t n = s.size();
  auto digits = [&] {
    std::size_t start = i;
    while (i < n && is_digit(s[i]))
      ++i;
    return i > start;
  };
  if (i < n && s[i] == '-')
    ++i;
  if (i < n && s[i] == '0')
    ++i;
  else if (!digits())
    return false;
  if (i < n && s[i] == '.') {
    ++i;
    if (!digits())
      return false;
  }
  if (i < n && (s[i] == 'e' || s[i] == 'E')) {
    ++i;
    if (i < n && (s[i] == '+' || s[i] == '-'))
      ++i;
    if (!digits())
      return false;
  }
  return i == n;
}

void append_double(std::string& out, double x) {
  if (!std::isfinite(x)) {
    out += "null"; // JSON has no NaN/inf; parsing it back then fails loudly
    return;
  }
  char buf[32];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, x);
  if (ec != std::errc{}) {
    out += "null";
    return;
  }
  out.append(buf, end);
}

std::string double_text(double x) {
  std::string out;
  append_double(out, x);
  return out;
}

std::string render(std::string_view raw_token, od::json_type type) {
  if (type == od::json_type::object)
    return "{...}";
  if (type == od::json_type::array)
    return "[...]";
  return shorten(sanitize(trim_right(raw_token)));
}

std::string join_path(std::string_view prefix, std::string_view key) {
  std::string out{prefix};
  if (!out.empty())
    out += '.';
  out += sanitize(key);
  return out;
}

std::string index_path(std::string_view prefix, std::size_t i) {
  std::string out{prefix};
  out += '[';
  out += std::to_string(i);
  out += ']';
  return out;
}

// --- parse_state. ---

std::string parse_state::where(const char* at) const {
  if (at == nullptr || at < text.data() || at >= text.data() + text.size())
    return {};
  auto offset = static_cast<std::size_t>(at - text.data());
  std::size_t line = 1;
  std::size_t column = 1;
  for (std::size_t i = 0; i < offset; ++i) {
    if (text[i] == '\n') {
      ++line;
      column = 1;
    } else {
      ++column;
    }
  }
  return " at byte " + std::to_string(offset) + " (line " + std::to_string(line)
         + ", column " + std::to_string(column) + ")";
}

const char* parse_state::doc_location() {
  const char* at = nullptr;
  if (doc == nullptr || doc->current_location().get(at) != simdjson::SUCCESS)
    return nullptr;
  return at;
}

void parse_state::malformed(std::string_view path, std::string_view what,
                            const char* at) {
  std::string msg;
  if (!path.empty()) {
    msg += path;
    msg += ": ";
  }
  msg += "malformed JSON";
  msg += where(at);
  msg += ": ";
  msg += what;
  fail(std::move(msg));
}

void parse_state::malformed(std::string_view path, simdjson::error_code e,
                            const char* at) {
  // simdjson reports this one at the document start; that offset misleads.
  if (e == simdjson::INCOMPLETE_ARRAY_OR_OBJECT)
    at = nullptr;
  malformed(path, simdjson::error_message(e), at);
}

// --- value_reader. ---

value_reader::value_reader(parse_state& st, std::string path, od::value& val)
  : st_(st), path_(std::move(path)), val_(val) {
  // raw_json_token() only looks; it does not consume the value.
  raw_ = val_.raw_json_token();
}

std::optional<od::json_type> value_reader::kind() {
  od::json_type type{};
  if (auto e = val_.type().get(type)) {
    st_.malformed(path_, e, raw_.data());
    return std::nullopt;
  }
  // type() looks at the first byte only; "tru" must not pass as a literal.
  auto token = trim_right(raw_);
  bool bad_literal
    = (type == od::json_type::boolean && token != "true" && token != "false")
      || (type == od::json_type::null && token != "null");
  if (bad_literal) {
    st_.malformed(path_, "invalid literal " + render(raw_, type), raw_.data());
    return std::nullopt;
  }
  return type;
}

void value_reader::expected(std::string_view what, od::json_type type,
                            std::string_view detail) {
  std::string msg = path_ + ": expected ";
  msg += what;
  msg += ", got ";
  msg += render(raw_, type);
  if (!detail.empty()) {
    msg += " (";
    msg += detail;
    msg += ')';
  }
  st_.fail(std::move(msg));
}

void value_reader::fail(std::string_view what) {
  st_.fail(path_ + ": " + std::string{what});
}

bool value_reader::uint(uint64_t& out, uint_range r, uint64_t type_max) {
  auto type = kind();
  if (!type)
    return false;
  auto token = trim_right(raw_);
  bool positive = r.min >= 1 && !r.zero_detects;
  if (*type != od::json_type::number || !all_digits(token)) {
    expected(positive ? "a positive integer" : "a non-negative integer", *type);
    return false;
  }
  if (token.size() > 1 && token.front() == '0') {
    st_.malformed(path_, "a number must not start with 0", raw_.data());
    return false;
  }
  uint64_t max = std::min(r.max, type_max);
  uint64_t x = 0;
  // A valid run of digits that is no uint64 is simply too large.
  bool too_big = val_.get_uint64().get(x) != simdjson::SUCCESS || x > max;
  if (!too_big && ((x == 0 && r.zero_detects) || x >= r.min)) {
    out = x;
    return true;
  }
  std::string want;
  if (r.zero_detects)
    want = "0 (detect) or an integer in " + std::to_string(r.min) + ".."
           + std::to_string(max);
  else if (!too_big && max == type_max)
    want = r.min == 1 ? std::string{"a positive integer"}
                      : "an integer >= " + std::to_string(r.min);
  else
    want = "an integer in " + std::to_string(r.min) + ".." + std::to_string(max);
  expected(want, *type);
  return false;
}

bool value_reader::integer(int64_t& out, int64_t lo, int64_t hi) {
  auto type = kind();
  if (!type)
    return false;
  auto want = "an integer in " + std::to_string(lo) + ".." + std::to_string(hi);
  auto token = trim_right(raw_);
  auto digits = token.substr(!token.empty() && token.front() == '-' ? 1 : 0);
  if (*type != od::json_type::number || !all_digits(digits)) {
    expected(want, *type);
    return false;
  }
  if (digits.size() > 1 && digits.front() == '0') {
    st_.malformed(path_, "a number must not start with 0", raw_.data());
    return false;
  }
  int64_t x = 0;
  if (val_.get_int64().get(x) != simdjson::SUCCESS || x < lo || x > hi) {
    expected(want, *type);
    return false;
  }
  out = x;
  return true;
}

bool value_reader::number(double& out, number_range r) {
  auto type = kind();
  if (!type)
    return false;
  auto want = r.lo_exclusive ? "a number > " + bound_text(r.lo)
                                 + " and at most " + bound_text(r.hi)
                             : "a number in " + bound_text(r.lo) + ".."
                                 + bound_text(r.hi);
  if (*type != od::json_type::number) {
    expected(want, *type);
    return false;
  }
  double x = 0;
  if (auto e = val_.get_double().get(x)) {
    // Valid JSON yet no double (1e999) is out of range; else malformed.
    if (is_json_number(trim_right(raw_)))
      expected(want, *type);
    else
      st_.malformed(path_, e, raw_.data());
    return false;
  }
  bool above_lo = r.lo_exclusive ? x > r.lo : x >= r.lo;
  if (!(above_lo && x <= r.hi)) {
    expected(want, *type);
    return false;
  }
  out = x;
  return true;
}

bool value_reader::boolean(bool& out) {
  auto type = kind();
  if (!type)
    return false;
  if (*type != od::json_type::boolean) {
    expected("true or false", *type);
    return false;
  }
  bool x = false;
  if (auto e = val_.get_bool().get(x)) {
    st_.malformed(path_, e, raw_.data());
    return false;
  }
  out = x;
  return true;
}

bool value_reader::string(std::string& out, string_check check) {
  auto type = kind();
  if (!type)
    return false;
  if (*type != od::json_type::string) {
    expected("a string", *type);
    return false;
  }
  std::string_view s;
  if (auto e = val_.get_string().get(s)) {
    st_.malformed(path_, e, raw_.data());
    return false;
  }
  if (check != nullptr) {
    if (auto problem = check(s)) {
      expected(problem->expected, *type, problem->detail);
      return false;
    }
  }
  out = std::string{s};
  return true;
}

bool value_reader::enumeration(std::size_t& index,
                               std::span<const std::string_view> names) {
  auto type = kind();
  if (!type)
    return false;
  if (*type == od::json_type::string) {
    std::string_view s;
    if (auto e = val_.get_string().get(s)) {
      st_.malformed(path_, e, raw_.data());
      return false;
    }
    auto i = std::find(names.begin(), names.end(), s);
    if (i != names.end()) {
      index = static_cast<std::size_t>(i - names.begin());
      return true;
    }
  }
  std::string want = "one of ";
  bool first = true;
  for (auto name : names) {
    if (!first)
      want += ", ";
    first = false;
    want += name;
  }
  expected(want, *type);
  return false;
}

bool value_reader::object(od::object& out) {
  auto type = kind();
  if (!type)
    return false;
  if (*type != od::json_type::object) {
    expected("an object", *type);
    return false;
  }
  if (auto e = val_.get_object().get(out)) {
    st_.malformed(path_, e, raw_.data());
    return false;
  }
  return true;
}

bool value_reader::array(od::array& out) {
  auto type = kind();
  if (!type)
    return false;
  if (*type != od::json_type::array) {
    expected("an array", *type);
    return false;
  }
  if (auto e = val_.get_array().get(out)) {
    st_.malformed(path_, e, raw_.data());
    return false;
  }
  return true;
}

bool value_reader::object_text(std::string_view& out) {
  od::object obj;
  if (!object(obj))
    return false;
  // raw_json() walks the object to its end, which also validates its shape.
  if (auto e = obj.raw_json().get(out)) {
    st_.malformed(path_, e, raw_.data());
    return false;
  }
  return true;
}

// --- Walking objects, arrays and the document. ---

void for_each_member(
  parse_state& st, od::object& obj, const std::string& prefix,
  const std::function<bool(std::string_view, const std::string&, od::value&)>&
    member) {
  // Known keys seen so far in this object; a handful, so a vector will do.
  std::vector<std::string> seen;
  for (auto field : obj) {
    std::string_view key;
    if (auto e = field.unescaped_key().get(key)) {
      st.malformed(prefix, e, st.doc_location());
      return;
    }
    auto path = join_path(prefix, key);
    od::value val;
    if (auto e = field.value().get(val)) {
      st.malformed(path, e, st.doc_location());
      return;
    }
    // On-Demand would happily let a later duplicate override an earlier one.
    if (std::find(seen.begin(), seen.end(), key) != seen.end()) {
      st.fail(path + ": duplicate key");
      return;
    }
    bool known = member(key, path, val);
    if (st.failed())
      return;
    if (!known) {
      st.fail(path + ": unknown key");
      return;
    }
    seen.emplace_back(key);
  }
}

void for_each_element(
  parse_state& st, od::array& arr, const std::string& prefix,
  const std::function<void(std::size_t, const std::string&, od::value&)>&
    element) {
  std::size_t i = 0;
  for (auto item : arr) {
    auto path = index_path(prefix, i);
    od::value val;
    if (auto e = item.get(val)) {
      st.malformed(path, e, st.doc_location());
      return;
    }
    element(i, path, val);
    if (st.failed())
      return;
    ++i;
  }
}

std::string parse_root_object(
  std::string_view json, std::string_view empty_hint,
  const std::function<void(parse_state&, od::object&)>& body) {
  simdjson::padded_string padded{json};
  od::parser parser;
  od::document doc;
  parse_state st;
  st.text = std::string_view{padded.data(), padded.size()};
  if (auto e = parser.iterate(padded).get(doc)) {
    if (e == simdjson::EMPTY)
      return "malformed JSON: the document is empty" + std::string{empty_hint};
    st.malformed({}, e, nullptr);
    return std::move(st.error);
  }
  st.doc = &doc;
  od::json_type type{};
  if (auto e = doc.type().get(type)) {
    st.malformed({}, e, st.doc_location());
    return std::move(st.error);
  }
  if (type != od::json_type::object) {
    std::string_view raw;
    if (doc.raw_json_token().get(raw) != simdjson::SUCCESS)
      raw = "?";
    return "expected a JSON object at the top level, got " + render(raw, type);
  }
  od::object root;
  if (auto e = doc.get_object().get(root)) {
    st.malformed({}, e, st.doc_location());
    return std::move(st.error);
  }
  body(st, root);
  if (st.failed())
    return std::move(st.error);
  // On-Demand stops after the root object; anything left is an error.
  if (const char* rest = st.doc_location()) {
    st.malformed({}, "unexpected content after the top-level object", rest);
    return std::move(st.error);
  }
  return {};
}

} // namespace agentvisor::json_read
