// The exposition formats: content negotiation on real Accept headers, the
// OpenMetrics 1.0 serializer's edge cases line by line, and both formats of
// one registry read back by the independent reader of exposition_parse.hpp
// and compared sample by sample.

#include "exposition_parse.hpp"

#include "agentvisor/metrics.hpp"

#include <doctest/doctest.h>

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/summary.h>

#include <charconv>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

namespace am = agentvisor::metrics;
namespace et = exposition_test;
using prometheus::MetricFamily;
using prometheus::MetricType;

namespace {

constexpr double inf = std::numeric_limits<double>::infinity();
constexpr double nan = std::numeric_limits<double>::quiet_NaN();

std::size_t count_of(std::string_view hay, std::string_view needle) {
  std::size_t n = 0;
  for (auto pos = hay.find(needle); pos != std::string_view::npos; pos = hay.find(needle, pos + 1))
    ++n;
  return n;
}

bool has_line(std::string_view text, std::string_view line) {
  std::string l = "\n" + std::string(line) + "\n";
  return ("\n" + std::string(text)).find(l) != std::string::npos;
}

std::string joined(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v)
    out += s + "\n";
  return out;
}

/// A registry with every edge the issue names, plus families prometheus-cpp
/// cannot build (untyped, timestamps) added by hand as collected data.
struct edge_registry {
  prometheus::Registry registry;

  edge_registry() {
    auto& requests = prometheus::BuildCounter()
                       .Name("edge_requests_total")
                       .Help("Requests with \"quotes\", a back\\slash and a\nline feed.")
                       .Register(registry);
    requests.Add({{"path", "/a\"b"}, {"dir", "C:\\x\\"}, {"text", "line1\nline2"}}).Increment(3);
    requests.Add({{"empty", ""}}).Increment(1e20);
    requests.Add({});
    // A counter named without _total: OpenMetrics adds it to the sample.
    prometheus::BuildCounter().Name("edge_plain").Help("No suffix.").Register(registry).Add({}).Increment(
      2.5);

    auto& temp = prometheus::BuildGauge()
                   .Name("edge_temperature_celsius")
                   .Help("Odd values.")
                   .Register(registry);
    temp.Add({{"v", "nan"}}).Set(nan);
    temp.Add({{"v", "inf"}}).Set(inf);
    temp.Add({{"v", "-inf"}}).Set(-inf);
    temp.Add({{"v", "sum"}}).Set(0.1 + 0.2);
    temp.Add({{"v", "tiny"}}).Set(1e-300);
    temp.Add({{"v", "big"}}).Set(123456789012345678.0);
    temp.Add({{"v", "negative"}}).Set(-42.5);

    prometheus::Labels many;
    for (int i = 0; i < 40; ++i)
      many["label_" + std::to_string(i)] = "value \"" + std::to_string(i) + "\"\\";
    prometheus::BuildGauge().Name("edge_many_labels").Help("Forty labels.").Register(registry).Add(many).Set(
      1);

    // No help: neither format writes a HELP line.
    prometheus::BuildGauge().Name("edge_no_help").Register(registry).Add({}).Set(7);

    auto& latency = prometheus::BuildHistogram()
                      .Name("edge_latency_seconds")
                      .Help("Latency with \\ and \"quotes\".")
                      .Register(registry);
    auto& h = latency.Add({{"route", "/x"}},
                          prometheus::Histogram::BucketBoundaries{0.00001, 0.0001, 0.001, 0.5, 1, 10,
                                                                  100000, 1e6});
    for (double v : {0.000005, 0.0005, 0.7, 0.7, 3.0, 5e6})
      h.Observe(v);
    latency.Add({}, prometheus::Histogram::BucketBoundaries{1, 2}); // no observations

    auto& size = prometheus::BuildSummary().Name("edge_size_bytes").Help("Sizes.").Register(registry);
    auto& s = size.Add({{"kind", "file"}}, prometheus::Summary::Quantiles{{0.5, 0.05}, {0.9, 0.01}, {0.99, 0.001}});
    for (int i = 1; i <= 100; ++i)
      s.Observe(i);
  }

