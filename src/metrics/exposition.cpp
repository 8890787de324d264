// Exposition formats: content negotiation, the text format 0.0.4 through
// prometheus-cpp's TextSerializer, and our OpenMetrics 1.0 text serializer
// over the same collected MetricFamily data. prometheus-cpp 1.0.1 writes the
// text format only; the OpenMetrics rules followed here are the 1.0 spec's
// (OpenObservability/OpenMetrics, specification/OpenMetrics.md).
#include "agentvisor/metrics.hpp"

#include <prometheus/text_serializer.h>

#include <array>
#include <charconv>
#include <cmath>
#include <limits>
#include <system_error>

namespace agentvisor::metrics {

namespace {

// --- Accept header ------------------------------------------------------------------

bool iequals(std::string_view a, std::string_view b) noexcept {
  if (a.size() != b.size())
    return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    auto lower = [](char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; };
    if (lower(a[i]) != lower(b[i]))
      return false;
  }
  return true;
}

std::string_view trim_ows(std::string_view s) noexcept {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t'))
    s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t'))
    s.remove_suffix(1);
  return s;
}

/// The part of `s` before `sep`; `s` keeps what follows it (empty at the end).
std::string_view next_token(std::string_view& s, char sep) noexcept {
  auto pos = s.find(sep);
  auto head = s.substr(0, pos);
  s = pos == std::string_view::npos ? std::string_view{} : s.substr(pos + 1);
  return head;
}

/// An HTTP qvalue (RFC 9110 12.4.2): "0", "0.5", "1.000". Anything else is
/// malformed, and a media range with a malformed q is not acceptable, so it
/// counts as q=0.
double parse_q(std::string_view v) noexcept {
  if (v.empty() || (v[0] != '0' && v[0] != '1'))
    return 0;
  double q = 0;
  auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), q);
  if (ec != std::errc{} || end != v.data() + v.size() || q < 0 || q > 1)
    return 0;
  return q;
}

/// The best q an Accept header gives one of our two formats, and where in the
/// header that q first appeared (ties go to the range listed first, as in
/// the Go client's negotiation).
struct preference {
  double q = 0;
  std::size_t position = std::numeric_limits<std::size_t>::max();

  void offer(double candidate, std::size_t at) noexcept {
    if (candidate > q) {
      q = candidate;
      position = at;
    }
  }
};

// --- Numbers ------------------------------------------------------------------------

void append_chars(std::string& out, const char* first, const char* last) {
  out.append(first, static_cast<std::size_t>(last - first));
}

/// NaN and the infinities as both formats' parsers read them; `true` if `v`
/// was one of them.
bool append_special(std::string& out, double v) {
  if (std::isnan(v)) {
    out += "NaN";
    return true;
  }
  if (std::isinf(v)) {
    out += v > 0 ? "+Inf" : "-Inf";
    return true;
  }
  return false;
}

/// A sample value: the shortest text that reads back as the same double.
void append_value(std::string& out, double v) {
  if (append_special(out, v))
    return;
  std::array<char, 32> buf; // the shortest form of a double is at most 24 chars
  auto r = std::to_chars(buf.data(), buf.data() + buf.size(), v);
  append_chars(out, buf.data(), r.ptr);
}

void append_uint(std::string& out, uint64_t v) {
  std::array<char, 24> buf;
  auto r = std::to_chars(buf.data(), buf.data() + buf.size(), v);
  append_chars(out, buf.data(), r.ptr);
}

/// The canonical rendering of "le" and "quantile" label values: Go's %g of a
/// float64 (shortest digits; exponent form when the exponent is below -4 or
/// at least 6, written with two digits at least) with ".0" appended when
/// there is neither a point nor an exponent, so 1 -> "1.0", 1e-05 -> "1e-05",
/// 0.0001 -> "0.0001", 100000 -> "100000.0", 1e+06 -> "1e+06", as the spec's
/// "Canonical Numbers" lists.
void append_canonical(std::string& out, double v) {
  if (append_special(out, v))
    return;
  std::array<char, 32> buf;
  auto sci = std::to_chars(buf.data(), buf.data() + buf.size(), v, std::chars_format::scientific);
  std::string_view s(buf.data(), static_cast<std::size_t>(sci.ptr - buf.data()));
  // to_chars' scientific form is d[.ddd]e(+|-)dd[d], the exponent form %g uses.
  auto e = s.find('e');
  int exponent = 0;
  std::from_chars(s.data() + e + 2, s.data() + s.size(), exponent);
  if (s[e + 1] == '-')
    exponent = -exponent;
  if (exponent < -4 || exponent >= 6) {
    out += s;
    return;
  }
  auto fixed = std::to_chars(buf.data(), buf.data() + buf.size(), v, std::chars_format::fixed);
  std::string_view f(buf.data(), static_cast<std::size_t>(fixed.ptr - buf.data()));
  out += f;
  if (f.find('.') == std::string_view::npos)
    out += ".0";
}

