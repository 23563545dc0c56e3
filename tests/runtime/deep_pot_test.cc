// DeepPot against the eager deepmd/dpkit model (cases written by make_cases.py; CASES_DIR names the folder):
// the regular graph through a single-rank plan and through an explicit mapping, the with-comm graph on
// the self-exchange plan, NULL atoms interleaved anywhere, per-atom outputs, and the error paths.
#include "deepmd/runtime/deep_pot.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "deepmd/ops/plan.h"
#include "deepmd/runtime/deep_spin.h"
#include "deepmd/runtime/model_deviation.h"
#include "deepmd/runtime/periodic_images.h"
#include "deepmd/runtime/standalone.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace deepmd::runtime {
namespace {

using ::testing::HasSubstr;

struct Case {
  std::string name, archive;
  std::array<double, 3> box;
  std::vector<double> coord, force, virial, atom_energy, spin, force_mag;
  std::vector<int> atype;
  double energy;
};

std::vector<Case> LoadCases() {
  const char* dir = std::getenv("CASES_DIR");
  EXPECT_NE(dir, nullptr) << "set CASES_DIR";
  std::ifstream in(std::string(dir ? dir : ".") + "/cases.json");
  std::vector<Case> cases;
  for (const auto& j : nlohmann::json::parse(in)) {
    Case c;
    c.name = j["name"];
    c.archive = j["archive"];
    c.box = j["box"];
    c.coord = j["coord"].get<std::vector<double>>();
    c.atype = j["atype"].get<std::vector<int>>();
    c.energy = j["energy"];
    c.force = j["force"].get<std::vector<double>>();
    c.virial = j["virial"].get<std::vector<double>>();
    c.atom_energy = j["atom_energy"].get<std::vector<double>>();
    if (j.contains("spin")) {
      c.spin = j["spin"].get<std::vector<double>>();
      c.force_mag = j["force_mag"].get<std::vector<double>>();
    }
    cases.push_back(std::move(c));
  }
  return cases;
}

// One evaluation of a case's system (optionally with NULL atoms inserted), folded onto owners.
struct Result {
  double energy;
  std::vector<double> force, force_mag, virial, atom_energy;
  std::string graph;
};

absl::StatusOr<Result> Evaluate(const Case& c, DeepPotOptions options, bool explicit_mapping,
                                const std::vector<int>& null_before = {}) {
  // Local atoms: the case's atoms, with NULL atoms (type -1) placed before the listed indices.
  std::vector<double> coord;
  std::vector<int> atype, real_index;  // real_index: case atom of each local atom, or -1
  std::vector<double> spin;
  const int n = static_cast<int>(c.atype.size());
  std::mt19937 rng(3);
  std::uniform_real_distribution<double> unit(0, 1);
  for (int i = 0; i < n; ++i) {
    for (int k = 0; k < static_cast<int>(std::count(null_before.begin(), null_before.end(), i)); ++k) {
      for (int d = 0; d < 3; ++d) coord.push_back(unit(rng) * c.box[d]);
      atype.push_back(-1);
      real_index.push_back(-1);
      for (int d = 0; d < 3; ++d) spin.push_back(0.7);
    }
    for (int d = 0; d < 3; ++d) coord.push_back(c.coord[3 * i + d]);
    atype.push_back(c.atype[i]);
    real_index.push_back(i);
    for (int d = 0; d < 3 && !c.spin.empty(); ++d) spin.push_back(c.spin[3 * i + d]);
  }
  absl::StatusOr<std::unique_ptr<DeepPot>> pot = DeepPot::Load(c.archive, options);
  if (!pot.ok()) return pot.status();
  // Spin models: images reach as far beyond rcut as virtual atoms sit from their real atoms.
  const ArchiveMetadata& meta = (*pot)->metadata();
  const double margin = meta.is_spin ? VirtualAtomMargin(meta, atype, spin) : 0.0;
  absl::StatusOr<PeriodicImages> images = MakePeriodicImages(coord, c.box, {true, true, true}, meta.rcut + margin);
  if (!images.ok()) return images.status();
  const int64_t nall = static_cast<int64_t>(images->owner.size());
  std::vector<int> ext_type(nall);
  std::vector<double> ext_spin;
  for (int64_t r = 0; r < nall; ++r) {
    ext_type[r] = atype[images->owner[r]];
    for (int d = 0; d < 3 && !c.spin.empty(); ++d) ext_spin.push_back(spin[3 * images->owner[r] + d]);
  }
  ComputeInput in;
  in.coord = images->coord;
  in.atype = ext_type;
  in.nlocal = static_cast<int>(images->nloc);
  in.plan = images->plan;
  if (explicit_mapping) in.mapping = images->owner;
  in.spin = ext_spin;
  in.atomic = true;
  ComputeOutput out;
  if (absl::Status s = (*pot)->Compute(in, out); !s.ok()) return s;
  Result result{out.energy, std::vector<double>(3 * n), std::vector<double>(3 * n), {}, {}, (*pot)->last_graph()};
  result.virial.assign(out.virial.begin(), out.virial.end());
  result.atom_energy.assign(n, 0.0);
  for (int64_t r = 0; r < nall; ++r) {
    const int i = real_index[images->owner[r]];
    for (int d = 0; d < 3; ++d) {
      if (i < 0) {
        EXPECT_EQ(out.force[3 * r + d], 0.0) << "a NULL atom has a force";
        continue;
      }
      result.force[3 * i + d] += out.force[3 * r + d];
      if (!c.spin.empty()) result.force_mag[3 * i + d] += out.force_mag[3 * r + d];
    }
    if (r < images->nloc && i >= 0) result.atom_energy[i] = out.atom_energy[r];
  }
  return result;
}

void ExpectMatches(const Case& c, const Result& got, const std::string& how) {
  SCOPED_TRACE(c.name + " " + how);
  const double tol = 1e-10;
  EXPECT_NEAR(got.energy, c.energy, tol * std::max(1.0, std::abs(c.energy)));
  double fmax = 0;
  for (double f : c.force) fmax = std::max(fmax, std::abs(f));
  for (size_t k = 0; k < c.force.size(); ++k) EXPECT_NEAR(got.force[k], c.force[k], tol * std::max(1.0, fmax)) << k;
  for (int k = 0; k < 9; ++k) EXPECT_NEAR(got.virial[k], c.virial[k], tol * std::max(1.0, std::abs(c.virial[k])));
  for (size_t k = 0; k < c.atom_energy.size(); ++k) EXPECT_NEAR(got.atom_energy[k], c.atom_energy[k], tol) << k;
  for (size_t k = 0; k < c.force_mag.size(); ++k) EXPECT_NEAR(got.force_mag[k], c.force_mag[k], tol) << k;
}

// Models without message passing (se_e2_a, DPA1) have no with-comm graph.
bool HasWithCommGraph(const Case& c) {
  absl::StatusOr<std::unique_ptr<DeepPot>> pot = DeepPot::Load(c.archive);
  return pot.ok() && (*pot)->metadata().has_comm_artifact;
}

class DeepPotCaseTest : public ::testing::TestWithParam<Case> {};

TEST_P(DeepPotCaseTest, RegularGraphEqualsEagerPython) {
  absl::StatusOr<Result> via_plan = Evaluate(GetParam(), {}, /*explicit_mapping=*/false);
  ASSERT_TRUE(via_plan.ok()) << via_plan.status();
  EXPECT_EQ(via_plan->graph, "regular");
  ExpectMatches(GetParam(), *via_plan, "mapping from the single-rank plan");
  absl::StatusOr<Result> via_mapping = Evaluate(GetParam(), {}, /*explicit_mapping=*/true);
  ASSERT_TRUE(via_mapping.ok()) << via_mapping.status();
  ExpectMatches(GetParam(), *via_mapping, "explicit mapping");
}

TEST_P(DeepPotCaseTest, WithCommGraphOnSelfPlanEqualsEagerPython) {
  DeepPotOptions options;
  options.with_comm_on_one_rank = true;
  absl::StatusOr<Result> result = Evaluate(GetParam(), options, false);
  if (!result.ok() && !HasWithCommGraph(GetParam())) GTEST_SKIP() << "no with-comm graph";
  ASSERT_TRUE(result.ok()) << result.status();
  ExpectMatches(GetParam(), *result, "with-comm on the self plan");
}

TEST_P(DeepPotCaseTest, NullAtomsInterleavedChangeNothing) {
  const std::vector<int> null_before = {0, 3, 3, static_cast<int>(GetParam().atype.size()) - 1};
  for (bool with_comm : {false, true}) {
    DeepPotOptions options;
    options.with_comm_on_one_rank = with_comm;
    absl::StatusOr<Result> result = Evaluate(GetParam(), options, false, null_before);
    if (!result.ok() && with_comm && !HasWithCommGraph(GetParam())) continue;
    ASSERT_TRUE(result.ok()) << result.status();
    ExpectMatches(GetParam(), *result, with_comm ? "NULL atoms, with-comm" : "NULL atoms, regular");
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, DeepPotCaseTest, ::testing::ValuesIn(LoadCases()),
                         [](const ::testing::TestParamInfo<Case>& info) {
                           std::string name = info.param.name;
                           std::replace(name.begin(), name.end(), '-', '_');
                           return name;
                         });

class DeepPotErrorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    cases_ = LoadCases();
    for (const Case& c : cases_) {
      if (c.name == "dpa3-1") dpa3_ = &c;
    }
    ASSERT_NE(dpa3_, nullptr);
    pot_ = *DeepPot::Load(dpa3_->archive);
    images_ = *MakePeriodicImages(dpa3_->coord, dpa3_->box, {true, true, true}, pot_->metadata().rcut);
    for (int64_t o : images_.owner) types_.push_back(dpa3_->atype[o]);
    in_.coord = images_.coord;
    in_.atype = types_;
    in_.nlocal = static_cast<int>(images_.nloc);
    in_.plan = images_.plan;
  }
  std::string Error(const ComputeInput& in) {
    ComputeOutput out;
    absl::Status s = pot_->Compute(in, out);
    return s.ok() ? "ok" : std::string(s.message());
  }
  std::vector<Case> cases_;
  const Case* dpa3_ = nullptr;
  std::unique_ptr<DeepPot> pot_;
  PeriodicImages images_;
  std::vector<int> types_;
  ComputeInput in_;
};

