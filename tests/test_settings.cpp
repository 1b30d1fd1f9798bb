// Settings resolution (tim/sampler/settings.hpp): for every setting the option wins over the
// checkpoint's metadata, which wins over the default; each value reports where it came from;
// every bad metadata value is rejected with its key named, and bad options with the option named.
#include <doctest/doctest.h>

#include <limits>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "golden_source.hpp"
#include "tim/sampler/settings.hpp"

namespace {

using Metadata = std::map<std::string, std::string>;
using tim::SettingSource;

using tim_test::error_of;

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

void check_error(const std::string& message, const std::vector<std::string>& parts) {
  INFO("message: ", message);
  REQUIRE(message != "<no error>");
  for (const auto& part : parts) CHECK_MESSAGE(contains(message, part), "missing: ", part);
}

std::string resolve_error(const tim::SampleRequest& request, const Metadata& metadata) {
  return error_of([&] { tim::resolve_sample_settings(request, metadata); });
}

template <class T>
void check_setting(const tim::Setting<T>& setting, const T& value, SettingSource source, const std::string& origin) {
  CHECK(setting.value == value);
  CHECK(setting.source == source);
  CHECK(setting.origin == origin);
}

// Every settable value of a metadata-tuned checkpoint.
const Metadata tuned{{"sample_steps", "3"},          {"sample_cfg_scale", "2.5"},   {"sample_guidance_low", "0.1"},
                     {"sample_guidance_high", "0.6"}, {"transport", "edm"},          {"t_max", "40"},
                     {"t_min", "0.02"},               {"sample_type", "ddiffusion"}, {"latent_size", "8x6"},
                     {"image_size", "64x48x3"}};

}  // namespace

TEST_CASE("settings: the defaults when neither the request nor the metadata says anything") {
  const auto s = tim::resolve_sample_settings({}, {});
  check_setting(s.steps, 4, SettingSource::default_value, "");
  check_setting(s.cfg_scale, 1.0, SettingSource::default_value, "");
  check_setting(s.guidance_low, 0.0, SettingSource::default_value, "");
  check_setting(s.guidance_high, 1.0, SettingSource::default_value, "");
  check_setting(s.stochasticity, 0.0, SettingSource::default_value, "");
  check_setting(s.t_max, 1.0, SettingSource::default_value, "");
  check_setting(s.t_min, 0.0, SettingSource::default_value, "");
  check_setting(s.mode, tim::SampleMode::transition, SettingSource::default_value, "");
  CHECK(std::holds_alternative<tim::OtFm>(s.transport.value));
  CHECK(s.transport.source == SettingSource::default_value);
  CHECK(s.schedule.value.describe() == "linspace");
  CHECK(s.schedule.source == SettingSource::default_value);
  CHECK(s.times == std::vector<double>{1.0, 0.75, 0.5, 0.25, 0.0});
  CHECK(!s.latent_size.has_value());
}

