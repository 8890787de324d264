// Tests of the configuration module: defaults, every key, every error kind
// and its message text, the JSON round trip, files and HOST:PORT parsing.

#include "agentvisor/config.hpp"

#include <doctest/doctest.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include <sys/stat.h>
#include <unistd.h>

using namespace agentvisor;

namespace {

// The error message of a parse that must fail ("" if it unexpectedly
// succeeded, which then fails the comparison in the caller).
std::string parse_error(std::string_view json, std::string_view origin = {}) {
  auto r = parse_config(json, origin);
  if (r.has_value())
    return {};
  return r.err().message;
}

bool starts_with(const std::string& s, std::string_view prefix) {
  return s.compare(0, prefix.size(), prefix) == 0;
}

bool contains(const std::string& s, std::string_view part) {
  return s.find(part) != std::string::npos;
}

// A file in a private temporary directory, removed at scope exit.
struct temp_dir {
  std::string path;

  temp_dir() {
    char tmpl[] = "/tmp/agentvisor-config-test-XXXXXX";
    const char* made = ::mkdtemp(tmpl);
    REQUIRE(made != nullptr);
    path = made;
  }

  ~temp_dir() {
    std::string cmd = "rm -rf '" + path + "'";
    if (std::system(cmd.c_str()) != 0)
      std::fprintf(stderr, "could not remove %s\n", path.c_str());
  }

  std::string write(const std::string& name, std::string_view text) {
    auto file = path + "/" + name;
    std::FILE* f = std::fopen(file.c_str(), "wb");
    REQUIRE(f != nullptr);
    REQUIRE(std::fwrite(text.data(), 1, text.size(), f) == text.size());
    REQUIRE(std::fclose(f) == 0);
    return file;
  }
};

constexpr std::string_view strategy_list
  = "one of one_for_one, one_for_all, rest_for_one, simple_one_for_one";

} // namespace

TEST_CASE("an empty object gives the built-in defaults") {
  auto r = parse_config("{}");
  REQUIRE(r.has_value());
  const config& c = *r;
  CHECK(c == config{});
  CHECK(c.instance == "default");
  CHECK(c.state_dir == "/var/lib/agentvisor");
  CHECK(c.keep_workspaces == false);
  CHECK(c.backend == backend_kind::sandbox);
  CHECK(c.host.memory_mb == 0);
  CHECK(c.host.cpus == 0);
  CHECK(c.host.max_agents == 256);
  CHECK(c.host.pids == 0);
  CHECK(c.agents.memory_mb == 256);
  CHECK(c.agents.pids == 128);
  CHECK(c.agents.cpu_weight == 100);
  CHECK(c.agents.heartbeat_ms == 1000);
  CHECK(c.agents.hang_timeout_ms == 5000);
  CHECK(c.agents.allow_faults == false);
  CHECK(c.pool.warm == 0);
  CHECK(c.supervision.strategy == restart_strategy::simple_one_for_one);
  CHECK(c.supervision.restart == restart_type::permanent);
  CHECK(c.supervision.random_factor == 0.2);
  CHECK(c.api.listen == "127.0.0.1:7878");
  CHECK(c.api.token_file.empty());
  CHECK(c.api.max_body_bytes == 1048576);
  CHECK(c.metrics.enabled);
  CHECK(c.log.level == log_level::info);
  CHECK(c.log.format == log_format::plain);
}

TEST_CASE("whitespace around the document and empty nested objects are fine") {
  auto r = parse_config("\n  { \"host\": {}, \"agents\": {}, \"log\": {} }\n\n");
  REQUIRE(r.has_value());
  CHECK(*r == config{});
}

TEST_CASE("a full file sets every key") {
  constexpr std::string_view json = R"({
    "instance": "prod-1_a",
    "state_dir": "/srv/agentvisor",
    "keep_workspaces": true,
    "backend": "firecracker",
    "host": {"memory_mb": 65536, "cpus": 32, "max_agents": 5000, "pids": 200000},
    "agents": {
      "memory_mb": 512, "pids": 256, "cpu_weight": 250, "workspace_mb": 1024,
      "heartbeat_ms": 500, "hang_timeout_ms": 3000, "max_calls_in_flight": 4,
      "ready_timeout_ms": 20000, "allow_faults": true
    },
    "pool": {"warm": 8},
    "supervision": {
      "strategy": "one_for_all", "restart": "transient", "max_restarts": 3,
      "period_ms": 60000, "min_backoff_ms": 100, "max_backoff_ms": 30000,
      "random_factor": 0.5, "shutdown_timeout_ms": 2000
    },
    "api": {"listen": "[::1]:9000", "token_file": "/etc/agentvisor/token",
            "max_body_bytes": 4096},
    "metrics": {"enabled": false, "require_token": true, "per_agent": false,
                "max_agent_series": 50},
    "log": {"level": "debug", "format": "json"}
  })";
  auto r = parse_config(json);
  REQUIRE_MESSAGE(r.has_value(), (r ? std::string{} : r.err().message));
  const config& c = *r;
  CHECK(c.instance == "prod-1_a");
  CHECK(c.state_dir == "/srv/agentvisor");
  CHECK(c.keep_workspaces == true);
  CHECK(c.backend == backend_kind::firecracker);
  CHECK(c.host.memory_mb == 65536);
  CHECK(c.host.cpus == 32);
  CHECK(c.host.max_agents == 5000);
  CHECK(c.host.pids == 200000);
  CHECK(c.agents.memory_mb == 512);
  CHECK(c.agents.pids == 256);
  CHECK(c.agents.cpu_weight == 250);
  CHECK(c.agents.workspace_mb == 1024);
  CHECK(c.agents.heartbeat_ms == 500);
  CHECK(c.agents.hang_timeout_ms == 3000);
  CHECK(c.agents.max_calls_in_flight == 4);
  CHECK(c.agents.ready_timeout_ms == 20000);
  CHECK(c.agents.allow_faults == true);
  CHECK(c.pool.warm == 8);
  CHECK(c.supervision.strategy == restart_strategy::one_for_all);
  CHECK(c.supervision.restart == restart_type::transient);
  CHECK(c.supervision.max_restarts == 3);
  CHECK(c.supervision.period_ms == 60000);
  CHECK(c.supervision.min_backoff_ms == 100);
  CHECK(c.supervision.max_backoff_ms == 30000);
  CHECK(c.supervision.random_factor == 0.5);
  CHECK(c.supervision.shutdown_timeout_ms == 2000);
  CHECK(c.api.listen == "[::1]:9000");
  CHECK(c.api.token_file == "/etc/agentvisor/token");
  CHECK(c.api.max_body_bytes == 4096);
  CHECK(c.metrics.enabled == false);
  CHECK(c.metrics.require_token == true);
  CHECK(c.metrics.per_agent == false);
  CHECK(c.metrics.max_agent_series == 50);
  CHECK(c.log.level == log_level::debug);
  CHECK(c.log.format == log_format::json);
}

