// The `tim` program run as a subprocess: golden cases split into a model file and an inputs
// file must reproduce the reference output (forward, sample; class-conditional and text-to-image
// models), and every kind of bad input must end with exit code 1 and a message that says what is
// wrong (never a crash).
#include <doctest/doctest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "cli_run.hpp"
#include "golden_source.hpp"
#include "random_t2i_checkpoint.hpp"
#include "tim/io/png.hpp"
#include "tim/tim.hpp"
#include <nlohmann/json.hpp>

namespace {

using namespace tim_test;

namespace fs = std::filesystem;

// The inputs of one forward call, as plain vectors so tests can spoil them.
struct Inputs {
  tim::Shape x_shape;
  std::vector<float> x, t, r;
  std::vector<std::int64_t> y;
};

struct WriteOptions {
  std::set<std::string> omit;  // tensors to leave out
  bool t_as_f64 = false;       // store t as F64 instead of F32
};

void write_inputs(const std::string& path, const Inputs& in, const WriteOptions& options = {}) {
  tim::io::SafetensorsWriter writer;
  auto length = [](const auto& v) { return tim::Shape{static_cast<std::int64_t>(v.size())}; };
  if (!options.omit.count("x")) writer.add("x", tim::DType::F32, in.x_shape, in.x.data());
  if (!options.omit.count("t")) {
    if (options.t_as_f64) {
      std::vector<double> t(in.t.begin(), in.t.end());
      writer.add("t", tim::DType::F64, length(t), t.data());
    } else {
      writer.add("t", tim::DType::F32, length(in.t), in.t.data());
    }
  }
  if (!options.omit.count("r")) writer.add("r", tim::DType::F32, length(in.r), in.r.data());
  if (!options.omit.count("y")) writer.add("y", tim::DType::I64, length(in.y), in.y.data());
  writer.write(path);
}

// A golden file split the way a user would hold it: the parameters as F32 in model.safetensors,
// the inputs as F32/I64 in inputs.safetensors; the expected output stays in memory.
struct GoldenSplit {
  std::string model, inputs;
  Inputs input;
  tim::Shape out_shape;
  std::vector<double> expected;
  // What the file's shapes and metadata say, computed here independently of the program.
  std::int64_t hidden = 0, depth = 0, heads = 0, num_classes = 0, patch = 0, in_channels = 0;
  std::int64_t parameters = 0;  // elements of every tensor except projector.*
  std::int64_t parameter_tensors = 0, projector_tensors = 0;
};

// The `tim` JSON chunk of a PNG that tim sample wrote.
nlohmann::json tim_json(const tim::io::PngImage& image) {
  const std::string* text = image.find_text("tim");
  REQUIRE(text != nullptr);
  return nlohmann::json::parse(*text);
}

bool is_io(const std::string& name) { return name.rfind("input.", 0) == 0 || name.rfind("output.", 0) == 0; }

GoldenSplit split_golden(const TempDir& dir, const std::string& name, bool drop_num_heads = false) {
  const std::string path = std::string(TIM_TEST_DATA_DIR) + "/golden/" + name + ".safetensors";
  REQUIRE_MESSAGE(fs::exists(path), "golden file missing: ", path);
  const auto file = tim::io::SafetensorsFile::open(path);
  GoldenSplit split;
  split.model = dir.file(name + ".safetensors");
  split.inputs = dir.file(name + "_inputs.safetensors");

  tim::io::SafetensorsWriter model;
  std::set<std::string> blocks;
  for (const auto& info : file.tensors()) {
    if (is_io(info.name)) continue;
    model.add(info.name, file.load<float>(info.name));
    ++split.parameter_tensors;
    if (info.name.rfind("projector.", 0) == 0) {
      ++split.projector_tensors;
      continue;
    }
    split.parameters += info.shape.numel();
    if (info.name.rfind("blocks.", 0) == 0) blocks.insert(info.name.substr(0, info.name.find('.', 7)));
  }
  for (const auto& [key, value] : file.metadata())
    if (!(drop_num_heads && key == "num_heads")) model.set_metadata(key, value);
  model.write(split.model);

  const auto patch_weight = file.info("x_embedder.proj.weight").shape;
  split.hidden = patch_weight[0];
  split.in_channels = patch_weight[1];
  split.patch = patch_weight[2];
  split.depth = static_cast<std::int64_t>(blocks.size());
  split.num_classes = file.info("y_embedder.embedding_table.weight").shape[0] - 1;
  split.heads = std::stoll(file.metadata().at("num_heads"));

  auto to_floats = [&](const char* tensor) {
    const auto loaded = file.load<double>(tensor);
    return std::vector<float>(loaded.data(), loaded.data() + loaded.numel());
  };
  split.input.x_shape = file.info("input.x").shape;
  split.input.x = to_floats("input.x");
  split.input.t = to_floats("input.t");
  split.input.r = to_floats("input.r");
  const auto y = file.load<std::int64_t>("input.y");
  split.input.y.assign(y.data(), y.data() + y.numel());
  write_inputs(split.inputs, split.input);

  const auto expected = file.load<double>("output.out");
  split.out_shape = expected.shape();
  split.expected.assign(expected.data(), expected.data() + expected.numel());
  return split;
}

// max |out - expected| / max |expected| of the `out` tensor the program wrote.
double relative_error_of(const std::string& out_path, const GoldenSplit& split) {
  const auto file = tim::io::SafetensorsFile::open(out_path);
  REQUIRE(file.contains("out"));
  CHECK(file.info("out").dtype == tim::DType::F32);
  REQUIRE(file.info("out").shape == split.out_shape);
  const auto out = file.load<float>("out");
  double largest_diff = 0, largest_ref = 0;
  for (std::size_t i = 0; i < split.expected.size(); ++i) {
    largest_diff = std::max(largest_diff, std::abs(static_cast<double>(out.data()[i]) - split.expected[i]));
    largest_ref = std::max(largest_ref, std::abs(split.expected[i]));
  }
  REQUIRE(largest_ref > 1e-2);  // a vacuous reference would make the comparison meaningless
  return largest_diff / largest_ref;
}

std::string forward_args(const std::string& model, const std::string& inputs, const std::string& out) {
  return "forward --model " + quote(model) + " --inputs " + quote(inputs) + " --out " + quote(out);
}

}  // namespace

TEST_CASE("cli forward: golden cases reproduce the reference output in float") {
  TempDir dir;
  for (const std::string name : {"square", "nonsquare_tall", "patch4", "projector", "cond_t_r", "cond_r"}) {
    CAPTURE(name);
    const auto split = split_golden(dir, name);
    const std::string out = dir.file(name + "_out.safetensors");
    const auto result = run_tim(dir, forward_args(split.model, split.inputs, out));
    check_success(result);
    CHECK(result.out.empty());  // silent on success without --verbose
    CHECK(result.err.empty());
    const double error = relative_error_of(out, split);
    INFO("relative error ", error);
    CHECK(error <= 1e-4);
  }
}

TEST_CASE("cli forward: a bfloat16 checkpoint with --weights stored (default) and float, and --precision") {
  TempDir dir;
  const auto split = split_golden(dir, "square");
  // The model rewritten with every tensor rounded to bfloat16, as a converter would store it.
  const std::string model = dir.file("square_bf16.safetensors");
  {
    const auto file = tim::io::SafetensorsFile::open(split.model);
    tim::io::SafetensorsWriter writer;
    for (const auto& [key, value] : file.metadata()) writer.set_metadata(key, value);
    for (const auto& info : file.tensors()) {
      const auto values = file.load<float>(info.name);
      std::vector<tim::bfloat16> rounded(static_cast<std::size_t>(values.numel()));
      for (std::size_t i = 0; i < rounded.size(); ++i) rounded[i] = tim::bfloat16(values.data()[i]);
      writer.add(info.name, tim::DType::BF16, info.shape, rounded.data());
    }
    writer.write(model);
  }
  const auto output_of = [&](const std::string& out) {
    const auto file = tim::io::SafetensorsFile::open(out);
    const auto t = file.load<float>("out");
    return std::make_pair(std::vector<float>(t.data(), t.data() + t.numel()), file.metadata().at("device"));
  };
  // max |a - b| / max |b|
  const auto relative = [](const std::vector<float>& a, const auto& b) {
    double diff = 0, scale = 0;
    for (std::size_t i = 0; i < a.size(); ++i) {
      diff = std::max(diff, std::abs(static_cast<double>(a[i]) - static_cast<double>(b[i])));
      scale = std::max(scale, std::abs(static_cast<double>(b[i])));
    }
    return diff / scale;
  };
  const std::string stored = dir.file("stored.safetensors"), widened = dir.file("widened.safetensors");
  check_success(run_tim(dir, forward_args(model, split.inputs, stored)));
  check_success(run_tim(dir, forward_args(model, split.inputs, widened) + " --weights float"));
  const auto [a, device_a] = output_of(stored);
  const auto [b, device_b] = output_of(widened);
  CHECK(device_a == "cpu, float32, bfloat16 weights");
  CHECK(device_b == "cpu, float32");
  // Both are float forwards of the same rounded weights (tests/test_stored_weights.cpp): each
  // within the float criterion 1e-4 of float64, so within 2e-4 of each other.
  REQUIRE(a.size() == b.size());
  CHECK(relative(a, b) <= 2e-4);
  // The rounding changed the network: the float golden output is further away than that.
  CHECK(relative(a, split.expected) > 1e-6);
  check_user_error(run_tim(dir, forward_args(model, split.inputs, stored) + " --weights half"),
                   {"--weights", "\"stored\" or \"float\"", "\"half\""});

  const std::string fast = dir.file("fast.safetensors");
  const auto result = run_tim(dir, forward_args(model, split.inputs, fast) + " --precision bfloat16");
  check_success(result);
  const auto [c, device_c] = output_of(fast);
  if (tim::cpu_gemm::bf16_kernel().available) {
    CHECK(device_c == "cpu, bfloat16, bfloat16 weights");
    // Activations rounded to bfloat16 before each of the G = 4 depth + 6 chained products, G 2^-8
    // of float64 (test_stored_weights.cpp), b within 1e-4 of it.
    const double error = relative(c, b);
    CHECK(error <= static_cast<double>(4 * split.depth + 6) * std::ldexp(1.0, -8) + 1e-4);
    CHECK(error > 1e-4);
  } else {
    MESSAGE("skipped: --precision bfloat16 on this CPU: ", tim::cpu_gemm::bf16_kernel().reason);
    CHECK(device_c == "cpu, float32, bfloat16 weights");
    CHECK(result.err.find("computing in float32 instead") != std::string::npos);
  }
}

TEST_CASE("cli forward: output metadata, --threads and --verbose") {
  TempDir dir;
  const auto split = split_golden(dir, "square");
  const std::string out = dir.file("out.safetensors");
  const auto result = run_tim(dir, forward_args(split.model, split.inputs, out) + " --threads 2 --verbose");
  check_success(result);
  CHECK(result.err.find("2 threads") != std::string::npos);
  CHECK(result.err.find(" s;") != std::string::npos);
  CHECK(relative_error_of(out, split) <= 1e-4);
  const auto file = tim::io::SafetensorsFile::open(out);
  CHECK(file.metadata().at("tim_version") == tim::version_string);
  CHECK(file.metadata().at("model") == split.model);
}

TEST_CASE("cli forward: the null class label is accepted") {
  TempDir dir;
  auto split = split_golden(dir, "square");
  for (auto& label : split.input.y) label = split.num_classes;
  write_inputs(split.inputs, split.input);
  check_success(run_tim(dir, forward_args(split.model, split.inputs, dir.file("out.safetensors"))));
}

TEST_CASE("cli inspect: configuration, provenance, parameters, dtypes, metadata") {
  TempDir dir;
  const auto split = split_golden(dir, "square");
  const auto result = run_tim(dir, "inspect " + quote(split.model));
  check_success(result);
  const std::string& text = result.out;
  INFO(text);
  CHECK(text.find("file: " + split.model) != std::string::npos);
  CHECK(text.find("tensors: " + std::to_string(split.parameter_tensors)) != std::string::npos);
  CHECK(text.find("F32: " + std::to_string(split.parameter_tensors) + " tensors") != std::string::npos);
  CHECK(text.find("depth: " + std::to_string(split.depth) + "\n") != std::string::npos);
  CHECK(text.find("hidden: " + std::to_string(split.hidden) + "\n") != std::string::npos);
  CHECK(text.find("num_heads: " + std::to_string(split.heads) + "  (from shapes)") != std::string::npos);
  CHECK(text.find("patch: " + std::to_string(split.patch) + "\n") != std::string::npos);
  CHECK(text.find("num_classes: " + std::to_string(split.num_classes)) != std::string::npos);
  CHECK(text.find("new_condition: t-r  (from metadata)") != std::string::npos);
  CHECK(text.find("parameters: " + std::to_string(split.parameters) + " (") != std::string::npos);
  CHECK(text.find("case: square") != std::string::npos);  // metadata
  CHECK(text.find("ignored: nothing") != std::string::npos);
  CHECK(text.find("size on disk: " + std::to_string(fs::file_size(split.model)) + " bytes") != std::string::npos);
}

TEST_CASE("cli inspect: the projector is reported as ignored") {
  TempDir dir;
  const auto split = split_golden(dir, "projector");
  REQUIRE(split.projector_tensors > 0);
  const auto result = run_tim(dir, "inspect " + quote(split.model));
  check_success(result);
  INFO(result.out);
  CHECK(result.out.find("ignored: projector.* (" + std::to_string(split.projector_tensors) +
                        " tensors, training-only representation alignment)") != std::string::npos);
  CHECK(result.out.find("parameters: " + std::to_string(split.parameters) + " (") != std::string::npos);
}

