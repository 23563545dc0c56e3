// metadata.json of a model archive (docs/model_archive.md), parsed and checked.
#ifndef DEEPMD_RUNTIME_METADATA_H_
#define DEEPMD_RUNTIME_METADATA_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace deepmd::runtime {

inline constexpr int kArchiveFormatVersion = 1;

struct ArchiveMetadata {
  int format_version = 0;
  std::string artifact_kind;
  std::vector<std::string> type_map;
  double rcut = 0;
  std::vector<int> sel;
  int nnei = 0;
  int nlayers = 0;
  int dim_fparam = 0;
  int dim_aparam = 0;
  bool has_default_fparam = false;  // the model supplies fparam when none is given
  std::string precision;
  bool is_spin = false;
  std::vector<bool> use_spin;        // spin models only
  std::vector<double> virtual_scale;  // spin models only
  bool has_message_passing = false;
  bool has_message_passing_across_ranks = false;
  bool has_comm_artifact = false;
  std::vector<int> exchanged_feature_widths;
  std::string model_config_json;  // the model's configuration, as JSON text
  std::string descriptor_type;    // deepmd-kit's descriptor type ("dpa3", ...) when the archive says it
};

// Parses and checks metadata.json. Errors name the missing or malformed key; unknown keys are
// ignored; a format version or artifact kind this runtime does not know is an error.
absl::StatusOr<ArchiveMetadata> ParseMetadata(absl::string_view json);

}  // namespace deepmd::runtime

#endif  // DEEPMD_RUNTIME_METADATA_H_
