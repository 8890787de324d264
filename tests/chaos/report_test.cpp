// The report: latency statistics per kind, report.json (parsed back with
// simdjson) and report.html (self-contained, one SVG per plot, escaped).

#include "logs.hpp"

#include <doctest/doctest.h>
#include <simdjson.h>

#include <algorithm>

using namespace agentvisor::chaos;
using chaos_test::contains;
using chaos_test::good_log;
using chaos_test::test_scenario;

namespace {

std::size_t count(const std::string& s, const std::string& part) {
  std::size_t n = 0;
  for (auto at = s.find(part); at != std::string::npos; at = s.find(part, at + 1))
    ++n;
  return n;
}

// 100 kills detected after 1..100 ms and serving again 10x later, shuffled
// so that the statistics cannot rely on the order.
run_log hundred_kills() {
  auto log = good_log();
  log.faults.clear();
  for (int i = 1; i <= 100; ++i) {
    int ms = (i * 37) % 100 + 1; // a permutation of 1..100
    auto f = chaos_test::fault(static_cast<uint64_t>(i), fault_kind::kill, "a-1", i);
    f.down_reason = "crashed";
    f.detected_s = i + ms / 1000.0;
    f.recovered_s = i + ms / 100.0;
    log.faults.push_back(f);
  }
  return log;
}

} // namespace

TEST_CASE("detection and recovery by kind: nearest-rank p50/p95/p99/max in ms") {
  auto log = hundred_kills();
  auto d = detection_by_kind(log);
  REQUIRE(d.size() == 1);
  const auto& k = d.at(fault_kind::kill);
  CHECK(k.n == 100);
  CHECK(k.p50 == doctest::Approx(50));
  CHECK(k.p95 == doctest::Approx(95));
  CHECK(k.p99 == doctest::Approx(99));
  CHECK(k.max == doctest::Approx(100));
  auto r = recovery_by_kind(log).at(fault_kind::kill);
  CHECK(r.p50 == doctest::Approx(500));
  CHECK(r.max == doctest::Approx(1000));
}

TEST_CASE("statistics leave out skipped faults and faults expecting survival") {
  auto log = good_log();
  auto d = detection_by_kind(log);
  CHECK(d.count(fault_kind::cpu_hog) == 0);
  REQUIRE(d.count(fault_kind::kill) == 1);
  CHECK(d.at(fault_kind::kill).n == 1); // the skipped kill is not counted
  CHECK(d.at(fault_kind::kill).p99 == doctest::Approx(10));
  CHECK(recovery_by_kind(log).at(fault_kind::oom).max == doctest::Approx(900));
  CHECK(d.at(fault_kind::hang).p50 == doctest::Approx(1050));
}

TEST_CASE("report.json parses and holds the numbers") {
  auto s = test_scenario();
  auto log = good_log();
  auto inv = check(s, log);
  auto text = report_json(s, log, inv);
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  REQUIRE(parser.parse(text).get(doc) == simdjson::SUCCESS);
  CHECK(std::string_view(doc["scenario"]) == "hand-written");
  CHECK(uint64_t(doc["seed"]) == 42);
  CHECK(bool(doc["passed"]));
  CHECK(uint64_t(doc["faults"]["total"]["planned"]) == 5);
  CHECK(uint64_t(doc["faults"]["total"]["injected"]) == 4);
  CHECK(uint64_t(doc["faults"]["total"]["skipped"]) == 1);
  CHECK(uint64_t(doc["faults"]["by_kind"]["kill"]["skipped"]) == 1);
  CHECK(uint64_t(doc["faults"]["by_kind"]["oom"]["recovered"]) == 1);
  CHECK(double(doc["detection_ms"]["oom"]["p50"]) == doctest::Approx(200));
  CHECK(double(doc["recovery_ms"]["hang"]["max"]) == doctest::Approx(1500));
  CHECK(uint64_t(doc["recovery_ms"]["kill"]["n"]) == 1);
  CHECK(uint64_t(doc["calls"]["sent"]) == 600);
  CHECK(uint64_t(doc["calls"]["ok"]) == 590);
  CHECK(uint64_t(doc["calls"]["failed"]) == 10);
  CHECK(uint64_t(doc["calls"]["retried"]) == 4);
  CHECK(uint64_t(doc["supervision"]["restarts"]) == 3);
  simdjson::dom::array invariants = doc["invariants"];
  CHECK(invariants.size() == inv.size());
  std::size_t i = 0;
  for (auto item : invariants) {
    CHECK(std::string_view(item["name"]) == inv[i].name);
    CHECK(bool(item["passed"]) == inv[i].passed);
    CHECK(std::string_view(item["evidence"]) == inv[i].evidence);
    ++i;
  }

  // Every fault and restart as the runner saw them, for tracing a violation.
  simdjson::dom::array records = doc["fault_records"];
  REQUIRE(records.size() == log.faults.size());
  auto oom = records.at(1);
  CHECK(uint64_t(oom["id"]) == 2);
  CHECK(std::string_view(oom["kind"]) == "oom");
  CHECK(std::string_view(oom["agent"]) == "a-2");
  CHECK(std::string_view(oom["down_reason"]) == "oom");
  CHECK(double(oom["detected_s"]) == doctest::Approx(5.2));
  CHECK(double(oom["recovered_s"]) == doctest::Approx(5.9));
  auto hog = records.at(2);
  CHECK(hog["down_reason"].error() == simdjson::NO_SUCH_FIELD);
  CHECK(simdjson::dom::array(hog["expected"]).size() == 0);
  auto skipped = records.at(4);
  CHECK(std::string_view(skipped["skipped"]) == "agent a-2 was restarting");
  CHECK(skipped["injected_s"].error() == simdjson::NO_SUCH_FIELD);
  simdjson::dom::array restarts = doc["restarts"];
  REQUIRE(restarts.size() == 3);
  CHECK(std::string_view(restarts.at(2)["agent"]) == "a-1");
  CHECK(std::string_view(restarts.at(2)["reason"]) == "hung");
  CHECK(uint64_t(restarts.at(2)["failures"]) == 1);
  CHECK(double(restarts.at(2)["ready_s"]) == doctest::Approx(13.5));

  SUBCASE("a failed invariant makes the report fail") {
    log.leftovers = {"cgroup \"x\"\n"};
    auto failed = report_json(s, log, check(s, log));
    REQUIRE(parser.parse(failed).get(doc) == simdjson::SUCCESS);
    CHECK_FALSE(bool(doc["passed"]));
    simdjson::dom::array left = doc["leftovers"];
    CHECK(std::string_view(left.at(0)) == "cgroup \"x\"\n");
  }
}

