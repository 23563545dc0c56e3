#include "deepmd/runtime/archive.h"

#include <caffe2/serialize/inline_container.h>
#include <caffe2/serialize/read_adapter_interface.h>

#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "deepmd/runtime/graph_checks.h"
#include "deepmd/runtime/sha256.h"
#include "deepmd/runtime/zip_directory.h"

namespace deepmd::runtime {

// The archive's bytes and the ZIP reader over them (the reader is not copyable: shared).
struct Archive::Contents {
  class MemoryAdapter : public caffe2::serialize::ReadAdapterInterface {
   public:
    explicit MemoryAdapter(const std::string* bytes) : bytes_(bytes) {}
    size_t size() const override { return bytes_->size(); }
    size_t read(uint64_t pos, void* buf, size_t n, const char* /*what*/) const override {
      if (pos >= bytes_->size()) return 0;
      n = std::min<size_t>(n, bytes_->size() - pos);
      std::memcpy(buf, bytes_->data() + pos, n);
      return n;
    }

   private:
    const std::string* bytes_;
  };

  std::string bytes;
  std::vector<ZipEntry> zip;  // the central directory, names with the top folder
  std::unique_ptr<caffe2::serialize::PyTorchStreamReader> reader;
};

namespace {

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string ExportCommand(const std::string& name) {
  return absl::StrCat("convert it with `bazel run //deepmd/tools:export -- ", name, " --out model.pt2`");
}

// An entry's name below the archive's top folder (how the reader and metadata.json name it).
std::string BelowTop(const std::string& name) {
  const size_t slash = name.find('/');
  return slash == std::string::npos ? name : name.substr(slash + 1);
}

// What the user can do about a damaged file.
constexpr char kCorruptFix[] = "re-export the model or download it again";

absl::Status Corrupt(const std::string& name, absl::string_view why) {
  return absl::DataLossError(absl::StrCat("'", name, "' is corrupt: ", why, ": ", kCorruptFix));
}

// What a file that is not one of our archives is, when it is one of deepmd-kit's, and the one command
// that converts it; empty otherwise.
std::string DeepmdKitFile(const std::string& bytes, const std::string& name,
                          const std::vector<std::string>& zip_entries) {
  if (bytes.size() >= 8 && std::memcmp(bytes.data(), "\x89HDF\r\n\x1a\n", 8) == 0) {
    return absl::StrCat("it is an HDF5 file (deepmd-kit's backend-neutral .dp model): ", ExportCommand(name));
  }
  if (EndsWith(name, ".yaml") || EndsWith(name, ".yml")) {
    return absl::StrCat("it looks like deepmd-kit's backend-neutral .yaml model: ", ExportCommand(name));
  }
  if (EndsWith(name, ".pb")) {
    return absl::StrCat("it looks like a deepmd-kit TensorFlow graph: convert it with `dp --tf convert-backend ", name,
                        " model.dp`, then `bazel run //deepmd/tools:export -- model.dp --out model.pt2`");
  }
  bool model_json = false, torchscript = false, pickle = false;
  for (const std::string& e : zip_entries) {
    // Names as the ZIP stores them (top folder first) or as LibTorch's reader lists them (without it).
    model_json = model_json || EndsWith(e, "extra/model.json") || e == "model.json" || EndsWith(e, "/model.json");
    torchscript = torchscript || e == "constants.pkl" || EndsWith(e, "/constants.pkl") || e.rfind("code/", 0) == 0 ||
                  e.find("/code/") != std::string::npos;
    pickle = pickle || e == "data.pkl" || EndsWith(e, "/data.pkl");
  }
  if (model_json) {
    return absl::StrCat("it is a deepmd-kit export (.pt2 / .pte) that carries its model dict: ", ExportCommand(name));
  }
  if (torchscript) {
    return absl::StrCat("it is a TorchScript model (deepmd-kit's frozen .pth?): convert it with `dp --pt ",
                        "convert-backend ", name, " model.dp`, then `bazel run //deepmd/tools:export -- model.dp ",
                        "--out model.pt2`");
  }
  if (pickle) {
    return absl::StrCat("it is a PyTorch checkpoint (deepmd-kit's training .pt?): freeze it with `dp --pt freeze`, ",
                        "convert the .pth with `dp --pt convert-backend model.pth model.dp`, then ",
                        "`bazel run //deepmd/tools:export -- model.dp --out model.pt2`");
  }
  return "";
}

}  // namespace

const char* GraphEntry(Graph graph) { return graph == Graph::kRegular ? kRegularEntry : kWithCommEntry; }
const char* GraphMethod(Graph graph) { return graph == Graph::kRegular ? "forward_lower" : "forward_lower_with_comm"; }

absl::StatusOr<Archive> Archive::Open(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open model archive '", path, "'"));
  std::ostringstream bytes;
  bytes << in.rdbuf();
  return FromBytes(std::move(bytes).str(), path);
}

absl::StatusOr<Archive> Archive::FromBytes(std::string bytes, std::string name) {
  auto contents = std::make_shared<Contents>();
  contents->bytes = std::move(bytes);
  if (contents->bytes.size() < 4 || std::memcmp(contents->bytes.data(), "PK\x03\x04", 4) != 0) {
    const std::string kit = DeepmdKitFile(contents->bytes, name, {});
    if (!kit.empty()) return absl::InvalidArgumentError(absl::StrCat("'", name, "' is not a model archive: ", kit));
    return absl::InvalidArgumentError(
        absl::StrCat("'", name, "' is not a model archive: not a ZIP file (export models with deepmd/tools:export)"));
  }
  absl::StatusOr<std::vector<ZipEntry>> zip = ReadZipDirectory(contents->bytes);
  if (!zip.ok()) {
    return absl::DataLossError(absl::StrCat("'", name, "' is not a readable model archive (truncated or corrupt ZIP: ",
                                            zip.status().message(), "): ", kCorruptFix));
  }
  contents->zip = *std::move(zip);
  std::vector<std::string> names;
  for (const ZipEntry& e : contents->zip) names.push_back(e.name);
  try {
    contents->reader = std::make_unique<caffe2::serialize::PyTorchStreamReader>(
        std::make_shared<Contents::MemoryAdapter>(&contents->bytes));
  } catch (const c10::Error& e) {
    const std::string kit = DeepmdKitFile(contents->bytes, name, names);
    if (!kit.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("'", name, "' is not a model archive of this project: ", kit));
    }
    return absl::InvalidArgumentError(absl::StrCat("'", name, "' is a ZIP but not a model archive (",
                                                   e.what_without_backtrace(),
                                                   "): export models with deepmd/tools:export"));
  }
  // Before any entry is parsed: damage must read as damage, not as a parse or unpickling error.
  for (const ZipEntry& e : contents->zip) {
    if (absl::Status s = CheckZipCrc(contents->bytes, e); !s.ok()) {
      const std::string top = absl::StrCat(" ", e.name.substr(0, e.name.find('/') + 1));  // named as elsewhere
      return Corrupt(name, absl::StrReplaceAll(s.message(), {{top, " "}}));
    }
  }
  Archive archive(contents, {}, name);
  absl::StatusOr<std::string> json = archive.Read("metadata.json");
  if (!json.ok()) {
    const std::string kit = DeepmdKitFile(contents->bytes, name, contents->reader->getAllRecords());
    if (!kit.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("'", name, "' is not a model archive of this project: ", kit));
    }
    return absl::InvalidArgumentError(absl::StrCat("'", name, "' has no metadata.json: not a model archive of ",
                                                   "this project (export it with deepmd/tools:export)"));
  }
  absl::StatusOr<ArchiveMetadata> metadata = ParseMetadata(*json);
  if (!metadata.ok()) {
    return absl::Status(metadata.status().code(), absl::StrCat("'", name, "': ", metadata.status().message()));
  }
  archive.metadata_ = *std::move(metadata);
  if (absl::Status s = archive.CheckContentHash(); !s.ok()) return s;
  if (!archive.Has(kRegularEntry)) {
    return absl::InvalidArgumentError(absl::StrCat("'", name, "' lacks the regular graph ", kRegularEntry));
  }
  if (archive.metadata_.has_comm_artifact != archive.Has(kWithCommEntry)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "'", name, "': metadata says has_comm_artifact = ", archive.metadata_.has_comm_artifact ? "true" : "false",
        " but the archive ", archive.Has(kWithCommEntry) ? "has" : "lacks", " ", kWithCommEntry));
  }
  return archive;
}

