// The archive's integrity checks on their own: SHA-256 against FIPS 180-4's examples, the ZIP directory
// reader and CRC-32 check on hand-built ZIPs (stored and deflated; a flipped bit, a duplicated or
// renamed entry, truncation), and ParseMetadata's bounds and consistency rules, each shown to refuse
// what it must and to accept the unaltered input.
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "deepmd/runtime/metadata.h"
#include "deepmd/runtime/sha256.h"
#include "deepmd/runtime/zip_directory.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/zip_writer.h"

namespace deepmd::runtime {
namespace {

using ::testing::HasSubstr;

TEST(Sha256, FipsExamples) {
  EXPECT_EQ(Sha256Hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(Sha256Hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(Sha256Hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  EXPECT_EQ(Sha256Hex(std::string(1000000, 'a')), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
  // Lengths around the padding's block boundary.
  EXPECT_EQ(Sha256Hex(std::string(55, 'a')), "9f4390f8d30c2dd92ec9f095b65e2b9ae9b0a925a5258e241c9f1e910f734318");
  EXPECT_EQ(Sha256Hex(std::string(64, 'a')), "ffe054fe7ae0cb6dc65c3af9b61d5209f439851db43d0ba5997337df154668eb");
}

std::string Zip(const std::vector<std::pair<std::string, std::string>>& entries, bool deflate = false) {
  return testing::WriteZip(entries, deflate);
}

const std::vector<std::pair<std::string, std::string>> kEntries = {
    {"a/metadata.json", "{\"k\": 1}"}, {"a/model/forward_lower.pt", std::string(5000, 'w') + "weights"}};

TEST(ZipDirectory, ReadsAndChecksStoredAndDeflatedEntries) {
  for (bool deflate : {false, true}) {
    const std::string zip = Zip(kEntries, deflate);
    absl::StatusOr<std::vector<ZipEntry>> entries = ReadZipDirectory(zip);
    ASSERT_TRUE(entries.ok()) << entries.status();
    ASSERT_EQ(entries->size(), 2u);
    EXPECT_EQ((*entries)[1].name, "a/model/forward_lower.pt");
    EXPECT_EQ((*entries)[1].size, kEntries[1].second.size());
    for (const ZipEntry& e : *entries) EXPECT_TRUE(CheckZipCrc(zip, e).ok()) << CheckZipCrc(zip, e);
    if (!deflate) EXPECT_EQ(StoredData(zip, (*entries)[0]), kEntries[0].second);
  }
}

TEST(ZipDirectory, EveryFlippedDataBitFailsTheCrcNamingTheEntry) {
  for (bool deflate : {false, true}) {
    const std::string zip = Zip(kEntries, deflate);
    const std::vector<ZipEntry> entries = *ReadZipDirectory(zip);
    const ZipEntry& graph = entries[1];
    for (uint64_t at = graph.data_offset; at < graph.data_offset + graph.compressed_size; at += 7) {
      std::string bad = zip;
      bad[at] ^= 1 << (at % 8);
      absl::Status s = CheckZipCrc(bad, graph);
      ASSERT_FALSE(s.ok()) << "byte " << at << (deflate ? " (deflated)" : "");
      EXPECT_THAT(s.message(), HasSubstr("entry a/model/forward_lower.pt"));
    }
  }
}

TEST(ZipDirectory, RefusesDuplicatesRenamesAndTruncation) {
  EXPECT_THAT(ReadZipDirectory(Zip({kEntries[0], kEntries[0]})).status().message(), HasSubstr("appears twice"));
  std::string renamed = Zip(kEntries);
  renamed[30] = 'b';  // the first local header's name: a/metadata.json -> b/metadata.json
  EXPECT_THAT(ReadZipDirectory(renamed).status().message(), HasSubstr("named differently in its local header"));
  const std::string zip = Zip(kEntries);
  for (size_t n : {size_t{0}, size_t{10}, zip.size() / 2, zip.size() - 1}) {
    EXPECT_FALSE(ReadZipDirectory(zip.substr(0, n)).ok()) << n;
  }
  EXPECT_FALSE(ReadZipDirectory(zip + "junk").ok());
}

// The metadata of a small spin DPA3 as the exporter writes it.
nlohmann::json Metadata() {
  return nlohmann::json::parse(R"({
    "format_version": 1, "artifact_kind": "torchscript", "type_map": ["Ni", "O"], "ntypes": 2, "rcut": 4.0,
    "sel": [8], "nnei": 8, "nlayers": 2, "dim_fparam": 0, "dim_aparam": 1, "precision": "float64",
    "is_spin": true, "use_spin": [true, false], "virtual_scale": [0.3, 0.0], "has_message_passing": true,
    "has_message_passing_across_ranks": true, "has_comm_artifact": true, "exchanged_feature_widths": [16, 16],
    "model_config": {"type_map": ["Ni", "O"], "descriptor": {"type": "dpa3"}, "fitting_net": {"numb_aparam": 1},
                     "spin": {"use_spin": [true, false]}},
    "descriptor": {"type": "dpa3", "rcut": 4.0, "sel": [8], "nlayers": 2, "exchanged_widths": [8, 8]},
    "content_sha256": {"model/forward_lower.pt": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"}
  })");
}

absl::Status Parse(const nlohmann::json& j) { return ParseMetadata(j.dump()).status(); }

TEST(Metadata, TheExportersMetadataParses) {
  absl::StatusOr<ArchiveMetadata> m = ParseMetadata(Metadata().dump());
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->content_sha256.size(), 1u);
  nlohmann::json old = Metadata();
  old.erase("content_sha256");
  EXPECT_TRUE(ParseMetadata(old.dump())->content_sha256.empty());
  // deepmd-kit may list the types with spin by index.
  old["model_config"]["spin"]["use_spin"] = {0};
  EXPECT_TRUE(Parse(old).ok()) << Parse(old);
}

TEST(Metadata, AbsurdValuesAreRefusedNamingTheKey) {
  const std::vector<std::pair<std::string, nlohmann::json>> cases = {
      {"rcut", 1e6},
      {"rcut", -1.0},
      {"rcut", 0.0},
      {"rcut", "6"},
      {"nnei", 100000000000LL},
      {"nnei", 1.5},
      {"sel", {-3}},
      {"sel", {100000000000LL}},
      {"sel", nlohmann::json::array()},
      {"dim_fparam", -1},
      {"dim_aparam", 1e9},
      {"nlayers", -2},
      {"ntypes", 0},
      {"ntypes", 1000000},
      {"exchanged_feature_widths", {16, 0}},
      {"virtual_scale", {1e300, 0.0}},
      {"type_map", nlohmann::json::array()},
      {"format_version", 1.5},
      {"content_sha256", {{"model/forward_lower.pt", "xyz"}}},
  };
  for (const auto& [key, value] : cases) {
    nlohmann::json j = Metadata();
    j[key] = value;
    absl::Status s = Parse(j);
    EXPECT_FALSE(s.ok()) << key << " = " << value.dump();
    EXPECT_THAT(s.message(), HasSubstr(key)) << value.dump();
  }
}

TEST(Metadata, ContradictionsAreRefusedNamingTheKey) {
  struct Case {
    const char* key;  // named in the message
    std::function<void(nlohmann::json&)> edit;
  };
  const std::vector<Case> cases = {
      {"nnei", [](auto& j) { j["nnei"] = 9; }},
      {"nnei", [](auto& j) { j["sel"] = {9}; }},
      {"ntypes", [](auto& j) { j["ntypes"] = 3; }},
      {"type_map",
       [](auto& j) {
         j["type_map"] = {"O", "Ni"};
       }},
      {"type_map",
       [](auto& j) {
         j["type_map"] = {"O", "O"};
       }},
      {"exchanged_feature_widths", [](auto& j) { j["nlayers"] = 3; }},
      {"exchanged_feature_widths", [](auto& j) { j["exchanged_feature_widths"] = {16}; }},
      {"exchanged_feature_widths",
       [](auto& j) {
         j["exchanged_feature_widths"] = {16, 18};
       }},
      {"exchanged_feature_widths",
       [](auto& j) {
         j["exchanged_feature_widths"] = {15, 16};
       }},
      {"has_message_passing", [](auto& j) { j["has_message_passing"] = false; }},
      {"has_message_passing_across_ranks",
       [](auto& j) { j["has_message_passing_across_ranks"] = false, j["has_comm_artifact"] = false; }},
      {"dim_aparam", [](auto& j) { j["dim_aparam"] = 2; }},
      {"dim_fparam", [](auto& j) { j["dim_fparam"] = 1; }},
      {"use_spin", [](auto& j) { j["use_spin"] = {true}; }},
      {"use_spin",
       [](auto& j) {
         j["use_spin"] = {false, true};
       }},
      {"is_spin", [](auto& j) { j["is_spin"] = false; }},
      {"rcut", [](auto& j) { j["rcut"] = 4.5; }},
      {"nlayers", [](auto& j) { j["descriptor"]["nlayers"] = 1; }},
      {"sel", [](auto& j) { j["descriptor"]["sel"] = {9}; }},
  };
  for (const Case& c : cases) {
    nlohmann::json j = Metadata();
    c.edit(j);
    absl::Status s = Parse(j);
    EXPECT_FALSE(s.ok()) << c.key << ": " << j.dump();
    EXPECT_THAT(s.message(), HasSubstr(c.key)) << j.dump();
  }
  // The descriptor may select per type where the metadata keeps the sum (se_e2_a).
  nlohmann::json per_type = Metadata();
  per_type["descriptor"]["sel"] = {3, 5};
  EXPECT_TRUE(Parse(per_type).ok()) << Parse(per_type);
}

}  // namespace
}  // namespace deepmd::runtime
