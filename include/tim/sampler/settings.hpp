// The settings of a sampling run, resolved in one place: each from its explicit option, else the
// checkpoint's `__metadata__`, else the default, and where each value came from (docs/sampling.md,
// "Settings: option, metadata, default"). The command line (`tim sample`) and any other front end
// call resolve_sample_settings and pass the result to the sampler.
//
// Free of Eigen and of any backend: only core/, transport/, the sampler's mode and schedules.
//
// Example:
//   tim::SampleRequest request;
//   request.steps = 8;                                     // what the user asked for
//   const auto metadata = tim::io::SafetensorsFile::open(path).metadata();
//   const tim::SampleSettings s = tim::resolve_sample_settings(request, metadata);
//   // s.steps.value == 8 (source option), s.cfg_scale from metadata 'sample_cfg_scale' or 1, ...
//   for (const auto& [key, value] : s.describe()) std::cout << key << ": " << value << '\n';
#pragma once

#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "tim/core/decimal.hpp"
#include "tim/core/error.hpp"
#include "tim/sampler/mode.hpp"
#include "tim/sampler/schedule.hpp"
#include "tim/transport/transports.hpp"

namespace tim {

//! Where a setting's value came from.
enum class SettingSource { option, metadata, default_value };

inline constexpr std::string_view setting_source_name(SettingSource source) {
  return source == SettingSource::option ? "option" : source == SettingSource::metadata ? "metadata" : "default";
}

//! A resolved value and its provenance. `origin` is the option's spelling (source option, e.g.
//! "--steps"), the metadata key (source metadata, e.g. "sample_steps"), or empty (a default).
template <class T>
struct Setting {
  T value{};
  SettingSource source = SettingSource::default_value;
  std::string origin;

  //! "--steps", "metadata 'sample_steps'" or "default".
  std::string describe_source() const {
    if (source == SettingSource::metadata) return "metadata '" + origin + "'";
    if (source == SettingSource::option) return origin;
    return "default";
  }
};

//! How messages spell each option of a SampleRequest. The defaults are the `tim` command line's;
//! another front end (a binding with keyword arguments) passes its own spellings.
struct SampleOptionNames {
  std::string steps = "--steps";
  std::string cfg_scale = "--cfg-scale";
  std::string guidance_low = "--guidance-low";
  std::string guidance_high = "--guidance-high";
  std::string stochasticity = "--stochasticity";
  std::string transport = "--transport";
  std::string t_max = "--t-max";
  std::string t_min = "--t-min";
  std::string schedule = "--schedule";
  std::string mode = "--mode";
  std::string height = "--height";
  std::string width = "--width";
};

//! What the user asked for explicitly; an empty field is "not given". Spellings as the command
//! line takes them: transport "ot-fm", "trigflow", "edm", "vp", "ve"; mode "transition",
//! "diffusion", "ddiffusion"; schedule "linspace", "shift:S", "karras:RHO" or a list "1,0.5,0".
struct SampleRequest {
  std::optional<int> steps;
  std::optional<double> cfg_scale, guidance_low, guidance_high, stochasticity, t_max, t_min;
  std::optional<std::string> transport, mode, schedule;
  std::optional<std::int64_t> height, width;  // latent size, in latent pixels
};

//! The latent size (H, W) of a run, each with its provenance.
struct LatentSize {
  Setting<std::int64_t> height, width;
};

//! Every setting of a sampling run, resolved (resolve_sample_settings). The sampler takes
//! transport.value, schedule.value (or times), cfg_scale, guidance_low/high, stochasticity, mode.
struct SampleSettings {
  Setting<int> steps;  // the grid's step count: times.size() - 1
  Setting<double> cfg_scale, guidance_low, guidance_high, stochasticity;
  Setting<AnyTransport> transport;  // its time range is already [t_min, t_max] below
  Setting<double> t_max, t_min;
  Setting<SampleMode> mode;
  Setting<AnySchedule> schedule;
  std::vector<double> times;              // the validated grid t_0 > ... > t_N in [t_min, t_max]
  std::optional<LatentSize> latent_size;  // empty: neither the request nor the metadata gives one
  SampleOptionNames names;                // the spellings the messages used

