// What `tim sample` samples: the shipped model's path, labels, caption features and the initial
// noise (sample.hpp, docs/cli.md "Noise" and "Captions").
#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <system_error>
#include <variant>
#include <vector>

#include "sample.hpp"

#ifndef TIM_DEFAULT_MODEL  // the shipped model in the source tree (set by apps/CMakeLists.txt)
#define TIM_DEFAULT_MODEL ""
#endif
#ifndef TIM_INSTALLED_MODEL  // where `cmake --install` puts it
#define TIM_INSTALLED_MODEL ""
#endif

namespace tim_cli {

namespace fs = std::filesystem;

std::string default_model_path() {
  std::vector<std::string> candidates;
  const char* from_environment = std::getenv("TIM_DEFAULT_MODEL");
  if (from_environment != nullptr && *from_environment != '\0') {
    candidates.push_back(from_environment);
  } else {
    for (const char* path : {TIM_INSTALLED_MODEL, TIM_DEFAULT_MODEL})
      if (*path != '\0') candidates.push_back(path);
  }
  std::error_code error;
  for (const auto& path : candidates)
    if (fs::is_regular_file(path, error)) return path;
  std::ostringstream looked;
  for (std::size_t i = 0; i < candidates.size(); ++i) looked << (i ? ", " : "") << candidates[i];
  tim::fail("no --model given and the default model tim-fmnist.safetensors was not found (looked for ",
            candidates.empty() ? std::string("nothing: no location compiled in") : looked.str(),
            (from_environment != nullptr && *from_environment != '\0') ? ", from $TIM_DEFAULT_MODEL" : "",
            "); pass --model PATH.safetensors, or get the shipped Fashion-MNIST model: it belongs at "
            "models/tim-fmnist.safetensors in the tim source tree (`cmake --install` copies it to "
            "<prefix>/share/tim/models/), or train and export one (docs/training.md) and set TIM_DEFAULT_MODEL to "
            "its path");
}

CaptionFeatures read_captions(const std::string& path, std::int64_t caption_dim) {
  const auto file = tim::io::SafetensorsFile::open(path);
  if (!file.contains("cap_feats"))
    tim::fail("--captions '", path, "': expected a tensor 'cap_feats' [B, M, cap_dim] (and 'null_cap_feats' "
              "[1, M, cap_dim] for guidance); found: ", tensor_names(file));
  // A floating tensor, every value finite, as float.
  const auto load = [&](const char* name) {
    const auto& info = file.info(name);
    const auto d = info.dtype;
    tim::check(d == tim::DType::F32 || d == tim::DType::F64 || d == tim::DType::F16 || d == tim::DType::BF16,
               "--captions '", path, "': tensor '", name, "' has dtype ", tim::dtype_name(d),
               "; expected a floating type (F32, F64, F16 or BF16)");
    auto tensor = file.load<float>(name).clone();  // owned: the file closes
    for (std::int64_t i = 0; i < tensor.numel(); ++i)
      tim::check(std::isfinite(tensor.data()[i]), "--captions '", path, "': tensor '", name,
                 "' contains a non-finite value at index ", i);
    return tensor;
  };
  const tim::Shape shape = file.info("cap_feats").shape;
  tim::check(shape.rank() == 3 && shape[0] >= 1 && shape[1] >= 1 && shape[2] == caption_dim, "--captions '", path,
             "': tensor 'cap_feats' has shape ", shape, "; expected [B, M, cap_dim] = [B, M, ", caption_dim,
             "] (the model's cap_dim) with B, M >= 1");
  CaptionFeatures captions;
  captions.cap_feats = load("cap_feats");
  if (file.contains("null_cap_feats")) {
    const tim::Shape null_shape = file.info("null_cap_feats").shape;
    tim::check(null_shape == tim::Shape{1, shape[1], caption_dim}, "--captions '", path,
               "': tensor 'null_cap_feats' has shape ", null_shape, "; expected [1, ", shape[1], ", ", caption_dim,
               "] (one null caption with the M of cap_feats)");
    captions.null_cap_feats = load("null_cap_feats");
  }
  if (file.contains("cap_mask")) {  // tim encode's files: the lengths for per-prompt batching
    const auto mask = file.load<std::int64_t>("cap_mask");
    tim::check(mask.shape() == tim::Shape{shape[0], shape[1]}, "--captions '", path, "': tensor 'cap_mask' has shape ",
               mask.shape(), "; expected [B, M] = [", shape[0], ", ", shape[1], "]");
    try {
      captions.lengths = tim::text::lengths_from_mask(mask);
    } catch (const tim::Error& e) {
      tim::fail("--captions '", path, "': tensor 'cap_mask': ", e.what());
    }
  }
  if (const auto found = file.metadata().find("captions"); found != file.metadata().end()) {
    const auto json = nlohmann::json::parse(found->second, nullptr, /*allow_exceptions=*/false);
    if (json.is_array() && static_cast<std::int64_t>(json.size()) == shape[0] &&
        std::all_of(json.begin(), json.end(), [](const auto& text) { return text.is_string(); }))
      captions.texts = json.template get<std::vector<std::string>>();
  }
  return captions;
}

namespace {

//! "1, 2,3" -> {1, 2, 3}; every entry an integer.
std::vector<std::int64_t> parse_labels(const std::string& text) {
  std::vector<std::int64_t> labels;
  std::size_t start = 0;
  while (start <= text.size()) {
    const std::size_t comma = std::min(text.find(',', start), text.size());
    std::string part = text.substr(start, comma - start);
    part.erase(0, part.find_first_not_of(" \t"));
    part.erase(part.find_last_not_of(" \t") + 1);
    std::int64_t value = 0;
    const auto [end, error] = std::from_chars(part.data(), part.data() + part.size(), value);
    tim::check(!part.empty() && error == std::errc() && end == part.data() + part.size(), "--labels '", text,
               "': '", part, "' is not an integer (expected a comma-separated list such as 1,2,3)");
    labels.push_back(value);
    start = comma + 1;
  }
  return labels;
}

//! The initial noise z (B, C, H, W) of a --noise file: its tensor `z`, or its only tensor.
tim::Tensor<double> read_noise(const std::string& path) {
  const auto file = tim::io::SafetensorsFile::open(path);
  std::string name = "z";
  if (!file.contains(name)) {
    tim::check(file.tensors().size() == 1, "--noise '", path,
               "': expected a tensor 'z' [B, C, H, W] (or a file with a single tensor); found: ", tensor_names(file));
    name = file.tensors().front().name;
  }
  const auto& info = file.info(name);
  tim::check(info.dtype == tim::DType::F32 || info.dtype == tim::DType::F64, "--noise '", path, "': tensor '", name,
             "' has dtype ", tim::dtype_name(info.dtype), "; expected F32 or F64");
  tim::check(info.shape.rank() == 4 && info.shape[0] >= 1, "--noise '", path, "': tensor '", name,
             "' has shape ", info.shape, "; expected [B, C, H, W] with B >= 1");
  auto noise = file.load<double>(name).clone();  // owned: the file closes
  for (std::int64_t i = 0; i < noise.numel(); ++i)
    tim::check(std::isfinite(noise.data()[i]), "--noise '", path, "': tensor '", name,
               "' contains a non-finite value at index ", i);
  return noise;
}

//! The text of --labels-file.
std::string read_labels_file(const std::string& path) {
  std::error_code error;
  tim::check(fs::is_regular_file(path, error), "--labels-file '", path, "': no such file");
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  tim::check(static_cast<bool>(in) || in.eof(), "--labels-file '", path, "': cannot read it");
  return text.str();
}

//! The labels of the run, in run order, with how they were chosen; each checked against the
//! model's classes. `noise_batch`: the --noise file's batch, which --class follows and --labels
//! must match.
std::vector<std::int64_t> choose_labels(const SampleOptions& options, std::int64_t num_classes,
                                        std::optional<std::int64_t> noise_batch, std::string& source) {
  std::vector<std::int64_t> labels;
  const auto first = options.first_index;
  if (!options.grid_path.empty()) {
    for (std::int64_t label = 0; label < num_classes; ++label) labels.insert(labels.end(), options.per_class, label);
    source = "grid: every class, " + std::to_string(options.per_class) + " each";
  } else if (options.num_per_class > 0) {
    for (std::int64_t label = 0; label < num_classes; ++label)
      labels.insert(labels.end(), options.num_per_class, label);
    source = "num-per-class " + std::to_string(options.num_per_class);
  } else if (options.random_labels > 0) {
    for (std::int64_t p = 0; p < options.random_labels; ++p)
      labels.push_back(random_label(options.label_seed, first + static_cast<std::uint64_t>(p), num_classes));
    source = "random, label seed " + std::to_string(options.label_seed);
  } else if (!options.labels_file.empty()) {
    labels = parse_labels_file(read_labels_file(options.labels_file), options.labels_file);
    source = "labels-file " + options.labels_file;
  } else if (given(options.labels_option)) {
    labels = parse_labels(options.labels);
    source = "labels";
  } else {
    labels.assign(static_cast<std::size_t>(noise_batch.value_or(options.num)), options.class_label);
    source = "class " + std::to_string(options.class_label);
  }
  if (noise_batch)
    tim::check(static_cast<std::int64_t>(labels.size()) == *noise_batch, "--labels gives ", labels.size(),
               " labels but the --noise tensor has ", *noise_batch, " samples");
  for (std::size_t b = 0; b < labels.size(); ++b) {
    if (labels[b] >= 0 && labels[b] <= num_classes) continue;
    const std::string range = " is outside [0, " + std::to_string(num_classes) + "] (classes 0.." +
                              std::to_string(num_classes - 1) + ", " + std::to_string(num_classes) +
                              " = unconditional)";
    if (given(options.class_option)) tim::fail("--class ", labels[b], range);
    if (!options.labels_file.empty()) tim::fail("--labels-file '", options.labels_file, "': label ", labels[b],
                                                " (the ", b + 1, "th)", range);
    tim::fail("--labels: label ", labels[b], " at index ", b, range);
  }
  return labels;
}

}  // namespace

std::int64_t random_label(std::uint64_t label_seed, std::uint64_t index, std::int64_t num_classes) {
  tim::check(num_classes >= 1, "random_label: no classes");
  // Lemire's multiply-shift with rejection: exactly uniform over [0, num_classes).
  const auto n = static_cast<std::uint64_t>(num_classes);
  const std::uint32_t threshold = static_cast<std::uint32_t>((std::uint64_t{1} << 32) % n);
  for (std::uint32_t block = 0;; ++block) {
    const auto words = tim::random::stream_block(label_seed, index, random_label_step, block);
    for (const std::uint32_t word : words.v) {
      const std::uint64_t product = static_cast<std::uint64_t>(word) * n;
      if (static_cast<std::uint32_t>(product) >= threshold) return static_cast<std::int64_t>(product >> 32);
    }
  }
}

RunSamples make_run(const SampleOptions& options, const tim::nn::BackboneConfig& c, std::int64_t num_classes,
                    std::optional<std::int64_t> captions) {
  RunSamples run;
  std::optional<std::int64_t> noise_batch;
  if (!options.noise_path.empty()) {
    run.noise = read_noise(options.noise_path);
    const tim::Shape& shape = run.noise->shape();
    tim::check(shape[1] == c.in_channels, "--noise '", options.noise_path, "': shape ", shape, " has ", shape[1],
               " channels; the model has ", c.in_channels);
    tim::check(!given(options.height_option) || options.height == shape[2], "--height ", options.height,
               " disagrees with the --noise shape ", shape);
    tim::check(!given(options.width_option) || options.width == shape[3], "--width ", options.width,
               " disagrees with the --noise shape ", shape);
    tim::check(shape[2] % c.patch == 0 && shape[3] % c.patch == 0, "height ", shape[2], " and width ", shape[3],
               " must be multiples of the model's patch size ", c.patch);
    noise_batch = shape[0];
    run.noise_source = options.noise_path;
  } else {
    run.noise_source = "tim::initial_noise, seed " + std::to_string(options.seed) + ", sample index from the stream";
  }
  const auto first = options.first_index;
  if (captions) {
    tim::check(!noise_batch || *noise_batch == *captions, "--captions gives ", *captions,
               " captions but the --noise tensor has ", noise_batch.value_or(0), " samples");
    for (std::int64_t p = 0; p < *captions; ++p)
      run.samples.push_back({.index = first + static_cast<std::uint64_t>(p), .label = 0, .caption = p});
    run.labels_source = "captions";
    return run;
  }
  const auto labels = choose_labels(options, num_classes, noise_batch, run.labels_source);
  run.shared_indices = !options.grid_path.empty();
  for (std::size_t p = 0; p < labels.size(); ++p) {
    // In a class --grid, column k of every row draws first + k (row K equals --class K --num per-class).
    const std::uint64_t offset = run.shared_indices ? p % static_cast<std::size_t>(options.per_class) : p;
    run.samples.push_back({.index = first + offset, .label = labels[p]});
  }
  return run;
}

}  // namespace tim_cli
