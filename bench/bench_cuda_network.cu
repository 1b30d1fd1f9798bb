// One network evaluation on the GPU: C2IModel<T, tim::cuda>::forward at TiM-XL/2 on a 4 x 32 x 32
// latent (256 px SD-VAE latents), batch 1, 16 and 64, float32 and bfloat16, random weights
// (bench/random_checkpoint.hpp); a whole 4-step guided sampling run (BM_CudaSample, images/s);
// plus cuBLAS's rate on the network's GEMM shapes and the attention kernel's alone, and the SD VAE
// decoder (tim::vae::SdVaeDecoder<float, tim::cuda>, released widths, random weights from
// bench/random_vae_checkpoint.hpp) on 32x32 and 64x64 latents (BM_CudaSdVaeDecode), and the DC-AE
// f32c32 decoder (tim::vae::DcAeDecoder<float, tim::cuda>, released shapes, random weights from
// bench/random_dc_ae_checkpoint.hpp) on 16x16 latents, 512 px (BM_CudaDcAeDecode). Each result
// carries the floor time a perfect implementation could not beat on this device,
//   floor = max(FLOPs / peak FLOP/s, bytes / peak bandwidth),
// beside the measured time.
//
// Run (Release build, on a machine with a GPU): bench/bench_cuda_network
//   TIM_PEAK_TFLOPS=x / TIM_PEAK_GBPS=y override the peaks read from the device (see below).
//   TIM_PROFILE_ONE_FORWARD=1 brackets one forward per benchmark with cudaProfilerStart/Stop, for
//   `ncu --profile-from-start off` (scripts/device-run.sh with TIM_PROFILE=1).
//
// Counters:
//   GFLOP        FLOPs of one forward / 1e9 (tim::nn::forward_flops: every matrix product 2 M N K).
//   MB           bytes one forward must move at least (weights once, plus activations, below).
//   floor_ms     max(compute_floor_ms, memory_floor_ms).
//   compute_floor_ms  GFLOP / peak; memory_floor_ms  MB / peak bandwidth.
//   of_floor     floor_ms / measured ms (1.0 would be perfect).
//   FLOP/s       GFLOP x iterations / wall time.
//
// Peaks: bandwidth = 2 x memory clock x bus width (cudaDevAttrMemoryClockRate, ...BusWidth; DDR);
// FLOP/s = SMs x peak clock (cudaDevAttrClockRate) x FLOP per SM per clock: float32 without
// tensor cores 256 (128 FMA lanes) on compute capability 8.x and 9.x; bfloat16 dense tensor cores
// 4096 on 9.0 (H100/H200), 2048 on 8.0 (A100), 1024 on other 8.x. Unknown devices: set the
// environment variables. The float32 model runs its GEMMs without TF32, so its compute floor uses
// the float32 rate.
//
// Activation bytes per forward: each kernel is assumed to read its inputs and write its outputs
// once (no fusion across kernels, K/V re-reads of attention served by L2): per block and token
// row 33 D + 6 Hm values (LayerNorm + modulate 4D twice, qkv 4D, split 6D, attention 4D, proj 2D,
// gated residuals 3D twice, MLP 2D + 2Hm, SwiGLU gate 3Hm, fc2 Hm + D), plus the patch embedding and
// final layer; weights are read once (parameters x sizeof(T)).
#include <benchmark/benchmark.h>
#include <cuda_profiler_api.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <utility>

#include "random_checkpoint.hpp"
#include "random_dc_ae_checkpoint.hpp"
#include "random_vae_checkpoint.hpp"
#include "tim/cuda/tim.cuh"
#include "tim/tim.hpp"  // the CPU backend (random weights are made on the host)

