// The whole class-conditional network's backward (tim/nn/c2i_backward.hpp): every parameter's
// gradient (under its released name) and the input latent's, against double-precision central
// differences of the inference forward (C2IModel::forward, independent of the training forward),
// on tiny networks with a non-square latent, and against PyTorch autograd through our reference
// (tests/data/backward_golden/, tools/reference/make_backward_golden.py); float against double;
// activation checkpointing against the plain backward.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "compare.hpp"
#include "golden_source.hpp"
#include "gradient_check.hpp"
#include "allocation_counter.hpp"
#include "tim/nn/c2i_backward.hpp"
#include "tim/tim.hpp"

namespace {

struct TinyNetwork {
  std::int64_t channels = 3, hidden = 16, depth = 2, heads = 2, patch = 2, adaln_hidden = 8, classes = 5;
  std::int64_t mlp_hidden = 0;  // 0: the released width (D * 4 * 2) / 3
  bool qk_norm = true, interval_qkv = true, delta_embedder = true;
  std::string new_condition = "t-r";
};

//! A float64 checkpoint of a tiny C2I network with random weights under the released names
//! (initialisation as tools/reference/make_golden.py: weights N(0, gain^2 / fan_in), gain 0.5
//! for adaLN fc2 and qkv_d; biases N(0, 0.1^2); q/k norms 1 + N(0, 0.2^2), N(0, 0.2^2); label
//! rows N(0, 0.5^2)), so no output or gradient is trivially zero.
tim::io::SafetensorsFile tiny_checkpoint(const TinyNetwork& n, std::uint32_t seed) {
  std::mt19937 generator(seed);
  std::normal_distribution<double> normal(0.0, 1.0);
  tim::io::SafetensorsWriter writer;
  writer.set_metadata("num_heads", std::to_string(n.heads));
  writer.set_metadata("new_condition", n.new_condition);
  const auto add = [&](const std::string& name, tim::Shape shape, double mean, double stddev) {
    std::vector<double> values(static_cast<std::size_t>(shape.numel()));
    for (auto& v : values) v = mean + stddev * normal(generator);
    writer.add(name, tim::DType::F64, std::move(shape), values.data());
  };
  const auto linear = [&](const std::string& prefix, std::int64_t in, std::int64_t out, bool bias = true,
                          double gain = 1.0) {
    add(prefix + ".weight", {out, in}, 0.0, gain / std::sqrt(double(in)));
    if (bias) add(prefix + ".bias", {out}, 0.0, 0.1);
  };
  const auto swiglu = [&](const std::string& prefix, std::int64_t in, std::int64_t hid, std::int64_t out, double gain) {
    linear(prefix + ".fc1_g", in, hid);
    linear(prefix + ".fc1_x", in, hid);
    linear(prefix + ".fc2", hid, out, true, gain);
  };
  const auto D = n.hidden, p = n.patch, C = n.channels, hd = D / n.heads;
  const auto Hm = n.mlp_hidden > 0 ? n.mlp_hidden : (D * 4 * 2) / 3;
  add("x_embedder.proj.weight", {D, C, p, p}, 0.0, 1.0 / std::sqrt(double(C * p * p)));
  add("x_embedder.proj.bias", {D}, 0.0, 0.1);
  for (const char* e : {"t_embedder", "delta_embedder"}) {
    if (std::string(e) == "delta_embedder" && !n.delta_embedder) continue;
    linear(std::string(e) + ".mlp.0", tim::math::timestep_features, D);
    linear(std::string(e) + ".mlp.2", D, D);
  }
  add("y_embedder.embedding_table.weight", {n.classes + 1, D}, 0.0, 0.5);
  for (std::int64_t i = 0; i < n.depth; ++i) {
    const std::string b = "blocks." + std::to_string(i);
    swiglu(b + ".adaLN_modulation", D, n.adaln_hidden, 6 * D, 0.5);
    linear(b + ".attn.qkv", D, 3 * D);
    if (n.interval_qkv) linear(b + ".attn.qkv_d", D, 3 * D, false, 0.5);
    if (n.qk_norm)
      for (const char* norm : {".attn.q_norm", ".attn.k_norm"}) {
        add(b + norm + ".weight", {hd}, 1.0, 0.2);
        add(b + norm + ".bias", {hd}, 0.0, 0.2);
      }
    linear(b + ".attn.proj", D, D);
    swiglu(b + ".mlp", D, Hm, D, 1.0);
  }
  swiglu("final_layer.adaLN_modulation", D, D / 2, 2 * D, 0.5);
  linear("final_layer.linear", D, p * p * C);
  return tim::io::SafetensorsFile::from_bytes(writer.to_bytes(), "tiny C2I checkpoint");
}

template <class T>
struct Batch {
  tim::Tensor<T> x, t, r, dout;
  tim::Tensor<std::int64_t> labels;
};

//! B = 2 samples of a 4 x 6 latent (2 x 3 tokens: non-square), t > r in one, r = t in the other.
template <class T>
Batch<T> tiny_batch(const TinyNetwork& n, std::uint32_t seed) {
  const std::int64_t B = 2, H = 4, W = 6;
  Batch<T> batch;
  const auto fill = [&](tim::Shape shape, std::uint32_t s) {
    auto values = tim_test::random_vector<double>(static_cast<std::size_t>(shape.numel()), s);
    auto t = tim::Tensor<T>::empty(std::move(shape));
    for (std::int64_t i = 0; i < t.numel(); ++i) t.data()[i] = static_cast<T>(values[static_cast<std::size_t>(i)]);
    return t;
  };
  batch.x = fill({B, n.channels, H, W}, seed);
  batch.dout = fill({B, n.channels, H, W}, seed + 1);
  batch.t = tim::Tensor<T>::empty({B});
  batch.r = tim::Tensor<T>::empty({B});
  batch.t.data()[0] = T(0.7);
  batch.r.data()[0] = T(0.2);
  batch.t.data()[1] = T(0.4);
  batch.r.data()[1] = T(0.4);
  batch.labels = tim::Tensor<std::int64_t>::empty({B});
  batch.labels.data()[0] = 3;
  batch.labels.data()[1] = n.classes;  // the null class row is trained too
  return batch;
}

template <class T>
tim::nn::C2IModel<T> tiny_model(const TinyNetwork& n, std::uint32_t seed) {
  return tim::nn::clone_parameters(tim::nn::load_c2i<T>(tiny_checkpoint(n, seed)));
}

//! Sets tim's thread count for its lifetime and restores the previous one, also when a check
//! throws (REQUIRE) out of the scope.
struct ThreadCount {
  explicit ThreadCount(int n) : saved(tim::num_threads()) { tim::set_num_threads(n); }
  ~ThreadCount() { tim::set_num_threads(saved); }
  ThreadCount(const ThreadCount&) = delete;
  ThreadCount& operator=(const ThreadCount&) = delete;
  int saved;
};

//! The analytic gradients of L = sum dout * F(x) and dL/dx.
template <class T>
tim::nn::C2IGradients<T> analytic_gradients(const tim::nn::C2IModel<T>& model, const Batch<T>& batch,
                                            tim::Tensor<T>& dx, bool checkpoint = false) {
  tim::nn::C2ITrainingWorkspace<T, tim::cpu> ws;
  tim::Tensor<T> out;
  tim::nn::c2i_training_forward(model, ws, out, batch.x, batch.t, batch.r, batch.labels, checkpoint);
  auto grads = tim::nn::zero_gradients_like(model);
  tim::nn::c2i_backward(model, ws, batch.dout, grads, &dx);
  return grads;
}

}  // namespace

