// The network hyper-parameters of a released TiM YAML config (the `--config` file of the `tim`
// program): what tensor shapes cannot tell (num_heads without qk-norm, new_condition), plus the
// values shapes do tell, checked against the checkpoint so a mismatched pair is caught.
//
// Needs yaml-cpp, a compiled library: a target including this header must link it (CMake:
// `target_link_libraries(app PRIVATE yaml-cpp)`, or `yaml-cpp::yaml-cpp` with yaml-cpp >= 0.8).
// tim/tim.hpp does not include this header, so plain library users never need yaml-cpp.
#pragma once

#include <yaml-cpp/yaml.h>

#include <cstdint>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#include "tim/core/error.hpp"
#include "tim/nn/config.hpp"

namespace tim::io {

//! A value found in the YAML file and where: `where` is its dotted path, e.g.
//! "model.network.params.num_heads" (sequence elements appear as "[i]").
template <class V>
struct YamlValue {
  V value{};
  std::string where;
};

//! The network keys found in a YAML config; each is absent when the file does not mention it.
//! Names are the released ones (the keyword arguments of the released TiM constructor).
struct YamlNetworkConfig {
  std::string path;  // the file, for error messages

  // What shapes cannot tell.
  std::optional<YamlValue<std::int64_t>> num_heads;
  std::optional<YamlValue<std::string>> new_condition;
  // What shapes tell; only checked against the checkpoint.
  std::optional<YamlValue<std::int64_t>> depth, hidden_size, patch_size, in_channels, num_classes,
      lora_hidden_size;
  std::optional<YamlValue<double>> mlp_ratio;
  std::optional<YamlValue<bool>> qk_norm, use_new_embed, distance_aware;

  //! Whether the file gave any of the keys above.
  bool empty() const {
    return !num_heads && !new_condition && !depth && !hidden_size && !patch_size && !in_channels &&
           !num_classes && !lora_hidden_size && !mlp_ratio && !qk_norm && !use_new_embed && !distance_aware;
  }

  //! The values that configure the network (they win over the checkpoint's __metadata__).
  nn::ConfigOverrides overrides() const {
    nn::ConfigOverrides o;
    if (num_heads) o.num_heads = num_heads->value;
    if (new_condition) o.new_condition = new_condition->value;
    if (mlp_ratio) o.mlp_ratio = mlp_ratio->value;
    return o;
  }

  //! Throws tim::Error naming the key, where it is, and both values when the YAML contradicts
  //! the configuration the checkpoint's shapes gave: a nn::C2IConfig or a nn::T2IConfig
  //! (`num_classes` is checked for C2I only; a text-to-image network has no label table).
  //! Example: `yaml.check_against(model.config);`
  template <class Config>
    requires std::is_base_of_v<nn::BackboneConfig, Config>
  void check_against(const Config& c) const {
    expect(num_heads, c.num_heads, "the checkpoint's num_heads");
    expect(depth, c.depth, "the checkpoint's blocks");
    expect(hidden_size, c.hidden, "the checkpoint's tensor shapes");
    expect(patch_size, c.patch, "the checkpoint's tensor shapes");
    expect(in_channels, c.in_channels, "the checkpoint's tensor shapes");
    if constexpr (std::is_same_v<Config, nn::C2IConfig>)
      expect(num_classes, c.num_classes, "the checkpoint's label table");
    expect(lora_hidden_size, c.adaln_hidden, "the checkpoint's adaLN_modulation shapes");
    if (mlp_ratio) {
      // SPEC 3: Hm = (int(D * mlp_ratio) * 2) // 3.
      const auto implied = (static_cast<std::int64_t>(static_cast<double>(c.hidden) * mlp_ratio->value) * 2) / 3;
      check(implied == c.mlp_hidden, "config '", path, "': mlp_ratio ", mlp_ratio->value, " (at ", mlp_ratio->where,
            ") gives an MLP width of ", implied, " but the checkpoint's mlp.fc1_g has ", c.mlp_hidden, " rows");
    }
    expect(qk_norm, c.qk_norm, "the checkpoint (attn.q_norm tensors)");
    expect(use_new_embed, c.separate_delta_embedder, "the checkpoint (delta_embedder tensors)");
    expect(distance_aware, c.interval_qkv, "the checkpoint (attn.qkv_d tensors)");
    if (new_condition) {
      const auto parsed = nn::parse_new_condition(new_condition->value);
      check(parsed == c.new_condition, "config '", path, "': new_condition '", new_condition->value, "' (at ",
            new_condition->where, ") contradicts the model's '", nn::new_condition_name(c.new_condition), "'");
    }
  }

 private:
  template <class V>
  void expect(const std::optional<YamlValue<V>>& found, V actual, const char* source) const {
    if (!found || found->value == actual) return;
    fail("config '", path, "': ", key_of(found->where), " ", show(found->value), " (at ", found->where,
         ") contradicts ", source, ", which give ", show(actual));
  }
  static std::string key_of(const std::string& where) {
    const auto dot = where.rfind('.');
    return dot == std::string::npos ? where : where.substr(dot + 1);
  }
  template <class V>
  static std::string show(const V& v) {
    if constexpr (std::is_same_v<V, bool>) {
      return v ? "true" : "false";
    } else {
      std::ostringstream o;
      o << v;
      return o.str();
    }
  }
};

namespace detail {

// Walks the YAML tree and records every network key it meets, at any depth.
class YamlNetworkKeyFinder {
 public:
  explicit YamlNetworkKeyFinder(YamlNetworkConfig& out) : out_(out) {}

