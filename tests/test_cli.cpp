// The `tim` program run as a subprocess: golden cases split into a model file and an inputs
// file must reproduce the reference output, and every kind of bad input must end with exit
// code 1 and a message that says what is wrong (never a crash).
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
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "tim/tim.hpp"

namespace {

namespace fs = std::filesystem;

// A fresh directory under the system temp dir, removed with everything in it at scope exit.
struct TempDir {
  fs::path path;
  TempDir() {
    static std::atomic<int> counter{0};
    path = fs::temp_directory_path() /
           ("tim_cli_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ignored;
    fs::remove_all(path, ignored);
  }
  std::string file(const std::string& name) const { return (path / name).string(); }
};

std::string quote(const std::string& text) {
  std::string quoted = "'";
  for (char ch : text) quoted += ch == '\'' ? std::string("'\\''") : std::string(1, ch);
  return quoted + "'";
}

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

void write_text(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

struct RunResult {
  bool exited = false;  // false: killed by a signal (a crash)
  int code = -1;
  std::string out, err;
};

// Runs `tim ARGS` with stdout and stderr captured into files of `dir`.
RunResult run_tim(const TempDir& dir, const std::string& args) {
  static std::atomic<int> counter{0};
  const int id = counter++;
  const std::string out = dir.file("stdout_" + std::to_string(id) + ".txt");
  const std::string err = dir.file("stderr_" + std::to_string(id) + ".txt");
  const std::string command = quote(TIM_EXECUTABLE) + " " + args + " > " + quote(out) + " 2> " + quote(err);
  const int status = std::system(command.c_str());
  RunResult result;
  result.exited = status != -1 && WIFEXITED(status);
  result.code = result.exited ? WEXITSTATUS(status) : -1;
  result.out = read_text(out);
  result.err = read_text(err);
  return result;
}

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

// The program failed the way a user error should: exit code 1 and a message on stderr.
void check_user_error(const RunResult& result, const std::vector<std::string>& expected_parts) {
  INFO("stderr: ", result.err);
  INFO("stdout: ", result.out);
  REQUIRE(result.exited);
  CHECK(result.code == 1);
  CHECK(result.err.rfind("tim: error: ", 0) == 0);
  for (const auto& part : expected_parts) CHECK_MESSAGE(result.err.find(part) != std::string::npos, "missing: ", part);
}

void check_success(const RunResult& result) {
  INFO("stderr: ", result.err);
  INFO("stdout: ", result.out);
  REQUIRE(result.exited);
  REQUIRE(result.code == 0);
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

TEST_CASE("cli inspect: a file that is not a C2I checkpoint") {
  TempDir dir;
  const auto split = split_golden(dir, "square");
  check_user_error(run_tim(dir, "inspect " + quote(split.inputs)),
                   {split.inputs, "not a class-conditional TiM checkpoint", "x_embedder.proj.weight"});
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
                   {bin, "PyTorch pickle", "convert it to .safetensors (see docs/usage.md)"});
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
