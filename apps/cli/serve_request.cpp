// `tim serve`: parsing and checking the body of POST /v1/images/generations (serve_request.hpp).
#include "serve_request.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <limits>
#include <set>
#include <system_error>
#include <variant>

#include "tim/core/decimal.hpp"
#include "tim/core/error.hpp"
#include "tim/text/utf8.hpp"

namespace tim_cli::serve {

namespace {

using nlohmann::json;

//! The fields a request may have; anything else is refused (a typo would otherwise be ignored).
const std::set<std::string, std::less<>> known_fields = {
    // OpenAI's images API
    "prompt", "model", "n", "size", "response_format", "user",
    // tim's extras
    "class", "labels", "seed", "first_index", "steps", "cfg_scale", "guidance_low", "guidance_high", "stochasticity",
    "schedule", "mode", "transport", "t_max", "t_min", "return_latents"};

std::string type_name(const json& value) {
  if (value.is_number_integer()) return "an integer";
  if (value.is_number_float()) return "a number with a fraction or exponent";
  if (value.is_string()) return "a string";
  if (value.is_boolean()) return "a boolean";
  if (value.is_null()) return "null";
  if (value.is_array()) return "an array";
  return "an object";
}

//! An integer field in [low, high]; JSON floats (4.0) are refused as integers.
std::int64_t integer_field(const json& value, const char* name, std::int64_t low, std::int64_t high) {
  tim::check(value.is_number_integer(), "field '", name, "' must be an integer, got ", type_name(value));
  if (value.is_number_unsigned()) {
    const auto u = value.get<std::uint64_t>();
    tim::check(u <= static_cast<std::uint64_t>(high) && static_cast<std::int64_t>(u) >= low, "field '", name, "' must be in [", low, ", ", high, "], got ",
               u);
    return static_cast<std::int64_t>(u);
  }
  const auto v = value.get<std::int64_t>();
  tim::check(v >= low && v <= high, "field '", name, "' must be in [", low, ", ", high, "], got ", v);
  return v;
}

std::uint64_t unsigned_field(const json& value, const char* name) {
  tim::check(value.is_number_integer() && (value.is_number_unsigned() || value.get<std::int64_t>() >= 0), "field '",
             name, "' must be an integer in [0, 18446744073709551615], got ",
             value.is_number_integer() ? value.dump() : type_name(value));
  return value.get<std::uint64_t>();
}

double number_field(const json& value, const char* name) {
  tim::check(value.is_number(), "field '", name, "' must be a number, got ", type_name(value));
  const double v = value.get<double>();
  tim::check(std::isfinite(v), "field '", name, "' must be a finite number, got ", value.dump());
  return v;
}

std::string string_field(const json& value, const char* name) {
  tim::check(value.is_string(), "field '", name, "' must be a string, got ", type_name(value));
  return value.get<std::string>();
}

std::string lowercase(std::string text) {
  std::transform(text.begin(), text.end(), text.begin(),
                 [](unsigned char ch) { return static_cast<char>(std::tolower(ch)); });
  return text;
}

std::string class_list(const ModelFacts& model) {
  std::string list;
  for (std::size_t i = 0; i < model.class_names.size() && i < 20; ++i)
    list += (i ? ", " : "") + std::to_string(i) + " '" + model.class_names[i] + "'";
  if (model.class_names.size() > 20) list += ", ...";
  return list.empty() ? "integers 0.." + std::to_string(model.num_classes - 1) : list;
}

//! A class given as an integer, or as a class name (case-insensitive), or as a decimal string.
std::int64_t class_of(const json& value, const char* name, const ModelFacts& model) {
  if (value.is_string()) {
    const std::string text = value.get<std::string>();
    const std::string wanted = lowercase(text);
    for (std::size_t i = 0; i < model.class_names.size(); ++i)
      if (lowercase(model.class_names[i]) == wanted) return static_cast<std::int64_t>(i);
    std::int64_t number = 0;
    const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), number);
    tim::check(!text.empty() && error == std::errc() && end == text.data() + text.size(), "field '", name, "': '",
               tim::detail::concat(text.size() > 80 ? text.substr(0, 80) + "..." : text),
               "' is not a class of this model (classes: ", class_list(model), ", or ", model.num_classes,
               " = unconditional)",
               std::string_view(name) == "prompt" ? "; this model is class-conditional, so a 'prompt' must name "
                                                    "a class: free text needs a text-to-image model"
                                                  : "");
    tim::check(number >= 0 && number <= model.num_classes, "field '", name, "': class ", number, " is outside [0, ",
               model.num_classes, "] (", model.num_classes, " = unconditional)");
    return number;
  }
  return integer_field(value, name, 0, model.num_classes);
}

