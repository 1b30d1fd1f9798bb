// `tim sample` at scale (docs/scale.md), the program run as a subprocess on the shipped
// Fashion-MNIST model: chunked runs, sharded runs (--shard, the launchers' variables, mpirun) and
// resumed runs give every sample the same bits as one uninterrupted single-batch run; PNG names,
// --overwrite and --resume; the label sources; the PNG metadata; NaN reporting; the errors.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "cli_run.hpp"
#include "tim/io/png.hpp"
#include "tim/load.hpp"
#include "tim/sampler/settings.hpp"
#include "tim/tim.hpp"

namespace {

using namespace tim_test;
namespace fs = std::filesystem;

const std::string shipped = TIM_SHIPPED_MODEL;  // 10 classes, 1 x 32 x 32 latents = images

std::string base(const std::string& extra = "") {
  const std::string steps = extra.find("--steps") == std::string::npos ? "--steps 3 " : "";
  return "sample --model " + quote(shipped) + " " + steps + "--seed 11 " + extra;
}

// Guided on part of the window, stochastic: every kind of step a chunk could change.
const std::string guided_stochastic = "--cfg-scale 2.5 --guidance-high 0.7 --stochasticity 0.4 ";

tim::Tensor<float> latents_of(const std::string& path) {
  return tim::io::SafetensorsFile::open(path).load<float>("latents").clone();
}
std::vector<std::int64_t> labels_of(const std::string& path) {
  const auto labels = tim::io::SafetensorsFile::open(path).load<std::int64_t>("labels");
  return {labels.data(), labels.data() + labels.numel()};
}
bool same_bits(const tim::Tensor<float>& a, const tim::Tensor<float>& b) {
  return a.shape() == b.shape() && std::equal(a.data(), a.data() + a.numel(), b.data());
}

// Every file of a folder (name -> bytes).
std::map<std::string, std::string> files_in(const std::string& folder) {
  std::map<std::string, std::string> files;
  for (const auto& entry : fs::directory_iterator(folder)) files[entry.path().filename().string()] = read_text(entry.path().string());
  return files;
}

// The documented --random-labels rule written out again: Lemire's multiply-shift on the words of
// the Philox stream (label_seed, index, step 0xfffffffe), rejecting words below 2^32 mod n.
std::int64_t expected_random_label(std::uint64_t seed, std::uint64_t index, std::uint64_t n) {
  const std::uint64_t reject_below = (std::uint64_t{1} << 32) % n;
  for (std::uint32_t block = 0;; ++block) {
    const auto words = tim::random::stream_block(seed, index, 0xFFFFFFFEu, block);
    for (int i = 0; i < 4; ++i) {
      const std::uint64_t m = std::uint64_t{words.v[i]} * n;
      if ((m & 0xFFFFFFFFu) >= reject_below) return static_cast<std::int64_t>(m >> 32);
    }
  }
}

}  // namespace