  std::vector<MetricFamily> families() const {
    auto out = registry.Collect();
    MetricFamily legacy{"edge_legacy", "An untyped family with timestamps.", MetricType::Untyped, {}};
    prometheus::ClientMetric a;
    a.untyped.value = 42;
    a.timestamp_ms = 1520879607789;
    a.label = {{"at", "ms"}};
    prometheus::ClientMetric b;
    b.untyped.value = -1;
    b.timestamp_ms = 1520879607000;
    b.label = {{"at", "whole"}};
    legacy.metric = {a, b};
    out.push_back(legacy);
    MetricFamily stamped{"edge_stamped_total", "A counter with a timestamp.", MetricType::Counter, {}};
    prometheus::ClientMetric c;
    c.counter.value = 5;
    c.timestamp_ms = 1520879607120;
    stamped.metric = {c};
    out.push_back(stamped);
    // A family with no series (prometheus-cpp's Collect leaves those out,
    // but collected data from elsewhere may have one).
    out.push_back(MetricFamily{"edge_empty_family", "Nothing yet.", MetricType::Gauge, {}});
    return out;
  }
};

/// Reads both formats of `families` back and checks they say the same: the
/// same families, types and help, the same samples with the same values and
/// timestamps. Returns the OpenMetrics reading for further checks.
et::exposition check_formats_agree(const std::vector<MetricFamily>& families) {
  auto text = am::text_serialize(families);
  auto om = am::openmetrics_serialize(families);
  auto t = et::parse(text, false);
  auto o = et::parse(om, true);
  INFO("text format:\n" << text);
  INFO("OpenMetrics:\n" << om);
  CHECK_MESSAGE(t.problems.empty(), joined(t.problems));
  CHECK_MESSAGE(o.problems.empty(), joined(o.problems));

  // Families: the counter's OpenMetrics name drops _total; untyped is unknown.
  std::set<std::string> counters_without_total;
  for (const auto& f : families) {
    auto om_name = f.name;
    if (f.type == MetricType::Counter && et::ends_with(om_name, "_total"))
      om_name.resize(om_name.size() - 6);
    if (f.type == MetricType::Counter && !et::ends_with(f.name, "_total"))
      counters_without_total.insert(f.name);
    INFO("family " << f.name);
    REQUIRE(t.families.count(f.name) == 1);
    REQUIRE(o.families.count(om_name) == 1);
    const auto& tf = t.families.at(f.name);
    const auto& of = o.families.at(om_name);
    CHECK(of.type == (tf.type == "untyped" ? std::string("unknown") : tf.type));
    CHECK(tf.has_help == of.has_help);
    CHECK(tf.help == of.help);
    CHECK(of.help == f.help);
  }
  CHECK(t.families.size() == families.size());
  CHECK(o.families.size() == families.size());

  // Samples: every one in both, once, with the same value and time.
  std::map<std::string, const et::sample*> from_text, from_om;
  for (const auto& s : t.samples) {
    auto copy = s;
    if (counters_without_total.count(copy.name))
      copy.name += "_total";
    auto key = et::key_of(copy);
    CHECK_MESSAGE(from_text.count(key) == 0, "twice in the text format: " << key);
    from_text[key] = &s;
  }
  for (const auto& s : o.samples) {
    auto key = et::key_of(s);
    CHECK_MESSAGE(from_om.count(key) == 0, "twice in OpenMetrics: " << key);
    from_om[key] = &s;
  }
  for (const auto& [key, s] : from_text) {
    INFO("sample " << key);
    auto it = from_om.find(key);
    if (it == from_om.end()) {
      CHECK_MESSAGE(false, "missing from OpenMetrics: " << key);
      continue;
    }
    CHECK_MESSAGE(et::same_number(s->value, it->second->value),
                  s->raw_value << " vs " << it->second->raw_value);
    CHECK(s->timestamp.has_value() == it->second->timestamp.has_value());
    if (s->timestamp && it->second->timestamp)
      CHECK(std::llround(*it->second->timestamp * 1000) == std::llround(*s->timestamp));
  }
  for (const auto& [key, s] : from_om)
    CHECK_MESSAGE(from_text.count(key) == 1, "only in OpenMetrics: " << key);
  return o;
}

} // namespace

