// Training data (tim/train/data_order.hpp, datasets.hpp, image_folder.hpp, loader.hpp): the epoch
// order (a permutation, deterministic, different per epoch and seed, uniform, independent of the
// batch size, the same as the independent Python copy tools/reference/data_order.py), Fashion-MNIST against tools/reference/train.py's loader (tests/data/data_golden/,
// tools/reference/make_data_golden.py), latent shards and PNG folders written here, the
// prefetching loader against synchronous reads, and the errors for bad files.
#include <doctest/doctest.h>

#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#include "compare.hpp"
#include "tim/io/png.hpp"
#include "tim/io/safetensors.hpp"
#include "tim/train/data_order.hpp"
#include "tim/train/datasets.hpp"
#include "tim/train/image_folder.hpp"
#include "tim/train/loader.hpp"

namespace fs = std::filesystem;

namespace {

//! A fresh, empty folder under the system's temporary folder, removed at the end of the scope.
struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& name) {
    path = fs::temp_directory_path() / ("tim_train_data_" + name + "_" + std::to_string(::getpid()));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ignored;
    fs::remove_all(path, ignored);
  }
  std::string operator/(const std::string& child) const { return (path / child).string(); }
};

//! A latent shard of n samples (C, H, W) with values base + i (sample i, element e: base + 1000 i + e)
//! and labels (first_label + i) % classes.
void write_shard(const std::string& path, std::int64_t n, std::int64_t C, std::int64_t H, std::int64_t W, float base,
                 std::int64_t first_label, std::int64_t classes, tim::DType dtype = tim::DType::F32) {
  std::vector<float> values(static_cast<std::size_t>(n * C * H * W));
  for (std::int64_t i = 0; i < n; ++i)
    for (std::int64_t e = 0; e < C * H * W; ++e) values[static_cast<std::size_t>(i * C * H * W + e)] = base + 1000.0f * i + e;
  std::vector<std::int64_t> labels(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) labels[static_cast<std::size_t>(i)] = (first_label + i) % classes;
  tim::io::SafetensorsWriter writer;
  if (dtype == tim::DType::F32) {
    writer.add("latents", tim::DType::F32, {n, C, H, W}, values.data());
  } else {
    std::vector<tim::bfloat16> b(values.size());
    for (std::size_t i = 0; i < values.size(); ++i) b[i] = tim::bfloat16(values[i]);
    writer.add("latents", tim::DType::BF16, {n, C, H, W}, b.data());
  }
  writer.add("labels", tim::DType::I64, {n}, labels.data());
  writer.write(path);
}

//! A data set whose sample i is the constant i, label i % 3, and whose read of `bad` throws.
class CountingDataset final : public tim::train::Dataset {
 public:
  CountingDataset(std::int64_t n, std::int64_t bad = -1) : n_(n), bad_(bad) {}
  std::int64_t size() const override { return n_; }
  tim::Shape sample_shape() const override { return tim::Shape({1, 2, 2}); }
  std::int64_t num_classes() const override { return 3; }
  std::int64_t read(std::int64_t index, float* out) const override {
    ++reads;
    tim::check(index != bad_, "sample ", index, " is unreadable");
    for (int e = 0; e < 4; ++e) out[e] = static_cast<float>(index);
    return index % 3;
  }

  mutable std::atomic<int> reads{0};

 private:
  std::int64_t n_, bad_;
};

}  // namespace

TEST_CASE("data order: a deterministic permutation per (seed, epoch), different across epochs and seeds") {
  for (std::int64_t n : {1, 2, 7, 1000, 60000}) {
    const auto order = tim::train::epoch_order(n, 5, 3);
    CHECK(order == tim::train::epoch_order(n, 5, 3));
    auto sorted = order;
    std::sort(sorted.begin(), sorted.end());
    std::vector<std::int64_t> identity(static_cast<std::size_t>(n));
    std::iota(identity.begin(), identity.end(), 0);
    CHECK(sorted == identity);
    if (n >= 7) {
      CHECK(order != identity);
      CHECK(order != tim::train::epoch_order(n, 5, 4));
      CHECK(order != tim::train::epoch_order(n, 6, 3));
    }
  }
  CHECK(tim::train::epoch_order(0, 1, 1).empty());
  CHECK_THROWS_AS(tim::train::epoch_order(-1, 1, 1), tim::Error);
}