TEST_CASE("keys may be spelled with JSON escapes") {
  auto r = parse_config(R"({"agents": {"mem\u006fry_mb": 64}})");
  REQUIRE(r.has_value());
  CHECK(r->agents.memory_mb == 64);
}

TEST_CASE("every enumerator parses from its name and prints back to it") {
  SUBCASE("backend") {
    for (auto x : {backend_kind::sandbox, backend_kind::qemu,
                   backend_kind::firecracker}) {
      auto json = "{\"backend\": \"" + std::string{to_string(x)} + "\"}";
      auto r = parse_config(json);
      REQUIRE(r.has_value());
      CHECK(r->backend == x);
    }
    CHECK(to_string(backend_kind::qemu) == "qemu");
  }
  SUBCASE("supervision.strategy") {
    for (auto x : {restart_strategy::one_for_one, restart_strategy::one_for_all,
                   restart_strategy::rest_for_one,
                   restart_strategy::simple_one_for_one}) {
      auto json = "{\"supervision\": {\"strategy\": \""
                  + std::string{to_string(x)} + "\"}}";
      auto r = parse_config(json);
      REQUIRE(r.has_value());
      CHECK(r->supervision.strategy == x);
    }
    CHECK(to_string(restart_strategy::rest_for_one) == "rest_for_one");
    CHECK(to_string(restart_strategy::simple_one_for_one)
          == "simple_one_for_one");
  }
  SUBCASE("supervision.restart") {
    for (auto x : {restart_type::permanent, restart_type::transient,
                   restart_type::temporary}) {
      auto json = "{\"supervision\": {\"restart\": \""
                  + std::string{to_string(x)} + "\"}}";
      auto r = parse_config(json);
      REQUIRE(r.has_value());
      CHECK(r->supervision.restart == x);
    }
    CHECK(to_string(restart_type::temporary) == "temporary");
  }
  SUBCASE("log.level") {
    for (auto x : {log_level::trace, log_level::debug, log_level::info,
                   log_level::warn, log_level::error, log_level::off}) {
      auto json = "{\"log\": {\"level\": \"" + std::string{to_string(x)}
                  + "\"}}";
      auto r = parse_config(json);
      REQUIRE(r.has_value());
      CHECK(r->log.level == x);
    }
    CHECK(to_string(log_level::warn) == "warn");
    CHECK(to_string(log_level::off) == "off");
  }
  SUBCASE("log.format") {
    for (auto x : {log_format::plain, log_format::json}) {
      auto json = "{\"log\": {\"format\": \"" + std::string{to_string(x)}
                  + "\"}}";
      auto r = parse_config(json);
      REQUIRE(r.has_value());
      CHECK(r->log.format == x);
    }
    CHECK(to_string(log_format::json) == "json");
  }
}

TEST_CASE("an unknown key is rejected with its path") {
  CHECK(parse_error(R"({"agents": {"colour": "blue"}})")
        == "agents.colour: unknown key");
  CHECK(parse_error(R"({"colour": 1})") == "colour: unknown key");
  CHECK(parse_error(R"({"supervision": {"strategy": "one_for_one", "x": 1}})")
        == "supervision.x: unknown key");
  // Case matters: keys are the struct field names exactly.
  CHECK(parse_error(R"({"Instance": "a"})") == "Instance: unknown key");
}

TEST_CASE("a duplicate key is rejected with its path") {
  CHECK(parse_error(R"({"agents": {"pids": 10, "pids": 12}})")
        == "agents.pids: duplicate key");
  CHECK(parse_error(R"({"log": {}, "instance": "a", "log": {}})")
        == "log: duplicate key");
}

TEST_CASE("a value of the wrong type names the key, the expectation and the "
          "value") {
  CHECK(parse_error(R"({"host": 3})") == "host: expected an object, got 3");
  CHECK(parse_error(R"({"agents": [1, 2]})")
        == "agents: expected an object, got [...]");
  CHECK(parse_error(R"({"agents": {"memory_mb": "lots"}})")
        == "agents.memory_mb: expected a positive integer, got \"lots\"");
  CHECK(parse_error(R"({"agents": {"memory_mb": {"a": 1}}})")
        == "agents.memory_mb: expected a positive integer, got {...}");
  CHECK(parse_error(R"({"keep_workspaces": "yes"})")
        == "keep_workspaces: expected true or false, got \"yes\"");
  CHECK(parse_error(R"({"keep_workspaces": 1})")
        == "keep_workspaces: expected true or false, got 1");
  CHECK(parse_error(R"({"agents": {"allow_faults": "yes"}})")
        == "agents.allow_faults: expected true or false, got \"yes\"");
  CHECK(parse_error(R"({"agents": {"allow_faults": null}})")
        == "agents.allow_faults: expected true or false, got null");
  CHECK(parse_error(R"({"instance": null})")
        == "instance: expected a string, got null");
  CHECK(parse_error(R"({"api": {"listen": 7878}})")
        == "api.listen: expected a string, got 7878");
  CHECK(parse_error(R"({"supervision": {"random_factor": "0.5"}})")
        == "supervision.random_factor: expected a number in 0..1, got \"0.5\"");
}