// --- negotiation -------------------------------------------------------------------

TEST_CASE("negotiate picks OpenMetrics for the Accept header Prometheus 2.42 sends") {
  CHECK(am::negotiate("application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
                      "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1")
        == am::format::openmetrics);
}

TEST_CASE("negotiate honours q values and the versions it can write") {
  // Prometheus 2.5 to 2.41: OpenMetrics 0.0.1 first.
  CHECK(am::negotiate("application/openmetrics-text; version=0.0.1,text/plain;version=0.0.4;q=0.5,*/*;q=0.1")
        == am::format::openmetrics);
  // Prometheus before 2.5 (protobuf first, which we do not write).
  CHECK(am::negotiate("application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;"
                      "encoding=delimited;q=0.7,text/plain;version=0.0.4;q=0.3,*/*;q=0.1")
        == am::format::text);
  // Text preferred by q, whatever the order.
  CHECK(am::negotiate("application/openmetrics-text;q=0.4, text/plain;q=0.9") == am::format::text);
  CHECK(am::negotiate("text/plain;q=0.2, application/openmetrics-text;q=0.3")
        == am::format::openmetrics);
  // q=0 means "not acceptable", also spelled with decimals and spaces.
  CHECK(am::negotiate("application/openmetrics-text;q=0") == am::format::text);
  CHECK(am::negotiate("application/openmetrics-text ; q=0.000 , */*") == am::format::text);
  // A malformed q makes the range unusable rather than preferred.
  CHECK(am::negotiate("application/openmetrics-text;q=high") == am::format::text);
  CHECK(am::negotiate("application/openmetrics-text;q=1.5") == am::format::text);
  // A version we do not write is not an offer we can take.
  CHECK(am::negotiate("application/openmetrics-text;version=2.0.0") == am::format::text);
  CHECK(am::negotiate("application/openmetrics-text;version=\"1.0.0\"") == am::format::openmetrics);
  // Equal q: the range listed first wins.
  CHECK(am::negotiate("text/plain, application/openmetrics-text") == am::format::text);
  CHECK(am::negotiate("application/openmetrics-text, text/plain") == am::format::openmetrics);
  // Media types are case-insensitive.
  CHECK(am::negotiate("Application/OpenMetrics-Text; Version=1.0.0; Q=0.9") == am::format::openmetrics);
}

TEST_CASE("negotiate falls back to the text format for curl, browsers and no header") {
  CHECK(am::negotiate("") == am::format::text);
  CHECK(am::negotiate("*/*") == am::format::text);
  CHECK(am::negotiate("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8")
        == am::format::text);
  CHECK(am::negotiate("application/*") == am::format::text);
  CHECK(am::negotiate(",,;;=,") == am::format::text);
}

TEST_CASE("content_type names each format with its version and charset") {
  CHECK(am::content_type(am::format::text) == "text/plain; version=0.0.4; charset=utf-8");
  CHECK(am::content_type(am::format::openmetrics)
        == "application/openmetrics-text; version=1.0.0; charset=utf-8");
}

// --- OpenMetrics, line by line ----------------------------------------------------

TEST_CASE("OpenMetrics names counter families without _total and their samples with it") {
  edge_registry r;
  auto om = am::openmetrics_serialize(r.families());
  CHECK(has_line(om, "# TYPE edge_requests counter"));
  CHECK(has_line(om, "edge_requests_total 0"));
  CHECK(has_line(om, "edge_requests_total{empty=\"\"} 1e+20"));
  CHECK(has_line(om, "# TYPE edge_plain counter"));
  CHECK(has_line(om, "edge_plain_total 2.5"));
  CHECK(om.find("# TYPE edge_requests_total") == std::string::npos);
  CHECK(om.find("# HELP edge_requests_total") == std::string::npos);
}