TEST_CASE("cli inspect: a file that is not a TiM checkpoint") {
  TempDir dir;
  const auto split = split_golden(dir, "square");
  check_user_error(run_tim(dir, "inspect " + quote(split.inputs)),
                   {split.inputs, "is not a TiM checkpoint (class-conditional or text-to-image)",
                    "x_embedder.proj.weight"});
}

TEST_CASE("cli: help, version and usage errors") {
  TempDir dir;
  const auto help = run_tim(dir, "--help");
  check_success(help);
  CHECK(help.out.find("forward") != std::string::npos);
  CHECK(help.out.find("inspect") != std::string::npos);
  const auto forward_help = run_tim(dir, "forward --help");
  check_success(forward_help);
  CHECK(forward_help.out.find("--threads") != std::string::npos);
  const auto version = run_tim(dir, "--version");
  check_success(version);
  CHECK(version.out.find(tim::version_string) != std::string::npos);
  // The baseline the program was compiled for, and the kernels it chose: the report this test
  // process (compiled with the same flags, on the same CPU) makes.
  const std::string baseline = TIM_TEST_CPU_BASELINE;
  if (!baseline.empty() && baseline != "none")
    CHECK(version.out.find("baseline: " + baseline + " (TIM_CPU_BASELINE)") != std::string::npos);
  CHECK(version.out.find(tim::cpu_dispatch::kernel_report_text()) != std::string::npos);

  // On a CPU without one of the baseline's instruction sets the program stops before any other code
  // runs (nothing on stdout, not even --version) with exit code 1 and names what is missing; the
  // check is told to treat each one as absent in turn.
  std::istringstream features(TIM_TEST_BASELINE_FEATURES);
  int checked = 0;
  for (std::string feature; features >> feature; ++checked) {
    CAPTURE(feature);
    const auto refused = run_tim(dir, "--version", "TIM_PRETEND_MISSING_CPU_FEATURE=" + feature + " ");
    check_user_error(refused, {"this CPU lacks " + feature + ", which this build of tim requires",
                               "compiled for " + baseline, "-DTIM_CPU_BASELINE=none"});
    CHECK(refused.out.empty());
  }
  if (!baseline.empty() && baseline != "none") CHECK(checked > 0);
  MESSAGE("baseline ", baseline, ": ", checked, " instruction sets checked at start-up");
  check_success(run_tim(dir, "--version", "TIM_PRETEND_MISSING_CPU_FEATURE=not-a-feature "));

  // Usage errors keep CLI11's own exit codes (not 0, not 1) and messages.
  const auto missing_option = run_tim(dir, "forward --model m.safetensors --out o.safetensors");
  REQUIRE(missing_option.exited);
  CHECK(missing_option.code != 0);
  CHECK(missing_option.code != 1);
  CHECK(missing_option.err.find("--inputs") != std::string::npos);
  const auto no_subcommand = run_tim(dir, "");
  REQUIRE(no_subcommand.exited);
  CHECK(no_subcommand.code != 0);
}

TEST_CASE("cli errors: missing files") {
  TempDir dir;
  const auto split = split_golden(dir, "square");
  const std::string out = dir.file("out.safetensors");
  const std::string nowhere = dir.file("does_not_exist.safetensors");
  check_user_error(run_tim(dir, forward_args(nowhere, split.inputs, out)),
                   {"cannot open safetensors file", nowhere, "No such file"});
  check_user_error(run_tim(dir, forward_args(split.model, nowhere, out)),
                   {"cannot open safetensors file", nowhere, "No such file"});
  check_user_error(run_tim(dir, "inspect " + quote(nowhere)), {"cannot open safetensors file", nowhere});
  CHECK(!fs::exists(out));
}

TEST_CASE("cli errors: inputs with a missing tensor or the wrong dtype") {
  TempDir dir;
  const auto split = split_golden(dir, "square");
  const std::string out = dir.file("out.safetensors");
  const std::string inputs = dir.file("bad_inputs.safetensors");

  write_inputs(inputs, split.input, {{"y"}, false});
  check_user_error(run_tim(dir, forward_args(split.model, inputs, out)), {"no tensor 'y'", inputs});

  write_inputs(inputs, split.input, {{}, true});
  check_user_error(run_tim(dir, forward_args(split.model, inputs, out)),
                   {"tensor 't' in " + inputs + ": expected dtype F32, got F64"});
  CHECK(!fs::exists(out));
}

TEST_CASE("cli errors: inputs with wrong shapes") {
  TempDir dir;
  const auto split = split_golden(dir, "square");
  const std::string out = dir.file("out.safetensors");
  const std::string inputs = dir.file("bad_inputs.safetensors");
  const auto B = split.input.x_shape[0], C = split.input.x_shape[1], H = split.input.x_shape[2],
             W = split.input.x_shape[3];

  SUBCASE("x with one channel too many") {
    Inputs bad = split.input;
    bad.x_shape = tim::Shape{B, C + 1, H, W};
    bad.x.assign(static_cast<std::size_t>(bad.x_shape.numel()), 0.5f);
    write_inputs(inputs, bad);
    std::ostringstream got;
    got << bad.x_shape;
    check_user_error(run_tim(dir, forward_args(split.model, inputs, out)),
                     {"tensor 'x'", "input channels", got.str()});
  }
  SUBCASE("H not divisible by the patch size") {
    REQUIRE(split.patch == 2);
    Inputs bad = split.input;
    bad.x_shape = tim::Shape{B, C, H - 1, W};
    bad.x.assign(static_cast<std::size_t>(bad.x_shape.numel()), 0.5f);
    write_inputs(inputs, bad);
    check_user_error(run_tim(dir, forward_args(split.model, inputs, out)),
                     {"tensor 'x'", "height " + std::to_string(H - 1), "multiples of the model's patch size 2"});
  }
  SUBCASE("t with a different batch than x") {
    Inputs bad = split.input;
    bad.t.push_back(0.5f);
    write_inputs(inputs, bad);
    check_user_error(run_tim(dir, forward_args(split.model, inputs, out)),
                     {"tensor 't'", "expected shape [" + std::to_string(B) + "]"});
  }
  CHECK(!fs::exists(out));
}

TEST_CASE("cli errors: labels outside [0, num_classes]") {
  TempDir dir;
  const auto split = split_golden(dir, "square");
  const std::string out = dir.file("out.safetensors");
  for (const std::int64_t label : {split.num_classes + 1, std::int64_t{-1}}) {
    CAPTURE(label);
    Inputs bad = split.input;
    bad.y.back() = label;
    write_inputs(split.inputs, bad);
    check_user_error(run_tim(dir, forward_args(split.model, split.inputs, out)),
                     {"tensor 'y'", "label " + std::to_string(label), "outside [0, " + std::to_string(split.num_classes) + "]"});
  }
  CHECK(!fs::exists(out));
}

TEST_CASE("cli errors: NaN or inf in the inputs") {
  TempDir dir;
  const auto split = split_golden(dir, "square");
  const std::string out = dir.file("out.safetensors");
  {
    Inputs bad = split.input;
    bad.x[5] = std::numeric_limits<float>::quiet_NaN();
    write_inputs(split.inputs, bad);
    check_user_error(run_tim(dir, forward_args(split.model, split.inputs, out)),
                     {"input 'x'", "non-finite value (NaN) at index 5 [0, 0, 0, 5]"});
  }
  {
    Inputs bad = split.input;
    bad.t[1] = std::numeric_limits<float>::quiet_NaN();
    write_inputs(split.inputs, bad);
    check_user_error(run_tim(dir, forward_args(split.model, split.inputs, out)),
                     {"input 't'", "non-finite value (NaN) at index 1"});
  }
  {
    Inputs bad = split.input;
    bad.r[0] = std::numeric_limits<float>::infinity();
    write_inputs(split.inputs, bad);
    check_user_error(run_tim(dir, forward_args(split.model, split.inputs, out)),
                     {"input 'r'", "non-finite value (inf) at index 0"});
  }
  CHECK(!fs::exists(out));
}

TEST_CASE("cli errors: a truncated model file") {
  TempDir dir;
  const auto split = split_golden(dir, "square");
  fs::resize_file(split.model, fs::file_size(split.model) / 2);
  const std::string out = dir.file("out.safetensors");
  check_user_error(run_tim(dir, forward_args(split.model, split.inputs, out)),
                   {"malformed safetensors file", split.model});
  check_user_error(run_tim(dir, "inspect " + quote(split.model)), {"malformed safetensors file"});
}

TEST_CASE("cli errors: PyTorch checkpoints are refused with a pointer to the converter") {
  TempDir dir;
  const auto split = split_golden(dir, "square");
  const std::string out = dir.file("out.safetensors");
  const std::string bin = dir.file("pytorch_model.bin");
  fs::copy_file(split.model, bin);
  check_user_error(run_tim(dir, forward_args(bin, split.inputs, out)),
                   {bin, "PyTorch pickle", "convert it to .safetensors with tools/convert_t2i_checkpoint.py (see docs/t2i.md)"});
  check_user_error(run_tim(dir, "inspect " + quote(dir.file("missing.pth"))), {"PyTorch pickle"});
  // A torch.save zip archive renamed to .safetensors is recognised by its first bytes.
  const std::string disguised = dir.file("disguised.safetensors");
  write_text(disguised, std::string("PK\x03\x04", 4) + std::string(100, '\0'));
  check_user_error(run_tim(dir, "inspect " + quote(disguised)), {"PyTorch pickle"});
}

TEST_CASE("cli errors: --threads 0 and --out over an input") {
  TempDir dir;
  const auto split = split_golden(dir, "square");
  const std::string out = dir.file("out.safetensors");
  check_user_error(run_tim(dir, forward_args(split.model, split.inputs, out) + " --threads 0"),
                   {"--threads must be at least 1, got 0"});
  CHECK(!fs::exists(out));
  check_user_error(run_tim(dir, forward_args(split.model, split.inputs, split.inputs)), {"would overwrite"});
}

TEST_CASE("cli config: num_heads from YAML for a model without qk-norm") {
  TempDir dir;
  const auto split = split_golden(dir, "plain", /*drop_num_heads=*/true);
  REQUIRE(split.heads == 4);
  const std::string out = dir.file("out.safetensors");

  // Shapes cannot tell the heads without q_norm, and the metadata no longer says.
  check_user_error(run_tim(dir, forward_args(split.model, split.inputs, out)), {"attention heads", "--config"});
  CHECK(!fs::exists(out));

  const std::string config = dir.file("tim_plain.yaml");
  write_text(config,
             "model:\n"
             "  network:\n"
             "    target: tim.models.c2i.tim_model.TiM\n"
             "    params:\n"
             "      num_heads: 4\n"
             "      new_condition: t-r\n"
             "      depth: " + std::to_string(split.depth) + "\n"
             "      hidden_size: " + std::to_string(split.hidden) + "\n"
             "      patch_size: " + std::to_string(split.patch) + "\n"
             "      qk_norm: False\n"
             "data:\n"
             "  dataset:\n"
             "    image_size: 256\n");
  const auto result = run_tim(dir, forward_args(split.model, split.inputs, out) + " --config " + quote(config));
  check_success(result);
  const double error = relative_error_of(out, split);
  INFO("relative error ", error);
  CHECK(error <= 1e-4);

  const auto inspect = run_tim(dir, "inspect " + quote(split.model) + " --config " + quote(config));
  check_success(inspect);
  CHECK(inspect.out.find("num_heads: 4  (from --config)") != std::string::npos);
  CHECK(inspect.out.find("new_condition: t-r  (from --config)") != std::string::npos);

  // The wrong number of heads (D = 32 is divisible by 8 too) gives a different result: the
  // comparison above is not vacuous.
  write_text(config, "model:\n  network:\n    params:\n      num_heads: 8\n");
  check_success(run_tim(dir, forward_args(split.model, split.inputs, out) + " --config " + quote(config)));
  CHECK(relative_error_of(out, split) > 1e-3);
}

