// The whole networks and the sampler on the GPU (suite "cuda": needs a GPU): every C2I and T2I
// golden case through nn::C2IModel<T, tim::cuda> / nn::T2IModel<T, tim::cuda> against the
// PyTorch reference's float64 output and against the CPU model; the sampler (the same
// tim::TransitionSampler as on the CPU, its state on the device) on the C2I and T2I sampler golden
// cases and against the CPU sampler; the generator and transition kernels against the host's; and
// no allocation, on the device or the host, after a sampling run's first step.
#include <doctest/doctest.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <sstream>
#include <type_traits>
#include <string>
#include <vector>

#include "allocation_counter.hpp"
#include "device_helpers.cuh"
#include "golden_source.hpp"

namespace {

std::vector<std::string> golden_cases(const std::string& folder) {
  std::vector<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator(std::string(TIM_TEST_DATA_DIR) + "/" + folder))
    if (entry.path().extension() == ".safetensors") names.push_back(entry.path().stem().string());
  std::sort(names.begin(), names.end());
  return names;
}

//! A host tensor (any stored dtype) as a device tensor of T with the same shape.
template <class T>
tim::Tensor<T, tim::cuda> upload(const tim::io::SafetensorsFile& file, const std::string& name) {
  return tim::to_backend<tim::cuda>(file.load<T>(name));
}

template <class T>
std::vector<double> download(const tim::Tensor<T, tim::cuda>& t) {
  const auto values = tim_test::to_host(t.data(), static_cast<std::size_t>(t.numel()));
  return {values.begin(), values.end()};
}

//! Relative error limits against the float64 reference: float as the CPU's golden test; the
//! bfloat16 limit is an estimate (a bfloat16 residual stream through every block), to be
//! confirmed on the first GPU run.
template <class T>
constexpr double network_tolerance() {
  // bfloat16: on an H100 (2026-11-26) the golden cases gave 0.0056 to 0.015; twice the largest.
  return std::is_same_v<T, float> ? 1e-4 : 3e-2;
}

template <class T>
void check_c2i_case(const std::string& name) {
  auto file = tim::io::SafetensorsFile::open(tim_test::golden_path(name));
  tim_test::ParametersOnly parameters(file);
  const auto model = tim::nn::load_c2i<T, tim::cuda>(parameters);
  const auto x = upload<T>(file, "input.x"), t = upload<T>(file, "input.t"), r = upload<T>(file, "input.r");
  const auto y = file.load<std::int64_t>("input.y");  // labels stay on the host
  const auto expected = file.load<double>("output.out");
  tim::Tensor<T, tim::cuda> out;
  model.forward(out, x, t, r, y);
  REQUIRE(out.shape() == expected.shape());
  const auto actual = download(out);
  const double error = tim_test::relative_error(actual.data(), expected.data(), actual.size());
  INFO("case ", name, " (", model.config.describe(), "): relative error ", error);
  CHECK(error <= network_tolerance<T>());
  MESSAGE("C2I ", name, std::string(std::is_same_v<T, float> ? " float32" : " bfloat16"), ": relative error ", error);

  // A second call reuses the workspace (no allocation) and gives the same result.
  const auto allocations = tim::cuda::allocation_count();
  model.forward(out, x, t, r, y);
  CHECK(tim::cuda::allocation_count() == allocations);
  CHECK(download(out) == actual);

  if constexpr (std::is_same_v<T, float>) {  // and the CPU model on the same inputs, closer still
    const auto cpu_model = tim::nn::load_c2i<float>(parameters);
    tim::Tensor<float> cpu_out;
    cpu_model.forward(cpu_out, file.load<float>("input.x"), file.load<float>("input.t"), file.load<float>("input.r"), y);
    CHECK(tim_test::relative_error(actual.data(), cpu_out.data(), actual.size()) <= 2e-5);
  }
}

template <class T>
void check_t2i_case(const std::string& name) {
  auto file = tim::io::SafetensorsFile::open(tim_test::golden_path(name, "golden_t2i"));
  tim_test::ParametersOnly parameters(file);
  const auto model = tim::nn::load_t2i<T, tim::cuda>(parameters);
  const auto x = upload<T>(file, "input.x"), t = upload<T>(file, "input.t"), r = upload<T>(file, "input.r");
  const auto captions = upload<T>(file, "input.cap_feats");
  const auto expected = file.load<double>("output.out");
  tim::Tensor<T, tim::cuda> out;
  model.forward(out, x, t, r, captions);
  REQUIRE(out.shape() == expected.shape());
  const auto actual = download(out);
  const double error = tim_test::relative_error(actual.data(), expected.data(), actual.size());
  INFO("case ", name, " (", model.config.describe(), "): relative error ", error);
  CHECK(error <= network_tolerance<T>());
  MESSAGE("T2I ", name, std::string(std::is_same_v<T, float> ? " float32" : " bfloat16"), ": relative error ", error);
}