TEST_CASE("an unknown enum name lists the accepted names") {
  CHECK(parse_error(R"({"supervision": {"strategy": "best_effort"}})")
        == "supervision.strategy: expected " + std::string{strategy_list}
             + ", got \"best_effort\"");
  CHECK(parse_error(R"({"supervision": {"strategy": 2}})")
        == "supervision.strategy: expected " + std::string{strategy_list}
             + ", got 2");
  CHECK(parse_error(R"({"backend": "docker"})")
        == "backend: expected one of sandbox, qemu, firecracker, got "
           "\"docker\"");
  CHECK(parse_error(R"({"supervision": {"restart": "always"}})")
        == "supervision.restart: expected one of permanent, transient, "
           "temporary, got \"always\"");
  CHECK(parse_error(R"({"log": {"level": "WARN"}})")
        == "log.level: expected one of trace, debug, info, warn, error, off, "
           "got \"WARN\"");
  CHECK(parse_error(R"({"log": {"format": "xml"}})")
        == "log.format: expected one of plain, json, got \"xml\"");
}

TEST_CASE("integers reject negatives, fractions and values too large for "
          "the field") {
  CHECK(parse_error(R"({"agents": {"pids": -1}})")
        == "agents.pids: expected a positive integer, got -1");
  CHECK(parse_error(R"({"agents": {"pids": 1.5}})")
        == "agents.pids: expected a positive integer, got 1.5");
  CHECK(parse_error(R"({"agents": {"pids": 1e3}})")
        == "agents.pids: expected a positive integer, got 1e3");
  CHECK(parse_error(R"({"supervision": {"max_restarts": -3}})")
        == "supervision.max_restarts: expected a non-negative integer, got -3");
  // One past uint32_t.
  CHECK(parse_error(R"({"supervision": {"max_restarts": 4294967296}})")
        == "supervision.max_restarts: expected an integer in 0..4294967295, "
           "got 4294967296");
  CHECK(parse_error(R"({"supervision": {"max_restarts": 4294967295}})").empty());
  // Beyond uint64_t altogether.
  CHECK(parse_error(R"({"agents": {"memory_mb": 99999999999999999999999}})")
        == "agents.memory_mb: expected an integer in 16..1073741824, got "
           "99999999999999999999999");
}

TEST_CASE("integers outside their range name the range") {
  CHECK(parse_error(R"({"agents": {"memory_mb": 15}})")
        == "agents.memory_mb: expected an integer in 16..1073741824, got 15");
  CHECK(parse_error(R"({"agents": {"memory_mb": 16}})").empty());
  CHECK(parse_error(R"({"agents": {"pids": 7}})")
        == "agents.pids: expected an integer in 8..4194304, got 7");
  CHECK(parse_error(R"({"agents": {"cpu_weight": 0}})")
        == "agents.cpu_weight: expected an integer in 1..10000, got 0");
  CHECK(parse_error(R"({"agents": {"cpu_weight": 10001}})")
        == "agents.cpu_weight: expected an integer in 1..10000, got 10001");
  CHECK(parse_error(R"({"agents": {"cpu_weight": 10000}})").empty());
  CHECK(parse_error(R"({"agents": {"heartbeat_ms": 9}})")
        == "agents.heartbeat_ms: expected an integer in 10..3600000, got 9");
  CHECK(parse_error(R"({"supervision": {"period_ms": 0}})")
        == "supervision.period_ms: expected an integer in 1..86400000, got 0");
  CHECK(parse_error(R"({"host": {"max_agents": 0}})")
        == "host.max_agents: expected an integer in 1..100000, got 0");
  CHECK(parse_error(R"({"host": {"max_agents": 100001}})")
        == "host.max_agents: expected an integer in 1..100000, got 100001");
  CHECK(parse_error(R"({"api": {"max_body_bytes": 1023}})")
        == "api.max_body_bytes: expected an integer in 1024..67108864, got "
           "1023");
  CHECK(parse_error(R"({"api": {"max_body_bytes": 67108865}})")
        == "api.max_body_bytes: expected an integer in 1024..67108864, got "
           "67108865");
  CHECK(parse_error(R"({"api": {"max_body_bytes": 1024}})").empty());
  CHECK(parse_error(R"({"api": {"max_body_bytes": 67108864}})").empty());
  CHECK(parse_error(R"({"metrics": {"max_agent_series": 0}})")
        == "metrics.max_agent_series: expected an integer in 1..1000000, got 0");
  CHECK(parse_error(R"({"supervision": {"max_restarts": 0}})").empty());
}

TEST_CASE("host values of zero mean detect and others are range checked") {
  auto r = parse_config(R"({"host": {"memory_mb": 0, "cpus": 0, "pids": 0}})");
  REQUIRE(r.has_value());
  CHECK(r->host == host_config{});
  CHECK(parse_error(R"({"host": {"memory_mb": 63}})")
        == "host.memory_mb: expected 0 (detect) or an integer in "
           "64..1073741824, got 63");
  CHECK(parse_error(R"({"host": {"cpus": 8193}})")
        == "host.cpus: expected 0 (detect) or an integer in 1..8192, got 8193");
  CHECK(parse_error(R"({"host": {"pids": 10}})")
        == "host.pids: expected 0 (detect) or an integer in 64..4194304, "
           "got 10");
  CHECK(parse_error(R"({"host": {"pids": -1}})")
        == "host.pids: expected a non-negative integer, got -1");
}