TEST_CASE("cli config: contradictions and malformed YAML") {
  TempDir dir;
  const auto split = split_golden(dir, "square");  // q_norm gives 2 heads
  const std::string out = dir.file("out.safetensors");
  const std::string config = dir.file("config.yaml");
  auto forward_with_config = [&] {
    return run_tim(dir, forward_args(split.model, split.inputs, out) + " --config " + quote(config));
  };

  SUBCASE("num_heads contradicting the q_norm shapes") {
    write_text(config, "model:\n  network:\n    params:\n      num_heads: 4\n      new_condition: t-r\n");
    check_user_error(forward_with_config(), {"num_heads 4", "contradicts", "2 heads"});
  }
  SUBCASE("depth contradicting the blocks") {
    write_text(config, "model:\n  network:\n    params:\n      depth: 99\n");
    check_user_error(forward_with_config(),
                     {config, "depth 99 (at model.network.params.depth) contradicts", std::to_string(split.depth)});
  }
  SUBCASE("qk_norm contradicting the tensors") {
    write_text(config, "model:\n  params:\n    qk_norm: false\n");
    check_user_error(forward_with_config(), {"qk_norm false", "contradicts"});
  }
  SUBCASE("a key given twice with different values") {
    write_text(config, "model:\n  network:\n    params:\n      num_heads: 2\nother:\n  num_heads: 16\n");
    check_user_error(forward_with_config(), {"'num_heads' appears twice", "2 (at model.network.params.num_heads)",
                                             "16 (at other.num_heads)"});
  }
  SUBCASE("an unknown new_condition") {
    write_text(config, "model:\n  new_condition: sideways\n");
    check_user_error(forward_with_config(), {"model.new_condition", "unknown value 'sideways'"});
  }
  SUBCASE("a value of the wrong type") {
    write_text(config, "model:\n  num_heads: many\n");
    check_user_error(forward_with_config(), {"model.num_heads must be an integer", "many"});
  }
  SUBCASE("malformed YAML") {
    write_text(config, "model: [unclosed\n  num_heads: 2\n");
    check_user_error(forward_with_config(), {"malformed YAML config", config});
  }
  SUBCASE("a missing config file") {
    fs::remove(config);
    check_user_error(forward_with_config(), {"cannot open YAML config", config});
  }
  SUBCASE("agreeing values are accepted") {
    write_text(config, "model:\n  network:\n    params:\n      num_heads: 2\n      qk_norm: True\n"
                       "      use_new_embed: True\n      distance_aware: True\n      mlp_ratio: 4.0\n"
                       "      in_channels: " + std::to_string(split.in_channels) + "\n"
                       "      num_classes: " + std::to_string(split.num_classes) + "\n"
                       "copy:\n  num_heads: 2\n");
    check_success(forward_with_config());
    CHECK(relative_error_of(out, split) <= 1e-4);
  }
}

// ---------------------------------------------------------------------------------------------
// tim sample

namespace {

std::string sampler_golden_file(const std::string& name) {
  return std::string(TIM_TEST_DATA_DIR) + "/sampler_golden/" + name + ".safetensors";
}

const std::string sampler_model = sampler_golden_file("model");  // C = 4, patch 2, 5 classes

// A golden sampler case as `tim sample` takes it: z in a noise file, the labels as text.
struct SamplerCase {
  std::string name;
  std::map<std::string, std::string> meta;
  std::string noise;   // safetensors file with z [B, C, H, W] F64
  std::string labels;  // "3,0,4"
  tim::Tensor<double> z;
};

SamplerCase sampler_case(const TempDir& dir, const std::string& name) {
  const auto file = tim::io::SafetensorsFile::open(sampler_golden_file(name));
  SamplerCase c{name, file.metadata(), dir.file(name + "_noise.safetensors"), "", file.load<double>("input.z").clone()};
  const auto y = file.load<std::int64_t>("input.y");
  for (std::int64_t b = 0; b < y.numel(); ++b) {
    if (b > 0) c.labels += ',';
    c.labels += std::to_string(y.data()[b]);
  }
  tim::io::SafetensorsWriter writer;
  writer.add("z", c.z);
  writer.write(c.noise);
  return c;
}

// The command line that reproduces a golden case at `steps` steps, from its metadata.
std::string sample_args(const SamplerCase& c, int steps, const std::string& out) {
  const auto& m = c.meta;
  return "sample --model " + quote(sampler_model) + " --noise " + quote(c.noise) + " --labels " + c.labels +
         " --steps " + std::to_string(steps) + " --transport " + m.at("transport") + " --mode " + m.at("mode") +
         " --schedule " + m.at("schedule") + " --cfg-scale " + m.at("cfg_scale") + " --guidance-low " +
         m.at("guidance_low") + " --guidance-high " + m.at("guidance_high") + " --stochasticity " +
         m.at("stochasticity") + " --seed " + m.at("noise_seed") + " --first-index " + m.at("first_sample_index") +
         " --out " + quote(out);
}

// max |a - b| / max |b|.
template <class A, class B>
double relative_error(const A* actual, const B* expected, std::int64_t n) {
  double largest_diff = 0, largest_ref = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    largest_diff = std::max(largest_diff, std::abs(static_cast<double>(actual[i]) - static_cast<double>(expected[i])));
    largest_ref = std::max(largest_ref, std::abs(static_cast<double>(expected[i])));
  }
  REQUIRE(largest_ref > 1e-2);
  return largest_diff / largest_ref;
}

// SPEC 8 (C2I), written out here independently of the program: clamp(255 (x + 1) / 2, 0, 255),
// truncated to uint8.
std::uint8_t expected_pixel(float x) {
  return static_cast<std::uint8_t>(std::clamp(255.0f * (x + 1.0f) / 2.0f, 0.0f, 255.0f));
}

// The T2I scripts' mapping (SPEC 8): clamp(127.5 x + 128, 0, 255), truncated.
std::uint8_t expected_t2i_pixel(float x) {
  return static_cast<std::uint8_t>(std::clamp(127.5f * x + 128.0f, 0.0f, 255.0f));
}

// A model file made from the parameters of `source` (as F32) with `metadata` added; with
// `channels` set, the channel-dependent tensors (x_embedder.proj [D, C, p, p] and the final
// linear layer [p p C, D]) are cut to that many channels, giving a valid network of C channels.
std::string make_model(const TempDir& dir, const std::string& source, const std::string& name,
                       const std::map<std::string, std::string>& metadata, std::int64_t channels = 0) {
  const auto file = tim::io::SafetensorsFile::open(source);
  const std::string path = dir.file(name + ".safetensors");
  tim::io::SafetensorsWriter writer;
  const auto patch_weight = file.info("x_embedder.proj.weight").shape;
  const std::int64_t D = patch_weight[0], C = patch_weight[1], p = patch_weight[2];
  for (const auto& info : file.tensors()) {
    if (is_io(info.name)) continue;
    auto tensor = file.load<float>(info.name).clone();
    if (channels > 0 && info.name == "x_embedder.proj.weight") {
      auto cut = tim::Tensor<float>::empty({D, channels, p, p});
      for (std::int64_t d = 0; d < D; ++d)
        std::copy_n(tensor.data() + d * C * p * p, channels * p * p, cut.data() + d * channels * p * p);
      tensor = cut;
    } else if (channels > 0 && info.name.rfind("final_layer.linear.", 0) == 0) {
      REQUIRE(info.shape[0] == p * p * C);
      std::vector<std::int64_t> extents = info.shape.extents();
      extents[0] = p * p * channels;
      auto cut = tim::Tensor<float>::empty(tim::Shape(extents));
      std::copy_n(tensor.data(), cut.numel(), cut.data());
      tensor = cut;
    }
    writer.add(info.name, tensor);
  }
  for (const auto& [key, value] : file.metadata()) writer.set_metadata(key, value);
  for (const auto& [key, value] : metadata) writer.set_metadata(key, value);
  writer.write(path);
  return path;
}

// A stand-in for the shipped model: the 1-channel, 10-class golden network (patch 4) with the
// metadata the trainer's export writes (dataset, image_size).
std::string fashion_model(const TempDir& dir) {
  return make_model(dir, std::string(TIM_TEST_DATA_DIR) + "/golden/patch4.safetensors", "fashion",
                    {{"dataset", "Fashion-MNIST (test stand-in)"}, {"image_size", "16x16x1"}});
}

}  // namespace

TEST_CASE("cli sample: --noise and --labels reproduce the golden sampler cases in float") {
  TempDir dir;
  const int steps = 4;
  for (const std::string name :
       {"otfm_cfg", "otfm_stochastic", "trigflow_cfg", "edm_diffusion", "otfm_diffusion_stochastic", "vp", "ve_window"}) {
    CAPTURE(name);
    const auto c = sampler_case(dir, name);
    const std::string out = dir.file(name + "_out.safetensors");
    const auto result = run_tim(dir, sample_args(c, steps, out));
    check_success(result);
    CHECK(result.out.empty());
    CHECK(result.err.empty());  // no progress display when stderr is not a terminal

    const auto golden = tim::io::SafetensorsFile::open(sampler_golden_file(name));
    const auto expected = golden.load<double>("output.x_" + std::to_string(steps) + "step");
    const auto file = tim::io::SafetensorsFile::open(out);
    REQUIRE(file.info("latents").dtype == tim::DType::F32);
    REQUIRE(file.info("latents").shape == expected.shape());
    const auto latents = file.load<float>("latents");
    const double error = relative_error(latents.data(), expected.data(), expected.numel());
    MESSAGE(name, " (tim sample, float network): relative error ", error);
    CHECK(error <= 1e-4);
    const auto labels = file.load<std::int64_t>("labels");
    const auto golden_labels = golden.load<std::int64_t>("input.y");
    REQUIRE(labels.shape() == golden_labels.shape());
    CHECK(std::equal(labels.data(), labels.data() + labels.numel(), golden_labels.data()));
    CHECK(!file.contains("trajectory"));
  }
}

TEST_CASE("cli sample: --trajectory starts at the noise, ends at the latents, on the golden grid") {
  TempDir dir;
  const auto c = sampler_case(dir, "otfm_stochastic");
  const int steps = 16;
  const std::string out = dir.file("out.safetensors");
  check_success(run_tim(dir, sample_args(c, steps, out) + " --trajectory"));
  const auto file = tim::io::SafetensorsFile::open(out);
  const auto& z_shape = c.z.shape();
  REQUIRE(file.info("trajectory").dtype == tim::DType::F32);
  REQUIRE(file.info("trajectory").shape == tim::Shape{steps + 1, z_shape[0], z_shape[1], z_shape[2], z_shape[3]});
  const auto trajectory = file.load<float>("trajectory");
  const auto latents = file.load<float>("latents");
  const std::int64_t n = c.z.numel();
  for (std::int64_t i = 0; i < n; ++i) {
    REQUIRE(trajectory.data()[i] == static_cast<float>(c.z.data()[i]));
    REQUIRE(trajectory.data()[steps * n + i] == latents.data()[i]);
  }
  const auto golden = tim::io::SafetensorsFile::open(sampler_golden_file("otfm_stochastic"));
  const auto expected_times = golden.load<double>("output.times_16step");
  REQUIRE(file.info("times").dtype == tim::DType::F64);
  const auto times = file.load<double>("times");
  REQUIRE(times.shape() == expected_times.shape());
  CHECK(std::equal(times.data(), times.data() + times.numel(), expected_times.data()));  // bit-identical
  const auto expected = golden.load<double>("output.x_16step");
  CHECK(relative_error(latents.data(), expected.data(), expected.numel()) <= 1e-4);
}

TEST_CASE("cli sample: __metadata__ holds every generation parameter") {
  TempDir dir;
  const auto c = sampler_case(dir, "otfm_stochastic");
  const std::string out = dir.file("out.safetensors");
  check_success(run_tim(dir, sample_args(c, 4, out) + " --t-max 1 --t-min 0 --threads 1"));
  const auto meta = tim::io::SafetensorsFile::open(out).metadata();
  const std::map<std::string, std::string> expected{
      {"model", sampler_model},   {"steps", "4"},         {"cfg_scale", "2.5"},     {"guidance_low", "0"},
      {"guidance_high", "0.6"},   {"stochasticity", "0.2"}, {"seed", "1234"},       {"first_sample_index", "7"},
      {"sample_indices", "7,8,9"}, {"transport", "ot-fm"}, {"t_max", "1"},          {"t_min", "0"},
      {"schedule", "linspace"},   {"mode", "transition"},  {"noise", c.noise},      {"height", "8"},
      {"width", "8"},             {"tim_version", tim::version_string}};
  for (const auto& [key, value] : expected) {
    CAPTURE(key);
    REQUIRE(meta.count(key) == 1);
    CHECK(meta.at(key) == value);
  }
}

TEST_CASE("cli sample: the model's sample_* metadata are the defaults, options win, bad values fail") {
  TempDir dir;
  const std::string plain = fashion_model(dir);
  const std::string tuned = make_model(dir, std::string(TIM_TEST_DATA_DIR) + "/golden/patch4.safetensors", "tuned",
                                       {{"dataset", "Fashion-MNIST (test stand-in)"}, {"image_size", "16x16x1"},
                                        {"sample_steps", "3"}, {"sample_cfg_scale", "1.5"},
                                        {"sample_guidance_low", "0"}, {"sample_guidance_high", "1.01"}});
  const std::string what = " --class 2 --num 2 --seed 9 --out ";
  // The metadata's settings, against the same settings given as options on a model without them.
  const std::string from_metadata = dir.file("metadata.safetensors"), from_options = dir.file("options.safetensors");
  check_success(run_tim(dir, "sample --model " + quote(tuned) + what + quote(from_metadata)));
  check_success(run_tim(dir, "sample --model " + quote(plain) + what + quote(from_options) +
                                 " --steps 3 --cfg-scale 1.5 --guidance-low 0 --guidance-high 1.01"));
  const auto a = tim::io::SafetensorsFile::open(from_metadata), b = tim::io::SafetensorsFile::open(from_options);
  const auto meta = a.metadata();
  CHECK(meta.at("steps") == "3");
  CHECK(meta.at("cfg_scale") == "1.5");
  CHECK(meta.at("guidance_low") == "0");
  CHECK(meta.at("guidance_high") == "1.01");
  CHECK(meta.at("device") == "cpu, float32");
  const auto la = a.load<float>("latents"), lb = b.load<float>("latents");
  REQUIRE(la.shape() == lb.shape());
  CHECK(std::equal(la.data(), la.data() + la.numel(), lb.data()));  // bit-identical
  // Without the metadata's guidance the result differs (the test can fail).
  const std::string unguided = dir.file("unguided.safetensors");
  check_success(run_tim(dir, "sample --model " + quote(tuned) + what + quote(unguided) + " --cfg-scale 1"));
  const auto lu = tim::io::SafetensorsFile::open(unguided).load<float>("latents");
  CHECK(!std::equal(la.data(), la.data() + la.numel(), lu.data()));
  const auto overridden = tim::io::SafetensorsFile::open(unguided).metadata();
  CHECK(overridden.at("cfg_scale") == "1");
  CHECK(overridden.at("steps") == "3");

  const std::string out = dir.file("out.safetensors");
  const auto bad = [&](const std::string& key, const std::string& value) {
    return make_model(dir, std::string(TIM_TEST_DATA_DIR) + "/golden/patch4.safetensors", "bad_" + key,
                      {{"image_size", "16x16x1"}, {key, value}});
  };
  check_user_error(run_tim(dir, "sample --model " + quote(bad("sample_steps", "four")) + " --class 1 --out " + quote(out)),
                   {"metadata 'sample_steps'", "four", "not a finite number"});
  check_user_error(run_tim(dir, "sample --model " + quote(bad("sample_steps", "2.5")) + " --class 1 --out " + quote(out)),
                   {"'sample_steps'", "whole number", "2.5"});
  check_user_error(
      run_tim(dir, "sample --model " + quote(bad("sample_guidance_low", "1.5")) + " --class 1 --out " + quote(out)),
      {"guidance window [1.5, 1]", "empty"});
  // The option wins over a bad metadata value it replaces.
  check_success(run_tim(dir, "sample --model " + quote(bad("sample_steps", "four")) + " --steps 2 --class 1 --out " +
                                 quote(out)));
}

