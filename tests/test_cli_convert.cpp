// `tim convert IN OUT --to TYPE` run as a subprocess on the shipped model (float16 weights): the
// output's dtypes, values (rounded to nearest even, computed again here; q8_0 within half a scale
// step), metadata and layout, that `tim inspect` and `tim sample` accept it (q8_0 too: sampled with
// its int8 kernels, and with --weights float bit for bit as its float32 conversion), and the errors for bad
// input (never a half-written OUT, never the input overwritten).
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <algorithm>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "cli_run.hpp"
#include "tim/io/q8_0.hpp"
#include "tim/tim.hpp"

namespace {

using namespace tim_test;

const std::string shipped = TIM_SHIPPED_MODEL;

// bfloat16 rounding of a float to nearest, ties to even, decided in double (finite values only).
std::uint16_t nearest_even_bfloat16(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  const std::uint32_t low = u & 0xffff0000u;
  const std::uint32_t high = low + 0x10000u;
  auto value = [](std::uint32_t bits) {
    float v;
    std::memcpy(&v, &bits, 4);
    return static_cast<double>(v);
  };
  const double below = std::abs(static_cast<double>(f) - value(low)), above = std::abs(value(high) - static_cast<double>(f));
  if (below < above) return static_cast<std::uint16_t>(low >> 16);
  if (above < below) return static_cast<std::uint16_t>(high >> 16);
  return static_cast<std::uint16_t>(((low >> 16) & 1u) ? high >> 16 : low >> 16);
}

// The shipped file's values as floats (it stores float16).
std::vector<float> values(const tim::io::SafetensorsFile& file, const std::string& name) {
  const auto t = file.load<float>(name);
  return {t.data(), t.data() + t.numel()};
}

std::vector<std::uint16_t> raw16(const tim::io::SafetensorsFile& file, const std::string& name) {
  const auto bytes = file.bytes(name);
  std::vector<std::uint16_t> out(bytes.size() / 2);
  std::memcpy(out.data(), bytes.data(), bytes.size());
  return out;
}

void check_metadata_kept(const tim::io::SafetensorsFile& in, const tim::io::SafetensorsFile& out, const std::string& to) {
  for (const auto& [key, value] : in.metadata()) {
    INFO("metadata key ", key);
    REQUIRE(out.metadata().count(key) == 1);
    CHECK(out.metadata().at(key) == value);
  }
  CHECK(out.metadata().at("tim.converted_to") == to);
  CHECK(out.metadata().at("tim.converted_by").rfind("tim convert ", 0) == 0);
}

// The matrices a q8_0 conversion of the shipped model quantises, by the documented rule.
std::set<std::string> expected_q8_0(const tim::io::SafetensorsFile& in) {
  std::set<std::string> names;
  for (const auto& t : in.tensors()) {
    const bool weight = t.name.size() > 7 && t.name.compare(t.name.size() - 7, 7, ".weight") == 0;
    if (weight && t.shape.rank() == 2 && t.shape[1] >= 32 && t.name.find("embedding_table") == std::string::npos)
      names.insert(t.name);
  }
  return names;
}

std::string sample_args(const std::string& model, const std::string& out) {
  return "sample --model " + quote(model) + " --class 1 --num 2 --steps 2 --seed 3 --out " + quote(out);
}

}  // namespace

