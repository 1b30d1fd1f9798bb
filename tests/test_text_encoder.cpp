// The Gemma-3 text decoder (tim/text/gemma.hpp) against float64 golden folders written by our
// PyTorch reference (tools/reference/make_gemma_golden.py, tests/data/golden_gemma/; the reference
// itself is checked against transformers' Gemma3ForCausalLM by gemma_reference.py --self-test):
// both hidden states in double within 1e-10 and in float within 1e-4, bfloat16 weights as views of
// the mapped file, padding masked, batch independence, and the loading errors.
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <vector>
#include <string>

#include "compare.hpp"
#include "tim/tim.hpp"
#include "tim/text/gemma.hpp"

namespace {

std::string case_dir(const std::string& name) { return std::string(TIM_TEST_DATA_DIR) + "/golden_gemma/" + name; }
const char* const cases[] = {"released_pattern", "gqa_layer_types"};

template <class T, class W>
double golden_error(const std::string& name, tim::text::HiddenState which,
                    tim::Precision precision = tim::Precision::float32) {
  auto encoder = tim::text::load_gemma_folder<T, tim::cpu, W>(case_dir(name));
  encoder.precision = precision;
  auto expected_file = tim::io::SafetensorsFile::open(case_dir(name) + "/expected.safetensors");
  auto ids = expected_file.load<std::int64_t>("input_ids");
  auto mask = expected_file.load<std::int64_t>("attention_mask");
  auto expected = expected_file.load<double>(which == tim::text::HiddenState::last ? "last" : "penultimate");
  tim::Tensor<T> out;
  encoder.forward(out, ids, mask, which);
  REQUIRE(out.shape() == expected.shape());
  double largest = 0;
  for (std::int64_t i = 0; i < expected.numel(); ++i) largest = std::max(largest, std::abs(expected.data()[i]));
  CHECK(largest > 0.1);  // not a vacuous comparison
  // A second call reuses the workspace and gives the same values.
  auto again = out.clone();
  encoder.forward(out, ids, mask, which);
  CHECK(std::equal(out.data(), out.data() + out.numel(), again.data()));
  const double error = tim_test::relative_error(out.data(), expected.data(), static_cast<std::size_t>(out.numel()));
  const std::string state = which == tim::text::HiddenState::last ? "last" : "penultimate";
  const std::string compute = sizeof(T) == 8 ? "double" : "float";
  const std::string stored = sizeof(W) == 2 ? "bfloat16" : sizeof(W) == 4 ? "float" : "double";
  MESSAGE("Gemma golden ", name, " ", state, ", compute ", compute, ", weights ", stored, ", products ",
          std::string(tim::precision_name(precision)), ": relative error ", error);
  return error;
}

}  // namespace

TEST_CASE("Gemma encoder golden: both hidden states in double within 1e-10") {
  for (const std::string name : cases) {
    CAPTURE(name);
    CHECK(golden_error<double, double>(name, tim::text::HiddenState::last) <= 1e-10);
    CHECK(golden_error<double, double>(name, tim::text::HiddenState::penultimate) <= 1e-10);
  }
}

TEST_CASE("Gemma encoder golden: float within 1e-4, bfloat16 weights computed in float") {
  for (const std::string name : cases) {
    CAPTURE(name);
    CHECK(golden_error<float, float>(name, tim::text::HiddenState::last) <= 1e-4);
    CHECK(golden_error<float, float>(name, tim::text::HiddenState::penultimate) <= 1e-4);
  }
  // released_pattern stores bfloat16: the encoder keeps them as bfloat16 and widens per product.
  CHECK(golden_error<float, tim::bfloat16>("released_pattern", tim::text::HiddenState::last) <= 1e-4);
  CHECK(golden_error<float, tim::bfloat16>("released_pattern", tim::text::HiddenState::penultimate) <= 1e-4);
}