//! "WxH" in image pixels (the OpenAI spelling, width first) as the latent (height, width).
std::pair<std::int64_t, std::int64_t> size_of(const std::string& text, const ModelFacts& model, const Limits& limits) {
  const std::size_t x = text.find('x');
  std::int64_t width = 0, height = 0;
  const auto parse = [](std::string_view part, std::int64_t& out) {
    const auto [end, error] = std::from_chars(part.data(), part.data() + part.size(), out);
    return !part.empty() && error == std::errc() && end == part.data() + part.size() && out >= 1;
  };
  tim::check(x != std::string::npos && parse(std::string_view(text).substr(0, x), width) &&
                 parse(std::string_view(text).substr(x + 1), height),
             "field 'size' must be WIDTHxHEIGHT in image pixels such as \"32x32\", got \"",
             text.size() > 40 ? text.substr(0, 40) + "..." : text, "\"");
  tim::check(width <= limits.max_pixels && height <= limits.max_pixels && width * height <= limits.max_pixels,
             "field 'size' ", width, "x", height, " has more than the server's limit of ", limits.max_pixels,
             " pixels");
  const std::int64_t step = model.scale * model.patch;
  tim::check(width % step == 0 && height % step == 0, "field 'size' ", width, "x", height,
             ": width and height must be multiples of ", step, " pixels (the patch size ", model.patch,
             " times the decoder's scale ", model.scale, ")");
  return {height / model.scale, width / model.scale};
}

std::string hex(double value) {
  char text[40];
  std::snprintf(text, sizeof text, "%a", value);
  return text;
}

}  // namespace

tim::SampleOptionNames field_names() {
  tim::SampleOptionNames names;
  names.steps = "field 'steps'";
  names.cfg_scale = "field 'cfg_scale'";
  names.guidance_low = "field 'guidance_low'";
  names.guidance_high = "field 'guidance_high'";
  names.stochasticity = "field 'stochasticity'";
  names.transport = "field 'transport'";
  names.t_max = "field 't_max'";
  names.t_min = "field 't_min'";
  names.schedule = "field 'schedule'";
  names.mode = "field 'mode'";
  names.height = "field 'size' (height)";
  names.width = "field 'size' (width)";
  return names;
}

std::string batch_key_of(const tim::SampleSettings& s, std::int64_t height, std::int64_t width, std::uint64_t seed,
                         std::int64_t caption_tokens) {
  std::string key = "seed " + std::to_string(seed);
  if (caption_tokens > 0) key += " caption_tokens " + std::to_string(caption_tokens);
  key += " size " + std::to_string(height) + "x" + std::to_string(width);
  key += " cfg " + hex(s.cfg_scale.value) + " window " + hex(s.guidance_low.value) + " " + hex(s.guidance_high.value);
  key += " s " + hex(s.stochasticity.value) + " transport " + std::string(tim::transport_name(s.transport.value));
  key += " range " + hex(s.t_max.value) + " " + hex(s.t_min.value);
  key += " mode " + std::string(tim::sample_mode_name(s.mode.value)) + " times";
  for (const double t : s.times) {
    key += ' ';
    key += hex(t);
  }
  return key;
}