TEST_F(DeepPotErrorTest, BadInputsAreNamed) {
  EXPECT_EQ(Error(in_), "ok");
  ComputeInput in = in_;
  in.coord = absl::MakeConstSpan(images_.coord.data(), images_.coord.size() - 1);
  EXPECT_THAT(Error(in), HasSubstr("coord has"));
  std::vector<int> bad_types = types_;
  bad_types[2] = 5;
  in = in_;
  in.atype = bad_types;
  EXPECT_THAT(Error(in), HasSubstr("atom 2 has type 5; this model has types 0..1"));
  in = in_;
  in.nlocal = -1;
  EXPECT_THAT(Error(in), HasSubstr("nlocal -1"));
  std::vector<double> nan_coord = images_.coord;
  nan_coord[4] = NAN;
  in = in_;
  in.coord = nan_coord;
  EXPECT_THAT(Error(in), HasSubstr("atom 1 has a non-finite coordinate"));
  std::vector<double> fparam = {1.0};
  in = in_;
  in.fparam = fparam;
  EXPECT_THAT(Error(in), HasSubstr("fparam has 1 values; the model takes 0"));
  in = in_;
  in.aparam = fparam;
  EXPECT_THAT(Error(in), HasSubstr("aparam has 1 values; the model takes 0 per owned atom"));
  in = in_;
  in.plan = absl::MakeConstSpan(images_.plan.data(), 5);
  EXPECT_THAT(Error(in), HasSubstr("invalid ghost-exchange plan"));
  in = in_;
  in.plan = {};
  EXPECT_THAT(Error(in), HasSubstr("needs the ghost -> owner mapping"));
  // After an error the topology is rebuilt on the next call; after a good rebuild, ago > 0 must see
  // the same system.
  EXPECT_EQ(Error(in_), "ok");
  in = in_;
  in.ago = 3;
  in.nlocal = in_.nlocal - 1;
  EXPECT_THAT(Error(in), HasSubstr("rebuild with ago = 0"));
}

