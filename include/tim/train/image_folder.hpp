// A folder of PNG images as a training data set, laid out as torchvision's ImageFolder: one
// sub-folder per class, class labels in sorted order of the sub-folder names; each image is
// scaled so that it covers the model's H x W (area averaging), centre-cropped, converted to the
// model's channels and mapped to [-1, 1] (docs/training.md, "Image folders").
//
// Needs libpng (tim/io/png.hpp): link PNG::PNG.
#pragma once

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "tim/core/error.hpp"
#include "tim/io/png.hpp"
#include "tim/train/datasets.hpp"

namespace tim::train {

namespace detail {

//! Resampling weights of one axis by area averaging: output pixel o covers the input interval
//! [o / s, (o + 1) / s) at scale s = out / in (after the crop offset), each input pixel
//! weighted by its overlap; weights of an output pixel sum to 1.
struct AxisWeights {
  std::vector<std::int64_t> first;  // per output pixel: first input pixel
  std::vector<std::int64_t> count;  // how many input pixels
  std::vector<double> weight;       // flattened weights, `count` per output pixel
  std::vector<std::int64_t> start;  // offset into weight per output pixel
};

//! Area weights for `out` output pixels taken from `in` input pixels scaled by `scale`
//! (in scale >= out), the window starting `offset` output pixels into the scaled image.
inline AxisWeights area_weights(std::int64_t in, std::int64_t out, double scale, std::int64_t offset) {
  AxisWeights w;
  for (std::int64_t o = 0; o < out; ++o) {
    const double lo = static_cast<double>(o + offset) / scale, hi = static_cast<double>(o + offset + 1) / scale;
    const auto first = std::max<std::int64_t>(0, static_cast<std::int64_t>(std::floor(lo)));
    const auto last = std::min<std::int64_t>(in - 1, static_cast<std::int64_t>(std::ceil(hi)) - 1);
    w.first.push_back(first);
    w.start.push_back(static_cast<std::int64_t>(w.weight.size()));
    double total = 0;
    for (std::int64_t i = first; i <= last; ++i) {
      const double overlap = std::min(hi, static_cast<double>(i + 1)) - std::max(lo, static_cast<double>(i));
      w.weight.push_back(std::max(0.0, overlap));
      total += std::max(0.0, overlap);
    }
    check(total > 0, "image resampling: empty window for output pixel ", o, " of ", out, " (input ", in, ")");
    for (std::int64_t k = w.start.back(); k < static_cast<std::int64_t>(w.weight.size()); ++k) w.weight[k] /= total;
    w.count.push_back(last - first + 1);
  }
  return w;
}

//! The .png files (extension case-insensitive) under `folder`, following directory symlinks as
//! torchvision's ImageFolder does, in no particular order. A symlink back to a folder above
//! (a loop) and a folder that cannot be listed are errors naming the path, not an endless walk or
//! a std::filesystem_error.
inline std::vector<std::string> list_png_files(const std::string& root, const std::filesystem::path& folder) {
  namespace fs = std::filesystem;
  std::vector<std::string> images;
  try {
    std::vector<fs::path> ancestors{fs::canonical(folder)};  // canonical folders from `folder` down
    for (auto it = fs::recursive_directory_iterator(folder, fs::directory_options::follow_directory_symlink);
         it != fs::recursive_directory_iterator(); ++it) {
      const fs::directory_entry& entry = *it;
      if (entry.is_directory()) {
        const fs::path real = fs::canonical(entry.path());
        ancestors.resize(static_cast<std::size_t>(it.depth()) + 1);
        check(std::find(ancestors.begin(), ancestors.end(), real) == ancestors.end(), "image folder '", root,
              "': '", entry.path().string(), "' leads back to '", real.string(),
              "', a folder above it (a symbolic link loop)");
        ancestors.push_back(real);
        continue;
      }
      if (!entry.is_regular_file()) continue;
      std::string ext = entry.path().extension().string();
      std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char ch) { return std::tolower(ch); });
      if (ext == ".png") images.push_back(entry.path().string());
    }
  } catch (const fs::filesystem_error& e) {
    fail("image folder '", root, "': cannot list '", e.path1().string(), "': ", e.code().message());
  }
  return images;
}

}  // namespace detail

