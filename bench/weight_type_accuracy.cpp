// The output error of one TiM forward per weight type against float64 (docs/performance.md,
// "Weight types: accuracy"). A plain program, not a benchmark: nothing here is timed.
//
// Networks: the shipped model (models/tim-fmnist.safetensors, stored as float16) and, unless
// --no-random, a TiM-B/4-shaped network with random float32 weights (bench/random_checkpoint.hpp,
// seed 0, N(0, 0.02^2)) on 4x32x32 latents. For each weight type the original file is converted
// in memory with tim::io::convert_safetensors (what `tim convert --to TYPE` writes) and run by the
// float network (tim::nn::load_c2i<float>, weights kept as stored) on the same inputs:
//   float32     the weights as float (for the float16 shipped model: widened exactly)
//   bfloat16    bfloat16 weights, float32 products (the weights widened exactly, float sums)
//   bfloat16p   bfloat16 weights, --precision bfloat16 (activations rounded to bfloat16; oneDNN's
//               kernel where the CPU has AVX512-BF16/AMX, else float32 and the row says so)
//   float16     float16 weights, float32 products
//   q8_0        q8_0 weights (where this build's networks load them; else the row says why not)
// Two float64 references, both tim's double network (tim::nn::load_c2i<double>; it matches the
// PyTorch float64 reference within 1e-10, tests/test_c2i_golden.cpp):
//   same weights   the converted file's values (for q8_0: dequantised to float32, exact), so the
//                  error is the compute's alone (float32 or bfloat16 products, float sums);
//   original       the unconverted file's values, so the error includes the weights' rounding.
// Errors over all B*C*H*W outputs: max = max |out - ref| / max |ref|; RMS = ||out - ref||_2 / ||ref||_2.
// Inputs: x ~ N(0, 1), labels b mod classes, t ~ U(0.2, 1), r ~ U(0, t) (raw OT-FM times are
// the network inputs, c_noise(t) = t), seed 1234.
//
// Run (Release build):  build/bench/weight_type_accuracy [--batch 8] [--threads 1] [--no-random]
//                                                        [--model models/tim-fmnist.safetensors]
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "random_checkpoint.hpp"
#include "tim/core/cast.hpp"
#include "tim/io/convert.hpp"
#include "tim/tim.hpp"