namespace {

constexpr std::int64_t latent_size = 32;

struct Peaks {
  double float32_flops = 0, bfloat16_flops = 0, bytes_per_second = 0;
};

double environment_or(const char* name, double fallback, double unit) {
  const char* text = std::getenv(name);
  return text ? std::atof(text) * unit : fallback;
}

Peaks device_peaks() {
  int device = 0, sms = 0, clock_khz = 0, memory_khz = 0, bus_bits = 0, major = 0, minor = 0;
  cudaGetDevice(&device);
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  cudaDeviceGetAttribute(&clock_khz, cudaDevAttrClockRate, device);
  cudaDeviceGetAttribute(&memory_khz, cudaDevAttrMemoryClockRate, device);
  cudaDeviceGetAttribute(&bus_bits, cudaDevAttrGlobalMemoryBusWidth, device);
  cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device);
  cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device);
  const double per_sm_clock = static_cast<double>(sms) * clock_khz * 1e3;
  double fp32 = 0, bf16 = 0;
  if (major == 8 || major == 9) fp32 = 256 * per_sm_clock;
  if (major == 9 && minor == 0) bf16 = 4096 * per_sm_clock;
  else if (major == 8 && minor == 0) bf16 = 2048 * per_sm_clock;
  else if (major == 8) bf16 = 1024 * per_sm_clock;
  Peaks p;
  p.bytes_per_second = environment_or("TIM_PEAK_GBPS", 2.0 * memory_khz * 1e3 * bus_bits / 8.0, 1e9);
  p.float32_flops = environment_or("TIM_PEAK_TFLOPS", fp32, 1e12);
  p.bfloat16_flops = environment_or("TIM_PEAK_TFLOPS", bf16, 1e12);
  return p;
}

//! Bytes one forward moves at least (see the file comment).
double forward_bytes(const tim::nn::C2IConfig& c, std::int64_t parameters, std::int64_t batch, double element) {
  const double R = static_cast<double>(batch * (latent_size / c.patch) * (latent_size / c.patch));
  const double D = static_cast<double>(c.hidden), Hm = static_cast<double>(c.mlp_hidden);
  const double pixels = static_cast<double>(batch * c.in_channels * latent_size * latent_size);
  double values = static_cast<double>(c.depth) * R * (33 * D + 6 * Hm);
  values += 2 * pixels + R * D;                                        // patchify, patch embedding
  values += 4 * R * D + 2 * R * static_cast<double>(c.patch * c.patch * c.out_channels) + pixels;  // final layer
  return (values + static_cast<double>(parameters)) * element;
}

template <class T>
const tim::nn::C2IModel<T, tim::cuda>& shared_model() {
  static const auto model = tim::nn::load_c2i<T, tim::cuda>(tim_bench::RandomCheckpoint(tim_bench::tim_xl2_config()));
  return model;
}

template <class T>
tim::Tensor<T, tim::cuda> random_device_tensor(const tim::Shape& shape, std::mt19937& engine, float lo, float hi,
                                               bool normal) {
  auto host = tim::Tensor<T>::empty(shape);
  std::normal_distribution<float> n01(0.0f, 1.0f);
  std::uniform_real_distribution<float> uniform(lo, hi);
  for (std::int64_t i = 0; i < host.numel(); ++i) host.data()[i] = static_cast<T>(normal ? n01(engine) : uniform(engine));
  return tim::to_backend<tim::cuda>(host);
}

template <class T>
void BM_CudaForward(benchmark::State& state, std::int64_t batch, const Peaks& peaks) {
  const auto& model = shared_model<T>();
  const auto& c = model.config;
  std::mt19937 engine(1234);
  const auto x = random_device_tensor<T>({batch, c.in_channels, latent_size, latent_size}, engine, 0, 0, true);
  const auto t_in = random_device_tensor<T>({batch}, engine, 0.5f, 1.0f, false);
  const auto r_in = random_device_tensor<T>({batch}, engine, 0.0f, 0.5f, false);
  auto labels = tim::Tensor<std::int64_t>::empty({batch});
  for (std::int64_t b = 0; b < batch; ++b) labels.data()[b] = b % c.num_classes;
  tim::Tensor<T, tim::cuda> out;
  model.forward(out, x, t_in, r_in, labels);  // warm-up: workspace, cuBLAS handle and heuristics
  tim::cuda::synchronize();
  if (std::getenv("TIM_PROFILE_ONE_FORWARD")) {  // for `ncu --profile-from-start off`: one forward's kernels
    cudaProfilerStart();
    model.forward(out, x, t_in, r_in, labels);
    tim::cuda::synchronize();
    cudaProfilerStop();
  }
  for (auto _ : state) {
    model.forward(out, x, t_in, r_in, labels);
    tim::cuda::synchronize();
  }
  const double flops = tim::nn::forward_flops(c, batch, latent_size, latent_size);
  const double bytes = forward_bytes(c, model.parameter_count(), batch, sizeof(T));
  const double peak_flops = std::is_same_v<T, float> ? peaks.float32_flops : peaks.bfloat16_flops;
  const double compute_floor = peak_flops > 0 ? flops / peak_flops : 0;
  const double memory_floor = peaks.bytes_per_second > 0 ? bytes / peaks.bytes_per_second : 0;
  const double floor = std::max(compute_floor, memory_floor);
  state.counters["GFLOP"] = flops * 1e-9;
  state.counters["MB"] = bytes * 1e-6;
  state.counters["compute_floor_ms"] = compute_floor * 1e3;
  state.counters["memory_floor_ms"] = memory_floor * 1e3;
  state.counters["floor_ms"] = floor * 1e3;
  // floor / measured: floor x iterations / wall time, as a rate counter.
  state.counters["of_floor"] = benchmark::Counter(floor * static_cast<double>(state.iterations()),
                                                  benchmark::Counter::kIsRate);
  state.counters["FLOP/s"] = benchmark::Counter(flops * static_cast<double>(state.iterations()),
                                                benchmark::Counter::kIsRate);
}

