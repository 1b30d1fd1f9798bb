// Training data sets with one interface (Dataset: a count, a sample shape, read one sample as
// float plus its label): Fashion-MNIST from the Debian package dataset-fashion-mnist (gzipped idx
// files, as tools/reference/train.py reads them) and latents in safetensors shards (how a user
// trains on pre-encoded images, e.g. ImageNet through a VAE). Folders of images are in
// tim/train/image_folder.hpp (libpng). Every file is validated on open; a bad one is a tim::Error
// naming the file and what was expected (docs/training.md, "Data").
//
// Needs zlib (the idx files are gzipped): link ZLIB::ZLIB (CMake `find_package(ZLIB)`).
#pragma once

#include <zlib.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "tim/core/dtype.hpp"
#include "tim/core/error.hpp"
#include "tim/core/shape.hpp"
#include "tim/io/safetensors.hpp"

namespace tim::train {

//! A training data set: `size()` samples of shape `sample_shape()` = (C, H, W), each read as
//! float values into `out` (C H W of them) with its class label (0 .. num_classes - 1) returned.
//! `read` may be called from the loader's thread; implementations are read-only after
//! construction, so concurrent reads are safe.
class Dataset {
 public:
  virtual ~Dataset() = default;
  virtual std::int64_t size() const = 0;
  virtual Shape sample_shape() const = 0;
  //! Number of classes (labels are 0 .. num_classes() - 1).
  virtual std::int64_t num_classes() const = 0;
  //! Writes sample `index` (C, H, W) into `out` and returns its label.
  virtual std::int64_t read(std::int64_t index, float* out) const = 0;
};

// ---------------------------------------------------------------------------------------------
// Fashion-MNIST

//! An idx array of uint8 (the MNIST family's format): big-endian magic 0x0000 08 NDIM, NDIM
//! big-endian uint32 extents, then the bytes.
struct IdxArray {
  std::vector<std::int64_t> dims;
  std::vector<std::uint8_t> data;
};

//! Parses an uncompressed idx file image; `label` names it in errors. Checks the magic, the
//! rank (1 to 4), that the extents' product fits and equals the bytes that follow, exactly.
inline IdxArray parse_idx(const std::uint8_t* bytes, std::size_t size, const std::string& label) {
  check(size >= 4, label, ": not an idx file: ", size, " bytes, shorter than the 4-byte magic");
  check(bytes[0] == 0 && bytes[1] == 0, label, ": not an idx file (the magic must start with two zero bytes)");
  check(bytes[2] == 0x08, label, ": idx element type 0x", std::hex, int(bytes[2]), std::dec,
        " is not uint8 (0x08), the only type Fashion-MNIST uses");
  const int rank = bytes[3];
  check(rank >= 1 && rank <= 4, label, ": idx rank ", rank, " (expected 1 to 4)");
  check(size >= 4 + 4 * static_cast<std::size_t>(rank), label, ": idx header of rank ", rank, " needs ",
        4 + 4 * rank, " bytes, the file has ", size);
  IdxArray out;
  std::uint64_t count = 1;
  for (int i = 0; i < rank; ++i) {
    const std::uint8_t* p = bytes + 4 + 4 * i;
    const std::uint64_t extent = (std::uint64_t{p[0]} << 24) | (std::uint64_t{p[1]} << 16) |
                                 (std::uint64_t{p[2]} << 8) | std::uint64_t{p[3]};
    // count <= size holds before each product, so checking against size / extent cannot overflow.
    check(extent == 0 || count <= size / extent, label, ": idx extents need more bytes than the file has (", size, ")");
    count *= extent;
    out.dims.push_back(static_cast<std::int64_t>(extent));
  }
  const std::size_t body = size - 4 - 4 * static_cast<std::size_t>(rank);
  check(count == body, label, ": idx extents need ", count, " bytes of data, the file has ", body);
  out.data.assign(bytes + (size - body), bytes + size);
  return out;
}

//! Reads a gzipped (".gz", through zlib) or plain idx file.
inline IdxArray read_idx_file(const std::string& path) {
  std::vector<std::uint8_t> bytes;
  if (path.size() >= 3 && path.compare(path.size() - 3, 3, ".gz") == 0) {
    gzFile file = gzopen(path.c_str(), "rb");
    check(file != nullptr, "cannot open '", path, "'");
    std::uint8_t buffer[1 << 16];
    for (;;) {
      const int n = gzread(file, buffer, sizeof buffer);
      if (n < 0) {
        int code = 0;
        const std::string message = gzerror(file, &code);
        gzclose(file);
        fail("cannot read '", path, "': ", message, " (not a valid gzip file?)");
      }
      if (n == 0) break;
      bytes.insert(bytes.end(), buffer, buffer + n);
      check(bytes.size() <= (std::size_t{1} << 31), "'", path, "': decompresses to more than 2 GiB, not Fashion-MNIST");
    }
    gzclose(file);
  } else {
    std::FILE* file = std::fopen(path.c_str(), "rb");
    check(file != nullptr, "cannot open '", path, "'");
    std::uint8_t buffer[1 << 16];
    std::size_t n = 0;
    while ((n = std::fread(buffer, 1, sizeof buffer, file)) > 0) bytes.insert(bytes.end(), buffer, buffer + n);
    std::fclose(file);
  }
  return parse_idx(bytes.data(), bytes.size(), path);
}

//! Where the Debian package dataset-fashion-mnist puts the files (`dpkg -L dataset-fashion-mnist`).
inline constexpr const char* fashion_mnist_default_dir = "/usr/share/datasets/fashion-mnist";

//! Which images: the 60,000 training images, the 10,000 test images, or both (train first).
enum class FashionMnistSplit { train, test, all };

//! Fashion-MNIST as tools/reference/train.py prepares it: one channel, 28 x 28 padded to 32 x 32
//! with 2 pixels of background on each side, values x / 127.5 - 1 in float (background -1),
//! 10 classes. The images stay uint8 in memory (61 MB for the training split).
//! Example: `tim::train::FashionMnist data;   // or FashionMnist(dir, FashionMnistSplit::all)`
class FashionMnist final : public Dataset {
 public:
  static constexpr std::int64_t stored_size = 28, padded_size = 32, classes = 10;