//! Writes `image` as a (channels, height, width) sample in [-1, 1] into `out`: scaled by
//! s = max(height / image.height, width / image.width) (so it covers the target), area-averaged,
//! the centre height x width window kept (offset floor((scaled - target) / 2), as ADM's
//! centre crop), RGB to gray by ITU-R 601 luma (0.299 R + 0.587 G + 0.114 B) when channels is 1,
//! gray repeated when it is 3; then v / 127.5 - 1 (torchvision's ToTensor and Normalize(0.5, 0.5)).
inline void image_to_sample(const io::PngImage& image, std::int64_t channels, std::int64_t height, std::int64_t width,
                            float* out, const std::string& label) {
  check(image.channels == 1 || image.channels == 3, label, ": ", image.channels, " channels (expected gray or RGB)");
  check(channels == 1 || channels == 3, "image folder: the model needs ", channels, " channels (1 or 3 supported)");
  const double scale = std::max(static_cast<double>(height) / image.height, static_cast<double>(width) / image.width);
  const auto scaled_h = static_cast<std::int64_t>(std::floor(image.height * scale + 1e-9));
  const auto scaled_w = static_cast<std::int64_t>(std::floor(image.width * scale + 1e-9));
  const auto rows = detail::area_weights(image.height, height, scale, (std::max(scaled_h, height) - height) / 2);
  const auto cols = detail::area_weights(image.width, width, scale, (std::max(scaled_w, width) - width) / 2);
  const std::int64_t in_c = image.channels;
  auto pixel = [&](std::int64_t y, std::int64_t x, std::int64_t c) -> double {
    const std::uint8_t* p = image.pixels.data() + (y * image.width + x) * in_c;
    if (in_c == static_cast<std::int64_t>(channels)) return p[c];
    if (in_c == 1) return p[0];
    return 0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2];
  };
  for (std::int64_t c = 0; c < channels; ++c)
    for (std::int64_t oy = 0; oy < height; ++oy)
      for (std::int64_t ox = 0; ox < width; ++ox) {
        double value = 0;
        for (std::int64_t i = 0; i < rows.count[oy]; ++i) {
          double row = 0;
          for (std::int64_t j = 0; j < cols.count[ox]; ++j)
            row += cols.weight[cols.start[ox] + j] * pixel(rows.first[oy] + i, cols.first[ox] + j, c);
          value += rows.weight[rows.start[oy] + i] * row;
        }
        out[(c * height + oy) * width + ox] = static_cast<float>(value / 127.5 - 1.0);
      }
}

//! PNG images in class sub-folders: ROOT/<class>/**.png (extension case-insensitive), classes
//! in sorted order of their folder names (byte order, as Python's sorted), images of a class in
//! sorted order of their paths, classes one after the other (torchvision's ImageFolder order).
//! Files are decoded when read (on the loader's thread). Sample shape (channels, height, width).
//! Example: `tim::train::ImageFolder data("photos", 3, 256, 256);`
class ImageFolder final : public Dataset {
 public:
  ImageFolder(const std::string& root, std::int64_t channels, std::int64_t height, std::int64_t width)
      : channels_(channels), height_(height), width_(width) {
    check(channels == 1 || channels == 3, "image folder '", root, "': ", channels, " channels (expected 1 or 3)");
    check(height >= 1 && width >= 1 && height <= 16384 && width <= 16384, "image folder '", root, "': size ", height,
          " x ", width, " (expected 1 .. 16384)");
    check(std::filesystem::is_directory(root), "image folder: '", root, "' is not a folder");
    for (const auto& entry : std::filesystem::directory_iterator(root))
      if (entry.is_directory()) classes_.push_back(entry.path().filename().string());
    std::sort(classes_.begin(), classes_.end());
    check(!classes_.empty(), "image folder '", root, "': no class sub-folders (expected ROOT/<class>/<image>.png)");
    for (std::size_t c = 0; c < classes_.size(); ++c) {
      std::vector<std::string> images = detail::list_png_files(root, std::filesystem::path(root) / classes_[c]);
      check(!images.empty(), "image folder '", root, "': class folder '", classes_[c], "' holds no .png image");
      std::sort(images.begin(), images.end());
      for (auto& path : images) {
        files_.push_back(std::move(path));
        labels_.push_back(static_cast<std::int64_t>(c));
      }
    }
  }

  std::int64_t size() const override { return static_cast<std::int64_t>(files_.size()); }
  Shape sample_shape() const override { return Shape({channels_, height_, width_}); }
  std::int64_t num_classes() const override { return static_cast<std::int64_t>(classes_.size()); }
  std::int64_t read(std::int64_t index, float* out) const override {
    check(index >= 0 && index < size(), "image folder: sample ", index, " of ", size());
    const std::string& path = files_[static_cast<std::size_t>(index)];
    check_png_size(path);
    image_to_sample(io::read_png(path), channels_, height_, width_, out, path);
    return labels_[static_cast<std::size_t>(index)];
  }

  //! Most pixels an image may have (2^26, e.g. 8192 x 8192): a larger one is refused from its
  //! header before it is decoded.
  static constexpr std::uint64_t max_pixels = std::uint64_t{1} << 26;

  //! Reads the PNG header (signature, IHDR width and height) of `path` and refuses an image of
  //! more than max_pixels, so a hostile file cannot make the decoder allocate without bound.
  //! Files that are not PNG are left to io::read_png, which names the problem.
  static void check_png_size(const std::string& path) {
    std::FILE* file = std::fopen(path.c_str(), "rb");
    check(file != nullptr, "cannot open PNG '", path, "'");
    unsigned char header[24] = {};
    const std::size_t got = std::fread(header, 1, sizeof header, file);
    std::fclose(file);
    if (got < sizeof header || png_sig_cmp(header, 0, 8) != 0) return;
    const auto be32 = [&](int at) {
      return (std::uint64_t{header[at]} << 24) | (std::uint64_t{header[at + 1]} << 16) | (std::uint64_t{header[at + 2]} << 8) |
             std::uint64_t{header[at + 3]};
    };
    const std::uint64_t width = be32(16), height = be32(20);
    check(width * height <= max_pixels, "image '", path, "': ", width, " x ", height, " pixels, more than the ", max_pixels,
          " a training image may have");
  }

  //! Class names in label order (label i is class_names()[i]).
  const std::vector<std::string>& class_names() const { return classes_; }
  //! The image files in sample order.
  const std::vector<std::string>& files() const { return files_; }

 private:
  std::int64_t channels_, height_, width_;
  std::vector<std::string> classes_, files_;
  std::vector<std::int64_t> labels_;
};

}  // namespace tim::train
