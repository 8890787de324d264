// agentvisor's command line. Parsing only: every sub-command's work lives in
// its own file behind commands.hpp.

#include "commands.hpp"

#include "bench_commands.hpp"

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
  auto* bench = app.add_subcommand(
    "bench", "Benchmarks in the shape of the users' reports, written as JSON (run as root)");
  bench->require_subcommand(1);
  agentvisor::bench::baseline_options base;
  auto* bench_baseline = bench->add_subcommand(
    "baseline", "Single agent: spawn time, memory per agent, supervisor CPU, tool latencies");
  bench_baseline->add_option("--iterations", base.iterations,
                             "Spawns, tool rounds and restarts (default 100)")
    ->check(CLI::Range(1, 1000000));
  bench_baseline->add_option("--memory-agents", base.memory_agents,
                             "Live agents for the memory figure (default 20)")
    ->check(CLI::Range(1, agentvisor::bench::max_concurrent_agents));
  bench_baseline->add_option("--out", base.out, "Write the JSON document here (default stdout)");
  bench_baseline->add_flag("--peers", base.peers,
                           "Time bwrap, unshare, crun and an Erlang/OTP restart in the same run");
  bench_baseline->add_flag("--quiet", base.quiet, "No progress line on a terminal");
  bench_baseline->callback([&] { rc = agentvisor::bench::run_baseline(base); });

  agentvisor::bench::concurrent_options conc;
  std::string agents_list = "5,10,25,50";
  auto* bench_conc = bench->add_subcommand(
    "concurrent", "Agents at once: total, spawn, execute, cleanup, throughput, memory, CPU");
  bench_conc->add_option("--agents", agents_list,
                         "Agent counts, comma-separated (default 5,10,25,50)");
  bench_conc->add_option("--out", conc.out, "Write the JSON document here (default stdout)");
  bench_conc->add_flag("--peers", conc.peers,
                       "Start as many bwrap, unshare and crun runs at once, in the same run");
  bench_conc->add_flag("--quiet", conc.quiet, "No progress line on a terminal");
  bench_conc->callback([&] {
    std::string err;
    auto counts = agentvisor::bench::parse_agent_counts(agents_list, &err);
    if (!counts) {
      std::fprintf(stderr, "agentvisor: %s (see 'agentvisor bench concurrent --help')\n",
                   err.c_str());
      rc = exit_usage;
      return;
    }
    conc.agents = std::move(*counts);
    rc = agentvisor::bench::run_concurrent(conc);
  });

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