TEST_F(DeepPotErrorTest, TimesCountCallsAndRebuilds) {
  ComputeOutput out;
  ComputeInput in = in_;
  ASSERT_TRUE(pot_->Compute(in, out).ok());  // ago = 0: a rebuild
  in.ago = 1;
  ASSERT_TRUE(pot_->Compute(in, out).ok());
  ASSERT_TRUE(pot_->Compute(in, out).ok());
  const ComputeTimes& t = pot_->times();
  EXPECT_EQ(t.calls, 3);
  EXPECT_EQ(t.rebuilds, 1);
  EXPECT_GT(t.graph_seconds, 0);
  EXPECT_GT(t.neighbor_list_seconds, 0);
  EXPECT_LE(t.neighbor_list_seconds, t.rebuild_seconds);
  EXPECT_GE(t.inputs_seconds, 0);  // the rebuild is not counted twice
  pot_->reset_times();
  EXPECT_EQ(pot_->times().calls, 0);
  EXPECT_EQ(pot_->times().graph_seconds, 0);
}

TEST_F(DeepPotErrorTest, MemoryBytesCountArchiveGraphAndTopology) {
  // Before any call: the archive's bytes (its file) and the regular graph's weights.
  const size_t file = std::ifstream(dpa3_->archive, std::ios::binary | std::ios::ate).tellg();
  const size_t loaded = pot_->memory_bytes();
  EXPECT_GT(loaded, file);
  EXPECT_LT(loaded, 4 * file);
  // A call caches the topology and input tensors: at least coordinates and types of every row and a
  // neighbour-list row per owned atom.
  ComputeOutput out;
  ASSERT_TRUE(pot_->Compute(in_, out).ok());
  const size_t nall = in_.atype.size();
  EXPECT_GE(pot_->memory_bytes(),
            loaded + nall * (3 * sizeof(double) + sizeof(int64_t)) + in_.nlocal * sizeof(int64_t));
  std::printf("archive %zu bytes; held after load %zu, after a call %zu (%zu rows)\n", file, loaded,
              pot_->memory_bytes(), nall);
}

