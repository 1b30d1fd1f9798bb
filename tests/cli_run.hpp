// Running the `tim` program as a subprocess in the CLI tests (test_cli.cpp, test_cli_scale.cpp):
// a temporary folder, the program's exit status and output, and the checks of success and of a
// user error.
#pragma once

#include <doctest/doctest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace tim_test {

namespace fs = std::filesystem;

// A fresh directory under the system temp dir, removed with everything in it at scope exit.
struct TempDir {
  fs::path path;
  TempDir() {
    static std::atomic<int> counter{0};
    path = fs::temp_directory_path() /
           ("tim_cli_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ignored;
    fs::remove_all(path, ignored);
  }
  std::string file(const std::string& name) const { return (path / name).string(); }
};

inline std::string quote(const std::string& text) {
  std::string quoted = "'";
  for (char ch : text) quoted += ch == '\'' ? std::string("'\\''") : std::string(1, ch);
  return quoted + "'";
}

inline std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

inline void write_text(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

struct RunResult {
  bool exited = false;  // false: killed by a signal (a crash)
  int code = -1;
  std::string out, err;
};

// Runs `tim ARGS` with stdout and stderr captured into files of `dir`; `environment` (e.g.
// "NAME=value ") is put before the command.
inline RunResult run_tim(const TempDir& dir, const std::string& args, const std::string& environment = "") {
  static std::atomic<int> counter{0};
  const int id = counter++;
  const std::string out = dir.file("stdout_" + std::to_string(id) + ".txt");
  const std::string err = dir.file("stderr_" + std::to_string(id) + ".txt");
  const std::string command =
      environment + quote(TIM_EXECUTABLE) + " " + args + " > " + quote(out) + " 2> " + quote(err);
  const int status = std::system(command.c_str());
  RunResult result;
  result.exited = status != -1 && WIFEXITED(status);
  result.code = result.exited ? WEXITSTATUS(status) : -1;
  result.out = read_text(out);
  result.err = read_text(err);
  return result;
}

// The program failed the way a user error should: exit code 1 and a message on stderr.
inline void check_user_error(const RunResult& result, const std::vector<std::string>& expected_parts) {
  INFO("stderr: ", result.err);
  INFO("stdout: ", result.out);
  REQUIRE(result.exited);
  CHECK(result.code == 1);
  CHECK(result.err.rfind("tim: error: ", 0) == 0);
  for (const auto& part : expected_parts) CHECK_MESSAGE(result.err.find(part) != std::string::npos, "missing: ", part);
}

inline void check_success(const RunResult& result) {
  INFO("stderr: ", result.err);
  INFO("stdout: ", result.out);
  REQUIRE(result.exited);
  REQUIRE(result.code == 0);
}


}  // namespace tim_test