TEST_CASE("OpenMetrics escapes backslash, double quote and line feed in label values and help") {
  edge_registry r;
  auto om = am::openmetrics_serialize(r.families());
  CHECK(has_line(om, R"(# HELP edge_requests Requests with \"quotes\", a back\\slash and a\nline feed.)"));
  CHECK(has_line(om, R"(edge_requests_total{dir="C:\\x\\",path="/a\"b",text="line1\nline2"} 3)"));
  CHECK(has_line(om, R"(# HELP edge_latency_seconds Latency with \\ and \"quotes\".)"));
  // The text format escapes help too, but not its double quotes.
  auto text = am::text_serialize(r.families());
  CHECK(has_line(text, R"(# HELP edge_requests_total Requests with "quotes", a back\\slash and a\nline feed.)"));
  CHECK(has_line(text, R"(edge_requests_total{dir="C:\\x\\",path="/a\"b",text="line1\nline2"} 3)"));
}

TEST_CASE("OpenMetrics writes many labels in one braces pair and no braces for none") {
  edge_registry r;
  auto om = am::openmetrics_serialize(r.families());
  auto o = et::parse(om, true);
  CHECK_MESSAGE(o.problems.empty(), joined(o.problems));
  bool found = false;
  for (const auto& s : o.samples) {
    if (s.name != "edge_many_labels")
      continue;
    found = true;
    CHECK(s.labels.size() == 40);
    CHECK(s.labels.at("label_7") == "value \"7\"\\");
  }
  CHECK(found);
  CHECK(has_line(om, "edge_no_help 7"));
  CHECK(om.find("# HELP edge_no_help") == std::string::npos);
  // A family without series still has its metadata.
  CHECK(has_line(om, "# TYPE edge_empty_family gauge"));
}

TEST_CASE("OpenMetrics histograms: canonical le values up to +Inf, then _count and _sum") {
  edge_registry r;
  auto om = am::openmetrics_serialize(r.families());
  CHECK(has_line(om, "# TYPE edge_latency_seconds histogram"));
  CHECK(has_line(om, "# UNIT edge_latency_seconds seconds"));
  const char* expected = R"(edge_latency_seconds_bucket{route="/x",le="1e-05"} 1
edge_latency_seconds_bucket{route="/x",le="0.0001"} 1
edge_latency_seconds_bucket{route="/x",le="0.001"} 2
edge_latency_seconds_bucket{route="/x",le="0.5"} 2
edge_latency_seconds_bucket{route="/x",le="1.0"} 4
edge_latency_seconds_bucket{route="/x",le="10.0"} 5
edge_latency_seconds_bucket{route="/x",le="100000.0"} 5
edge_latency_seconds_bucket{route="/x",le="1e+06"} 5
edge_latency_seconds_bucket{route="/x",le="+Inf"} 6
edge_latency_seconds_count{route="/x"} 6
)";
  CHECK(om.find(expected) != std::string::npos);
  // The sum as prometheus-cpp adds it up, in the shortest exact form.
  double sum = 0;
  for (double v : {0.000005, 0.0005, 0.7, 0.7, 3.0, 5e6})
    sum += v;
  char buf[32];
  auto end = std::to_chars(buf, buf + sizeof buf, sum).ptr;
  CHECK(has_line(om, "edge_latency_seconds_sum{route=\"/x\"} " + std::string(buf, end)));
  CHECK(has_line(om, R"(edge_latency_seconds_bucket{le="+Inf"} 0)"));
  CHECK(has_line(om, "edge_latency_seconds_count 0"));
  CHECK(has_line(om, "edge_latency_seconds_sum 0"));
}