TEST_F(DeepPotErrorTest, OptimizedGraphExecutorGivesTheSameNumbers) {
  ComputeOutput plain, optimized;
  ASSERT_TRUE(pot_->Compute(in_, plain).ok());
  DeepPotOptions options;
  options.optimize_graph = true;
  std::unique_ptr<DeepPot> pot = *DeepPot::Load(dpa3_->archive, options);
  ComputeInput in = in_;
  for (int call = 0; call < 3; ++call) {  // the profiling executor optimises after its profiling runs
    ASSERT_TRUE(pot->Compute(in, optimized).ok());
    in.ago = 1;
  }
  EXPECT_NEAR(optimized.energy, plain.energy, 1e-10 * std::max(1.0, std::abs(plain.energy)));
  for (size_t k = 0; k < plain.force.size(); ++k) EXPECT_NEAR(optimized.force[k], plain.force[k], 1e-10) << k;
}

TEST_F(DeepPotErrorTest, NoAtomsOrOnlyNullAtoms) {
  for (bool with_comm : {false, true}) {
    DeepPotOptions options;
    options.with_comm_on_one_rank = with_comm;
    std::unique_ptr<DeepPot> pot = *DeepPot::Load(dpa3_->archive, options);
    // Nothing at all, and three NULL atoms (one owned, two images): both evaluate to nothing.
    const std::vector<double> coord = {1, 1, 1, 2, 2, 2, 3, 3, 3};
    const std::vector<int> nulls = {-1, -1, -1};
    PeriodicImages none = *MakePeriodicImages({}, dpa3_->box, {true, true, true}, 5.0);
    for (int natoms : {0, 3}) {
      ComputeInput in;
      in.coord = absl::MakeConstSpan(coord.data(), 3 * natoms);
      in.atype = absl::MakeConstSpan(nulls.data(), natoms);
      in.nlocal = natoms ? 1 : 0;
      std::vector<int32_t> plan = none.plan;
      if (natoms) {
        ops::PlanBuilder builder(ops::kNoCommunicator, 0, 1, 1, 2);
        builder.BeginStage().Send(0, std::vector<int32_t>{0, 0}).Receive(0, 2, 1);
        plan = *builder.Build();
      }
      in.plan = plan;
      in.atomic = true;
      ComputeOutput out;
      absl::Status s = pot->Compute(in, out);
      ASSERT_TRUE(s.ok()) << s;
      EXPECT_EQ(out.energy, 0.0);
      EXPECT_EQ(out.force, std::vector<double>(3 * natoms, 0.0));
    }
  }
}