TEST_CASE("cli scale: chunks of any size, any --threads, give one batch's bits, guided and stochastic") {
  TempDir dir;
  const std::string one = dir.file("one.safetensors");
  check_success(run_tim(dir, base(guided_stochastic + "--random-labels 11 --label-seed 4 --batch-size 11 --threads 2 --out " + quote(one))));
  const auto reference = latents_of(one);
  REQUIRE(reference.shape() == tim::Shape{11, 1, 32, 32});
  for (const std::string chunking : {"--batch-size 1 --threads 1", "--batch-size 4 --threads 2", "--batch-size 5 --threads 3"}) {
    CAPTURE(chunking);
    const std::string out = dir.file("chunked.safetensors");
    const auto result = run_tim(dir, base(guided_stochastic + "--random-labels 11 --label-seed 4 " + chunking + " --out " + quote(out)));
    check_success(result);
    CHECK(same_bits(latents_of(out), reference));
    CHECK(labels_of(out) == labels_of(one));
    if (chunking.find("--batch-size 4") != std::string::npos)  // a log line per chunk off a terminal
      CHECK(result.err.find("chunk 3/3: 11/11 samples") != std::string::npos);
  }
  // Not vacuous: the samples differ from each other, and the stochastic steps change them.
  const std::int64_t per = 32 * 32;
  CHECK(!std::equal(reference.data(), reference.data() + per, reference.data() + per));
  const std::string plain = dir.file("plain.safetensors");
  check_success(run_tim(dir, base("--cfg-scale 2.5 --guidance-high 0.7 --random-labels 11 --label-seed 4 --out " + quote(plain))));
  CHECK(!same_bits(latents_of(plain), reference));

  // The one-row evaluation computes the same network as the library's batched sampler (up to
  // float rounding: OpenBLAS sums a batched GEMM in another order).
  const auto model = tim::load_c2i<float>(shipped);
  const auto settings = tim::resolve_sample_settings({.steps = 3, .cfg_scale = 2.5, .guidance_high = 0.7,
                                                      .stochasticity = 0.4},
                                                     tim::io::SafetensorsFile::open(shipped).metadata());
  auto labels = tim::Tensor<std::int64_t>::empty({11});
  const auto expected_labels = labels_of(one);
  std::copy(expected_labels.begin(), expected_labels.end(), labels.data());
  const auto batched = std::visit(
      [&](auto transport) {
        tim::TransitionSampler sampler{model, transport, settings.schedule.value};
        return sampler.sample(tim::initial_noise({11, 1, 32, 32}, 11, 0), labels,
                              {.cfg_scale = 2.5, .guidance_high = 0.7, .stochasticity = 0.4, .seed = 11});
      },
      settings.transport.value);
  double largest = 0, diff = 0;
  for (std::int64_t i = 0; i < reference.numel(); ++i) {
    largest = std::max(largest, std::abs(batched.x.data()[i]));
    diff = std::max(diff, std::abs(batched.x.data()[i] - reference.data()[i]));
  }
  REQUIRE(largest > 0.1);
  CHECK(diff / largest <= 1e-4);  // float32 network, 3 steps: a few ulps of 1e-7 per layer, far below 1e-4
}

TEST_CASE("cli scale: label sources for large runs") {
  TempDir dir;
  SUBCASE("--random-labels: sample index i gets its class from (label seed, i), recorded per sample") {
    const std::string out = dir.file("random.safetensors");
    check_success(run_tim(dir, base("--steps 1 --random-labels 40 --label-seed 123 --first-index 1000 --out " + quote(out))));
    const auto labels = labels_of(out);
    REQUIRE(labels.size() == 40);
    std::set<std::int64_t> seen;
    for (std::size_t p = 0; p < labels.size(); ++p) {
      CHECK(labels[p] == expected_random_label(123, 1000 + p, 10));
      seen.insert(labels[p]);
    }
    CHECK(seen.size() >= 5);  // 40 draws over 10 classes: not one class repeated
    // Another label seed, other labels.
    const std::string other = dir.file("other.safetensors");
    check_success(run_tim(dir, base("--steps 1 --random-labels 40 --label-seed 124 --first-index 1000 --out " + quote(other))));
    CHECK(labels_of(other) != labels);
  }
  SUBCASE("--num-per-class: every class K times, class by class, distinct sample indices") {
    const std::string out = dir.file("per_class.safetensors");
    check_success(run_tim(dir, base("--steps 1 --num-per-class 2 --first-index 3 --batch-size 7 --out " + quote(out))));
    const auto labels = labels_of(out);
    REQUIRE(labels.size() == 20);
    for (std::size_t p = 0; p < 20; ++p) CHECK(labels[p] == static_cast<std::int64_t>(p / 2));
    CHECK(tim::io::SafetensorsFile::open(out).metadata().at("sample_indices").rfind("3,4,5,6,", 0) == 0);
  }
  SUBCASE("--labels-file: spaces, commas, new lines and comments") {
    const std::string file = dir.file("labels.txt"), out = dir.file("file.safetensors");
    write_text(file, "# three labels\n3, 1\n\t9 # the last\n");
    check_success(run_tim(dir, base("--steps 1 --labels-file " + quote(file) + " --out " + quote(out))));
    CHECK(labels_of(out) == std::vector<std::int64_t>{3, 1, 9});
    write_text(file, "3 one 2\n");
    check_user_error(run_tim(dir, base("--labels-file " + quote(file) + " --out " + quote(out))),
                     {"--labels-file", "line 1", "'one' is not an integer"});
    write_text(file, "3\n11\n");
    check_user_error(run_tim(dir, base("--labels-file " + quote(file) + " --out " + quote(out))),
                     {"--labels-file", "label 11", "outside [0, 10]"});
    write_text(file, "# nothing\n");
    check_user_error(run_tim(dir, base("--labels-file " + quote(file) + " --out " + quote(out))), {"no labels in it"});
  }
}