TEST_CASE("the governor's host keys have defaults and are range checked") {
  host_config d;
  CHECK(d.reserve_mb == 512);
  CHECK(d.pressure_high_water == 0.95);
  CHECK(d.min_available_mb == 256);
  CHECK(d.pressure_check_ms == 1000);
  CHECK(d.max_queued == 256);
  CHECK(d.evict_timeout_ms == 30000);
  auto r = parse_config(R"({"host": {"reserve_mb": 0, "pressure_high_water": 0.8,
    "min_available_mb": 0, "pressure_check_ms": 10, "max_queued": 0,
    "evict_timeout_ms": 100}})");
  REQUIRE_MESSAGE(r.has_value(), (r ? std::string{} : r.err().message));
  CHECK(r->host.reserve_mb == 0);
  CHECK(r->host.pressure_high_water == 0.8);
  CHECK(r->host.min_available_mb == 0);
  CHECK(r->host.pressure_check_ms == 10);
  CHECK(r->host.max_queued == 0);
  CHECK(r->host.evict_timeout_ms == 100);
  CHECK(parse_error(R"({"host": {"reserve_mb": 1073741825}})")
        == "host.reserve_mb: expected an integer in 0..1073741824, got 1073741825");
  CHECK(parse_error(R"({"host": {"reserve_mb": -1}})")
        == "host.reserve_mb: expected a non-negative integer, got -1");
  CHECK(parse_error(R"({"host": {"pressure_high_water": 1.5}})")
        == "host.pressure_high_water: expected a number in 0.1..1, got 1.5");
  CHECK(parse_error(R"({"host": {"pressure_high_water": 0.05}})")
        == "host.pressure_high_water: expected a number in 0.1..1, got 0.05");
  CHECK(parse_error(R"({"host": {"pressure_high_water": "high"}})")
        == "host.pressure_high_water: expected a number in 0.1..1, got \"high\"");
  CHECK(parse_error(R"({"host": {"min_available_mb": 1.5}})")
        == "host.min_available_mb: expected a non-negative integer, got 1.5");
  CHECK(parse_error(R"({"host": {"pressure_check_ms": 9}})")
        == "host.pressure_check_ms: expected an integer in 10..3600000, got 9");
  CHECK(parse_error(R"({"host": {"max_queued": 100001}})")
        == "host.max_queued: expected an integer in 0..100000, got 100001");
  CHECK(parse_error(R"({"host": {"evict_timeout_ms": 99}})")
        == "host.evict_timeout_ms: expected an integer in 100..3600000, got 99");
}

TEST_CASE("random_factor accepts numbers from 0 to 1 inclusive") {
  for (const auto& accepted :
       {std::pair{"0", 0.0}, {"1", 1.0}, {"0.25", 0.25}, {"1.0", 1.0},
        {"5e-1", 0.5}}) {
    std::string text = accepted.first;
    auto r = parse_config(R"({"supervision": {"random_factor": )" + text
                          + "}}");
    REQUIRE_MESSAGE(r.has_value(), text);
    CHECK(r->supervision.random_factor == accepted.second);
  }
  CHECK(parse_error(R"({"supervision": {"random_factor": 1.5}})")
        == "supervision.random_factor: expected a number in 0..1, got 1.5");
  CHECK(parse_error(R"({"supervision": {"random_factor": -0.1}})")
        == "supervision.random_factor: expected a number in 0..1, got -0.1");
  CHECK(parse_error(R"({"supervision": {"random_factor": 1e999}})")
        == "supervision.random_factor: expected a number in 0..1, got 1e999");
}

TEST_CASE("related keys are checked against each other") {
  CHECK(parse_error(R"({"agents": {"heartbeat_ms": 1000, "hang_timeout_ms": 1000}})")
        == "agents.hang_timeout_ms: expected more than agents.heartbeat_ms "
           "(1000), got 1000");
  // The order of the keys in the file does not matter.
  CHECK(parse_error(R"({"agents": {"hang_timeout_ms": 400, "heartbeat_ms": 500}})")
        == "agents.hang_timeout_ms: expected more than agents.heartbeat_ms "
           "(500), got 400");
  CHECK(parse_error(R"({"agents": {"heartbeat_ms": 10, "hang_timeout_ms": 11}})")
          .empty());
  CHECK(parse_error(R"({"supervision": {"min_backoff_ms": 6000}})")
        == "supervision.max_backoff_ms: expected at least "
           "supervision.min_backoff_ms (6000), got 5000");
  CHECK(parse_error(R"({"supervision": {"min_backoff_ms": 7, "max_backoff_ms": 7}})")
          .empty());
  CHECK(parse_error(R"({"pool": {"warm": 300}})")
        == "pool.warm: expected at most host.max_agents (256), got 300");
  CHECK(parse_error(R"({"host": {"memory_mb": 1024}, "agents": {"memory_mb": 2048}})")
        == "agents.memory_mb: expected at most host.memory_mb (1024), got 2048");
  CHECK(parse_error(R"({"host": {"pids": 100}, "agents": {"pids": 128}})")
        == "agents.pids: expected at most host.pids (100), got 128");
}

TEST_CASE("instance must be a safe cgroup directory name") {
  CHECK(parse_error(R"({"instance": "a-b_C9"})").empty());
  CHECK(parse_error(R"({"instance": "a/b"})")
        == "instance: expected 1 to 64 characters from [A-Za-z0-9_-], got "
           "\"a/b\"");
  CHECK_FALSE(parse_error(R"({"instance": ".."})").empty());
  CHECK_FALSE(parse_error(R"({"instance": ""})").empty());
  CHECK_FALSE(parse_error(R"({"instance": "a b"})").empty());
  CHECK_FALSE(parse_error(R"({"instance": "a\u0000b"})").empty());
  std::string longest(64, 'x');
  CHECK(parse_error("{\"instance\": \"" + longest + "\"}").empty());
  auto msg = parse_error("{\"instance\": \"" + longest + "x\"}");
  CHECK(starts_with(msg, "instance: expected 1 to 64 characters"));
  // Long values are cut short in the message.
  CHECK(contains(msg, "got \"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx..."));
}

