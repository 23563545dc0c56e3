// The LAMMPS-free pieces of the plugin: pair_style / pair_coeff arguments and the model deviation
// file's format (swap discovery: swap_pattern_test.cc).
#include <string>
#include <vector>

#include "deepmd/lammps/deviation_file.h"
#include "deepmd/lammps/pair_options.h"
#include "gtest/gtest.h"

namespace deepmd::lammps {
namespace {

TEST(PairOptionsTest, ModelsAndKeywords) {
  const std::vector<std::string> args = {"a.pt2",    "b.pt2", "out_freq", "10", "out_file", "devi.txt", "atomic",
                                         "relative", "0.5",   "fparam",   "1",  "2.5",      "aparam",   "3"};
  absl::StatusOr<PairStyleOptions> o = ParsePairStyle(args);
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->models, (std::vector<std::string>{"a.pt2", "b.pt2"}));
  EXPECT_EQ(o->out_freq, 10);
  EXPECT_EQ(o->out_file, "devi.txt");
  EXPECT_TRUE(o->atomic);
  EXPECT_EQ(o->relative, 0.5);
  EXPECT_EQ(o->relative_v, -1);
  EXPECT_EQ(o->fparam, (std::vector<double>{1, 2.5}));
  EXPECT_EQ(o->aparam, (std::vector<double>{3}));
}

TEST(PairOptionsTest, ErrorsNameTheProblem) {
  auto error = [](std::vector<std::string> args) {
    absl::StatusOr<PairStyleOptions> o = ParsePairStyle(args);
    return o.ok() ? std::string("ok") : std::string(o.status().message());
  };
  EXPECT_NE(error({}).find("at least one model"), std::string::npos);
  EXPECT_NE(error({"m.pt2", "out_freq"}).find("'out_freq' needs a value"), std::string::npos);
  EXPECT_NE(error({"m.pt2", "out_freq", "0"}).find("positive integer"), std::string::npos);
  EXPECT_NE(error({"m.pt2", "relative", "x"}).find("expects a number, got 'x'"), std::string::npos);
  EXPECT_NE(error({"m.pt2", "relative", "-1"}).find("must be >= 0"), std::string::npos);
  EXPECT_NE(error({"m.pt2", "fparam"}).find("needs a value"), std::string::npos);
  EXPECT_NE(error({"m.pt2", "fparam", "nan"}).find("expects a number"), std::string::npos);
}

TEST(PairOptionsTest, DeviationKeywordsNeedSeveralModels) {
  auto error = [](std::vector<std::string> args) {
    absl::StatusOr<PairStyleOptions> o = ParsePairStyle(args);
    return o.ok() ? std::string("ok") : std::string(o.status().message());
  };
  for (std::vector<std::string> args :
       std::vector<std::vector<std::string>>{{"m.pt2", "atomic"},
                                             {"m.pt2", "out_file", "d.out"},
                                             {"m.pt2", "relative", "1"},
                                             {"m.pt2", "out_freq", "5", "relative_v", "1"}}) {
    const std::string message = error(args);
    EXPECT_NE(message.find("applies to the model deviation, which needs two or more models"), std::string::npos)
        << message;
    EXPECT_NE(message.find("or remove"), std::string::npos) << message;
  }
  EXPECT_EQ(error({"m.pt2", "out_freq", "5"}), "ok");  // harmless alone (deepmd-kit inputs carry it)
  EXPECT_EQ(error({"a.pt2", "b.pt2", "atomic", "out_file", "d.out"}), "ok");
}

TEST(PairOptionsTest, TypeMapping) {
  const std::vector<std::string> type_map = {"O", "H"};
  absl::StatusOr<std::vector<int>> types = MapTypes({"H", "NULL", "O"}, type_map, 3);
  ASSERT_TRUE(types.ok()) << types.status();
  EXPECT_EQ(*types, (std::vector<int>{-1, 1, -1, 0}));
  absl::StatusOr<std::vector<int>> unknown = MapTypes({"O", "C"}, type_map, 2);
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(unknown.status().message().find("element 'C' (atom type 2)"), std::string::npos);
  EXPECT_NE(unknown.status().message().find("[O H]"), std::string::npos);
  EXPECT_FALSE(MapTypes({"O"}, type_map, 2).ok());  // one name per type
}

TEST(DeviationFileTest, HeaderAndLine) {
  EXPECT_EQ(DeviationFileHeader().substr(0, 12), "#       step");
  runtime::DeviationStats stats;
  stats.max_devi_v = 1, stats.min_devi_v = 2, stats.avg_devi_v = 3;
  stats.max_devi_f = 4, stats.min_devi_f = 5, stats.avg_devi_f = 6, stats.devi_e = 7;
  stats.atom_devi_f = {0.5, 0.25};
  const std::string plain = DeviationFileLine(12, stats, false);
  const std::string atomic = DeviationFileLine(12, stats, true);
  EXPECT_EQ(plain.back(), '\n');
  EXPECT_NE(plain.find("          12   1.0000000000e+00"), std::string::npos) << plain;
  EXPECT_NE(plain.find("7.0000000000e+00\n"), std::string::npos) << plain;
  EXPECT_NE(atomic.find("5.0000000000e-01   2.5000000000e-01\n"), std::string::npos) << atomic;
}

}  // namespace
}  // namespace deepmd::lammps