TEST_CASE("cli scale: PNGs named by sample index, never overwritten without --overwrite") {
  TempDir dir;
  const std::string pngs = dir.file("pngs");
  check_success(run_tim(dir, base("--steps 1 --class 4 --num 3 --png-dir " + quote(pngs))));
  check_success(run_tim(dir, base("--steps 1 --class 4 --num 2 --first-index 3 --png-dir " + quote(dir.file("pngs2")))));
  const auto first = files_in(pngs);
  CHECK(first.size() == 4);  // 000000..000002.png and grid.png
  for (const std::string name : {"000000.png", "000001.png", "000002.png", "grid.png"}) CHECK(first.count(name) == 1);
  // A second run with other indices into the same folder adds files; with the same ones it stops
  // before sampling, naming the file, and leaves everything as it was.
  check_success(run_tim(dir, base("--steps 1 --class 4 --num 2 --first-index 3 --png-dir " + quote(pngs) + " --resume")));
  CHECK(files_in(pngs).size() == 6);
  CHECK(files_in(pngs).at("000003.png") == files_in(dir.file("pngs2")).at("000003.png"));
  const auto before = files_in(pngs);
  check_user_error(run_tim(dir, base("--steps 2 --class 4 --num 3 --png-dir " + quote(pngs))),
                   {"'000000.png' already exists", "--overwrite", "--resume"});
  CHECK(files_in(pngs) == before);
  check_success(run_tim(dir, base("--steps 2 --class 4 --num 3 --png-dir " + quote(pngs) + " --overwrite")));
  CHECK(files_in(pngs).at("000000.png") != before.at("000000.png"));  // 2 steps now
  CHECK(files_in(pngs).at("000003.png") == before.at("000003.png"));
  // Nothing is left under a temporary name.
  for (const auto& [name, bytes] : files_in(pngs)) CHECK(name.find(".tmp") == std::string::npos);
}

TEST_CASE("cli scale: a resumed run finishes with the files of an uninterrupted one") {
  TempDir dir;
  const std::string whole = dir.file("whole"), resumed = dir.file("resumed");
  const std::string run = base(guided_stochastic + "--num-per-class 1 --batch-size 3 ");
  check_success(run_tim(dir, run + "--png-dir " + quote(whole)));
  const auto expected = files_in(whole);
  REQUIRE(expected.size() == 11);  // 10 samples and grid.png
  // A run killed after some samples: its first chunks written, one PNG of the next half-written
  // under its temporary name (write_png writes NAME.tmp, then renames).
  fs::create_directories(resumed);
  for (const std::string name : {"000000.png", "000001.png", "000002.png", "000004.png"})
    write_text((fs::path(resumed) / name).string(), expected.at(name));
  write_text((fs::path(resumed) / "000003.png.tmp").string(), expected.at("000003.png").substr(0, 40));
  const auto result = run_tim(dir, run + "--png-dir " + quote(resumed) + " --resume");
  check_success(result);
  CHECK(result.err.find("4 already written (--resume)") != std::string::npos);
  auto finished = files_in(resumed);
  finished.erase("000003.png.tmp");
  auto want = expected;
  want.erase("grid.png");  // the grid needs every sample in one process
  CHECK(finished == want);
}

