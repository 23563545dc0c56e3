// A model archive (.pt2, docs/model_archive.md) read into memory: its entries, its metadata, and its
// TorchScript graphs, loaded from memory (nothing is extracted to disk).
#ifndef DEEPMD_RUNTIME_ARCHIVE_H_
#define DEEPMD_RUNTIME_ARCHIVE_H_

#include <torch/script.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "deepmd/runtime/metadata.h"

namespace deepmd::runtime {

enum class Graph { kRegular, kWithComm };

inline constexpr char kRegularEntry[] = "model/forward_lower.pt";
inline constexpr char kWithCommEntry[] = "model/extra/forward_lower_with_comm.pt";
const char* GraphEntry(Graph graph);
const char* GraphMethod(Graph graph);  // "forward_lower" or "forward_lower_with_comm"

class Archive {
 public:
  // Reads the whole file and checks it: every entry's CRC-32, the metadata (ParseMetadata) and, when
  // metadata.json has content_sha256, every entry it lists. Errors say what is wrong (missing file, not
  // a ZIP, a ZIP that is not a model, damage naming the entry, no metadata, inconsistent metadata).
  static absl::StatusOr<Archive> Open(const std::string& path);
  static absl::StatusOr<Archive> FromBytes(std::string bytes, std::string name);

  const std::string& name() const { return name_; }
  const ArchiveMetadata& metadata() const { return metadata_; }
  size_t size_bytes() const;
  // Entry names relative to the archive's top folder, and their sizes.
  std::vector<std::pair<std::string, size_t>> Entries() const;
  bool Has(const std::string& entry) const;
  absl::StatusOr<std::string> Read(const std::string& entry) const;
  // Whether metadata.json carries content hashes (archives exported before them do not).
  bool has_content_hash() const { return !metadata_.content_sha256.empty(); }
  // Loads a graph from memory and checks that it has its method and agrees with the metadata. The with-comm graph needs
  // the deepmd_comm operators (link //deepmd/ops).
  absl::StatusOr<torch::jit::Module> LoadGraph(Graph graph) const;

 private:
  struct Contents;
  absl::Status CheckContentHash() const;
  Archive(std::shared_ptr<Contents> contents, ArchiveMetadata metadata, std::string name)
      : contents_(std::move(contents)), metadata_(std::move(metadata)), name_(std::move(name)) {}
  std::shared_ptr<Contents> contents_;
  ArchiveMetadata metadata_;
  std::string name_;
};

}  // namespace deepmd::runtime

#endif  // DEEPMD_RUNTIME_ARCHIVE_H_