//! A whole sampling run on the GPU: TransitionSampler over the network on tim::cuda (OT-FM, 4
//! linspace steps), guidance 2 on the whole window (every step evaluates 2B rows), batch B; the
//! state, guidance and transitions in double on the device, as `tim sample --device cuda` runs
//! (the result stays on the device). Counters: images/s, and floor_ms = 4 forwards of 2B rows at
//! their floor (forward_bytes / forward_flops).
template <class T>
void BM_CudaSample(benchmark::State& state, std::int64_t batch, const Peaks& peaks) {
  const auto& model = shared_model<T>();
  const auto& c = model.config;
  constexpr int steps = 4;
  auto labels = tim::Tensor<std::int64_t>::empty({batch});
  for (std::int64_t b = 0; b < batch; ++b) labels.data()[b] = b % c.num_classes;
  const auto noise =
      tim::initial_noise<tim::cuda>(tim::Shape{batch, c.in_channels, latent_size, latent_size}, /*seed=*/3);
  tim::TransitionSampler sampler{model, tim::OtFm{}, tim::linspace_schedule(steps)};
  const tim::SamplerOptions<tim::cuda> options{.cfg_scale = 2.0, .guidance_low = 0.0, .guidance_high = 1.01};
  benchmark::DoNotOptimize(sampler.sample(noise, labels, options).x.data());  // warm-up: workspace sized once
  tim::cuda::synchronize();
  for (auto _ : state) {
    benchmark::DoNotOptimize(sampler.sample(noise, labels, options).x.data());
    tim::cuda::synchronize();
  }
  const double flops = steps * tim::nn::forward_flops(c, 2 * batch, latent_size, latent_size);
  const double bytes = steps * forward_bytes(c, model.parameter_count(), 2 * batch, sizeof(T));
  const double peak_flops = std::is_same_v<T, float> ? peaks.float32_flops : peaks.bfloat16_flops;
  const double floor = std::max(peak_flops > 0 ? flops / peak_flops : 0,
                                peaks.bytes_per_second > 0 ? bytes / peaks.bytes_per_second : 0);
  state.counters["floor_ms"] = floor * 1e3;
  state.counters["images/s"] = benchmark::Counter(static_cast<double>(batch * state.iterations()),
                                                  benchmark::Counter::kIsRate);
}

//! cuBLAS on a network GEMM shape: y (M, N) = x (M, K) W^T, no bias.
template <class T>
void BM_CudaGemm(benchmark::State& state) {
  const std::int64_t m = state.range(0), n = state.range(1), k = state.range(2);
  std::mt19937 engine(7);
  const auto x = random_device_tensor<T>({m, k}, engine, -1, 1, false);
  const auto w = random_device_tensor<T>({n, k}, engine, -1, 1, false);
  auto y = tim::Tensor<T, tim::cuda>::empty({m, n});
  tim::cuda::linear_forward(y.data(), x.data(), w.data(), static_cast<const T*>(nullptr), m, k, n);
  tim::cuda::synchronize();
  for (auto _ : state) {
    tim::cuda::linear_forward(y.data(), x.data(), w.data(), static_cast<const T*>(nullptr), m, k, n);
    tim::cuda::synchronize();
  }
  state.counters["FLOP/s"] = benchmark::Counter(2.0 * m * n * k * static_cast<double>(state.iterations()),
                                                benchmark::Counter::kIsRate);
}