TEST_CASE("settings: the metadata's values when the request gives none, each naming its key") {
  const auto s = tim::resolve_sample_settings({}, tuned);
  check_setting(s.steps, 3, SettingSource::metadata, "sample_steps");
  check_setting(s.cfg_scale, 2.5, SettingSource::metadata, "sample_cfg_scale");
  check_setting(s.guidance_low, 0.1, SettingSource::metadata, "sample_guidance_low");
  check_setting(s.guidance_high, 0.6, SettingSource::metadata, "sample_guidance_high");
  check_setting(s.t_max, 40.0, SettingSource::metadata, "t_max");
  check_setting(s.t_min, 0.02, SettingSource::metadata, "t_min");
  check_setting(s.mode, tim::SampleMode::diffusion, SettingSource::metadata, "sample_type");
  REQUIRE(std::holds_alternative<tim::Edm>(s.transport.value));
  CHECK(s.transport.source == SettingSource::metadata);
  CHECK(s.transport.origin == "transport");
  // The transport carries the resolved range, and the grid spans it in 3 steps.
  CHECK(std::get<tim::Edm>(s.transport.value).t_max == 40.0);
  CHECK(std::get<tim::Edm>(s.transport.value).t_min == 0.02);
  REQUIRE(s.times.size() == 4);
  CHECK(s.times.front() == 40.0);
  CHECK(s.times.back() == 0.02);
  CHECK(s.times[1] == doctest::Approx(40.0 - 39.98 / 3).epsilon(1e-14));
  CHECK(s.times[2] == doctest::Approx(40.0 - 2 * 39.98 / 3).epsilon(1e-14));
  // latent_size wins over image_size.
  REQUIRE(s.latent_size.has_value());
  check_setting(s.latent_size->height, std::int64_t{8}, SettingSource::metadata, "latent_size");
  check_setting(s.latent_size->width, std::int64_t{6}, SettingSource::metadata, "latent_size");
  // Without latent_size, image_size gives the size.
  Metadata only_image = tuned;
  only_image.erase("latent_size");
  const auto image = tim::resolve_sample_settings({}, only_image);
  REQUIRE(image.latent_size.has_value());
  check_setting(image.latent_size->height, std::int64_t{64}, SettingSource::metadata, "image_size");
  check_setting(image.latent_size->width, std::int64_t{48}, SettingSource::metadata, "image_size");
}

TEST_CASE("settings: an option wins over the metadata, field by field") {
  // One field given at a time: that field is the option's, every other stays the metadata's.
  SUBCASE("steps") {
    tim::SampleRequest r;
    r.steps = 7;
    const auto s = tim::resolve_sample_settings(r, tuned);
    check_setting(s.steps, 7, SettingSource::option, "--steps");
    CHECK(s.times.size() == 8);
    check_setting(s.cfg_scale, 2.5, SettingSource::metadata, "sample_cfg_scale");
  }
  SUBCASE("cfg_scale") {
    tim::SampleRequest r;
    r.cfg_scale = 4.0;
    const auto s = tim::resolve_sample_settings(r, tuned);
    check_setting(s.cfg_scale, 4.0, SettingSource::option, "--cfg-scale");
    check_setting(s.steps, 3, SettingSource::metadata, "sample_steps");
  }
  SUBCASE("guidance window") {
    tim::SampleRequest r;
    r.guidance_low = 0.2;
    const auto low = tim::resolve_sample_settings(r, tuned);
    check_setting(low.guidance_low, 0.2, SettingSource::option, "--guidance-low");
    check_setting(low.guidance_high, 0.6, SettingSource::metadata, "sample_guidance_high");
    r = {};
    r.guidance_high = 0.9;
    const auto high = tim::resolve_sample_settings(r, tuned);
    check_setting(high.guidance_high, 0.9, SettingSource::option, "--guidance-high");
    check_setting(high.guidance_low, 0.1, SettingSource::metadata, "sample_guidance_low");
  }
  SUBCASE("transport: the option's transport brings its own range, the metadata's t_max/t_min are not read") {
    tim::SampleRequest r;
    r.transport = "ve";
    const auto s = tim::resolve_sample_settings(r, tuned);
    REQUIRE(std::holds_alternative<tim::VeSde>(s.transport.value));
    CHECK(s.transport.source == SettingSource::option);
    CHECK(s.transport.origin == "--transport");
    check_setting(s.t_max, 100.0, SettingSource::default_value, "");
    check_setting(s.t_min, 0.02, SettingSource::default_value, "");
    CHECK(std::get<tim::VeSde>(s.transport.value).t_max == 100.0);
  }
  SUBCASE("t_max and t_min") {
    tim::SampleRequest r;
    r.t_max = 20.0;
    const auto s = tim::resolve_sample_settings(r, tuned);
    check_setting(s.t_max, 20.0, SettingSource::option, "--t-max");
    check_setting(s.t_min, 0.02, SettingSource::metadata, "t_min");
    CHECK(std::get<tim::Edm>(s.transport.value).t_max == 20.0);
    CHECK(s.times.front() == 20.0);
    r = {};
    r.t_min = 1.0;
    const auto m = tim::resolve_sample_settings(r, tuned);
    check_setting(m.t_min, 1.0, SettingSource::option, "--t-min");
    check_setting(m.t_max, 40.0, SettingSource::metadata, "t_max");
    CHECK(m.times.back() == 1.0);
  }
  SUBCASE("mode") {
    tim::SampleRequest r;
    r.mode = "transition";
    const auto s = tim::resolve_sample_settings(r, tuned);
    check_setting(s.mode, tim::SampleMode::transition, SettingSource::option, "--mode");
  }
  SUBCASE("stochasticity (no metadata key)") {
    tim::SampleRequest r;
    r.stochasticity = 0.2;
    r.transport = "ot-fm";
    const auto s = tim::resolve_sample_settings(r, tuned);
    check_setting(s.stochasticity, 0.2, SettingSource::option, "--stochasticity");
    const auto plain = tim::resolve_sample_settings({}, {{"stochasticity", "0.5"}});
    check_setting(plain.stochasticity, 0.0, SettingSource::default_value, "");
  }
  SUBCASE("schedule") {
    tim::SampleRequest r;
    r.schedule = "shift:3";
    const auto s = tim::resolve_sample_settings(r, tuned);
    CHECK(s.schedule.value.describe() == "shift:3");
    CHECK(s.schedule.source == SettingSource::option);
    CHECK(s.schedule.origin == "--schedule");
    check_setting(s.steps, 3, SettingSource::metadata, "sample_steps");
  }
  SUBCASE("latent size: each side on its own") {
    tim::SampleRequest r;
    r.height = 16;
    const auto s = tim::resolve_sample_settings(r, tuned);
    REQUIRE(s.latent_size.has_value());
    check_setting(s.latent_size->height, std::int64_t{16}, SettingSource::option, "--height");
    check_setting(s.latent_size->width, std::int64_t{6}, SettingSource::metadata, "latent_size");
    r.width = 12;
    const auto both = tim::resolve_sample_settings(r, {});
    REQUIRE(both.latent_size.has_value());
    check_setting(both.latent_size->width, std::int64_t{12}, SettingSource::option, "--width");
    r = {};
    r.height = 16;
    CHECK(!tim::resolve_sample_settings(r, {}).latent_size.has_value());  // the width is unknown
  }
}