TEST_F(DeepPotErrorTest, ArchiveWithoutWithCommGraphRefusesSeveralRanks) {
  // The decision needs only the plan's size and the archive, so it is made (and fails) the same way on
  // every rank before any message is sent: a plan that claims 2 ranks is enough to see it here.
  std::unique_ptr<DeepPot> pot = *DeepPot::Load(std::string(std::getenv("CASES_DIR")) + "/dpa3_loc.pt2");
  ops::PlanBuilder builder(/*communicator=*/0, /*rank=*/0, /*size=*/2, in_.nlocal, 0);
  const std::vector<int32_t> plan = *builder.Build();
  ComputeInput in = in_;
  in.coord = absl::MakeConstSpan(images_.coord.data(), 3 * in_.nlocal);
  in.atype = absl::MakeConstSpan(types_.data(), in_.nlocal);
  in.plan = plan;
  ComputeOutput out;
  const absl::Status status = pot->Compute(in, out);
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(status.message()), HasSubstr("cannot run on 2 MPI ranks"));
  EXPECT_THAT(std::string(status.message()), HasSubstr("\"use_loc_mapping\": false"));
  // On one rank the same archive runs.
  EXPECT_TRUE(pot->Compute(in_, out).ok());
}

TEST_F(DeepPotErrorTest, MissingArchiveAndWrongPlanSize) {
  EXPECT_THAT(std::string(DeepPot::Load("/nonexistent.pt2").status().message()), HasSubstr("cannot open"));
  std::vector<int> fewer(types_.begin(), types_.end() - 1);
  ComputeInput in = in_;
  in.atype = fewer;
  in.coord = absl::MakeConstSpan(images_.coord.data(), 3 * fewer.size());
  EXPECT_THAT(Error(in), HasSubstr("the ghost-exchange plan describes"));
}

TEST_F(DeepPotErrorTest, ModelDeviationOfTwoModelsIsHalfTheirDifference) {
  std::vector<std::string> paths;
  for (const Case& c : cases_) {
    if (c.name == "dpa3-1" || c.name == "dpa2-1") paths.push_back(c.archive);
  }
  ASSERT_EQ(paths.size(), 2u);
  absl::StatusOr<std::unique_ptr<ModelDeviation>> devi = ModelDeviation::Load(paths);
  ASSERT_TRUE(devi.ok()) << devi.status();
  std::vector<ComputeOutput> outputs;
  ASSERT_TRUE((*devi)->Compute(in_, outputs).ok());
  // Each model's output is what that model gives alone.
  for (size_t k = 0; k < 2; ++k) {
    ComputeOutput alone;
    ASSERT_TRUE(DeepPot::Load(paths[k]).value()->Compute(in_, alone).ok());
    EXPECT_EQ(outputs[k].energy, alone.energy);
    EXPECT_EQ(outputs[k].force, alone.force);
  }
  // Fold onto owned atoms, then for two models the deviation is |a - b| / 2 (a closed form, not the
  // general formula).
  const int natoms = in_.nlocal;
  std::vector<std::vector<double>> forces(2, std::vector<double>(3 * natoms, 0.0));
  for (size_t k = 0; k < 2; ++k) {
    for (size_t r = 0; r < images_.owner.size(); ++r) {
      for (int d = 0; d < 3; ++d) forces[k][3 * images_.owner[r] + d] += outputs[k].force[3 * r + d];
    }
  }
  const DeviationStats stats =
      ComputeDeviation(forces, {outputs[0].virial, outputs[1].virial}, {outputs[0].energy, outputs[1].energy}, natoms);
  double max_f = 0, min_f = 1e300, sum_f = 0;
  for (int i = 0; i < natoms; ++i) {
    double d2 = 0;
    for (int d = 0; d < 3; ++d) d2 += std::pow(forces[0][3 * i + d] - forces[1][3 * i + d], 2);
    const double devi = std::sqrt(d2) / 2;
    EXPECT_NEAR(stats.atom_devi_f[i], devi, 1e-12);
    max_f = std::max(max_f, devi), min_f = std::min(min_f, devi), sum_f += devi;
  }
  EXPECT_NEAR(stats.max_devi_f, max_f, 1e-12);
  EXPECT_NEAR(stats.min_devi_f, min_f, 1e-12);
  EXPECT_NEAR(stats.avg_devi_f, sum_f / natoms, 1e-12);
  EXPECT_NEAR(stats.devi_e, std::abs(outputs[0].energy - outputs[1].energy) / 2 / natoms, 1e-12);
  double max_v = 0;
  for (int c = 0; c < 9; ++c)
    max_v = std::max(max_v, std::abs(outputs[0].virial[c] - outputs[1].virial[c]) / 2 / natoms);
  EXPECT_NEAR(stats.max_devi_v, max_v, 1e-12);
  EXPECT_GT(stats.max_devi_f, 0);
}

