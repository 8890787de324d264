#pragma once
// Shared by the benchmark smoke tests: run a benchmark program as a user
// would (stderr captured, optionally as nobody) and check its JSON.

#include <doctest/doctest.h>

#include <simdjson.h>

#include <fcntl.h>
#include <grp.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace bench_test {

namespace fs = std::filesystem;

struct run_result {
  int exit_code = -1;
  std::string err; ///< what it wrote on stderr
};

/// Runs the benchmark at `path` with `args`, stderr captured, and waits for it. With
/// `as_nobody`, the child drops to uid/gid 65534 first.
inline run_result run_bench(const char* path, const std::vector<std::string>& args,
                            bool as_nobody = false) {
  auto err_path = fs::temp_directory_path() / ("bench-test-" + std::to_string(::getpid()) + ".err");
  run_result r;
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    int fd = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    if (fd < 0 || ::dup2(fd, 2) < 0)
      ::_exit(126);
    if (as_nobody) {
      if (::setgroups(0, nullptr) != 0 || ::setresgid(65534, 65534, 65534) != 0
          || ::setresuid(65534, 65534, 65534) != 0)
        ::_exit(126);
      if (::access(path, X_OK) != 0)
        ::_exit(125); // the build tree is not reachable for nobody here
    }
    std::vector<char*> argv{const_cast<char*>(path)};
    for (const auto& a : args)
      argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execv(path, argv.data());
    ::_exit(127);
  }
  int st = 0;
  REQUIRE(::waitpid(pid, &st, 0) == pid);
  r.exit_code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  std::ifstream in(err_path);
  std::ostringstream ss;
  ss << in.rdbuf();
  r.err = ss.str();
  fs::remove(err_path);
  return r;
}

inline bool contains(const std::string& hay, const std::string& needle) {
  return hay.find(needle) != std::string::npos;
}

inline double number(simdjson::dom::element e) {
  double d = 0;
  if (e.is_int64())
    return static_cast<double>(int64_t(e));
  if (e.is_uint64())
    return static_cast<double>(uint64_t(e));
  REQUIRE_MESSAGE(!e.get_double().get(d), "expected a number");
  return d;
}

/// Checks one order-statistics block: count, and min <= p50 <= p95 <= p99 <= max.
inline void check_stats(simdjson::dom::object o, const char* what, uint64_t count) {
  INFO(what);
  CHECK(uint64_t(o["count"]) == count);
  double min = number(o["min"]), p50 = number(o["p50"]), p95 = number(o["p95"]),
         p99 = number(o["p99"]), max = number(o["max"]), mean = number(o["mean"]);
  CHECK(min > 0);
  CHECK(min <= p50);
  CHECK(p50 <= p95);
  CHECK(p95 <= p99);
  CHECK(p99 <= max);
  CHECK(mean >= min);
  CHECK(mean <= max);
}

/// Parses the JSON document at `path` (REQUIREs it is valid) and removes
/// the file.
inline simdjson::dom::element load_json(simdjson::dom::parser& parser, const fs::path& path) {
  simdjson::dom::element doc;
  auto loaded = simdjson::padded_string::load(path.string());
  REQUIRE(loaded.error() == simdjson::SUCCESS);
  REQUIRE_MESSAGE(parser.parse(loaded.value()).get(doc) == simdjson::SUCCESS, "not valid JSON");
  fs::remove(path);
  return doc;
}

} // namespace bench_test