TEST_CASE("c2i_training_forward computes exactly the inference forward") {
  const TinyNetwork n;
  auto model = tiny_model<double>(n, 11);
  const auto batch = tiny_batch<double>(n, 21);
  tim::Tensor<double> expected, out, again;
  model.forward(expected, batch.x, batch.t, batch.r, batch.labels);
  tim::nn::C2ITrainingWorkspace<double, tim::cpu> ws;
  tim::nn::c2i_training_forward(model, ws, out, batch.x, batch.t, batch.r, batch.labels);
  REQUIRE(out.shape() == expected.shape());
  CHECK(std::equal(out.data(), out.data() + out.numel(), expected.data()));
  tim::nn::c2i_training_forward(model, ws, again, batch.x, batch.t, batch.r, batch.labels, true);
  CHECK(std::equal(again.data(), again.data() + again.numel(), expected.data()));
}

TEST_CASE("c2i_backward: every parameter and the input against central differences in double") {
  TinyNetwork released;  // 2 blocks, qk-norm, qkv_d, delta embedder, t-r
  TinyNetwork shared;    // 1 block, none of them: t_embedder serves every term of t,r,t-r
  shared.depth = 1;
  shared.qk_norm = shared.interval_qkv = shared.delta_embedder = false;
  shared.new_condition = "t,r,t-r";
  for (const auto& n : {released, shared}) {
    CAPTURE(n.new_condition);
    auto model = tiny_model<double>(n, 12);
    auto batch = tiny_batch<double>(n, 22);
    tim::Tensor<double> dx;
    auto grads = analytic_gradients(model, batch, dx);

    // Every released tensor of the checkpoint gets a gradient under its own name.
    std::set<std::string> names, expected_names;
    const auto file = tiny_checkpoint(n, 12);
    for (const auto& info : file.tensors()) expected_names.insert(info.name);
    const ThreadCount one_thread(1);  // 2 forwards per value: keep them cheap
    tim::Tensor<double> out;
    const auto loss = [&] {
      model.forward(out, batch.x, batch.t, batch.r, batch.labels);
      return tim_test::weighted_sum(batch.dout.data(), out.data(), static_cast<std::size_t>(out.numel()));
    };
    tim::nn::for_each_parameter(
        [&](const std::string& name, tim::Tensor<double>& p, tim::Tensor<double>& g) {
          names.insert(name);
          REQUIRE(g.shape() == p.shape());
          tim_test::check_gradient(name, g.data(),
                                   tim_test::numeric_gradient(p.data(), static_cast<std::size_t>(p.numel()), loss));
        },
        model, grads);
    tim_test::check_gradient("input x", dx.data(),
                             tim_test::numeric_gradient(batch.x.data(), static_cast<std::size_t>(batch.x.numel()), loss));
    CHECK(names == expected_names);
  }
}