  explicit FashionMnist(const std::string& dir = fashion_mnist_default_dir,
                        FashionMnistSplit split = FashionMnistSplit::train) {
    check(std::filesystem::is_directory(dir), "Fashion-MNIST: '", dir,
          "' is not a folder (install the Debian package dataset-fashion-mnist, or give the folder holding "
          "train-images-idx3-ubyte.gz and train-labels-idx1-ubyte.gz)");
    std::vector<const char*> parts;
    if (split != FashionMnistSplit::test) parts.push_back("train");
    if (split != FashionMnistSplit::train) parts.push_back("t10k");
    for (const char* part : parts) {
      const std::string images_path = dir + "/" + part + "-images-idx3-ubyte.gz";
      const std::string labels_path = dir + "/" + part + "-labels-idx1-ubyte.gz";
      const IdxArray images = read_idx_file(images_path);
      const IdxArray labels = read_idx_file(labels_path);
      check(images.dims.size() == 3 && images.dims[1] == stored_size && images.dims[2] == stored_size, images_path,
            ": expected images of shape [N, 28, 28]");
      check(labels.dims.size() == 1 && labels.dims[0] == images.dims[0], labels_path, ": expected ", images.dims[0],
            " labels (one per image), got shape of rank ", labels.dims.size());
      for (std::size_t i = 0; i < labels.data.size(); ++i)
        check(labels.data[i] < classes, labels_path, ": label ", int(labels.data[i]), " of image ", i,
              " is not a class 0 .. 9");
      images_.insert(images_.end(), images.data.begin(), images.data.end());
      labels_.insert(labels_.end(), labels.data.begin(), labels.data.end());
    }
  }

