#include "deepmd/runtime/archive.h"

#include <caffe2/serialize/inline_container.h>
#include <caffe2/serialize/read_adapter_interface.h>

#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"

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
  std::unique_ptr<caffe2::serialize::PyTorchStreamReader> reader;
};

namespace {

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string ExportCommand(const std::string& name) {
  return absl::StrCat("convert it with `bazel run //deepmd/tools:export -- ", name, " --out model.pt2`");
}

// Entry names from a ZIP's central directory (no decompression), for files LibTorch's reader refuses.
std::vector<std::string> ZipEntryNames(const std::string& bytes) {
  auto u16 = [&](size_t at) { return static_cast<uint32_t>(static_cast<unsigned char>(bytes[at])) |
                                     static_cast<uint32_t>(static_cast<unsigned char>(bytes[at + 1])) << 8; };
  auto u32 = [&](size_t at) { return u16(at) | u16(at + 2) << 16; };
  std::vector<std::string> names;
  if (bytes.size() < 22) return names;
  size_t end = std::string::npos;
  for (size_t at = bytes.size() - 22, stop = bytes.size() > 65557 ? bytes.size() - 65557 : 0; at + 1 > stop; --at) {
    if (u32(at) == 0x06054b50) {
      end = at;
      break;
    }
    if (at == 0) break;
  }
  if (end == std::string::npos) return names;
  size_t at = u32(end + 16);
  for (uint32_t k = 0, n = u16(end + 10); k < n && at + 46 <= bytes.size() && u32(at) == 0x02014b50; ++k) {
    const size_t name_len = u16(at + 28), extra = u16(at + 30), comment = u16(at + 32);
    if (at + 46 + name_len > bytes.size()) break;
    names.push_back(bytes.substr(at + 46, name_len));
    at += 46 + name_len + extra + comment;
  }
  return names;
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
const char* GraphMethod(Graph graph) {
  return graph == Graph::kRegular ? "forward_lower" : "forward_lower_with_comm";
}

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
  try {
    contents->reader = std::make_unique<caffe2::serialize::PyTorchStreamReader>(
        std::make_shared<Contents::MemoryAdapter>(&contents->bytes));
  } catch (const c10::Error& e) {
    const std::string kit = DeepmdKitFile(contents->bytes, name, ZipEntryNames(contents->bytes));
    if (!kit.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("'", name, "' is not a model archive of this project: ", kit));
    }
    return absl::InvalidArgumentError(absl::StrCat("'", name, "' is not a readable model archive (truncated or ",
                                                   "corrupt ZIP): ", e.what_without_backtrace()));
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
  if (!archive.Has(kRegularEntry)) {
    return absl::InvalidArgumentError(absl::StrCat("'", name, "' lacks the regular graph ", kRegularEntry));
  }
  if (archive.metadata_.has_comm_artifact != archive.Has(kWithCommEntry)) {
    return absl::InvalidArgumentError(absl::StrCat("'", name, "': metadata says has_comm_artifact = ",
                                                   archive.metadata_.has_comm_artifact ? "true" : "false",
                                                   " but the archive ", archive.Has(kWithCommEntry) ? "has" : "lacks",
                                                   " ", kWithCommEntry));
  }
  return archive;
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
  try {
    module = torch::jit::load(stream);
  } catch (const c10::Error& e) {
    std::string why = e.what_without_backtrace();
    if (why.find("deepmd_comm") != std::string::npos) {
      why += " (the with-comm graph needs the deepmd_comm operators: link //deepmd/ops)";
    }
    return absl::InvalidArgumentError(absl::StrCat("'", name_, "': cannot load ", GraphEntry(graph), ": ", why));
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("'", name_, "': cannot load ", GraphEntry(graph), ": ", e.what()));
  }
  if (!module.find_method(GraphMethod(graph))) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", name_, "': ", GraphEntry(graph), " has no method ", GraphMethod(graph)));
  }
  return module;
}

}  // namespace deepmd::runtime
