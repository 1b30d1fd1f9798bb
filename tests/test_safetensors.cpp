// Safetensors reader and writer: round trips of every dtype, zero-copy views, conversions, a
// file written by Python's `safetensors`, and one test per malformed input the reader rejects
// (each checks the error message names the problem).
#include <doctest/doctest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include <unistd.h>

#include "tim/io/safetensors.hpp"

using tim::DType;
using tim::Shape;
using tim::Tensor;
using tim::io::SafetensorsFile;
using tim::io::SafetensorsWriter;

namespace {

// A safetensors image from a header text and data bytes, with the header length given
// explicitly (for the length-field tests) or taken from the header.
std::vector<std::uint8_t> make_image(const std::string& header, const std::vector<std::uint8_t>& data,
                                     std::uint64_t header_length) {
  std::vector<std::uint8_t> bytes(8 + header.size() + data.size());
  for (std::size_t i = 0; i < 8; ++i) bytes[i] = static_cast<std::uint8_t>(header_length >> (8 * i));
  std::memcpy(bytes.data() + 8, header.data(), header.size());
  if (!data.empty()) std::memcpy(bytes.data() + 8 + header.size(), data.data(), data.size());
  return bytes;
}
std::vector<std::uint8_t> make_image(const std::string& header, const std::vector<std::uint8_t>& data = {}) {
  return make_image(header, data, header.size());
}

// Parsing `bytes` must throw tim::Error whose message contains `expected`.
void check_rejected(const std::vector<std::uint8_t>& bytes, const std::string& expected) {
  CHECK_THROWS_WITH_AS(SafetensorsFile::from_bytes(bytes, "bad.safetensors"),
                       doctest::Contains(expected.c_str()), tim::Error);
  // every format error names the file
  CHECK_THROWS_WITH_AS(SafetensorsFile::from_bytes(bytes, "bad.safetensors"),
                       doctest::Contains("bad.safetensors"), tim::Error);
}

// One valid 2x2 F32 entry, for the malformed cases that break something else.
const std::vector<std::uint8_t> sixteen_bytes(16, 0);

std::filesystem::path temp_path(const std::string& name) {
  return std::filesystem::temp_directory_path() /
         ("tim_test_safetensors_" + std::to_string(::getpid()) + "_" + name);
}

template <class T>
Tensor<T> filled(Shape shape, auto value_of) {
  auto t = Tensor<T>::empty(std::move(shape));
  for (std::int64_t i = 0; i < t.numel(); ++i) t.data()[i] = value_of(i);
  return t;
}

template <class T>
void check_same_bits(const Tensor<T>& a, const Tensor<T>& b) {
  REQUIRE(a.shape() == b.shape());
  CHECK(std::memcmp(a.data(), b.data(), static_cast<std::size_t>(a.numel()) * sizeof(T)) == 0);
}

}  // namespace