  void walk(const YAML::Node& node, const std::string& where, int depth) {
    // Aliases can make a YAML graph very deep (or, with some parsers, cyclic); real configs are
    // a handful of levels.
    if (depth > max_depth) fail("config '", out_.path, "': nesting deeper than ", max_depth, " levels at ", where);
    if (node.IsMap()) {
      for (const auto& entry : node) {
        const std::string key = entry.first.IsScalar() ? entry.first.Scalar() : std::string("?");
        const std::string child = where.empty() ? key : where + "." + key;
        if (entry.second.IsScalar() && record(key, entry.second, child)) continue;
        walk(entry.second, child, depth + 1);
      }
    } else if (node.IsSequence()) {
      for (std::size_t i = 0; i < node.size(); ++i)
        walk(node[i], where + "[" + std::to_string(i) + "]", depth + 1);
    }
  }

 private:
  static constexpr int max_depth = 64;

  // Records `key` when it is a network key; returns whether it was.
  bool record(const std::string& key, const YAML::Node& value, const std::string& where) {
    if (key == "num_heads") return put(out_.num_heads, value, where);
    if (key == "new_condition") return put(out_.new_condition, value, where);
    if (key == "depth") return put(out_.depth, value, where);
    if (key == "hidden_size") return put(out_.hidden_size, value, where);
    if (key == "patch_size") return put(out_.patch_size, value, where);
    if (key == "in_channels") return put(out_.in_channels, value, where);
    if (key == "num_classes") return put(out_.num_classes, value, where);
    if (key == "lora_hidden_size") return put(out_.lora_hidden_size, value, where);
    if (key == "mlp_ratio") return put(out_.mlp_ratio, value, where);
    if (key == "qk_norm") return put(out_.qk_norm, value, where);
    if (key == "use_new_embed") return put(out_.use_new_embed, value, where);
    if (key == "distance_aware") return put(out_.distance_aware, value, where);
    return false;
  }

  template <class V>
  static const char* kind() {
    if constexpr (std::is_same_v<V, bool>) return "a boolean (true/false)";
    else if constexpr (std::is_same_v<V, double>) return "a number";
    else if constexpr (std::is_same_v<V, std::string>) return "a string";
    else return "an integer";
  }

  template <class V>
  bool put(std::optional<YamlValue<V>>& slot, const YAML::Node& node, const std::string& where) {
    if (node.IsNull()) return true;  // `key: null` or `key: ~` says nothing
    V value{};
    try {
      value = node.as<V>();
    } catch (const YAML::Exception&) {
      fail("config '", out_.path, "': ", where, " must be ", kind<V>(), ", got '", node.Scalar(), "'");
    }
    if constexpr (std::is_same_v<V, std::string>) {
      try {
        (void)nn::parse_new_condition(value);
      } catch (const Error& e) {
        fail("config '", out_.path, "': ", where, ": ", e.what());
      }
    }
    if (slot && !(slot->value == value))
      fail("config '", out_.path, "': key '", where.substr(where.rfind('.') + 1), "' appears twice with different values: ",
           node_text(slot->value), " (at ", slot->where, ") and ", node_text(value), " (at ", where, ")");
    if (!slot) slot = YamlValue<V>{std::move(value), where};
    return true;
  }

  template <class V>
  static std::string node_text(const V& v) {
    std::ostringstream o;
    if constexpr (std::is_same_v<V, bool>) o << (v ? "true" : "false");
    else if constexpr (std::is_same_v<V, std::string>) o << "'" << v << "'";
    else o << v;
    return o.str();
  }

  YamlNetworkConfig& out_;
};

}  // namespace detail

//! Reads a YAML config and finds the network keys anywhere in its tree: the released configs
//! nest them under `model: network: params:`, but any nesting works. Keys read: num_heads,
//! new_condition (used), and depth, hidden_size, patch_size, in_channels, num_classes,
//! lora_hidden_size, mlp_ratio, qk_norm, use_new_embed, distance_aware (checked against the
//! checkpoint by check_against). A key found twice with different values, a value of the wrong
//! type, an unreadable file or malformed YAML throws tim::Error naming the file.
//! Example: `auto yaml = tim::io::read_yaml_network_config("configs/c2i/tim_xl_p2_256.yaml");`
inline YamlNetworkConfig read_yaml_network_config(const std::string& path) {
  YamlNetworkConfig config;
  config.path = path;
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);
  } catch (const YAML::BadFile&) {
    fail("cannot open YAML config '", path, "' (missing or unreadable)");
  } catch (const YAML::Exception& e) {
    fail("malformed YAML config '", path, "': ", e.what());
  }
  try {
    detail::YamlNetworkKeyFinder(config).walk(root, "", 0);
  } catch (const YAML::Exception& e) {
    fail("malformed YAML config '", path, "': ", e.what());
  }
  return config;
}

//! The overrides a YAML config gives (num_heads, new_condition, mlp_ratio); see
//! read_yaml_network_config for the lookup rule and the errors.
//! Example: `auto model = tim::load_c2i<float>(path, tim::io::read_yaml_config("cfg.yaml"));`
inline nn::ConfigOverrides read_yaml_config(const std::string& path) {
  return read_yaml_network_config(path).overrides();
}

}  // namespace tim::io
