// The record of a training run: a JSONL log (one JSON object per logged step, flushed as written;
// on resume the rows past the checkpoint's step are dropped, so the log stays the log of one
// run), the progress line printed beside it, and the clock of training time that a time budget
// counts, carried across resumes in TrainingProgress::train_seconds (docs/training.md, "Log").
#pragma once

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "tim/core/error.hpp"
#include "tim/io/atomic_file.hpp"

namespace tim::train {

//! The lines of a JSONL log `text` whose "step" is at most `last_step`, in order, each ending in
//! a newline; `label` names the file in errors. Every non-empty line must be a JSON object with
//! an integer "step" (a tim::Error naming the line otherwise: the file is not a tim log).
inline std::string log_lines_through(const std::string& text, std::int64_t last_step, const std::string& label) {
  std::string kept;
  std::istringstream in(text);
  std::string line;
  std::int64_t number = 0;
  while (std::getline(in, line)) {
    ++number;
    if (line.empty()) continue;
    nlohmann::json row;
    try {
      row = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception&) {
      fail("training log '", label, "': line ", number, " is not JSON (expected one object per line)");
    }
    check(row.is_object(), "training log '", label, "': line ", number, " is not a JSON object");
    const auto step = row.find("step");
    check(step != row.end() && step->is_number_integer(), "training log '", label, "': line ", number,
          " has no integer \"step\"");
    if (step->get<std::int64_t>() <= last_step) kept += line + "\n";
  }
  return kept;
}

//! A JSONL training log at `path`. Opening keeps the rows of an existing log up to `last_step`
//! (the resumed checkpoint's step; 0 for a new run drops them all), rewritten atomically, and
//! appends from there. Each write is one line, flushed.
//! Example:
//!   tim::train::JsonlLog log(dir + "/log.jsonl", progress.step);
//!   log.write({{"step", step}, {"loss", loss}, {"grad_norm", norm}, {"lr", lr}});
class JsonlLog {
 public:
  JsonlLog(const std::string& path, std::int64_t last_step) : path_(path) {
    std::string kept;
    if (std::filesystem::exists(path)) {
      std::ifstream in(path, std::ios::binary);
      check(in.good(), "cannot read training log '", path, "'");
      std::ostringstream text;
      text << in.rdbuf();
      kept = log_lines_through(text.str(), last_step, path);
    }
    io::write_text_atomically(path, kept);
    out_.open(path, std::ios::binary | std::ios::app);
    check(out_.good(), "cannot open training log '", path, "' for appending");
  }

  //! Appends `row` (an object with an integer "step") as one line and flushes it.
  void write(const nlohmann::json& row) {
    check(row.is_object() && row.contains("step") && row["step"].is_number_integer(),
          "training log: a row must be an object with an integer \"step\"");
    out_ << row.dump() << '\n';
    out_.flush();
    check(out_.good(), "cannot write training log '", path_, "'");
  }

  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::ofstream out_;
};

//! The progress line of a logged step, e.g.
//!   "step    250  ep   2    3.51 min  lr 3.00e-04  loss 0.1234 (r=t 0.1000, r<t 0.1500)  |g| 0.812  4.20 steps/s"
//! `parts` are the named loss parts shown in parentheses, in order (NaN values print as nan).
inline std::string progress_line(std::int64_t step, std::int64_t epoch, double train_seconds, double lr, double loss,
                                 const std::vector<std::pair<std::string, double>>& parts, double grad_norm,
                                 double steps_per_second) {
  char head[160];
  std::snprintf(head, sizeof head, "step %6lld  ep %3lld  %7.2f min  lr %.2e  loss %.4f", static_cast<long long>(step),
                static_cast<long long>(epoch), train_seconds / 60.0, lr, loss);
  std::string line = head;
  if (!parts.empty()) {
    line += " (";
    for (std::size_t i = 0; i < parts.size(); ++i) {
      char part[96];
      std::snprintf(part, sizeof part, "%s%s %.4f", i ? ", " : "", parts[i].first.c_str(), parts[i].second);
      line += part;
    }
    line += ")";
  }
  char tail[96];
  std::snprintf(tail, sizeof tail, "  |g| %.3f  %.2f steps/s", grad_norm, steps_per_second);
  return line + tail;
}

//! Training time, accumulated across resumes: starts from the checkpoint's seconds and adds the
//! steady-clock time between laps. A time budget is `seconds() >= budget`.
class TrainingClock {
 public:
  explicit TrainingClock(double seconds_so_far = 0) : seconds_(seconds_so_far), last_(std::chrono::steady_clock::now()) {}
  //! Adds the time since the previous lap (or the start) and returns the total.
  double lap() {
    const auto now = std::chrono::steady_clock::now();
    seconds_ += std::chrono::duration<double>(now - last_).count();
    last_ = now;
    return seconds_;
  }
  double seconds() const { return seconds_; }
  //! Whether a budget of `budget_seconds` (<= 0: none) is used up.
  bool exhausted(double budget_seconds) const { return budget_seconds > 0 && seconds_ >= budget_seconds; }

 private:
  double seconds_;
  std::chrono::steady_clock::time_point last_;
};

}  // namespace tim::train