TEST_CASE("safetensors round trip of every dtype, through memory and through a file") {
  const auto f64 = filled<double>({2, 3}, [](std::int64_t i) { return 1.0 / (i + 1) - 0.25; });
  const auto f32 = filled<float>({3, 1, 2}, [](std::int64_t i) { return static_cast<float>(i) * -1.5f; });
  const auto f16 = filled<tim::float16>({5}, [](std::int64_t i) { return tim::float16(0.25f * i - 1); });
  const auto bf16 = filled<tim::bfloat16>({2, 2}, [](std::int64_t i) { return tim::bfloat16(3.0f * i + 0.5f); });
  const auto i64 = filled<std::int64_t>({3}, [](std::int64_t i) {
    return i == 0 ? std::numeric_limits<std::int64_t>::min() : i * 1'000'000'000'000LL;
  });
  const auto i32 = filled<std::int32_t>({2, 2}, [](std::int64_t i) { return static_cast<std::int32_t>(-i * 70000); });
  const auto i16 = filled<std::int16_t>({3}, [](std::int64_t i) { return static_cast<std::int16_t>(i * -12000); });
  const auto i8 = filled<std::int8_t>({4}, [](std::int64_t i) { return static_cast<std::int8_t>(i * 40 - 128); });
  const auto u8 = filled<std::uint8_t>({1, 3}, [](std::int64_t i) { return static_cast<std::uint8_t>(255 - i); });
  const std::uint8_t flags[] = {1, 0, 0, 1, 1};
  const float scalar_value = 42.0f;

  SafetensorsWriter writer;
  writer.add("f64", f64);
  writer.add("f32", f32);
  writer.add("f16", f16);
  writer.add("bf16", bf16);
  writer.add("i64", i64);
  writer.add("i32", i32);
  writer.add("i16", i16);
  writer.add("i8", i8);
  writer.add("u8", u8);
  writer.add("flags", DType::BOOL, Shape{5}, flags);
  writer.add("scalar", DType::F32, Shape{}, &scalar_value);
  writer.add("none", DType::F64, Shape{0, 7}, nullptr);
  const std::vector<std::uint8_t> image = writer.to_bytes();

  const auto path = temp_path("round_trip.safetensors");
  writer.write(path.string());
  for (const SafetensorsFile& file :
       {SafetensorsFile::from_bytes(image), SafetensorsFile::open(path.string())}) {
    CAPTURE(file.path());
    check_same_bits(file.load<double>("f64"), f64);
    check_same_bits(file.load<float>("f32"), f32);
    check_same_bits(file.load<tim::float16>("f16"), f16);
    check_same_bits(file.load<tim::bfloat16>("bf16"), bf16);
    check_same_bits(file.load<std::int64_t>("i64"), i64);
    check_same_bits(file.load<std::int32_t>("i32"), i32);
    check_same_bits(file.load<std::int16_t>("i16"), i16);
    check_same_bits(file.load<std::int8_t>("i8"), i8);
    check_same_bits(file.load<std::uint8_t>("u8"), u8);
    CHECK(file.info("flags").dtype == DType::BOOL);
    const auto loaded_flags = file.load<std::int64_t>("flags");
    CHECK(std::vector<std::int64_t>(loaded_flags.data(), loaded_flags.data() + 5) ==
          std::vector<std::int64_t>{1, 0, 0, 1, 1});
    CHECK(file.load<float>("scalar").shape().rank() == 0);
    CHECK(file.load<float>("scalar").data()[0] == 42.0f);
    CHECK(file.load<double>("none").shape() == Shape{0, 7});
    CHECK(file.bytes("none").empty());
    CHECK(file.tensors().size() == 12);
    CHECK(file.metadata().empty());
  }
  std::filesystem::remove(path);

  // the layout: data section starts at a multiple of 8, tensors contiguous in insertion order
  std::uint64_t header_length = 0;
  for (int i = 7; i >= 0; --i) header_length = (header_length << 8) | image[static_cast<std::size_t>(i)];
  CHECK((8 + header_length) % 8 == 0);
  const auto file = SafetensorsFile::from_bytes(image);
  const std::vector<std::string> insertion_order = {"f64", "f32", "f16", "bf16", "i64", "i32",
                                                    "i16", "i8", "u8", "flags", "scalar", "none"};
  std::size_t offset = 0;
  for (std::size_t i = 0; i < insertion_order.size(); ++i) {
    CAPTURE(insertion_order[i]);
    CHECK(file.tensors()[i].name == insertion_order[i]);
    CHECK(file.tensors()[i].begin == offset);
    offset = file.tensors()[i].end;
  }
  CHECK(8 + header_length + offset == image.size());
}

TEST_CASE("safetensors metadata round trip") {
  SafetensorsWriter writer;
  writer.set_metadata("format", "pt");
  writer.set_metadata("config", R"({"depth": 28, "note": "quotes \" and \\ survive"})");
  writer.set_metadata("unicode", "\xc3\xa9t\xc3\xa9");
  writer.set_metadata("format", "tim");  // replaces
  const float x = 1.0f;
  writer.add("x", DType::F32, Shape{1}, &x);
  const auto file = SafetensorsFile::from_bytes(writer.to_bytes());
  CHECK(file.metadata().size() == 3);
  CHECK(file.metadata().at("format") == "tim");
  CHECK(file.metadata().at("config") == R"({"depth": 28, "note": "quotes \" and \\ survive"})");
  CHECK(file.metadata().at("unicode") == "\xc3\xa9t\xc3\xa9");
  CHECK_FALSE(file.contains("__metadata__"));
}