TEST_CASE("paths must be absolute") {
  CHECK(parse_error(R"({"state_dir": "var/lib/agentvisor"})")
        == "state_dir: expected an absolute path, got \"var/lib/agentvisor\"");
  CHECK(parse_error(R"({"state_dir": ""})")
        == "state_dir: expected an absolute path, got \"\"");
  CHECK(parse_error(R"({"state_dir": "/a\u0000b"})")
        == "state_dir: expected an absolute path, got \"/a\\u0000b\" "
           "(contains a NUL byte)");
  CHECK(parse_error(R"({"api": {"token_file": "token"}})")
        == "api.token_file: expected an empty string or an absolute path, got "
           "\"token\"");
  auto r = parse_config(R"({"api": {"token_file": ""}})");
  REQUIRE(r.has_value());
  CHECK(r->api.token_file.empty());
}

TEST_CASE("api.listen must be HOST:PORT") {
  CHECK(parse_error(R"({"api": {"listen": "0.0.0.0:80"}})").empty());
  CHECK(parse_error(R"({"api": {"listen": "localhost"}})")
        == "api.listen: expected HOST:PORT, got \"localhost\" (missing "
           "\":PORT\")");
  CHECK(parse_error(R"({"api": {"listen": ":7878"}})")
        == "api.listen: expected HOST:PORT, got \":7878\" (empty host)");
  CHECK(parse_error(R"({"api": {"listen": "localhost:0"}})")
        == "api.listen: expected HOST:PORT, got \"localhost:0\" (port 0 is "
           "not in 1..65535)");
}

TEST_CASE("the root must be an object") {
  CHECK(parse_error("[1, 2]") == "expected a JSON object at the top level, got [...]");
  CHECK(parse_error("3") == "expected a JSON object at the top level, got 3");
  CHECK(parse_error("\"x\"")
        == "expected a JSON object at the top level, got \"x\"");
  CHECK(parse_error("null")
        == "expected a JSON object at the top level, got null");
}

TEST_CASE("malformed JSON is reported with simdjson's reason and a location") {
  SUBCASE("an empty document") {
    CHECK(parse_error("") == "malformed JSON: the document is empty (write {} "
                             "for all defaults)");
    CHECK(starts_with(parse_error("  \n "), "malformed JSON: the document is "
                                            "empty"));
  }
  SUBCASE("a trailing comma") {
    auto msg = parse_error("{\"pool\": {\"warm\": 1,}}");
    CHECK(starts_with(msg, "pool: malformed JSON at byte 20 (line 1, column 21): "));
    CHECK(contains(msg, "improper structure"));
  }
  SUBCASE("a missing colon on a later line") {
    auto msg = parse_error("{\n  \"instance\": \"a\",\n  \"state_dir\" \"/x\"\n}");
    CHECK(starts_with(msg, "malformed JSON at byte 35 (line 3, column 15): "));
    CHECK(contains(msg, "improper structure"));
  }
  SUBCASE("an unterminated string") {
    auto msg = parse_error("{\"instance\": \"abc}");
    CHECK(starts_with(msg, "malformed JSON: "));
    CHECK(contains(msg, "never closed"));
  }
  SUBCASE("an unclosed object") {
    CHECK(starts_with(parse_error("{\"instance\": \"abc\""), "malformed JSON"));
  }
  SUBCASE("content after the root object") {
    CHECK(parse_error("{} {}") == "malformed JSON at byte 3 (line 1, column 4): "
                                  "unexpected content after the top-level "
                                  "object");
  }
  SUBCASE("an invalid literal") {
    CHECK(parse_error(R"({"keep_workspaces": tru})")
          == "keep_workspaces: malformed JSON at byte 20 (line 1, column 21): "
             "invalid literal tru");
  }
  SUBCASE("a bare word where a value belongs") {
    CHECK(starts_with(parse_error(R"({"agents": {"memory_mb": x}})"),
                      "agents.memory_mb: malformed JSON at byte 25 (line 1, "
                      "column 26): "));
  }
  SUBCASE("a number with a leading zero") {
    CHECK(starts_with(parse_error(R"({"pool": {"warm": 012}})"),
                      "pool.warm: malformed JSON at byte 18"));
  }
  SUBCASE("a bad escape in a string") {
    CHECK(starts_with(parse_error(R"({"instance": "a\qb"})"),
                      "instance: malformed JSON at byte 13"));
  }
  SUBCASE("invalid UTF-8") {
    CHECK(starts_with(parse_error("{\"instance\": \"\xff\"}"), "malformed JSON"));
  }
}

TEST_CASE("a non-empty origin prefixes every message") {
  CHECK(parse_error(R"({"agents": {"memory_mb": "lots"}})", "/etc/agentvisor.json")
        == "/etc/agentvisor.json: agents.memory_mb: expected a positive "
           "integer, got \"lots\"");
  CHECK(starts_with(parse_error("{", "cfg.json"), "cfg.json: malformed JSON"));
  CHECK(parse_error("[]", "cfg.json")
        == "cfg.json: expected a JSON object at the top level, got [...]");
}

