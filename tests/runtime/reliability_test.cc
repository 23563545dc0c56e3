// Physically meaningless input and output are errors that say what is wrong, never a silent NaN, a
// silent wrap or a huge allocation: overlapping atoms (named in the caller's numbering, with their
// distance), non-finite model outputs, degenerate cells, atoms absurdly far outside a periodic cell, and
// a bad DEEPMD_NUM_THREADS; OpenBLAS's threads follow LibTorch's.
//
//   reliability_test SE_E2_A_SMALL.pt2 FPARAM_APARAM.pt2   (registry archives: types O H / O)
#include <array>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "deepmd/runtime/deep_pot.h"
#include "deepmd/runtime/periodic_images.h"
#include "deepmd/runtime/process_policy.h"
#include "deepmd/runtime/standalone.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace deepmd::runtime {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;

std::string g_se_e2_a, g_fparam_aparam;

std::unique_ptr<DeepPot> LoadOrDie(const std::string& path) {
  absl::StatusOr<std::unique_ptr<DeepPot>> pot = DeepPot::Load(path);
  EXPECT_TRUE(pot.ok()) << pot.status();
  return pot.ok() ? *std::move(pot) : nullptr;
}

// Four O/H atoms without ghosts, well apart (2 A); `close` moves atom 3 to 0.01 A from atom 1.
struct Atoms {
  std::vector<double> coord = {0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 2};
  std::vector<int> atype = {0, 1, 1, 0};
  void MoveNextTo(int moved, int to, double distance) {
    for (int d = 0; d < 3; ++d) coord[3 * moved + d] = coord[3 * to + d];
    coord[3 * moved] += distance;
  }
  ComputeInput Input() const {
    ComputeInput in;
    in.coord = coord;
    in.atype = atype;
    in.nlocal = static_cast<int>(atype.size());
    return in;
  }
};

TEST(CloseAtoms, WellApartEvaluates) {
  auto pot = LoadOrDie(g_se_e2_a);
  ComputeOutput out;
  Atoms atoms;
  ASSERT_TRUE(pot->Compute(atoms.Input(), out).ok());
}

TEST(CloseAtoms, NamedByRowWithTheirDistance) {
  auto pot = LoadOrDie(g_se_e2_a);
  Atoms atoms;
  atoms.MoveNextTo(3, 1, 0.01);
  ComputeOutput out;
  absl::Status status = pot->Compute(atoms.Input(), out);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_THAT(std::string(status.message()),
              AllOf(HasSubstr("atom 1 and atom 3 are 0.01 A apart"), HasSubstr("0.1 A")));
}

TEST(CloseAtoms, NamedByTheCallersIds) {
  auto pot = LoadOrDie(g_se_e2_a);
  Atoms atoms;
  atoms.MoveNextTo(3, 1, 0.01);
  const std::vector<int64_t> ids = {101, 102, 103, 104};
  ComputeInput in = atoms.Input();
  in.ids = ids;
  ComputeOutput out;
  absl::Status status = pot->Compute(in, out);
  EXPECT_THAT(std::string(status.message()), HasSubstr("atom 102 and atom 104 are 0.01 A apart")) << status;
}

TEST(CloseAtoms, OnTopOfEachOtherIsAnErrorNotNaN) {
  auto pot = LoadOrDie(g_se_e2_a);
  Atoms atoms;
  atoms.MoveNextTo(2, 0, 0.0);
  ComputeOutput out;
  absl::Status status = pot->Compute(atoms.Input(), out);
  EXPECT_THAT(std::string(status.message()), HasSubstr("atom 0 and atom 2 are 0 A apart"))
      << status << " energy " << out.energy;
}

TEST(CloseAtoms, ThroughAPeriodicImageInTheStandalonePath) {
  auto pot = LoadOrDie(g_se_e2_a);
  PeriodicInput in;
  const std::vector<double> coord = {0.004, 5, 5, 3, 5, 5, 9.998, 5, 5};  // atoms 0 and 2: 0.006 A across x
  const std::vector<int> atype = {0, 1, 1};
  in.coord = coord;
  in.atype = atype;
  in.cell = {10, 0, 0, 0, 10, 0, 0, 0, 10};
  ComputeOutput out;
  absl::Status status = EvaluatePeriodic(*pot, in, out);
  EXPECT_THAT(std::string(status.message()), AllOf(HasSubstr("atom 0 and atom 2 are 0.006 A apart"))) << status;
}

