// tim::text::Tokenizer (SentencePiece's C++ library) against Python sentencepiece on a small
// Gemma-like model trained for the test (tools/reference/make_tokenizer_golden.py,
// tests/data/tokenizer/): the pieces' ids, then the released framing (BOS, truncation, right
// padding with the pad id, the mask), and the refusal of invalid UTF-8.
#include <doctest/doctest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "tim/text/tokenizer.hpp"

namespace {

std::string data_path(const std::string& name) { return std::string(TIM_TEST_DATA_DIR) + "/tokenizer/" + name; }

nlohmann::json golden() {
  std::ifstream in(data_path("golden.json"));
  REQUIRE(in.good());
  return nlohmann::json::parse(in);
}

}  // namespace

TEST_CASE("tokenizer: Gemma's special ids from the model") {
  auto tokenizer = tim::text::Tokenizer::open(data_path("gemma_like.model"));
  const auto g = golden();
  CHECK(tokenizer.pad_id() == 0);
  CHECK(tokenizer.eos_id() == 1);
  CHECK(tokenizer.bos_id() == 2);
  CHECK(tokenizer.vocab_size() == g["vocab_size"].get<std::int64_t>());
}

TEST_CASE("tokenizer: every golden prompt as Python sentencepiece encodes and frames it") {
  auto tokenizer = tim::text::Tokenizer::open(data_path("gemma_like.model"));
  const auto g = golden();
  REQUIRE(g["cases"].size() >= 20);
  int truncated = 0, empty = 0;
  for (const auto& c : g["cases"]) {
    const auto prompt = c["prompt"].get<std::string>();
    const auto max_length = c["max_length"].get<std::int64_t>();
    CAPTURE(prompt);
    CAPTURE(max_length);
    CHECK(tokenizer.encode(prompt) == c["pieces"].get<std::vector<std::int64_t>>());
    const auto framed = tokenizer.frame(prompt, max_length);
    CHECK(framed.ids == c["ids"].get<std::vector<std::int64_t>>());
    CHECK(framed.mask == c["mask"].get<std::vector<std::int64_t>>());
    CHECK(framed.length == c["length"].get<std::int64_t>());
    CHECK(framed.truncated == c["truncated"].get<bool>());
    truncated += framed.truncated;
    empty += prompt.empty();
  }
  // The cases cover truncation (the long prompt at both lengths) and the empty prompt.
  CHECK(truncated >= 2);
  CHECK(empty >= 1);
}

TEST_CASE("tokenizer: batch framing, the empty prompt, max_length 1") {
  auto tokenizer = tim::text::Tokenizer::open(data_path("gemma_like.model"));
  tim::Tensor<std::int64_t> ids, mask;
  tokenizer.frame_batch({"a red fox", ""}, 8, ids, mask);
  REQUIRE(ids.shape() == tim::Shape{2, 8});
  const auto alone = tokenizer.frame("a red fox", 8);
  CHECK(std::equal(alone.ids.begin(), alone.ids.end(), ids.data()));
  CHECK(ids.data()[8] == 2);  // "" is BOS then padding
  for (int i = 9; i < 16; ++i) CHECK(ids.data()[i] == 0);
  CHECK(mask.data()[8] == 1);
  CHECK(mask.data()[9] == 0);
  const auto one = tokenizer.frame("a red fox", 1);
  CHECK(one.ids == std::vector<std::int64_t>{2});
  CHECK(one.truncated);
  CHECK_THROWS_WITH_AS(tokenizer.frame("x", 0), doctest::Contains("max_length must be at least 1"), tim::Error);
}

TEST_CASE("tokenizer: invalid UTF-8 is a tim::Error with the byte offset") {
  auto tokenizer = tim::text::Tokenizer::open(data_path("gemma_like.model"));
  const std::string bad[] = {"ok \xff", "ok \xc3", "ok \xc0\xaf", "ok \xed\xa0\x80", "ok \xf4\x90\x80\x80",
                             "ok \xe2\x82"};
  for (const auto& text : bad) {
    CAPTURE(text);
    CHECK_THROWS_WITH_AS(tokenizer.encode(text), doctest::Contains("not valid UTF-8 (invalid byte sequence at byte 3"),
                         tim::Error);
  }
  CHECK(tim::text::first_invalid_utf8("caf\xc3\xa9 \xf0\x9f\xa6\x8a") == std::string_view::npos);
}

TEST_CASE("tokenizer: a missing or broken model file is a tim::Error naming it") {
  CHECK_THROWS_WITH_AS(tim::text::Tokenizer::open("/nonexistent/tokenizer.model"),
                       doctest::Contains("tokenizer '/nonexistent/tokenizer.model': cannot load"), tim::Error);
  CHECK_THROWS_WITH_AS(tim::text::Tokenizer::open(data_path("golden.json")), doctest::Contains("cannot load"),
                       tim::Error);
}