TEST_CASE("data order: the same orders as the independent Python copy (tools/reference/data_order.py)") {
  // An order a Python (or multi-process) trainer can reproduce from (n, seed, epoch) alone.
  const auto golden = tim::io::SafetensorsFile::open(std::string(TIM_TEST_DATA_DIR) + "/data_golden/epoch_order.safetensors");
  int cases = 0;
  for (int k = 0; golden.contains("case." + std::to_string(k)); ++k, ++cases) {
    const auto c = golden.load<std::int64_t>("case." + std::to_string(k));
    const auto n = c.data()[0];
    const auto seed = static_cast<std::uint64_t>(c.data()[1]) | (static_cast<std::uint64_t>(c.data()[2]) << 32);
    const auto epoch = static_cast<std::uint64_t>(c.data()[3]) | (static_cast<std::uint64_t>(c.data()[4]) << 32);
    const auto expected = golden.load<std::int64_t>("order." + std::to_string(k));
    INFO("n " << n << " seed " << seed << " epoch " << epoch);
    CHECK(tim::train::epoch_order(n, seed, epoch) ==
          std::vector<std::int64_t>(expected.data(), expected.data() + expected.numel()));
  }
  CHECK(cases == 5);
}

TEST_CASE("data order: uniform over epochs (where each element lands, and all 24 orders of 4)") {
  // Deterministic (fixed seed), so no flakiness: 24,000 epochs of n = 4. Each of the 24
  // permutations is expected 1,000 times (sd ~31); each element at each position 6,000 times
  // (sd ~67). Bounds of 6 sd: a biased shuffle (e.g. j drawn from [0, i) or from [0, n)) moves
  // some count by hundreds or thousands.
  std::vector<int> permutations(256, 0), positions(16, 0);
  for (std::uint64_t epoch = 0; epoch < 24000; ++epoch) {
    const auto order = tim::train::epoch_order(4, 11, epoch);
    int code = 0;
    for (int i = 0; i < 4; ++i) {
      code = code * 4 + static_cast<int>(order[i]);
      ++positions[i * 4 + order[i]];
    }
    ++permutations[code];
  }
  int distinct = 0;
  for (int count : permutations)
    if (count) {
      ++distinct;
      CHECK(std::abs(count - 1000) <= 6 * 31);
    }
  CHECK(distinct == 24);
  for (int count : positions) CHECK(std::abs(count - 6000) <= 6 * 67);
}

TEST_CASE("data order: batches follow the epoch order whatever the batch size, and resume from a position") {
  const std::int64_t n = 30;
  const std::uint64_t seed = 9;
  for (std::int64_t batch : {1, 3, 5, 30}) {
    tim::train::BatchOrder walk(n, batch, seed);
    std::vector<std::int64_t> seen;
    for (std::int64_t b = 0; b < 2 * n / batch; ++b) {
      const auto& indices = walk.next();
      seen.insert(seen.end(), indices.begin(), indices.end());
    }
    auto expected = tim::train::epoch_order(n, seed, 0);
    const auto second = tim::train::epoch_order(n, seed, 1);
    expected.insert(expected.end(), second.begin(), second.end());
    CHECK(seen == expected);
  }
  // A batch of 7 over 30 samples: 4 batches per epoch, the tail of 2 dropped as train.py does.
  tim::train::BatchOrder walk(n, 7, seed);
  for (int b = 0; b < 4; ++b) walk.next();
  CHECK(walk.position() == tim::train::DataPosition{0, 28});
  const auto fifth = walk.next();
  CHECK(walk.position() == tim::train::DataPosition{1, 7});
  const auto epoch1 = tim::train::epoch_order(n, seed, 1);
  CHECK(std::equal(fifth.begin(), fifth.end(), epoch1.begin()));
  // Resuming at a saved position continues identically.
  tim::train::BatchOrder resumed(n, 7, seed, {0, 28});
  CHECK(resumed.next() == fifth);
  CHECK_THROWS_AS(tim::train::BatchOrder(5, 6, seed), tim::Error);
  CHECK_THROWS_AS(tim::train::BatchOrder(5, 2, seed, {0, 6}), tim::Error);
}