TEST_CASE("settings: an option replaces a bad metadata value, which is then never read") {
  tim::SampleRequest r;
  r.steps = 2;
  r.cfg_scale = 1.5;
  r.guidance_low = 0.0;
  r.guidance_high = 1.0;
  r.transport = "ot-fm";
  r.mode = "transition";
  r.height = 8;
  r.width = 8;
  const Metadata broken{{"sample_steps", "four"},          {"sample_cfg_scale", "x"}, {"sample_guidance_low", "?"},
                        {"sample_guidance_high", "?"},      {"transport", "flow"},     {"t_max", "big"},
                        {"t_min", "small"},                 {"sample_type", "sideways"}, {"latent_size", "huge"}};
  const auto s = tim::resolve_sample_settings(r, broken);
  CHECK(s.steps.value == 2);
  CHECK(s.cfg_scale.value == 1.5);
  CHECK(s.latent_size->height.value == 8);
  // A listed schedule gives the steps itself: sample_steps is not read.
  tim::SampleRequest listed;
  listed.schedule = "1,0.5,0";
  const auto l = tim::resolve_sample_settings(listed, {{"sample_steps", "four"}});
  check_setting(l.steps, 2, SettingSource::option, "--schedule");
  CHECK(l.times == std::vector<double>{1.0, 0.5, 0.0});
}

