// The metadata checked against what a loaded graph says of itself: the scripted model keeps its type
// map, cutoff, sel, spin flags, layers and fparam / aparam widths as attributes, so an edited or damaged
// metadata.json cannot make the runtime size or feed the graph for a different model.
#ifndef DEEPMD_RUNTIME_GRAPH_CHECKS_H_
#define DEEPMD_RUNTIME_GRAPH_CHECKS_H_

#include <torch/script.h>

#include <string>

#include "absl/status/status.h"
#include "deepmd/runtime/metadata.h"

namespace deepmd::runtime {

// Attributes the graph lacks are skipped (graphs of other exporters); each one present must agree.
// Errors name the key, the entry and both values.
absl::Status CheckGraphAgainstMetadata(const torch::jit::Module& graph, const ArchiveMetadata& metadata,
                                       const std::string& entry);

}  // namespace deepmd::runtime

#endif  // DEEPMD_RUNTIME_GRAPH_CHECKS_H_
