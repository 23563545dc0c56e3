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
  EXPECT_NE(error({"m.pt2", "out_freq", "-1"}).find("integer >= 0"), std::string::npos);
  EXPECT_NE(error({"m.pt2", "out_freq", "2.5"}).find("integer >= 0"), std::string::npos);
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
  absl::StatusOr<TypeMapping> types = MapTypes({"H", "NULL", "O"}, type_map, 3);
  ASSERT_TRUE(types.ok()) << types.status();
  EXPECT_EQ(types->model_type, (std::vector<int>{-1, 1, -1, 0}));
  EXPECT_EQ(types->warning, "");
  absl::StatusOr<TypeMapping> unknown = MapTypes({"O", "C"}, type_map, 2);
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(unknown.status().message().find("element 'C' (atom type 2)"), std::string::npos);
  EXPECT_NE(unknown.status().message().find("[O H]"), std::string::npos);
  // One name per type: deepmd-kit's padding with NULL would hide a forgotten name.
  EXPECT_NE(MapTypes({"O"}, type_map, 2).status().message().find("write NULL"), std::string::npos);
  EXPECT_NE(MapTypes({"O", "H", "O"}, type_map, 2).status().message().find("remove the extra"), std::string::npos);
}

TEST(PairOptionsTest, BarePairCoeffMapsTypeTToModelTypeTMinus1) {
  const std::vector<std::string> type_map = {"O", "H", "C"};
  absl::StatusOr<TypeMapping> all = MapTypes({}, type_map, 3);
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_EQ(all->model_type, (std::vector<int>{-1, 0, 1, 2}));
  EXPECT_EQ(all->warning, "");
  absl::StatusOr<TypeMapping> fewer = MapTypes({}, type_map, 2);  // deepmd-kit warns: maybe mislabelled
  ASSERT_TRUE(fewer.ok()) << fewer.status();
  EXPECT_EQ(fewer->model_type, (std::vector<int>{-1, 0, 1}));
  EXPECT_NE(fewer->warning.find("first of the model's elements [O H C]"), std::string::npos) << fewer->warning;
  absl::StatusOr<TypeMapping> more = MapTypes({}, type_map, 4);
  ASSERT_FALSE(more.ok());
  EXPECT_NE(more.status().message().find("4 atom types and the model has 3"), std::string::npos);
}

TEST(PairOptionsTest, PairCoeffMustCoverEveryType) {
  EXPECT_TRUE(CheckCoversAllTypes("*", "*", 3).ok());
  EXPECT_TRUE(CheckCoversAllTypes("1*3", "1*", 3).ok());
  EXPECT_TRUE(CheckCoversAllTypes("*3", "1*3", 3).ok());
  EXPECT_TRUE(CheckCoversAllTypes("1", "1", 1).ok());
  for (auto [a, b] : std::vector<std::pair<std::string, std::string>>{
           {"1", "1"}, {"1*2", "*"}, {"*", "2*"}, {"x", "*"}, {"1*4", "*"}}) {
    absl::Status st = CheckCoversAllTypes(a, b, 3);
    ASSERT_FALSE(st.ok()) << a << " " << b;
    EXPECT_NE(st.message().find("must cover every type (pair_coeff * * ...), not '" + a + " " + b + "'"),
              std::string::npos)
        << st.message();
  }
}