TEST(NonFiniteOutputs, AreErrorsNamingTheQuantity) {
  auto pot = LoadOrDie(g_fparam_aparam);
  Atoms atoms;
  atoms.atype = {0, 0, 0, 0};
  const std::vector<double> fparam = {std::nan("")}, aparam = {1, 1, 1, 1};
  ComputeInput in = atoms.Input();
  in.fparam = fparam;
  in.aparam = aparam;
  ComputeOutput out;
  absl::Status status = pot->Compute(in, out);
  EXPECT_EQ(status.code(), absl::StatusCode::kInternal) << status << " energy " << out.energy;
  EXPECT_THAT(std::string(status.message()), HasSubstr("the model returned a non-finite energy (nan)")) << status;
}

// DEEPMD_NUM_THREADS takes effect at a DeepPot's first call.
absl::Status FirstCallWithThreads(const char* value, int* threads = nullptr) {
  setenv("DEEPMD_NUM_THREADS", value, 1);
  auto pot = LoadOrDie(g_se_e2_a);
  ComputeOutput out;
  Atoms atoms;
  absl::Status status = pot->Compute(atoms.Input(), out);
  if (threads != nullptr) *threads = pot->threads();
  unsetenv("DEEPMD_NUM_THREADS");
  return status;
}

TEST(Threads, NotAPositiveIntegerIsAnErrorNamingTheVariableAndValue) {
  for (const char* value : {"abc", "0", "-2", "4x", "1.5"}) {
    absl::Status status = FirstCallWithThreads(value);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << value;
    EXPECT_THAT(std::string(status.message()),
                HasSubstr(absl::StrCat("DEEPMD_NUM_THREADS='", value, "' is not a positive integer")))
        << status;
  }
}

TEST(Threads, AboveTheHardwareIsCappedWithAWarning) {
  const int hardware = static_cast<int>(std::thread::hardware_concurrency());
  if (hardware <= 0) GTEST_SKIP() << "hardware concurrency unknown";
  const std::string value = std::to_string(2 * hardware + 1);
  int threads = 0;
  testing::internal::CaptureStderr();
  absl::Status status = FirstCallWithThreads(value.c_str(), &threads);
  const std::string err = testing::internal::GetCapturedStderr();
  ASSERT_TRUE(status.ok()) << status;
  EXPECT_EQ(threads, hardware);
  EXPECT_THAT(err, AllOf(HasSubstr("DEEPMD_NUM_THREADS=" + value), HasSubstr(absl::StrCat("using ", hardware))));
  int two = 0;
  ASSERT_TRUE(FirstCallWithThreads("1", &two).ok());
  EXPECT_EQ(two, 1);
}

// OpenBLAS's own pool follows LibTorch's thread count (one buffer per thread: a pool sized for the whole
// machine on every rank retried forever when memory ran out).
TEST(Threads, OpenBlasRunsWithAsManyThreadsAsLibTorch) {
  if (BlasThreads() == 0) GTEST_SKIP() << "LibTorch does not use OpenBLAS here";
  int threads = 0;
  ASSERT_TRUE(FirstCallWithThreads("1", &threads).ok());
  EXPECT_EQ(BlasThreads(), 1);
  const absl::StatusOr<ProcessPolicy> several = PolicyFromEnvironment(/*multi_rank=*/true);
  ASSERT_TRUE(several.ok()) << several.status();
  EXPECT_EQ(several->threads, 1);
  EXPECT_EQ(several->blas_threads, 1);
  EXPECT_THAT(DescribeProcessPolicy(), HasSubstr("1 OpenBLAS thread(s)"));
}

// Denormal floats are flushed to zero on the thread that applied the policy, unless
// DEEPMD_DENORMALS=ieee; anything else is an error naming the variable.
float TimesOne(float x) {
  volatile float one = 1.0f;  // not folded at compile time: the CPU's MXCSR decides
  return x * one;
}

TEST(Denormals, FlushedByDefaultKeptWithIeee) {
  const float denormal = std::numeric_limits<float>::min() / 4;
  setenv("DEEPMD_DENORMALS", "ieee", 1);
  absl::StatusOr<ProcessPolicy> ieee = PolicyFromEnvironment(/*multi_rank=*/true);
  ASSERT_TRUE(ieee.ok()) << ieee.status();
  EXPECT_FALSE(ieee->flush_denormals);
  ApplyProcessPolicy(*ieee);
  EXPECT_EQ(TimesOne(denormal), denormal);
  EXPECT_THAT(DescribeProcessPolicy(), HasSubstr("IEEE denormals"));
  unsetenv("DEEPMD_DENORMALS");
  absl::StatusOr<ProcessPolicy> flush = PolicyFromEnvironment(/*multi_rank=*/true);
  ASSERT_TRUE(flush.ok()) << flush.status();
  EXPECT_TRUE(flush->flush_denormals);
  ApplyProcessPolicy(*flush);
  EXPECT_EQ(TimesOne(denormal), 0.0f);
  EXPECT_THAT(DescribeProcessPolicy(), HasSubstr("denormals flushed to zero"));
  setenv("DEEPMD_DENORMALS", "fast", 1);
  absl::StatusOr<ProcessPolicy> bad = PolicyFromEnvironment(/*multi_rank=*/true);
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("DEEPMD_DENORMALS='fast' is not understood"))
      << bad.status();
  unsetenv("DEEPMD_DENORMALS");
}