TEST_CASE("safetensors load is a zero-copy view of the mapping when dtype and alignment match") {
  SafetensorsWriter writer;
  const auto weights = filled<float>({4, 4}, [](std::int64_t i) { return static_cast<float>(i) + 0.5f; });
  const std::uint8_t two[] = {7, 9};
  writer.add("weights", weights);
  writer.add("two", DType::U8, Shape{2}, two);
  writer.add("shifted", weights);  // begins at data offset 66: not 4-byte aligned
  const auto path = temp_path("zero_copy.safetensors");
  writer.write(path.string());

  Tensor<float> view, copy, shifted;
  {
    const auto file = SafetensorsFile::open(path.string());
    const auto raw = file.bytes("weights");
    view = file.load<float>("weights");
    CHECK(reinterpret_cast<const std::byte*>(view.data()) == raw.data());  // inside the mapping
    CHECK(view.owner() != nullptr);

    copy = file.load<float>("weights").clone();
    CHECK(copy.data() != view.data());

    shifted = file.load<float>("shifted");
    const auto shifted_raw = file.bytes("shifted");
    CHECK(reinterpret_cast<std::uintptr_t>(shifted_raw.data()) % alignof(float) != 0);
    CHECK(reinterpret_cast<const std::byte*>(shifted.data()) != shifted_raw.data());  // converted copy

    const auto as_double = file.load<double>("weights");  // other dtype: an owning conversion
    CHECK(reinterpret_cast<const std::byte*>(as_double.data()) != raw.data());
    CHECK(as_double.data()[5] == 5.5);
  }
  std::filesystem::remove(path);  // the mapping survives both the object and the directory entry
  check_same_bits(view, weights);
  check_same_bits(shifted, weights);
  check_same_bits(copy, weights);
}

TEST_CASE("safetensors conversion of BF16 and F16 to float and double against known values") {
  const std::uint16_t bf16_bits[] = {0x3f80, 0xc049, 0x7f80, 0x0001, 0x4049};
  const std::uint16_t f16_bits[] = {0x3c00, 0xc000, 0x0001, 0x7bff, 0x7c00, 0x3555};
  SafetensorsWriter writer;
  writer.add("bf16", DType::BF16, Shape{5}, bf16_bits);
  writer.add("f16", DType::F16, Shape{6}, f16_bits);
  const auto file = SafetensorsFile::from_bytes(writer.to_bytes());

  const auto b = file.load<float>("bf16");
  CHECK(b.data()[0] == 1.0f);
  CHECK(b.data()[1] == -3.140625f);
  CHECK(b.data()[2] == std::numeric_limits<float>::infinity());
  CHECK(b.data()[3] == std::ldexp(1.0f, -133));  // smallest BF16 subnormal
  CHECK(b.data()[4] == 3.140625f);

  const auto h = file.load<double>("f16");
  CHECK(h.data()[0] == 1.0);
  CHECK(h.data()[1] == -2.0);
  CHECK(h.data()[2] == std::ldexp(1.0, -24));  // smallest F16 subnormal
  CHECK(h.data()[3] == 65504.0);
  CHECK(std::isinf(h.data()[4]));
  CHECK(h.data()[5] == 0.333251953125);

  // float <-> float in the other direction: BF16 file values as F16, F16 as BF16
  const auto h_as_bf16 = file.load<tim::bfloat16>("f16");
  CHECK(static_cast<float>(h_as_bf16.data()[3]) == 65536.0f);  // 65504 rounds to 2^16 in BF16
}