//! The attention kernel alone at TiM-XL/2's shape: B samples x 16 heads x 256 tokens, head dim 72
//! (one block's attention; a forward runs it 28 times). FLOP/s counts QK^T and PV, 4 N^2 hd per
//! (sample, head), as forward_flops does.
template <class T>
void BM_CudaAttention(benchmark::State& state) {
  const std::int64_t batch = state.range(0), heads = 16, tokens = 256, head_dim = 72;
  std::mt19937 engine(9);
  const std::int64_t n = batch * heads * tokens * head_dim;
  const auto q = random_device_tensor<T>({n}, engine, -1, 1, false);
  const auto k = random_device_tensor<T>({n}, engine, -1, 1, false);
  const auto v = random_device_tensor<T>({n}, engine, -1, 1, false);
  auto out = tim::Tensor<T, tim::cuda>::empty({n});
  const double scale = 1.0 / std::sqrt(static_cast<double>(head_dim));
  tim::cuda::attention_forward(out.data(), q.data(), k.data(), v.data(), batch, heads, tokens, head_dim, scale);
  tim::cuda::synchronize();
  for (auto _ : state) {
    tim::cuda::attention_forward(out.data(), q.data(), k.data(), v.data(), batch, heads, tokens, head_dim, scale);
    tim::cuda::synchronize();
  }
  const double flops = 4.0 * static_cast<double>(batch * heads) * tokens * tokens * head_dim;
  state.counters["FLOP/s"] = benchmark::Counter(flops * static_cast<double>(state.iterations()),
                                                benchmark::Counter::kIsRate);
}

//! FLOPs of one SD VAE decode of an h x w latent, per sample: the matrix products only, every
//! convolution 2 P Co k^2 Ci (P its output pixels) and the mid attention's four projections
//! 2 P C^2 each plus its two products 2 P^2 C each (GroupNorm, SiLU, softmax, upsampling and
//! layout passes not counted).
template <class Backend>
double sd_vae_decode_flops(const tim::vae::SdVaeDecoder<float, Backend>& vae, std::int64_t height, std::int64_t width) {
  double flops = 0, pixels = static_cast<double>(height * width);
  const auto conv = [&](const auto& c) {
    flops += 2.0 * pixels * static_cast<double>(c.out_channels * c.kernel * c.kernel * c.in_channels);
  };
  const auto resnet = [&](const auto& r) {
    conv(r.conv1);
    conv(r.conv2);
    if (r.conv_shortcut.kernel) conv(r.conv_shortcut);
  };
  conv(vae.post_quant_conv);
  conv(vae.conv_in);
  resnet(vae.mid_resnet_0);
  const double C = static_cast<double>(vae.mid_attention.group_norm.channels);
  flops += 4 * 2.0 * pixels * C * C + 2 * 2.0 * pixels * pixels * C;
  resnet(vae.mid_resnet_1);
  for (const auto& block : vae.up_blocks) {
    for (const auto& r : block.resnets) resnet(r);
    if (!block.upsamples()) continue;
    pixels *= 4;
    conv(block.upsampler);
  }
  conv(vae.conv_out);
  return flops;
}

//! One SD VAE decode on the GPU (float, sd-vae-ft-ema's shapes, random weights): B latents of
//! 4 x latent x latent to B images of 8x the size. Counters: GFLOP per decode (sd_vae_decode_flops),
//! floor_ms at the float32 peak (no TF32), FLOP/s and images/s.
void BM_CudaSdVaeDecode(benchmark::State& state, std::int64_t batch, std::int64_t latent, const Peaks& peaks) {
  static const auto gpu =
      tim::vae::load_sd_vae_decoder<float, tim::cuda>(tim_bench::RandomSdVaeCheckpoint({128, 256, 512, 512}));
  std::mt19937 engine(5);
  const auto latents = random_device_tensor<float>({batch, 4, latent, latent}, engine, 0, 0, true);
  benchmark::DoNotOptimize(gpu.decode(latents).data());  // warm-up: cuBLAS heuristics, the workspace
  tim::cuda::synchronize();
  for (auto _ : state) {
    benchmark::DoNotOptimize(gpu.decode(latents).data());
    tim::cuda::synchronize();
  }
  const double flops = static_cast<double>(batch) * sd_vae_decode_flops(gpu, latent, latent);
  state.counters["GFLOP"] = flops * 1e-9;
  state.counters["floor_ms"] = peaks.float32_flops > 0 ? flops / peaks.float32_flops * 1e3 : 0;
  state.counters["FLOP/s"] = benchmark::Counter(flops * static_cast<double>(state.iterations()),
                                                benchmark::Counter::kIsRate);
  state.counters["images/s"] = benchmark::Counter(static_cast<double>(batch * state.iterations()),
                                                  benchmark::Counter::kIsRate);
}