TEST_CASE("cli convert: the shipped model to bfloat16, float16 and float32: rounded to nearest even, loads, samples") {
  TempDir dir;
  const auto in = tim::io::SafetensorsFile::open(shipped);
  const std::string reference_sample = dir.file("reference_sample.safetensors");
  // --weights float: the shipped file is float16, which is otherwise multiplied as stored (panels
  // widened per call) while a float32 file goes straight to sgemm, a different summation order.
  // Widened on load, every float copy of the same values samples the same bits.
  check_success(run_tim(dir, sample_args(shipped, reference_sample) + " --weights float"));
  const auto inspect_in = run_tim(dir, "inspect " + quote(shipped));
  check_success(inspect_in);
  const std::string parameters_line = inspect_in.out.substr(inspect_in.out.find("\nparameters: "));
  for (const std::string to : {"bfloat16", "float16", "float32"}) {
    INFO("--to ", to);
    const std::string out_path = dir.file(to + ".safetensors");
    const auto result = run_tim(dir, "convert " + quote(shipped) + " " + quote(out_path) + " --to " + to);
    check_success(result);
    CHECK(result.out.find("wrote " + out_path) != std::string::npos);
    const auto out = tim::io::SafetensorsFile::open(out_path);
    check_metadata_kept(in, out, to);
    REQUIRE(out.tensors().size() == in.tensors().size());
    const tim::DType want = to == "bfloat16" ? tim::DType::BF16 : to == "float16" ? tim::DType::F16 : tim::DType::F32;
    int mismatches = 0;
    for (const auto& t : in.tensors()) {
      const auto& o = out.info(t.name);
      CHECK(o.dtype == want);
      CHECK(o.shape == t.shape);
      const auto source = values(in, t.name);
      if (to == "bfloat16") {
        const auto stored = raw16(out, t.name);
        for (std::size_t i = 0; i < source.size(); ++i) mismatches += stored[i] != nearest_even_bfloat16(source[i]);
      } else if (to == "float16") {
        mismatches += raw16(out, t.name) != raw16(in, t.name);  // the shipped file is float16 already
      } else {
        const auto stored = values(out, t.name);  // F32: a zero-copy view of the stored floats
        for (std::size_t i = 0; i < source.size(); ++i) mismatches += stored[i] != source[i];
      }
    }
    CHECK(mismatches == 0);
    const auto inspected = run_tim(dir, "inspect " + quote(out_path));
    check_success(inspected);
    CHECK(inspected.out.find("configuration (C2I TiM)") != std::string::npos);
    CHECK(inspected.out.substr(inspected.out.find("\nparameters: ")) == parameters_line);
    const std::string sample = dir.file("sample_" + to + ".safetensors");
    check_success(run_tim(dir, sample_args(out_path, sample) + " --weights float"));
    const auto a = tim::io::SafetensorsFile::open(sample), b = tim::io::SafetensorsFile::open(reference_sample);
    const auto x = values(a, "latents"), y = values(b, "latents");
    REQUIRE(x.size() == y.size());
    if (to != "bfloat16") {
      CHECK(x == y);  // the same float weights once loaded: the same samples, bit for bit
    } else {
      for (const float v : x) CHECK(std::isfinite(v));
    }
  }
}

