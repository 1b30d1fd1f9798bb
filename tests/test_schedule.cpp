// Schedules: linspace exactly as torch.linspace in float64, the user grid, callables, the
// few-step families, the runtime parser, and validation with messages naming index and values.
#include <doctest/doctest.h>

#include <cmath>
#include <string>
#include <vector>

#include "tim/sampler/schedule.hpp"

namespace {

std::string error_of(auto&& body) {
  try {
    body();
  } catch (const tim::Error& e) {
    return e.what();
  }
  return "";
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

}  // namespace

TEST_CASE("linspace: N + 1 points, exact ends, torch.linspace's bits") {
  const auto grid = tim::linspace_schedule(4).times(1.0, 0.0);
  REQUIRE(grid.size() == 5);
  CHECK(grid == std::vector<double>{1.0, 0.75, 0.5, 0.25, 0.0});
  // torch.linspace(80, 0.01, 17, dtype=float64) on an FMA machine (tools/reference checks the
  // formula); index 5 is where the fused multiply-add differs from start + step * i.
  const auto edm = tim::linspace(80.0, 0.01, 17);
  CHECK(edm[0] == 80.0);
  CHECK(edm[5] == 55.003125000000004);
  CHECK(edm[8] == 40.004999999999995);
  CHECK(edm[11] == 25.006874999999997);
  CHECK(edm[16] == 0.01);
  const auto one = tim::linspace_schedule(1).times(1.57, 0.0);
  CHECK(one == std::vector<double>{1.57, 0.0});
}

TEST_CASE("schedules satisfy the concept, including a user type") {
  struct Halving {
    int steps;
    std::vector<double> times(double t_max, double t_min) const {
      std::vector<double> t{t_max};
      for (int i = 1; i < steps; ++i) t.push_back(t.back() / 2);
      t.push_back(t_min);
      return t;
    }
  };
  static_assert(tim::Schedule<Halving>);
  static_assert(tim::Schedule<tim::LinspaceSchedule> && tim::Schedule<tim::GridSchedule> &&
                tim::Schedule<tim::ShiftedSchedule> && tim::Schedule<tim::KarrasSchedule> &&
                tim::Schedule<tim::AnySchedule>);
  CHECK(tim::make_time_grid(Halving{3}, 1.0, 0.0) == std::vector<double>{1.0, 0.5, 0.25, 0.0});
}

TEST_CASE("grid and callable schedules") {
  CHECK(tim::make_time_grid(tim::grid_schedule({0.9, 0.4, 0.1}), 1.0, 0.0) == std::vector<double>{0.9, 0.4, 0.1});
  auto quadratic = tim::function_schedule(4, [](int i, int n) {
    const double u = 1.0 - double(i) / n;
    return u * u;
  });
  CHECK(quadratic.times(1, 0) == std::vector<double>{1.0, 0.5625, 0.25, 0.0625, 0.0});
  auto ranged = tim::function_schedule(2, [](int i, int n, double t_max, double t_min) {
    return t_max + (t_min - t_max) * i / n;
  });
  const auto halves = ranged.times(80, 0.01);
  REQUIRE(halves.size() == 3);
  CHECK(halves[0] == 80.0);
  CHECK(halves[1] == doctest::Approx(40.005).epsilon(1e-15));
  CHECK(halves[2] == doctest::Approx(0.01).epsilon(1e-12));  // the callable's own arithmetic
}

TEST_CASE("shifted schedule: shift 1 is linspace, shift > 1 front-loads high noise, ends exact") {
  const auto plain = tim::ShiftedSchedule{8, 1.0}.times(1.0, 0.0);
  const auto lin = tim::linspace_schedule(8).times(1.0, 0.0);
  for (std::size_t i = 0; i < lin.size(); ++i) CHECK(plain[i] == doctest::Approx(lin[i]).epsilon(1e-15));
  const auto shifted = tim::ShiftedSchedule{4, 3.0}.times(80.0, 0.01);
  CHECK(shifted.front() == 80.0);
  CHECK(shifted.back() == 0.01);
  // u = 0.5: 3 * 0.5 / (1 + 2 * 0.5) = 0.75
  CHECK(shifted[2] == doctest::Approx(0.01 + (80.0 - 0.01) * 0.75).epsilon(1e-15));
  tim::validate_time_grid(shifted, 80.0, 0.01);
  CHECK(contains(error_of([] { (void)tim::ShiftedSchedule{4, -1.0}.times(1, 0); }), "shift must be a positive"));
}

TEST_CASE("karras schedule: the EDM power law with exact ends") {
  const auto grid = tim::KarrasSchedule{4, 7.0}.times(80.0, 0.002);
  CHECK(grid.front() == 80.0);
  CHECK(grid.back() == 0.002);
  const double high = std::pow(80.0, 1 / 7.0), low = std::pow(0.002, 1 / 7.0);
  CHECK(grid[1] == doctest::Approx(std::pow(high + 0.25 * (low - high), 7.0)).epsilon(1e-14));
  tim::validate_time_grid(grid, 80.0, 0.002);
}

TEST_CASE("validation: messages name the index and the values") {
  auto message = [](std::vector<double> grid, double t_max = 1.0, double t_min = 0.0) {
    return error_of([&] { tim::validate_time_grid(grid, t_max, t_min); });
  };
  CHECK(message({1.0, 0.5, 0.0}).empty());
  CHECK(contains(message({1.0}), "at least 2 points"));
  CHECK(contains(message({}), "got 0"));
  CHECK(contains(message({1.0, 0.5, 0.5, 0.0}), "strictly decreasing, but t[1] = 0.5 <= t[2] = 0.5"));
  CHECK(contains(message({1.0, 0.3, 0.6}), "t[1] = 0.3 <= t[2] = 0.6"));
  CHECK(contains(message({1.2, 0.5}), "t[0] = 1.2 is outside the transport's range [t_min, t_max] = [0, 1]"));
  CHECK(contains(message({1.0, -1e-9}), "t[1] = -1e-09 is outside"));
  CHECK(contains(message({1.0, NAN, 0.0}), "t[1] = nan is not finite"));
  // Values print with the digits that tell them apart.
  CHECK(contains(message({0.6, 0.6000000000000001}), "t[0] = 0.6 <= t[1] = 0.6000000000000001"));
  CHECK(contains(error_of([] { (void)tim::linspace_schedule(0); }), "number of steps must be at least 1, got 0"));
  CHECK(contains(error_of([] { (void)tim::LinspaceSchedule{-2}.times(1, 0); }), "got -2"));
}

TEST_CASE("parse_schedule: command-line spellings") {
  CHECK(tim::parse_schedule("linspace", 4).times(1, 0) == tim::linspace(1, 0, 5));
  CHECK(tim::parse_schedule("shift:3", 4).times(1, 0) == tim::ShiftedSchedule{4, 3}.times(1, 0));
  CHECK(tim::parse_schedule("karras:7", 4).times(80, 0.01) == tim::KarrasSchedule{4, 7}.times(80, 0.01));
  CHECK(tim::parse_schedule("1,0.75,0.5,0", 0).times(1, 0) == std::vector<double>{1, 0.75, 0.5, 0});
  CHECK(tim::parse_schedule("1,0.75,0.5,0", 3).times(1, 0).size() == 4);
  CHECK(tim::parse_schedule("shift:2.5", 4).describe() == "shift:2.5");
  CHECK(tim::parse_schedule("1,0.5,0", 0).describe() == "1,0.5,0");
  CHECK(contains(error_of([] { (void)tim::parse_schedule("1,0.5,0", 4); }), "3 times (2 steps) but 4 steps"));
  CHECK(contains(error_of([] { (void)tim::parse_schedule("cosine", 4); }), "unknown schedule 'cosine'"));
  CHECK(contains(error_of([] { (void)tim::parse_schedule("shift:x", 4); }), "parameter 'x' is not a number"));
  CHECK(contains(error_of([] { (void)tim::parse_schedule("1,,0", 0); }), "time '' is not a number"));
}
