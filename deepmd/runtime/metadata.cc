#include "deepmd/runtime/metadata.h"

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace deepmd::runtime {
namespace {

using Json = nlohmann::json;

absl::Status Bad(absl::string_view key, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat("archive metadata.json: key '", key, "' ", why));
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
  get("format_version", &m.format_version);
  if (s.ok() && m.format_version != kArchiveFormatVersion) {
    return Bad("format_version", absl::StrCat("is ", m.format_version, "; this runtime reads version ",
                                              kArchiveFormatVersion, ": use a matching runtime or re-export"));
  }
  get("artifact_kind", &m.artifact_kind);
  if (s.ok() && m.artifact_kind != "torchscript") {
    return Bad("artifact_kind", absl::StrCat("is '", m.artifact_kind, "'; this runtime runs 'torchscript' graphs"));
  }
  get("type_map", &m.type_map);
  get("rcut", &m.rcut);
  get("sel", &m.sel);
  get("nnei", &m.nnei);
  get("nlayers", &m.nlayers);
  get("dim_fparam", &m.dim_fparam);
  get("dim_aparam", &m.dim_aparam);
  if (j.contains("has_default_fparam")) get("has_default_fparam", &m.has_default_fparam);
  get("precision", &m.precision);
  get("is_spin", &m.is_spin);
  get("has_message_passing", &m.has_message_passing);
  get("has_message_passing_across_ranks", &m.has_message_passing_across_ranks);
  get("has_comm_artifact", &m.has_comm_artifact);
  get("exchanged_feature_widths", &m.exchanged_feature_widths);
  if (s.ok() && m.is_spin) {
    get("use_spin", &m.use_spin);
    get("virtual_scale", &m.virtual_scale);
  }
  if (!s.ok()) return s;
  if (m.type_map.empty()) return Bad("type_map", "is empty");
  if (!(m.rcut > 0)) return Bad("rcut", absl::StrCat("is ", m.rcut, "; it must be positive"));
  if (m.precision != "float64" && m.precision != "float32") {
    return Bad("precision", absl::StrCat("is '", m.precision, "'; this runtime knows float64 and float32"));
  }
  if (m.is_spin && (m.use_spin.size() != m.type_map.size() || m.virtual_scale.size() != m.type_map.size())) {
    return Bad("use_spin", "and 'virtual_scale' need one entry per type of type_map");
  }
  if (m.has_comm_artifact && !m.has_message_passing_across_ranks) {
    return Bad("has_comm_artifact", "is true but has_message_passing_across_ranks is false");
  }
  if (auto it = j.find("model_config"); it != j.end()) m.model_config_json = it->dump();
  if (auto it = j.find("descriptor"); it != j.end() && it->is_object() && it->contains("type") &&
                                      (*it)["type"].is_string()) {
    m.descriptor_type = (*it)["type"].get<std::string>();
  }
  return m;
}

}  // namespace deepmd::runtime