TEST_CASE("Fashion-MNIST: the Debian package's files, prepared as tools/reference/train.py prepares them") {
  const std::string dir = tim::train::fashion_mnist_default_dir;
  if (!fs::exists(dir + "/train-images-idx3-ubyte.gz")) {
    MESSAGE("dataset-fashion-mnist is not installed (scripts/install-deps.sh installs it): skipped");
    return;
  }
  const auto golden = tim::io::SafetensorsFile::open(std::string(TIM_TEST_DATA_DIR) + "/data_golden/fashion_mnist.safetensors");
  for (const auto& [split, name] : {std::pair{tim::train::FashionMnistSplit::train, "train"},
                                    std::pair{tim::train::FashionMnistSplit::test, "test"}}) {
    const tim::train::FashionMnist data(dir, split);
    CHECK(data.size() == golden.load<std::int64_t>(std::string("size_") + name).data()[0]);
    CHECK(data.sample_shape() == tim::Shape({1, 32, 32}));
    const auto index = golden.load<std::int64_t>(std::string("index_") + name);
    const auto x = golden.load<float>(std::string("x_") + name);
    const auto y = golden.load<std::int64_t>(std::string("y_") + name);
    std::vector<float> sample(1024);
    for (std::int64_t k = 0; k < index.numel(); ++k) {
      CHECK(data.read(index.data()[k], sample.data()) == y.data()[k]);
      INFO(name << " image " << index.data()[k]);
      CHECK(std::memcmp(sample.data(), x.data() + k * 1024, 1024 * sizeof(float)) == 0);  // same float arithmetic
    }
  }
  const tim::train::FashionMnist all(dir, tim::train::FashionMnistSplit::all);
  CHECK(all.size() == 70000);
}

TEST_CASE("Fashion-MNIST: bad idx files are errors naming the file") {
  TempDir tmp("idx");
  using tim::train::parse_idx;
  const std::uint8_t good[] = {0, 0, 8, 2, 0, 0, 0, 2, 0, 0, 0, 3, 1, 2, 3, 4, 5, 6};
  const auto parsed = parse_idx(good, sizeof good, "x.idx");
  CHECK(parsed.dims == std::vector<std::int64_t>{2, 3});
  CHECK(parsed.data == std::vector<std::uint8_t>{1, 2, 3, 4, 5, 6});
  CHECK_THROWS_WITH_AS(parse_idx(good, sizeof good - 1, "x.idx"), doctest::Contains("x.idx: idx extents need 6 bytes"),
                       tim::Error);
  const std::uint8_t wrong_type[] = {0, 0, 0x0D, 1, 0, 0, 0, 1, 0};
  CHECK_THROWS_WITH_AS(parse_idx(wrong_type, sizeof wrong_type, "f.idx"), doctest::Contains("not uint8"), tim::Error);
  const std::uint8_t huge[] = {0, 0, 8, 4, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255};
  CHECK_THROWS_AS(parse_idx(huge, sizeof huge, "h.idx"), tim::Error);
  CHECK_THROWS_WITH_AS(parse_idx(good, 3, "s.idx"), doctest::Contains("shorter than the 4-byte magic"), tim::Error);
  // A folder whose .gz files are not gzip: the error names the file.
  std::ofstream(tmp / "train-images-idx3-ubyte.gz") << "not gzip at all, just text";
  std::ofstream(tmp / "train-labels-idx1-ubyte.gz") << "x";
  CHECK_THROWS_WITH_AS(tim::train::FashionMnist(tmp.path.string()), doctest::Contains("train-images-idx3-ubyte.gz"),
                       tim::Error);
  CHECK_THROWS_WITH_AS(tim::train::FashionMnist(tmp / "missing"), doctest::Contains("dataset-fashion-mnist"), tim::Error);
}