  std::int64_t size() const override { return static_cast<std::int64_t>(labels_.size()); }
  Shape sample_shape() const override { return Shape({1, padded_size, padded_size}); }
  std::int64_t num_classes() const override { return classes; }
  std::int64_t read(std::int64_t index, float* out) const override {
    check(index >= 0 && index < size(), "Fashion-MNIST: sample ", index, " of ", size());
    constexpr std::int64_t pad = (padded_size - stored_size) / 2;
    const std::uint8_t* image = images_.data() + index * stored_size * stored_size;
    for (std::int64_t y = 0; y < padded_size; ++y)
      for (std::int64_t x = 0; x < padded_size; ++x) {
        const std::int64_t sy = y - pad, sx = x - pad;
        const bool inside = sy >= 0 && sy < stored_size && sx >= 0 && sx < stored_size;
        out[y * padded_size + x] = to_model_range(inside ? image[sy * stored_size + sx] : 0);
      }
    return labels_[static_cast<std::size_t>(index)];
  }

  //! A byte [0, 255] to [-1, 1] as train.py's to_model_range: float(u8) / 127.5 - 1 in float.
  static float to_model_range(std::uint8_t value) { return static_cast<float>(value) / 127.5f - 1.0f; }

 private:
  std::vector<std::uint8_t> images_;  // (N, 28, 28)
  std::vector<std::uint8_t> labels_;  // (N)
};

// ---------------------------------------------------------------------------------------------
// Latent shards

//! One validated latent shard (docs/training.md, "Latent shards"): a safetensors file with
//! `latents` [n, C, H, W] (F32, BF16 or F16) and `labels` [n] (I64), n >= 1, nothing else needed
//! (other tensors are ignored). Labels must lie in [0, num_classes) when num_classes > 0.
class LatentShard {
 public:
  LatentShard(io::SafetensorsFile file, std::int64_t num_classes) : file_(std::move(file)) {
    const std::string& path = file_.path();
    check(file_.contains("latents"), "latent shard '", path, "': no tensor 'latents' (expected [n, C, H, W] float32, "
          "bfloat16 or float16)");
    check(file_.contains("labels"), "latent shard '", path, "': no tensor 'labels' (expected [n] int64)");
    const auto& latents = file_.info("latents");
    const auto& labels = file_.info("labels");
    check(latents.dtype == DType::F32 || latents.dtype == DType::BF16 || latents.dtype == DType::F16,
          "latent shard '", path, "': 'latents' is ", dtype_name(latents.dtype), ", expected F32, BF16 or F16");
    check(latents.shape.rank() == 4 && latents.shape[0] >= 1 && latents.shape[1] >= 1 && latents.shape[2] >= 1 &&
              latents.shape[3] >= 1,
          "latent shard '", path, "': 'latents' has shape ", latents.shape, ", expected [n, C, H, W] with every extent >= 1");
    check(labels.dtype == DType::I64, "latent shard '", path, "': 'labels' is ", dtype_name(labels.dtype),
          ", expected I64");
    check(labels.shape.rank() == 1 && labels.shape[0] == latents.shape[0], "latent shard '", path,
          "': 'labels' has shape ", labels.shape, ", expected [", latents.shape[0], "] (one per latent)");
    labels_.resize(static_cast<std::size_t>(labels.shape[0]));
    const auto label_bytes = file_.bytes("labels");
    convert_elements(label_bytes.data(), DType::I64, labels_.data(), labels_.size());
    for (std::size_t i = 0; i < labels_.size(); ++i)
      check(labels_[i] >= 0 && (num_classes <= 0 || labels_[i] < num_classes), "latent shard '", path, "': label ",
            labels_[i], " of sample ", i, " is outside 0 .. ", num_classes > 0 ? num_classes - 1 : 0,
            num_classes > 0 ? "" : " (no class count given: labels must be >= 0)");
    shape_ = Shape({latents.shape[1], latents.shape[2], latents.shape[3]});
    dtype_ = latents.dtype;
  }