/// A timestamp in seconds, from prometheus-cpp's milliseconds, written as
/// an exact decimal ("1520879607.789") rather than through a double.
void append_timestamp(std::string& out, int64_t ms) {
  uint64_t magnitude = ms < 0 ? uint64_t{0} - static_cast<uint64_t>(ms) : static_cast<uint64_t>(ms);
  if (ms < 0)
    out += '-';
  append_uint(out, magnitude / 1000);
  auto frac = static_cast<unsigned>(magnitude % 1000);
  if (frac == 0)
    return;
  char digits[3] = {static_cast<char>('0' + frac / 100), static_cast<char>('0' + frac / 10 % 10),
                    static_cast<char>('0' + frac % 10)};
  std::size_t n = digits[2] != '0' ? 3 : digits[1] != '0' ? 2 : 1;
  out += '.';
  out.append(digits, n);
}

// --- Strings ------------------------------------------------------------------------

/// OpenMetrics' escaped-string, used for label values and HELP alike:
/// backslash, double quote and line feed take a backslash.
void append_escaped(std::string& out, std::string_view s) {
  for (;;) {
    auto pos = s.find_first_of("\\\"\n");
    if (pos == std::string_view::npos) {
      out += s;
      return;
    }
    out += s.substr(0, pos);
    out += '\\';
    out += s[pos] == '\n' ? 'n' : s[pos];
    s.remove_prefix(pos + 1);
  }
}

bool ends_with(std::string_view s, std::string_view suffix) noexcept {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

/// The base unit a family's name ends in (Prometheus' naming guide: base
/// units, plural), or empty. OpenMetrics wants `_<unit>` as the name's
/// suffix, so only a whole word after an underscore counts.
std::string_view unit_of(std::string_view family_name) noexcept {
  static constexpr std::array<std::string_view, 9> units{
    "seconds", "bytes", "joules", "grams", "meters", "ratio", "volts", "amperes", "celsius"};
  for (auto u : units) {
    if (family_name.size() > u.size() + 1 && ends_with(family_name, u)
        && family_name[family_name.size() - u.size() - 1] == '_')
      return u;
  }
  return {};
}

// --- OpenMetrics samples ----------------------------------------------------------

/// Writes "name<suffix>{labels[,extra]} " and leaves the value to the caller.
/// `extra_value` is a canonical number or "+Inf": it needs no escaping.
void append_head(std::string& out, std::string_view name, std::string_view suffix,
                 const prometheus::ClientMetric& m, std::string_view extra_name = {},
                 std::string_view extra_value = {}) {
  out += name;
  out += suffix;
  if (!m.label.empty() || !extra_name.empty()) {
    out += '{';
    bool first = true;
    for (const auto& l : m.label) {
      if (!first)
        out += ',';
      first = false;
      out += l.name;
      out += "=\"";
      append_escaped(out, l.value);
      out += '"';
    }
    if (!extra_name.empty()) {
      if (!first)
        out += ',';
      out += extra_name;
      out += "=\"";
      out += extra_value;
      out += '"';
    }
    out += '}';
  }
  out += ' ';
}

void append_tail(std::string& out, const prometheus::ClientMetric& m) {
  // prometheus-cpp's convention, which its TextSerializer follows too: 0 is
  // "no timestamp".
  if (m.timestamp_ms != 0) {
    out += ' ';
    append_timestamp(out, m.timestamp_ms);
  }
  out += '\n';
}

void append_histogram(std::string& out, std::string_view name, const prometheus::ClientMetric& m) {
  const auto& h = m.histogram;
  std::string le; // reused: one canonical bound at a time
  bool has_inf = false;
  for (const auto& b : h.bucket) {
    le.clear();
    append_canonical(le, b.upper_bound);
    has_inf = std::isinf(b.upper_bound) && b.upper_bound > 0;
    append_head(out, name, "_bucket", m, "le", le);
    append_uint(out, b.cumulative_count);
    append_tail(out, m);
  }
  if (!has_inf) {
    append_head(out, name, "_bucket", m, "le", "+Inf");
    append_uint(out, h.sample_count);
    append_tail(out, m);
  }
  // The spec: with a negative bucket bound the sum is no longer a counter and
  // MUST NOT be exposed; _count comes if and only if _sum does.
  if (!h.bucket.empty() && h.bucket.front().upper_bound < 0)
    return;
  append_head(out, name, "_count", m);
  append_uint(out, h.sample_count);
  append_tail(out, m);
  append_head(out, name, "_sum", m);
  append_value(out, h.sample_sum);
  append_tail(out, m);
}

void append_summary(std::string& out, std::string_view name, const prometheus::ClientMetric& m) {
  const auto& s = m.summary;
  std::string q;
  for (const auto& x : s.quantile) {
    q.clear();
    append_canonical(q, x.quantile);
    append_head(out, name, "", m, "quantile", q);
    append_value(out, x.value);
    append_tail(out, m);
  }
  append_head(out, name, "_count", m);
  append_uint(out, s.sample_count);
  append_tail(out, m);
  append_head(out, name, "_sum", m);
  append_value(out, s.sample_sum);
  append_tail(out, m);
}

void append_family(std::string& out, const prometheus::MetricFamily& f) {
  using prometheus::MetricType;
  std::string_view name = f.name;
  // A counter's family is named without _total; its samples carry it.
  if (f.type == MetricType::Counter && ends_with(name, "_total"))
    name.remove_suffix(6);
  std::string_view type = "unknown";
  switch (f.type) {
  case MetricType::Counter: type = "counter"; break;
  case MetricType::Gauge: type = "gauge"; break;
  case MetricType::Summary: type = "summary"; break;
  case MetricType::Histogram: type = "histogram"; break;
  case MetricType::Untyped: type = "unknown"; break;
  }
  // Metadata in the order the spec recommends: TYPE, UNIT, HELP.
  out += "# TYPE ";
  out += name;
  out += ' ';
  out += type;
  out += '\n';
  if (auto unit = unit_of(name); !unit.empty()) {
    out += "# UNIT ";
    out += name;
    out += ' ';
    out += unit;
    out += '\n';
  }
  // An empty HELP means no HELP, so it is left out as TextSerializer does.
  if (!f.help.empty()) {
    out += "# HELP ";
    out += name;
    out += ' ';
    append_escaped(out, f.help);
    out += '\n';
  }
  for (const auto& m : f.metric) {
    switch (f.type) {
    case MetricType::Counter:
      append_head(out, name, "_total", m);
      append_value(out, m.counter.value);
      append_tail(out, m);
      break;
    case MetricType::Gauge:
      append_head(out, name, "", m);
      append_value(out, m.gauge.value);
      append_tail(out, m);
      break;
    case MetricType::Untyped:
      append_head(out, name, "", m);
      append_value(out, m.untyped.value);
      append_tail(out, m);
      break;
    case MetricType::Histogram: append_histogram(out, name, m); break;
    case MetricType::Summary: append_summary(out, name, m); break;
    }
  }
}

/// The text format 0.0.4 escapes backslash and line feed in HELP, which
/// prometheus-cpp 1.0.1's TextSerializer does not do: a help text with a
/// line feed would end the comment line early.
bool help_needs_escape(const prometheus::MetricFamily& f) noexcept {
  return f.help.find_first_of("\\\n") != std::string::npos;
}

std::string escape_text_help(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 8);
  for (char c : s) {
    if (c == '\\')
      out += "\\\\";
    else if (c == '\n')
      out += "\\n";
    else
      out += c;
  }
  return out;
}

} // namespace