TEST_CASE("cli sample: --verbose says where each setting came from; bad metadata values name their key") {
  TempDir dir;
  const std::string source = std::string(TIM_TEST_DATA_DIR) + "/golden/patch4.safetensors";
  const std::string tuned = make_model(dir, source, "tuned", {{"image_size", "16x16x1"}, {"sample_steps", "3"}});
  const std::string out = dir.file("out.safetensors");
  const auto verbose = run_tim(dir, "sample --model " + quote(tuned) + " --class 1 --cfg-scale 1 --verbose --out " +
                                        quote(out));
  check_success(verbose);
  for (const char* line : {"tim sample: steps 3 (metadata 'sample_steps')\n", "tim sample: cfg_scale 1 (--cfg-scale)\n",
                           "tim sample: transport ot-fm (default)\n", "tim sample: height 16 (metadata 'image_size')\n",
                           "tim sample: width 16 (metadata 'image_size')\n"}) {
    CAPTURE(line);
    CHECK(verbose.err.find(line) != std::string::npos);
  }
  CHECK(tim::io::SafetensorsFile::open(out).metadata().at("steps") == "3");

  // Every metadata value that is read must be valid; the option or a listed schedule replaces it.
  const auto bad = [&](const std::string& name, const std::map<std::string, std::string>& metadata) {
    auto all = metadata;
    all.emplace("image_size", "16x16x1");
    return make_model(dir, source, name, all);
  };
  const std::string sample = " --class 1 --out " + quote(out);
  check_user_error(run_tim(dir, "sample --model " + quote(bad("size", {{"latent_size", "big"}})) + sample),
                   {"metadata 'latent_size'", "'big'", "not a size"});
  check_user_error(run_tim(dir, "sample --model " + quote(bad("range", {{"transport", "edm"}, {"t_max", "far"}})) + sample),
                   {"metadata 't_max'", "'far'", "not a finite number"});
  check_user_error(run_tim(dir, "sample --model " + quote(bad("mode", {{"sample_type", "sideways"}})) + sample),
                   {"metadata 'sample_type'", "unknown sample mode 'sideways'", "pass --mode"});
  check_user_error(run_tim(dir, "sample --model " + quote(bad("transport", {{"transport", "flow"}})) + sample),
                   {"metadata 'transport'", "unknown transport 'flow'", "pass --transport"});
  check_success(run_tim(dir, "sample --model " + quote(bad("range2", {{"transport", "edm"}, {"t_max", "far"}})) +
                                 sample + " --t-max 40"));
  check_success(run_tim(dir, "sample --model " + quote(bad("steps", {{"sample_steps", "four"}})) + sample +
                                 " --schedule 1,0.5,0"));
  CHECK(tim::io::SafetensorsFile::open(out).metadata().at("steps") == "2");
  // tim bench reads the latent size by the same rule.
  check_user_error(run_tim(dir, "bench --runs 1 --warmup 0 --model " + quote(bad("bench", {{"latent_size", "0x0"}}))),
                   {"metadata 'latent_size'", "not a size"});
}

TEST_CASE("cli: --device and --precision") {
  TempDir dir;
  const std::string model = fashion_model(dir), out = dir.file("out.safetensors");
  const std::string sample = "sample --model " + quote(model) + " --class 1 --out " + quote(out);
  check_user_error(run_tim(dir, sample + " --device gpu"), {"--device must be cpu or cuda", "'gpu'"});
  check_user_error(run_tim(dir, sample + " --device cuda --precision half"),
                   {"--precision must be float32 or bfloat16", "'half'"});
  // On the CPU --precision applies to bfloat16 weights; this model's are float, which a note says.
  const auto float_weights = run_tim(dir, sample + " --precision bfloat16");
  check_success(float_weights);
  CHECK(float_weights.err.find("applies to bfloat16 weights; this model's are float32") != std::string::npos);
  CHECK(tim::io::SafetensorsFile::open(out).metadata().at("device") == "cpu, float32");
  // This machine may have no GPU, or the build no CUDA: either way a clear error, never a crash.
  // (With a GPU, tests/cuda/check_cli.py compares --device cuda with the CPU.)
  const auto cuda = run_tim(dir, sample + " --device cuda");
  REQUIRE(cuda.exited);
  if (cuda.code != 0) check_user_error(cuda, {"--device cuda"});
  check_success(run_tim(dir, sample + " --device cpu --precision float32"));
  const auto split = split_golden(dir, "square");
  check_user_error(run_tim(dir, forward_args(split.model, split.inputs, out) + " --device tpu"),
                   {"--device must be cpu or cuda", "'tpu'"});
}

TEST_CASE("cli sample: generated noise is tim::initial_noise, row b drawing sample index first + b") {
  TempDir dir;
  const std::string base = "sample --model " + quote(sampler_model) + " --height 8 --width 8 --steps 2 --seed 5 ";
  const std::string batch = dir.file("batch.safetensors"), single = dir.file("single.safetensors");
  check_success(run_tim(dir, base + "--class 1 --num 3 --first-index 10 --trajectory --out " + quote(batch)));
  const auto file = tim::io::SafetensorsFile::open(batch);
  CHECK(file.metadata().at("sample_indices") == "10,11,12");
  const auto trajectory = file.load<float>("trajectory");
  const auto noise = tim::initial_noise({3, 4, 8, 8}, 5, 10);
  for (std::int64_t i = 0; i < noise.numel(); ++i) REQUIRE(trajectory.data()[i] == static_cast<float>(noise.data()[i]));
  const auto labels = file.load<std::int64_t>("labels");
  CHECK(std::all_of(labels.data(), labels.data() + 3, [](std::int64_t y) { return y == 1; }));

  // Sample 12 alone is row 2 of the batch: its noise is the same, and the program evaluates the
  // network one sample at a time, so its result is the same bits (docs/scale.md).
  check_success(run_tim(dir, base + "--labels 1 --first-index 12 --trajectory --out " + quote(single)));
  const auto alone_file = tim::io::SafetensorsFile::open(single);
  const auto alone_start = alone_file.load<float>("trajectory");
  const std::int64_t per_sample = 4 * 8 * 8;
  CHECK(std::equal(alone_start.data(), alone_start.data() + per_sample, trajectory.data() + 2 * per_sample));
  const auto alone = alone_file.load<float>("latents");
  const auto together = file.load<float>("latents");
  CHECK(std::equal(alone.data(), alone.data() + per_sample, together.data() + 2 * per_sample));
}

TEST_CASE("cli sample: bad arguments end with exit code 1 and a message naming the problem") {
  TempDir dir;
  const auto c = sampler_case(dir, "otfm_cfg");  // B = 3, C = 4, 8 x 8
  const std::string out = dir.file("out.safetensors");
  const std::string model = "sample --model " + quote(sampler_model) + " --out " + quote(out) + " ";
  const std::string sized = model + "--height 8 --width 8 ";
  const std::string noise = model + "--noise " + quote(c.noise) + " ";

  // Noise files that do not fit.
  const std::string wrong_channels = dir.file("wrong_channels.safetensors");
  {
    tim::io::SafetensorsWriter writer;
    writer.add("z", tim::initial_noise({3, 3, 8, 8}, 0));
    writer.write(wrong_channels);
  }
  const std::string integer_noise = dir.file("integer_noise.safetensors");
  {
    tim::io::SafetensorsWriter writer;
    std::vector<std::int64_t> values(3 * 4 * 8 * 8, 1);
    writer.add("z", tim::DType::I64, tim::Shape{3, 4, 8, 8}, values.data());
    writer.write(integer_noise);
  }
  const std::string two_tensors = dir.file("two_tensors.safetensors");
  {
    tim::io::SafetensorsWriter writer;
    writer.add("a", tim::initial_noise({3, 4, 8, 8}, 0));
    writer.add("b", tim::initial_noise({3, 4, 8, 8}, 1));
    writer.write(two_tensors);
  }
  const std::string nan_noise = dir.file("nan_noise.safetensors");
  {
    auto z = tim::initial_noise({1, 4, 8, 8}, 0);
    z.data()[17] = std::numeric_limits<double>::quiet_NaN();
    tim::io::SafetensorsWriter writer;
    writer.add("noise", z);  // the only tensor: accepted whatever its name
    writer.write(nan_noise);
  }

  const std::vector<std::pair<std::string, std::vector<std::string>>> cases{
      {sized + "--class 1 --steps 0", {"--steps must be at least 1, got 0"}},
      {sized + "--labels 0,6", {"--labels: label 6 at index 1 is outside [0, 5]"}},
      {sized + "--labels 0,-1", {"--labels: label -1 at index 1 is outside [0, 5]"}},
      {sized + "--class 7 --num 2", {"--class 7 is outside [0, 5]"}},
      {sized + "--labels 1,x", {"--labels '1,x': 'x' is not an integer"}},
      {sized + "--class 1 --transport flow", {"--transport: unknown transport 'flow'", "ot-fm, trigflow, edm, vp, ve"}},
      {sized + "--class 1 --schedule cosine", {"--schedule: unknown schedule 'cosine'"}},
      {sized + "--class 1 --schedule 1,0.5,0 --steps 3", {"--schedule: schedule '1,0.5,0' has 3 times"}},
      {sized + "--class 1 --schedule 1,0.5,0.5", {"--schedule: time grid: times must be strictly decreasing"}},
      {sized + "--class 1 --mode sideways", {"--mode: unknown sample mode 'sideways'"}},
      {sized + "--class 1 --guidance-low 0.8 --guidance-high 0.2", {"--guidance-low 0.8 is greater than --guidance-high 0.2"}},
      {sized + "--class 1 --stochasticity -0.1", {"--stochasticity must be a finite number >= 0"}},
      {sized + "--class 1 --stochasticity 0.2 --transport edm", {"--stochasticity 0.2 needs the ot-fm transport", "edm"}},
      {sized + "--class 1 --t-max 0.5 --t-min 0.5", {"--t-max 0.5 must be greater than --t-min 0.5"}},
      {sized + "--class 1 --cfg-scale inf", {"--cfg-scale must be a finite number"}},
      {model + "--class 1 --height 7 --width 8", {"height 7 and width 8 must be multiples of the model's patch size 2"}},
      {model + "--class 1 --height 8 --width 0", {"--width must be at least 1, got 0"}},
      {model + "--class 1", {"no 'latent_size' or 'image_size'", "pass --height and --width"}},
      {sized + "--labels 1,2 --class 1", {"choose one of --labels, --class, --grid"}},
      {sized + "--num 3", {"--num needs --class"}},
      {sized + "--class 1 --num 0", {"--num must be at least 1, got 0"}},
      {sized, {"nothing to sample", "--labels", "--class", "--grid"}},
      {sized + "--class 1 --per-class 3", {"--per-class needs --grid"}},
      {sized + "--grid " + quote(dir.file("g.png")) + " --labels 1", {"choose one of --labels, --class, --grid"}},
      {"sample --model " + quote(sampler_model) + " --height 8 --width 8 --class 1", {"no output", "--out", "--png-dir", "--grid"}},
      {"sample --model " + quote(sampler_model) + " --height 8 --width 8 --class 1 --trajectory --png-dir " + quote(dir.file("p")),
       {"--trajectory needs --out"}},
      {"sample --model " + quote(sampler_model) + " --height 8 --width 8 --class 1 --out " + quote(dir.file("no/such/out.safetensors")),
       {"--out", "the folder", "does not exist"}},
      {noise + "--labels 1,2", {"--labels gives 2 labels but the --noise tensor has 3 samples"}},
      {noise, {"--noise needs --labels"}},
      {noise + "--class 1 --num 3", {"--num cannot be used with --noise"}},
      {noise + "--labels 1,2,3 --height 16", {"--height 16 disagrees with the --noise shape [3, 4, 8, 8]"}},
      {model + "--labels 1,2,3 --noise " + quote(wrong_channels), {"has 3 channels; the model has 4"}},
      {model + "--labels 1,2,3 --noise " + quote(integer_noise), {"has dtype I64; expected F32 or F64"}},
      {model + "--labels 1,2,3 --noise " + quote(two_tensors), {"expected a tensor 'z'", "found: a, b"}},
      {model + "--labels 1 --noise " + quote(nan_noise), {"non-finite value at index 17"}},
      {model + "--labels 1 --noise " + quote(dir.file("missing.safetensors")), {"cannot open safetensors file"}},
      {sized + "--class 1 --png-dir " + quote(dir.file("pngs")), {"PNG output", "4", "VAE decoder"}},
      {sized + "--class 1 --threads 0", {"--threads must be at least 1, got 0"}},
  };
  for (const auto& [args, parts] : cases) {
    CAPTURE(args);
    check_user_error(run_tim(dir, args), parts);
    CHECK(!fs::exists(out));
  }
  CHECK(!fs::exists(dir.file("pngs")));
  check_user_error(run_tim(dir, "sample --model " + quote(c.noise) + " --class 1 --out " + quote(out)),
                   {"is not a TiM checkpoint"});
  check_user_error(run_tim(dir, model + "--labels 1,2,3 --noise " + quote(out)), {"cannot open"});
  check_user_error(run_tim(dir, "sample --model " + quote(sampler_model) + " --height 8 --width 8 --class 1 --out " +
                                    quote(sampler_model)),
                   {"would overwrite the model"});
}