TEST_CASE("c2i_backward: gradients accumulate, and checkpointed blocks give the same bits") {
  const TinyNetwork n;
  auto model = tiny_model<double>(n, 13);
  const auto batch = tiny_batch<double>(n, 23);
  tim::Tensor<double> dx, dx_checkpointed;
  auto grads = analytic_gradients(model, batch, dx);
  auto checkpointed = analytic_gradients(model, batch, dx_checkpointed, true);
  CHECK(std::equal(dx.data(), dx.data() + dx.numel(), dx_checkpointed.data()));
  tim::nn::for_each_parameter(
      [&](const std::string& name, tim::Tensor<double>& a, tim::Tensor<double>& b) {
        INFO(name);
        CHECK(std::equal(a.data(), a.data() + a.numel(), b.data()));
      },
      grads, checkpointed);

  // A second backward of the same forward adds the same gradients again.
  tim::nn::C2ITrainingWorkspace<double, tim::cpu> ws;
  tim::Tensor<double> out;
  tim::nn::c2i_training_forward(model, ws, out, batch.x, batch.t, batch.r, batch.labels);
  auto twice = tim::nn::zero_gradients_like(model);
  tim::nn::c2i_backward(model, ws, batch.dout, twice);
  tim::nn::c2i_backward(model, ws, batch.dout, twice);
  tim::nn::for_each_parameter(
      [&](const std::string& name, tim::Tensor<double>& once, tim::Tensor<double>& two) {
        INFO(name);
        // Exact where each gradient value takes one contribution g per backward (one use of the
        // parameter: distinct labels, t_embedder for t and delta_embedder for t-r; the GEMMs'
        // inner dimension, at most B*N = 12, in one block): the first backward writes 0 + g, the
        // second g + g = 2g, both exact. The qk-norm gradients instead take B*nh = 4 per-job
        // partial sums p_k, added in job order each time, so the second pass rounds differently:
        // |two - 2 once| <= 2 gamma_4 sum |p_k| (gamma_4 = 4.4e-16); with sum |p_k| within 10x
        // the tensor's largest gradient (random weights: the partials do not cancel), 1e-13 of it.
        const bool qk_norm = name.find("_norm.") != std::string::npos;
        double largest = 0;
        for (std::int64_t i = 0; i < once.numel(); ++i) largest = std::max(largest, std::abs(once.data()[i]));
        for (std::int64_t i = 0; i < once.numel(); ++i) {
          if (qk_norm)
            CHECK(std::abs(two.data()[i] - 2 * once.data()[i]) <= 1e-13 * largest);
          else
            CHECK(two.data()[i] == 2 * once.data()[i]);
        }
      },
      grads, twice);
  tim::nn::zero_gradients(twice);
  tim::nn::for_each_parameter(
      [&](const std::string&, tim::Tensor<double>& g) {
        for (std::int64_t i = 0; i < g.numel(); ++i) CHECK(g.data()[i] == 0.0);
      },
      twice);
}

