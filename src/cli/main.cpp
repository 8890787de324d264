// agentvisor's command line. Parsing only: every sub-command's work lives in
// its own file behind commands.hpp.

#include "commands.hpp"

#include <CLI/CLI.hpp>

#include <cstdio>
#include <iostream>

#ifndef AGENTVISOR_VERSION
#error "AGENTVISOR_VERSION must be defined by the build"
#endif

using namespace agentvisor::cli;

namespace {

// CLI11 reports usage errors with its own exit codes and sometimes several
// lines; we promise one line on stderr and exit code 2.
int usage_error(const CLI::App& app, const CLI::ParseError& e,
                int argc, char** argv) {
  std::string msg = e.what();
  // CLI11 calls an unknown first word either an extra argument or a missing
  // sub-command; both mean the same to a user.
  bool no_sub = app.get_subcommands().empty();
  if (no_sub && argc > 1 && argv[1][0] != '-')
    msg = std::string{"unknown sub-command '"} + argv[1] + "'";
  else if (no_sub && e.get_name() == "RequiredError")
    msg = "a sub-command is required (supervisor, chaos, bench, config, version)";
  std::fprintf(stderr, "agentvisor: %s (see 'agentvisor --help')\n", msg.c_str());
  return exit_usage;
}

} // namespace

int agentvisor::cli::not_built_yet(const std::string& what) {
  std::fprintf(stderr, "agentvisor %s: not built yet\n", what.c_str());
  return exit_not_built;
}

int main(int argc, char** argv) {
  CLI::App app{"agentvisor: a supervisor for AI-agent sandboxes", "agentvisor"};
  app.require_subcommand(1);
  app.set_version_flag("--version", AGENTVISOR_VERSION);
  app.failure_message(CLI::FailureMessage::simple);

  int rc = exit_ok;

  // supervisor
  supervisor_options sup;
  auto* supervisor = app.add_subcommand(
    "supervisor", "Run the supervisor: the actor tree, the I/O thread and the API");
  supervisor->add_option("--config", sup.config_file,
                         "JSON config file (default: built-in defaults)");
  supervisor->add_option("--listen", sup.listen,
                         "API listen address HOST:PORT (overrides api.listen)");
  supervisor->add_option("--token-file", sup.token_file,
                         "API bearer token file (overrides api.token_file)");
  supervisor->add_flag("--print-config", sup.print_config,
                       "Print the effective configuration as JSON and exit");
  supervisor->callback([&] { rc = run_supervisor(sup); });

  // chaos
  auto* chaos = app.add_subcommand("chaos", "Run chaos scenarios against sandboxes");
  chaos->require_subcommand(1);
  chaos_run_options ch;
  uint64_t seed = 0;
  auto* chaos_run = chaos->add_subcommand("run", "Run a scenario file");
  chaos_run->add_option("scenario", ch.scenario, "Scenario JSON file")->required();
  auto* seed_opt = chaos_run->add_option("--seed", seed, "Random seed (same seed, same faults)");
  chaos_run->add_option("--report", ch.report_dir, "Directory for report.json and report.html");
  chaos_run->add_option("--api", ch.api_url, "Run against a running supervisor at this URL");
  chaos_run->add_option("--token-file", ch.token_file, "Token file for --api");
  chaos_run->callback([&] {
    if (seed_opt->count() > 0)
      ch.seed = seed;
    rc = run_chaos(ch);
  });

  // bench
  auto* bench = app.add_subcommand("bench", "Benchmarks that write JSON results");
  bench->require_subcommand(1);
  unsigned iterations = 0;
  std::string out_file, agents_list;
  bool peers = false;
  auto* bench_baseline = bench->add_subcommand("baseline", "Single-agent baseline");
  bench_baseline->add_option("--iterations", iterations, "Iterations");
  bench_baseline->add_option("--out", out_file, "Output JSON file");
  bench_baseline->callback([&] { rc = not_built_yet("bench baseline"); });
  auto* bench_conc = bench->add_subcommand("concurrent", "Concurrent agents");
  bench_conc->add_option("--agents", agents_list, "Agent counts, e.g. 5,10,25,50");
  bench_conc->add_option("--out", out_file, "Output JSON file");
  bench_conc->add_flag("--peers", peers, "Time peer sandboxes in the same run");
  bench_conc->callback([&] { rc = not_built_yet("bench concurrent"); });

  // config
  auto* config = app.add_subcommand("config", "Inspect configuration");
  config->require_subcommand(1);
  std::string check_file;
  auto* config_check = config->add_subcommand("check", "Validate a config file");
  config_check->add_option("file", check_file, "JSON config file")->required();
  config_check->callback([&] { rc = run_config_check(check_file); });
  config->add_subcommand("defaults", "Print the built-in default config")
    ->callback([&] { rc = run_config_defaults(); });

  // version
  app.add_subcommand("version", "Print the version")->callback([&] {
    std::printf("agentvisor %s\n", AGENTVISOR_VERSION);
  });

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    return usage_error(app, e, argc, argv);
  }
  return rc;
}