//! FLOPs of one DC-AE decode of an h x w latent, per sample, mirroring DcAeDecoder::decode: every
//! convolution 2 P Co k^2 Ci (P its output pixels; a pixel-shuffle upsampling's conv counts the
//! same), every 1x1 / linear 2 P in out, depthwise 2 P C k^2, the grouped 1x1 2 P 3 inner hd, and
//! each linear attention branch 4 P nh hd (hd + 1) (the sums V^T K, ksum and their products with
//! q). RMSNorm, SiLU, ReLU, upsampling, shortcuts and layout passes are not counted.
template <class Backend>
double dc_ae_decode_flops(const tim::vae::DcAeDecoder<float, Backend>& vae, std::int64_t height, std::int64_t width) {
  double flops = 0, pixels = static_cast<double>(height * width);
  const auto conv = [&](const auto& c) {
    flops += 2.0 * pixels * static_cast<double>(c.out_channels * c.kernel * c.kernel * c.in_channels);
  };
  const auto linear = [&](const auto& l) {
    flops += 2.0 * pixels * static_cast<double>(l.in_features * l.out_features);
  };
  const auto depthwise = [&](const auto& c) {
    flops += 2.0 * pixels * static_cast<double>(c.channels * c.kernel * c.kernel);
  };
  conv(vae.conv_in);
  for (auto stage = vae.up_blocks.rbegin(); stage != vae.up_blocks.rend(); ++stage) {
    if (stage->upsample.present()) {
      pixels *= 4;
      const auto& c = stage->upsample.conv;
      flops += 2.0 * pixels *
               static_cast<double>(stage->upsample.out_channels * c.kernel * c.kernel * stage->upsample.in_channels);
    }
    for (const auto& block : stage->res_blocks) {
      conv(block.conv1);
      conv(block.conv2);
    }
    for (const auto& block : stage->vit_blocks) {
      const auto& a = block.attn;
      const double attention = 4.0 * pixels * static_cast<double>(a.heads * a.head_dim * (a.head_dim + 1));
      linear(a.to_qkv);
      flops += attention;
      for (const auto& branch : a.to_qkv_multiscale) {
        depthwise(branch.proj_in);
        flops += 2.0 * pixels * static_cast<double>(branch.groups * branch.head_dim * branch.head_dim);
        flops += attention;
      }
      linear(a.to_out);
      linear(block.conv_out.conv_inverted);
      depthwise(block.conv_out.conv_depth);
      linear(block.conv_out.conv_point);
    }
  }
  conv(vae.conv_out);
  return flops;
}

//! One DC-AE decode on the GPU (float, dc-ae-f32c32-sana-1.1's shapes, random weights): B latents
//! of 32 x latent x latent to B images of 32x the size. Counters: GFLOP per decode
//! (dc_ae_decode_flops), floor_ms at the float32 peak (no TF32), FLOP/s and images/s.
void BM_CudaDcAeDecode(benchmark::State& state, std::int64_t batch, std::int64_t latent, const Peaks& peaks) {
  static const auto gpu = tim::vae::load_dc_ae_decoder<float, tim::cuda>(
      tim_bench::RandomDcAeCheckpoint({128, 256, 512, 512, 1024, 1024}));
  std::mt19937 engine(6);
  const auto latents =
      random_device_tensor<float>({batch, gpu.config.latent_channels, latent, latent}, engine, 0, 0, true);
  benchmark::DoNotOptimize(gpu.decode(latents).data());  // warm-up: cuBLAS heuristics, the workspace
  tim::cuda::synchronize();
  for (auto _ : state) {
    benchmark::DoNotOptimize(gpu.decode(latents).data());
    tim::cuda::synchronize();
  }
  const double flops = static_cast<double>(batch) * dc_ae_decode_flops(gpu, latent, latent);
  state.counters["GFLOP"] = flops * 1e-9;
  state.counters["floor_ms"] = peaks.float32_flops > 0 ? flops / peaks.float32_flops * 1e3 : 0;
  state.counters["FLOP/s"] = benchmark::Counter(flops * static_cast<double>(state.iterations()),
                                                benchmark::Counter::kIsRate);
  state.counters["images/s"] = benchmark::Counter(static_cast<double>(batch * state.iterations()),
                                                  benchmark::Counter::kIsRate);
}

