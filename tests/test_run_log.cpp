// The record of a training run (tim/train/run_log.hpp): the JSONL log keeps the rows up to the
// resumed step and appends after them, bad logs are errors naming the line; the progress line;
// the training clock carried across resumes.
#include <doctest/doctest.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "tim/train/run_log.hpp"

namespace {
std::string read_all(const std::string& path) {
  std::ifstream in(path);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}
}  // namespace

TEST_CASE("training log: rows past the resumed step are dropped, new rows appended and flushed") {
  const auto dir = std::filesystem::temp_directory_path() / ("tim_run_log_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "log.jsonl").string();
  {
    tim::train::JsonlLog log(path, 0);
    for (int step : {25, 50, 75}) log.write({{"step", step}, {"loss", 1.0 / step}});
    CHECK(read_all(path).find("\"step\":75") != std::string::npos);  // flushed while the log is open
  }
  {
    tim::train::JsonlLog resumed(path, 50);  // the checkpoint was at step 50: row 75 goes
    resumed.write({{"step", 75}, {"loss", 0.5}});
  }
  std::istringstream lines(read_all(path));
  std::string line;
  std::vector<std::int64_t> steps;
  while (std::getline(lines, line)) steps.push_back(nlohmann::json::parse(line).at("step").get<std::int64_t>());
  CHECK(steps == std::vector<std::int64_t>{25, 50, 75});
  CHECK(read_all(path).find("0.5") != std::string::npos);
  { tim::train::JsonlLog fresh(path, 0); }  // a new run starts an empty log
  CHECK(read_all(path).empty());
  CHECK_THROWS_AS(tim::train::JsonlLog(path, 0).write({{"loss", 1}}), tim::Error);
  std::filesystem::remove_all(dir);
}

TEST_CASE("training log: a file that is not a tim log is an error naming the line") {
  using tim::train::log_lines_through;
  CHECK(log_lines_through("{\"step\": 1}\n\n{\"step\": 3, \"x\": [1]}\n", 2, "l") == "{\"step\": 1}\n");
  CHECK_THROWS_WITH_AS(log_lines_through("{\"step\": 1}\nnot json\n", 5, "run/log.jsonl"),
                       doctest::Contains("'run/log.jsonl': line 2 is not JSON"), tim::Error);
  CHECK_THROWS_WITH_AS(log_lines_through("[1, 2]\n", 5, "l"), doctest::Contains("line 1 is not a JSON object"), tim::Error);
  CHECK_THROWS_WITH_AS(log_lines_through("{\"step\": 1.5}\n", 5, "l"), doctest::Contains("no integer \"step\""), tim::Error);
}

TEST_CASE("progress line and training clock") {
  CHECK(tim::train::progress_line(250, 2, 210.6, 3e-4, 0.12345, {{"r=t", 0.1}, {"r<t", 0.15}}, 0.8124, 4.2) ==
        "step    250  ep   2     3.51 min  lr 3.00e-04  loss 0.1235 (r=t 0.1000, r<t 0.1500)  |g| 0.812  4.20 steps/s");
  CHECK(tim::train::progress_line(1, 0, 0, 1e-4, 1, {}, 1, 1).find("(") == std::string::npos);
  tim::train::TrainingClock clock(100.0);
  CHECK(clock.lap() >= 100.0);
  CHECK(clock.exhausted(100.0));
  CHECK_FALSE(clock.exhausted(0));  // no budget
  CHECK_FALSE(clock.exhausted(1e9));
}