TEST_CASE("latent shards: samples and labels across shards, bfloat16 converted, errors name the file") {
  TempDir tmp("shards");
  fs::create_directories(tmp / "set");
  write_shard(tmp / "set/a.safetensors", 3, 2, 2, 3, 0.0f, 0, 4);
  write_shard(tmp / "set/b.safetensors", 2, 2, 2, 3, 0.5f, 1, 4, tim::DType::BF16);
  std::ofstream(tmp / "set/notes.txt") << "ignored";
  const tim::train::LatentShards data(tmp / "set", 4);
  CHECK(data.size() == 5);
  CHECK(data.sample_shape() == tim::Shape({2, 2, 3}));
  std::vector<float> sample(12);
  CHECK(data.read(1, sample.data()) == 1);
  for (int e = 0; e < 12; ++e) CHECK(sample[e] == 1000.0f + e);
  CHECK(data.read(4, sample.data()) == 2);  // shard b, row 1
  for (int e = 0; e < 12; ++e) CHECK(sample[e] == static_cast<float>(tim::bfloat16(0.5f + 1000.0f + e)));
  CHECK(tim::train::LatentShards(tmp / "set").num_classes() == 3);  // largest label + 1 without a count

  // Bad shards.
  write_shard(tmp / "c.safetensors", 2, 2, 3, 3, 0.0f, 0, 4);
  CHECK_THROWS_WITH_AS(tim::train::LatentShards(std::vector<std::string>{tmp / "set/a.safetensors", tmp / "c.safetensors"}),
                       doctest::Contains("c.safetensors': samples of shape [2, 3, 3]"), tim::Error);
  CHECK_THROWS_WITH_AS(tim::train::LatentShards(tmp / "set", 2), doctest::Contains("label 2 of sample 2 is outside 0 .. 1"),
                       tim::Error);
  {
    tim::io::SafetensorsWriter w;
    const float v[4] = {};
    w.add("latents", tim::DType::F32, {1, 1, 2, 2}, v);
    w.write(tmp / "nolabels.safetensors");
  }
  CHECK_THROWS_WITH_AS(tim::train::LatentShards(std::vector<std::string>{tmp / "nolabels.safetensors"}),
                       doctest::Contains("nolabels.safetensors': no tensor 'labels'"), tim::Error);
  {
    tim::io::SafetensorsWriter w;
    const float v[4] = {};
    const std::int32_t l[1] = {0};
    w.add("latents", tim::DType::F32, {1, 1, 2, 2}, v);
    w.add("labels", tim::DType::I32, {1}, l);
    w.write(tmp / "int32.safetensors");
  }
  CHECK_THROWS_WITH_AS(tim::train::LatentShards(std::vector<std::string>{tmp / "int32.safetensors"}),
                       doctest::Contains("'labels' is I32, expected I64"), tim::Error);
  {
    tim::io::SafetensorsWriter w;
    const float v[4] = {};
    const std::int64_t l[2] = {0, 1};
    w.add("latents", tim::DType::F32, {1, 4}, v);
    w.add("labels", tim::DType::I64, {2}, l);
    w.write(tmp / "rank.safetensors");
  }
  CHECK_THROWS_WITH_AS(tim::train::LatentShards(std::vector<std::string>{tmp / "rank.safetensors"}),
                       doctest::Contains("expected [n, C, H, W]"), tim::Error);
  std::ofstream(tmp / "junk.safetensors") << "garbage";
  CHECK_THROWS_WITH_AS(tim::train::LatentShards(std::vector<std::string>{tmp / "junk.safetensors"}),
                       doctest::Contains("junk.safetensors"), tim::Error);
  fs::create_directories(tmp / "empty");
  CHECK_THROWS_WITH_AS(tim::train::LatentShards(tmp / "empty"), doctest::Contains("no *.safetensors file"), tim::Error);
}