TEST_CASE("settings: the metadata's t_max and t_min belong to its transport") {
  // Without a transport in the metadata, its t_max/t_min are not read (ot-fm keeps [0, 1]).
  const auto s = tim::resolve_sample_settings({}, {{"t_max", "5"}, {"t_min", "bad"}});
  check_setting(s.t_max, 1.0, SettingSource::default_value, "");
  check_setting(s.t_min, 0.0, SettingSource::default_value, "");
  // With it, a missing end is the transport's default: TrigFlow's t_max 1.57.
  const auto trig = tim::resolve_sample_settings({}, {{"transport", "trigflow"}, {"t_min", "0.001"}});
  check_setting(trig.t_max, 1.57, SettingSource::default_value, "");
  check_setting(trig.t_min, 0.001, SettingSource::metadata, "t_min");
}

TEST_CASE("settings: every bad metadata value is rejected with its key named") {
  const std::vector<std::pair<Metadata, std::vector<std::string>>> cases{
      {{{"sample_steps", "four"}}, {"metadata 'sample_steps'", "'four'", "not a finite number"}},
      {{{"sample_steps", ""}}, {"metadata 'sample_steps'", "not a finite number"}},
      {{{"sample_steps", "3 "}}, {"metadata 'sample_steps'", "not a finite number"}},
      {{{"sample_steps", "nan"}}, {"metadata 'sample_steps'", "not a finite number"}},
      {{{"sample_steps", "inf"}}, {"metadata 'sample_steps'", "not a finite number"}},
      {{{"sample_steps", "2.5"}}, {"'sample_steps'", "whole number", "2.5"}},
      {{{"sample_steps", "0"}}, {"'sample_steps'", "whole number", "got 0"}},
      {{{"sample_steps", "-3"}}, {"'sample_steps'", "whole number", "got -3"}},
      {{{"sample_steps", "2000000"}}, {"'sample_steps'", "1000000", "got 2e+06"}},
      {{{"sample_cfg_scale", "strong"}}, {"metadata 'sample_cfg_scale'", "'strong'", "not a finite number"}},
      {{{"sample_cfg_scale", "1e999"}}, {"metadata 'sample_cfg_scale'", "not a finite number"}},
      {{{"sample_guidance_low", "low"}}, {"metadata 'sample_guidance_low'", "not a finite number"}},
      {{{"sample_guidance_high", "-inf"}}, {"metadata 'sample_guidance_high'", "not a finite number"}},
      {{{"sample_guidance_low", "1.5"}}, {"guidance window [1.5, 1]", "empty", "--guidance-low"}},
      {{{"sample_guidance_low", "0.8"}, {"sample_guidance_high", "0.2"}}, {"guidance window [0.8, 0.2]", "empty"}},
      {{{"transport", "flow"}}, {"metadata 'transport'", "unknown transport 'flow'", "pass --transport"}},
      {{{"transport", "edm"}, {"t_max", "big"}}, {"metadata 't_max'", "'big'", "not a finite number"}},
      {{{"transport", "edm"}, {"t_min", "1e400"}}, {"metadata 't_min'", "not a finite number"}},
      {{{"transport", "ot-fm"}, {"t_max", "0.5"}, {"t_min", "0.5"}},
       {"the model's metadata 't_max' 0.5 must be greater than the model's metadata 't_min' 0.5"}},
      {{{"transport", "ot-fm"}, {"t_min", "2"}}, {"the ot-fm transport's t_max 1", "metadata 't_min' 2"}},
      {{{"sample_type", "sideways"}}, {"metadata 'sample_type'", "unknown sample mode 'sideways'", "pass --mode"}},
      {{{"latent_size", "big"}}, {"metadata 'latent_size'", "'big'", "not a size"}},
      {{{"latent_size", "0x0"}}, {"metadata 'latent_size'", "not a size"}},
      {{{"latent_size", "32x"}}, {"metadata 'latent_size'", "not a size"}},
      {{{"latent_size", "1x2x3x4"}}, {"metadata 'latent_size'", "not a size"}},
      {{{"latent_size", "-32"}}, {"metadata 'latent_size'", "not a size"}},
      {{{"latent_size", "99999999999999999999"}}, {"metadata 'latent_size'", "not a size"}},
      {{{"image_size", "32 by 32"}}, {"metadata 'image_size'", "'32 by 32'", "not a size"}},
      // latent_size is the key read; a bad one is not excused by a good image_size.
      {{{"latent_size", "?"}, {"image_size", "32x32"}}, {"metadata 'latent_size'"}},
  };
  for (const auto& [metadata, parts] : cases) {
    CAPTURE(metadata.begin()->first);
    CAPTURE(metadata.begin()->second);
    check_error(resolve_error({}, metadata), parts);
  }
}