  std::int64_t size() const { return static_cast<std::int64_t>(labels_.size()); }
  const Shape& sample_shape() const { return shape_; }
  const std::string& path() const { return file_.path(); }
  std::int64_t label(std::int64_t row) const { return labels_[static_cast<std::size_t>(row)]; }
  //! Converts row `row` to float into `out`.
  void read(std::int64_t row, float* out) const {
    const auto bytes = file_.bytes("latents");
    const std::size_t per = static_cast<std::size_t>(shape_.numel());
    convert_elements(bytes.data() + static_cast<std::size_t>(row) * per * dtype_size(dtype_), dtype_, out, per);
  }

 private:
  io::SafetensorsFile file_;
  Shape shape_;
  DType dtype_ = DType::F32;
  std::vector<std::int64_t> labels_;
};

//! Latents in safetensors shards, one data set: every `*.safetensors` file of a folder (sorted
//! by name) or the files given, their samples concatenated in that order. Every shard must have
//! the same sample shape. `num_classes` (> 0) bounds the labels; with 0 it is taken as the
//! largest label + 1. Files stay memory-mapped; a sample is converted to float when read.
//! Example: `tim::train::LatentShards data("latents/imagenet-256", 1000);`
class LatentShards final : public Dataset {
 public:
  explicit LatentShards(const std::string& folder, std::int64_t num_classes = 0)
      : LatentShards(list_shards(folder), num_classes) {}

  LatentShards(const std::vector<std::string>& files, std::int64_t num_classes = 0) {
    check(!files.empty(), "latent shards: no files given");
    std::int64_t largest = -1;
    for (const auto& path : files) {
      shards_.emplace_back(io::SafetensorsFile::open(path), num_classes);
      const LatentShard& shard = shards_.back();
      if (shards_.size() > 1)
        check(shard.sample_shape() == shards_.front().sample_shape(), "latent shard '", path, "': samples of shape ",
              shard.sample_shape(), ", but '", shards_.front().path(), "' has ", shards_.front().sample_shape(),
              " (every shard must have the same C, H, W)");
      for (std::int64_t i = 0; i < shard.size(); ++i) largest = std::max(largest, shard.label(i));
      first_.push_back(total_);
      total_ += shard.size();
    }
    classes_ = num_classes > 0 ? num_classes : largest + 1;
  }

  std::int64_t size() const override { return total_; }
  Shape sample_shape() const override { return shards_.front().sample_shape(); }
  std::int64_t num_classes() const override { return classes_; }
  std::int64_t read(std::int64_t index, float* out) const override {
    check(index >= 0 && index < total_, "latent shards: sample ", index, " of ", total_);
    const auto shard = static_cast<std::size_t>(std::upper_bound(first_.begin(), first_.end(), index) - first_.begin() - 1);
    const std::int64_t row = index - first_[shard];
    shards_[shard].read(row, out);
    return shards_[shard].label(row);
  }

  //! The `*.safetensors` files of `folder`, sorted by name (a tim::Error when there are none).
  static std::vector<std::string> list_shards(const std::string& folder) {
    check(std::filesystem::is_directory(folder), "latent shards: '", folder, "' is not a folder");
    std::vector<std::string> files;
    for (const auto& entry : std::filesystem::directory_iterator(folder))
      if (entry.is_regular_file() && entry.path().extension() == ".safetensors") files.push_back(entry.path().string());
    std::sort(files.begin(), files.end());
    check(!files.empty(), "latent shards: no *.safetensors file in '", folder, "'");
    return files;
  }

 private:
  std::vector<LatentShard> shards_;
  std::vector<std::int64_t> first_;  // global index of each shard's first sample
  std::int64_t total_ = 0, classes_ = 0;
};

}  // namespace tim::train