TEST_CASE("cli sample: --png-dir writes SPEC 8 pixels, the parameters and a labelled grid") {
  TempDir dir;
  const std::string model = fashion_model(dir);
  const std::string out = dir.file("out.safetensors"), pngs = dir.file("pngs");
  // No --height/--width: the metadata's image_size gives 16 x 16.
  const auto result = run_tim(dir, "sample --model " + quote(model) + " --labels 3,1,3 --steps 2 --seed 9 --out " +
                                       quote(out) + " --png-dir " + quote(pngs));
  check_success(result);
  const auto file = tim::io::SafetensorsFile::open(out);
  REQUIRE(file.info("latents").shape == tim::Shape{3, 1, 16, 16});
  const auto latents = file.load<float>("latents");
  const std::vector<std::string> names{"000000.png", "000001.png", "000002.png"};
  for (std::size_t b = 0; b < names.size(); ++b) {
    CAPTURE(names[b]);
    const auto image = tim::io::read_png((fs::path(pngs) / names[b]).string());
    REQUIRE(image.channels == 1);
    REQUIRE(image.width == 16);
    REQUIRE(image.height == 16);
    int saturated = 0;
    for (std::int64_t i = 0; i < 16 * 16; ++i) {
      const float x = latents.data()[static_cast<std::int64_t>(b) * 256 + i];
      REQUIRE(image.pixels[static_cast<std::size_t>(i)] == expected_pixel(x));
      saturated += (x <= -1 || x >= 1);
    }
    CHECK(saturated < 256);  // the comparison is not vacuous
    const std::string* parameters = image.find_text("parameters");
    REQUIRE(parameters != nullptr);
    CHECK(parameters->rfind(b == 1 ? "Trouser\nSteps: 2, " : "Dress\nSteps: 2, ", 0) == 0);  // A1111: prompt, settings
    CHECK(parameters->find("Seed: 9, ") != std::string::npos);
    const auto json = tim_json(image);
    CHECK(json.at("steps") == 2);
    CHECK(json.at("seed") == 9);
    CHECK(json.at("model") == model);
    CHECK(json.at("label") == (b == 1 ? 1 : 3));
    CHECK(json.at("class_name") == (b == 1 ? "Trouser" : "Dress"));
    CHECK(json.at("sample_index") == b);
  }
  const auto grid = tim::io::read_png((fs::path(pngs) / "grid.png").string());
  CHECK(grid.channels == 1);
  CHECK(grid.width > 2 * 16);
  CHECK(grid.height > 2 * 16);
  REQUIRE(grid.find_text("parameters") != nullptr);
  CHECK(tim_json(grid).at("tim_version") == tim::version_string);
  CHECK(std::count(grid.pixels.begin(), grid.pixels.end(), 0) > 0);
}

namespace {

// The decoder tensors of the `sd_layout` VAE golden case (widths 16/16/32/32, 8 GroupNorm groups)
// as F32 in DIR/vae/diffusion_pytorch_model.safetensors, with `config_json` beside it as
// config.json unless empty: a released VAE folder in miniature.
std::string make_vae_folder(const TempDir& dir, const std::string& config_json,
                            const std::string& golden = "vae_golden/sd_layout") {
  const auto file = tim::io::SafetensorsFile::open(std::string(TIM_TEST_DATA_DIR) + "/" + golden + ".safetensors");
  fs::create_directories(dir.path / "vae");
  const std::string path = (dir.path / "vae" / "diffusion_pytorch_model.safetensors").string();
  tim::io::SafetensorsWriter writer;
  for (const auto& info : file.tensors())
    if (!is_io(info.name)) writer.add(info.name, file.load<float>(info.name));
  writer.write(path);
  if (!config_json.empty()) write_text((dir.path / "vae" / "config.json").string(), config_json);
  return path;
}

// relative_error over two whole tensors of the same shape.
double tensor_error(const tim::Tensor<float>& actual, const tim::Tensor<double>& expected) {
  REQUIRE(actual.shape() == expected.shape());
  return relative_error(actual.data(), expected.data(), expected.numel());
}

}  // namespace

TEST_CASE("cli sample: --vae decodes the latents into PNGs and --out images, config.json read beside the weights") {
  TempDir dir;
  const std::string model = make_model(dir, std::string(TIM_TEST_DATA_DIR) + "/golden/square.safetensors", "c2i4", {});
  const std::string vae = make_vae_folder(dir, R"({"_class_name": "AutoencoderKL", "norm_num_groups": 8,
                                                   "scaling_factor": 0.18215, "latent_channels": 4})");
  const std::string out = dir.file("out.safetensors"), pngs = dir.file("pngs");
  const auto result = run_tim(dir, "sample --model " + quote(model) + " --labels 2,0 --latent-height 8 --latent-width 6 --steps 2 "
                                       "--seed 4 --vae " + quote(vae) + " --out " + quote(out) + " --png-dir " +
                                       quote(pngs) + " -v");
  check_success(result);
  CHECK(result.err.find("decoded to 64 x 48 images on the CPU") != std::string::npos);

  // The program's images against the library's float64 decoder run on the latents it wrote.
  const auto file = tim::io::SafetensorsFile::open(out);
  REQUIRE(file.info("latents").shape == tim::Shape{2, 4, 8, 6});
  REQUIRE(file.info("images").shape == tim::Shape{2, 3, 64, 48});
  const auto latents = file.load<double>("latents");
  const auto images = file.load<float>("images");
  tim::vae::SdVaeOptions vae_options;
  vae_options.groups = 8;
  const auto reference = tim::vae::open_sd_vae_decoder<double>(vae, vae_options).decode(latents);
  CHECK(tensor_error(images, reference) < 1e-4);

  const std::vector<std::string> names{"000000.png", "000001.png"};
  const std::int64_t pixels = 64 * 48;
  for (std::size_t b = 0; b < names.size(); ++b) {
    CAPTURE(names[b]);
    const auto image = tim::io::read_png((fs::path(pngs) / names[b]).string());
    REQUIRE(image.channels == 3);
    REQUIRE(image.width == 48);
    REQUIRE(image.height == 64);
    std::set<int> values;
    for (std::int64_t c = 0; c < 3; ++c)
      for (std::int64_t p = 0; p < pixels; ++p) {
        const float x = images.data()[(static_cast<std::int64_t>(b) * 3 + c) * pixels + p];
        REQUIRE(image.pixels[static_cast<std::size_t>(p * 3 + c)] == expected_pixel(x));
        values.insert(image.pixels[static_cast<std::size_t>(p * 3 + c)]);
      }
    CHECK(values.size() > 50);  // a real image, not a constant
    const std::string* parameters = image.find_text("parameters");
    REQUIRE(parameters != nullptr);
    CHECK(tim_json(image).at("vae") == vae);
    CHECK(tim_json(image).at("vae_config").get<std::string>().find("G 8, eps 1e-06, scaling_factor 0.18215") !=
          std::string::npos);
    CHECK(tim_json(image).at("steps") == 2);
    CHECK(tim_json(image).at("seed") == 4);
  }
  const auto grid = tim::io::read_png((fs::path(pngs) / "grid.png").string());
  CHECK(grid.channels == 3);
  CHECK(grid.width > 2 * 48);
  REQUIRE(grid.find_text("parameters") != nullptr);
  CHECK(tim_json(grid).contains("vae"));
  CHECK(grid.find_text("parameters")->find(", VAE: ") != std::string::npos);

  // scaling_factor from config.json: 2x the factor decodes latents / 2, i.e. other images.
  TempDir other;
  const std::string scaled = make_vae_folder(other, R"({"norm_num_groups": 8, "scaling_factor": 0.3643})");
  const std::string out2 = other.file("out.safetensors");
  check_success(run_tim(other, "sample --model " + quote(model) + " --labels 2,0 --latent-height 8 --latent-width 6 --steps 2 "
                                   "--seed 4 --vae " + quote(scaled) + " --out " + quote(out2)));
  vae_options.scaling_factor = 0.3643;
  const auto halved = tim::vae::open_sd_vae_decoder<double>(scaled, vae_options).decode(latents);
  const auto images2 = tim::io::SafetensorsFile::open(out2).load<float>("images");
  CHECK(tensor_error(images2, halved) < 1e-4);
  CHECK(tensor_error(images2, reference) > 1e-2);
}

TEST_CASE("cli decode: latents from tim sample --out decode to its images and PNGs named by sample index") {
  TempDir dir;
  const std::string model = make_model(dir, std::string(TIM_TEST_DATA_DIR) + "/golden/square.safetensors", "c2i4", {});
  const std::string vae = make_vae_folder(dir, R"({"_class_name": "AutoencoderKL", "norm_num_groups": 8})");
  const std::string sampled = dir.file("sampled.safetensors"), decoded = dir.file("decoded.safetensors");
  const std::string pngs = dir.file("pngs");
  check_success(run_tim(dir, "sample --model " + quote(model) + " --labels 2,4 --latent-height 8 --latent-width 10 "
                                 "--steps 2 --first-index 30 --vae " + quote(vae) + " --out " + quote(sampled)));
  // The folder (diffusers layout) or the weights file, to --out and to PNGs.
  check_success(run_tim(dir, "decode --vae " + quote((fs::path(vae).parent_path()).string()) + " --latents " +
                                 quote(sampled) + " --out " + quote(decoded) + " --png-dir " + quote(pngs)));
  const auto images = tim::io::SafetensorsFile::open(decoded).load<float>("images");
  const auto expected_images = tim::io::SafetensorsFile::open(sampled).load<float>("images");
  REQUIRE(images.shape() == tim::Shape{2, 3, 64, 80});
  CHECK(std::equal(images.data(), images.data() + images.numel(), expected_images.data()));
  // The library's decoder on the same latents, in this process.
  tim::vae::SdVaeOptions vae_options;
  vae_options.groups = 8;
  const auto reference = tim::vae::open_sd_vae_decoder<double>(vae, vae_options)
                             .decode(tim::io::SafetensorsFile::open(sampled).load<double>("latents"));
  CHECK(tensor_error(images, reference) < 1e-4);
  for (int b = 0; b < 2; ++b) {
    const auto image = tim::io::read_png((fs::path(pngs) / ("0000" + std::to_string(30 + b) + ".png")).string());
    CHECK(image.width == 80);
    CHECK(image.height == 64);
    CHECK(tim_json(image).at("sample_index") == 30 + b);
    CHECK(tim_json(image).at("label") == (b == 0 ? 2 : 4));
    CHECK(tim_json(image).at("steps") == "2");  // the latents file's metadata, as it was written
  }
  // Never over existing PNGs without --overwrite; bad latents named.
  check_user_error(run_tim(dir, "decode --vae " + quote(vae) + " --latents " + quote(sampled) + " --png-dir " + quote(pngs)),
                   {"'000030.png' already exists", "--overwrite"});
  check_success(run_tim(dir, "decode --vae " + quote(vae) + " --latents " + quote(sampled) + " --png-dir " + quote(pngs) +
                                 " --overwrite"));
  check_user_error(run_tim(dir, "decode --vae " + quote(vae) + " --latents " + quote(decoded) + " --out " +
                                    quote(dir.file("x.safetensors"))),
                   {"expected a tensor 'latents' [B, C, h, w]", "found: images"});
  check_user_error(run_tim(dir, "decode --vae " + quote(vae) + " --latents " + quote(sampled)), {"no output"});
}

