// Shape: the extents of a row-major tensor, with checked element counts and readable printing.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <limits>
#include <ostream>
#include <sstream>
#include <string>
#include <vector>

#include "tim/core/error.hpp"

namespace tim {

//! Extents of a contiguous row-major tensor, outermost first: `Shape{B, C, H, W}`.
class Shape {
 public:
  Shape() = default;
  Shape(std::initializer_list<std::int64_t> extents) : extents_(extents) { validate(); }
  explicit Shape(std::vector<std::int64_t> extents) : extents_(std::move(extents)) { validate(); }

  int rank() const { return static_cast<int>(extents_.size()); }
  std::int64_t operator[](int axis) const { return extents_.at(static_cast<std::size_t>(axis)); }
  const std::vector<std::int64_t>& extents() const { return extents_; }

  //! Number of elements (1 for rank 0). Overflow was ruled out on construction.
  std::int64_t numel() const {
    std::int64_t n = 1;
    for (auto e : extents_) n *= e;
    return n;
  }

  bool operator==(const Shape&) const = default;

  std::string str() const {
    std::ostringstream out;
    out << '[';
    for (std::size_t i = 0; i < extents_.size(); ++i) out << (i ? ", " : "") << extents_[i];
    out << ']';
    return out.str();
  }

 private:
  // Messages are built only when a check fails: validating a long shape stays linear.
  void validate() const {
    std::int64_t n = 1;
    for (auto e : extents_) {
      if (e < 0) fail("shape ", str(), ": negative extent");
      if (e != 0 && n > std::numeric_limits<std::int64_t>::max() / e)
        fail("shape ", str(), ": element count overflows 64 bits");
      n *= e;
    }
  }
  std::vector<std::int64_t> extents_;
};

inline std::ostream& operator<<(std::ostream& out, const Shape& shape) { return out << shape.str(); }

}  // namespace tim
