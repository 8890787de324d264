#pragma once
// A small, strict reader of both exposition formats for the tests: it turns
// an exposition back into samples and metadata, and lists every rule of the
// format the text breaks (OpenMetrics 1.0's ABNF and its MetricFamily,
// Counter, Histogram and Summary rules; the text format 0.0.4's line
// syntax), so a test can compare what the two formats say about one
// registry and fail on any malformed line. Independent of the serializers
// under test: it shares no code with src/metrics.

#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

namespace exposition_test {

struct sample {
  std::string name;
  std::map<std::string, std::string> labels;
  double value = 0;
  std::optional<double> timestamp; ///< as written: ms in text, seconds in OpenMetrics
  std::string raw_value;           ///< the value's text, for format checks
};

struct family {
  std::string type;
  std::string help; ///< unescaped
  std::string unit;
  bool has_help = false;
  bool has_unit = false;
};

struct exposition {
  std::vector<sample> samples;
  std::map<std::string, family> families; ///< by the name in # TYPE
  std::vector<std::string> family_order;
  std::vector<std::string> problems; ///< empty: the text follows the format
  std::size_t eof_lines = 0;
};

inline bool starts_with(std::string_view s, std::string_view p) {
  return s.substr(0, p.size()) == p;
}
inline bool ends_with(std::string_view s, std::string_view p) {
  return s.size() >= p.size() && s.substr(s.size() - p.size()) == p;
}

inline bool is_name_char(char c, bool first, bool colon) {
  bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
  if (alpha || (colon && c == ':'))
    return true;
  return !first && c >= '0' && c <= '9';
}

inline bool valid_name(std::string_view s, bool colon) {
  if (s.empty())
    return false;
  for (std::size_t i = 0; i < s.size(); ++i)
    if (!is_name_char(s[i], i == 0, colon))
      return false;
  return true;
}

/// A number as either format writes it. OpenMetrics: realnumber, or
/// [sign] inf/infinity, or nan, case-insensitive. Text: what Go's
/// ParseFloat reads (the same plus prometheus-cpp's "Nan").
inline std::optional<double> parse_number(std::string_view s) {
  std::string lower;
  for (char c : s)
    lower += static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
  if (lower == "nan")
    return std::numeric_limits<double>::quiet_NaN();
  if (lower == "+inf" || lower == "inf" || lower == "+infinity" || lower == "infinity")
    return std::numeric_limits<double>::infinity();
  if (lower == "-inf" || lower == "-infinity")
    return -std::numeric_limits<double>::infinity();
  // realnumber = [SIGN] digits [. digits] [e [SIGN] digits], at least one digit
  std::size_t i = 0;
  if (i < s.size() && (s[i] == '+' || s[i] == '-'))
    ++i;
  std::size_t digits = 0;
  while (i < s.size() && s[i] >= '0' && s[i] <= '9')
    ++i, ++digits;
  if (i < s.size() && s[i] == '.') {
    ++i;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9')
      ++i, ++digits;
  }
  if (digits == 0)
    return std::nullopt;
  if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
    ++i;
    if (i < s.size() && (s[i] == '+' || s[i] == '-'))
      ++i;
    std::size_t exp_digits = 0;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9')
      ++i, ++exp_digits;
    if (exp_digits == 0)
      return std::nullopt;
  }
  if (i != s.size())
    return std::nullopt;
  std::string copy(s[0] == '+' ? s.substr(1) : s);
  return std::strtod(copy.c_str(), nullptr);
}