TEST_CASE("settings: bad options are rejected with the option named, before any metadata") {
  const auto error_for = [](auto&& set) {
    tim::SampleRequest r;
    set(r);
    return resolve_error(r, {});
  };
  check_error(error_for([](auto& r) { r.steps = 0; }), {"--steps must be at least 1, got 0"});
  check_error(error_for([](auto& r) { r.cfg_scale = std::numeric_limits<double>::infinity(); }), {"--cfg-scale must be a finite number"});
  check_error(error_for([](auto& r) { r.guidance_high = std::numeric_limits<double>::quiet_NaN(); }),
              {"--guidance-low and --guidance-high must be finite numbers"});
  check_error(error_for([](auto& r) {
                r.guidance_low = 0.8;
                r.guidance_high = 0.2;
              }),
              {"--guidance-low 0.8 is greater than --guidance-high 0.2"});
  check_error(error_for([](auto& r) { r.stochasticity = -0.1; }), {"--stochasticity must be a finite number >= 0"});
  check_error(error_for([](auto& r) { r.height = 0; }), {"--height must be at least 1, got 0"});
  check_error(error_for([](auto& r) { r.width = -2; }), {"--width must be at least 1, got -2"});
  check_error(error_for([](auto& r) { r.mode = "sideways"; }), {"--mode: unknown sample mode 'sideways'"});
  check_error(error_for([](auto& r) { r.transport = "flow"; }),
              {"--transport: unknown transport 'flow'", "ot-fm, trigflow, edm, vp, ve"});
  check_error(error_for([](auto& r) {
                r.t_max = 0.5;
                r.t_min = 0.5;
              }),
              {"--t-max 0.5 must be greater than --t-min 0.5 (both finite)"});
  check_error(error_for([](auto& r) {
                r.transport = "ve";
                r.t_min = 200.0;
              }),
              {"the ve transport's t_max 1e+02 must be greater than --t-min 2e+02"});
  check_error(error_for([](auto& r) {
                r.stochasticity = 0.2;
                r.transport = "edm";
              }),
              {"--stochasticity 0.2 needs the ot-fm transport", "not edm"});
  check_error(error_for([](auto& r) { r.schedule = "cosine"; }), {"--schedule: unknown schedule 'cosine'"});
  check_error(error_for([](auto& r) {
                r.schedule = "1,0.5,0";
                r.steps = 3;
              }),
              {"--schedule: schedule '1,0.5,0' has 3 times"});
  check_error(error_for([](auto& r) { r.schedule = "1,0.5,0.5"; }),
              {"--schedule: time grid: times must be strictly decreasing"});
  check_error(error_for([](auto& r) { r.schedule = "2,1,0"; }), {"--schedule: time grid", "outside"});
  // Stochasticity with a transport from the metadata that has no stochastic transition.
  tim::SampleRequest stochastic;
  stochastic.stochasticity = 0.3;
  check_error(resolve_error(stochastic, {{"transport", "vp"}}), {"--stochasticity 0.3 needs the ot-fm", "not vp"});
  // The same problems found by validate_sample_request alone, without metadata.
  tim::SampleRequest bad;
  bad.steps = -1;
  check_error(error_of([&] { tim::validate_sample_request(bad); }), {"--steps must be at least 1, got -1"});
}