TEST_CASE("cli scale: shards from --shard and from the launchers' variables make one run together") {
  TempDir dir;
  const std::string run = base(guided_stochastic + "--num-per-class 1 --batch-size 2 ");
  const std::string single = dir.file("single"), single_out = dir.file("single.safetensors");
  check_success(run_tim(dir, run + "--png-dir " + quote(single) + " --out " + quote(single_out)));
  auto expected = files_in(single);
  expected.erase("grid.png");
  REQUIRE(expected.size() == 10);

  const std::string sharded = dir.file("sharded"), out = dir.file("out.safetensors");
  check_success(run_tim(dir, run + "--png-dir " + quote(sharded) + " --out " + quote(out) + " --shard 0/3"));
  check_success(run_tim(dir, run + "--png-dir " + quote(sharded) + " --out " + quote(out),
                        "OMPI_COMM_WORLD_RANK=1 OMPI_COMM_WORLD_SIZE=3 "));
  check_success(run_tim(dir, run + "--png-dir " + quote(sharded) + " --out " + quote(out),
                        "RANK=2 WORLD_SIZE=3 LOCAL_RANK=0 "));
  CHECK(files_in(sharded) == expected);
  // --out: each shard its own file, together the single run's latents in order (4 + 3 + 3).
  const auto whole = latents_of(single_out);
  std::int64_t row = 0;
  for (int k = 0; k < 3; ++k) {
    const std::string part = dir.file("out.shard-" + std::to_string(k) + "-of-3.safetensors");
    REQUIRE(fs::exists(part));
    const auto latents = latents_of(part);
    CHECK(latents.dim(0) == (k == 0 ? 4 : 3));
    CHECK(std::equal(latents.data(), latents.data() + latents.numel(), whole.data() + row * 32 * 32));
    CHECK(tim::io::SafetensorsFile::open(part).metadata().at("shard") == std::to_string(k) + "/3");
    row += latents.dim(0);
  }
  CHECK(row == 10);

  check_user_error(run_tim(dir, run + "--png-dir " + quote(sharded) + " --overwrite", "SLURM_PROCID=x SLURM_NTASKS=2 "),
                   {"SLURM_PROCID", "'x'", "non-negative integer"});
  check_user_error(run_tim(dir, run + "--png-dir " + quote(sharded) + " --overwrite", "RANK=2 WORLD_SIZE=2 "),
                   {"RANK 2, WORLD_SIZE 2", "[0, size)"});
  check_user_error(run_tim(dir, base("--grid " + quote(dir.file("g.png"))), "RANK=0 WORLD_SIZE=2 "),
                   {"--grid needs every sample in one process"});
}

TEST_CASE("cli scale: mpirun -np 2 splits the run across ranks, the union bit-identical to one process") {
  const bool have_mpirun = std::system("command -v mpirun > /dev/null 2>&1") == 0;
  if (!have_mpirun) {
    MESSAGE("mpirun not found (Debian openmpi-bin, scripts/install-deps.sh): skipped");
    return;
  }
  TempDir dir;
  const std::string run = base(guided_stochastic + "--num-per-class 1 --batch-size 3 ");
  const std::string single = dir.file("single"), ranks = dir.file("ranks");
  check_success(run_tim(dir, run + "--png-dir " + quote(single)));
  auto expected = files_in(single);
  expected.erase("grid.png");
  // As root OpenMPI wants --allow-run-as-root; 2 ranks on a machine with fewer cores need
  // --oversubscribe.
  const std::string root = ::geteuid() == 0 ? "--allow-run-as-root " : "";
  const std::string command = "mpirun -np 2 --oversubscribe " + root + quote(TIM_EXECUTABLE) + " " + run +
                              "--png-dir " + quote(ranks) + " > " + quote(dir.file("mpi.txt")) + " 2>&1";
  const int status = std::system(command.c_str());
  INFO("mpirun output: ", read_text(dir.file("mpi.txt")));
  REQUIRE(status == 0);
  CHECK(read_text(dir.file("mpi.txt")).find("OpenMPI (OMPI_COMM_WORLD_RANK 1, OMPI_COMM_WORLD_SIZE 2)") !=
        std::string::npos);
  CHECK(files_in(ranks) == expected);
}