TEST_CASE("the defaults print as JSON that parses back to the defaults") {
  auto json = default_config_json();
  CHECK(json == to_json(config{}));
  auto r = parse_config(json);
  REQUIRE_MESSAGE(r.has_value(), (r ? std::string{} : r.err().message));
  CHECK(*r == config{});
  // Every key is present, pretty-printed with two-space indentation.
  for (auto key : {"instance", "state_dir", "keep_workspaces", "backend",
                   "host", "memory_mb", "cpus", "max_agents", "pids",
                   "reserve_mb", "pressure_high_water", "min_available_mb",
                   "pressure_check_ms", "max_queued", "evict_timeout_ms", "agents",
                   "cpu_weight", "workspace_mb", "heartbeat_ms",
                   "hang_timeout_ms", "max_calls_in_flight", "ready_timeout_ms",
                   "allow_faults", "pool", "warm", "supervision", "strategy", "restart",
                   "max_restarts", "period_ms", "min_backoff_ms",
                   "max_backoff_ms", "random_factor", "shutdown_timeout_ms",
                   "api", "listen", "token_file", "max_body_bytes", "metrics",
                   "enabled", "require_token", "per_agent", "max_agent_series",
                   "log", "level", "format", "backends", "qemu", "firecracker", "binary",
                   "jailer", "kernel", "initrd", "accel", "machine", "vcpus",
                   "boot_timeout_ms", "snapshots"})
    CHECK_MESSAGE(contains(json, "\"" + std::string{key} + "\": "), key);
  CHECK(starts_with(json, "{\n  \"instance\": \"default\",\n"));
  CHECK(contains(json, "\n    \"random_factor\": 0.2,\n"));
  CHECK(contains(json, "\"strategy\": \"simple_one_for_one\""));
  CHECK(json.back() == '\n');
}

TEST_CASE("any valid config survives a round trip through JSON") {
  config c;
  c.instance = "rt";
  c.state_dir = "/tmp/a \"quoted\" \\ dir\twith\ncontrol\x01 and \xc3\xa9";
  c.keep_workspaces = true;
  c.backend = backend_kind::qemu;
  c.backends = {backend_kind::firecracker, backend_kind::qemu};
  c.qemu = {.binary = "/opt/qemu/bin/qemu-system-x86_64", .kernel = "/boot/vmlinux",
            .initrd = "/boot/initrd.img", .accel = qemu_accel::tcg,
            .machine = qemu_machine::q35, .vcpus = 255, .boot_timeout_ms = 100,
            .snapshots = true};
  c.firecracker = {.binary = "fc", .jailer = "/usr/bin/jailer", .kernel = "/k",
                   .initrd = "", .vcpus = 32, .boot_timeout_ms = 3600000};
  c.host = {.memory_mb = 1 << 20, .cpus = 7, .max_agents = 99999, .pids = 64,
            .reserve_mb = 0, .pressure_high_water = 0.875, .min_available_mb = 0,
            .pressure_check_ms = 3600000, .max_queued = 0, .evict_timeout_ms = 100};
  c.agents.memory_mb = 64;
  c.agents.pids = 8;
  c.agents.cpu_weight = 10000;
  c.agents.workspace_mb = 1;
  c.agents.heartbeat_ms = 10;
  c.agents.hang_timeout_ms = 86400000;
  c.agents.max_calls_in_flight = 65536;
  c.agents.ready_timeout_ms = 100;
  c.agents.allow_faults = true;
  c.pool.warm = 99999;
  c.supervision.strategy = restart_strategy::rest_for_one;
  c.supervision.restart = restart_type::temporary;
  c.supervision.max_restarts = 4294967295u;
  c.supervision.period_ms = 1;
  c.supervision.min_backoff_ms = 0;
  c.supervision.max_backoff_ms = 0;
  c.supervision.random_factor = 0.1 + 0.2; // not exactly 0.3
  c.supervision.shutdown_timeout_ms = 0;
  c.api.listen = "[fe80::1%eth0]:65535";
  c.api.token_file = "/run/secrets/agentvisor token";
  c.api.max_body_bytes = 64 << 20;
  c.metrics = {.enabled = false, .require_token = true, .per_agent = false,
               .max_agent_series = 1};
  c.log = {.level = log_level::trace, .format = log_format::json};
  auto json = to_json(c);
  auto r = parse_config(json);
  REQUIRE_MESSAGE(r.has_value(), (r ? std::string{} : r.err().message));
  CHECK(r->state_dir == c.state_dir);
  CHECK(r->supervision.random_factor == c.supervision.random_factor);
  CHECK(*r == c);
  // And printing is stable.
  CHECK(to_json(*r) == json);
}

TEST_CASE("load_config names the path and errno of an unreadable file") {
  temp_dir dir;
  auto missing = dir.path + "/missing.json";
  auto r = load_config(missing);
  REQUIRE_FALSE(r.has_value());
  CHECK(r.err().message
        == "cannot read config file " + missing + ": No such file or directory");
  CHECK(r.err().sys_errno == ENOENT);

  auto is_dir = load_config(dir.path);
  REQUIRE_FALSE(is_dir.has_value());
  CHECK(is_dir.err().sys_errno == EISDIR);
  CHECK(starts_with(is_dir.err().message, "cannot read config file " + dir.path
                                              + ": "));
}

TEST_CASE("load_config parses a real file and prefixes errors with its path") {
  temp_dir dir;
  auto good = dir.write("good.json", R"({"instance": "from-file",
    "agents": {"memory_mb": 1024}})");
  auto r = load_config(good);
  REQUIRE_MESSAGE(r.has_value(), (r ? std::string{} : r.err().message));
  CHECK(r->instance == "from-file");
  CHECK(r->agents.memory_mb == 1024);
  CHECK(r->agents.pids == 128);

  auto bad = dir.write("bad.json", R"({"agents": {"colour": "red"}})");
  auto e = load_config(bad);
  REQUIRE_FALSE(e.has_value());
  CHECK(e.err().message == bad + ": agents.colour: unknown key");
  CHECK(e.err().sys_errno == 0);

  auto empty = dir.write("empty.json", "");
  auto e2 = load_config(empty);
  REQUIRE_FALSE(e2.has_value());
  CHECK(starts_with(e2.err().message, empty + ": malformed JSON"));

  // The printed defaults are themselves a valid config file.
  auto printed = dir.write("printed.json", default_config_json());
  auto r2 = load_config(printed);
  REQUIRE(r2.has_value());
  CHECK(*r2 == config{});
}