TEST_CASE("settings: messages use the front end's spellings of the options") {
  tim::SampleOptionNames names;
  names.steps = "steps=";
  names.transport = "transport=";
  names.height = "height=";
  names.width = "width=";
  tim::SampleRequest r;
  r.steps = 0;
  check_error(error_of([&] { tim::resolve_sample_settings(r, {}, names); }), {"steps= must be at least 1, got 0"});
  check_error(error_of([&] { tim::resolve_sample_settings({}, {{"transport", "flow"}}, names); }),
              {"metadata 'transport'", "pass transport="});
  const auto s = tim::resolve_sample_settings({}, {}, names);
  check_error(error_of([&] { tim::require_latent_size(s.latent_size, s.names); }),
              {"no 'latent_size' or 'image_size'", "pass height= and width="});
  r.steps = 5;
  CHECK(tim::resolve_sample_settings(r, {}, names).steps.origin == "steps=");
}

TEST_CASE("settings: describe() gives every value with its source") {
  tim::SampleRequest r;
  r.cfg_scale = 2.0;
  r.width = 12;
  const auto s = tim::resolve_sample_settings(r, {{"sample_steps", "3"}, {"latent_size", "8x6"}});
  const std::vector<std::pair<std::string, std::string>> expected{
      {"steps", "3 (metadata 'sample_steps')"},
      {"cfg_scale", "2 (--cfg-scale)"},
      {"guidance_low", "0 (default)"},
      {"guidance_high", "1 (default)"},
      {"stochasticity", "0 (default)"},
      {"transport", "ot-fm (default)"},
      {"t_max", "1 (default)"},
      {"t_min", "0 (default)"},
      {"schedule", "linspace (default)"},
      {"mode", "transition (default)"},
      {"height", "8 (metadata 'latent_size')"},
      {"width", "12 (--width)"},
  };
  CHECK(s.describe() == expected);
  CHECK(tim::setting_source_name(SettingSource::option) == "option");
  CHECK(tim::setting_source_name(SettingSource::metadata) == "metadata");
  CHECK(tim::setting_source_name(SettingSource::default_value) == "default");
}

TEST_CASE("settings: latent sizes as checkpoints spell them") {
  using Size = std::optional<std::pair<std::int64_t, std::int64_t>>;
  CHECK(tim::parse_latent_size("32x32x1") == Size{{32, 32}});
  CHECK(tim::parse_latent_size("8x6") == Size{{8, 6}});
  CHECK(tim::parse_latent_size("64") == Size{{64, 64}});
  CHECK(tim::parse_latent_size("[32, 16]") == Size{{32, 16}});
  CHECK(tim::parse_latent_size("(16,8,4)") == Size{{16, 8}});
  CHECK(tim::parse_latent_size(" 16 x 8 ") == Size{{16, 8}});
  for (const char* bad : {"", "x", "[]", "32x", "x32", "0", "32x0", "-32", "3.5", "1x2x3x4", "32xx32", "[32, 32",
                          "32;32", "99999999999999999999", "a32"}) {
    CAPTURE(bad);
    CHECK(!tim::parse_latent_size(bad).has_value());
  }
  // find_latent_size: both options need no metadata at all, not even a good one.
  const auto both = tim::find_latent_size(4, 2, {{"latent_size", "bad"}});
  REQUIRE(both.has_value());
  CHECK(both->height.value == 4);
  CHECK(both->width.value == 2);
  CHECK(!tim::find_latent_size(std::nullopt, 2, {}).has_value());
  check_error(error_of([] { tim::require_latent_size(std::nullopt); }),
              {"no 'latent_size' or 'image_size'", "pass --height and --width"});
  CHECK(tim::require_latent_size(both).height.value == 4);
}
