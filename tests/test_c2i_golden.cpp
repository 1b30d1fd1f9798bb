// The whole class-conditional network against float64 golden files written by our PyTorch
// reference (tools/reference/make_golden.py): double within 1e-10, float within 1e-4, relative
// to the largest output value.
#include <doctest/doctest.h>

#include <filesystem>

#include "compare.hpp"
#include "golden_source.hpp"
#include "tim/tim.hpp"

namespace {

template <class T>
void check_golden(const std::string& name, double tolerance) {
  auto file = tim::io::SafetensorsFile::open(tim_test::golden_path(name));
  tim_test::ParametersOnly parameters(file);
  auto model = tim::nn::load_c2i<T>(parameters);
  auto x = file.load<T>("input.x");
  auto t = file.load<T>("input.t");
  auto r = file.load<T>("input.r");
  auto y = file.load<std::int64_t>("input.y");
  auto expected = file.load<double>("output.out");
  tim::Tensor<T> out;
  model.forward(out, x, t, r, y);
  REQUIRE(out.shape() == expected.shape());
  const double error = tim_test::relative_error(out.data(), expected.data(), static_cast<std::size_t>(out.numel()));
  INFO("case ", name, " (", model.config.describe(), "): relative error ", error);
  const std::string precision = sizeof(T) == 8 ? "double" : "float";
  MESSAGE("C2I golden ", name, " in ", precision, ": relative error ", error);
  CHECK(error <= tolerance);
  // Guard against a vacuous pass: the reference output is not trivially small.
  double largest = 0;
  for (std::int64_t i = 0; i < expected.numel(); ++i) largest = std::max(largest, std::abs(expected.data()[i]));
  CHECK(largest > 1e-2);

  // A second call reuses the workspace and must give the same result.
  auto again = out.clone();
  model.forward(out, x, t, r, y);
  CHECK(std::equal(out.data(), out.data() + out.numel(), again.data()));
}

std::vector<std::string> golden_cases() {
  std::vector<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator(std::string(TIM_TEST_DATA_DIR) + "/golden"))
    if (entry.path().extension() == ".safetensors") names.push_back(entry.path().stem().string());
  std::sort(names.begin(), names.end());
  return names;
}

}  // namespace

TEST_CASE("golden: every case in double within 1e-10") {
  const auto names = golden_cases();
  REQUIRE(names.size() >= 8);
  for (const auto& name : names) {
    CAPTURE(name);
    check_golden<double>(name, 1e-10);
  }
}

TEST_CASE("golden: every case in float within 1e-4") {
  for (const auto& name : golden_cases()) {
    CAPTURE(name);
    check_golden<float>(name, 1e-4);
  }
}

TEST_CASE("golden: the projector is ignored and reported") {
  for (const auto& name : golden_cases()) {
    auto file = tim::io::SafetensorsFile::open(tim_test::golden_path(name));
    auto flag = file.metadata().find("has_projector");
    if (flag == file.metadata().end() || flag->second != "1") continue;
    tim_test::ParametersOnly parameters(file);
    auto model = tim::nn::load_c2i<float>(parameters);
    REQUIRE(!model.config.ignored.empty());
    for (const auto& ignored : model.config.ignored) CHECK(ignored.rfind("projector.", 0) == 0);
    return;
  }
  FAIL("no golden case with a projector");
}
