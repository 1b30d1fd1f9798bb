// The PNG writer of tim/io/png.hpp: an image and its text chunks written, then read back with
// libpng's own API (not through tim's reader), pixels and text compared exactly; tim's reader
// on the same files; and the errors, which must name the file.
#include <doctest/doctest.h>
#include <png.h>
#include <unistd.h>

#include <csetjmp>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "tim/io/png.hpp"

namespace {

namespace fs = std::filesystem;

fs::path temp_path(const std::string& name) {
  return fs::temp_directory_path() / ("tim_png_test_" + std::to_string(::getpid()) + "_" + name);
}

// An image whose every pixel differs from its neighbours: value (7 x + 13 y + 29 c) mod 256.
tim::io::PngImage pattern(int width, int height, int channels) {
  tim::io::PngImage image{width, height, channels, {}, {}};
  for (int y = 0; y < height; ++y)
    for (int x = 0; x < width; ++x)
      for (int c = 0; c < channels; ++c) image.pixels.push_back(static_cast<std::uint8_t>((7 * x + 13 * y + 29 * c) % 256));
  return image;
}

// What plain libpng reads from `path`: header fields, rows and every text chunk.
struct LibpngRead {
  png_uint_32 width = 0, height = 0;
  int bit_depth = 0, color_type = 0;
  std::vector<std::uint8_t> pixels;
  std::vector<std::pair<std::string, std::string>> text;
  std::vector<int> compression;  // of each text chunk
};

bool libpng_read(const std::string& path, LibpngRead& result) {
  std::FILE* file = std::fopen(path.c_str(), "rb");
  if (file == nullptr) return false;
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png_create_info_struct(png);
  std::vector<png_bytep> rows;
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_read_struct(&png, &info, nullptr);
    std::fclose(file);
    return false;
  }
  png_init_io(png, file);
  png_read_info(png, info);
  result.width = png_get_image_width(png, info);
  result.height = png_get_image_height(png, info);
  result.bit_depth = png_get_bit_depth(png, info);
  result.color_type = png_get_color_type(png, info);
  const std::size_t row_bytes = png_get_rowbytes(png, info);
  result.pixels.assign(row_bytes * result.height, 0);
  rows.resize(result.height);
  for (png_uint_32 y = 0; y < result.height; ++y) rows[y] = result.pixels.data() + row_bytes * y;
  png_read_image(png, rows.data());
  png_read_end(png, info);
  png_textp texts = nullptr;
  const int count = png_get_text(png, info, &texts, nullptr);
  for (int i = 0; i < count; ++i) {
    const std::size_t length = texts[i].compression > 0 ? texts[i].itxt_length : texts[i].text_length;
    result.text.emplace_back(texts[i].key, std::string(texts[i].text, length));
    result.compression.push_back(texts[i].compression);
  }
  png_destroy_read_struct(&png, &info, nullptr);
  std::fclose(file);
  return true;
}

}  // namespace

TEST_CASE("png: a gray image with a text chunk reads back exactly through libpng") {
  const std::string path = temp_path("gray.png").string();
  const auto image = pattern(7, 5, 1);
  const std::string parameters = "model: m.safetensors\nsteps: 4\ncfg_scale: 2.5\n";
  tim::io::write_png(path, image, {{"parameters", parameters}, {"Software", "tim"}});
  CHECK(!fs::exists(path + ".tmp"));

  LibpngRead read;
  REQUIRE(libpng_read(path, read));
  CHECK(read.width == 7);
  CHECK(read.height == 5);
  CHECK(read.bit_depth == 8);
  CHECK(read.color_type == PNG_COLOR_TYPE_GRAY);
  CHECK(read.pixels == image.pixels);
  REQUIRE(read.text.size() == 2);
  CHECK(read.text[0].first == "parameters");
  CHECK(read.text[0].second == parameters);
  CHECK(read.compression[0] == PNG_TEXT_COMPRESSION_NONE);  // a tEXt chunk
  CHECK(read.text[1] == std::pair<std::string, std::string>{"Software", "tim"});

  const auto back = tim::io::read_png(path);  // tim's reader agrees
  CHECK(back.width == 7);
  CHECK(back.height == 5);
  CHECK(back.channels == 1);
  CHECK(back.pixels == image.pixels);
  REQUIRE(back.find_text("parameters") != nullptr);
  CHECK(*back.find_text("parameters") == parameters);
  CHECK(back.find_text("missing") == nullptr);
  fs::remove(path);
}

TEST_CASE("png: RGB pixels keep their channel order, non-ASCII text goes to iTXt") {
  const std::string path = temp_path("rgb.png").string();
  const auto image = pattern(3, 4, 3);
  const std::string utf8 = "mod\xC3\xA8le: caf\xC3\xA9.safetensors";
  tim::io::write_png(path, image, {{"parameters", utf8}});
  LibpngRead read;
  REQUIRE(libpng_read(path, read));
  CHECK(read.color_type == PNG_COLOR_TYPE_RGB);
  CHECK(read.pixels == image.pixels);
  REQUIRE(read.text.size() == 1);
  CHECK(read.text[0].second == utf8);
  CHECK(read.compression[0] == PNG_ITXT_COMPRESSION_NONE);
  CHECK(*tim::io::read_png(path).find_text("parameters") == utf8);
  fs::remove(path);
}

TEST_CASE("png: errors name the file and leave nothing behind") {
  const auto image = pattern(4, 4, 1);
  const std::string nowhere = temp_path("no_such_folder/out.png").string();
  CHECK_THROWS_WITH_AS(tim::io::write_png(nowhere, image), doctest::Contains(nowhere.c_str()), tim::Error);

  const std::string path = temp_path("bad.png").string();
  auto two_channels = pattern(4, 4, 2);
  CHECK_THROWS_WITH_AS(tim::io::write_png(path, two_channels), doctest::Contains("2 channels per pixel"), tim::Error);
  auto short_pixels = image;
  short_pixels.pixels.pop_back();
  CHECK_THROWS_WITH_AS(tim::io::write_png(path, short_pixels), doctest::Contains("15 bytes of pixels"), tim::Error);
  CHECK_THROWS_WITH_AS(tim::io::write_png(path, image, {{"", "x"}}), doctest::Contains("text key"), tim::Error);
  CHECK_THROWS_WITH_AS(tim::io::write_png(path, image, {{std::string(80, 'k'), "x"}}), doctest::Contains("1 to 79"),
                       tim::Error);
  CHECK_THROWS_WITH_AS(tim::io::write_png(path, image, {{"key", std::string("a\0b", 3)}}), doctest::Contains("NUL"),
                       tim::Error);
  CHECK(!fs::exists(path));
  CHECK(!fs::exists(path + ".tmp"));

  // Reading: a missing file, a file that is not a PNG, a truncated PNG.
  CHECK_THROWS_WITH_AS(tim::io::read_png(path), doctest::Contains(path.c_str()), tim::Error);
  { std::ofstream(path, std::ios::binary) << "not a png at all"; }
  CHECK_THROWS_WITH_AS(tim::io::read_png(path), doctest::Contains("not a PNG file"), tim::Error);
  const auto big = pattern(64, 64, 3);
  tim::io::write_png(path, big);
  fs::resize_file(path, fs::file_size(path) / 2);
  CHECK_THROWS_WITH_AS(tim::io::read_png(path), doctest::Contains(path.c_str()), tim::Error);
  fs::remove(path);
}