TEST_CASE("cli convert: the shipped model to q8_0: layout, values within d/2, the rest unchanged, back to float32") {
  TempDir dir;
  const auto in = tim::io::SafetensorsFile::open(shipped);
  const std::string q8 = dir.file("q8.safetensors");
  const auto result = run_tim(dir, "convert " + quote(shipped) + " " + quote(q8) + " --to q8_0");
  check_success(result);
  const auto out = tim::io::SafetensorsFile::open(q8);
  check_metadata_kept(in, out, "q8_0");
  CHECK(out.metadata().at("tim.quantization") == "q8_0");
  CHECK(out.metadata().at("tim.q8_0.block_size") == "32");
  const std::set<std::string> expected = expected_q8_0(in);
  REQUIRE(expected.size() > 20);
  CHECK(expected.count("blocks.0.mlp.fc2.weight") == 1);  // K = 682: a partial last block
  const auto listed = nlohmann::json::parse(out.metadata().at("tim.q8_0.tensors")).get<std::vector<std::string>>();
  CHECK(std::set<std::string>(listed.begin(), listed.end()) == expected);
  const auto layout = tim::io::read_q8_0_layout(out);
  CHECK(layout.tensors.size() == expected.size());
  CHECK(result.out.find("quantised to q8_0: " + std::to_string(expected.size()) + " matrices") != std::string::npos);

  int over = 0, other_changed = 0;
  for (const auto& t : in.tensors()) {
    INFO("tensor ", t.name);
    const auto& o = out.info(t.name);
    CHECK(o.shape == t.shape);
    if (!expected.count(t.name)) {
      CHECK(o.dtype == t.dtype);
      other_changed += raw16(out, t.name) != raw16(in, t.name);
      CHECK(!out.contains(t.name + ".q8_0_scale"));
      continue;
    }
    CHECK(o.dtype == tim::DType::I8);
    const std::int64_t N = t.shape[0], K = t.shape[1], nb = (K + 31) / 32;
    const auto& s = out.info(t.name + ".q8_0_scale");
    CHECK(s.dtype == tim::DType::F16);
    CHECK(s.shape == tim::Shape{N, nb});
    const auto source = values(in, t.name);
    const auto qbytes = out.bytes(t.name);
    const auto scales = raw16(out, t.name + ".q8_0_scale");
    for (std::int64_t n = 0; n < N; ++n)
      for (std::int64_t k = 0; k < K; ++k) {
        const double d = tim::float16::to_float(scales[static_cast<std::size_t>(n * nb + k / 32)]);
        const auto q = static_cast<std::int8_t>(qbytes[static_cast<std::size_t>(n * K + k)]);
        over += !(std::abs(q * d - source[static_cast<std::size_t>(n * K + k)]) <= d / 2) || q == -128;
      }
  }
  CHECK(over == 0);
  CHECK(other_changed == 0);
  CHECK(std::filesystem::file_size(q8) < std::filesystem::file_size(shipped) * 6 / 10);

  // tim inspect: the configuration and parameter count of the float file, and the q8_0 layers.
  const auto inspect_in = run_tim(dir, "inspect " + quote(shipped));
  check_success(inspect_in);
  const auto inspected = run_tim(dir, "inspect " + quote(q8));
  check_success(inspected);
  CHECK(inspected.out.find("q8_0: " + std::to_string(expected.size()) + " matrices") != std::string::npos);
  CHECK(inspected.out.find("held as q8_0: ") != std::string::npos);
  CHECK(inspected.out.find(" blocks.*.attn.qkv (") != std::string::npos);
  CHECK(inspected.out.find("I8: " + std::to_string(expected.size()) + " tensors") != std::string::npos);
  CHECK(inspected.out.find("configuration (C2I TiM)") != std::string::npos);
  const auto config_of = [](const std::string& text) {
    const auto begin = text.find("configuration (C2I TiM)");
    return text.substr(begin, text.find("\nignored: ") - begin);
  };
  CHECK(config_of(inspected.out) == config_of(inspect_in.out));  // configuration and parameter count
  const auto inspected_float = run_tim(dir, "inspect " + quote(q8) + " --weights float");
  check_success(inspected_float);
  CHECK(inspected_float.out.find("held as float32 (dequantised): ") != std::string::npos);

  // Back to float32: the quantised matrices as q d exactly, the rest widened exactly, no q8_0 keys.
  const std::string back_path = dir.file("back.safetensors");
  check_success(run_tim(dir, "convert " + quote(q8) + " " + quote(back_path) + " --to float32"));
  const auto back = tim::io::SafetensorsFile::open(back_path);
  CHECK(back.metadata().count("tim.quantization") == 0);
  CHECK(back.tensors().size() == in.tensors().size());
  int wrong = 0;
  for (const auto& t : in.tensors()) {
    CHECK(back.info(t.name).dtype == tim::DType::F32);
    const auto v = values(back, t.name);
    if (!expected.count(t.name)) {
      wrong += v != values(in, t.name);
      continue;
    }
    const std::int64_t K = t.shape[1], nb = (K + 31) / 32;
    const auto qbytes = out.bytes(t.name);
    const auto scales = raw16(out, t.name + ".q8_0_scale");
    for (std::size_t i = 0; i < v.size(); ++i) {
      const auto q = static_cast<std::int8_t>(qbytes[i]);
      const std::int64_t n = static_cast<std::int64_t>(i) / K, k = static_cast<std::int64_t>(i) % K;
      wrong += static_cast<double>(v[i]) != q * static_cast<double>(tim::float16::to_float(scales[static_cast<std::size_t>(n * nb + k / 32)]));
    }
  }
  CHECK(wrong == 0);

  // tim sample: --weights float dequantises on load, the same float weights as the float32
  // conversion: the same samples bit for bit. The q8_0 weights as stored (int8 products, activations
  // quantised too): a different computation of a nearby network, finite, of the same shape (how near
  // after 2 steps is measured, not bounded here; one forward is bounded in test_q8_0_network.cpp).
  const std::string s_back = dir.file("s_back.safetensors"), s_float = dir.file("s_float.safetensors");
  const std::string s_q8 = dir.file("s_q8.safetensors"), s_shipped = dir.file("s_shipped.safetensors");
  check_success(run_tim(dir, sample_args(back_path, s_back)));
  check_success(run_tim(dir, sample_args(q8, s_float) + " --weights float"));
  check_success(run_tim(dir, sample_args(q8, s_q8)));
  check_success(run_tim(dir, sample_args(shipped, s_shipped)));
  const auto latents = [](const std::string& path) { return values(tim::io::SafetensorsFile::open(path), "latents"); };
  const auto back_latents = latents(s_back), float_latents = latents(s_float), q8_latents = latents(s_q8);
  const auto shipped_latents = latents(s_shipped);
  CHECK(float_latents == back_latents);
  REQUIRE(q8_latents.size() == back_latents.size());
  double diff = 0, scale = 0, diff_shipped = 0;
  for (std::size_t i = 0; i < q8_latents.size(); ++i) {
    CHECK(std::isfinite(q8_latents[i]));
    diff = std::max(diff, std::abs(static_cast<double>(q8_latents[i]) - back_latents[i]));
    diff_shipped = std::max(diff_shipped, std::abs(static_cast<double>(q8_latents[i]) - shipped_latents[i]));
    scale = std::max(scale, std::abs(static_cast<double>(back_latents[i])));
  }
  MESSAGE("tim sample, q8_0 weights: max |difference| / max |sample| ", diff / scale, " from the dequantised float network, ",
          diff_shipped / scale, " from the shipped float16 one");
  CHECK(diff > 0);  // the q8_0 kernels ran, not the float GEMM
}

