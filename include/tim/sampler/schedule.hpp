// Schedules: the decreasing time grid t_0 > t_1 > ... > t_N a sampler steps through (N steps).
// A schedule is any type with `times(t_max, t_min) -> std::vector<double>` (the tim::Schedule
// concept); provided are linspace (the released default), a user-given grid, any callable
// t(i, N), a time-shifted linspace and the Karras (EDM) power law for few steps, and a runtime
// variant for the command line. Every grid is validated before sampling.
#pragma once

#include <algorithm>
#include <charconv>
#include <cmath>
#include <concepts>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <variant>
#include <vector>

#include "tim/core/error.hpp"

namespace tim {

//! A schedule: `s.times(t_max, t_min)` returns the time grid t_0 .. t_N for a transport whose
//! time range is [t_min, t_max]. The grid must be strictly decreasing, inside [t_min, t_max],
//! with at least two points (validate_time_grid says which point is wrong otherwise). It need
//! not start at t_max or end at t_min.
//! Example of a user schedule:
//!   struct Halving {  // t_max, t_max/2, t_max/4, ..., then t_min
//!     int steps;
//!     std::vector<double> times(double t_max, double t_min) const { ... }
//!   };
template <class S>
concept Schedule = requires(const S& s, double t_max, double t_min) {
  { s.times(t_max, t_min) } -> std::convertible_to<std::vector<double>>;
};

namespace detail {
//! The shortest decimal spelling of `value` that reads back exactly (for error messages).
inline std::string exact_decimal(double value) {
  char buffer[32];
  for (int digits = 6; digits <= 17; ++digits) {
    std::snprintf(buffer, sizeof buffer, "%.*g", digits, value);
    if (std::strtod(buffer, nullptr) == value || !std::isfinite(value)) break;
  }
  return buffer;
}

inline void check_steps(int steps, std::string_view schedule) {
  check(steps >= 1, schedule, " schedule: the number of steps must be at least 1, got ", steps);
}
}  // namespace detail

//! Checks a time grid; throws tim::Error naming the first offending index and its values when it
//! has fewer than two points, a non-finite value, a value outside [t_min, t_max], or is not
//! strictly decreasing.
inline void validate_time_grid(std::span<const double> times, double t_max, double t_min) {
  using detail::exact_decimal;
  check(times.size() >= 2, "time grid: needs at least 2 points (one step), got ", times.size());
  for (std::size_t i = 0; i < times.size(); ++i) {
    check(std::isfinite(times[i]), "time grid: t[", i, "] = ", exact_decimal(times[i]), " is not finite");
    check(times[i] >= t_min && times[i] <= t_max, "time grid: t[", i, "] = ", exact_decimal(times[i]),
          " is outside the transport's range [t_min, t_max] = [", exact_decimal(t_min), ", ",
          exact_decimal(t_max), "]");
    if (i > 0)
      check(times[i] < times[i - 1], "time grid: times must be strictly decreasing, but t[", i - 1,
            "] = ", exact_decimal(times[i - 1]), " <= t[", i, "] = ", exact_decimal(times[i]));
  }
}

//! The validated grid of `schedule` for the range [t_min, t_max].
template <Schedule S>
std::vector<double> make_time_grid(const S& schedule, double t_max, double t_min) {
  std::vector<double> times = schedule.times(t_max, t_min);
  validate_time_grid(times, t_max, t_min);
  return times;
}

//! `points` values from `start` to `end` exactly as torch.linspace computes them in float64:
//! step = (end - start) / (points - 1); the first half is fma(step, i, start), the second half
//! fma(-step, points - 1 - i, end), so both ends are exact. (PyTorch's CPU kernel compiles
//! `start + step * i` to a fused multiply-add on FMA machines; std::fma gives the same bits
//! everywhere.)
inline std::vector<double> linspace(double start, double end, int points) {
  check(points >= 2, "linspace: needs at least 2 points, got ", points);
  std::vector<double> values(static_cast<std::size_t>(points));
  const double step = (end - start) / static_cast<double>(points - 1);
  const int halfway = points / 2;
  for (int i = 0; i < points; ++i)
    values[static_cast<std::size_t>(i)] = i < halfway ? std::fma(step, static_cast<double>(i), start)
                                                      : std::fma(-step, static_cast<double>(points - 1 - i), end);
  return values;
}

//! N + 1 points linearly from t_max to t_min (SPEC 6; the released sampler's grid, in double).
struct LinspaceSchedule {
  int steps = 1;
  std::vector<double> times(double t_max, double t_min) const {
    detail::check_steps(steps, "linspace");
    return linspace(t_max, t_min, steps + 1);
  }
  std::string describe() const { return "linspace"; }
};
inline LinspaceSchedule linspace_schedule(int steps) {
  detail::check_steps(steps, "linspace");
  return {steps};
}

//! A grid the user gives (absolute times, strictly decreasing, inside the transport's range).
struct GridSchedule {
  std::vector<double> grid;
  std::vector<double> times(double, double) const { return grid; }
  std::string describe() const {
    std::string text;
    for (std::size_t i = 0; i < grid.size(); ++i) {
      if (i) text += ',';
      text += detail::exact_decimal(grid[i]);
    }
    return text;
  }
};
inline GridSchedule grid_schedule(std::vector<double> times) { return {std::move(times)}; }

//! t_i = time(i, N) for i = 0..N, or time(i, N, t_max, t_min) when the callable takes the range.
template <class F>
struct FunctionSchedule {
  int steps = 1;
  F time;
  std::vector<double> times(double t_max, double t_min) const {
    detail::check_steps(steps, "function");
    std::vector<double> values(static_cast<std::size_t>(steps) + 1);
    for (int i = 0; i <= steps; ++i) {
      if constexpr (std::invocable<const F&, int, int, double, double>)
        values[static_cast<std::size_t>(i)] = static_cast<double>(time(i, steps, t_max, t_min));
      else
        values[static_cast<std::size_t>(i)] = static_cast<double>(time(i, steps));
    }
    return values;
  }
};
//! Example: `tim::function_schedule(4, [](int i, int n) { return 1.0 - double(i) / n; })`.
template <class F>
  requires std::invocable<const F&, int, int> || std::invocable<const F&, int, int, double, double>
FunctionSchedule<F> function_schedule(int steps, F time) {
  detail::check_steps(steps, "function");
  return {steps, std::move(time)};
}

namespace detail {
//! t_min + (t_max - t_min) warp(u) over u = linspace(1, 0, N + 1), ends pinned to t_max, t_min.
template <class Warp>
std::vector<double> warped_linspace(int steps, double t_max, double t_min, Warp warp) {
  std::vector<double> values = linspace(1.0, 0.0, steps + 1);
  for (auto& u : values) u = t_min + (t_max - t_min) * warp(u);
  values.front() = t_max;
  values.back() = t_min;
  return values;
}
}  // namespace detail

//! Time-shifted linspace (the resolution shift of SD3): u' = s u / (1 + (s - 1) u) on the
//! linspace fractions u = 1 - i/N, t = t_min + (t_max - t_min) u'. shift > 1 spends the steps
//! at high noise (large t), which is where few-step samplers lose most; shift = 1 is linspace.
struct ShiftedSchedule {
  int steps = 1;
  double shift = 3.0;
  std::vector<double> times(double t_max, double t_min) const {
    detail::check_steps(steps, "shift");
    check(std::isfinite(shift) && shift > 0, "shift schedule: shift must be a positive number, got ", shift);
    return detail::warped_linspace(steps, t_max, t_min,
                                   [s = shift](double u) { return s * u / (1.0 + (s - 1.0) * u); });
  }
  std::string describe() const { return "shift:" + detail::exact_decimal(shift); }
};

//! Karras et al. (EDM) power law: t_i = (t_max^(1/rho) + i/N (t_min^(1/rho) - t_max^(1/rho)))^rho.
//! For EDM and VE, whose time is a noise level spanning decades; rho = 7 is EDM's choice.
struct KarrasSchedule {
  int steps = 1;
  double rho = 7.0;
  std::vector<double> times(double t_max, double t_min) const {
    detail::check_steps(steps, "karras");
    check(std::isfinite(rho) && rho > 0, "karras schedule: rho must be a positive number, got ", rho);
    check(t_min >= 0, "karras schedule: needs t_min >= 0, got ", t_min);
    std::vector<double> values = linspace(0.0, 1.0, steps + 1);
    const double high = std::pow(t_max, 1.0 / rho), low = std::pow(t_min, 1.0 / rho);
    for (auto& f : values) f = std::pow(high + f * (low - high), rho);
    values.front() = t_max;
    values.back() = t_min;
    return values;
  }
  std::string describe() const { return "karras:" + detail::exact_decimal(rho); }
};

//! One of the provided schedules chosen at run time; itself a Schedule.
struct AnySchedule {
  std::variant<LinspaceSchedule, GridSchedule, ShiftedSchedule, KarrasSchedule> schedule;
  std::vector<double> times(double t_max, double t_min) const {
    return std::visit([&](const auto& s) { return s.times(t_max, t_min); }, schedule);
  }
  //! The spelling parse_schedule reads back ("linspace", "shift:3", "karras:7", "1,0.5,0").
  std::string describe() const {
    return std::visit([](const auto& s) { return s.describe(); }, schedule);
  }
};

//! Parses a command-line schedule: "linspace", "shift:S", "karras:RHO" (with `steps` steps) or
//! a comma-separated list of times "1,0.75,0.5,0" (the grid itself; `steps` is then ignored
//! unless it is positive and disagrees, which is an error). Throws tim::Error on anything else.
inline AnySchedule parse_schedule(std::string_view text, int steps) {
  auto number = [&](std::string_view part, std::string_view what) {
    double value = 0;
    const auto [end, error] = std::from_chars(part.data(), part.data() + part.size(), value);
    check(error == std::errc() && end == part.data() + part.size() && !part.empty(), "schedule '", text, "': ",
          what, " '", part, "' is not a number");
    return value;
  };
  auto parameter = [&](std::string_view prefix) -> std::optional<double> {
    if (text.substr(0, prefix.size()) != prefix) return std::nullopt;
    return number(text.substr(prefix.size()), "parameter");
  };
  if (text == "linspace") return {LinspaceSchedule{steps}};
  if (auto s = parameter("shift:")) return {ShiftedSchedule{steps, *s}};
  if (auto rho = parameter("karras:")) return {KarrasSchedule{steps, *rho}};
  if (text.find(',') != std::string_view::npos) {
    GridSchedule grid;
    std::size_t start = 0;
    while (start <= text.size()) {
      const std::size_t comma = std::min(text.find(',', start), text.size());
      grid.grid.push_back(number(text.substr(start, comma - start), "time"));
      start = comma + 1;
    }
    check(steps <= 0 || static_cast<std::size_t>(steps) + 1 == grid.grid.size(), "schedule '", text, "' has ",
          grid.grid.size(), " times (", grid.grid.size() - 1, " steps) but ", steps, " steps were asked for");
    return {std::move(grid)};
  }
  fail("unknown schedule '", text,
       "' (expected linspace, shift:S, karras:RHO, or a comma-separated decreasing list of times)");
}

}  // namespace tim