/// Parses `{name="value",...}` at `s` (which starts with '{'), unescaping
/// values. OpenMetrics allows \\, \" and \n only as escapes here (a lone
/// backslash before anything else SHOULD NOT appear; the serializer under
/// test must not write one); the text format the same three.
inline bool parse_labels(std::string_view& s, std::map<std::string, std::string>& out,
                         std::string& problem) {
  s.remove_prefix(1);
  if (!s.empty() && s[0] == '}') {
    s.remove_prefix(1);
    return true;
  }
  for (;;) {
    auto eq = s.find('=');
    if (eq == std::string_view::npos) {
      problem = "label without '='";
      return false;
    }
    std::string name(s.substr(0, eq));
    if (!valid_name(name, false)) {
      problem = "bad label name '" + name + "'";
      return false;
    }
    s.remove_prefix(eq + 1);
    if (s.empty() || s[0] != '"') {
      problem = "label value of " + name + " not quoted";
      return false;
    }
    s.remove_prefix(1);
    std::string value;
    for (;;) {
      if (s.empty()) {
        problem = "unterminated label value of " + name;
        return false;
      }
      char c = s[0];
      s.remove_prefix(1);
      if (c == '"')
        break;
      if (c == '\n') {
        problem = "raw line feed in label value of " + name;
        return false;
      }
      if (c == '\\') {
        if (s.empty()) {
          problem = "backslash at end of label value";
          return false;
        }
        char e = s[0];
        s.remove_prefix(1);
        if (e == 'n')
          value += '\n';
        else if (e == '"' || e == '\\')
          value += e;
        else {
          problem = std::string("undefined escape \\") + e + " in label value of " + name;
          return false;
        }
        continue;
      }
      value += c;
    }
    if (out.count(name)) {
      problem = "label " + name + " twice";
      return false;
    }
    out[name] = value;
    if (!s.empty() && s[0] == ',') {
      s.remove_prefix(1);
      if (!s.empty() && s[0] == '}') { // a trailing comma: the text format allows it
        s.remove_prefix(1);
        return true;
      }
      continue;
    }
    if (!s.empty() && s[0] == '}') {
      s.remove_prefix(1);
      return true;
    }
    problem = "expected ',' or '}' after label " + name;
    return false;
  }
}

/// HELP text unescaped. OpenMetrics: \\, \" and \n; text 0.0.4: \\ and \n
/// (a `"` is plain text there, and `\"` would read as two characters).
inline std::optional<std::string> unescape_help(std::string_view s, bool openmetrics) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (openmetrics && c == '"')
      return std::nullopt; // OpenMetrics' escaped-string has no raw dquote
    if (c != '\\') {
      out += c;
      continue;
    }
    if (i + 1 == s.size())
      return std::nullopt;
    char e = s[++i];
    if (e == 'n')
      out += '\n';
    else if (e == '\\')
      out += '\\';
    else if (openmetrics && e == '"')
      out += '"';
    else
      return std::nullopt;
  }
  return out;
}

/// The sample-name suffixes a family of `type` may use (OpenMetrics).
inline std::vector<std::string_view> om_suffixes(std::string_view type) {
  if (type == "counter")
    return {"_total", "_created"};
  if (type == "histogram")
    return {"_bucket", "_count", "_sum", "_created"};
  if (type == "summary")
    return {"", "_count", "_sum", "_created"};
  return {""};
}