TEST_CASE("safetensors reads a file written by Python's safetensors library") {
  // made by tools/reference/make_python_written.py; the values are asserted exactly
  const auto file = SafetensorsFile::open(TIM_TEST_DATA_DIR "/python_written.safetensors");
  CHECK(file.metadata().at("format") == "pt");
  CHECK(file.metadata().at("source") == "tools/reference/make_python_written.py");
  CHECK(file.tensors().size() == 10);

  const auto f32 = file.load<float>("f32", {2, 3});
  CHECK(std::vector<float>(f32.data(), f32.data() + 6) == std::vector<float>{-1, -0.5, 0, 0.5, 1, 1.5});

  const auto f64 = file.load<double>("f64", {3});
  CHECK(f64.data()[0] == 1.0 / 3.0);
  CHECK(f64.data()[1] == -2.5);
  CHECK(f64.data()[2] == 1e300);

  const auto f16 = file.load<float>("f16", {2, 2});
  CHECK(std::vector<float>(f16.data(), f16.data() + 4) ==
        std::vector<float>{1.0f, -2.0f, 0.0999755859375f, 65504.0f});
  const auto f16_raw = file.load<tim::float16>("f16");
  CHECK(f16_raw.data()[2].bits == 0x2e66);

  const auto bf16 = file.load<float>("bf16", {4});
  CHECK(bf16.data()[0] == 1.0f);
  CHECK(bf16.data()[1] == -3.140625f);
  CHECK(bf16.data()[2] == std::bit_cast<float>(0x7e960000u));
  CHECK(bf16.data()[3] == 0.0f);

  const auto i64 = file.load<std::int64_t>("i64", {2, 2});
  CHECK(i64.data()[0] == std::numeric_limits<std::int64_t>::min());
  CHECK(i64.data()[1] == -1);
  CHECK(i64.data()[2] == 0);
  CHECK(i64.data()[3] == std::numeric_limits<std::int64_t>::max());

  const auto i32 = file.load<std::int32_t>("i32", {3});
  CHECK(std::vector<std::int32_t>(i32.data(), i32.data() + 3) == std::vector<std::int32_t>{-7, 0, 2147483647});
  const auto i32_wide = file.load<std::int64_t>("i32");  // integer widening
  CHECK(i32_wide.data()[0] == -7);

  const auto u8 = file.load<std::uint8_t>("u8", {4});
  CHECK(std::vector<std::uint8_t>(u8.data(), u8.data() + 4) == std::vector<std::uint8_t>{0, 1, 128, 255});

  CHECK(file.info("flags").dtype == DType::BOOL);
  const auto flags = file.load<std::uint8_t>("flags", {3});
  CHECK(std::vector<std::uint8_t>(flags.data(), flags.data() + 3) == std::vector<std::uint8_t>{1, 0, 1});

  CHECK(file.load<float>("empty", {0, 4}).numel() == 0);

  const auto noise = file.load<float>("noise", {2, 2});
  const std::uint32_t noise_bits[] = {0xbedd9b9d, 0x3df5f3b3, 0xbc8d463b, 0xbe150028};
  for (int i = 0; i < 4; ++i) CHECK(std::bit_cast<std::uint32_t>(noise.data()[i]) == noise_bits[i]);
}

TEST_CASE("safetensors zero-size tensors are allowed anywhere in the layout") {
  const auto file = SafetensorsFile::from_bytes(make_image(
      R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},)"
      R"("b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
      R"("c":{"dtype":"I64","shape":[3,0,2],"data_offsets":[4,4]}})",
      std::vector<std::uint8_t>(4, 0)));
  CHECK(file.tensors().size() == 3);
  CHECK(file.load<float>("a").numel() == 0);
  CHECK(file.load<std::int64_t>("c").shape() == Shape{3, 0, 2});
  // a file holding nothing at all is valid too
  CHECK(SafetensorsFile::from_bytes(make_image("{}")).tensors().empty());
}

// ---- user errors after a successful open ----

TEST_CASE("safetensors info of a missing tensor names it and the file") {
  const float x = 1;
  SafetensorsWriter writer;
  writer.add("x", DType::F32, Shape{1}, &x);
  const auto file = SafetensorsFile::from_bytes(writer.to_bytes(), "model.safetensors");
  CHECK_FALSE(file.contains("y"));
  CHECK_THROWS_WITH_AS(file.info("y"), "tensor 'y' not found in model.safetensors", tim::Error);
  CHECK_THROWS_WITH_AS(file.load<float>("y"), "tensor 'y' not found in model.safetensors", tim::Error);
}