// Precision::bfloat16 rounds the input of every product to bfloat16 (relative error u_b = 2^-8 per
// value; products exact, sums in float: gemm_bf16.hpp, tests/test_gemm_bf16.cpp). A layer has four
// such stages in sequence (q/k/v, o, gate/up, down), so released_pattern's 7 layers have 28. First
// order, each stage perturbs its input by at most u_b relative; the model behind the bound is that
// a perturbation reaches the output (relative to its largest value) with a gain of at most 1 (the
// RMSNorm after each sub-block and the residual sum do not amplify it), so the error is at most
// 28 u_b plus the float path's 1e-4. A bfloat16 run that silently computed in float would have the
// float error exactly, which the second check excludes.
TEST_CASE("Gemma encoder golden: bfloat16 products within 28 * 2^-8 of float64") {
  const auto& kernel = tim::cpu_gemm::bf16_kernel();
  if (!kernel.available) {
    MESSAGE("skipped: Gemma encoder with bfloat16 products: ", kernel.reason);
    return;
  }
  const double bound = 28 * std::ldexp(1.0, -8) + 1e-4;
  for (const auto which : {tim::text::HiddenState::last, tim::text::HiddenState::penultimate}) {
    const double bf16 = golden_error<float, tim::bfloat16>("released_pattern", which, tim::Precision::bfloat16);
    const double fp32 = golden_error<float, tim::bfloat16>("released_pattern", which, tim::Precision::float32);
    CHECK(bf16 <= bound);
    CHECK(bf16 > fp32);
  }
}

TEST_CASE("Gemma encoder: bfloat16 weights are views of the mapped file, sqrt(D) rounded to bfloat16") {
  auto file = tim::io::SafetensorsFile::open(case_dir("released_pattern") + "/model.safetensors");
  const auto config = tim::text::parse_gemma_config(
      tim::text::read_text_file(case_dir("released_pattern") + "/config.json", "config"));
  auto encoder = tim::text::load_gemma<float, tim::cpu, tim::bfloat16>(file, config);
  const auto bytes = file.bytes("model.layers.3.mlp.up_proj.weight");
  CHECK(static_cast<const void*>(encoder.layers[3].up_proj.data()) == static_cast<const void*>(bytes.data()));
  // sqrt(32) = 5.6568..., bfloat16 keeps 8 bits of mantissa: 5.65625.
  CHECK(encoder.normalizer == 5.65625f);
  CHECK(config.layer_types[5] == tim::text::LayerAttention::full);
  CHECK(config.layer_types[4] == tim::text::LayerAttention::sliding);
  CHECK(config.layer_types[6] == tim::text::LayerAttention::sliding);
  CHECK(config.kv_heads == 1);
}

TEST_CASE("Gemma encoder: padding is masked, each prompt alone equals its batch row") {
  auto encoder = tim::text::load_gemma_folder<double>(case_dir("gqa_layer_types"));
  auto expected_file = tim::io::SafetensorsFile::open(case_dir("gqa_layer_types") + "/expected.safetensors");
  auto ids = expected_file.load<std::int64_t>("input_ids").clone();
  auto mask = expected_file.load<std::int64_t>("attention_mask");
  const auto lengths = tim::text::lengths_from_mask(mask);
  const auto N = ids.dim(1), D = encoder.config.hidden;
  tim::Tensor<double> batch;
  encoder.forward(batch, ids, lengths);
  // A different id at a padding position changes no real position (bit for bit: rows never mix).
  ids.data()[2 * N + N - 1] = 7;
  tim::Tensor<double> changed;
  encoder.forward(changed, ids, lengths);
  CHECK(std::equal(changed.data() + 2 * N * D, changed.data() + (2 * N + lengths[2]) * D, batch.data() + 2 * N * D));
  CHECK(!std::equal(changed.data() + (3 * N - 1) * D, changed.data() + 3 * N * D, batch.data() + (3 * N - 1) * D));
  // Prompt 2 alone, cut to its own length: the same real positions.
  auto alone_ids = tim::Tensor<std::int64_t>::empty({1, lengths[2]});
  std::copy(ids.data() + 2 * N, ids.data() + 2 * N + lengths[2], alone_ids.data());
  tim::Tensor<double> alone;
  encoder.forward(alone, alone_ids, std::vector<std::int64_t>{lengths[2]});
  TIM_CHECK_CLOSE(alone.data(), batch.data() + 2 * N * D, static_cast<std::size_t>(lengths[2] * D), 1e-12, 1e-12);
}

