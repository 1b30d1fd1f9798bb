// The whole text-conditioned network against float64 golden files written by our PyTorch
// reference (tools/reference/make_t2i_golden.py, tests/data/golden_t2i/): double within 1e-10,
// float within 1e-4, relative to the largest output value.
#include <doctest/doctest.h>

#include <filesystem>

#include "compare.hpp"
#include "golden_source.hpp"
#include "tim/tim.hpp"

namespace {

const char* const folder = "golden_t2i";

template <class T>
double golden_error(const std::string& name) {
  auto file = tim::io::SafetensorsFile::open(tim_test::golden_path(name, folder));
  tim_test::ParametersOnly parameters(file);
  auto model = tim::nn::load_t2i<T>(parameters);
  auto x = file.load<T>("input.x");
  auto t = file.load<T>("input.t");
  auto r = file.load<T>("input.r");
  auto captions = file.load<T>("input.cap_feats");
  auto expected = file.load<double>("output.out");
  tim::Tensor<T> out;
  model.forward(out, x, t, r, captions);
  REQUIRE(out.shape() == expected.shape());
  const double error = tim_test::relative_error(out.data(), expected.data(), static_cast<std::size_t>(out.numel()));
  const std::string precision = std::is_same_v<T, float> ? "float" : "double";
  MESSAGE("T2I golden ", name, " in ", precision, ": relative error ", error);
  // Guard against a vacuous pass: the reference output is not trivially small.
  double largest = 0;
  for (std::int64_t i = 0; i < expected.numel(); ++i) largest = std::max(largest, std::abs(expected.data()[i]));
  CHECK(largest > 1e-2);

  // A second call reuses the workspace and must give the same result.
  auto again = out.clone();
  model.forward(out, x, t, r, captions);
  CHECK(std::equal(out.data(), out.data() + out.numel(), again.data()));
  return error;
}

std::vector<std::string> golden_cases() {
  std::vector<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator(std::string(TIM_TEST_DATA_DIR) + "/" + folder))
    if (entry.path().extension() == ".safetensors") names.push_back(entry.path().stem().string());
  std::sort(names.begin(), names.end());
  return names;
}

}  // namespace

TEST_CASE("T2I golden: every case in double within 1e-10") {
  const auto names = golden_cases();
  REQUIRE(names.size() >= 3);
  for (const auto& name : names) {
    CAPTURE(name);
    CHECK(golden_error<double>(name) <= 1e-10);
  }
}

TEST_CASE("T2I golden: every case in float within 1e-4") {
  for (const auto& name : golden_cases()) {
    CAPTURE(name);
    CHECK(golden_error<float>(name) <= 1e-4);
  }
}

TEST_CASE("T2I golden: the square and non-square cases are there") {
  const auto names = golden_cases();
  CHECK(std::find(names.begin(), names.end(), "square") != names.end());
  CHECK(std::find(names.begin(), names.end(), "nonsquare") != names.end());
  auto file = tim::io::SafetensorsFile::open(tim_test::golden_path("nonsquare", folder));
  const auto x = file.info("input.x").shape;
  CHECK(x[2] != x[3]);
}

TEST_CASE("T2I: batch elements are independent and caption lengths can change between calls") {
  auto file = tim::io::SafetensorsFile::open(tim_test::golden_path("nonsquare", folder));
  tim_test::ParametersOnly parameters(file);
  auto model = tim::nn::load_t2i<double>(parameters);
  auto x = file.load<double>("input.x");
  auto t = file.load<double>("input.t");
  auto r = file.load<double>("input.r");
  auto captions = file.load<double>("input.cap_feats");  // (2, 7, Dc)
  const auto M = captions.dim(1), Dc = captions.dim(2);
  tim::Tensor<double> whole, part;
  model.forward(whole, x, t, r, captions);
  const auto per_sample = whole.numel() / 2;
  for (std::int64_t b = 0; b < 2; ++b) {
    model.forward(part, x.slice(b, 1), t.slice(b, 1), r.slice(b, 1), captions.slice(b, 1));
    TIM_CHECK_CLOSE(part.data(), whole.data() + b * per_sample, static_cast<std::size_t>(per_sample), 1e-12, 1e-12);
  }
  // A shorter caption (its first 3 tokens) after a longer one, then the full one again: the
  // workspace keeps its larger caption buffers and the results are unaffected.
  auto short_captions = tim::Tensor<double>::empty({2, 3, Dc});
  for (std::int64_t b = 0; b < 2; ++b)
    std::copy(captions.data() + b * M * Dc, captions.data() + b * M * Dc + 3 * Dc, short_captions.data() + b * 3 * Dc);
  tim::Tensor<double> shorter;
  model.forward(shorter, x, t, r, short_captions);
  auto fresh = tim::nn::load_t2i<double>(parameters);
  tim::Tensor<double> shorter_fresh;
  fresh.forward(shorter_fresh, x, t, r, short_captions);
  CHECK(std::equal(shorter.data(), shorter.data() + shorter.numel(), shorter_fresh.data()));
  double difference = 0;
  for (std::int64_t i = 0; i < whole.numel(); ++i) difference = std::max(difference, std::abs(shorter.data()[i] - whole.data()[i]));
  CHECK(difference > 1e-3);  // the caption matters
  model.forward(part, x, t, r, captions);
  CHECK(std::equal(part.data(), part.data() + part.numel(), whole.data()));
}

TEST_CASE("T2I golden: the projector is ignored and reported") {
  auto file = tim::io::SafetensorsFile::open(tim_test::golden_path("square", folder));
  REQUIRE(file.metadata().at("has_projector") == "1");
  tim_test::ParametersOnly parameters(file);
  auto model = tim::nn::load_t2i<float>(parameters);
  REQUIRE(!model.config.ignored.empty());
  for (const auto& ignored : model.config.ignored) CHECK(ignored.rfind("projector.", 0) == 0);
}
