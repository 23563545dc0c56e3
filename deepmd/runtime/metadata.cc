#include "deepmd/runtime/metadata.h"

#include <cmath>
#include <set>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace deepmd::runtime {
namespace {

using Json = nlohmann::json;

absl::Status Bad(absl::string_view key, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat("archive metadata.json: key '", key, "' ", why));
}

// Keys that disagree: the file was altered or damaged after export, so the model it describes is unknown.
absl::Status Contradicts(absl::string_view key, absl::string_view why) {
  return Bad(key, absl::StrCat(why, ": the metadata is inconsistent (corrupt or edited); re-export the model or ",
                               "download it again"));
}

// Reads a required key of the given JSON type into `out`.
template <typename T>
absl::Status Get(const Json& j, const char* key, T* out) {
  auto it = j.find(key);
  if (it == j.end()) return Bad(key, "is missing (re-export the model with this version's exporter)");
  try {
    *out = it->get<T>();
  } catch (const Json::exception& e) {
    return Bad(key, absl::StrCat("has the wrong type: ", e.what()));
  }
  return absl::OkStatus();
}

// An integer in [lo, hi]: nlohmann's get<int> would truncate 1.5 and wrap 1e11 silently.
absl::Status ToInt(const Json& v, absl::string_view key, int64_t lo, int64_t hi, int* out) {
  if (!v.is_number_integer()) return Bad(key, absl::StrCat("must hold integers, not ", v.dump()));
  // Non-negative JSON integers are unsigned: compared as such, so that 2^64 - 1 does not become -1.
  const bool in_range = v.is_number_unsigned() ? v.get<uint64_t>() <= static_cast<uint64_t>(hi) &&
                                                     (lo <= 0 || v.get<uint64_t>() >= static_cast<uint64_t>(lo))
                                               : v.get<int64_t>() >= lo && v.get<int64_t>() <= hi;
  if (!in_range) return Bad(key, absl::StrCat("holds ", v.dump(), "; it must lie in [", lo, ", ", hi, "]"));
  *out = static_cast<int>(v.get<int64_t>());
  return absl::OkStatus();
}

absl::Status GetInt(const Json& j, const char* key, int64_t lo, int64_t hi, int* out) {
  auto it = j.find(key);
  if (it == j.end()) return Bad(key, "is missing (re-export the model with this version's exporter)");
  return ToInt(*it, key, lo, hi, out);
}

absl::Status GetInts(const Json& j, const char* key, int64_t lo, int64_t hi, std::vector<int>* out) {
  auto it = j.find(key);
  if (it == j.end()) return Bad(key, "is missing (re-export the model with this version's exporter)");
  if (!it->is_array()) return Bad(key, absl::StrCat("has the wrong type: ", it->dump(), " is not a list"));
  out->resize(it->size());
  for (size_t k = 0; k < it->size(); ++k) {
    if (absl::Status s = ToInt((*it)[k], key, lo, hi, &(*out)[k]); !s.ok()) return s;
  }
  return absl::OkStatus();
}

// Bounds and relations among metadata's own keys.
absl::Status CheckSelf(const ArchiveMetadata& m, const Json& j) {
  const int ntypes = static_cast<int>(m.type_map.size());
  if (ntypes == 0) return Bad("type_map", "is empty");
  if (ntypes > kMaxTypes) return Bad("type_map", absl::StrCat("has ", ntypes, " types; at most ", kMaxTypes));
  std::set<std::string> names;
  for (const std::string& name : m.type_map) {
    if (name.empty() || name.size() > 64) return Bad("type_map", absl::StrCat("has the element name '", name, "'"));
    if (!names.insert(name).second) return Contradicts("type_map", absl::StrCat("names '", name, "' twice"));
  }
  if (j.contains("ntypes")) {
    int n = 0;
    if (absl::Status s = GetInt(j, "ntypes", 1, kMaxTypes, &n); !s.ok()) return s;
    if (n != ntypes) return Contradicts("ntypes", absl::StrCat("is ", n, " but type_map has ", ntypes, " types"));
  }
  if (!std::isfinite(m.rcut) || !(m.rcut > 0) || m.rcut > kMaxRcut) {
    return Bad("rcut", absl::StrCat("is ", m.rcut, "; it must be positive and at most ", kMaxRcut, " A"));
  }
  if (m.sel.empty()) return Bad("sel", "is empty");
  int64_t sum = 0;
  for (int s : m.sel) sum += s;
  if (sum != m.nnei) return Contradicts("nnei", absl::StrCat("is ", m.nnei, " but sum(sel) is ", sum));
  if (m.has_message_passing != (m.nlayers > 0)) {
    return Contradicts("has_message_passing",
                       absl::StrCat("is ", m.has_message_passing ? "true" : "false", " with nlayers = ", m.nlayers));
  }
  // One ghost exchange per message-passing layer (docs/model_archive.md).
  if (static_cast<int>(m.exchanged_feature_widths.size()) != m.nlayers) {
    return Contradicts("exchanged_feature_widths", absl::StrCat("lists ", m.exchanged_feature_widths.size(),
                                                                " exchanges for nlayers = ", m.nlayers));
  }
  if (m.has_message_passing_across_ranks != !m.exchanged_feature_widths.empty()) {
    return Contradicts("has_message_passing_across_ranks",
                       absl::StrCat("is ", m.has_message_passing_across_ranks ? "true" : "false", " with ",
                                    m.exchanged_feature_widths.size(), " exchanged widths"));
  }
  if (m.is_spin) {
    for (int w : m.exchanged_feature_widths) {
      if (w % 2) return Contradicts("exchanged_feature_widths", "has an odd width in a spin model ([real | virtual])");
    }
    for (double v : m.virtual_scale) {
      if (!std::isfinite(v) || v < 0 || v > kMaxVirtualScale) {
        return Bad("virtual_scale", absl::StrCat("holds ", v, "; it must lie in [0, ", kMaxVirtualScale, "]"));
      }
    }
  }
  return absl::OkStatus();
}