void register_benchmarks(const Peaks& peaks) {
  for (std::int64_t batch : {1, 16, 64}) {
    benchmark::RegisterBenchmark(("BM_CudaForward/TiM-XL2/float32/batch:" + std::to_string(batch)).c_str(),
                                 [batch, peaks](benchmark::State& s) { BM_CudaForward<float>(s, batch, peaks); })
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime()
        ->MinTime(2.0);
    benchmark::RegisterBenchmark(("BM_CudaForward/TiM-XL2/bfloat16/batch:" + std::to_string(batch)).c_str(),
                                 [batch, peaks](benchmark::State& s) { BM_CudaForward<tim::bfloat16>(s, batch, peaks); })
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime()
        ->MinTime(2.0);
  }
  for (std::int64_t batch : {1, 16, 64})
    benchmark::RegisterBenchmark(("BM_CudaSample/TiM-XL2/bfloat16/4steps-cfg2/batch:" + std::to_string(batch)).c_str(),
                                 [batch, peaks](benchmark::State& s) { BM_CudaSample<tim::bfloat16>(s, batch, peaks); })
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime()
        ->MinTime(2.0);
  // XL/2 MLP fc1 at batch 1, 16 and 64 (R x Hm x D) and qkv at batch 64 (R x 3D x D).
  for (auto* registered : {benchmark::RegisterBenchmark("BM_CudaGemm/float32", BM_CudaGemm<float>),
                           benchmark::RegisterBenchmark("BM_CudaGemm/bfloat16", BM_CudaGemm<tim::bfloat16>)})
    registered->ArgNames({"M", "N", "K"})
        ->Args({256, 3072, 1152})
        ->Args({4096, 3072, 1152})
        ->Args({16384, 3072, 1152})
        ->Args({16384, 3456, 1152})
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime()
        ->MinTime(1.0);
  for (auto* registered : {benchmark::RegisterBenchmark("BM_CudaAttention/TiM-XL2/float32", BM_CudaAttention<float>),
                           benchmark::RegisterBenchmark("BM_CudaAttention/TiM-XL2/bfloat16",
                                                        BM_CudaAttention<tim::bfloat16>)})
    registered->ArgName("batch")->Arg(1)->Arg(64)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(0.5);
  for (const auto& [batch, latent] : {std::pair<std::int64_t, std::int64_t>{1, 32}, {4, 32}, {1, 64}})
    benchmark::RegisterBenchmark(("BM_CudaSdVaeDecode/float32/latent:" + std::to_string(latent) + "x" +
                                  std::to_string(latent) + "/batch:" + std::to_string(batch))
                                     .c_str(),
                                 [batch, latent, peaks](benchmark::State& s) { BM_CudaSdVaeDecode(s, batch, latent, peaks); })
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime()
        ->MinTime(1.0);
  for (const std::int64_t batch : {1, 4})
    benchmark::RegisterBenchmark(("BM_CudaDcAeDecode/float32/latent:16x16/batch:" + std::to_string(batch)).c_str(),
                                 [batch, peaks](benchmark::State& s) { BM_CudaDcAeDecode(s, batch, 16, peaks); })
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime()
        ->MinTime(1.0);
}

}  // namespace

int main(int argc, char** argv) {
  if (!tim::cuda::available()) {
    std::fprintf(stderr, "bench_cuda_network: %s; nothing measured.\n", tim::cuda::device_description().c_str());
    return 1;
  }
  const Peaks peaks = device_peaks();
  register_benchmarks(peaks);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::AddCustomContext("cuda_device", tim::cuda::device_description());
  benchmark::AddCustomContext("peak_float32_TFLOPS", std::to_string(peaks.float32_flops * 1e-12));
  benchmark::AddCustomContext("peak_bfloat16_TFLOPS", std::to_string(peaks.bfloat16_flops * 1e-12));
  benchmark::AddCustomContext("peak_GBps", std::to_string(peaks.bytes_per_second * 1e-9));
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