absl::Status Archive::CheckContentHash() const {
  const auto& hashes = metadata_.content_sha256;
  if (hashes.empty()) return absl::OkStatus();  // exported before content hashes: CRC-32s only
  for (Graph graph : {Graph::kRegular, Graph::kWithComm}) {
    if (Has(GraphEntry(graph)) && !hashes.count(GraphEntry(graph))) {
      return Corrupt(name_, absl::StrCat("metadata.json's content_sha256 does not cover ", GraphEntry(graph)));
    }
  }
  for (const auto& [entry, digest] : hashes) {
    const ZipEntry* found = nullptr;
    for (const ZipEntry& e : contents_->zip) found = BelowTop(e.name) == entry ? &e : found;
    if (!found) return Corrupt(name_, absl::StrCat("entry ", entry, " of metadata.json's content_sha256 is missing"));
    std::string inflated;
    absl::string_view data = StoredData(contents_->bytes, *found);
    if (found->method != 0) {
      absl::StatusOr<std::string> read = Read(entry);
      if (!read.ok()) return read.status();
      inflated = *std::move(read);
      data = inflated;
    }
    if (const std::string actual = Sha256Hex(data); actual != digest) {
      return Corrupt(name_,
                     absl::StrCat("entry ", entry, " does not match its content hash (sha256 ", actual.substr(0, 16),
                                  "..., metadata.json says ", digest.substr(0, 16), "...)"));
    }
  }
  return absl::OkStatus();
}