TEST_CASE("cli scale: PNG metadata: the A1111 parameters text and a JSON chunk with every setting") {
  TempDir dir;
  const std::string pngs = dir.file("pngs");
  check_success(run_tim(dir, base("--labels 1,7 --cfg-scale 2 --guidance-high 0.9 --first-index 41 --png-dir " + quote(pngs))));
  const auto image = tim::io::read_png((fs::path(pngs) / "000042.png").string());
  const std::string* parameters = image.find_text("parameters");
  REQUIRE(parameters != nullptr);
  CHECK(parameters->rfind("Sneaker\nSteps: 3, Sampler: TiM transition, ", 0) == 0);  // class 7, then the settings
  for (const std::string part : {"CFG scale: 2, ", "Seed: 11, ", "Size: 32x32, ", "Model: tim-fmnist, ",
                                 "Guidance interval: [0, 0.9], ", "Stochasticity: 0, ", "Sample index: 42"})
    CHECK_MESSAGE(parameters->find(part) != std::string::npos, "missing: ", part);
  const std::string* json_text = image.find_text("tim");
  REQUIRE(json_text != nullptr);
  const auto json = nlohmann::json::parse(*json_text);
  CHECK(json.at("sample_index") == 42);
  CHECK(json.at("label") == 7);
  CHECK(json.at("class_name") == "Sneaker");
  CHECK(json.at("steps") == 3);
  CHECK(json.at("cfg_scale") == 2.0);
  CHECK(json.at("seed") == 11);
  CHECK(json.at("first_sample_index") == 41);
  CHECK(json.at("transport") == "ot-fm");
  CHECK(json.at("latent_height") == 32);
  CHECK(json.at("width") == 32);
  CHECK(json.at("times").size() == 4);
  CHECK(json.at("model") == shipped);
}

TEST_CASE("cli scale: --size in pixels, --latent-height/width in cells, --preset") {
  TempDir dir;
  const std::string out = dir.file("out.safetensors");
  check_success(run_tim(dir, base("--class 1 --size 16x24 --out " + quote(out))));  // no decoder: a pixel is a cell
  CHECK(tim::io::SafetensorsFile::open(out).info("latents").shape == tim::Shape{1, 1, 24, 16});
  check_success(run_tim(dir, base("--class 1 --latent-height 8 --latent-width 12 --out " + quote(out))));
  CHECK(tim::io::SafetensorsFile::open(out).info("latents").shape == tim::Shape{1, 1, 8, 12});
  check_user_error(run_tim(dir, base("--class 1 --size 16by16 --out " + quote(out))), {"--size"});
  check_user_error(run_tim(dir, base("--class 1 --size 0x16 --out " + quote(out))), {"--size '0x16'", "[1, 65536]"});
  // The 250-step recipe, with --steps given: the rest of the recipe applies.
  check_success(run_tim(dir, "sample --model " + quote(shipped) + " --class 1 --preset c2i-250step --steps 2 --out " + quote(out)));
  const auto metadata = tim::io::SafetensorsFile::open(out).metadata();
  CHECK(metadata.at("steps") == "2");
  CHECK(metadata.at("cfg_scale") == "2.5");
  CHECK(metadata.at("guidance_high") == "0.6");
  CHECK(metadata.at("stochasticity") == "0.2");
  CHECK(metadata.at("preset") == "c2i-250step");
  check_user_error(run_tim(dir, base("--class 1 --preset fast --out " + quote(out))), {"--preset 'fast'", "c2i-1step"});
}