namespace {

using tim::io::ConvertTarget;
using tim::io::SafetensorsFile;

struct Inputs {
  tim::Tensor<double> x, t, r;
  tim::Tensor<std::int64_t> y;
};

Inputs make_inputs(const tim::nn::C2IConfig& c, std::int64_t batch, std::int64_t size) {
  std::mt19937 engine(1234);
  std::normal_distribution<double> normal(0.0, 1.0);
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  Inputs in{tim::Tensor<double>::empty({batch, c.in_channels, size, size}), tim::Tensor<double>::empty({batch}),
            tim::Tensor<double>::empty({batch}), tim::Tensor<std::int64_t>::empty({batch})};
  for (std::int64_t i = 0; i < in.x.numel(); ++i) in.x.data()[i] = normal(engine);
  for (std::int64_t b = 0; b < batch; ++b) {
    in.t.data()[b] = 0.2 + 0.8 * uniform(engine);
    in.r.data()[b] = in.t.data()[b] * uniform(engine);
    in.y.data()[b] = b % c.num_classes;
  }
  return in;
}

tim::Tensor<double> forward_double(const SafetensorsFile& file, const Inputs& in) {
  const auto model = tim::nn::load_c2i<double>(file);
  tim::Tensor<double> out;
  model.forward(out, in.x, in.t, in.r, in.y);
  return out;
}

SafetensorsFile converted(const SafetensorsFile& in, ConvertTarget to, const std::string& label) {
  return SafetensorsFile::from_bytes(tim::io::convert_safetensors(in, to).to_bytes(), label);
}

struct Errors {
  double max = 0, rms = 0;
};

Errors errors(const tim::Tensor<float>& out, const tim::Tensor<double>& ref) {
  double diff_max = 0, ref_max = 0, diff_sq = 0, ref_sq = 0;
  for (std::int64_t i = 0; i < ref.numel(); ++i) {
    const double d = static_cast<double>(out.data()[i]) - ref.data()[i];
    diff_max = std::max(diff_max, std::abs(d));
    ref_max = std::max(ref_max, std::abs(ref.data()[i]));
    diff_sq += d * d;
    ref_sq += ref.data()[i] * ref.data()[i];
  }
  return {diff_max / ref_max, std::sqrt(diff_sq / ref_sq)};
}

struct WeightType {
  const char* name;
  ConvertTarget target;
  tim::Precision precision;
};

void measure(const std::string& label, const SafetensorsFile& original, std::int64_t batch, std::int64_t size) {
  const auto config = tim::nn::load_c2i<float>(original).config;
  const Inputs in = make_inputs(config, batch, size);
  const auto xf = tim::cast<float>(in.x), tf = tim::cast<float>(in.t), rf = tim::cast<float>(in.r);
  const tim::Tensor<double> ref_original = forward_double(original, in);
  std::printf("\n%s: %s, batch %lld, %lldx%lld, %lld outputs\n", label.c_str(), config.describe().c_str(),
              static_cast<long long>(batch), static_cast<long long>(size), static_cast<long long>(size),
              static_cast<long long>(ref_original.numel()));
  std::printf("| weights | products | max rel. (same weights) | RMS rel. (same weights) | max rel. (original) | RMS rel. (original) |\n");
  std::printf("|---|---|---:|---:|---:|---:|\n");
  for (const WeightType& w : {WeightType{"float32", ConvertTarget::float32, tim::Precision::float32},
                              WeightType{"bfloat16", ConvertTarget::bfloat16, tim::Precision::float32},
                              WeightType{"bfloat16", ConvertTarget::bfloat16, tim::Precision::bfloat16},
                              WeightType{"float16", ConvertTarget::float16, tim::Precision::float32},
                              WeightType{"q8_0", ConvertTarget::q8_0, tim::Precision::float32}}) {
    const SafetensorsFile file = converted(original, w.target, label + " as " + w.name);
    std::string products = w.precision == tim::Precision::bfloat16 ? "bfloat16" : "float32";
    if (w.precision == tim::Precision::bfloat16) {
      const auto& kernel = tim::cpu_gemm::bf16_kernel();
      products += kernel.available ? " (" + kernel.name + ")" : " requested; float32 ran: " + kernel.reason;
    }
    if (w.target == ConvertTarget::q8_0)  // int8 x int8 with int32 sums per block, scaled in float
      products = "int8, activations quantised per 32 (" + tim::cpu_gemm::q8_kernel().name + ")";
    tim::Tensor<float> out;
    try {
      const auto model = tim::nn::load_c2i<float>(file, {}, {.precision = w.precision});
      model.forward(out, xf, tf, rf, in.y);
    } catch (const tim::Error& e) {
      std::printf("| %s | %s | not run: %s | | | |\n", w.name, products.c_str(), e.what());
      continue;
    }
    // The same values as a float32 file (q8_0 dequantised; 16-bit values widened; both exact).
    const tim::Tensor<double> ref_same = forward_double(converted(file, ConvertTarget::float32, "same weights"), in);
    const Errors same = errors(out, ref_same), orig = errors(out, ref_original);
    std::printf("| %s | %s | %.3g | %.3g | %.3g | %.3g |\n", w.name, products.c_str(), same.max, same.rms, orig.max,
                orig.rms);
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::string model = "models/tim-fmnist.safetensors";
  std::int64_t batch = 8;
  int threads = 1;
  bool random = true;
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    if (a == "--model" && i + 1 < argc) model = argv[++i];
    else if (a == "--batch" && i + 1 < argc) batch = std::atoll(argv[++i]);
    else if (a == "--threads" && i + 1 < argc) threads = std::atoi(argv[++i]);
    else if (a == "--no-random") random = false;
    else {
      std::fprintf(stderr, "usage: %s [--model PATH] [--batch N] [--threads N] [--no-random]\n", argv[0]);
      return 2;
    }
  }
  if (batch < 1 || threads < 1) {
    std::fprintf(stderr, "weight_type_accuracy: --batch and --threads must be at least 1\n");
    return 2;
  }
  try {
    tim::set_num_threads(threads);
    std::printf("cpu: %s; threads %d\n", tim::cpu_features().describe().c_str(), threads);
    measure("shipped model " + model, SafetensorsFile::open(model), batch, 32);
    if (random) {
      // The random TiM-B/4 as a float32 file, so the conversions see the same input as tim convert.
      const tim_bench::RandomCheckpoint source(tim_bench::tim_b4_config());
      tim::io::SafetensorsWriter writer;
      for (const auto& [key, value] : source.metadata()) writer.set_metadata(key, value);
      for (const auto& info : source.tensors()) writer.add(info.name, source.load<float>(info.name, info.shape));
      measure("random TiM-B/4", SafetensorsFile::from_bytes(writer.to_bytes(), "random TiM-B/4"), std::min<std::int64_t>(batch, 2), 32);
    }
  } catch (const tim::Error& e) {
    std::fprintf(stderr, "weight_type_accuracy: %s\n", e.what());
    return 1;
  }
  return 0;
}