  //! One (key, "value (source)") pair per setting, in a fixed order: steps, cfg_scale,
  //! guidance_low, guidance_high, stochasticity, transport, t_max, t_min, schedule, mode and,
  //! when known, height and width. E.g. ("steps", "3 (metadata 'sample_steps')").
  std::vector<std::pair<std::string, std::string>> describe() const {
    std::vector<std::pair<std::string, std::string>> lines;
    const auto add = [&](const char* key, const std::string& value, const auto& setting) {
      lines.emplace_back(key, value + " (" + setting.describe_source() + ")");
    };
    add("steps", std::to_string(steps.value), steps);
    add("cfg_scale", shortest_decimal(cfg_scale.value), cfg_scale);
    add("guidance_low", shortest_decimal(guidance_low.value), guidance_low);
    add("guidance_high", shortest_decimal(guidance_high.value), guidance_high);
    add("stochasticity", shortest_decimal(stochasticity.value), stochasticity);
    add("transport", std::string(transport_name(transport.value)), transport);
    add("t_max", shortest_decimal(t_max.value), t_max);
    add("t_min", shortest_decimal(t_min.value), t_min);
    add("schedule", schedule.value.describe(), schedule);
    add("mode", std::string(sample_mode_name(mode.value)), mode);
    if (latent_size) {
      add("height", std::to_string(latent_size->height.value), latent_size->height);
      add("width", std::to_string(latent_size->width.value), latent_size->width);
    }
    return lines;
  }
};

//! The step count when neither the request nor the metadata gives one.
inline constexpr int default_sample_steps = 4;

//! The largest step count the metadata may ask for (a guard against "sample_steps: 1e300").
inline constexpr int max_metadata_steps = 1'000'000;

//! Parses a size as checkpoints' metadata spells it: one to three positive integers separated by
//! 'x' or ',' (spaces allowed), optionally inside [] or (): "32x32x1", "32x32", "32", "[32, 32]".
//! Gives (H, W): the first two numbers (W = H when there is one); a third (channels) is ignored.
//! Empty when the text is anything else.
inline std::optional<std::pair<std::int64_t, std::int64_t>> parse_latent_size(std::string_view text) {
  const auto trim = [](std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
    return s;
  };
  text = trim(text);
  if (text.size() >= 2 && ((text.front() == '[' && text.back() == ']') || (text.front() == '(' && text.back() == ')')))
    text = trim(text.substr(1, text.size() - 2));
  std::vector<std::int64_t> numbers;
  while (true) {
    std::size_t end = 0;
    while (end < text.size() && text[end] >= '0' && text[end] <= '9') ++end;
    std::int64_t value = 0;
    const auto [stop, error] = std::from_chars(text.data(), text.data() + end, value);
    if (end == 0 || error != std::errc() || stop != text.data() + end || value < 1 || numbers.size() == 3)
      return std::nullopt;
    numbers.push_back(value);
    text = trim(text.substr(end));
    if (text.empty()) break;
    if (text.front() != 'x' && text.front() != ',') return std::nullopt;
    text = trim(text.substr(1));
  }
  return std::pair{numbers[0], numbers.size() > 1 ? numbers[1] : numbers[0]};
}

namespace detail {

//! The metadata value of `key` as a finite number; empty when the key is absent. Throws naming
//! the key and the value when it is not one.
inline std::optional<double> metadata_number(const std::map<std::string, std::string>& metadata, const char* key) {
  const auto found = metadata.find(key);
  if (found == metadata.end()) return std::nullopt;
  const std::string& text = found->second;
  char* end = nullptr;
  const double value = std::strtod(text.c_str(), &end);
  check(!text.empty() && end == text.c_str() + text.size() && std::isfinite(value), "the model's metadata '", key,
        "' is '", text, "', not a finite number");
  return value;
}

//! An option's value, else the metadata's (only read when the option is absent), else `fallback`.
inline Setting<double> option_metadata_default(const std::optional<double>& option, const std::string& option_name,
                                               const std::map<std::string, std::string>& metadata, const char* key,
                                               double fallback) {
  if (option) return {*option, SettingSource::option, option_name};
  if (const auto value = metadata_number(metadata, key)) return {*value, SettingSource::metadata, key};
  return {fallback, SettingSource::default_value, {}};
}

inline AnyTransport parse_transport_option(const std::string& text, const SampleOptionNames& names) {
  try {
    return parse_transport(text);
  } catch (const Error& e) {
    fail(names.transport, ": ", e.what());
  }
}

inline SampleMode parse_mode_option(const std::string& text, const SampleOptionNames& names) {
  try {
    return parse_sample_mode(text);
  } catch (const Error& e) {
    fail(names.mode, ": ", e.what());
  }
}

//! How a message names one end of the time range: the option, the metadata key, or the transport.
inline std::string time_range_label(const Setting<double>& end, const char* which, const AnyTransport& transport) {
  if (end.source == SettingSource::option) return end.origin;
  if (end.source == SettingSource::metadata) return "the model's metadata '" + end.origin + "'";
  return "the " + std::string(transport_name(transport)) + " transport's " + which;
}

inline void check_time_range(const Setting<double>& t_max, const Setting<double>& t_min, const AnyTransport& transport) {
  check(std::isfinite(t_max.value) && std::isfinite(t_min.value) && t_max.value > t_min.value,
        time_range_label(t_max, "t_max", transport), " ", shortest_decimal(t_max.value), " must be greater than ",
        time_range_label(t_min, "t_min", transport), " ", shortest_decimal(t_min.value), " (both finite)");
}

//! One end of the time range as the request gives it, else the transport's default.
inline Setting<double> range_end_or_default(const std::optional<double>& option, const std::string& option_name,
                                            double transport_default) {
  if (option) return {*option, SettingSource::option, option_name};
  return {transport_default, SettingSource::default_value, {}};
}

inline void check_stochasticity(double stochasticity, const AnyTransport& transport, const SampleOptionNames& names) {
  const bool stochastic =
      std::visit([](const auto& tr) { return std::decay_t<decltype(tr)>::has_stochastic_transition; }, transport);
  check(stochasticity == 0 || stochastic, names.stochasticity, " ", shortest_decimal(stochasticity),
        " needs the ot-fm transport (the only one with a stochastic transition), not ", transport_name(transport));
}

inline std::optional<std::pair<std::int64_t, std::int64_t>> metadata_size(
    const std::map<std::string, std::string>& metadata, const char* key) {
  const auto found = metadata.find(key);
  if (found == metadata.end()) return std::nullopt;
  const auto size = parse_latent_size(found->second);
  check(size.has_value(), "the model's metadata '", key, "' is '", found->second,
        "', not a size (expected H x W in latent pixels, such as 32x32, 32x32x1, 32 or [32, 32])");
  return size;
}

}  // namespace detail

//! Checks what the request says on its own, before any checkpoint is read, so a mistake fails
//! early: steps >= 1; finite cfg scale and guidance window, low <= high when both are given;
//! stochasticity finite and >= 0; height, width >= 1; the spellings of mode, transport and
//! schedule; the time range when the transport or both ends are given; stochasticity with a
//! given transport that has no stochastic transition. Throws tim::Error naming the option.
inline void validate_sample_request(const SampleRequest& r, const SampleOptionNames& names = {}) {
  check(!r.steps || *r.steps >= 1, names.steps, " must be at least 1, got ", r.steps.value_or(0));
  check(!r.cfg_scale || std::isfinite(*r.cfg_scale), names.cfg_scale, " must be a finite number, got ",
        r.cfg_scale.value_or(0));
  check((!r.guidance_low || std::isfinite(*r.guidance_low)) && (!r.guidance_high || std::isfinite(*r.guidance_high)),
        names.guidance_low, " and ", names.guidance_high, " must be finite numbers");
  check(!r.guidance_low || !r.guidance_high || *r.guidance_low <= *r.guidance_high, names.guidance_low, " ",
        shortest_decimal(r.guidance_low.value_or(0)), " is greater than ", names.guidance_high, " ",
        shortest_decimal(r.guidance_high.value_or(0)), " (the guidance window [low, high] is in fractions of t_max)");
  check(!r.stochasticity || (std::isfinite(*r.stochasticity) && *r.stochasticity >= 0), names.stochasticity,
        " must be a finite number >= 0, got ", r.stochasticity.value_or(0));
  check(!r.height || *r.height >= 1, names.height, " must be at least 1, got ", r.height.value_or(0));
  check(!r.width || *r.width >= 1, names.width, " must be at least 1, got ", r.width.value_or(0));
  if (r.mode) detail::parse_mode_option(*r.mode, names);
  if (r.transport || (r.t_max && r.t_min)) {  // then the final range is known already
    const AnyTransport transport = r.transport ? detail::parse_transport_option(*r.transport, names) : AnyTransport{};
    detail::check_time_range(
        detail::range_end_or_default(r.t_max, names.t_max, std::visit([](const auto& tr) { return tr.t_max; }, transport)),
        detail::range_end_or_default(r.t_min, names.t_min, std::visit([](const auto& tr) { return tr.t_min; }, transport)),
        transport);
    if (r.transport) detail::check_stochasticity(r.stochasticity.value_or(0), transport, names);
  }
  if (r.schedule) {
    try {
      parse_schedule(*r.schedule, r.steps.value_or(0));
    } catch (const Error& e) {
      fail(names.schedule, ": ", e.what());
    }
  }
}

//! The latent size: the request's height and width where given, else the metadata's
//! `latent_size`, else its `image_size` (parse_latent_size). Empty when that leaves either
//! unknown. The metadata is read only when an option is missing; a value it has there that is
//! not a size is an error naming the key.
inline std::optional<LatentSize> find_latent_size(std::optional<std::int64_t> height, std::optional<std::int64_t> width,
                                                  const std::map<std::string, std::string>& metadata,
                                                  const SampleOptionNames& names = {}) {
  check(!height || *height >= 1, names.height, " must be at least 1, got ", height.value_or(0));
  check(!width || *width >= 1, names.width, " must be at least 1, got ", width.value_or(0));
  if (height && width)
    return LatentSize{{*height, SettingSource::option, names.height}, {*width, SettingSource::option, names.width}};
  const char* key = metadata.count("latent_size") ? "latent_size" : "image_size";
  const auto native = detail::metadata_size(metadata, key);
  if (!native) return std::nullopt;
  LatentSize size{{native->first, SettingSource::metadata, key}, {native->second, SettingSource::metadata, key}};
  if (height) size.height = {*height, SettingSource::option, names.height};
  if (width) size.width = {*width, SettingSource::option, names.width};
  return size;
}

//! The latent size, or the error that says how to give one.
inline LatentSize require_latent_size(const std::optional<LatentSize>& size, const SampleOptionNames& names = {}) {
  check(size.has_value(), "the model's metadata gives no latent size (no 'latent_size' or 'image_size' key): pass ",
        names.height, " and ", names.width, " (in latent pixels, multiples of the patch size)");
  return *size;
}

//! Resolves every setting of a sampling run: the request's value where given, else the
//! checkpoint's `metadata`, else the default. Metadata keys and defaults:
//!
//! | setting | metadata key | default |
//! |---|---|---|
//! | steps | `sample_steps` (a whole number, 1 to 1000000) | 4 (default_sample_steps) |
//! | cfg_scale | `sample_cfg_scale` | 1 |
//! | guidance_low, guidance_high | `sample_guidance_low`, `sample_guidance_high` | 0, 1 |
//! | stochasticity | none | 0 |
//! | transport | `transport` | ot-fm |
//! | t_max, t_min | `t_max`, `t_min`, read only when the transport came from the metadata | the transport's |
//! | mode | `sample_type` | transition |
//! | schedule | none | linspace |
//! | latent size | `latent_size`, else `image_size` | none (latent_size stays empty) |
//!
//! A listed schedule ("1,0.5,0") gives the step count itself (then `sample_steps` is not read).
//! A metadata value is read only when the request lacks the setting, so an option replaces a bad
//! value. Throws tim::Error naming the option (validate_sample_request, with `names`) or the
//! metadata key and its value: a number that is not finite, a step count that is not whole, an
//! unknown transport or mode, a size that is not one, an empty guidance window, t_max <= t_min,
//! stochasticity with a transport that has no stochastic transition, a schedule whose grid is not
//! strictly decreasing inside [t_min, t_max].
inline SampleSettings resolve_sample_settings(const SampleRequest& request,
                                              const std::map<std::string, std::string>& metadata,
                                              const SampleOptionNames& names = {}) {
  validate_sample_request(request, names);
  SampleSettings s;
  s.names = names;

  // Steps: --steps, else the listed schedule's own count (below), else sample_steps, else 4.
  const std::string schedule_text = request.schedule.value_or("linspace");
  const bool listed_times = schedule_text.find(',') != std::string::npos;
  if (request.steps) {
    s.steps = {*request.steps, SettingSource::option, names.steps};
  } else if (listed_times) {
    s.steps = {0, SettingSource::option, names.schedule};
  } else if (const auto value = detail::metadata_number(metadata, "sample_steps")) {
    check(*value >= 1 && *value <= max_metadata_steps && *value == std::floor(*value), "the model's metadata "
          "'sample_steps' must be a whole number from 1 to ", max_metadata_steps, ", got ", shortest_decimal(*value));
    s.steps = {static_cast<int>(*value), SettingSource::metadata, "sample_steps"};
  } else {
    s.steps = {default_sample_steps, SettingSource::default_value, {}};
  }

  s.cfg_scale = detail::option_metadata_default(request.cfg_scale, names.cfg_scale, metadata, "sample_cfg_scale", 1.0);
  s.guidance_low =
      detail::option_metadata_default(request.guidance_low, names.guidance_low, metadata, "sample_guidance_low", 0.0);
  s.guidance_high =
      detail::option_metadata_default(request.guidance_high, names.guidance_high, metadata, "sample_guidance_high", 1.0);
  check(s.guidance_low.value <= s.guidance_high.value, "the guidance window [", shortest_decimal(s.guidance_low.value),
        ", ", shortest_decimal(s.guidance_high.value), "] (from the options and the model's metadata) is empty: ",
        names.guidance_low, " must not exceed ", names.guidance_high);

  // The transport and its time range.
  if (request.transport) {
    s.transport = {detail::parse_transport_option(*request.transport, names), SettingSource::option, names.transport};
  } else if (const auto found = metadata.find("transport"); found != metadata.end()) {
    try {
      s.transport = {parse_transport(found->second), SettingSource::metadata, "transport"};
    } catch (const Error& e) {
      fail("the model's metadata 'transport': ", e.what(), "; pass ", names.transport);
    }
  }
  const bool metadata_range = s.transport.source == SettingSource::metadata;
  const auto range_end = [&](const std::optional<double>& option, const std::string& option_name, const char* key,
                             double transport_default) -> Setting<double> {
    if (!option && metadata_range) {
      if (const auto value = detail::metadata_number(metadata, key)) return {*value, SettingSource::metadata, key};
    }
    return detail::range_end_or_default(option, option_name, transport_default);
  };
  s.t_max = range_end(request.t_max, names.t_max, "t_max",
                      std::visit([](const auto& tr) { return tr.t_max; }, s.transport.value));
  s.t_min = range_end(request.t_min, names.t_min, "t_min",
                      std::visit([](const auto& tr) { return tr.t_min; }, s.transport.value));
  detail::check_time_range(s.t_max, s.t_min, s.transport.value);
  set_time_range(s.transport.value, s.t_max.value, s.t_min.value);

  s.stochasticity = request.stochasticity
                        ? Setting<double>{*request.stochasticity, SettingSource::option, names.stochasticity}
                        : Setting<double>{0.0, SettingSource::default_value, {}};
  detail::check_stochasticity(s.stochasticity.value, s.transport.value, names);

  if (request.mode) {
    s.mode = {detail::parse_mode_option(*request.mode, names), SettingSource::option, names.mode};
  } else if (const auto found = metadata.find("sample_type"); found != metadata.end()) {
    try {
      s.mode = {parse_sample_mode(found->second), SettingSource::metadata, "sample_type"};
    } catch (const Error& e) {
      fail("the model's metadata 'sample_type': ", e.what(), "; pass ", names.mode);
    }
  }

  // The schedule and its grid; the grid decides the step count.
  try {
    s.schedule = {parse_schedule(schedule_text, s.steps.value),
                  request.schedule ? SettingSource::option : SettingSource::default_value,
                  request.schedule ? names.schedule : std::string()};
    s.times = make_time_grid(s.schedule.value, s.t_max.value, s.t_min.value);
  } catch (const Error& e) {
    fail(names.schedule, ": ", e.what());
  }
  s.steps.value = static_cast<int>(s.times.size()) - 1;

  s.latent_size = find_latent_size(request.height, request.width, metadata, names);
  return s;
}

}  // namespace tim