TEST_CASE("cli convert: bad input is a clear error, OUT is never half-written and IN never overwritten") {
  TempDir dir;
  const std::string out = dir.file("out.safetensors");
  check_user_error(run_tim(dir, "convert " + quote(dir.file("missing.safetensors")) + " " + quote(out) + " --to bfloat16"),
                   {"cannot open safetensors file", "missing.safetensors"});
  check_user_error(run_tim(dir, "convert " + quote(shipped) + " " + quote(out) + " --to int4"),
                   {"--to: expected bfloat16, float16, q8_0 or float32, got \"int4\""});
  CHECK(!std::filesystem::exists(out));

  // The input itself, by the same path and through another name.
  const std::string copy = dir.file("copy.safetensors");
  std::filesystem::copy_file(shipped, copy);
  const std::string before = read_text(copy);
  check_user_error(run_tim(dir, "convert " + quote(copy) + " " + quote(copy) + " --to bfloat16"), {"never overwrites its input"});
  std::filesystem::create_directories(dir.file("sub"));
  check_user_error(run_tim(dir, "convert " + quote(copy) + " " + quote(dir.file("sub/../copy.safetensors")) + " --to q8_0"),
                   {"never overwrites its input"});
  CHECK(read_text(copy) == before);

  // PyTorch checkpoints: by extension, and by content under a .safetensors name.
  const std::string bin = dir.file("t2i_model.bin");
  write_text(bin, std::string("PK\x03\x04", 4) + std::string(64, '\0'));
  check_user_error(run_tim(dir, "convert " + quote(bin) + " " + quote(out) + " --to bfloat16"),
                   {"PyTorch", "tools/convert_t2i_checkpoint.py"});
  const std::string zip = dir.file("zip.safetensors");
  write_text(zip, std::string("PK\x03\x04", 4) + std::string(64, '\0'));
  check_user_error(run_tim(dir, "convert " + quote(zip) + " " + quote(out) + " --to bfloat16"),
                   {"PyTorch checkpoint", "tools/convert_t2i_checkpoint.py"});

  // A value float16 cannot hold: an error naming the tensor; an existing OUT is left as it was.
  const std::string big = dir.file("big.safetensors");
  {
    tim::io::SafetensorsWriter writer;
    const std::vector<float> v{1.0f, 1e6f, 2.0f};
    writer.add("layer.weight", tim::DType::F32, tim::Shape{3}, v.data());
    writer.write(big);
  }
  write_text(out, "previous contents");
  check_user_error(run_tim(dir, "convert " + quote(big) + " " + quote(out) + " --to float16"),
                   {"tensor 'layer.weight'", "beyond float16's range"});
  CHECK(read_text(out) == "previous contents");
  for (const auto& entry : std::filesystem::directory_iterator(dir.path))
    CHECK_MESSAGE(entry.path().string().find(".tmp-") == std::string::npos, "left behind: ", entry.path().string());
  // ... and replaced whole when the conversion succeeds.
  check_success(run_tim(dir, "convert " + quote(big) + " " + quote(out) + " --to bfloat16"));
  CHECK(tim::io::SafetensorsFile::open(out).info("layer.weight").dtype == tim::DType::BF16);

  check_user_error(run_tim(dir, "convert " + quote(shipped) + " " + quote(dir.file("no/such/dir/out.safetensors")) + " --to q8_0"),
                   {"cannot create safetensors file"});
}