TEST_CASE("cli scale: NaN in a result is reported by sample index, never written as an image") {
  TempDir dir;
  // The shipped model with a NaN in the final layer's bias: every output is NaN.
  const auto file = tim::io::SafetensorsFile::open(shipped);
  tim::io::SafetensorsWriter writer;
  for (const auto& info : file.tensors()) {
    auto tensor = file.load<float>(info.name).clone();
    if (info.name == "final_layer.linear.bias") tensor.data()[0] = std::nanf("");
    writer.add(info.name, tensor);
  }
  for (const auto& [key, value] : file.metadata()) writer.set_metadata(key, value);
  const std::string model = dir.file("nan.safetensors"), pngs = dir.file("pngs");
  writer.write(model);
  const auto result = run_tim(dir, "sample --model " + quote(model) + " --steps 1 --class 2 --num 2 --first-index 5 "
                                   "--png-dir " + quote(pngs));
  check_user_error(result, {"2 of 2 samples came out with NaN or Inf", "sample indices 5, 6", "not written"});
  CHECK((!fs::exists(pngs) || files_in(pngs).empty()));
}

TEST_CASE("cli scale: bad options at scale end with exit code 1 and the option named") {
  TempDir dir;
  const std::string out = dir.file("o.safetensors"), pngs = dir.file("p");
  const std::vector<std::pair<std::string, std::vector<std::string>>> cases = {
      {"--class 1 --batch-size 0 --out " + quote(out), {"--batch-size must be at least 1"}},
      {"--class 1 --shard 2/2 --out " + quote(out), {"--shard '2/2'", "[0, N)"}},
      {"--class 1 --shard 1-2 --out " + quote(out), {"--shard '1-2'", "expected K/N"}},
      {"--class 1 --resume --out " + quote(out) + " --png-dir " + quote(pngs), {"--resume cannot be combined with --out"}},
      {"--class 1 --resume --overwrite --png-dir " + quote(pngs), {"--overwrite and --resume contradict"}},
      {"--class 1 --resume --out " + quote(out), {"--resume needs --png-dir"}},
      {"--class 1 --label-seed 3 --out " + quote(out), {"--label-seed needs --random-labels"}},
      {"--class 1 --num-per-class 2 --out " + quote(out), {"choose one of --labels, --class"}},
      {"--random-labels 0 --out " + quote(out), {"--random-labels must be at least 1"}},
      {"--class 1 --num 70 --trajectory --out " + quote(out), {"--trajectory", "--batch-size 70"}},
      {"--class 1 --gpu 1 --out " + quote(out), {"--gpu needs --device cuda"}},
  };
  for (const auto& [args, parts] : cases) {
    CAPTURE(args);
    check_user_error(run_tim(dir, base(args)), parts);
  }
}