TEST_CASE("C2ITrainingWorkspace regrows for a model of other widths; c2i_backward rejects mis-shaped grads") {
  // Same depth, same batch and latent, wider MLP and adaLN: a workspace sized for the first
  // model is too small for the second (its reserve once looked only at B, H, W and the depth).
  const TinyNetwork narrow;
  TinyNetwork wide;
  wide.mlp_hidden = 64;
  wide.adaln_hidden = 24;
  const auto model_a = tiny_model<double>(narrow, 15);
  const auto model_b = tiny_model<double>(wide, 16);
  REQUIRE(model_b.config.mlp_hidden > model_a.config.mlp_hidden);
  const auto batch = tiny_batch<double>(narrow, 25);
  tim::nn::C2ITrainingWorkspace<double, tim::cpu> ws;
  tim::Tensor<double> out, dx;
  tim::nn::c2i_training_forward(model_a, ws, out, batch.x, batch.t, batch.r, batch.labels);
  auto grads_a = tim::nn::zero_gradients_like(model_a);
  tim::nn::c2i_backward(model_a, ws, batch.dout, grads_a);

  tim::nn::c2i_training_forward(model_b, ws, out, batch.x, batch.t, batch.r, batch.labels);
  const std::int64_t rows = batch.x.dim(0) * (batch.x.dim(2) / 2) * (batch.x.dim(3) / 2);
  CHECK(ws.blocks[0].mlp_hidden.numel() >= 2 * rows * model_b.config.mlp_hidden);
  CHECK(ws.blocks[0].adaln_hidden.numel() >= 2 * batch.x.dim(0) * wide.adaln_hidden);
  CHECK(ws.mlp_product.numel() >= rows * model_b.config.mlp_hidden);
  // The first model's gradients are not the second's: a clear error, before anything is written.
  std::string message;
  try {
    tim::nn::c2i_backward(model_b, ws, batch.dout, grads_a);
  } catch (const tim::Error& e) {
    message = e.what();
  }
  CHECK(message.find("c2i_backward: 'grads' must be shaped like the model") != std::string::npos);
  CHECK(message.find("blocks.0.adaLN_modulation.fc1_g.weight") != std::string::npos);
  auto grads_b = tim::nn::zero_gradients_like(model_b);
  tim::nn::c2i_backward(model_b, ws, batch.dout, grads_b, &dx);

  // The reused workspace gives exactly the gradients of a fresh one.
  tim::Tensor<double> dx_fresh;
  auto fresh = analytic_gradients(model_b, batch, dx_fresh);
  CHECK(std::equal(dx.data(), dx.data() + dx.numel(), dx_fresh.data()));
  tim::nn::for_each_parameter(
      [&](const std::string& name, tim::Tensor<double>& a, tim::Tensor<double>& b) {
        INFO(name);
        CHECK(std::equal(a.data(), a.data() + a.numel(), b.data()));
      },
      grads_b, fresh);
}