TEST_CASE("safetensors load refuses float <-> integer conversion and checks shapes") {
  const float x[6] = {};
  const std::int32_t n[2] = {};
  SafetensorsWriter writer;
  writer.add("x", DType::F32, Shape{2, 3}, x);
  writer.add("n", DType::I32, Shape{2}, n);
  const auto file = SafetensorsFile::from_bytes(writer.to_bytes());
  CHECK_THROWS_WITH_AS(file.load<std::int64_t>("x"), doctest::Contains("tensor 'x'"), tim::Error);
  CHECK_THROWS_WITH_AS(file.load<std::int64_t>("x"), doctest::Contains("F32 as I64"), tim::Error);
  CHECK_THROWS_WITH_AS(file.load<float>("n"), doctest::Contains("I32 as F32"), tim::Error);
  CHECK_THROWS_WITH_AS(file.load<float>("x", {2, 2}),
                       doctest::Contains("tensor 'x': expected shape [2, 2], got [2, 3]"), tim::Error);
  CHECK(file.load<float>("x", {2, 3}).numel() == 6);
}

TEST_CASE("safetensors open reports missing, empty and non-regular files with the OS error") {
  const auto missing = temp_path("does_not_exist.safetensors");
  CHECK_THROWS_WITH_AS(SafetensorsFile::open(missing.string()),
                       doctest::Contains(("'" + missing.string() + "': No such file or directory").c_str()),
                       tim::Error);
  const auto empty = temp_path("empty.safetensors");
  std::ofstream(empty).close();
  CHECK_THROWS_WITH_AS(SafetensorsFile::open(empty.string()), doctest::Contains("is empty"), tim::Error);
  std::filesystem::remove(empty);
  CHECK_THROWS_WITH_AS(SafetensorsFile::open(std::filesystem::temp_directory_path().string()),
                       doctest::Contains("not a regular file"), tim::Error);
}

TEST_CASE("safetensors writer rejects duplicate and reserved names and reports write errors") {
  const float x = 0;
  SafetensorsWriter writer;
  writer.add("x", DType::F32, Shape{1}, &x);
  CHECK_THROWS_WITH_AS(writer.add("x", DType::F32, Shape{1}, &x), doctest::Contains("duplicate tensor name 'x'"),
                       tim::Error);
  CHECK_THROWS_WITH_AS(writer.add("__metadata__", DType::F32, Shape{1}, &x), doctest::Contains("reserved"),
                       tim::Error);
  CHECK_THROWS_WITH_AS(writer.add("null", DType::F32, Shape{1}, nullptr), doctest::Contains("data is null"),
                       tim::Error);
  const auto bad = temp_path("no_such_dir") / "out.safetensors";
  CHECK_THROWS_WITH_AS(writer.write(bad.string()), doctest::Contains("No such file or directory"), tim::Error);
  CHECK(SafetensorsFile::from_bytes(writer.to_bytes()).tensors().size() == 1);  // unchanged
}

// ---- malformed files: one case per validation rule ----

TEST_CASE("safetensors rejects a file shorter than 8 bytes") {
  check_rejected({}, "too short");
  check_rejected({1, 0, 0, 0, 0, 0, 0}, "7 bytes long, too short");
}

TEST_CASE("safetensors rejects a header length beyond the end of the file") {
  check_rejected(make_image("{}", {}, 3), "header length 3 is larger than the 2 bytes");
  check_rejected(make_image("", {}, std::numeric_limits<std::uint64_t>::max()), "header length");
}

TEST_CASE("safetensors rejects a header length above 100,000,000 bytes") {
  check_rejected(make_image("{}", {}, 100'000'001), "exceeds the limit of 100000000 bytes");
}

TEST_CASE("safetensors rejects a header that is not valid JSON") {
  check_rejected(make_image(R"({"a": )"), "header is not valid JSON");
  check_rejected(make_image(""), "header is not valid JSON");
  check_rejected(make_image("{\"\xff\": 1}"), "header is not valid JSON");  // invalid UTF-8
}

TEST_CASE("safetensors rejects a header that is not a JSON object") {
  check_rejected(make_image("[1, 2]"), "header is not a JSON object (it is array)");
  check_rejected(make_image("\"text\""), "header is not a JSON object (it is string)");
}

TEST_CASE("safetensors rejects an entry that is not an object") {
  check_rejected(make_image(R"({"w": [1, 2]})"), "tensor 'w': entry must be an object, got array");
}

TEST_CASE("safetensors rejects a missing or wrongly typed dtype") {
  check_rejected(make_image(R"({"w":{"shape":[4],"data_offsets":[0,16]}})", sixteen_bytes),
                 "tensor 'w': missing \"dtype\"");
  check_rejected(make_image(R"({"w":{"dtype":4,"shape":[4],"data_offsets":[0,16]}})", sixteen_bytes),
                 "tensor 'w': \"dtype\" must be a string");
}