TEST_CASE("OpenMetrics renders le as the spec's canonical numbers") {
  // The spec's lists under "Considerations: Canonical Numbers".
  const std::vector<std::pair<double, std::string>> canonical{
    {1e-10, "1e-10"}, {1e-09, "1e-09"}, {1e-05, "1e-05"}, {0.0001, "0.0001"}, {0.001, "0.001"},
    {0.002, "0.002"}, {0.01, "0.01"},   {0.1, "0.1"},     {0.9, "0.9"},       {0.95, "0.95"},
    {0.99, "0.99"},   {0.999, "0.999"}, {1.0, "1.0"},     {1.7, "1.7"},       {10.0, "10.0"},
    {100000.0, "100000.0"}, {1e+06, "1e+06"}, {1e+10, "1e+10"}};
  MetricFamily f{"canon_seconds", "", MetricType::Histogram, {}};
  prometheus::ClientMetric m;
  uint64_t n = 0;
  m.histogram.bucket.push_back({n, 0.0});
  for (const auto& [v, s] : canonical)
    m.histogram.bucket.push_back({++n, v});
  m.histogram.bucket.push_back({++n, inf});
  m.histogram.sample_count = n;
  f.metric = {m};
  auto om = am::openmetrics_serialize({f});
  auto o = et::parse(om, true);
  CHECK_MESSAGE(o.problems.empty(), joined(o.problems));
  std::vector<std::string> les;
  for (const auto& s : o.samples)
    if (s.name == "canon_seconds_bucket")
      les.push_back(s.labels.at("le"));
  REQUIRE(les.size() == canonical.size() + 2);
  CHECK(les.front() == "0.0");
  for (std::size_t i = 0; i < canonical.size(); ++i)
    CHECK(les[i + 1] == canonical[i].second);
  CHECK(les.back() == "+Inf");
  // The bucket prometheus-cpp adds for +Inf is not written twice.
  CHECK(count_of(om, "le=\"+Inf\"") == 1);
}

TEST_CASE("OpenMetrics summaries: canonical quantiles, _count and _sum") {
  edge_registry r;
  auto om = am::openmetrics_serialize(r.families());
  CHECK(has_line(om, "# TYPE edge_size_bytes summary"));
  CHECK(has_line(om, "# UNIT edge_size_bytes bytes"));
  CHECK(om.find("edge_size_bytes{kind=\"file\",quantile=\"0.5\"} ") != std::string::npos);
  CHECK(om.find("edge_size_bytes{kind=\"file\",quantile=\"0.99\"} ") != std::string::npos);
  CHECK(has_line(om, "edge_size_bytes_count{kind=\"file\"} 100"));
  CHECK(has_line(om, "edge_size_bytes_sum{kind=\"file\"} 5050"));
}

TEST_CASE("OpenMetrics gauges, NaN and infinities, shortest round-trip numbers") {
  edge_registry r;
  auto om = am::openmetrics_serialize(r.families());
  CHECK(has_line(om, "# TYPE edge_temperature_celsius gauge"));
  CHECK(has_line(om, "# UNIT edge_temperature_celsius celsius"));
  CHECK(has_line(om, "edge_temperature_celsius{v=\"nan\"} NaN"));
  CHECK(has_line(om, "edge_temperature_celsius{v=\"inf\"} +Inf"));
  CHECK(has_line(om, "edge_temperature_celsius{v=\"-inf\"} -Inf"));
  // Exact: prometheus-cpp's text format writes 16 digits (0.3 here).
  CHECK(has_line(om, "edge_temperature_celsius{v=\"sum\"} 0.30000000000000004"));
  CHECK(has_line(om, "edge_temperature_celsius{v=\"tiny\"} 1e-300"));
  CHECK(has_line(om, "edge_temperature_celsius{v=\"big\"} 123456789012345680"));
  CHECK(has_line(om, "edge_temperature_celsius{v=\"negative\"} -42.5"));
  auto o = et::parse(om, true);
  for (const auto& s : o.samples)
    if (s.name == "edge_temperature_celsius" && s.labels.at("v") == "sum")
      CHECK(s.value == 0.1 + 0.2);
}

