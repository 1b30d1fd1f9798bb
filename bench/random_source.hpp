// What the random checkpoints of bench/ share (random_checkpoint.hpp for TiM networks,
// random_vae_checkpoint.hpp and random_dc_ae_checkpoint.hpp for the latent decoders): a list of
// tensor names and shapes that answers the reads tim's loaders make of a Source (contains, info,
// tensors, metadata), and deterministic values generated only when a tensor is loaded.
//
// Values: tensor `name` is cut into chunks of 2^16 values; chunk i draws from a std::mt19937
// seeded by (FNV-1a hash of the name, i, seed), so a tensor does not depend on the thread count
// or on which other tensors were loaded.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <random>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "tim/core/error.hpp"
#include "tim/core/tensor.hpp"
#include "tim/cpu/backend.hpp"
#include "tim/io/safetensors.hpp"

namespace tim_bench {

class RandomSource {
 public:
  static constexpr std::int64_t chunk = std::int64_t{1} << 16;

  bool contains(std::string_view name) const { return index_.find(std::string(name)) != index_.end(); }
  const tim::io::TensorInfo& info(std::string_view name) const {
    const auto found = index_.find(std::string(name));
    if (found == index_.end()) tim::fail("tensor '", name, "' not found in the ", what_);
    return tensors_[found->second];
  }
  const std::vector<tim::io::TensorInfo>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  std::int64_t parameter_count() const {
    std::int64_t n = 0;
    for (const auto& t : tensors_) n += t.shape.numel();
    return n;
  }

 protected:
  //! `what` names the source in messages ("random checkpoint").
  RandomSource(std::string what, std::uint64_t seed) : what_(std::move(what)), seed_(seed) {}

  //! Declares tensor `name` of `shape`, stored as `dtype` (F32 unless given).
  void add(std::string name, tim::Shape shape, tim::DType dtype = tim::DType::F32) {
    tim::io::TensorInfo t;
    t.name = name;
    t.dtype = dtype;
    t.shape = std::move(shape);
    t.begin = offset_;
    offset_ += static_cast<std::size_t>(t.shape.numel()) * tim::dtype_size(dtype);
    t.end = offset_;
    index_.emplace(std::move(name), tensors_.size());
    tensors_.push_back(std::move(t));
  }

  //! Tensor `name` (its shape must be `expected`) with value offset + distribution(engine), one
  //! distribution (a copy of `distribution`) and engine per chunk, in the distribution's type,
  //! then converted to T.
  template <class T, class Distribution>
  tim::Tensor<T, tim::cpu> generate(std::string_view name, const tim::Shape& expected, const Distribution& distribution,
                                    typename Distribution::result_type offset = 0) const {
    const tim::io::TensorInfo& t = info(name);
    tim::check(t.shape == expected, "tensor '", name, "': expected shape ", expected, ", got ", t.shape, " (in the ",
               what_, ")");
    auto out = tim::Tensor<T, tim::cpu>::empty(t.shape);
    const std::int64_t n = t.shape.numel();
    const std::uint64_t h = fnv1a(t.name), seed = seed_;
    T* data = out.data();
    tim::cpu::parallel_for((n + chunk - 1) / chunk, [&](std::int64_t i) {
      std::seed_seq sequence{static_cast<std::uint32_t>(h), static_cast<std::uint32_t>(h >> 32),
                             static_cast<std::uint32_t>(i), static_cast<std::uint32_t>(seed),
                             static_cast<std::uint32_t>(seed >> 32)};
      std::mt19937 engine(sequence);
      Distribution draw = distribution;
      const std::int64_t end = std::min(n, (i + 1) * chunk);
      for (std::int64_t j = i * chunk; j < end; ++j) data[j] = static_cast<T>(offset + draw(engine));
    });
    return out;
  }

  //! 1 / sqrt(fan_in) of a weight shaped (out, ...): N(0, 1/fan_in) keeps activations O(1).
  static double fan_in_stddev(const tim::Shape& shape) {
    return 1.0 / std::sqrt(static_cast<double>(shape.numel() / shape[0]));
  }
  static bool ends_with(std::string_view s, std::string_view suffix) {
    return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
  }

  std::map<std::string, std::string> metadata_;

 private:
  static std::uint64_t fnv1a(std::string_view s) {
    std::uint64_t h = 14695981039346656037ull;
    for (unsigned char ch : s) {
      h ^= ch;
      h *= 1099511628211ull;
    }
    return h;
  }

  std::string what_;
  std::uint64_t seed_;
  std::vector<tim::io::TensorInfo> tensors_;
  std::unordered_map<std::string, std::size_t> index_;
  std::size_t offset_ = 0;
};

}  // namespace tim_bench