size_t Archive::size_bytes() const { return contents_->bytes.size(); }

std::vector<std::pair<std::string, size_t>> Archive::Entries() const {
  std::vector<std::pair<std::string, size_t>> entries;
  for (const std::string& record : contents_->reader->getAllRecords()) {
    entries.emplace_back(record, std::get<1>(contents_->reader->getRecord(record)));
  }
  return entries;
}

bool Archive::Has(const std::string& entry) const { return contents_->reader->hasRecord(entry); }

absl::StatusOr<std::string> Archive::Read(const std::string& entry) const {
  try {
    if (!contents_->reader->hasRecord(entry)) {
      return absl::NotFoundError(absl::StrCat("'", name_, "' has no entry ", entry));
    }
    auto [data, size] = contents_->reader->getRecord(entry);
    return std::string(static_cast<const char*>(data.get()), size);
  } catch (const c10::Error& e) {
    return absl::DataLossError(absl::StrCat("'", name_, "': cannot read ", entry, ": ", e.what_without_backtrace()));
  }
}

absl::StatusOr<torch::jit::Module> Archive::LoadGraph(Graph graph) const {
  absl::StatusOr<std::string> bytes = Read(GraphEntry(graph));
  if (!bytes.ok()) return bytes.status();
  std::istringstream stream(*std::move(bytes));
  torch::jit::Module module;
  // The bytes passed their CRC-32 (and content hash): a graph that still does not load was written so.
  const std::string fix = absl::StrCat(" (its bytes are intact, so it was archived this way: re-export the model",
                                       " with this version's exporter)");
  try {
    module = torch::jit::load(stream);
  } catch (const c10::Error& e) {
    std::string why = e.what_without_backtrace();
    if (why.find("deepmd_comm") != std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("'", name_, "': cannot load ", GraphEntry(graph), ": ", why,
                       " (the with-comm graph needs the deepmd_comm operators: ", "link //deepmd/ops)"));
    }
    return absl::InvalidArgumentError(absl::StrCat("'", name_, "': cannot load ", GraphEntry(graph), fix, ": ", why));
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", name_, "': cannot load ", GraphEntry(graph), fix, ": ", e.what()));
  }
  if (!module.find_method(GraphMethod(graph))) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", name_, "': ", GraphEntry(graph), " has no method ", GraphMethod(graph)));
  }
  if (absl::Status s = CheckGraphAgainstMetadata(module, metadata_, GraphEntry(graph)); !s.ok()) {
    return absl::Status(s.code(), absl::StrCat("'", name_, "': ", s.message()));
  }
  return module;
}

}  // namespace deepmd::runtime
