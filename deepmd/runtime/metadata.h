// metadata.json of a model archive (docs/model_archive.md), parsed and checked.
#ifndef DEEPMD_RUNTIME_METADATA_H_
#define DEEPMD_RUNTIME_METADATA_H_

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace deepmd::runtime {

inline constexpr int kArchiveFormatVersion = 1;

// Bounds on what metadata.json may say, checked before anything is sized from it: far beyond any real
// model (deepmd-kit's cutoffs are ~10 A, sel ~10^2-10^3), so only a corrupt or hostile file meets them.
inline constexpr double kMaxRcut = 100.0;  // A
inline constexpr int kMaxTypes = 1000;
inline constexpr int kMaxNeighbors = 100000;  // nnei = sum(sel)
inline constexpr int kMaxLayers = 1000;
inline constexpr int kMaxParamDim = 100000;       // dim_fparam, dim_aparam
inline constexpr int kMaxFeatureWidth = 1000000;  // one exchanged row
inline constexpr double kMaxVirtualScale = 100.0;

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
  std::vector<bool> use_spin;         // spin models only
  std::vector<double> virtual_scale;  // spin models only
  bool has_message_passing = false;
  bool has_message_passing_across_ranks = false;
  bool has_comm_artifact = false;
  std::vector<int> exchanged_feature_widths;
  std::string model_config_json;  // the model's configuration, as JSON text
  std::string descriptor_type;    // deepmd-kit's descriptor type ("dpa3", ...) when the archive says it
  // content_sha256: entry name -> SHA-256 (hex) of its bytes; empty for archives exported before it.
  std::map<std::string, std::string> content_sha256;
};

// Parses and checks metadata.json. Errors name the missing or malformed key; unknown keys are
// ignored; a format version or artifact kind this runtime does not know is an error. Values outside
// the bounds above, and keys that contradict each other or the model configuration stored beside them
// (`model_config`: deepmd-kit's type map, fparam / aparam widths, spin flags; `descriptor`: the
// exporter's reading of the descriptor's cutoff, sel, layers and exchanged widths), are errors too.
absl::StatusOr<ArchiveMetadata> ParseMetadata(absl::string_view json);

}  // namespace deepmd::runtime

#endif  // DEEPMD_RUNTIME_METADATA_H_
