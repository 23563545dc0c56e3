// N ranks == 1 rank for the runtime: each archive evaluated on a periodic system split over a processor
// grid (ghosts made by tests/support/brick, LAMMPS-style, several hops deep when subdomains are thinner
// than the cutoff) must give the energy, forces (summed over images by global id), virial and magnetic
// forces that one process gives for the whole system through the standalone entry. Cases: dense,
// empty subdomains, NULL atoms; a second step reuses the cached topology (ago > 0).
#include <mpi.h>

#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "deepmd/runtime/deep_pot.h"
#include "deepmd/runtime/standalone.h"
#include "tests/support/brick.h"

ABSL_FLAG(std::string, grid, "2,1,1", "processor grid px,py,pz");
ABSL_FLAG(std::string, archives, "", "comma-separated model archives");
ABSL_FLAG(int, atoms, 36, "atoms");

namespace {

using deepmd::testing::Vec3;

struct Totals {
  double energy = 0;
  std::vector<double> force, force_mag;  // per atom id
  std::array<double, 9> virial{};
};

int failures = 0, checks = 0;

void Check(bool ok, const std::string& what, int rank) {
  ++checks;
  if (!ok) {
    ++failures;
    std::fprintf(stderr, "rank %d FAILED: %s\n", rank, what.c_str());
  }
}

double MaxDiff(const std::vector<double>& a, const std::vector<double>& b) {
  double worst = 0;
  for (size_t k = 0; k < a.size(); ++k) worst = std::max(worst, std::abs(a[k] - b[k]));
  return worst;
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  absl::ParseCommandLine(argc, argv);
  MPI_Comm comm;
  MPI_Comm_dup(MPI_COMM_WORLD, &comm);
  const Vec3 box = {9.0, 8.5, 8.0};
  const auto dd = deepmd::testing::Decompose(absl::GetFlag(FLAGS_grid), box, comm);
  const int natoms = absl::GetFlag(FLAGS_atoms);

  const std::vector<std::string> archives = absl::StrSplit(absl::GetFlag(FLAGS_archives), ',', absl::SkipEmpty());
  for (const std::string& archive : archives) {
    // Atoms move up to 0.05 A in step 1: a skin of 0.3 A (ghosts and neighbour lists reach rcut + skin,
    // as LAMMPS's do) keeps the step-0 topology valid.
    constexpr double kSkin = 0.3;
    auto loaded = deepmd::runtime::DeepPot::Load(archive, {.skin = kSkin});
    auto reference_pot = deepmd::runtime::DeepPot::Load(archive);
    if (!loaded.ok() || !reference_pot.ok()) {
      std::fprintf(stderr, "rank %d: %s\n", dd.rank, std::string(loaded.status().message()).c_str());
      MPI_Abort(MPI_COMM_WORLD, 1);
    }
    deepmd::runtime::DeepPot& pot = **loaded;
    const auto& meta = pot.metadata();
    const int ntypes = static_cast<int>(meta.type_map.size());
    struct Case {
      const char* name;
      double fill_x;
      int null_every;
    };
    for (const Case& c : {Case{"dense", 1.0, 0}, Case{"empty subdomains", 0.3, 0}, Case{"NULL atoms", 1.0, 4}}) {
      // The same global system on every rank.
      std::mt19937_64 rng(11);
      std::uniform_real_distribution<double> u(0, 1);
      std::vector<Vec3> atoms;
      std::vector<int> types;
      std::vector<double> spins;
      while (static_cast<int>(atoms.size()) < natoms) {
        const Vec3 p = {u(rng) * box[0] * c.fill_x, u(rng) * box[1], u(rng) * box[2]};
        bool ok = true;
        for (const Vec3& q : atoms) {
          double r2 = 0;
          for (int d = 0; d < 3; ++d) {
            double dx = p[d] - q[d];
            dx -= std::round(dx / box[d]) * box[d];
            r2 += dx * dx;
          }
          ok = ok && r2 > 1.0;
        }
        if (!ok) continue;
        atoms.push_back(p);
        const int id = static_cast<int>(types.size());
        types.push_back(c.null_every && id % c.null_every == 1 ? -1 : id % ntypes);
        for (int d = 0; d < 3; ++d) spins.push_back(u(rng) - 0.5);
      }
      const deepmd::testing::Ghosts ghosts = deepmd::testing::MakeGhosts(dd, atoms, meta.rcut + kSkin, comm);
      const std::vector<int32_t> plan = deepmd::testing::PlanFor(dd, ghosts, comm);
      for (int step = 0; step < 2; ++step) {
        // Step 1 moves every atom a little and reuses the topology (ago = 1).
        std::vector<Vec3> now = atoms;
        for (int i = 0; i < natoms && step == 1; ++i) {
          for (int d = 0; d < 3; ++d) now[i][d] += 0.05 * std::sin(1.7 * i + d);
        }
        // One process, whole system.
        std::vector<double> flat;
        for (const Vec3& a : now) flat.insert(flat.end(), a.begin(), a.end());
        deepmd::runtime::PeriodicInput whole;
        whole.coord = flat;
        whole.atype = types;
        whole.cell = {box[0], 0, 0, 0, box[1], 0, 0, 0, box[2]};
        if (meta.is_spin) whole.spin = spins;
        deepmd::runtime::ComputeOutput ref;
        if (auto s = deepmd::runtime::EvaluatePeriodic(**reference_pot, whole, ref); !s.ok()) {
          std::fprintf(stderr, "reference: %s\n", std::string(s.message()).c_str());
          MPI_Abort(MPI_COMM_WORLD, 1);
        }
        // This rank's rows: each image moved with its atom.
        std::vector<double> coord, row_spin;
        std::vector<int> row_types;
        for (const auto& row : ghosts.rows) {
          for (int d = 0; d < 3; ++d) {
            coord.push_back(row.pos[d] - atoms[row.id][d] + now[row.id][d]);
            row_spin.push_back(spins[3 * row.id + d]);
          }
          row_types.push_back(types[row.id]);
        }
        deepmd::runtime::ComputeInput in;
        in.coord = coord;
        in.atype = row_types;
        in.nlocal = ghosts.nlocal;
        in.plan = plan;
        if (meta.is_spin) in.spin = row_spin;
        in.ago = step;
        deepmd::runtime::ComputeOutput out;
        const absl::Status status = pot.Compute(in, out);
        const std::string name = absl::StrCat(archive.substr(archive.rfind('/') + 1), " ", c.name, " step ", step);
        Check(status.ok(), name + ": " + std::string(status.message()), dd.rank);
        if (!status.ok()) MPI_Abort(MPI_COMM_WORLD, 1);
        Check(dd.size == 1 || !meta.has_message_passing || std::string(pot.last_graph()) == "with-comm",
              name + ": several ranks run the with-comm graph", dd.rank);
        Totals mine;
        mine.energy = out.energy;
        mine.virial = out.virial;
        mine.force.assign(3 * natoms, 0.0);
        mine.force_mag.assign(3 * natoms, 0.0);
        for (size_t r = 0; r < ghosts.rows.size(); ++r) {
          for (int d = 0; d < 3; ++d) {
            mine.force[3 * ghosts.rows[r].id + d] += out.force[3 * r + d];
            if (meta.is_spin) mine.force_mag[3 * ghosts.rows[r].id + d] += out.force_mag[3 * r + d];
          }
        }
        Totals all;
        all.force.resize(3 * natoms);
        all.force_mag.resize(3 * natoms);
        MPI_Allreduce(&mine.energy, &all.energy, 1, MPI_DOUBLE, MPI_SUM, comm);
        MPI_Allreduce(mine.virial.data(), all.virial.data(), 9, MPI_DOUBLE, MPI_SUM, comm);
        MPI_Allreduce(mine.force.data(), all.force.data(), 3 * natoms, MPI_DOUBLE, MPI_SUM, comm);
        MPI_Allreduce(mine.force_mag.data(), all.force_mag.data(), 3 * natoms, MPI_DOUBLE, MPI_SUM, comm);
        const double tol = meta.precision == "float64" ? 1e-10 : 1e-5;
        Check(std::abs(all.energy - ref.energy) <= tol * std::max(1.0, std::abs(ref.energy)),
              absl::StrCat(name, ": energy ", all.energy, " vs ", ref.energy), dd.rank);
        Check(MaxDiff(all.force, ref.force) <= tol,
              absl::StrCat(name, ": forces differ by ", MaxDiff(all.force, ref.force)), dd.rank);
        Check(MaxDiff({all.virial.begin(), all.virial.end()}, {ref.virial.begin(), ref.virial.end()}) <=
                  tol * std::max(1.0, std::abs(ref.virial[0])),
              name + ": virial", dd.rank);
        if (meta.is_spin) {
          Check(MaxDiff(all.force_mag, ref.force_mag) <= tol, name + ": magnetic forces", dd.rank);
        }
        for (int i = 0; i < natoms; ++i) {
          if (types[i] < 0) Check(all.force[3 * i] == 0 && all.force[3 * i + 1] == 0, name + ": NULL force", dd.rank);
        }
      }
      // Bad input on one rank only (a NaN coordinate on the last rank): every rank must get an error,
      // none may wait forever in an exchange. run_mpi.sh kills a hung job, which fails the test.
      if (dd.size > 1 && c.null_every == 0 && c.fill_x == 1.0) {
        std::vector<double> coord;
        std::vector<int> row_types;
        for (const auto& row : ghosts.rows) {
          coord.insert(coord.end(), row.pos.begin(), row.pos.end());
          row_types.push_back(types[row.id]);
        }
        if (dd.rank == dd.size - 1 && !coord.empty()) coord[0] = NAN;
        std::vector<double> row_spin(coord.size(), 0.1);
        deepmd::runtime::ComputeInput in;
        in.coord = coord;
        in.atype = row_types;
        in.nlocal = ghosts.nlocal;
        in.plan = plan;
        if (meta.is_spin) in.spin = row_spin;
        deepmd::runtime::ComputeOutput out;
        const absl::Status status = pot.Compute(in, out);
        // Every rank stops with the failing rank's own message (rank_agreement.h).
        const std::string expected = absl::StrCat("rank ", dd.size - 1, ": ");
        const std::string message(status.message());
        Check(!status.ok() && message.find(expected) == 0 &&
                  message.find("non-finite coordinate") != std::string::npos &&
                  deepmd::runtime::IsPeerFailure(status) == (dd.rank != dd.size - 1) &&
                  deepmd::runtime::FailedRank(status) == dd.size - 1,
              absl::StrCat(archive, ": a NaN on one rank stops every rank with its message; got '", message, "'"),
              dd.rank);
      }
      int local = ghosts.nlocal, min_local = 0;
      MPI_Allreduce(&local, &min_local, 1, MPI_INT, MPI_MIN, comm);
      if (dd.rank == 0) {
        std::printf("%s, %s: %zu stages, fewest owned atoms on a rank %d, rows sent in later hops %d\n",
                    archive.substr(archive.rfind('/') + 1).c_str(), c.name, ghosts.stages.size(), min_local,
                    ghosts.multi_hop_rows);
      }
    }
  }
  int local[2] = {checks - failures, failures}, total[2];
  MPI_Allreduce(local, total, 2, MPI_INT, MPI_SUM, comm);
  if (dd.rank == 0)
    std::printf("grid %s: %d passed, %d failed\n", absl::GetFlag(FLAGS_grid).c_str(), total[0], total[1]);
  MPI_Comm_free(&comm);
  MPI_Finalize();
  return total[1] == 0 ? 0 : 1;
}