std::string sampler_dir() { return std::string(TIM_TEST_DATA_DIR) + "/sampler_golden"; }

//! Sampler golden case `name` of `folder` with `model` (C2I or T2I) on the GPU, its condition
//! from the file; returns the largest relative error over the case's step counts.
template <class Model>
double run_sampler_case(Model& model, const std::string& folder, const std::string& name, double tolerance) {
  using T = typename Model::value_type;
  auto file = tim::io::SafetensorsFile::open(folder + "/" + name + ".safetensors");
  const auto& meta = file.metadata();
  const auto z = tim::to_backend<tim::cuda>(file.load<double>("input.z"));
  typename Model::Condition condition;
  if constexpr (std::is_same_v<Model, tim::nn::T2IModel<T, tim::cuda>>) {
    condition = upload<T>(file, "input.cap_feats");
    model.set_null_caption(upload<T>(file, "input.null_cap_feats"));
  } else {
    condition = file.load<std::int64_t>("input.y");
  }
  const auto options = tim_test::sampler_options_of<tim::cuda>(meta);
  double worst = 0;
  std::stringstream steps_text(meta.at("steps"));
  for (std::string part; std::getline(steps_text, part, ',');) {
    const int steps = std::stoi(part);
    CAPTURE(steps);
    const auto expected = file.load<double>("output.x_" + std::to_string(steps) + "step");
    const auto result = std::visit(
        [&](auto transport) {
          tim::TransitionSampler sampler{model, transport, tim::linspace_schedule(steps)};
          return sampler.sample(z, condition, options);
        },
        tim::parse_transport(meta.at("transport")));
    const auto x = tim::to_host(result.x);
    REQUIRE(x.shape() == expected.shape());
    const double error = tim_test::relative_error(x.data(), expected.data(), std::size_t(expected.numel()));
    INFO("case ", name, " N=", steps, ": relative error ", error);
    CHECK(error <= tolerance);
    worst = std::max(worst, error);
  }
  return worst;
}

//! Every case of a sampler golden folder with `model` on the GPU; returns how many ran.
template <class Model>
int run_sampler_folder(Model& model, const std::string& folder, double tolerance) {
  int cases = 0;
  for (const auto& entry : std::filesystem::directory_iterator(folder)) {
    const auto name = entry.path().stem().string();
    if (entry.path().extension() != ".safetensors" || name == "model") continue;
    CAPTURE(name);
    MESSAGE(name, ": largest relative error ", run_sampler_case(model, folder, name, tolerance));
    ++cases;
  }
  return cases;
}

std::string t2i_sampler_dir() { return std::string(TIM_TEST_DATA_DIR) + "/sampler_golden_t2i"; }

}  // namespace