TEST_CASE("safetensors rejects an unknown dtype") {
  check_rejected(make_image(R"({"w":{"dtype":"F8_E4M3","shape":[16],"data_offsets":[0,16]}})", sixteen_bytes),
                 "tensor 'w': unknown dtype 'F8_E4M3'");
}

TEST_CASE("safetensors rejects a missing or wrongly typed shape") {
  check_rejected(make_image(R"({"w":{"dtype":"F32","data_offsets":[0,16]}})", sixteen_bytes),
                 "tensor 'w': missing \"shape\"");
  check_rejected(make_image(R"({"w":{"dtype":"F32","shape":4,"data_offsets":[0,16]}})", sixteen_bytes),
                 "tensor 'w': \"shape\" must be an array");
}

TEST_CASE("safetensors rejects negative shape entries") {
  check_rejected(make_image(R"({"w":{"dtype":"F32","shape":[-4],"data_offsets":[0,16]}})", sixteen_bytes),
                 "shape entry -4 is negative");
}

TEST_CASE("safetensors rejects shape entries that are not integers") {
  check_rejected(make_image(R"({"w":{"dtype":"F32","shape":[4.0],"data_offsets":[0,16]}})", sixteen_bytes),
                 "shape entry 4.0 is not an integer");
  check_rejected(make_image(R"({"w":{"dtype":"F32","shape":["4"],"data_offsets":[0,16]}})", sixteen_bytes),
                 "is not an integer");
  check_rejected(make_image(R"({"w":{"dtype":"F32","shape":[9223372036854775808],"data_offsets":[0,16]}})",
                            sixteen_bytes),
                 "is too large");
}

TEST_CASE("safetensors rejects a missing or wrongly typed data_offsets") {
  check_rejected(make_image(R"({"w":{"dtype":"F32","shape":[4]}})", sixteen_bytes),
                 "tensor 'w': missing \"data_offsets\"");
  check_rejected(make_image(R"({"w":{"dtype":"F32","shape":[4],"data_offsets":"0-16"}})", sixteen_bytes),
                 "\"data_offsets\" must be two non-negative integers");
}

TEST_CASE("safetensors rejects data_offsets that are not two non-negative integers") {
  check_rejected(make_image(R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[16]}})", sixteen_bytes),
                 "must be two non-negative integers, got [16]");
  check_rejected(make_image(R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16,32]}})", sixteen_bytes),
                 "must be two non-negative integers");
  check_rejected(make_image(R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[-16,0]}})", sixteen_bytes),
                 "must be two non-negative integers, got [-16,0]");
  check_rejected(make_image(R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16.0]}})", sixteen_bytes),
                 "must be two non-negative integers");
}

TEST_CASE("safetensors rejects data_offsets with begin > end") {
  check_rejected(make_image(R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[16,0]}})", sixteen_bytes),
                 "data_offsets [16, 0] has begin > end");
}

TEST_CASE("safetensors rejects data_offsets past the end of the data section") {
  check_rejected(make_image(R"({"w":{"dtype":"F32","shape":[8],"data_offsets":[0,32]}})", sixteen_bytes),
                 "extend past the end of the data section (16 bytes)");
}

TEST_CASE("safetensors rejects a byte size that differs from end - begin") {
  check_rejected(make_image(R"({"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,16]}})", sixteen_bytes),
                 "shape [2, 3] of F32 needs 24 bytes but data_offsets [0, 16] span 16");
}

TEST_CASE("safetensors rejects shapes whose element or byte count overflows 64 bits") {
  check_rejected(make_image(R"({"w":{"dtype":"U8","shape":[4294967296,4294967296],"data_offsets":[0,16]}})",
                            sixteen_bytes),
                 "has more elements than a 64-bit count holds");
  // 2^62 elements fit in int64, but 2^62 * 8 bytes do not fit in 64 bits
  check_rejected(make_image(R"({"w":{"dtype":"F64","shape":[4611686018427387904],"data_offsets":[0,16]}})",
                            sixteen_bytes),
                 "byte size of shape [4611686018427387904] overflows 64 bits");
  // 2^62 * 4 wraps to 0 in 64 bits: must not pass as an empty tensor
  check_rejected(make_image(R"({"w":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,0]}})"),
                 "overflows 64 bits");
}