TEST_CASE("Gemma encoder: input and loading errors name what is wrong") {
  auto encoder = tim::text::load_gemma_folder<float>(case_dir("gqa_layer_types"));
  tim::Tensor<float> out;
  auto ids = tim::Tensor<std::int64_t>::zeros({1, 3});
  ids.data()[1] = 50;
  CHECK_THROWS_WITH_AS(encoder.forward(out, ids, std::vector<std::int64_t>{3}),
                       doctest::Contains("token id 50 at position 1 is outside the vocabulary [0, 50)"), tim::Error);
  ids.data()[1] = 4;
  CHECK_THROWS_WITH_AS(encoder.forward(out, ids, std::vector<std::int64_t>{4}),
                       doctest::Contains("prompt 0 has length 4, expected 1 to N = 3"), tim::Error);
  auto mask = tim::Tensor<std::int64_t>::zeros({1, 3});
  mask.data()[0] = 1;
  mask.data()[2] = 1;
  CHECK_THROWS_WITH_AS(encoder.forward(out, ids, mask), doctest::Contains("row 0 is not right padding"), tim::Error);
  mask.data()[0] = 0;
  mask.data()[2] = 0;
  CHECK_THROWS_WITH_AS(encoder.forward(out, ids, mask), doctest::Contains("row 0 has no real token"), tim::Error);

  auto config = tim::text::parse_gemma_config(
      tim::text::read_text_file(case_dir("gqa_layer_types") + "/config.json", "config"));
  auto file = tim::io::SafetensorsFile::open(case_dir("released_pattern") + "/model.safetensors");
  CHECK_THROWS_WITH_AS((tim::text::load_gemma<float>(file, config)), doctest::Contains("expected shape"), tim::Error);
  config.layers = 8;
  auto own = tim::io::SafetensorsFile::open(case_dir("gqa_layer_types") + "/model.safetensors");
  config.layer_types.resize(8, tim::text::LayerAttention::full);
  CHECK_THROWS_WITH_AS((tim::text::load_gemma<float>(own, config)),
                       doctest::Contains("tensor 'model.layers.3.self_attn.q_proj.weight' is missing"), tim::Error);
  config.layers = 2;
  config.layer_types.resize(2);
  CHECK_THROWS_WITH_AS((tim::text::load_gemma<float>(own, config)),
                       doctest::Contains("unexpected tensor 'model.layers.2."), tim::Error);
  CHECK_THROWS_WITH_AS(tim::text::load_gemma_folder<float>("/nonexistent"), doctest::Contains("not a folder"),
                       tim::Error);
  CHECK_THROWS_WITH_AS(tim::text::parse_hidden_state("middle", "--hidden-state"),
                       doctest::Contains("--hidden-state: expected \"last\" or \"penultimate\""), tim::Error);
}

TEST_CASE("Gemma config: the released form, the newer form, and clear errors") {
  using tim::text::parse_gemma_config;
  const std::string released = R"({"architectures": ["Gemma3ForCausalLM"], "attn_logit_softcapping": null,
    "head_dim": 256, "hidden_activation": "gelu_pytorch_tanh", "hidden_size": 1152, "intermediate_size": 6912,
    "model_type": "gemma3_text", "num_attention_heads": 4, "num_hidden_layers": 26, "num_key_value_heads": 1,
    "query_pre_attn_scalar": 256, "rms_norm_eps": 1e-06, "rope_local_base_freq": 10000, "rope_scaling": null,
    "rope_theta": 1000000, "sliding_window": 512, "sliding_window_pattern": 6, "vocab_size": 262144})";
  const auto c = parse_gemma_config(released);
  CHECK(c.hidden == 1152);
  CHECK(c.layers == 26);
  CHECK(c.intermediate == 6912);
  CHECK(c.heads == 4);
  CHECK(c.kv_heads == 1);
  CHECK(c.head_dim == 256);
  CHECK(c.sliding_window == 512);
  CHECK(c.rope_theta == 1e6);
  CHECK(c.rope_local_base == 1e4);
  int full = 0;
  for (std::int64_t i = 0; i < c.layers; ++i) full += c.layer_types[static_cast<std::size_t>(i)] == tim::text::LayerAttention::full;
  CHECK(full == 4);  // layers 5, 11, 17, 23
  CHECK(c.layer_types[23] == tim::text::LayerAttention::full);
  CHECK(c.rope_base(23) == 1e6);
  CHECK(c.rope_base(24) == 1e4);

  auto error_of = [](const std::string& text) {
    try {
      parse_gemma_config(text, "cfg");
    } catch (const tim::Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  CHECK(error_of("{") .find("cfg: not valid JSON") != std::string::npos);
  CHECK(error_of("[]").find("expected a JSON object") != std::string::npos);
  CHECK(error_of(R"({"hidden_size": 8})").find("field 'vocab_size' is missing") != std::string::npos);
  const std::string base = R"("vocab_size": 10, "hidden_size": 8, "intermediate_size": 8, "num_hidden_layers": 2,
                              "num_attention_heads": 2, "head_dim": 4)";
  CHECK(error_of("{" + base + "}") == "no error");
  CHECK(error_of("{" + base + R"(, "num_key_value_heads": 3})").find("must be a multiple") != std::string::npos);
  CHECK(error_of("{" + base + R"(, "attn_logit_softcapping": 50.0})").find("soft-capped") != std::string::npos);
  CHECK(error_of("{" + base + R"(, "rope_scaling": {"rope_type": "linear", "factor": 8}})").find("not supported") !=
        std::string::npos);
  CHECK(error_of("{" + base + R"(, "hidden_activation": "relu"})").find("only \"gelu_pytorch_tanh\"") !=
        std::string::npos);
  CHECK(error_of("{" + base + R"(, "layer_types": ["full_attention"]})").find("list of num_hidden_layers = 2") !=
        std::string::npos);
  CHECK(error_of("{" + base + R"(, "layer_types": ["full_attention", "local"]})").find("entries must be") !=
        std::string::npos);
  CHECK(error_of(R"({"vocab_size": -1})").find("must be in [1,") != std::string::npos);
  CHECK(error_of(R"({"vocab_size": 1.5})").find("must be an integer") != std::string::npos);
  CHECK(error_of(R"({"model_type": "llama"})").find("is not a Gemma-3 text decoder") != std::string::npos);
  CHECK(error_of("{" + base + R"(, "rms_norm_eps": -1})").find("positive finite") != std::string::npos);
}

