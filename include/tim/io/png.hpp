// PNG files for sampled images: write an 8-bit grayscale or RGB image with text chunks (the
// generation parameters), and read one back (tests, tools). A thin layer over libpng; the image
// type (PngImage, PngText) and the pixel mappings live in tim/io/image.hpp.
//
// Needs libpng, a compiled library: a target including this header must link it (CMake:
// `find_package(PNG REQUIRED)` and `target_link_libraries(app PRIVATE PNG::PNG)`). tim/tim.hpp
// does not include this header, so plain library users never need libpng.
#pragma once

#include <png.h>

#include <cerrno>
#include <csetjmp>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "tim/core/error.hpp"
#include "tim/io/image.hpp"

namespace tim::io {

namespace detail {

//! libpng reports errors through a callback that must not return: it records the message here
//! and long-jumps back to the setjmp of the function that started the read or write.
struct PngErrorState {
  char message[512] = {};
};

inline void png_error_callback(png_structp png, png_const_charp message) {
  auto* state = static_cast<PngErrorState*>(png_get_error_ptr(png));
  std::snprintf(state->message, sizeof state->message, "%s", message ? message : "unknown libpng error");
  png_longjmp(png, 1);
}

inline void png_warning_callback(png_structp, png_const_charp) {}  // warnings are not errors here

inline bool is_ascii(const std::string& text) {
  for (unsigned char ch : text)
    if (ch >= 0x80) return false;
  return true;
}

//! libpng's text chunks of `text`: tEXt for ASCII texts, iTXt (UTF-8) for the others; checks
//! every key (1 to 79 printable ASCII characters, no leading or trailing space) and that no text
//! holds a NUL byte, failing with `what` first. The chunks point into this object's copies (libpng
//! wants mutable char*), so it is neither copied nor moved.
class PngTextChunks {
 public:
  PngTextChunks(const std::vector<PngText>& text, const std::string& what) {
    for (const auto& entry : text) {
      bool printable = !entry.key.empty() && entry.key.size() <= 79 && entry.key.front() != ' ' &&
                       entry.key.back() != ' ';
      for (unsigned char ch : entry.key) printable = printable && ch >= 32 && ch <= 126;
      check(printable, what, ": text key '", entry.key,
            "' must be 1 to 79 printable ASCII characters without leading or trailing spaces");
      check(entry.text.find('\0') == std::string::npos, what, ": the text of key '", entry.key,
            "' contains a NUL byte");
      keys_.push_back(entry.key);
      texts_.push_back(entry.text);
    }
    chunks_.resize(text.size());
    for (std::size_t i = 0; i < text.size(); ++i) {
      std::memset(&chunks_[i], 0, sizeof chunks_[i]);
      const bool ascii = is_ascii(texts_[i]);
      chunks_[i].compression = ascii ? PNG_TEXT_COMPRESSION_NONE : PNG_ITXT_COMPRESSION_NONE;
      chunks_[i].key = keys_[i].data();
      chunks_[i].text = texts_[i].data();
      (ascii ? chunks_[i].text_length : chunks_[i].itxt_length) = texts_[i].size();
    }
  }
  PngTextChunks(const PngTextChunks&) = delete;
  PngTextChunks& operator=(const PngTextChunks&) = delete;

  png_textp data() const { return const_cast<png_textp>(chunks_.data()); }
  int size() const { return static_cast<int>(chunks_.size()); }

 private:
  std::vector<std::string> keys_, texts_;
  std::vector<png_text> chunks_;
};

// The libpng part of write_png. Everything it touches after setjmp lives in the caller's frame,
// so a long jump leaves no C++ object half-built.
inline bool png_write_stream(std::FILE* file, const PngImage& image, png_bytepp rows, png_textp texts,
                             int text_count, PngErrorState& error) {
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &error, png_error_callback, png_warning_callback);
  if (png == nullptr) {
    std::snprintf(error.message, sizeof error.message, "libpng could not allocate its write state");
    return false;
  }
  png_infop info = png_create_info_struct(png);
  if (info == nullptr) {
    png_destroy_write_struct(&png, nullptr);
    std::snprintf(error.message, sizeof error.message, "libpng could not allocate its info state");
    return false;
  }
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    return false;
  }
  png_init_io(png, file);
  png_set_IHDR(png, info, static_cast<png_uint_32>(image.width), static_cast<png_uint_32>(image.height), 8,
               image.channels == 1 ? PNG_COLOR_TYPE_GRAY : PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
               PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  if (text_count > 0) png_set_text(png, info, texts, text_count);  // before the image data
  png_write_info(png, info);
  png_write_image(png, rows);
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
  return true;
}

// The libpng part of read_png; fills `image` (in the caller's frame), `rows` is scratch.
inline bool png_read_stream(std::FILE* file, PngImage& image, std::vector<png_bytep>& rows, PngErrorState& error) {
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &error, png_error_callback, png_warning_callback);
  if (png == nullptr) {
    std::snprintf(error.message, sizeof error.message, "libpng could not allocate its read state");
    return false;
  }
  png_infop info = png_create_info_struct(png);
  if (info == nullptr) {
    png_destroy_read_struct(&png, nullptr, nullptr);
    std::snprintf(error.message, sizeof error.message, "libpng could not allocate its info state");
    return false;
  }
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_read_struct(&png, &info, nullptr);
    return false;
  }
  png_init_io(png, file);
  png_read_info(png, info);
  // Whatever the file holds, hand back 8-bit gray or RGB.
  const int color_type = png_get_color_type(png, info);
  if (color_type == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
  if (color_type == PNG_COLOR_TYPE_GRAY && png_get_bit_depth(png, info) < 8) png_set_expand_gray_1_2_4_to_8(png);
  if (png_get_bit_depth(png, info) == 16) png_set_strip_16(png);
  if (color_type & PNG_COLOR_MASK_ALPHA) png_set_strip_alpha(png);
  png_set_interlace_handling(png);
  png_read_update_info(png, info);
  image.width = static_cast<int>(png_get_image_width(png, info));
  image.height = static_cast<int>(png_get_image_height(png, info));
  image.channels = png_get_channels(png, info);
  const std::size_t row_bytes = png_get_rowbytes(png, info);
  image.pixels.assign(row_bytes * static_cast<std::size_t>(image.height), 0);
  rows.resize(static_cast<std::size_t>(image.height));
  for (int y = 0; y < image.height; ++y) rows[static_cast<std::size_t>(y)] = image.pixels.data() + row_bytes * y;
  png_read_image(png, rows.data());
  png_read_end(png, info);  // text chunks after the image data land in `info` too
  png_textp texts = nullptr;
  const int text_count = png_get_text(png, info, &texts, nullptr);
  for (int i = 0; i < text_count; ++i) {
    const bool international = texts[i].compression == PNG_ITXT_COMPRESSION_NONE ||
                               texts[i].compression == PNG_ITXT_COMPRESSION_zTXt;
    const std::size_t length = international ? texts[i].itxt_length : texts[i].text_length;
    image.text.push_back({texts[i].key, std::string(texts[i].text ? texts[i].text : "", length)});
  }
  png_destroy_read_struct(&png, &info, nullptr);
  return true;
}

}  // namespace detail