TEST_CASE("safetensors rejects duplicate tensor names") {
  check_rejected(make_image(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                            R"("w":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})",
                            sixteen_bytes),
                 "duplicate tensor name 'w'");
  check_rejected(make_image(R"({"w":{"dtype":"F32","dtype":"I32","shape":[4],"data_offsets":[0,16]}})",
                            sixteen_bytes),
                 "duplicate key 'dtype'");
  check_rejected(make_image(R"({"__metadata__":{"a":"1","a":"2"}})"), "duplicate key 'a'");
}

TEST_CASE("safetensors rejects offsets that do not start at 0") {
  check_rejected(make_image(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})", sixteen_bytes),
                 "gap in the data section: bytes [0, 8) belong to no tensor");
}

TEST_CASE("safetensors rejects a gap between tensors") {
  check_rejected(make_image(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                            R"("b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})",
                            sixteen_bytes),
                 "gap in the data section: bytes [4, 8) belong to no tensor (next is 'b')");
}

TEST_CASE("safetensors rejects overlapping tensors") {
  check_rejected(make_image(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,12]},)"
                            R"("b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})",
                            sixteen_bytes),
                 "tensor 'b' (bytes [8, 16)) overlaps tensor 'a'");
  check_rejected(make_image(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},)"
                            R"("b":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})",
                            sixteen_bytes),
                 "overlaps tensor 'a'");
}

TEST_CASE("safetensors rejects trailing bytes after the last tensor") {
  check_rejected(make_image(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", sixteen_bytes),
                 "trailing bytes: the tensors end at data offset 8 but the data section is 16 bytes long");
  check_rejected(make_image("{}", {0}), "trailing bytes");
}

TEST_CASE("safetensors rejects __metadata__ that is not an object of strings") {
  check_rejected(make_image(R"({"__metadata__":["a"]})"), "__metadata__ must be an object of strings, got array");
  check_rejected(make_image(R"({"__metadata__":{"epoch":3}})"),
                 "__metadata__ value of 'epoch' must be a string, got number");
}

TEST_CASE("safetensors rejects absurdly nested headers early") {
  check_rejected(make_image(std::string(100, '[') + std::string(100, ']')), "header nests deeper than 64 levels");
  std::string nested_objects = R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1],"extra":)";
  for (int i = 0; i < 70; ++i) nested_objects += R"({"x":)";
  nested_objects += "0" + std::string(70, '}') + "}}";
  check_rejected(make_image(nested_objects, {0}), "nests deeper");
  // an unknown extra field of modest depth is ignored
  CHECK(SafetensorsFile::from_bytes(make_image(R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1],)"
                                               R"("extra":{"x":[{"y":1}]}}})",
                                               {0}))
            .contains("w"));
}

TEST_CASE("safetensors rejects shapes of more than 64 dimensions") {
  std::string shape = "[1";
  for (int i = 1; i < 65; ++i) shape += ",1";
  check_rejected(make_image(R"({"w":{"dtype":"U8","shape":)" + shape + R"(],"data_offsets":[0,1]}})", {0}),
                 "shape has 65 dimensions, more than the 64 supported");
  const std::string rank64 = R"({"w":{"dtype":"U8","shape":)" + shape.substr(0, shape.size() - 2) +
                             R"(],"data_offsets":[0,1]}})";
  CHECK(SafetensorsFile::from_bytes(make_image(rank64, {0})).info("w").shape.rank() == 64);
}

TEST_CASE("safetensors parses a header of many tensors in linear time") {
  // Regression: a duplicate-key check through nlohmann's parser callback rescanned the whole
  // top-level object at each closing brace, so 50,000 entries took billions of steps.
  std::string header = "{";
  for (int i = 0; i < 50'000; ++i)
    header += "\"t" + std::to_string(i) + R"(":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},)";
  header.back() = '}';
  const auto file = SafetensorsFile::from_bytes(make_image(header));
  CHECK(file.tensors().size() == 50'000);
  CHECK(file.contains("t49999"));
}