// Every keyword of deepmd-kit's pair_style deepmd / deepspin (source/lmp/pair_deepmd.cpp, is_key) is
// recognised: accepted with its meaning, or refused naming it and why.
TEST(PairOptionsTest, DeepmdKitKeywords) {
  auto parse = [](std::vector<std::string> args) { return ParsePairStyle(args); };
  absl::StatusOr<PairStyleOptions> compute =
      parse({"m.pt2", "fparam_from_compute", "TEMP", "aparam_from_compute", "1"});
  ASSERT_TRUE(compute.ok()) << compute.status();
  EXPECT_EQ(compute->models, std::vector<std::string>{"m.pt2"});
  EXPECT_EQ(compute->fparam_compute, "TEMP");
  EXPECT_EQ(compute->aparam_compute, "1");
  EXPECT_TRUE(compute->fparam_per_step());
  absl::StatusOr<PairStyleOptions> fix = parse({"m.pt2", "fparam_from_fix", "F", "3", "aparam", "0.5"});
  ASSERT_TRUE(fix.ok()) << fix.status();
  EXPECT_EQ(fix->fparam_fix, "F");
  EXPECT_EQ(fix->fparam_fix_index, 2);
  EXPECT_EQ(parse({"m.pt2", "fparam_from_fix", "F"})->fparam_fix_index, -1);  // the fix's scalar
  EXPECT_NE(parse({"m.pt2", "fparam_from_fix", "F", "0"}).status().message().find("positive integer (1-based)"),
            std::string::npos);
  // out_freq 0: no model deviation, as deepmd-kit (the deviation keywords then only warn).
  absl::StatusOr<PairStyleOptions> off = parse({"a.pt2", "b.pt2", "out_freq", "0", "atomic"});
  ASSERT_TRUE(off.ok()) << off.status();
  EXPECT_FALSE(off->deviation_output());
  ASSERT_EQ(off->warnings.size(), 1u);
  EXPECT_NE(off->warnings[0].find("'atomic' has no effect: out_freq 0"), std::string::npos);
  EXPECT_TRUE(parse({"a.pt2", "b.pt2"})->deviation_output());
  // Older spin keywords: accepted (with any number of values) and ignored with a warning naming them.
  absl::StatusOr<PairStyleOptions> spin = parse({"s.pt2", "virtual_len", "0.4", "spin_norm", "1.27", "1.0"});
  ASSERT_TRUE(spin.ok()) << spin.status();
  ASSERT_EQ(spin->warnings.size(), 2u);
  EXPECT_NE(spin->warnings[0].find("'virtual_len' is ignored"), std::string::npos);
  EXPECT_NE(spin->warnings[1].find("'spin_norm' is ignored"), std::string::npos);
  EXPECT_EQ(spin->models, std::vector<std::string>{"s.pt2"});

  auto error = [&](std::vector<std::string> args) {
    absl::StatusOr<PairStyleOptions> o = parse(args);
    return o.ok() ? std::string("ok") : std::string(o.status().message());
  };
  // Refused, naming the keyword and why; they are keywords, never taken for model files.
  EXPECT_NE(error({"m.pt2", "ttm", "TTM"}).find("'ttm' feeds fix ttm's electron temperatures"), std::string::npos);
  EXPECT_NE(error({"m.pt2", "charge_spin", "1", "2"}).find("'charge_spin' feeds models trained with a charge/spin"),
            std::string::npos);
  EXPECT_NE(error({"m.pt2", "fparam", "1", "fparam_from_compute", "T"}).find("one way"), std::string::npos);
  EXPECT_NE(error({"m.pt2", "fparam_from_fix", "F", "fparam_from_compute", "T"}).find("one way"), std::string::npos);
  EXPECT_NE(error({"m.pt2", "aparam", "1", "aparam_from_compute", "A"}).find("one way"), std::string::npos);
  EXPECT_NE(error({"m.pt2", "fparam_from_compute"}).find("'fparam_from_compute' needs a value"), std::string::npos);
  EXPECT_NE(error({"m.pt2", "aparam_from_compute", "atomic"}).find("needs a value"), std::string::npos);
  EXPECT_NE(error({"m.pt2", "fparam", "1", "fparam", "2"}).find("'fparam' is given twice"), std::string::npos);
  // A misspelt keyword reads as a model file: the style then says it is neither (failures_test).
  EXPECT_EQ(parse({"m.pt2", "fparam_from_computes", "T"})->models.size(), 3u);
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