TEST_CASE("load_config reports a file it may not read") {
  if (::geteuid() == 0) {
    MESSAGE("running as root: permissions are not enforced, skipped");
    return;
  }
  temp_dir dir;
  auto locked = dir.write("locked.json", "{}");
  REQUIRE(::chmod(locked.c_str(), 0) == 0);
  auto r = load_config(locked);
  REQUIRE_FALSE(r.has_value());
  CHECK(r.err().sys_errno == EACCES);
  CHECK(r.err().message
        == "cannot read config file " + locked + ": Permission denied");
}

TEST_CASE("parse_host_port splits host and port") {
  auto ok = [](std::string_view text, std::string_view host, uint16_t port) {
    auto r = parse_host_port(text);
    REQUIRE_MESSAGE(r.has_value(), text);
    CHECK(r->host == host);
    CHECK(r->port == port);
  };
  ok("127.0.0.1:7878", "127.0.0.1", 7878);
  ok("localhost:80", "localhost", 80);
  ok("[::1]:7878", "::1", 7878);
  ok("[fe80::1%eth0]:1", "fe80::1%eth0", 1);
  ok("[::ffff:192.0.2.1]:443", "::ffff:192.0.2.1", 443);
  ok("agents.example.com:65535", "agents.example.com", 65535);
  ok("0.0.0.0:08080", "0.0.0.0", 8080);
}

TEST_CASE("parse_host_port rejects malformed addresses naming the input") {
  auto err = [](std::string_view text) {
    auto r = parse_host_port(text);
    return r.has_value() ? std::string{} : r.err().message;
  };
  CHECK(err(":7878") == "invalid address \":7878\": empty host");
  CHECK(err("host") == "invalid address \"host\": missing \":PORT\"");
  CHECK(err("host:") == "invalid address \"host:\": missing port after \":\"");
  CHECK(err("host:0") == "invalid address \"host:0\": port 0 is not in 1..65535");
  CHECK(err("host:65536")
        == "invalid address \"host:65536\": port 65536 is not in 1..65535");
  CHECK(err("host:123456")
        == "invalid address \"host:123456\": port 123456 is not in 1..65535");
  CHECK(err("host:http")
        == "invalid address \"host:http\": port \"http\" is not a number");
  CHECK(err("host:-1") == "invalid address \"host:-1\": port \"-1\" is not a number");
  CHECK(err("") == "invalid address \"\": expected HOST:PORT");
  CHECK(err("::1:7878")
        == "invalid address \"::1:7878\": an IPv6 address must be in brackets, "
           "e.g. [::1]:7878");
  CHECK(err("[::1]") == "invalid address \"[::1]\": expected \":PORT\" after \"]\"");
  CHECK(err("[::1:80") == "invalid address \"[::1:80\": missing \"]\" after the "
                          "IPv6 address");
  CHECK(err("[]:80") == "invalid address \"[]:80\": empty host");
  CHECK(err("[localhost]:80")
        == "invalid address \"[localhost]:80\": invalid character 'l' in IPv6 "
           "address");
  CHECK(err("bad host:80")
        == "invalid address \"bad host:80\": invalid byte 0x20 in host");
  CHECK(err("a/b:80") == "invalid address \"a/b:80\": invalid character '/' in host");
  CHECK(err("new\nline:1")
        == "invalid address \"new\\nline:1\": invalid byte 0x0a in host");
}

// --- backends -------------------------------------------------------------------

TEST_CASE("backends defaults to the backend alone, whatever the file's backend") {
  auto d = parse_config("{}");
  REQUIRE(d.has_value());
  CHECK(d->backends == std::vector<backend_kind>{backend_kind::sandbox});
  CHECK(config{}.backends == std::vector<backend_kind>{backend_kind::sandbox});
  auto q = parse_config(R"({"backend": "qemu"})");
  REQUIRE(q.has_value());
  CHECK(q->backends == std::vector<backend_kind>{backend_kind::qemu});
  auto both = parse_config(R"({"backends": ["qemu", "sandbox"], "backend": "qemu"})");
  REQUIRE_MESSAGE(both.has_value(), (both ? std::string{} : both.err().message));
  CHECK(both->backend == backend_kind::qemu);
  CHECK(both->backends == std::vector<backend_kind>{backend_kind::qemu, backend_kind::sandbox});
  CHECK(contains(to_json(*both), "\"backends\": [\"qemu\", \"sandbox\"]"));
  CHECK(contains(default_config_json(), "\"backends\": [\"sandbox\"],\n"));
}

TEST_CASE("a bad backends list names the key and the problem") {
  CHECK(parse_error(R"({"backends": "sandbox"})")
        == "backends: expected an array, got \"sandbox\"");
  CHECK(parse_error(R"({"backends": []})")
        == "backends: expected at least one of sandbox, qemu, firecracker, got []");
  CHECK(parse_error(R"({"backends": ["sandbox", "vmware"]})")
        == "backends[1]: expected one of sandbox, qemu, firecracker, got \"vmware\"");
  CHECK(parse_error(R"({"backends": ["sandbox", 3]})")
        == "backends[1]: expected one of sandbox, qemu, firecracker, got 3");
  CHECK(parse_error(R"({"backends": ["qemu", "sandbox", "qemu"]})")
        == "backends[2]: \"qemu\" is listed twice");
  CHECK(parse_error(R"({"backends": ["qemu", "firecracker"]})")
        == "backends: expected to contain backend (\"sandbox\"), got [\"qemu\", "
           "\"firecracker\"]");
  CHECK(parse_error(R"({"backend": "firecracker", "backends": ["sandbox"]})")
        == "backends: expected to contain backend (\"firecracker\"), got [\"sandbox\"]");
}