TEST_CASE("Gemma attention: the CPU's tiled products equal the reference loop (math::GemmaAttentionOp)") {
  // 2 prompts of 150 tokens (three query tiles), 4 heads on 2 kv heads of 8, window 40 and none,
  // one prompt padded after 101 tokens and with rows that see no key (window 40 < 49 padded rows).
  const std::int64_t B = 2, N = 150, nh = 4, nkv = 2, hd = 8;
  const auto q = tim_test::random_vector<double>(B * N * nh * hd, 1), k = tim_test::random_vector<double>(B * N * nkv * hd, 2),
             v = tim_test::random_vector<double>(B * N * nkv * hd, 3);
  const std::vector<std::int64_t> lengths{150, 101};
  for (const std::int64_t window : {std::int64_t{40}, std::int64_t{0}}) {
    CAPTURE(window);
    std::vector<double> tiled(q.size()), loop(q.size(), 99.0);
    tim::cpu::gemma_attention_forward(tiled.data(), q.data(), k.data(), v.data(), lengths.data(), B, N, nh, nkv, hd,
                                      window);
    tim::cpu::for_each(B * N * nh, tim::math::GemmaAttentionOp<double>{loop.data(), q.data(), k.data(), v.data(),
                                                                        lengths.data(), N, nh, nkv, hd, window});
    TIM_CHECK_CLOSE(tiled.data(), loop.data(), tiled.size(), 1e-12, 1e-12);
    // A padded query 49 or more past the last real token sees no key in a window of 40: zeros.
    if (window == 40) CHECK(loop[((1 * N) + 149) * nh * hd] == 0.0);
  }
}

// The CPU's vectorised gate (cpu::gelu_gate_forward, Eigen's float tanh) against the formula in
// double. Bound: z = k (x + 0.044715 x^3) is computed with relative error <= 5 u (four float
// operations), which moves tanh by <= 5 u |z| (1 - t^2); the tanh approximation adds an absolute
// error allowed here as 16 u (its clamp at 7.9 alone costs 4.7 u); both are scaled by 0.5 |x up|;
// the final products and the sum 1 + t add 4 u relative to |gelu(x) up| + 0.5 |x up|.
TEST_CASE("Gemma MLP gate: cpu::gelu_gate_forward equals gelu_tanh(gate) * up in double") {
  static_assert(tim::text::GemmaEncoder<float, tim::cpu, tim::bfloat16>::backend_reads_weights,
                "the CPU reads bfloat16 weights itself: no widened matrix in the encoder's workspace");
  std::vector<float> gate, up;
  for (int i = -40000; i <= 40000; ++i) {
    gate.push_back(static_cast<float>(i) * 3e-4f);  // [-12, 12]: both tails of tanh, and zero
    up.push_back(1.0f + static_cast<float>(i % 7) * 0.25f);
  }
  const auto x = gate;
  tim::cpu::gelu_gate_forward(gate.data(), up.data(), static_cast<std::int64_t>(gate.size()));
  const double u = std::ldexp(1.0, -24), k = 0.79788456080286535588;
  int failures = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double xv = x[i], z = k * (xv + 0.044715 * xv * xv * xv), t = std::tanh(z);
    const double exact = 0.5 * xv * (1 + t) * up[i];
    const double half = 0.5 * std::abs(xv * up[i]);
    const double bound = half * (16 * u + 5 * u * std::abs(z) * (1 - t * t)) + 4 * u * (std::abs(exact) + half);
    failures += !(std::abs(gate[i] - exact) <= bound);
  }
  CHECK(failures == 0);
}