// `model_config` (deepmd-kit's model section) against the metadata, where it says the same thing.
absl::Status CheckModelConfig(const Json& config, const ArchiveMetadata& m) {
  if (!config.is_object()) return Bad("model_config", "is not an object");
  if (config.empty()) return absl::OkStatus();  // a model file without its definition
  if (auto it = config.find("type_map"); it != config.end()) {
    if (!it->is_array() || *it != Json(m.type_map)) {
      return Contradicts("type_map",
                         absl::StrCat("is [", absl::StrJoin(m.type_map, ", "), "] but model_config says ", it->dump()));
    }
  }
  if (auto fit = config.find("fitting_net"); fit != config.end() && fit->is_object()) {
    for (auto [key, dim] : {std::pair<const char*, int>{"numb_fparam", m.dim_fparam}, {"numb_aparam", m.dim_aparam}}) {
      const Json n = fit->value(key, Json(0));
      if (n.is_number_integer() && n.get<int64_t>() != dim) {
        return Contradicts(std::string(key) == "numb_fparam" ? "dim_fparam" : "dim_aparam",
                           absl::StrCat("is ", dim, " but model_config's fitting_net says ", key, " = ", n.dump()));
      }
    }
  }
  if (config.contains("descriptor") && config.contains("spin") != m.is_spin) {
    return Contradicts("is_spin", absl::StrCat("is ", m.is_spin ? "true" : "false", " but model_config ",
                                               m.is_spin ? "has no" : "has a", " spin section"));
  }
  if (auto spin = config.find("spin"); m.is_spin && spin != config.end() && spin->is_object()) {
    auto use = spin->find("use_spin");
    if (use != spin->end() && use->is_array()) {
      // deepmd-kit writes a flag per type, or the indices of the types with spin.
      std::vector<bool> flags(m.type_map.size(), false);
      bool known = true;
      if (!use->empty() && (*use)[0].is_boolean()) {
        known = use->size() == flags.size();
        for (size_t t = 0; known && t < flags.size(); ++t) flags[t] = (*use)[t].is_boolean() && (*use)[t].get<bool>();
      } else {
        for (const Json& t : *use) {
          known = known && t.is_number_integer() && t.get<int64_t>() >= 0 && t.get<uint64_t>() < flags.size();
          if (known) flags[t.get<size_t>()] = true;
        }
      }
      if (!known || flags != m.use_spin) {
        return Contradicts("use_spin", absl::StrCat("disagrees with model_config's spin.use_spin ", use->dump()));
      }
    }
  }
  return absl::OkStatus();
}

// The sum of a JSON list of integers; -1 when it holds anything else.
int64_t SumOf(const Json& list) {
  int64_t sum = 0;
  for (const Json& v : list) {
    if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() > kMaxNeighbors) return -1;
    sum += v.get<int64_t>();
  }
  return sum;
}

// `descriptor` (the exporter's reading of the descriptor object) against the metadata.
absl::Status CheckDescriptorSummary(const Json& d, const ArchiveMetadata& m) {
  if (!d.is_object()) return Bad("descriptor", "is not an object");
  if (auto it = d.find("rcut"); it != d.end() && (!it->is_number() || it->get<double>() != m.rcut)) {
    return Contradicts("rcut", absl::StrCat("is ", m.rcut, " but the descriptor's cutoff is ", it->dump()));
  }
  // The descriptor may select per type (se_e2_a: [46, 92]) where the metadata keeps their sum.
  if (auto it = d.find("sel");
      it != d.end() && *it != Json(m.sel) && !(it->is_array() && it->size() != m.sel.size() && SumOf(*it) == m.nnei)) {
    return Contradicts("sel",
                       absl::StrCat("is [", absl::StrJoin(m.sel, ", "), "] but the descriptor's is ", it->dump()));
  }
  if (auto it = d.find("nlayers"); it != d.end() && *it != Json(m.nlayers)) {
    return Contradicts("nlayers", absl::StrCat("is ", m.nlayers, " but the descriptor has ", it->dump()));
  }
  if (auto it = d.find("exchanged_widths"); it != d.end()) {
    std::vector<int> expected = m.exchanged_feature_widths;  // spin: [real | virtual] rows, twice as wide
    for (int& w : expected) w /= m.is_spin ? 2 : 1;
    if (*it != Json(expected)) {
      return Contradicts("exchanged_feature_widths",
                         absl::StrCat("is [", absl::StrJoin(m.exchanged_feature_widths, ", "),
                                      "] but the descriptor exchanges ", it->dump()));
    }
  }
  return absl::OkStatus();
}

