// A network adaptor that evaluates every row of a batch on its own, single-threaded, rows spread
// over the threads: forward on B rows runs B one-row evaluations of the wrapped network, each on
// one thread with its own copy of the network (the weights shared, the workspace its own).
// OpenBLAS (and cuBLAS) choose kernels, blockings, edge paths and thread splits by the matrix
// sizes and the thread count, so a sample's output in float depends on how many rows share its
// GEMMs and on how many threads compute them; one row on one thread depends on neither.
// TransitionSampler over this adaptor therefore gives every sample the same bits whatever chunk,
// shard, request or --threads it is generated with (given the model, the settings and the CPU
// kernels): the foundation of `tim sample --batch-size`, `--shard` and `--resume`
// (docs/scale.md) and of a server's dynamic batching. Host (tim::cpu) networks only.
//
// It is a tim::SamplingNetwork (tim/sampler/sampler.hpp) with the wrapped network's value_type,
// backend, Condition and config. Rows and outputs are sliced as views; each copy's workspace
// grows to one row on its first evaluation, after which evaluations allocate nothing (a copied
// network starts with an empty workspace of its own: tim::nn::Workspace). One instance is not
// re-entrant: two threads must not call forward on the same PerSampleNetwork at once.
//
// Example:
//   tim::PerSampleNetwork exact{network};
//   tim::TransitionSampler sampler{exact, transport, schedule};
//   auto result = sampler.sample(noise, labels, options);  // row b as if sampled alone
#pragma once

#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <exception>
#include <vector>

#include "tim/core/tensor.hpp"
#include "tim/cpu/threads.hpp"

namespace tim {

template <class Network>
class PerSampleNetwork {
 public:
  using value_type = typename Network::value_type;
  using backend = typename Network::backend;
  using Condition = typename Network::Condition;
  using Config = decltype(Network::config);

  explicit PerSampleNetwork(const Network& network)
      : config(network.config), copies_(thread_count(), network) {}

  Config config;

  void check_condition(const Condition& c, std::int64_t rows) const { copies_.front().check_condition(c, rows); }
  Condition guided_condition(const Condition& c) const { return copies_.front().guided_condition(c); }
  //! Every copy evaluates one row at a time: its workspace grows to one row when first used.
  void reserve_for(const Condition&, std::int64_t, std::int64_t, std::int64_t) const {}
  //! out (B, ...) row by row: out[b] = network(x[b], t_in[b], r_in[b], c[b]), each on one thread.
  void forward(tim::Tensor<value_type, backend>& out, const tim::Tensor<value_type, backend>& x,
               const tim::Tensor<value_type, backend>& t_in, const tim::Tensor<value_type, backend>& r_in,
               const Condition& c) const {
    const std::int64_t B = x.dim(0);
    if (out.empty_tensor() || out.rank() != 4 || out.dim(0) != B || out.dim(1) != config.out_channels ||
        out.dim(2) != x.dim(2) || out.dim(3) != x.dim(3))
      out = tim::Tensor<value_type, backend>::empty({B, config.out_channels, x.dim(2), x.dim(3)});
    copies_.front().check_condition(c, B);  // bad input throws here, outside the parallel region
    const auto threads = static_cast<int>(copies_.size());
    // Inside this parallel region the network's own OpenMP loops and OpenBLAS run on one thread:
    // each thread asks for one thread in the regions it opens (so even OMP_NUM_THREADS="4,2" or
    // OMP_MAX_ACTIVE_LEVELS > 1 nest nothing), and OpenBLAS's OpenMP build runs serially inside
    // an active region. The region is active even for one row, so that row too is computed on one
    // thread. An exception cannot leave an OpenMP region: the first is kept and rethrown after it.
    std::exception_ptr failure;
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
    for (std::int64_t b = 0; b < B; ++b) {
      omp_set_num_threads(1);
      try {
        const auto& network = copies_[static_cast<std::size_t>(omp_get_thread_num())];
        auto row = out.slice(b, 1);
        network.forward(row, x.slice(b, 1), t_in.slice(b, 1), r_in.slice(b, 1), c.slice(b, 1));
      } catch (...) {
#pragma omp critical(tim_per_sample_failure)
        if (!failure) failure = std::current_exception();
      }
    }
    if (failure) std::rethrow_exception(failure);
  }

 private:
  static std::size_t thread_count() {
    tim::detail::ensure_default_threads();
    return static_cast<std::size_t>(std::max(1, tim::num_threads()));
  }
  std::vector<Network> copies_;  // one per thread, weights shared (tim::Tensor copies are views)
};

}  // namespace tim
