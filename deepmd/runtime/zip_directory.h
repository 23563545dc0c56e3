// A ZIP's central directory read and checked without LibTorch, and each entry's CRC-32 verified:
// LibTorch's reader (miniz built with MINIZ_DISABLE_ZIP_READER_CRC32_CHECKS) checks none, so a flipped
// bit in a weight would otherwise load as a different model.
#ifndef DEEPMD_RUNTIME_ZIP_DIRECTORY_H_
#define DEEPMD_RUNTIME_ZIP_DIRECTORY_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace deepmd::runtime {

struct ZipEntry {
  std::string name;     // as stored, top folder first
  uint16_t method = 0;  // 0 stored, 8 deflated
  uint32_t crc32 = 0;   // the central directory's
  uint64_t compressed_size = 0;
  uint64_t size = 0;
  uint64_t data_offset = 0;  // first byte of the entry's (compressed) data
};

// The entries of the central directory (ZIP64 too), in order. Each entry's local header must be in the
// file with the same name, its data must lie before the directory, and no name may appear twice.
// Errors say what is corrupt (as "...: the archive is truncated or corrupt" is added by callers).
absl::StatusOr<std::vector<ZipEntry>> ReadZipDirectory(absl::string_view zip);

// Whether the entry's data (inflated for method 8) has the directory's size and CRC-32.
absl::Status CheckZipCrc(absl::string_view zip, const ZipEntry& entry);

// A stored entry's bytes, in place.
absl::string_view StoredData(absl::string_view zip, const ZipEntry& entry);

}  // namespace deepmd::runtime

#endif  // DEEPMD_RUNTIME_ZIP_DIRECTORY_H_
