// SHA-256 (FIPS 180-4) of a byte string, as lowercase hex: the content hash an archive's metadata.json
// carries for its graphs (docs/model_archive.md). Written here to need no crypto library.
#ifndef DEEPMD_RUNTIME_SHA256_H_
#define DEEPMD_RUNTIME_SHA256_H_

#include <string>

#include "absl/strings/string_view.h"

namespace deepmd::runtime {

std::string Sha256Hex(absl::string_view data);

}  // namespace deepmd::runtime

#endif  // DEEPMD_RUNTIME_SHA256_H_