TEST_CASE("backend names map both ways") {
  for (auto x : {backend_kind::sandbox, backend_kind::qemu, backend_kind::firecracker})
    CHECK(backend_from_string(to_string(x)) == x);
  CHECK_FALSE(backend_from_string("Sandbox").has_value());
  CHECK_FALSE(backend_from_string("").has_value());
}

TEST_CASE("the qemu and firecracker sections have their defaults and take every key") {
  config d;
  CHECK(d.qemu.binary == "qemu-system-x86_64");
  CHECK(d.qemu.kernel.empty());
  CHECK(d.qemu.initrd.empty());
  CHECK(d.qemu.accel == qemu_accel::automatic);
  CHECK(d.qemu.machine == qemu_machine::automatic);
  CHECK(d.qemu.vcpus == 1);
  CHECK(d.qemu.boot_timeout_ms == 60000);
  CHECK_FALSE(d.qemu.snapshots);
  CHECK_FALSE(d.firecracker.snapshots);
  CHECK(d.firecracker.binary == "firecracker");
  CHECK(d.firecracker.jailer.empty());
  CHECK(d.firecracker.vcpus == 1);
  CHECK(d.firecracker.boot_timeout_ms == 10000);
  CHECK(to_string(qemu_accel::automatic) == "auto");
  CHECK(to_string(qemu_machine::microvm) == "microvm");

  auto r = parse_config(R"({
    "qemu": {"binary": "/usr/local/bin/qemu-system-x86_64", "kernel": "/srv/guest/vmlinux",
             "initrd": "/srv/guest/initrd.img", "accel": "kvm", "machine": "microvm",
             "vcpus": 2, "boot_timeout_ms": 5000, "snapshots": true},
    "firecracker": {"binary": "/usr/bin/firecracker", "jailer": "jailer",
                    "kernel": "/srv/guest/vmlinux", "initrd": "/srv/guest/initrd.img",
                    "vcpus": 4, "boot_timeout_ms": 2000, "snapshots": true}
  })");
  REQUIRE_MESSAGE(r.has_value(), (r ? std::string{} : r.err().message));
  CHECK(r->qemu.binary == "/usr/local/bin/qemu-system-x86_64");
  CHECK(r->qemu.kernel == "/srv/guest/vmlinux");
  CHECK(r->qemu.initrd == "/srv/guest/initrd.img");
  CHECK(r->qemu.accel == qemu_accel::kvm);
  CHECK(r->qemu.machine == qemu_machine::microvm);
  CHECK(r->qemu.vcpus == 2);
  CHECK(r->qemu.boot_timeout_ms == 5000);
  CHECK(r->qemu.snapshots);
  CHECK(r->firecracker.snapshots);
  CHECK(r->firecracker.binary == "/usr/bin/firecracker");
  CHECK(r->firecracker.jailer == "jailer");
  CHECK(r->firecracker.kernel == "/srv/guest/vmlinux");
  CHECK(r->firecracker.initrd == "/srv/guest/initrd.img");
  CHECK(r->firecracker.vcpus == 4);
  CHECK(r->firecracker.boot_timeout_ms == 2000);
  // Configuring a backend does not enable it.
  CHECK(r->backends == std::vector<backend_kind>{backend_kind::sandbox});
}

TEST_CASE("bad qemu and firecracker values name their key") {
  CHECK(parse_error(R"({"qemu": {"accel": "hvf"}})")
        == "qemu.accel: expected one of auto, kvm, tcg, got \"hvf\"");
  CHECK(parse_error(R"({"qemu": {"machine": "pc"}})")
        == "qemu.machine: expected one of auto, microvm, q35, got \"pc\"");
  CHECK(parse_error(R"({"qemu": {"vcpus": 0}})")
        == "qemu.vcpus: expected an integer in 1..255, got 0");
  CHECK(parse_error(R"({"qemu": {"vcpus": 256}})")
        == "qemu.vcpus: expected an integer in 1..255, got 256");
  CHECK(parse_error(R"({"qemu": {"boot_timeout_ms": 99}})")
        == "qemu.boot_timeout_ms: expected an integer in 100..3600000, got 99");
  CHECK(parse_error(R"({"qemu": {"binary": ""}})")
        == "qemu.binary: expected a program name or an absolute path, got \"\"");
  CHECK(parse_error(R"({"qemu": {"binary": "bin/qemu"}})")
        == "qemu.binary: expected a program name or an absolute path, got \"bin/qemu\"");
  CHECK(parse_error(R"({"qemu": {"kernel": "vmlinuz"}})")
        == "qemu.kernel: expected an empty string or an absolute path, got \"vmlinuz\"");
  CHECK(parse_error(R"({"qemu": {"initrd": 1}})")
        == "qemu.initrd: expected a string, got 1");
  CHECK(parse_error(R"({"qemu": {"memory_mb": 128}})") == "qemu.memory_mb: unknown key");
  CHECK(parse_error(R"({"qemu": []})") == "qemu: expected an object, got [...]");
  CHECK(parse_error(R"({"firecracker": {"vcpus": 33}})")
        == "firecracker.vcpus: expected an integer in 1..32, got 33");
  CHECK(parse_error(R"({"firecracker": {"boot_timeout_ms": 3600001}})")
        == "firecracker.boot_timeout_ms: expected an integer in 100..3600000, got 3600001");
  CHECK(parse_error(R"({"firecracker": {"jailer": "./jailer"}})")
        == "firecracker.jailer: expected an empty string, a program name or an absolute path, "
           "got \"./jailer\"");
  CHECK(parse_error(R"({"firecracker": {"binary": "/"}})").empty()); // absolute: the backend checks it runs
  CHECK(parse_error(R"({"firecracker": {"kernel": "k"}})")
        == "firecracker.kernel: expected an empty string or an absolute path, got \"k\"");
  CHECK(parse_error(R"({"firecracker": {"accel": "kvm"}})") == "firecracker.accel: unknown key");
}