// Cells: one atom, cutoff 1 A unless said otherwise.
absl::Status Images(const std::array<double, 9>& cell, std::vector<double> coord = {0.01, 0.01, 0.01},
                    double cutoff = 1.0, std::array<bool, 3> periodic = {true, true, true}) {
  return MakePeriodicImages(coord, cell, periodic, cutoff).status();
}

TEST(Cells, OrdinaryCellsStillWork) {
  EXPECT_TRUE(Images({10, 0, 0, 0, 10, 0, 0, 0, 10}).ok());
  EXPECT_TRUE(Images({10, 0, 0, 3, 10, 0, -2, 1, 10}, {-15, 31, 4}).ok());  // 1.5, 3 cell lengths out
  EXPECT_TRUE(Images({1, 0, 0, 0, 1, 0, 0, 0, 1}, {5000, 0, 0}, 6.0, {false, false, false}).ok());  // open: no wrap
}

TEST(Cells, TinyIsAnError) {
  absl::Status status = Images({0.05, 0, 0, 0, 0.05, 0, 0, 0, 0.05});
  EXPECT_THAT(std::string(status.message()), HasSubstr("the cell is 0.05 A thick across lattice vector a")) << status;
}

TEST(Cells, FlatIsAnError) {
  absl::Status status = Images({10, 0, 0, 0, 10, 0, 0, 0, 1e-4});
  EXPECT_THAT(std::string(status.message()), HasSubstr("thick across lattice vector c")) << status;
  status = Images({10, 0, 0, 0, 10, 0, 5, 5, 1e-4});  // tilted flat: long vectors, every width tiny
  EXPECT_THAT(std::string(status.message()), HasSubstr("0.0002 A thick across lattice vector a")) << status;
}

TEST(Cells, InfiniteOrNonFiniteIsAnError) {
  const double inf = std::numeric_limits<double>::infinity();
  absl::Status status = Images({inf, 0, 0, 0, 10, 0, 0, 0, 10});
  EXPECT_THAT(std::string(status.message()), HasSubstr("lattice vector a (inf, 0, 0) is non-finite")) << status;
  status = Images({10, 0, 0, 0, std::nan(""), 0, 0, 0, 10});
  EXPECT_THAT(std::string(status.message()), HasSubstr("lattice vector b")) << status;
  status = Images({10, 0, 0, 0, 10, 0, 0, 0, 1e200});
  EXPECT_THAT(std::string(status.message()), HasSubstr("lattice vector c (0, 0, 1e+200) is non-finite or longer"))
      << status;
}

TEST(Cells, AtomsAbsurdlyFarOutsideAPeriodicCellAreAnError) {
  absl::Status status = Images({10, 0, 0, 0, 10, 0, 0, 0, 10}, {0, 0, 0, 1, 1, 1e6});
  EXPECT_THAT(std::string(status.message()), AllOf(HasSubstr("atom 1 at (1, 1, 1e+06)"),
                                                   HasSubstr("cell lengths from the cell along the periodic lattice "
                                                             "vector c")))
      << status;
}

// Excluded from the run without the fix (it would allocate gigabytes there): --gtest_filter=-*TooMany*.
TEST(Cells, TooManyImagesIsAnErrorNotAHugeAllocation) {
  std::vector<double> coord(3 * 200, 0.1);
  absl::Status status = Images({0.2, 0, 0, 0, 0.2, 0, 0, 0, 0.2}, coord, 6.0);
  EXPECT_THAT(std::string(status.message()),
              AllOf(HasSubstr("too thin for the cutoff 6 A"), HasSubstr("replicate the cell")))
      << status;
}

}  // namespace
}  // namespace deepmd::runtime

int main(int argc, char** argv) {
  testing::InitGoogleTest(&argc, argv);
  if (argc != 3) {
    std::fprintf(stderr, "usage: reliability_test SE_E2_A_SMALL.pt2 FPARAM_APARAM.pt2\n");
    return 2;
  }
  deepmd::runtime::g_se_e2_a = argv[1];
  deepmd::runtime::g_fparam_aparam = argv[2];
  return RUN_ALL_TESTS();
}