/// Reads `text` in one format. With `openmetrics`, also checks the
/// family-level rules (metadata order and uniqueness, no interleaving,
/// suffixes, UNIT a suffix of the name, histogram buckets, the one # EOF at
/// the end).
inline exposition parse(std::string_view text, bool openmetrics) {
  exposition out;
  auto problem = [&](std::size_t line_no, std::string what) {
    out.problems.push_back("line " + std::to_string(line_no) + ": " + std::move(what));
  };
  if (!text.empty() && text.back() != '\n')
    out.problems.push_back("the exposition does not end with a line feed");
  if (text.find('\r') != std::string_view::npos)
    out.problems.push_back("carriage return in the exposition");

  std::string current;              // OpenMetrics: the family being read
  std::set<std::string> finished;   // families seen before `current`
  std::set<std::string> seen_meta;  // metadata kinds given for `current`
  bool samples_started = false;     // in `current`
  std::string last_series;          // name+labels of the last series (no interleaving)
  std::set<std::string> finished_series;
  // Histogram bookkeeping per series (labels without le).
  std::map<std::string, std::pair<double, double>> last_bucket; // series -> (le, count)
  std::map<std::string, double> inf_bucket, count_of;

  std::size_t line_no = 0;
  bool after_eof = false;
  while (!text.empty()) {
    ++line_no;
    auto end = text.find('\n');
    std::string_view line = text.substr(0, end);
    text.remove_prefix(end == std::string_view::npos ? text.size() : end + 1);
    if (after_eof) {
      problem(line_no, "content after # EOF");
      break;
    }
    if (line.empty()) {
      if (openmetrics)
        problem(line_no, "empty line");
      continue;
    }
    if (line[0] == '#') {
      if (line == "# EOF") {
        ++out.eof_lines;
        if (!openmetrics)
          problem(line_no, "# EOF in the text format");
        after_eof = true;
        continue;
      }
      std::string_view rest = line;
      std::string kind;
      if (starts_with(rest, "# TYPE "))
        kind = "TYPE";
      else if (starts_with(rest, "# HELP "))
        kind = "HELP";
      else if (starts_with(rest, "# UNIT ") && openmetrics)
        kind = "UNIT";
      else {
        if (openmetrics)
          problem(line_no, "a comment that is not TYPE, UNIT, HELP or EOF");
        continue;
      }
      rest.remove_prefix(7);
      auto sp = rest.find(' ');
      std::string name(rest.substr(0, sp));
      std::string_view arg = sp == std::string_view::npos ? std::string_view{} : rest.substr(sp + 1);
      if (!valid_name(name, true))
        problem(line_no, "bad metric name '" + name + "' in # " + kind);
      if (openmetrics) {
        if (name != current) {
          if (finished.count(name))
            problem(line_no, "family " + name + " interleaved");
          if (!current.empty())
            finished.insert(current);
          current = name;
          seen_meta.clear();
          samples_started = false;
        }
        if (samples_started)
          problem(line_no, "# " + kind + " after samples of " + name);
        if (seen_meta.count(kind))
          problem(line_no, "second # " + kind + " for " + name);
        if ((kind == "TYPE" && !seen_meta.empty())
            || (kind == "UNIT" && seen_meta.count("HELP")))
          problem(line_no, "metadata of " + name + " not in the order TYPE, UNIT, HELP");
        seen_meta.insert(kind);
      }
      auto& fam = out.families[name];
      if (kind == "TYPE") {
        static const std::set<std::string> om_types{"counter", "gauge", "histogram", "gaugehistogram",
                                                    "stateset", "info", "summary", "unknown"};
        static const std::set<std::string> text_types{"counter", "gauge", "histogram", "summary",
                                                      "untyped"};
        std::string t(arg);
        if (!(openmetrics ? om_types : text_types).count(t))
          problem(line_no, "unknown type '" + t + "'");
        fam.type = t;
        out.family_order.push_back(name);
      } else if (kind == "HELP") {
        auto h = unescape_help(arg, openmetrics);
        if (!h)
          problem(line_no, "badly escaped HELP of " + name);
        fam.help = h.value_or("");
        fam.has_help = true;
      } else {
        fam.unit = std::string(arg);
        fam.has_unit = true;
        if (!ends_with(name, "_" + fam.unit))
          problem(line_no, "unit " + fam.unit + " is not a suffix of " + name);
      }
      continue;
    }

    // A sample: name [labels] SP value [SP timestamp]
    sample s;
    std::size_t i = 0;
    while (i < line.size() && is_name_char(line[i], i == 0, true))
      ++i;
    s.name = std::string(line.substr(0, i));
    if (s.name.empty()) {
      problem(line_no, "a line that is neither metadata nor a sample");
      continue;
    }
    std::string_view rest = line.substr(i);
    if (!rest.empty() && rest[0] == '{') {
      std::string why;
      if (!parse_labels(rest, s.labels, why)) {
        problem(line_no, why);
        continue;
      }
    }
    if (rest.empty() || rest[0] != ' ') {
      problem(line_no, "no space before the value");
      continue;
    }
    rest.remove_prefix(1);
    auto sp = rest.find(' ');
    s.raw_value = std::string(rest.substr(0, sp));
    auto v = parse_number(s.raw_value);
    if (!v) {
      problem(line_no, "bad value '" + s.raw_value + "'");
      continue;
    }
    s.value = *v;
    if (sp != std::string_view::npos) {
      auto ts = parse_number(rest.substr(sp + 1));
      if (!ts || std::isnan(*ts) || std::isinf(*ts))
        problem(line_no, "bad timestamp");
      else
        s.timestamp = *ts;
    }

    if (openmetrics) {
      // The sample must belong to the current family, with a suffix its
      // type allows.
      const auto& fam = out.families[current];
      bool belongs = false;
      std::string_view suffix;
      for (auto sfx : om_suffixes(fam.type.empty() ? "unknown" : fam.type)) {
        if (s.name == current + std::string(sfx)) {
          belongs = true;
          suffix = sfx;
        }
      }
      if (current.empty() || !belongs)
        problem(line_no, "sample " + s.name + " outside its family (current: " + current + ")");
      samples_started = true;
      auto series_labels = s.labels;
      series_labels.erase("le");
      if (fam.type == "summary")
        series_labels.erase("quantile");
      std::string series = current + "{";
      for (const auto& [k, val] : series_labels)
        series += k + "=" + val + ",";
      if (series != last_series) {
        if (finished_series.count(series))
          problem(line_no, "series " + series + " interleaved");
        if (!last_series.empty())
          finished_series.insert(last_series);
        last_series = series;
      }
      if (fam.type == "counter" && suffix == "_total" && (std::isnan(s.value) || s.value < 0))
        problem(line_no, "counter total negative or NaN");
      if (fam.type == "histogram" && suffix == "_bucket") {
        auto le = s.labels.find("le");
        if (le == s.labels.end()) {
          problem(line_no, "bucket without le");
        } else {
          auto bound = parse_number(le->second);
          if (!bound)
            problem(line_no, "le '" + le->second + "' is not a number");
          else {
            auto prev = last_bucket.find(series);
            if (prev != last_bucket.end()
                && (*bound <= prev->second.first || s.value < prev->second.second))
              problem(line_no, "buckets not increasing");
            last_bucket[series] = {*bound, s.value};
            if (std::isinf(*bound) && *bound > 0)
              inf_bucket[series] = s.value;
          }
        }
      }
      if (fam.type == "histogram" && suffix == "_count")
        count_of[series] = s.value;
    }
    out.samples.push_back(std::move(s));
  }
  if (openmetrics) {
    if (out.eof_lines != 1)
      out.problems.push_back("# EOF " + std::to_string(out.eof_lines) + " times, not once");
    if (!after_eof)
      out.problems.push_back("the exposition does not end with # EOF");
    for (const auto& [series, last] : last_bucket)
      if (!inf_bucket.count(series))
        out.problems.push_back("histogram series " + series + " has no le=\"+Inf\" bucket");
    for (const auto& [series, count] : count_of)
      if (inf_bucket.count(series) && inf_bucket[series] != count)
        out.problems.push_back("histogram series " + series + ": _count differs from +Inf bucket");
  }
  return out;
}

/// A sample's identity across formats: its name and labels, with "le" and
/// "quantile" read as numbers (the formats spell them differently: "1" and
/// "1.0").
inline std::string key_of(const sample& s) {
  std::string k = s.name + "{";
  for (const auto& [name, value] : s.labels) {
    k += name + "=";
    if (name == "le" || name == "quantile") {
      auto v = parse_number(value);
      char buf[40];
      std::snprintf(buf, sizeof buf, "%.17g", v ? *v : -12345.678);
      k += buf;
    } else {
      k += "\"" + value + "\"";
    }
    k += ",";
  }
  return k + "}";
}

/// Equal as numbers, allowing for prometheus-cpp's text format writing 16
/// significant digits where OpenMetrics writes the exact shortest form.
inline bool same_number(double a, double b) {
  if (std::isnan(a) || std::isnan(b))
    return std::isnan(a) && std::isnan(b);
  if (std::isinf(a) || std::isinf(b))
    return a == b;
  return std::fabs(a - b) <= 2e-15 * std::max(std::fabs(a), std::fabs(b));
}

} // namespace exposition_test