format negotiate(std::string_view accept) noexcept {
  preference om, text;
  std::size_t position = 0;
  while (!accept.empty()) {
    auto range = next_token(accept, ',');
    auto type = trim_ows(next_token(range, ';'));
    double q = 1;
    std::string_view version;
    while (!range.empty()) {
      auto param = next_token(range, ';');
      auto key = trim_ows(next_token(param, '='));
      auto value = trim_ows(param);
      if (value.size() >= 2 && value.front() == '"' && value.back() == '"')
        value = value.substr(1, value.size() - 2);
      if (iequals(key, "q"))
        q = parse_q(value);
      else if (iequals(key, "version"))
        version = value;
    }
    // Only the versions we write count: OpenMetrics 1.0.0 (0.0.1 is its
    // pre-release name, which Prometheus still lists) and text 0.0.4.
    // Wildcards say nothing about which one the scraper prefers.
    if (iequals(type, "application/openmetrics-text")
        && (version.empty() || version == "1.0.0" || version == "0.0.1"))
      om.offer(q, position);
    else if (iequals(type, "text/plain") && (version.empty() || version == "0.0.4"))
      text.offer(q, position);
    ++position;
  }
  if (om.q <= 0)
    return format::text;
  if (om.q > text.q || (om.q == text.q && om.position < text.position))
    return format::openmetrics;
  return format::text;
}

std::string_view content_type(format f) noexcept {
  return f == format::openmetrics ? "application/openmetrics-text; version=1.0.0; charset=utf-8"
                                  : "text/plain; version=0.0.4; charset=utf-8";
}

std::string text_serialize(const std::vector<prometheus::MetricFamily>& families) {
  prometheus::TextSerializer serializer;
  bool escape = false;
  for (const auto& f : families)
    escape = escape || help_needs_escape(f);
  if (!escape)
    return serializer.Serialize(families);
  // Rare (our own help texts have neither): copy, with the help escaped.
  auto copy = families;
  for (auto& f : copy)
    if (help_needs_escape(f))
      f.help = escape_text_help(f.help);
  return serializer.Serialize(copy);
}

std::string openmetrics_serialize(const std::vector<prometheus::MetricFamily>& families) {
  std::string out;
  // About one line of 60 bytes per series, histograms many more: a start
  // that saves the first few doublings.
  std::size_t series = 0;
  for (const auto& f : families)
    series += f.metric.size();
  out.reserve(64 * series + 64 * families.size() + 16);
  for (const auto& f : families)
    append_family(out, f);
  out += "# EOF\n";
  return out;
}

std::string serialize(const std::vector<prometheus::MetricFamily>& families, format f) {
  return f == format::openmetrics ? openmetrics_serialize(families) : text_serialize(families);
}

} // namespace agentvisor::metrics