TEST_CASE("image folder: classes sorted by folder name, images resized by area and centre-cropped") {
  TempDir tmp("images");
  // b_cat (label 1): an RGB 8 x 4 image (wider than tall); a_dog (label 0): gray 8 x 8 and 2 x 2.
  fs::create_directories(tmp / "root/b_cat/sub");
  fs::create_directories(tmp / "root/a_dog");
  tim::io::PngImage rgb{8, 4, 3, {}, {}};
  for (int i = 0; i < 8 * 4 * 3; ++i) rgb.pixels.push_back(static_cast<std::uint8_t>((i * 37) % 256));
  tim::io::write_png(tmp / "root/b_cat/sub/wide.PNG", rgb);
  tim::io::PngImage gray8{8, 8, 1, {}, {}}, gray2{2, 2, 1, {}, {}};
  for (int i = 0; i < 64; ++i) gray8.pixels.push_back(static_cast<std::uint8_t>(i * 4));
  gray2.pixels = {0, 100, 200, 255};
  tim::io::write_png(tmp / "root/a_dog/1_big.png", gray8);
  tim::io::write_png(tmp / "root/a_dog/2_small.png", gray2);
  std::ofstream(tmp / "root/a_dog/readme.txt") << "not an image";
  std::ofstream(tmp / "root/stray.png") << "a file at the root is not a class";

  const tim::train::ImageFolder gray_data(tmp / "root", 1, 4, 4);
  CHECK(gray_data.class_names() == std::vector<std::string>{"a_dog", "b_cat"});
  CHECK(gray_data.size() == 3);
  std::vector<float> s(16);
  // 8 x 8 to 4 x 4: each output pixel the mean of a 2 x 2 block.
  CHECK(gray_data.read(0, s.data()) == 0);
  for (int y = 0; y < 4; ++y)
    for (int x = 0; x < 4; ++x) {
      const double mean = (gray8.pixels[(2 * y) * 8 + 2 * x] + gray8.pixels[(2 * y) * 8 + 2 * x + 1] +
                           gray8.pixels[(2 * y + 1) * 8 + 2 * x] + gray8.pixels[(2 * y + 1) * 8 + 2 * x + 1]) / 4.0;
      CHECK(s[y * 4 + x] == doctest::Approx(mean / 127.5 - 1).epsilon(1e-6));
    }
  // 2 x 2 to 4 x 4: each input pixel covers a 2 x 2 block.
  CHECK(gray_data.read(1, s.data()) == 0);
  for (int y = 0; y < 4; ++y)
    for (int x = 0; x < 4; ++x)
      CHECK(s[y * 4 + x] == doctest::Approx(gray2.pixels[(y / 2) * 2 + x / 2] / 127.5 - 1).epsilon(1e-6));
  // RGB 8 x 4 to gray 4 x 4: no scaling (it covers 4 x 4 already), the centre columns 2 .. 5, luma.
  CHECK(gray_data.read(2, s.data()) == 1);
  for (int y = 0; y < 4; ++y)
    for (int x = 0; x < 4; ++x) {
      const std::uint8_t* p = rgb.pixels.data() + (y * 8 + x + 2) * 3;
      CHECK(s[y * 4 + x] == doctest::Approx((0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2]) / 127.5 - 1).epsilon(1e-6));
    }
  // Three channels: gray repeated, RGB kept.
  const tim::train::ImageFolder rgb_data(tmp / "root", 3, 4, 4);
  std::vector<float> c(48);
  rgb_data.read(2, c.data());
  CHECK(c[16 * 2 + 0] == doctest::Approx(rgb.pixels[(0 * 8 + 2) * 3 + 2] / 127.5 - 1).epsilon(1e-6));
  rgb_data.read(1, c.data());
  CHECK(c[0] == c[16]);
  CHECK(c[16] == c[32]);

  // Errors.
  fs::create_directories(tmp / "root/c_empty");
  CHECK_THROWS_WITH_AS(tim::train::ImageFolder(tmp / "root", 1, 4, 4), doctest::Contains("'c_empty' holds no .png image"),
                       tim::Error);
  fs::remove(tmp / "root/c_empty");
  std::ofstream(tmp / "root/a_dog/3_broken.png") << "this is not a PNG";
  const tim::train::ImageFolder broken(tmp / "root", 1, 4, 4);
  CHECK_THROWS_WITH_AS(broken.read(2, s.data()), doctest::Contains("3_broken.png"), tim::Error);
  CHECK_THROWS_WITH_AS(tim::train::ImageFolder(tmp / "nothing", 1, 4, 4), doctest::Contains("is not a folder"), tim::Error);
  CHECK_THROWS_AS(tim::train::ImageFolder(tmp / "root", 2, 4, 4), tim::Error);
}

TEST_CASE("image folder: a symbolic link loop is an error naming the link; links to other folders are followed") {
  TempDir tmp("image_links");
  fs::create_directories(tmp / "root/a/deep");
  fs::create_directories(tmp / "elsewhere");
  tim::io::PngImage gray{2, 2, 1, {0, 1, 2, 3}, {}};
  tim::io::write_png(tmp / "root/a/deep/x.png", gray);
  tim::io::write_png(tmp / "elsewhere/y.png", gray);
  fs::create_directory_symlink(tmp / "elsewhere", tmp / "root/a/linked");
  const tim::train::ImageFolder data(tmp / "root", 1, 2, 2);
  CHECK(data.size() == 2);  // deep/x.png and linked/y.png
  fs::create_directory_symlink(tmp / "root/a", tmp / "root/a/deep/up");  // a/deep/up -> a: a loop
  CHECK_THROWS_WITH_AS(tim::train::ImageFolder(tmp / "root", 1, 2, 2), doctest::Contains("a symbolic link loop"),
                       tim::Error);
  CHECK_THROWS_WITH_AS(tim::train::ImageFolder(tmp / "root", 1, 2, 2), doctest::Contains("deep/up"), tim::Error);
}