TEST_CASE("cli sample: --vae with a DC-AE decoder, attention_head_dim and decoder_in_shortcut from config.json") {
  TempDir dir;
  const std::string model = make_model(dir, std::string(TIM_TEST_DATA_DIR) + "/golden/square.safetensors", "c2i4", {});
  // The `variants` DC-AE golden case: 4 latent channels, 2 stages (2x), head dim 3, no input shortcut.
  const std::string vae = make_vae_folder(
      dir, R"({"_class_name": "AutoencoderDC", "attention_head_dim": 3, "decoder_in_shortcut": false})",
      "dc_ae_golden/variants");
  const std::string out = dir.file("out.safetensors"), pngs = dir.file("pngs");
  const auto result = run_tim(dir, "sample --model " + quote(model) + " --labels 1,3 --latent-height 8 --latent-width 6 --steps 2 "
                                       "--vae " + quote(vae) + " --out " + quote(out) + " --png-dir " + quote(pngs) + " -v");
  check_success(result);
  CHECK(result.err.find("decoded to 16 x 12 images on the CPU") != std::string::npos);
  const auto file = tim::io::SafetensorsFile::open(out);
  const auto latents = file.load<double>("latents");
  const auto images = file.load<float>("images");
  REQUIRE(images.shape() == tim::Shape{2, 3, 16, 12});
  tim::vae::DcAeOptions vae_options;
  vae_options.attention_head_dim = 3;
  vae_options.in_shortcut = false;
  const auto reference = tim::vae::open_dc_ae_decoder<double>(vae, vae_options).decode(latents);
  CHECK(tensor_error(images, reference) < 1e-4);
  const auto image = tim::io::read_png((fs::path(pngs) / "000001.png").string());
  REQUIRE(image.channels == 3);
  for (std::int64_t c = 0; c < 3; ++c)
    for (std::int64_t p = 0; p < 16 * 12; ++p)
      REQUIRE(image.pixels[static_cast<std::size_t>(p * 3 + c)] == expected_pixel(images.data()[(3 + c) * 16 * 12 + p]));
  REQUIRE(image.find_text("parameters") != nullptr);
  CHECK(tim_json(image).at("vae_config").get<std::string>().rfind("DC-AE decoder", 0) == 0);

  // Without config.json the released head width (32) does not fit this decoder's shapes.
  TempDir bare;
  const std::string plain = make_vae_folder(bare, "", "dc_ae_golden/variants");
  check_user_error(run_tim(bare, "sample --model " + quote(model) + " --labels 1 --latent-height 8 --latent-width 8 --png-dir " +
                                     quote(bare.file("pngs")) + " --vae " + quote(plain)),
                   {"--vae '", "32"});
  // A config.json naming the other class.
  TempDir wrong;
  const std::string mislabelled = make_vae_folder(wrong, R"({"_class_name": "AutoencoderKL"})", "dc_ae_golden/variants");
  check_user_error(run_tim(wrong, "sample --model " + quote(model) + " --labels 1 --latent-height 8 --latent-width 8 --png-dir " +
                                      quote(wrong.file("pngs")) + " --vae " + quote(mislabelled)),
                   {"--vae '", "describes a AutoencoderKL but the weights are an AutoencoderDC"});
}

TEST_CASE("cli sample: --vae-tile decodes in blended tiles as tim::vae::decode_tiled does") {
  TempDir dir;
  const std::string model = make_model(dir, std::string(TIM_TEST_DATA_DIR) + "/golden/square.safetensors", "c2i4", {});
  const std::string vae = make_vae_folder(dir, R"({"norm_num_groups": 8})");
  const std::string out = dir.file("out.safetensors");
  check_success(run_tim(dir, "sample --model " + quote(model) + " --labels 2,4 --latent-height 8 --latent-width 10 --steps 2 --vae " +
                                 quote(vae) + " --vae-tile 4 --vae-overlap 2 --out " + quote(out)));
  const auto file = tim::io::SafetensorsFile::open(out);
  const auto latents = file.load<double>("latents");
  const auto images = file.load<float>("images");
  tim::vae::SdVaeOptions vae_options;
  vae_options.groups = 8;
  const auto decoder = tim::vae::open_sd_vae_decoder<double>(vae, vae_options);
  const auto tiled = tim::vae::decode_tiled(decoder, latents, {.tile = 4, .overlap = 2});
  CHECK(tensor_error(images, tiled) < 1e-4);
  // Tiles of 4 out of 8 x 10 latent pixels see only themselves: far from the untiled images.
  CHECK(tensor_error(images, decoder.decode(latents)) > 1e-2);

  const std::string base = "sample --model " + quote(model) + " --labels 1 --latent-height 8 --latent-width 8 --out " +
                           quote(dir.file("x.safetensors"));
  check_user_error(run_tim(dir, base + " --vae " + quote(vae) + " --vae-tile -1"), {"--vae-tile must be >= 0"});
  check_user_error(run_tim(dir, base + " --vae " + quote(vae) + " --vae-tile 4 --vae-overlap 4"),
                   {"--vae-overlap must be in [0, --vae-tile) = [0, 4), got 4"});
  check_user_error(run_tim(dir, base + " --vae-tile 4"), {"--vae-tile needs --vae"});
  check_user_error(run_tim(dir, base + " --vae " + quote(vae) + " --vae-overlap -3"), {"--vae-overlap needs --vae-tile"});
}

TEST_CASE("cli sample: --vae errors name the file and what is wrong") {
  TempDir dir;
  const std::string model = make_model(dir, std::string(TIM_TEST_DATA_DIR) + "/golden/square.safetensors", "c2i4", {});
  const std::string base = "sample --model " + quote(model) + " --labels 1 --latent-height 8 --latent-width 8 --steps 1 --png-dir " +
                           quote(dir.file("pngs")) + " --vae ";
  SUBCASE("no --vae for a 4-channel model") {
    check_user_error(run_tim(dir, "sample --model " + quote(model) + " --labels 1 --latent-height 8 --latent-width 8 --png-dir " +
                                      quote(dir.file("pngs"))),
                     {"needs latents with 1 (gray) or 3 (RGB) channels", "give --vae"});
  }
  SUBCASE("a missing file") {
    check_user_error(run_tim(dir, base + quote(dir.file("none.safetensors"))), {"--vae '", "none.safetensors"});
  }
  SUBCASE("a TiM checkpoint instead of a VAE") {
    check_user_error(run_tim(dir, base + quote(model)),
                     {"--vae '", "not a VAE decoder", "post_quant_conv.weight", "decoder.conv_in.weight"});
  }
  SUBCASE("without config.json the default 32 groups do not fit the widths") {
    const std::string vae = make_vae_folder(dir, "");
    check_user_error(run_tim(dir, base + quote(vae)), {"--vae '", "not divisible by norm_num_groups 32"});
  }
  SUBCASE("config.json: not JSON, wrong types, another class, a shift") {
    const std::vector<std::pair<std::string, std::string>> cases{
        {"{\"norm_num_groups\": 8,", "config.json: not valid JSON"},
        {"[8]", "expected a JSON object"},
        {R"({"norm_num_groups": "8"})", "'norm_num_groups' must be an integer >= 1, got \"8\""},
        {R"({"norm_num_groups": 0})", "'norm_num_groups' must be an integer >= 1, got 0"},
        {R"({"norm_num_groups": 8, "scaling_factor": -1})", "'scaling_factor' must be a positive finite number"},
        {R"({"norm_num_groups": 8, "scaling_factor": 1e9})", "'scaling_factor' must be in [1e-6, 1e6]"},
        {R"({"_class_name": "AutoencoderDC", "norm_num_groups": 8})", "describes a AutoencoderDC but the weights are an AutoencoderKL"},
        {R"({"norm_num_groups": 8, "attention_head_dim": -2})", "'attention_head_dim' must be an integer >= 1, got -2"},
        {R"({"norm_num_groups": 8, "decoder_in_shortcut": 1})", "'decoder_in_shortcut' must be true or false, got 1"},
        {R"({"norm_num_groups": 8, "shift_factor": 0.1})", "shift_factor 0.1"},
    };
    for (const auto& [json, message] : cases) {
      CAPTURE(json);
      const std::string vae = make_vae_folder(dir, json);
      check_user_error(run_tim(dir, base + quote(vae)), {"--vae '", message});
    }
  }
  SUBCASE("a decoder for other latents than the model's") {
    const std::string vae = make_vae_folder(dir, R"({"norm_num_groups": 8})");
    const std::string gray = make_model(dir, std::string(TIM_TEST_DATA_DIR) + "/golden/patch4.safetensors", "gray", {});
    check_user_error(run_tim(dir, "sample --model " + quote(gray) + " --labels 1 --latent-height 16 --latent-width 16 --png-dir " +
                                      quote(dir.file("pngs")) + " --vae " + quote(vae)),
                     {"--vae '", "takes latents with 4 channels, but the latents have 1"});
  }
}

TEST_CASE("cli sample: RGB PNGs from a 3-channel model keep the channel order, names from class_names") {
  TempDir dir;
  // latent_size wins over image_size; class_names wins over dataset.
  const std::string model = make_model(dir, sampler_model, "rgb",
                                       {{"latent_size", "8x6"}, {"image_size", "64x48x3"}, {"dataset", "fashion-mnist"},
                                        {"class_names", R"(["zero", "one", "two", "three", "four"])"}},
                                       /*channels=*/3);
  const std::string out = dir.file("out.safetensors"), pngs = dir.file("pngs");
  check_success(run_tim(dir, "sample --model " + quote(model) + " --class 2 --num 2 --out " + quote(out) +
                                 " --png-dir " + quote(pngs)));
  const auto latents = tim::io::SafetensorsFile::open(out).load<float>("latents");
  REQUIRE(latents.shape() == tim::Shape{2, 3, 8, 6});
  for (std::int64_t b = 0; b < 2; ++b) {
    const auto image = tim::io::read_png((fs::path(pngs) / ("00000" + std::to_string(b) + ".png")).string());
    REQUIRE(image.channels == 3);
    REQUIRE(image.width == 6);
    REQUIRE(image.height == 8);
    for (std::int64_t ch = 0; ch < 3; ++ch)
      for (std::int64_t y = 0; y < 8; ++y)
        for (std::int64_t x = 0; x < 6; ++x)
          REQUIRE(image.pixels[static_cast<std::size_t>((y * 6 + x) * 3 + ch)] ==
                  expected_pixel(latents.data()[((b * 3 + ch) * 8 + y) * 6 + x]));
    REQUIRE(image.find_text("parameters") != nullptr);
    CHECK(tim_json(image).at("label") == 2);
    CHECK(tim_json(image).at("class_name") == "two");
    CHECK(image.find_text("parameters")->rfind("two\n", 0) == 0);
  }
  CHECK(tim::io::read_png((fs::path(pngs) / "grid.png").string()).channels == 3);
}

TEST_CASE("cli sample: --grid samples --per-class of every class, row K equal to --class K") {
  TempDir dir;
  const std::string model = fashion_model(dir);
  const std::string grid = dir.file("grid.png"), out = dir.file("grid.safetensors"), row = dir.file("row.safetensors");
  check_success(run_tim(dir, "sample --model " + quote(model) + " --grid " + quote(grid) + " --per-class 3 --steps 2 --out " + quote(out)));
  const auto file = tim::io::SafetensorsFile::open(out);
  const auto labels = file.load<std::int64_t>("labels");
  REQUIRE(labels.numel() == 30);
  for (std::int64_t b = 0; b < 30; ++b) CHECK(labels.data()[b] == b / 3);
  CHECK(file.metadata().at("sample_indices").rfind("0,1,2,0,1,2,", 0) == 0);
  const auto image = tim::io::read_png(grid);
  CHECK(image.channels == 1);
  CHECK(image.height > 10 * 16);
  REQUIRE(image.find_text("parameters") != nullptr);
  CHECK(tim_json(image).at("steps") == 2);

  check_success(run_tim(dir, "sample --model " + quote(model) + " --class 7 --num 3 --steps 2 --out " + quote(row)));
  const auto alone = tim::io::SafetensorsFile::open(row).load<float>("latents");
  const auto together = file.load<float>("latents");
  CHECK(relative_error(alone.data(), together.data() + 7 * 3 * 256, 3 * 256) <= 1e-5);
}

TEST_CASE("cli sample: without --model, the shipped model or a clear error") {
  TempDir dir;
  const std::string missing = dir.file("nowhere/tim-fmnist.safetensors");
  check_user_error(run_tim(dir, "sample --grid " + quote(dir.file("g.png")), "TIM_DEFAULT_MODEL=" + quote(missing) + " "),
                   {"no --model given", missing, "pass --model PATH.safetensors", "models/tim-fmnist.safetensors"});
  CHECK(!fs::exists(dir.file("g.png")));

  // TIM_DEFAULT_MODEL points at any model.
  const std::string stand_in = fashion_model(dir);
  check_success(run_tim(dir, "sample --grid " + quote(dir.file("g.png")) + " --per-class 1 --steps 1",
                        "TIM_DEFAULT_MODEL=" + quote(stand_in) + " "));
  CHECK(tim_json(tim::io::read_png(dir.file("g.png"))).at("model") == stand_in);

  if (!fs::exists(TIM_SHIPPED_MODEL)) {
    MESSAGE("skipped the shipped-model run: ", TIM_SHIPPED_MODEL, " is not there yet");
    return;
  }
  const std::string shipped_grid = dir.file("shipped.png");
  check_success(run_tim(dir, "sample --grid " + quote(shipped_grid) + " --per-class 1 --steps 1"));
  const auto image = tim::io::read_png(shipped_grid);
  CHECK(image.channels == 1);
}

// ---------------------------------------------------------------------------------------------
// Text-to-image models: tim sample --captions, tim forward with cap_feats, tim inspect.