//! Writes `image` (8-bit gray when channels is 1, RGB when 3) to `path` as a PNG, with `text`
//! as text chunks. The file is written under a temporary name and renamed, so a failure leaves
//! no partial file. Throws tim::Error naming the path on invalid images or keys and I/O errors.
//! Example:
//!   tim::io::PngImage image{.width = 32, .height = 32, .channels = 1, .pixels = gray_bytes};
//!   tim::io::write_png("sample.png", image, {{"parameters", "steps: 4, cfg_scale: 1"}});
inline void write_png(const std::string& path, const PngImage& image, const std::vector<PngText>& text = {}) {
  check(image.channels == 1 || image.channels == 3, "cannot write PNG '", path, "': ", image.channels,
        " channels per pixel (expected 1 for gray or 3 for RGB)");
  check(image.width >= 1 && image.height >= 1 && image.width <= 1'000'000 && image.height <= 1'000'000,
        "cannot write PNG '", path, "': size ", image.width, " x ", image.height, " is not in 1..1000000");
  const std::size_t row_bytes = static_cast<std::size_t>(image.width) * static_cast<std::size_t>(image.channels);
  check(image.pixels.size() == row_bytes * static_cast<std::size_t>(image.height), "cannot write PNG '", path,
        "': ", image.pixels.size(), " bytes of pixels for ", image.width, " x ", image.height, " x ", image.channels);

  // Every buffer libpng reads, built before the write starts.
  std::vector<png_bytep> rows(static_cast<std::size_t>(image.height));
  for (int y = 0; y < image.height; ++y)
    rows[static_cast<std::size_t>(y)] = const_cast<png_bytep>(image.pixels.data() + row_bytes * y);
  const detail::PngTextChunks chunks(text, "cannot write PNG '" + path + "'");

  const std::string temporary = path + ".tmp";
  std::FILE* file = std::fopen(temporary.c_str(), "wb");
  check(file != nullptr, "cannot write PNG '", path, "': cannot create '", temporary, "': ", std::strerror(errno));
  detail::PngErrorState error;
  const bool written =
      detail::png_write_stream(file, image, rows.data(), chunks.data(), chunks.size(), error);
  const bool flushed = std::fflush(file) == 0;
  const int flush_errno = errno;
  const bool closed = std::fclose(file) == 0;
  std::error_code ignored;
  if (!written || !flushed || !closed) {
    std::filesystem::remove(temporary, ignored);
    if (!written) fail("cannot write PNG '", path, "': ", error.message);
    fail("cannot write PNG '", path, "': ", std::strerror(flush_errno));
  }
  std::error_code renamed;
  std::filesystem::rename(temporary, path, renamed);
  if (renamed) {
    std::filesystem::remove(temporary, ignored);
    fail("cannot write PNG '", path, "': ", renamed.message());
  }
}

//! Reads a PNG as 8-bit gray (channels 1) or RGB (channels 3): palettes expand to RGB, 16-bit
//! samples are cut to 8, alpha is dropped. Text chunks (tEXt, zTXt, iTXt) come back in `text`.
//! Throws tim::Error naming the path when the file is missing or not a valid PNG.
inline PngImage read_png(const std::string& path) {
  std::FILE* file = std::fopen(path.c_str(), "rb");
  check(file != nullptr, "cannot open PNG '", path, "': ", std::strerror(errno));
  unsigned char signature[8] = {};
  const bool is_png = std::fread(signature, 1, sizeof signature, file) == sizeof signature &&
                      png_sig_cmp(signature, 0, sizeof signature) == 0;
  if (!is_png) {
    std::fclose(file);
    fail("cannot read PNG '", path, "': not a PNG file (bad signature)");
  }
  std::rewind(file);
  PngImage image;
  std::vector<png_bytep> rows;
  detail::PngErrorState error;
  const bool read = detail::png_read_stream(file, image, rows, error);
  std::fclose(file);
  check(read, "cannot read PNG '", path, "': ", error.message);
  return image;
}

}  // namespace tim::io