TEST_CASE("batch loader: prefetched batches are the synchronous ones, bit for bit, over epochs") {
  TempDir tmp("loader");
  write_shard(tmp / "a.safetensors", 7, 1, 2, 2, 0.25f, 0, 5);
  write_shard(tmp / "b.safetensors", 6, 1, 2, 2, 0.75f, 3, 5);
  auto data = std::make_shared<tim::train::LatentShards>(
      std::vector<std::string>{tmp / "a.safetensors", tmp / "b.safetensors"}, 5);
  tim::train::BatchLoader sync(data, 4, 21, {}, 0);
  tim::train::BatchLoader ahead(data, 4, 21, {}, 3);
  tim::train::BatchOrder order(13, 4, 21);
  std::vector<float> expected(4);
  for (int b = 0; b < 10; ++b) {  // 3 batches per epoch: over three epochs
    const auto& s = sync.next();
    const auto& a = ahead.next();
    const auto& indices = order.next();
    CHECK(s.indices == indices);
    CHECK(a.indices == indices);
    CHECK(a.position_after == order.position());
    CHECK(std::memcmp(s.x.data(), a.x.data(), sizeof(float) * 16) == 0);
    CHECK(std::memcmp(s.labels.data(), a.labels.data(), sizeof(std::int64_t) * 4) == 0);
    for (int i = 0; i < 4; ++i) {
      const std::int64_t label = data->read(indices[i], expected.data());
      CHECK(a.labels.data()[i] == label);
      CHECK(std::memcmp(a.x.data() + 4 * i, expected.data(), sizeof expected[0] * 4) == 0);
    }
  }
  // Resuming a loader at a batch's position_after continues with the next batch.
  tim::train::BatchLoader first(data, 4, 21, {}, 2);
  tim::train::DataPosition saved;
  for (int b = 0; b < 4; ++b) saved = first.next().position_after;
  const auto fifth = first.next().indices;
  tim::train::BatchLoader resumed(data, 4, 21, saved, 2);
  CHECK(resumed.next().indices == fifth);
}

TEST_CASE("batch loader: a read error reaches the caller at its batch, and destruction mid-run is clean") {
  auto data = std::make_shared<CountingDataset>(12, -1);
  const auto order = tim::train::epoch_order(12, 3, 0);
  const auto bad_at = static_cast<std::int64_t>(std::find(order.begin(), order.end(), 7) - order.begin());
  auto failing = std::make_shared<CountingDataset>(12, 7);
  tim::train::BatchLoader loader(failing, 2, 3, {}, 2);
  for (std::int64_t b = 0; b < bad_at / 2; ++b) {
    const auto& batch = loader.next();
    CHECK(batch.x.data()[0] == static_cast<float>(batch.indices[0]));
  }
  CHECK_THROWS_WITH_AS(loader.next(), doctest::Contains("sample 7 is unreadable"), tim::Error);
  // Loaders destroyed with a full ring, mid-epoch, or before the first batch.
  for (int consumed : {0, 1, 5}) {
    tim::train::BatchLoader l(data, 3, 1, {}, 2);
    for (int b = 0; b < consumed; ++b) l.next();
  }
  CHECK_THROWS_AS(tim::train::BatchLoader(data, 13, 1), tim::Error);  // cannot fill a batch
}

TEST_CASE("batch loader: reads ahead on its own thread, never more than `prefetch` batches") {
  // After the first batch is handed out the loader's thread fills the other two slots of its
  // ring (prefetch 2) without being asked, then stops: 3 batches of 3 samples read in all. Waits
  // up to 20 s for the reads (a functional check, not a timing), then checks nothing more is read.
  auto data = std::make_shared<CountingDataset>(30);
  tim::train::BatchLoader loader(data, 3, 5, {}, 2);
  loader.next();
  for (int i = 0; i < 2000 && data->reads.load() < 9; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  CHECK(data->reads.load() == 9);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  CHECK(data->reads.load() == 9);
  loader.next();  // gives the first batch back: one more batch is read ahead
  for (int i = 0; i < 2000 && data->reads.load() < 12; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  CHECK(data->reads.load() == 12);
}