namespace {

std::string t2i_sampler_golden_file(const std::string& name) {
  return std::string(TIM_TEST_DATA_DIR) + "/sampler_golden_t2i/" + name + ".safetensors";
}

const std::string t2i_model = t2i_sampler_golden_file("model");  // C = 4, patch 2, cap_dim 8

//! A captions file as tools/caption_features.py writes it; a null tensor pointer leaves it out.
void write_captions(const std::string& path, const tim::Tensor<float>* cap_feats, const tim::Tensor<float>* null_cap_feats,
                    const std::map<std::string, std::string>& metadata = {}) {
  tim::io::SafetensorsWriter writer;
  if (cap_feats) writer.add("cap_feats", *cap_feats);
  if (null_cap_feats) writer.add("null_cap_feats", *null_cap_feats);
  for (const auto& [key, value] : metadata) writer.set_metadata(key, value);
  writer.write(path);
}

// A golden T2I sampler case as `tim sample` takes it: z in a noise file, the caption features
// (as float, the network's precision) in a captions file.
struct CaptionCase {
  std::string name;
  std::map<std::string, std::string> meta;
  std::string noise, captions;
  tim::Tensor<double> z;
  tim::Tensor<float> cap_feats, null_cap_feats;
};

CaptionCase caption_case(const TempDir& dir, const std::string& name) {
  const auto file = tim::io::SafetensorsFile::open(t2i_sampler_golden_file(name));
  CaptionCase c{name,
                file.metadata(),
                dir.file(name + "_noise.safetensors"),
                dir.file(name + "_captions.safetensors"),
                file.load<double>("input.z").clone(),
                file.load<float>("input.cap_feats").clone(),
                file.load<float>("input.null_cap_feats").clone()};
  tim::io::SafetensorsWriter writer;
  writer.add("z", c.z);
  writer.write(c.noise);
  write_captions(c.captions, &c.cap_feats, &c.null_cap_feats);
  return c;
}

std::string caption_sample_args(const CaptionCase& c, int steps, const std::string& out) {
  const auto& m = c.meta;
  return "sample --model " + quote(t2i_model) + " --noise " + quote(c.noise) + " --captions " + quote(c.captions) +
         " --steps " + std::to_string(steps) + " --transport " + m.at("transport") + " --mode " + m.at("mode") +
         " --schedule " + m.at("schedule") + " --cfg-scale " + m.at("cfg_scale") + " --guidance-low " +
         m.at("guidance_low") + " --guidance-high " + m.at("guidance_high") + " --stochasticity " +
         m.at("stochasticity") + " --seed " + m.at("noise_seed") + " --first-index " + m.at("first_sample_index") +
         " --out " + quote(out);
}

// The network evaluated one row at a time on one thread, as `tim sample` evaluates it
// (include/tim/cpu/per_sample_network.hpp), written here on its own: a plain serial loop.
template <class Network>
struct OneRowAtATime {
  using value_type = typename Network::value_type;
  using backend = typename Network::backend;
  using Condition = typename Network::Condition;
  const Network& network;
  const decltype(Network::config)& config = network.config;
  void check_condition(const Condition& c, std::int64_t rows) const { network.check_condition(c, rows); }
  Condition guided_condition(const Condition& c) const { return network.guided_condition(c); }
  void reserve_for(const Condition&, std::int64_t, std::int64_t, std::int64_t) const {}
  void forward(tim::Tensor<value_type>& out, const tim::Tensor<value_type>& x, const tim::Tensor<value_type>& t_in,
               const tim::Tensor<value_type>& r_in, const Condition& c) const {
    out = tim::Tensor<value_type>::empty({x.dim(0), config.out_channels, x.dim(2), x.dim(3)});
    tim::Tensor<value_type> row;
    for (std::int64_t b = 0; b < x.dim(0); ++b) {
      network.forward(row, x.slice(b, 1), t_in.slice(b, 1), r_in.slice(b, 1), c.slice(b, 1));
      std::copy_n(row.data(), row.numel(), out.data() + b * row.numel());
    }
  }
};

// `run()` on one thread (then the thread count restored).
template <class Run>
auto on_one_thread(const Run& run) {
  const int threads = tim::num_threads();
  tim::set_num_threads(1);
  auto result = run();
  tim::set_num_threads(threads);
  return result;
}

// The same run through the library: the float network, the sampler, the case's settings.
tim::Tensor<double> library_sample(const CaptionCase& c, int steps) {
  auto model = tim::load_t2i<float>(t2i_model);
  model.set_null_caption(c.null_cap_feats);
  const auto& m = c.meta;
  const auto options = tim_test::sampler_options_of(m);
  return std::visit(
      [&](auto transport) {
        const OneRowAtATime<tim::nn::T2IModel<float>> rows{model};
        tim::TransitionSampler sampler{rows, transport, tim::linspace_schedule(steps)};
        return on_one_thread([&] { return sampler.sample(c.z, c.cap_feats, options).x; });
      },
      tim::parse_transport(m.at("transport")));
}

// Whether every float the program wrote is the library's double result rounded to float.
bool equals_library(const tim::Tensor<float>& written, const tim::Tensor<double>& library) {
  if (written.shape() != library.shape()) return false;
  for (std::int64_t i = 0; i < written.numel(); ++i)
    if (written.data()[i] != static_cast<float>(library.data()[i])) return false;
  return true;
}

// A golden T2I network case split into a model file (parameters as F32, metadata kept) and an
// inputs file (x, t, r, cap_feats as F32); the expected output stays in memory.
struct T2ISplit {
  std::string model, inputs;
  std::int64_t parameters = 0, projector_tensors = 0, tensors = 0;
  tim::Shape out_shape;
  std::vector<double> expected;
};

T2ISplit split_t2i_golden(const TempDir& dir, const std::string& name) {
  const auto file = tim::io::SafetensorsFile::open(std::string(TIM_TEST_DATA_DIR) + "/golden_t2i/" + name +
                                                   ".safetensors");
  T2ISplit split;
  split.model = dir.file("t2i_" + name + ".safetensors");
  split.inputs = dir.file("t2i_" + name + "_inputs.safetensors");
  tim::io::SafetensorsWriter model;
  for (const auto& info : file.tensors()) {
    if (is_io(info.name)) continue;
    model.add(info.name, file.load<float>(info.name));
    ++split.tensors;
    if (info.name.rfind("projector.", 0) == 0)
      ++split.projector_tensors;
    else
      split.parameters += info.shape.numel();
  }
  for (const auto& [key, value] : file.metadata()) model.set_metadata(key, value);
  model.write(split.model);
  tim::io::SafetensorsWriter inputs;
  for (const char* input : {"x", "t", "r", "cap_feats"}) inputs.add(input, file.load<float>(std::string("input.") + input));
  inputs.write(split.inputs);
  const auto expected = file.load<double>("output.out");
  split.out_shape = expected.shape();
  split.expected.assign(expected.data(), expected.data() + expected.numel());
  return split;
}

// A 1-channel text-to-image model with random weights (tests/random_t2i_checkpoint.hpp), 8 x 8
// latents in its metadata, so that its samples can become PNGs.
std::string gray_t2i_model(const TempDir& dir) {
  const auto config = tim_test::t2i_config(/*hidden=*/16, /*depth=*/1, /*heads=*/2, /*patch=*/2, /*channels=*/1,
                                           /*caption_dim=*/8, /*adaln_hidden=*/8);
  const auto checkpoint = tim_test::random_t2i_checkpoint(config, 11);
  tim::io::SafetensorsWriter writer;
  for (const auto& info : checkpoint.tensors()) writer.add(info.name, info.dtype, info.shape, checkpoint.bytes(info.name).data());
  for (const auto& [key, value] : checkpoint.metadata()) writer.set_metadata(key, value);
  writer.set_metadata("image_size", "8x8x1");
  const std::string path = dir.file("gray_t2i.safetensors");
  writer.write(path);
  return path;
}

tim::Tensor<float> random_floats(std::vector<std::int64_t> shape, std::uint32_t seed) {
  auto tensor = tim::Tensor<float>::empty(tim::Shape(std::move(shape)));
  std::mt19937 generator(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (std::int64_t i = 0; i < tensor.numel(); ++i) tensor.data()[i] = normal(generator);
  return tensor;
}

}  // namespace

TEST_CASE("cli sample: --noise and --captions reproduce the T2I golden sampler cases and the library") {
  TempDir dir;
  const int steps = 4;
  for (const std::string name : {"plain", "cfg_window", "cfg_stochastic"}) {
    CAPTURE(name);
    const auto c = caption_case(dir, name);
    const std::string out = dir.file(name + "_out.safetensors");
    const auto result = run_tim(dir, caption_sample_args(c, steps, out));
    check_success(result);
    CHECK(result.out.empty());
    CHECK(result.err.empty());

    const auto golden = tim::io::SafetensorsFile::open(t2i_sampler_golden_file(name));
    const auto expected = golden.load<double>("output.x_" + std::to_string(steps) + "step");
    const auto file = tim::io::SafetensorsFile::open(out);
    REQUIRE(file.info("latents").dtype == tim::DType::F32);
    REQUIRE(file.info("latents").shape == expected.shape());
    const auto latents = file.load<float>("latents");
    const double error = relative_error(latents.data(), expected.data(), expected.numel());
    MESSAGE(name, " (tim sample --captions, float network): relative error to the reference ", error);
    CHECK(error <= 1e-4);
    CHECK(equals_library(latents, library_sample(c, steps)));
    CHECK(!file.contains("labels"));
    CHECK(file.metadata().at("captions") == c.captions);
    CHECK(std::stod(file.metadata().at("cfg_scale")) == std::stod(c.meta.at("cfg_scale")));
  }
}

TEST_CASE("cli sample: a 1-channel T2I model, generated noise, --png-dir and --grid without labels") {
  TempDir dir;
  const std::string model = gray_t2i_model(dir);
  const auto cap_feats = random_floats({3, 4, 8}, 21), null_cap_feats = random_floats({1, 4, 8}, 22);
  const std::string captions = dir.file("caps.safetensors");
  write_captions(captions, &cap_feats, &null_cap_feats,
                 {{"captions", R"(["a red shirt", "a boot", "a bag"])"}, {"generator", "test"}});
  const std::string out = dir.file("out.safetensors"), pngs = dir.file("pngs"), grid = dir.file("grid.png");
  check_success(run_tim(dir, "sample --model " + quote(model) + " --captions " + quote(captions) +
                                 " --steps 2 --seed 3 --first-index 5 --cfg-scale 2 --out " + quote(out) +
                                 " --png-dir " + quote(pngs) + " --grid " + quote(grid)));
  const auto file = tim::io::SafetensorsFile::open(out);
  CHECK(file.metadata().at("sample_indices") == "5,6,7");
  const auto latents = file.load<float>("latents");
  REQUIRE(latents.shape() == tim::Shape{3, 1, 8, 8});

  // The library called directly: noise from tim::initial_noise at sample indices 5, 6, 7.
  auto network = tim::load_t2i<float>(model);
  network.set_null_caption(null_cap_feats);
  const OneRowAtATime<tim::nn::T2IModel<float>> rows{network};
  tim::TransitionSampler sampler{rows, tim::OtFm{}, tim::linspace_schedule(2)};
  const auto expected = on_one_thread([&] {
    return sampler.sample(tim::initial_noise({3, 1, 8, 8}, 3, 5), cap_feats,
                          {.cfg_scale = 2.0, .seed = 3, .first_sample_index = 5});
  });
  CHECK(equals_library(latents, expected.x));

  const std::vector<std::string> texts{"a red shirt", "a boot", "a bag"};
  for (std::int64_t b = 0; b < 3; ++b) {
    const std::string name = "00000" + std::to_string(5 + b) + ".png";  // sample indices 5, 6, 7
    CAPTURE(name);
    const auto image = tim::io::read_png((fs::path(pngs) / name).string());
    REQUIRE(image.channels == 1);
    REQUIRE(image.width == 8);
    REQUIRE(image.height == 8);
    int differs_from_c2i = 0;
    for (std::int64_t i = 0; i < 64; ++i) {
      const float x = latents.data()[b * 64 + i];
      REQUIRE(image.pixels[static_cast<std::size_t>(i)] == expected_t2i_pixel(x));
      differs_from_c2i += expected_t2i_pixel(x) != expected_pixel(x);
    }
    CHECK(differs_from_c2i > 0);  // the two mappings are told apart here
    const std::string* parameters = image.find_text("parameters");
    REQUIRE(parameters != nullptr);
    CHECK(parameters->rfind(texts[static_cast<std::size_t>(b)] + "\nSteps: 2, ", 0) == 0);  // A1111: the prompt first
    const auto json = tim_json(image);
    CHECK(json.at("captions") == captions);
    CHECK(json.at("caption") == texts[static_cast<std::size_t>(b)]);
    CHECK(json.at("caption_index") == b);
    CHECK(json.at("sample_index") == 5 + b);
    CHECK(!json.contains("label"));
  }
  // One unlabelled row of three 8 x 8 samples, enlarged 8 times: no label column.
  for (const auto& path : {grid, (fs::path(pngs) / "grid.png").string()}) {
    const auto image = tim::io::read_png(path);
    CHECK(image.width == 4 + 3 * (64 + 4));
    CHECK(image.height == 4 + (64 + 4));
  }
}

TEST_CASE("cli forward: a T2I golden case with cap_feats reproduces the reference and the library") {
  TempDir dir;
  for (const std::string name : {"square", "nonsquare", "plain"}) {
    CAPTURE(name);
    const auto split = split_t2i_golden(dir, name);
    const std::string out = dir.file(name + "_out.safetensors");
    check_success(run_tim(dir, forward_args(split.model, split.inputs, out)));
    const auto file = tim::io::SafetensorsFile::open(out);
    REQUIRE(file.info("out").shape == split.out_shape);
    const auto written = file.load<float>("out");
    double largest_diff = 0, largest_ref = 0;
    for (std::size_t i = 0; i < split.expected.size(); ++i) {
      largest_diff = std::max(largest_diff, std::abs(double(written.data()[i]) - split.expected[i]));
      largest_ref = std::max(largest_ref, std::abs(split.expected[i]));
    }
    MESSAGE(name, " (tim forward, T2I, float): relative error to the reference ", largest_diff / largest_ref);
    CHECK(largest_diff / largest_ref <= 1e-4);
    CHECK(file.metadata().at("config").rfind("T2I TiM:", 0) == 0);

    const auto model = tim::load_t2i<float>(split.model);
    const auto inputs = tim::io::SafetensorsFile::open(split.inputs);
    tim::Tensor<float> library;
    model.forward(library, inputs.load<float>("x"), inputs.load<float>("t"), inputs.load<float>("r"),
                  inputs.load<float>("cap_feats"));
    REQUIRE(library.shape() == written.shape());
    CHECK(std::equal(library.data(), library.data() + library.numel(), written.data()));
  }
}

TEST_CASE("cli inspect: a T2I checkpoint shows its T2I configuration") {
  TempDir dir;
  const auto split = split_t2i_golden(dir, "square");  // D 16, 2 heads, p 2, cap_dim 24, projector.*
  const auto result = run_tim(dir, "inspect " + quote(split.model));
  check_success(result);
  const std::string& text = result.out;
  INFO(text);
  for (const std::string part :
       {"configuration (T2I TiM):\n", "in_channels: 4\n", "hidden: 16\n", "depth: 2\n", "num_heads: 2  (from shapes)\n",
        "patch: 2\n", "caption_dim: 24  (width of the caption features cap_feats)\n", "caption_hidden: 64\n",
        "qk_norm: yes\n", "cross_qk_norm: yes\n", "interval_qkv: yes\n", "new_condition: t-r  (from metadata)\n",
        "model_type: t2i\n"})
    CHECK_MESSAGE(text.find(part) != std::string::npos, "missing: ", part);
  CHECK(text.find("num_classes") == std::string::npos);
  CHECK(text.find("tensors: " + std::to_string(split.tensors) + "\n") != std::string::npos);
  CHECK(text.find("parameters: " + std::to_string(split.parameters) + " (") != std::string::npos);
  CHECK(text.find("ignored: projector.* (" + std::to_string(split.projector_tensors) + " tensors") != std::string::npos);
  const auto model = tim::load_t2i<float>(split.model);
  CHECK(model.parameter_count() == split.parameters);
}

TEST_CASE("cli T2I errors: the wrong condition for the model, bad caption files, bad forward inputs") {
  TempDir dir;
  const auto c = caption_case(dir, "cfg_window");  // B = 2, M = 5, cap_dim 8, 8 x 12
  const std::string out = dir.file("out.safetensors");
  const std::string t2i = "sample --model " + quote(t2i_model) + " --out " + quote(out) + " ";
  const std::string with_noise = t2i + "--noise " + quote(c.noise) + " ";

  const auto captions_file = [&](const std::string& name, const tim::Tensor<float>* features,
                                 const tim::Tensor<float>* null) {
    const std::string path = dir.file(name + ".safetensors");
    write_captions(path, features, null);
    return path;
  };
  const auto three = random_floats({3, 5, 8}, 1);
  const auto narrow = random_floats({2, 5, 6}, 2);
  const auto short_null = random_floats({1, 4, 8}, 3);
  auto with_nan = c.cap_feats.clone();
  with_nan.data()[13] = std::numeric_limits<float>::quiet_NaN();
  const std::string no_null = captions_file("no_null", &c.cap_feats, nullptr);
  const std::string three_captions = captions_file("three", &three, &c.null_cap_feats);
  const std::string narrow_captions = captions_file("narrow", &narrow, nullptr);
  const std::string bad_null = captions_file("bad_null", &c.cap_feats, &short_null);
  const std::string nan_captions = captions_file("nan", &with_nan, &c.null_cap_feats);
  const std::string only_null = captions_file("only_null", nullptr, &c.null_cap_feats);
  const std::string integer_captions = dir.file("integer.safetensors");
  {
    tim::io::SafetensorsWriter writer;
    std::vector<std::int64_t> values(2 * 5 * 8, 1);
    writer.add("cap_feats", tim::DType::I64, tim::Shape{2, 5, 8}, values.data());
    writer.write(integer_captions);
  }

  const std::vector<std::pair<std::string, std::vector<std::string>>> cases{
      {"sample --model " + quote(sampler_model) + " --height 8 --width 8 --captions " + quote(c.captions) + " --out " +
           quote(out),
       {"--captions and --prompt need a text-to-image model", "is a class-conditional (C2I) TiM"}},
      {t2i + "--height 8 --width 8 --labels 1,2", {"is a text-to-image (T2I) TiM", "not from --labels", "--captions"}},
      {t2i + "--height 8 --width 8 --class 1", {"is a text-to-image (T2I) TiM", "not from --class"}},
      {"sample --model " + quote(t2i_model) + " --height 8 --width 8 --grid " + quote(dir.file("g.png")),
       {"is a text-to-image (T2I) TiM", "not from a class --grid"}},
      {t2i + "--captions " + quote(c.captions) + " --labels 1,2", {"choose one of --labels", "--captions"}},
      {t2i + "--captions " + quote(c.captions) + " --grid " + quote(dir.file("g.png")) + " --per-class 2",
       {"--per-class cannot be used with --captions"}},
      {with_noise + "--captions " + quote(no_null) + " --cfg-scale 2.5",
       {"--cfg-scale 2.5 needs the null caption", no_null, "'null_cap_feats' [1, M, cap_dim]"}},
      {with_noise + "--captions " + quote(three_captions), {"--captions gives 3 captions but the --noise tensor has 2"}},
      {with_noise + "--captions " + quote(narrow_captions),
       {"tensor 'cap_feats' has shape [2, 5, 6]; expected [B, M, cap_dim] = [B, M, 8]"}},
      {with_noise + "--captions " + quote(bad_null),
       {"tensor 'null_cap_feats' has shape [1, 4, 8]; expected [1, 5, 8]"}},
      {with_noise + "--captions " + quote(nan_captions), {"tensor 'cap_feats' contains a non-finite value at index 13"}},
      {with_noise + "--captions " + quote(only_null), {"expected a tensor 'cap_feats'", "found: null_cap_feats"}},
      {with_noise + "--captions " + quote(integer_captions), {"'cap_feats' has dtype I64; expected a floating type"}},
      {with_noise + "--captions " + quote(dir.file("missing.safetensors")), {"cannot open safetensors file"}},
      {t2i + "--captions " + quote(c.captions), {"no 'latent_size' or 'image_size'", "pass --height and --width"}},
      {t2i + "--height 8 --width 8 --captions " + quote(c.captions) + " --png-dir " + quote(dir.file("pngs")),
       {"PNG output", "VAE decoder"}},
  };
  for (const auto& [args, parts] : cases) {
    CAPTURE(args);
    check_user_error(run_tim(dir, args), parts);
    CHECK(!fs::exists(out));
  }
  check_user_error(run_tim(dir, t2i + "--height 8 --width 8 --captions " + quote(c.captions) + " --grid " +
                                    quote(c.captions)),
                   {"would overwrite the model, the noise or the captions file"});
  // Without guidance the null caption may be missing.
  check_success(run_tim(dir, with_noise + "--captions " + quote(no_null) + " --steps 1"));

  // tim forward with a T2I model reads cap_feats in place of y.
  const auto split = split_t2i_golden(dir, "square");  // B 3, M 5, cap_dim 24
  const std::string forward_out = dir.file("forward_out.safetensors");
  const auto inputs = tim::io::SafetensorsFile::open(split.inputs);
  const auto write_forward_inputs = [&](const std::string& path, const std::string& condition_name,
                                        const tim::Tensor<float>& condition) {
    tim::io::SafetensorsWriter writer;
    for (const char* name : {"x", "t", "r"}) writer.add(name, inputs.load<float>(name));
    writer.add(condition_name, condition);
    writer.write(path);
    return path;
  };
  auto nan_features = inputs.load<float>("cap_feats").clone();
  nan_features.data()[7] = std::numeric_limits<float>::infinity();
  const std::vector<std::pair<std::string, std::vector<std::string>>> forward_cases{
      {write_forward_inputs(dir.file("y_only.safetensors"), "y", random_floats({3}, 4)),
       {"has no tensor 'cap_feats'", "cap_feats [B,M,cap_dim] F32", ", y)"}},
      {write_forward_inputs(dir.file("narrow_forward.safetensors"), "cap_feats", random_floats({3, 5, 8}, 5)),
       {"tensor 'cap_feats' in", "expected shape [B, M, cap_dim] = [3, M, 24]", "got [3, 5, 8]"}},
      {write_forward_inputs(dir.file("batch_forward.safetensors"), "cap_feats", random_floats({2, 5, 24}, 6)),
       {"expected shape [B, M, cap_dim] = [3, M, 24]", "got [2, 5, 24]"}},
      {write_forward_inputs(dir.file("inf_forward.safetensors"), "cap_feats", nan_features),
       {"input 'cap_feats' contains a non-finite value (inf) at index 7 [0, 0, 7]"}},
  };
  for (const auto& [path, parts] : forward_cases) {
    CAPTURE(path);
    check_user_error(run_tim(dir, forward_args(split.model, path, forward_out)), parts);
    CHECK(!fs::exists(forward_out));
  }
}

TEST_CASE("cli bench: the median of the timed runs, the FLOP count of the network, JSON and text") {
  TempDir dir;
  const std::string c2i = fashion_model(dir);
  const auto result = run_tim(dir, "bench --model " + quote(c2i) + " --batch 3 --height 8 --width 16 --runs 4 "
                                   "--warmup 1 --threads 1 --json");
  check_success(result);
  const auto j = nlohmann::json::parse(result.out);
  const auto times = j.at("times_ms").get<std::vector<double>>();
  REQUIRE(times.size() == 4);
  auto sorted = times;
  std::sort(sorted.begin(), sorted.end());
  CHECK(j.at("median_ms").get<double>() == doctest::Approx(0.5 * (sorted[1] + sorted[2])));
  CHECK(j.at("min_ms").get<double>() == sorted.front());
  CHECK(j.at("max_ms").get<double>() == sorted.back());
  CHECK(sorted.front() > 0);
  // The FLOP count is nn::forward_flops of the loaded configuration (itself checked against the
  // matrix products a forward makes, tests/test_flops.cpp); GFLOP/s is that over the median.
  const auto model = tim::load_c2i<float>(c2i);
  const double flops = tim::nn::forward_flops(model.config, 3, 8, 16);
  CHECK(j.at("gflop").get<double>() == doctest::Approx(flops * 1e-9).epsilon(1e-12));
  CHECK(j.at("gflops").get<double>() ==
        doctest::Approx(flops * 1e-9 / (j.at("median_ms").get<double>() * 1e-3)).epsilon(1e-9));
  CHECK(j.at("batch") == 3);
  CHECK(j.at("height") == 8);
  CHECK(j.at("width") == 16);
  CHECK(j.at("tokens") == 8);  // (8 / 4) x (16 / 4)
  CHECK(j.at("threads") == 1);
  CHECK(j.at("kind") == "c2i");
  CHECK(j.at("parameters") == model.parameter_count());
  // The kernels the run chose, as this process (same flags, same CPU) reports them.
  for (const auto& [part, choice] : tim::cpu_dispatch::kernel_report()) CHECK(j.at("kernels").at(part) == choice);
  if (std::string(TIM_TEST_CPU_BASELINE) != "none" && std::string(TIM_TEST_CPU_BASELINE) != "")
    CHECK(j.at("cpu_baseline") == TIM_TEST_CPU_BASELINE);

  // Text output, the latent size from the metadata (image_size 16x16x1).
  const auto text = run_tim(dir, "bench --model " + quote(c2i) + " --runs 1 --warmup 0 --threads 1");
  check_success(text);
  CHECK(text.out.find("latent 1 x 16 x 16 (16 tokens)") != std::string::npos);
  CHECK(text.out.find("forward: median ") != std::string::npos);
  CHECK(text.out.find(" GFLOP/s") != std::string::npos);

  // A text-to-image model with random caption features of --caption-tokens.
  const std::string t2i = make_model(dir, std::string(TIM_TEST_DATA_DIR) + "/golden_t2i/plain.safetensors", "t2i", {});
  const auto t2i_result = run_tim(dir, "bench --model " + quote(t2i) + " --height 8 --width 8 --caption-tokens 5 "
                                       "--runs 1 --threads 1 --json");
  check_success(t2i_result);
  const auto t2i_json = nlohmann::json::parse(t2i_result.out);
  const auto t2i_model = tim::load_t2i<float>(t2i);
  CHECK(t2i_json.at("kind") == "t2i");
  CHECK(t2i_json.at("caption_tokens") == 5);
  CHECK(t2i_json.at("gflop").get<double>() ==
        doctest::Approx(tim::nn::forward_flops(t2i_model.config, 1, 8, 8, 5) * 1e-9).epsilon(1e-12));

  const std::string bench = "bench --model " + quote(c2i);
  check_user_error(run_tim(dir, bench + " --batch 0"), {"--batch must be at least 1"});
  check_user_error(run_tim(dir, bench + " --runs 0"), {"--runs must be at least 1"});
  check_user_error(run_tim(dir, bench + " --runs 1 --height 6 --width 8"), {"multiples of the model's patch size 4"});
  check_user_error(run_tim(dir, bench + " --device cuda"), {"tim bench measures the CPU", "bench_cuda_network"});
  check_user_error(run_tim(dir, "bench --model " + quote(dir.file("missing.safetensors"))), {"cannot open"});
}
