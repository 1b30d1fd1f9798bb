// tim::PerSampleNetwork (include/tim/cpu/per_sample_network.hpp): every row of a batch computed on
// its own, on one thread, so its bits do not depend on the batch, the row's position or the thread
// count. The reference is the plain network run on one row at a time with one thread, written
// here on its own; the shipped Fashion-MNIST model supplies real weights.
#include <doctest/doctest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "golden_source.hpp"
#include "tim/core/cast.hpp"
#include "tim/cpu/per_sample_network.hpp"
#include "tim/tim.hpp"

namespace {

const std::string shipped = std::string(TIM_TEST_DATA_DIR) + "/../../models/tim-fmnist.safetensors";

struct Inputs {
  tim::Tensor<float> x, t, r;
  tim::Tensor<std::int64_t> y;
};

Inputs inputs(std::int64_t B, std::int64_t H, std::int64_t W) {
  Inputs in{tim::cast<float>(tim::initial_noise({B, 1, H, W}, 3)), tim::Tensor<float>::empty({B}),
            tim::Tensor<float>::empty({B}), tim::Tensor<std::int64_t>::empty({B})};
  for (std::int64_t b = 0; b < B; ++b) {
    in.t.data()[b] = 0.9f - 0.2f * static_cast<float>(b);
    in.r.data()[b] = 0.1f * static_cast<float>(b);
    in.y.data()[b] = b % 11;  // 10 is the null class
  }
  return in;
}

// Row b alone through its own copy of the network, with one thread.
template <class Model>
tim::Tensor<float> one_row_at_a_time(const Model& model, const Inputs& in) {
  const auto B = in.x.dim(0);
  tim::set_num_threads(1);
  auto alone = model;  // an empty workspace of its own
  auto out = tim::Tensor<float>::empty({B, in.x.dim(1), in.x.dim(2), in.x.dim(3)});
  for (std::int64_t b = 0; b < B; ++b) {
    tim::Tensor<float> row;
    alone.forward(row, in.x.slice(b, 1), in.t.slice(b, 1), in.r.slice(b, 1), in.y.slice(b, 1));
    std::copy_n(row.data(), row.numel(), out.data() + b * row.numel());
  }
  return out;
}

bool same_bits(const tim::Tensor<float>& a, const tim::Tensor<float>& b) {
  if (a.shape() != b.shape()) return false;
  for (std::int64_t i = 0; i < a.numel(); ++i)
    if (a.data()[i] != b.data()[i]) return false;
  return true;
}

}  // namespace

TEST_CASE("PerSampleNetwork: every row equals the row alone on one thread, at any thread count") {
  const int threads_before = tim::num_threads();
  auto model = tim::load_c2i<float>(shipped);
  const auto H = 32, W = 32;
  const Inputs in = inputs(5, H, W);
  const auto expected = one_row_at_a_time(model, in);
  // The plain network on the whole batch with 2 threads: the comparison can see batching.
  tim::set_num_threads(2);
  tim::Tensor<float> batched;
  model.forward(batched, in.x, in.t, in.r, in.y);  // `model` has now run forward: its copies must not share it
  CHECK(!same_bits(batched, expected));
  for (int threads : {1, 2, 3}) {
    CAPTURE(threads);
    tim::set_num_threads(threads);
    const tim::PerSampleNetwork exact{model};
    tim::Tensor<float> out;
    exact.forward(out, in.x, in.t, in.r, in.y);
    CHECK(same_bits(out, expected));
    exact.forward(out, in.x, in.t, in.r, in.y);  // again, reusing the copies' workspaces
    CHECK(same_bits(out, expected));
  }
  tim::set_num_threads(threads_before);
}

TEST_CASE("PerSampleNetwork: bad input is a tim::Error, not a crash inside the parallel region") {
  auto model = tim::load_c2i<float>(shipped);
  Inputs in = inputs(3, 32, 32);
  in.y.data()[2] = 11;  // beyond the null class 10
  const tim::PerSampleNetwork exact{model};
  tim::Tensor<float> out;
  const auto message = tim_test::error_of([&] { exact.forward(out, in.x, in.t, in.r, in.y); });
  CHECK(message.find("11") != std::string::npos);
}