GenerationRequest parse_generation_request(std::string_view body, const ModelFacts& model, const Limits& limits) {
  tim::check(body.size() <= limits.max_body_bytes, "the request body has ", body.size(),
             " bytes, more than the server's limit of ", limits.max_body_bytes);
  json root;
  try {
    root = json::parse(body.begin(), body.end());
  } catch (const json::exception& e) {  // malformed, or a number out of range such as 1e999
    tim::fail("the request body is not valid JSON: ", e.what());
  }
  tim::check(root.is_object(), "the request body must be a JSON object, got ", type_name(root));
  for (const auto& [key, value] : root.items())
    tim::check(known_fields.count(key) > 0, "unknown field '", key.size() > 60 ? key.substr(0, 60) + "..." : key,
               "' (docs/serve.md lists the fields)");
  const auto field = [&](const char* name) -> const json* {
    const auto found = root.find(name);
    return found == root.end() ? nullptr : &*found;
  };

  GenerationRequest r;
  if (const json* v = field("model")) {
    const std::string name = string_field(*v, "model");
    tim::check(name == model.id, "field 'model': this server serves '", model.id, "', not '",
               name.size() > 80 ? name.substr(0, 80) + "..." : name, "'");
  }
  if (const json* v = field("user")) string_field(*v, "user");
  if (const json* v = field("response_format")) {
    const std::string format = string_field(*v, "response_format");
    tim::check(format == "b64_json", "field 'response_format' must be \"b64_json\" (the image in the response); ",
               "tim serve keeps no files to link to, so \"url\" is not offered");
  }
  if (const json* v = field("prompt")) r.prompt = string_field(*v, "prompt");
  if (const json* v = field("return_latents")) {
    tim::check(v->is_boolean(), "field 'return_latents' must be true or false, got ", type_name(*v));
    r.return_latents = v->get<bool>();
  }

  // What is sampled: a text-to-image model n images of the prompt; a class-conditional one
  // labels (n of them), one class n times, or the class the prompt names.
  const json* labels = field("labels");
  const json* one_class = field("class");
  const json* n = field("n");
  tim::check(!(labels && one_class), "fields 'labels' and 'class' cannot be used together");
  if (n) r.n = integer_field(*n, "n", 1, limits.max_n);
  if (model.text_to_image) {
    tim::check(!labels && !one_class, "field '", labels ? "labels" : "class", "': '", model.id,
               "' is a text-to-image model; it samples from 'prompt' (text), not from classes");
    tim::check(field("prompt") != nullptr, "nothing to sample: this text-to-image model needs 'prompt' (a "
               "non-empty string)");
    tim::check(!r.prompt.empty(), "field 'prompt' is empty; give the text to draw");
    // nlohmann::json refuses ill-formed UTF-8 and lone surrogates; checked again all the same,
    // since the tokenizer would otherwise see what the parser let through.
    const std::size_t bad = tim::text::first_invalid_utf8(r.prompt);
    tim::check(bad == std::string::npos, "field 'prompt' is not valid UTF-8 (invalid byte sequence at byte ", bad,
               ")");
    tim::check(r.prompt.find('\0') == std::string::npos, "field 'prompt' contains a NUL character (\\u0000), "
               "at byte ", r.prompt.find('\0'));
  } else if (labels) {
    tim::check(labels->is_array(), "field 'labels' must be an array of classes, got ", type_name(*labels));
    tim::check(!labels->empty() && static_cast<std::int64_t>(labels->size()) <= limits.max_n, "field 'labels' must ",
               "have 1 to ", limits.max_n, " entries (the server's limit on images per request), got ",
               labels->size());
    for (const auto& label : *labels) r.labels.push_back(class_of(label, "labels", model));
    tim::check(!n || r.n == static_cast<std::int64_t>(r.labels.size()), "field 'n' is ", r.n, " but 'labels' has ",
               labels->size(), " entries");
    r.n = static_cast<std::int64_t>(r.labels.size());
  } else {
    std::int64_t label = 0;
    if (one_class) {
      label = class_of(*one_class, "class", model);
    } else {
      tim::check(field("prompt") != nullptr, "nothing to sample: this class-conditional model takes 'class' (",
                 class_list(model), "), 'labels', or a 'prompt' that names a class");
      label = class_of(*field("prompt"), "prompt", model);
    }
    r.labels.assign(static_cast<std::size_t>(r.n), label);
  }

  // The noise: a given seed draws sample indices first_index.., else the server assigns them.
  if (const json* v = field("seed")) r.seed = unsigned_field(*v, "seed");
  if (const json* v = field("first_index")) {
    tim::check(r.seed.has_value(), "field 'first_index' needs 'seed'");
    r.first_index = unsigned_field(*v, "first_index");
    tim::check(r.first_index <= std::numeric_limits<std::uint64_t>::max() - static_cast<std::uint64_t>(r.n),
               "field 'first_index' ", r.first_index, " leaves no room for ", r.n, " sample indices");
  }

  // The settings, by the library's rules: the request, else the model's metadata, else defaults.
  tim::SampleRequest request;
  if (const json* v = field("steps")) request.steps = static_cast<int>(integer_field(*v, "steps", 1, limits.max_steps));
  if (const json* v = field("cfg_scale")) request.cfg_scale = number_field(*v, "cfg_scale");
  if (const json* v = field("guidance_low")) request.guidance_low = number_field(*v, "guidance_low");
  if (const json* v = field("guidance_high")) request.guidance_high = number_field(*v, "guidance_high");
  if (const json* v = field("stochasticity")) request.stochasticity = number_field(*v, "stochasticity");
  if (const json* v = field("t_max")) request.t_max = number_field(*v, "t_max");
  if (const json* v = field("t_min")) request.t_min = number_field(*v, "t_min");
  if (const json* v = field("schedule")) request.schedule = string_field(*v, "schedule");
  if (const json* v = field("mode")) request.mode = string_field(*v, "mode");
  if (const json* v = field("transport")) request.transport = string_field(*v, "transport");
  if (request.schedule && request.schedule->find(',') != std::string::npos) {
    const auto commas = std::count(request.schedule->begin(), request.schedule->end(), ',');
    tim::check(commas <= limits.max_steps, "field 'schedule' lists ", commas + 1, " times, more than the server's ",
               "limit of ", limits.max_steps, " steps");
  }
  if (const json* v = field("size")) {
    const auto [height, width] = size_of(string_field(*v, "size"), model, limits);
    request.height = height;
    request.width = width;
  }
  // The metadata's step count is checked against the limit before a grid of that size is made.
  if (!request.steps && !(request.schedule && request.schedule->find(',') != std::string::npos))
    if (const auto found = model.metadata.find("sample_steps"); found != model.metadata.end()) {
      const double steps = std::strtod(found->second.c_str(), nullptr);
      tim::check(!(steps > limits.max_steps), "the model's metadata asks for ", found->second,
                 " steps, more than the server's limit of ", limits.max_steps, "; give 'steps'");
    }
  const tim::SampleOptionNames names = field_names();
  r.settings = tim::resolve_sample_settings(request, model.metadata, names);
  tim::check(r.settings.steps.value <= limits.max_steps, "the request asks for ", r.settings.steps.value,
             " steps, more than the server's limit of ", limits.max_steps);
  const tim::LatentSize size = tim::require_latent_size(r.settings.latent_size, names);
  r.height = size.height.value;
  r.width = size.width.value;
  tim::check(r.height % model.patch == 0 && r.width % model.patch == 0, "the latent size ", r.height, "x", r.width,
             " must be a multiple of the model's patch size ", model.patch, "; give 'size'");
  const std::int64_t pixels = r.height * model.scale * r.width * model.scale;
  tim::check(pixels <= limits.max_pixels, "images of ", r.width * model.scale, "x", r.height * model.scale,
             " have more than the server's limit of ", limits.max_pixels, " pixels");
  return r;
}

}  // namespace tim_cli::serve