TEST_CASE("report.html: self-contained, one svg per plot, the tables") {
  auto s = test_scenario();
  auto log = good_log();
  auto html = report_html(s, log, check(s, log));
  CHECK(html.rfind("<!DOCTYPE html>", 0) == 0);
  CHECK(count(html, "<svg") == 2);
  CHECK(count(html, "</svg>") == 2);
  // No script, no external resource, no link.
  CHECK_FALSE(contains(html, "<script"));
  CHECK_FALSE(contains(html, "http://"));
  CHECK_FALSE(contains(html, "https://"));
  CHECK_FALSE(contains(html, "href="));
  CHECK_FALSE(contains(html, "src="));
  // Invariants table: every invariant with its result.
  for (auto name : {"faults_observed", "calls_accounted", "restart_intensity", "backoff",
                    "recovered", "no_leftovers", "supervisor_alive"})
    CHECK(contains(html, std::string{"<td>"} + name + "</td><td class=\"pass\">pass</td>"));
  CHECK(contains(html, "PASSED"));
  // The plots: labelled axes in ms and s, markers for the 4 injected
  // faults (not the skipped one), a legend entry per kind injected.
  CHECK(contains(html, "(ms)</text>"));
  CHECK(contains(html, "time since the run began (s)"));
  CHECK(contains(html, "agents ready</text>"));
  CHECK(count(html, "<title>#") == 4);
  for (auto kind : {"kill", "oom", "hang", "cpu_hog"})
    CHECK(contains(html, std::string{"class=\"tick\">"} + kind + "</text>"));
  // One recovery row per kind expecting a down, a dot per recovery.
  CHECK(contains(html, "kill (n=1)"));
  CHECK(contains(html, "hang (n=1)"));
  CHECK(count(html, "<circle") == 3);
  // The tables of report.json.
  CHECK(contains(html, "<h2>Faults by kind</h2>"));
  CHECK(contains(html, "<h2>Tool calls</h2>"));
  CHECK(contains(html, "agent a-2 was restarting"));
}

TEST_CASE("report.html escapes every text it shows") {
  auto s = test_scenario();
  s.name = "<script>alert(1)</script> & \"friends\"";
  s.description = "<img src=x onerror=alert(2)>";
  auto log = good_log();
  log.scenario_name = s.name;
  log.faults[0].agent_id = "<b>a-1</b>";
  log.faults[4].skipped_reason = "<i>busy</i>";
  log.leftovers = {"<svg onload=alert(3)>"};
  auto html = report_html(s, log, check(s, log));
  CHECK_FALSE(contains(html, "<script"));
  CHECK_FALSE(contains(html, "<img"));
  CHECK_FALSE(contains(html, "<b>"));
  CHECK_FALSE(contains(html, "<i>"));
  CHECK(count(html, "<svg") == 2); // the leftover's tag is text, not a third svg
  CHECK(contains(html, "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &quot;friends&quot;"));
  CHECK(contains(html, "&lt;img src=x onerror=alert(2)&gt;"));
  CHECK(contains(html, "&lt;svg onload=alert(3)&gt;"));
  CHECK(contains(html, "FAILED"));
}

TEST_CASE("report.html of a run with no faults and no samples still draws both plots") {
  auto s = test_scenario();
  run_log log;
  auto html = report_html(s, log, check(s, log));
  CHECK(count(html, "<svg") == 2);
  CHECK(contains(html, "No recovery times"));
  CHECK(contains(html, "no ready samples"));
}

TEST_CASE("report.html of a large run stays one page with one marker per fault") {
  auto s = test_scenario();
  auto log = hundred_kills();
  auto html = report_html(s, log, check(s, log));
  CHECK(count(html, "<svg") == 2);
  CHECK(count(html, "<title>#") == 100);
  CHECK(count(html, "<circle") == 100);
  CHECK(contains(html, "kill (n=100)"));
}