TEST_CASE("OpenMetrics: unit only for a whole base-unit word at the end of the name") {
  std::vector<MetricFamily> fs{
    {"a_seconds_total", "", MetricType::Counter, {prometheus::ClientMetric{}}},
    {"b_milliseconds", "", MetricType::Gauge, {prometheus::ClientMetric{}}},
    {"bytes", "", MetricType::Gauge, {prometheus::ClientMetric{}}},
    {"c_bytes_per_second", "", MetricType::Gauge, {prometheus::ClientMetric{}}},
    {"d_ratio", "", MetricType::Gauge, {prometheus::ClientMetric{}}},
  };
  auto om = am::openmetrics_serialize(fs);
  CHECK(has_line(om, "# UNIT a_seconds seconds"));
  CHECK(has_line(om, "a_seconds_total 0"));
  CHECK(om.find("# UNIT b_milliseconds") == std::string::npos);
  CHECK(om.find("# UNIT bytes") == std::string::npos);
  CHECK(om.find("# UNIT c_bytes_per_second") == std::string::npos);
  CHECK(has_line(om, "# UNIT d_ratio ratio"));
  CHECK(et::parse(om, true).problems.empty());
}

TEST_CASE("OpenMetrics untyped is unknown, and timestamps are seconds") {
  edge_registry r;
  auto om = am::openmetrics_serialize(r.families());
  CHECK(has_line(om, "# TYPE edge_legacy unknown"));
  CHECK(has_line(om, "edge_legacy{at=\"ms\"} 42 1520879607.789"));
  CHECK(has_line(om, "edge_legacy{at=\"whole\"} -1 1520879607"));
  CHECK(has_line(om, "edge_stamped_total 5 1520879607.12"));
  // The text format keeps milliseconds.
  auto text = am::text_serialize(r.families());
  CHECK(has_line(text, "edge_legacy{at=\"ms\"} 42 1520879607789"));
}

TEST_CASE("OpenMetrics adds the +Inf bucket to collected data that lacks it") {
  // prometheus-cpp's own histograms always end with +Inf; collected data
  // from elsewhere may not, and the spec requires the bucket.
  MetricFamily f{"partial_seconds", "", MetricType::Histogram, {}};
  prometheus::ClientMetric m;
  m.histogram.bucket = {{1, 0.5}, {2, 1.0}};
  m.histogram.sample_count = 3;
  m.histogram.sample_sum = 4.25;
  f.metric = {m};
  auto om = am::openmetrics_serialize({f});
  CHECK(has_line(om, "partial_seconds_bucket{le=\"1.0\"} 2"));
  CHECK(has_line(om, "partial_seconds_bucket{le=\"+Inf\"} 3"));
  CHECK(has_line(om, "partial_seconds_count 3"));
  CHECK(et::parse(om, true).problems.empty());
  check_formats_agree({f});
}

TEST_CASE("OpenMetrics leaves _sum and _count out of a histogram with a negative bucket") {
  MetricFamily f{"temp_celsius", "", MetricType::Histogram, {}};
  prometheus::ClientMetric m;
  m.histogram.bucket = {{1, -10.0}, {3, 0.0}, {4, inf}};
  m.histogram.sample_count = 4;
  m.histogram.sample_sum = -5;
  f.metric = {m};
  auto om = am::openmetrics_serialize({f});
  CHECK(has_line(om, "temp_celsius_bucket{le=\"-10.0\"} 1"));
  CHECK(has_line(om, "temp_celsius_bucket{le=\"+Inf\"} 4"));
  CHECK(om.find("temp_celsius_sum") == std::string::npos);
  CHECK(om.find("temp_celsius_count") == std::string::npos);
  CHECK(et::parse(om, true).problems.empty());
}

TEST_CASE("OpenMetrics ends with # EOF once, also for an empty registry") {
  CHECK(am::openmetrics_serialize({}) == "# EOF\n");
  edge_registry r;
  auto om = am::openmetrics_serialize(r.families());
  CHECK(et::ends_with(om, "\n# EOF\n"));
  CHECK(count_of(om, "# EOF") == 1);
  CHECK(am::text_serialize(r.families()).find("# EOF") == std::string::npos);
}

TEST_CASE("serialize dispatches on the format") {
  edge_registry r;
  auto fs = r.families();
  CHECK(am::serialize(fs, am::format::openmetrics) == am::openmetrics_serialize(fs));
  CHECK(am::serialize(fs, am::format::text) == am::text_serialize(fs));
}