// Triclinic cells and partial periodicity through the standalone entry, against systems that are
// physically the same (or a known multiple) in orthorhombic boxes.
class StandaloneTest : public DeepPotErrorTest {
 protected:
  double Energy(const std::vector<double>& coord, const std::vector<int>& atype, const std::array<double, 9>& cell,
                std::array<bool, 3> periodic, ComputeOutput* keep = nullptr) {
    PeriodicInput in;
    in.coord = coord;
    in.atype = atype;
    in.cell = cell;
    in.periodic = periodic;
    in.atomic = true;
    ComputeOutput out;
    absl::Status s = EvaluatePeriodic(*pot_, in, out);
    EXPECT_TRUE(s.ok()) << s;
    if (keep) *keep = out;
    return out.energy;
  }
};

TEST_F(StandaloneTest, MatchesTheEagerModelInItsBox) {
  const Case& c = *dpa3_;
  ComputeOutput out;
  const double e = Energy(c.coord, c.atype, {c.box[0], 0, 0, 0, c.box[1], 0, 0, 0, c.box[2]}, {true, true, true}, &out);
  EXPECT_NEAR(e, c.energy, 1e-10 * std::abs(c.energy));
  for (size_t k = 0; k < c.force.size(); ++k) EXPECT_NEAR(out.force[k], c.force[k], 1e-10) << k;
  double sum = 0;
  for (double a : out.atom_energy) sum += a;
  EXPECT_NEAR(sum, e, 1e-10 * std::abs(e));
}

TEST_F(StandaloneTest, TriclinicCells) {
  const Case& c = *dpa3_;
  const double a = c.box[0], b = c.box[1], z = c.box[2];
  const double cubic = Energy(c.coord, c.atype, {a, 0, 0, 0, b, 0, 0, 0, z}, {true, true, true});
  // b tilted by a whole period of a: the same lattice, so the same energy.
  EXPECT_NEAR(Energy(c.coord, c.atype, {a, 0, 0, a, b, 0, 0, 0, z}, {true, true, true}), cubic,
              1e-10 * std::abs(cubic));
  // b tilted by half a period: twice this cell is the orthorhombic supercell a x 2b x z with every
  // atom repeated at r + b_tilted.
  const std::array<double, 9> tilted = {a, 0, 0, a / 2, b, 0, 0, 0, z};
  const double e_tilted = Energy(c.coord, c.atype, tilted, {true, true, true});
  std::vector<double> coord2 = c.coord;
  std::vector<int> type2 = c.atype;
  for (size_t i = 0; i < c.atype.size(); ++i) {
    coord2.insert(coord2.end(), {c.coord[3 * i] + a / 2, c.coord[3 * i + 1] + b, c.coord[3 * i + 2]});
    type2.push_back(c.atype[i]);
  }
  const double e_super = Energy(coord2, type2, {a, 0, 0, 0, 2 * b, 0, 0, 0, z}, {true, true, true});
  EXPECT_NEAR(2 * e_tilted, e_super, 1e-10 * std::abs(e_super));
  EXPECT_GT(std::abs(e_tilted - cubic), 1e-6) << "the tilt must matter";
}