absl::Status ParseContentHash(const Json& j, ArchiveMetadata& m) {
  auto it = j.find("content_sha256");
  if (it == j.end()) return absl::OkStatus();
  if (!it->is_object() || it->empty()) return Bad("content_sha256", "must map entry names to SHA-256 digests");
  for (const auto& [entry, digest] : it->items()) {
    const bool hex = digest.is_string() && digest.get<std::string>().size() == 64 &&
                     digest.get<std::string>().find_first_not_of("0123456789abcdef") == std::string::npos;
    if (entry.empty() || !hex) {
      return Bad("content_sha256", absl::StrCat("has '", entry, "': ", digest.dump(), ", not a SHA-256 digest in hex"));
    }
    m.content_sha256[entry] = digest.get<std::string>();
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ArchiveMetadata> ParseMetadata(absl::string_view text) {
  Json j = Json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError("archive metadata.json is not a JSON object");
  }
  ArchiveMetadata m;
  absl::Status s;
  auto get = [&](const char* key, auto* out) {
    if (s.ok()) s = Get(j, key, out);
  };
  auto get_int = [&](const char* key, int64_t lo, int64_t hi, int* out) {
    if (s.ok()) s = GetInt(j, key, lo, hi, out);
  };
  auto get_ints = [&](const char* key, int64_t lo, int64_t hi, std::vector<int>* out) {
    if (s.ok()) s = GetInts(j, key, lo, hi, out);
  };
  get_int("format_version", INT32_MIN, INT32_MAX, &m.format_version);
  if (s.ok() && m.format_version != kArchiveFormatVersion) {
    return Bad("format_version", absl::StrCat("is ", m.format_version, "; this runtime reads version ",
                                              kArchiveFormatVersion, ": use a matching runtime or re-export"));
  }
  get("artifact_kind", &m.artifact_kind);
  if (s.ok() && m.artifact_kind != "torchscript") {
    return Bad("artifact_kind", absl::StrCat("is '", m.artifact_kind, "'; this runtime runs 'torchscript' graphs"));
  }
  get("type_map", &m.type_map);
  if (auto it = j.find("rcut"); s.ok() && it != j.end() && !it->is_number()) {
    s = Bad("rcut", absl::StrCat("has the wrong type: ", it->dump(), " is not a number"));
  }
  get("rcut", &m.rcut);
  get_ints("sel", 0, kMaxNeighbors, &m.sel);
  get_int("nnei", 1, kMaxNeighbors, &m.nnei);
  get_int("nlayers", 0, kMaxLayers, &m.nlayers);
  get_int("dim_fparam", 0, kMaxParamDim, &m.dim_fparam);
  get_int("dim_aparam", 0, kMaxParamDim, &m.dim_aparam);
  if (j.contains("has_default_fparam")) get("has_default_fparam", &m.has_default_fparam);
  get("precision", &m.precision);
  get("is_spin", &m.is_spin);
  get("has_message_passing", &m.has_message_passing);
  get("has_message_passing_across_ranks", &m.has_message_passing_across_ranks);
  get("has_comm_artifact", &m.has_comm_artifact);
  get_ints("exchanged_feature_widths", 1, kMaxFeatureWidth, &m.exchanged_feature_widths);
  if (s.ok() && m.is_spin) {
    get("use_spin", &m.use_spin);
    get("virtual_scale", &m.virtual_scale);
  }
  if (!s.ok()) return s;
  if (m.precision != "float64" && m.precision != "float32") {
    return Bad("precision", absl::StrCat("is '", m.precision, "'; this runtime knows float64 and float32"));
  }
  if (m.is_spin && (m.use_spin.size() != m.type_map.size() || m.virtual_scale.size() != m.type_map.size())) {
    return Bad("use_spin", "and 'virtual_scale' need one entry per type of type_map");
  }
  if (m.has_comm_artifact && !m.has_message_passing_across_ranks) {
    return Bad("has_comm_artifact", "is true but has_message_passing_across_ranks is false");
  }
  if (absl::Status st = CheckSelf(m, j); !st.ok()) return st;
  if (auto it = j.find("model_config"); it != j.end()) {
    if (absl::Status st = CheckModelConfig(*it, m); !st.ok()) return st;
    m.model_config_json = it->dump();
  }
  if (auto it = j.find("descriptor"); it != j.end()) {
    if (absl::Status st = CheckDescriptorSummary(*it, m); !st.ok()) return st;
    if (it->contains("type") && (*it)["type"].is_string()) m.descriptor_type = (*it)["type"].get<std::string>();
  }
  if (absl::Status st = ParseContentHash(j, m); !st.ok()) return st;
  return m;
}

}  // namespace deepmd::runtime