// --- both formats of one registry ---------------------------------------------------

TEST_CASE("both formats of the edge registry carry the same samples, values and help") {
  edge_registry r;
  auto o = check_formats_agree(r.families());
  // requests 3, plain 1, temperature 7, many labels 1, no help 1, latency
  // (8 bounds + Inf + count + sum) + (2 + Inf + count + sum), size summary
  // (3 quantiles + count + sum), legacy 2, stamped 1.
  CHECK(o.samples.size() == 3 + 1 + 7 + 1 + 1 + 11 + 5 + 5 + 2 + 1);
}

TEST_CASE("both formats of the supervisor's metric set agree, with agents and process metrics") {
  agentvisor::metrics_config cfg;
  am::metrics m(cfg);
  std::vector<am::agent_series> agents;
  for (int i = 0; i < 50; ++i) {
    agents.push_back(m.add_agent("a-" + std::to_string(i)));
    am::metrics::agent_memory(agents.back(), 1000000u * static_cast<unsigned>(i));
    am::metrics::agent_tool_call(agents.back());
  }
  m.agent_state(std::nullopt, agentvisor::vm_state::ready);
  m.spawned(agentvisor::backend_kind::sandbox, am::spawn_result::ok, std::chrono::milliseconds(12));
  m.tool_call(am::tool::read_file, am::call_outcome::ok, std::chrono::microseconds(40));
  m.heartbeat_lag(std::chrono::milliseconds(3));
  m.fault_injected(am::fault_kind::oom);
  auto fs = m.collect();
  auto o = check_formats_agree(fs);
  CHECK(o.families.count("process_cpu_seconds") == 1);
  CHECK(o.families.at("process_cpu_seconds").unit == "seconds");
  CHECK(o.families.count("agentvisor_spawns") == 1);
  CHECK(o.families.at("agentvisor_spawn_duration_seconds").unit == "seconds");
  std::size_t per_agent = 0;
  for (const auto& s : o.samples)
    if (s.name == "agentvisor_agent_memory_bytes")
      ++per_agent;
  CHECK(per_agent == 50);
  for (auto& a : agents)
    m.remove_agent(a);
}

// --- the reader itself can fail --------------------------------------------------------

TEST_CASE("the test reader rejects expositions that break OpenMetrics") {
  auto problems = [](std::string_view text) { return et::parse(text, true).problems.size(); };
  CHECK(problems("# TYPE a gauge\na 1\n# EOF\n") == 0);
  CHECK(problems("# TYPE a gauge\na 1\n") > 0);                                   // no EOF
  CHECK(problems("# TYPE a gauge\na 1\n# EOF\n# EOF\n") > 0);                     // twice
  CHECK(problems("# TYPE a gauge\n# HELP a say \"hi\"\na 1\n# EOF\n") > 0);       // raw " in help
  CHECK(problems("# TYPE a gauge\na{l=\"x\ny\"} 1\n# EOF\n") > 0);                // raw LF in a label
  CHECK(problems("# TYPE a gauge\n# UNIT a seconds\na 1\n# EOF\n") > 0);          // unit not a suffix
  CHECK(problems("# TYPE a_total counter\na_total 1\n# EOF\n") > 0);              // _total in the family
  CHECK(problems("# TYPE a counter\na 1\n# EOF\n") > 0);                          // counter without _total
  CHECK(problems("# TYPE a gauge\na 1\n# TYPE b gauge\nb 1\na 2\n# EOF\n") > 0);  // interleaved
  CHECK(problems("# TYPE h histogram\nh_bucket{le=\"1.0\"} 1\nh_count 1\n# EOF\n") > 0); // no +Inf
  CHECK(problems("# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_count 1\nh_sum 1\n# EOF\n") > 0);
  CHECK(problems("# TYPE a gauge\na one\n# EOF\n") > 0);                          // not a number
  CHECK(problems("# HELP a x\n# TYPE a gauge\na 1\n# EOF\n") > 0);                // order
}