TEST_CASE("clone_parameters and zero_gradients_like: a copy has its own inference workspace") {
  // C2IModel's workspace is a tim::nn::Workspace, whose copy starts empty. Observed with the
  // allocation counter: a warmed forward makes some fixed number of allocations (`warm`: the
  // workspace itself allocates nothing once sized, what remains is per call); a copy's first
  // forward must make more, growing its own buffers (a copy sharing the original's scratch
  // would make exactly `warm`), and the original's forwards stay at `warm` with the same bits.
  const TinyNetwork n;
  const auto model = tiny_model<double>(n, 17);
  const auto batch = tiny_batch<double>(n, 27);
  const ThreadCount one_thread(1);
  auto out = tim::Tensor<double>::empty(batch.x.shape()), again = tim::Tensor<double>::empty(batch.x.shape());
  model.forward(out, batch.x, batch.t, batch.r, batch.labels);
  const auto count = [&](const tim::nn::C2IModel<double>& m, tim::Tensor<double>& o) {
    tim_test::start_counting_allocations();
    m.forward(o, batch.x, batch.t, batch.r, batch.labels);
    return tim_test::stop_counting_allocations();
  };
  const long warm = count(model, again);
  CHECK(count(model, again) == warm);
  const auto clone = tim::nn::clone_parameters(model);
  const auto grads = tim::nn::zero_gradients_like(model);
  for (const auto* copy : {&clone, &grads}) {
    auto copy_out = tim::Tensor<double>::empty(batch.x.shape());
    const long first = count(*copy, copy_out);
    CHECK(first > warm);
    CHECK(count(*copy, copy_out) == warm);
    CHECK(count(model, again) == warm);
    CHECK(std::equal(again.data(), again.data() + again.numel(), out.data()));
  }
  auto clone_out = tim::Tensor<double>::empty(batch.x.shape());
  clone.forward(clone_out, batch.x, batch.t, batch.r, batch.labels);
  CHECK(std::equal(clone_out.data(), clone_out.data() + clone_out.numel(), out.data()));
}

TEST_CASE("c2i_backward in float against double") {
  // Bound: 1e-4 of the largest gradient of each tensor, the bound of the float forward against
  // double (test_c2i_golden.cpp) and issue 17's float target. Why it holds: every value is a
  // chain of sums of at most K = 256 products (the embedders' first layer; D = 16, 3D, Hm = 42,
  // N = 6 elsewhere) with float rounding u = 6e-8, so each sum is within K u = 1.5e-5 of its sum
  // of |terms|; the backward runs the transposed products of the forward's layers plus the
  // LayerNorm and softmax derivatives (two reductions over D or N per row) on the float forward's
  // activations, and the gradients of these random networks are not cancellations (the sums of
  // |terms| are within a few times the largest gradient), so a few K u < 1e-4.
  const TinyNetwork n;
  auto model = tiny_model<double>(n, 14);
  auto model_f = tim::nn::clone_parameters(tim::nn::load_c2i<float>(tiny_checkpoint(n, 14)));
  const auto batch = tiny_batch<double>(n, 24);
  const auto batch_f = tiny_batch<float>(n, 24);
  tim::Tensor<double> dx;
  tim::Tensor<float> dx_f;
  auto grads = analytic_gradients(model, batch, dx);
  auto grads_f = analytic_gradients(model_f, batch_f, dx_f);
  double worst = 0;
  std::vector<tim::Tensor<double>> doubles;
  tim::nn::for_each_parameter([&](const std::string&, tim::Tensor<double>& g) { doubles.push_back(g); }, grads);
  std::size_t index = 0;
  tim::nn::for_each_parameter(
      [&](const std::string& name, tim::Tensor<float>& g) {
        const auto& reference = doubles.at(index++);
        const double error = tim_test::gradient_error(g.data(), reference.data(), static_cast<std::size_t>(g.numel()));
        worst = std::max(worst, error);
        INFO(name, ": relative error ", error);
        CHECK(error <= 1e-4);
      },
      grads_f);
  const double input_error = tim_test::gradient_error(dx_f.data(), dx.data(), static_cast<std::size_t>(dx.numel()));
  CHECK(input_error <= 1e-4);
  MESSAGE("float gradients against double: largest relative error ", worst, " (input ", input_error, ")");
}

