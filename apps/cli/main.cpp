// The `tim` command-line program: inspect a checkpoint, run one network evaluation on inputs
// from a safetensors file, sample latents and images, and time the network, for
// class-conditional (labels) and text-to-image (caption features) models, and evaluate the training
// objective once (train-step) and train a class-conditional model (train). Each subcommand lives
// in its own file (inspect.cpp, forward.cpp, sample*.cpp, bench.cpp, encode.cpp, train_step.cpp,
// train.cpp, convert.cpp) over common.hpp; this file
// builds the parser, runs the chosen subcommand and turns errors into exit codes. Usage and exit
// codes: docs/cli.md.
#include <CLI/CLI.hpp>

#include <exception>
#include <iostream>
#include <new>
#include <string>
#include <vector>

#include "common.hpp"
#include "tim/cpu/dispatch.hpp"

int main(int argc, char** argv) {
  CLI::App app{"tim: run class-conditional and text-to-image Transition Models (TiM) on the CPU", "tim"};
  // The version, the baseline the program was compiled for and the CPU kernels chosen at run time
  // by CPUID (tim/cpu/dispatch.hpp).
  app.set_version_flag("--version", [] {
    std::string text = std::string("tim ") + tim::version_string + "\nbaseline: " + tim_cli::cpu_baseline_name +
                       " (TIM_CPU_BASELINE)\n" + tim::cpu_dispatch::kernel_report_text();
    text.pop_back();  // CLI11 adds the last newline
    return text;
  });
  app.require_subcommand(1);
  app.footer("Exit codes: 0 success, 1 error (message on stderr), other: command-line usage error. See docs/cli.md.");

  const std::vector<tim_cli::Subcommand> subcommands{tim_cli::add_inspect(app), tim_cli::add_forward(app),
                                                     tim_cli::add_sample(app), tim_cli::add_bench(app),
                                                     tim_cli::add_encode(app),
                                                     tim_cli::add_serve(app),
                                                     tim_cli::add_decode(app),
                                                       tim_cli::add_train_step(app),
                                                       tim_cli::add_convert(app),
                                                       tim_cli::add_train(app)};
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    for (const auto& subcommand : subcommands)
      if (subcommand.command->parsed()) subcommand.run();
  } catch (const tim::Error& e) {
    std::cerr << "tim: error: " << e.what() << '\n';
    return 1;
  } catch (const std::bad_alloc&) {
    std::cerr << "tim: error: out of memory\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "tim: error: " << e.what() << '\n';
    return 1;
  }
  return 0;
}