TEST_F(StandaloneTest, OpenDirectionEqualsVacuum) {
  // Open along z versus periodic with vacuum wider than the cutoff: the same slab.
  const Case& c = *dpa3_;
  const double rc = pot_->metadata().rcut;
  const double slab = Energy(c.coord, c.atype, {c.box[0], 0, 0, 0, c.box[1], 0, 0, 0, c.box[2]}, {true, true, false});
  const double vacuum =
      Energy(c.coord, c.atype, {c.box[0], 0, 0, 0, c.box[1], 0, 0, 0, c.box[2] + 2 * rc}, {true, true, true});
  EXPECT_NEAR(slab, vacuum, 1e-10 * std::abs(vacuum));
  EXPECT_GT(std::abs(slab - c.energy), 1e-6) << "opening z must matter";
}

TEST(DeepSpinTest, ChecksTheSpinContract) {
  const std::vector<Case> cases = LoadCases();
  const Case* spin_case = nullptr;
  const Case* plain_case = nullptr;
  for (const Case& c : cases) {
    if (c.name == "dpa3_spin-1") spin_case = &c;
    if (c.name == "dpa3-1") plain_case = &c;
  }
  ASSERT_TRUE(spin_case && plain_case);
  EXPECT_THAT(std::string(DeepSpin::Load(plain_case->archive).status().message()), HasSubstr("is not a spin model"));
  std::unique_ptr<DeepSpin> spin = *DeepSpin::Load(spin_case->archive);
  const double margin = VirtualAtomMargin(spin->metadata(), spin_case->atype, spin_case->spin);
  PeriodicImages images =
      *MakePeriodicImages(spin_case->coord, spin_case->box, {true, true, true}, spin->metadata().rcut + margin);
  std::vector<int> types;
  std::vector<double> spins;
  for (int64_t o : images.owner) {
    types.push_back(spin_case->atype[o]);
    for (int d = 0; d < 3; ++d) spins.push_back(spin_case->spin[3 * o + d]);
  }
  ComputeInput in;
  in.coord = images.coord;
  in.atype = types;
  in.nlocal = static_cast<int>(images.nloc);
  in.plan = images.plan;
  ComputeOutput out;
  EXPECT_THAT(std::string(spin->Compute(in, out).message()), HasSubstr("needs a spin vector per atom"));
  in.spin = spins;
  ASSERT_TRUE(spin->Compute(in, out).ok());
  EXPECT_NEAR(out.energy, spin_case->energy, 1e-10 * std::abs(spin_case->energy));
  EXPECT_EQ(out.force_mag.size(), 3 * images.owner.size());
}

TEST(ComputeDeviationTest, RelativeForceDeviation) {
  // One atom, three models: forces (1,0,0), (3,0,0), (2,0,0): mean (2,0,0), std sqrt(2/3).
  const std::vector<std::vector<double>> forces = {{1, 0, 0}, {3, 0, 0}, {2, 0, 0}};
  const std::array<double, 9> zero{};
  DeviationStats stats = ComputeDeviation(forces, {zero, zero, zero}, {0, 0, 0}, 1);
  EXPECT_NEAR(stats.max_devi_f, std::sqrt(2.0 / 3.0), 1e-14);
  stats = ComputeDeviation(forces, {zero, zero, zero}, {0, 0, 0}, 1, /*relative=*/1.0);
  EXPECT_NEAR(stats.max_devi_f, std::sqrt(2.0 / 3.0) / 3.0, 1e-14);
}

TEST(ModelDeviationLoadTest, RefusesDifferentElements) {
  std::vector<std::string> paths;
  for (const Case& c : LoadCases()) {
    if (c.name == "dpa3-1" || c.name == "dpa3_spin-1") paths.push_back(c.archive);
  }
  absl::StatusOr<std::unique_ptr<ModelDeviation>> devi = ModelDeviation::Load(paths);
  ASSERT_FALSE(devi.ok());
  EXPECT_THAT(std::string(devi.status().message()), HasSubstr("must describe the same elements"));
}

}  // namespace
}  // namespace deepmd::runtime