TEST_CASE("c2i_backward against PyTorch autograd through the reference (golden, double within 1e-9)") {
  // Both sides compute in double; they differ only in summation order and in how each formula is
  // arranged. Every value is a chain of sums of at most 256 products (u = 1.1e-16: each sum within
  // 256 u = 3e-14 of its sum of |terms|), through a few dozen layers: a relative error near 1e-12
  // at most, so 1e-9 (issue 17's bound) holds with margin and an O(1) formula error cannot hide.
  auto file = tim::io::SafetensorsFile::open(std::string(TIM_TEST_DATA_DIR) + "/backward_golden/tiny.safetensors");
  tim_test::ParametersOnly parameters(file);
  auto model = tim::nn::clone_parameters(tim::nn::load_c2i<double>(parameters));
  CHECK(model.config.qk_norm);
  CHECK(model.config.interval_qkv);
  CHECK(model.config.separate_delta_embedder);
  const auto x = file.load<double>("input.x"), t = file.load<double>("input.t"), r = file.load<double>("input.r");
  const auto y = file.load<std::int64_t>("input.y");
  const auto dout = file.load<double>("input.dout");
  CHECK(x.dim(2) != x.dim(3));  // non-square latent
  tim::nn::C2ITrainingWorkspace<double, tim::cpu> ws;
  tim::Tensor<double> out, dx;
  tim::nn::c2i_training_forward(model, ws, out, x, t, r, y);
  const auto expected_out = file.load<double>("output.out");
  CHECK(tim_test::relative_error(out.data(), expected_out.data(), static_cast<std::size_t>(out.numel())) <= 1e-10);
  auto grads = tim::nn::zero_gradients_like(model);
  tim::nn::c2i_backward(model, ws, dout, grads, &dx);
  std::size_t compared = 0;
  double worst = 0;
  tim::nn::for_each_parameter(
      [&](const std::string& name, tim::Tensor<double>& g) {
        const auto expected = file.load<double>("output.grad." + name);
        REQUIRE(expected.numel() == g.numel());
        const double error = tim_test::gradient_error(g.data(), expected.data(), static_cast<std::size_t>(g.numel()));
        worst = std::max(worst, error);
        INFO(name, ": relative error ", error);
        CHECK(error <= 1e-9);
        ++compared;
      },
      grads);
  std::size_t golden_gradients = 0;
  for (const auto& info : file.tensors()) golden_gradients += info.name.rfind("output.grad.", 0) == 0;
  CHECK(compared == golden_gradients);  // every autograd gradient has its C++ counterpart
  const auto expected_dx = file.load<double>("output.grad_input.x");
  const double input_error = tim_test::gradient_error(dx.data(), expected_dx.data(), static_cast<std::size_t>(dx.numel()));
  CHECK(input_error <= 1e-9);
  MESSAGE("backward golden: ", compared, " parameter gradients, largest relative error ", worst, " (input ",
          input_error, ")");
}