TEST_SUITE("cuda") {

TEST_CASE_TEMPLATE("cuda network: every C2I golden case", T, float, tim::bfloat16) {
  const auto names = golden_cases("golden");
  REQUIRE(names.size() >= 8);
  for (const auto& name : names) {
    CAPTURE(name);
    check_c2i_case<T>(name);
  }
}

TEST_CASE_TEMPLATE("cuda network: every T2I golden case", T, float, tim::bfloat16) {
  const auto names = golden_cases("golden_t2i");
  REQUIRE(names.size() >= 3);
  for (const auto& name : names) {
    CAPTURE(name);
    check_t2i_case<T>(name);
  }
}

TEST_CASE("cuda sampler: every C2I sampler golden case with the network on the GPU (float32)") {
  auto model = tim::load_c2i<float, tim::cuda>(sampler_dir() + "/model.safetensors");
  CHECK(run_sampler_folder(model, sampler_dir(), 1e-4) >= 6);
}

TEST_CASE("cuda sampler: every T2I sampler golden case with the network on the GPU (float32)") {
  // The same tolerance as the CPU's float network against the float64 reference (test_t2i_sampler).
  auto model = tim::load_t2i<float, tim::cuda>(t2i_sampler_dir() + "/model.safetensors");
  CHECK(run_sampler_folder(model, t2i_sampler_dir(), 1e-4) >= 3);
}

TEST_CASE("cuda sampler: a guided 4-step T2I run and a T2I forward agree with the CPU") {
  // The same float network on both backends, the same inputs: the GPU result against the CPU's.
  // Float32 everywhere, no TF32: the two differ by the order of float sums (GEMM blocking,
  // attention tiling), a few ulp per operation, ~1e-6 relative after 4 steps of a 2-block network.
  const auto path = t2i_sampler_dir() + "/model.safetensors";
  auto cpu_model = tim::load_t2i<float>(path);
  auto gpu_model = tim::load_t2i<float, tim::cuda>(path);
  auto file = tim::io::SafetensorsFile::open(t2i_sampler_dir() + "/cfg_stochastic.safetensors");
  const auto cap_feats = file.load<float>("input.cap_feats");
  const auto null_cap_feats = file.load<float>("input.null_cap_feats");
  cpu_model.set_null_caption(null_cap_feats);
  gpu_model.set_null_caption(tim::to_backend<tim::cuda>(null_cap_feats));
  const auto z = file.load<double>("input.z");

  // One forward at (t, r) = (0.7, 0.3).
  const std::int64_t B = z.dim(0);
  auto x = tim::Tensor<float>::empty(z.shape());
  for (std::int64_t i = 0; i < z.numel(); ++i) x.data()[i] = static_cast<float>(z.data()[i]);
  auto t_in = tim::Tensor<float>::empty({B}), r_in = tim::Tensor<float>::empty({B});
  std::fill_n(t_in.data(), B, 0.7f);
  std::fill_n(r_in.data(), B, 0.3f);
  tim::Tensor<float> cpu_out;
  tim::Tensor<float, tim::cuda> gpu_out;
  cpu_model.forward(cpu_out, x, t_in, r_in, cap_feats);
  gpu_model.forward(gpu_out, tim::to_backend<tim::cuda>(x), tim::to_backend<tim::cuda>(t_in),
                    tim::to_backend<tim::cuda>(r_in), tim::to_backend<tim::cuda>(cap_feats));
  const auto gpu_host = tim::to_host(gpu_out);
  REQUIRE(gpu_host.shape() == cpu_out.shape());
  TIM_CHECK_CLOSE(gpu_host.data(), cpu_out.data(), std::size_t(cpu_out.numel()), 1e-5, 1e-5);

  // Guided (cfg 2.5 on the whole window but the first step) and stochastic, 4 steps.
  const tim::SamplerOptions<> cpu_options{.cfg_scale = 2.5, .stochasticity = 0.2, .seed = 11};
  const tim::SamplerOptions<tim::cuda> gpu_options{.cfg_scale = 2.5, .stochasticity = 0.2, .seed = 11};
  tim::TransitionSampler cpu_sampler{cpu_model, tim::OtFm{}, tim::linspace_schedule(4)};
  tim::TransitionSampler gpu_sampler{gpu_model, tim::OtFm{}, tim::linspace_schedule(4)};
  const auto expected = cpu_sampler.sample(z, cap_feats, cpu_options);
  const auto actual = tim::to_host(gpu_sampler.sample(tim::to_backend<tim::cuda>(z),
                                                      tim::to_backend<tim::cuda>(cap_feats), gpu_options)
                                       .x);
  const double error = tim_test::relative_error(actual.data(), expected.x.data(), std::size_t(actual.numel()));
  MESSAGE("guided stochastic 4-step T2I run, GPU against CPU (float): relative error ", error);
  CHECK(error <= 1e-5);
}

TEST_CASE("cuda sampler: a guided stochastic run allocates nothing, on the device or the host, after its first step") {
  const auto model = tim::load_c2i<float, tim::cuda>(sampler_dir() + "/model.safetensors");
  const auto& c = model.config;
  const std::int64_t B = 3, side = 4 * c.patch;
  tim::TransitionSampler sampler{model, tim::OtFm{}, tim::linspace_schedule(6)};
  auto labels = tim::Tensor<std::int64_t>::empty({B});
  for (std::int64_t b = 0; b < B; ++b) labels.data()[b] = b % c.num_classes;
  const auto noise = tim::initial_noise<tim::cuda>({B, c.in_channels, side, side}, 3);
  std::vector<std::int64_t> device_allocations;
  device_allocations.reserve(6);  // the callback's own bookkeeping must not allocate while counted
  long host_allocations = -1;
  const auto result = sampler.sample(noise, labels,
                                     {.cfg_scale = 2.0, .guidance_high = 0.9, .stochasticity = 0.3,
                                      .keep_trajectory = true,
                                      .on_step = [&](const tim::StepInfo<tim::cuda>& info) {
                                        device_allocations.push_back(tim::cuda::allocation_count() +
                                                                     tim::cuda::scratch_allocation_count());
                                        if (info.step == 0) tim_test::start_counting_allocations();
                                        if (info.step == info.steps - 1)
                                          host_allocations = tim_test::stop_counting_allocations();
                                        return true;
                                      }});
  REQUIRE(device_allocations.size() == 6);
  // Step 0 (t = t_max) is unguided (B rows), step 1 the first guided one (2B rows): the sampler
  // sized everything for 2B before step 0, so no step allocates.
  for (std::size_t i = 1; i < device_allocations.size(); ++i) CHECK(device_allocations[i] == device_allocations[0]);
  CHECK(host_allocations == 0);
  CHECK(result.trajectory.shape() == tim::Shape{7, B, c.in_channels, side, side});
}

TEST_CASE("cuda sampler: bfloat16 network stays close to the reference") {
  auto model = tim::load_c2i<tim::bfloat16, tim::cuda>(sampler_dir() + "/model.safetensors");
  MESSAGE("otfm_cfg (bfloat16 network): largest relative error ",
          run_sampler_case(model, sampler_dir(), "otfm_cfg", 8e-2));  // 0.040 on an H100 (commit 5024ff4)
}

TEST_CASE("cuda random: the same seed gives the same noise as the CPU") {
  const std::int64_t B = 5, per_sample = 4 * 32 * 32 + 3;  // not a multiple of 4
  const auto expected = tim::initial_noise({B, per_sample}, 1234, 17);
  const auto actual = tim::to_host(tim::initial_noise<tim::cuda>({B, per_sample}, 1234, 17));
  // Philox words are integer arithmetic (identical); Box-Muller's log/cos/sin may differ from the
  // host's libm in the last bits.
  TIM_CHECK_CLOSE(actual.data(), expected.data(), std::size_t(actual.numel()), 1e-13, 1e-13);
}

TEST_CASE("cuda sampling kernels: guidance, deterministic and stochastic transitions as on the host") {
  const std::int64_t B = 3, per_sample = 37, n = B * per_sample;
  const auto x = tim_test::random_vector<double>(n, 25), F = tim_test::random_vector<double>(n, 26);
  auto dx = tim::Tensor<double, tim::cuda>::empty({n}), dF = tim::Tensor<double, tim::cuda>::empty({n});
  tim::cuda::copy_from_host(dF.data(), F.data(), F.size());
  const tim::OtFm ot;
  for (const auto& [t, r] : {std::pair{1.0, 0.75}, std::pair{0.5, 0.0}}) {
    std::vector<double> expected = x, actual(x.size());
    for (std::size_t j = 0; j < x.size(); ++j) expected[j] = ot.transition(x[j], F[j], t, r);
    tim::cuda::copy_from_host(dx.data(), x.data(), x.size());
    tim::cuda::transition_forward(dx.data(), dF.data(), n, ot.coefficients(t, r));
    tim::cuda::copy_to_host(actual.data(), dx.data(), actual.size());
    TIM_CHECK_CLOSE(actual.data(), expected.data(), actual.size(), 1e-14, 1e-14);
  }
  std::vector<double> expected = x, actual(x.size());
  const std::vector<std::uint64_t> streams{10, 11, 12};
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t e = 0; e < per_sample; ++e) {
      const std::size_t j = static_cast<std::size_t>(b * per_sample + e);
      expected[j] = ot.stochastic_transition(x[j], F[j], 0.6, 0.4, 0.2,
                                             tim::random::normal(99, streams[b], 4, static_cast<std::uint64_t>(e)));
    }
  auto device_streams = tim::Tensor<std::uint64_t, tim::cuda>::empty({B});
  tim::cuda::copy_from_host(device_streams.data(), streams.data(), streams.size());
  tim::cuda::copy_from_host(dx.data(), x.data(), x.size());
  tim::cuda::stochastic_transition_forward(dx.data(), dF.data(), device_streams.data(), B, per_sample, ot, 0.6, 0.4,
                                           0.2, 99, 4);
  tim::cuda::copy_to_host(actual.data(), dx.data(), actual.size());
  TIM_CHECK_CLOSE(actual.data(), expected.data(), actual.size(), 1e-12, 1e-12);
  // Guidance: the first half becomes F_u + 2.5 (F_c - F_u).
  const std::int64_t half = n / 2;
  std::vector<double> guided = F;
  for (std::int64_t j = 0; j < half; ++j) guided[j] = F[half + j] + 2.5 * (F[j] - F[half + j]);
  tim::cuda::guidance_forward(dF.data(), half, 2.5);
  tim::cuda::copy_to_host(actual.data(), dF.data(), actual.size());
  TIM_CHECK_CLOSE(actual.data(), guided.data(), actual.size(), 1e-15, 1e-15);
}

}  // TEST_SUITE
