// A minimal ZIP writer for tests (stored or deflated entries, no ZIP64): archives rebuilt entry by entry
// with valid CRC-32s, so that what a test changes is only what it means to change.
#ifndef TESTS_SUPPORT_ZIP_WRITER_H_
#define TESTS_SUPPORT_ZIP_WRITER_H_

#include <string>
#include <utility>
#include <vector>

namespace deepmd::testing {

// (name, data) entries in order; names are written as given (duplicates too).
std::string WriteZip(const std::vector<std::pair<std::string, std::string>>& entries, bool deflate = false);

}  // namespace deepmd::testing

#endif  // TESTS_SUPPORT_ZIP_WRITER_H_