namespace {

// The committed ImageNet-1k list, read here from the source tree (the program has it compiled in).
std::vector<std::string> imagenet_list() {
  std::istringstream lines(read_text(TIM_IMAGENET_CLASSES));
  std::vector<std::string> names;
  for (std::string line; std::getline(lines, line);) names.push_back(line);
  return names;
}

// The 10-class golden network (patch 4, 16 x 16 x 1) with a random 1001-row class table: a
// 1000-class model whose metadata has neither class_names nor a dataset (only its image_size).
std::string thousand_class_model(const TempDir& dir) {
  const auto file = tim::io::SafetensorsFile::open(std::string(TIM_TEST_DATA_DIR) + "/golden/patch4.safetensors");
  tim::io::SafetensorsWriter writer;
  for (const auto& info : file.tensors()) {
    if (info.name.rfind("input.", 0) == 0 || info.name.rfind("output.", 0) == 0) continue;
    if (info.name == "y_embedder.embedding_table.weight") {
      auto table = tim::Tensor<float>::empty({1001, info.shape[1]});
      for (std::int64_t i = 0; i < table.numel(); ++i) table.data()[i] = 0.02f * static_cast<float>((i * 7919) % 101 - 50);
      writer.add(info.name, table);
    } else {
      writer.add(info.name, file.load<float>(info.name).clone());
    }
  }
  for (const auto& [key, value] : file.metadata()) writer.set_metadata(key, value);
  writer.set_metadata("image_size", "16x16x1");
  const std::string path = dir.file("imagenet1k.safetensors");
  writer.write(path);
  return path;
}

}  // namespace

TEST_CASE("cli scale: the committed ImageNet-1k list has 1000 non-empty names, one per line") {
  const std::string text = read_text(TIM_IMAGENET_CLASSES);
  REQUIRE(!text.empty());
  CHECK(text.back() == '\n');
  CHECK(text.find('\r') == std::string::npos);
  const auto names = imagenet_list();
  REQUIRE(names.size() == 1000);
  for (std::size_t i = 0; i < names.size(); ++i) {
    CAPTURE(i);
    CHECK(!names[i].empty());
    CHECK(names[i].find_first_not_of(' ') != std::string::npos);
  }
  CHECK(names.front() == "tench");  // the standard index order's ends (timm's imagenet_synsets.txt)
  CHECK(names.back() == "toilet tissue");
}

TEST_CASE("cli scale: a 1000-class model without class_names is labelled with the ImageNet-1k names") {
  TempDir dir;
  const std::string model = thousand_class_model(dir);
  const std::string pngs = dir.file("pngs");
  check_success(run_tim(dir, "sample --model " + quote(model) + " --labels 0,999,1000 --steps 1 --seed 3 --png-dir " + quote(pngs)));
  const auto names = imagenet_list();
  REQUIRE(names.size() == 1000);
  const std::vector<std::pair<std::string, std::string>> expected{
      {"000000.png", names[0]}, {"000001.png", names[999]}, {"000002.png", "unconditional"}};
  for (const auto& [file, name] : expected) {
    CAPTURE(file);
    const auto image = tim::io::read_png((fs::path(pngs) / file).string());
    const std::string* parameters = image.find_text("parameters");
    REQUIRE(parameters != nullptr);
    CHECK(parameters->rfind(name + "\nSteps: 1, ", 0) == 0);
    const std::string* json_text = image.find_text("tim");
    REQUIRE(json_text != nullptr);
    CHECK(nlohmann::json::parse(*json_text).at("class_name") == name);
  }
  // A model whose metadata names its own classes keeps them.
  tim::io::SafetensorsWriter writer;
  const auto file = tim::io::SafetensorsFile::open(model);
  for (const auto& info : file.tensors()) writer.add(info.name, file.load<float>(info.name).clone());
  for (const auto& [key, value] : file.metadata()) writer.set_metadata(key, value);
  nlohmann::json own = nlohmann::json::array();
  for (int i = 0; i < 1000; ++i) own.push_back("own " + std::to_string(i));
  writer.set_metadata("class_names", own.dump());
  const std::string named = dir.file("named.safetensors");
  writer.write(named);
  const std::string named_pngs = dir.file("named_pngs");
  check_success(run_tim(dir, "sample --model " + quote(named) + " --labels 999 --steps 1 --png-dir " + quote(named_pngs)));
  const auto image = tim::io::read_png((fs::path(named_pngs) / "000000.png").string());
  REQUIRE(image.find_text("parameters") != nullptr);
  CHECK(image.find_text("parameters")->rfind("own 999\nSteps: 1, ", 0) == 0);
}
