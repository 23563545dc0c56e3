// SwapPattern (deepmd/lammps/swap_pattern.h) on every rank of a simulated LAMMPS: the hook calls of
// comm->forward_comm_pair / reverse_comm_pair as CommBrick and CommTiled make them (per swap: the packs
// of the sends, a self copy, the unpacks of the receives in a random, MPI_Waitany-like order), discovery
// rounds until no rank changes a stage, then each rank's plan. Oracle: the plans, run by this file's own
// reading of docs/exchange_plan.md, fill every ghost row with what LAMMPS's swaps put there.
#include <algorithm>
#include <deque>
#include <map>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "deepmd/lammps/swap_pattern.h"
#include "deepmd/ops/plan.h"
#include "gtest/gtest.h"

namespace deepmd::lammps {
namespace {

// One message of a swap; `first` (the receiver's first ghost row) is set by Finish().
struct Message {
  int from, to;
  std::vector<int> rows;
  int first = -1;
};

// LAMMPS's pattern for all ranks. A swap lists its messages in one order: each rank's sends and
// receives follow it (self copy last), so messages between two ranks match in order, as LAMMPS's do.
struct Pattern {
  std::vector<int> nlocal;
  std::vector<std::vector<Message>> swaps;
  std::vector<int> nrows;  // after Finish()

  int nranks() const { return static_cast<int>(nlocal.size()); }
  std::vector<int> Sends(int k, int rank) const { return Ordered(k, rank, true); }
  std::vector<int> Receives(int k, int rank) const { return Ordered(k, rank, false); }

  std::vector<int> Ordered(int k, int rank, bool sends) const {
    std::vector<int> remote, self;
    for (int m = 0; m < static_cast<int>(swaps[k].size()); ++m) {
      const Message& msg = swaps[k][m];
      if ((sends ? msg.from : msg.to) != rank) continue;
      (msg.from == msg.to ? self : remote).push_back(m);
    }
    remote.insert(remote.end(), self.begin(), self.end());
    return remote;
  }

  // Ghost rows are numbered in swap order, then in each rank's receive order (LAMMPS's firstrecv).
  void Finish() {
    nrows = nlocal;
    for (size_t k = 0; k < swaps.size(); ++k) {
      for (int r = 0; r < nranks(); ++r) {
        for (int m : Receives(static_cast<int>(k), r)) {
          swaps[k][m].first = nrows[r];
          nrows[r] += static_cast<int>(swaps[k][m].rows.size());
        }
      }
    }
  }

  // Row values after LAMMPS's swaps: owned row i of rank r is 1000 r + i, ghosts copy their source.
  std::vector<std::vector<int>> Fill() const {
    std::vector<std::vector<int>> value(nranks());
    for (int r = 0; r < nranks(); ++r) {
      value[r].assign(nrows[r], -1);
      for (int i = 0; i < nlocal[r]; ++i) value[r][i] = 1000 * r + i;
    }
    for (const auto& swap : swaps) {
      const std::vector<std::vector<int>> before = value;
      for (const Message& m : swap) {
        for (size_t i = 0; i < m.rows.size(); ++i) value[m.to][m.first + i] = before[m.from][m.rows[i]];
      }
    }
    return value;
  }
};

using Buffers = std::map<std::pair<int, int>, std::deque<std::vector<double>>>;  // (from, to) -> in flight

// One forward and one reverse pass over all ranks, with the calls in LAMMPS's order.
void PlayRound(const Pattern& p, std::vector<SwapPattern>& ranks, std::mt19937& rng) {
  const int nswaps = static_cast<int>(p.swaps.size());
  std::vector<double> buf(4096);
  for (auto& s : ranks) s.BeginForward();
  for (int k = 0; k < nswaps; ++k) {
    Buffers in_flight;
    for (int r = 0; r < p.nranks(); ++r) {
      for (int m : p.Sends(k, r)) {
        const Message& msg = p.swaps[k][m];
        const int n = ranks[r].PackForward(static_cast<int>(msg.rows.size()), msg.rows.data(), r, buf.data());
        std::vector<double> sent(buf.begin(), buf.begin() + n);
        if (msg.to == r) {
          ranks[r].UnpackForward(static_cast<int>(msg.rows.size()), msg.first, sent.data());
        } else {
          in_flight[{r, msg.to}].push_back(std::move(sent));
        }
      }
    }
    for (int r = 0; r < p.nranks(); ++r) {
      std::vector<std::pair<int, std::vector<double>>> arrived;  // matched in posting order
      for (int m : p.Receives(k, r)) {
        const Message& msg = p.swaps[k][m];
        if (msg.from == r) continue;
        auto& queue = in_flight[{msg.from, r}];
        arrived.emplace_back(m, queue.front());
        queue.pop_front();
      }
      std::shuffle(arrived.begin(), arrived.end(), rng);  // MPI_Waitany
      for (auto& [m, data] : arrived) {
        ranks[r].UnpackForward(static_cast<int>(p.swaps[k][m].rows.size()), p.swaps[k][m].first, data.data());
      }
    }
  }
  for (auto& s : ranks) s.BeginReverse();
  for (int k = nswaps - 1; k >= 0; --k) {
    Buffers in_flight;
    for (int r = 0; r < p.nranks(); ++r) {
      for (int m : p.Receives(k, r)) {
        const Message& msg = p.swaps[k][m];
        const int count = static_cast<int>(msg.rows.size());
        const int n = ranks[r].PackReverse(count, msg.first, r, buf.data());
        std::vector<double> sent(buf.begin(), buf.begin() + n);
        if (msg.from == r) {
          ranks[r].UnpackReverse(count, sent.data());
        } else {
          in_flight[{r, msg.from}].push_back(std::move(sent));
        }
      }
    }
    for (int r = 0; r < p.nranks(); ++r) {
      std::vector<std::pair<int, std::vector<double>>> arrived;
      for (int m : p.Sends(k, r)) {
        const Message& msg = p.swaps[k][m];
        if (msg.to == r) continue;
        auto& queue = in_flight[{msg.to, r}];
        arrived.emplace_back(m, queue.front());
        queue.pop_front();
      }
      std::shuffle(arrived.begin(), arrived.end(), rng);
      for (auto& [m, data] : arrived) ranks[r].UnpackReverse(static_cast<int>(p.swaps[k][m].rows.size()), data.data());
    }
  }
}

struct Discovered {
  std::vector<std::vector<int32_t>> plans;  // empty when some rank failed
  std::string error;
  int rounds = 0, num_stages = 0;
};

Discovered Discover(const Pattern& p, unsigned seed) {
  std::mt19937 rng(seed);
  std::vector<SwapPattern> ranks(p.nranks());
  for (auto& s : ranks) s.Begin();
  Discovered out;
  bool again = true;
  while (again) {
    PlayRound(p, ranks, rng);
    ++out.rounds;
    bool any = false;  // MPI_Allreduce(MAX) of the caller
    for (auto& s : ranks) any |= s.EndRound();
    again = false;
    for (auto& s : ranks) again = s.AnotherRound(any);  // every rank answers alike
  }
  for (auto& s : ranks) out.num_stages = std::max(out.num_stages, s.num_stages());
  for (int r = 0; r < p.nranks(); ++r) {
    absl::StatusOr<std::vector<int32_t>> plan =
        ranks[r].BuildPlan(p.nranks() > 1 ? 5 : ops::kNoCommunicator, r, p.nranks(), p.nlocal[r],
                           p.nrows[r] - p.nlocal[r], out.num_stages);
    if (!plan.ok()) {
      out.error = std::string(plan.status().message());
      out.plans.clear();
      return out;
    }
    out.plans.push_back(*std::move(plan));
  }
  return out;
}

// What the plans do, read from docs/exchange_plan.md: per stage, sends read the rows as they were at the
// start of the stage; the messages between two ranks match in the order listed.
std::vector<std::vector<int>> RunPlans(const Pattern& p, const std::vector<std::vector<int32_t>>& words) {
  std::vector<ops::PlanView> plans;
  for (const auto& w : words) plans.push_back(*ops::PlanView::Parse(w));
  std::vector<std::vector<int>> value(p.nranks());
  for (int r = 0; r < p.nranks(); ++r) {
    value[r].assign(plans[r].nrows(), -1);
    for (int i = 0; i < plans[r].nlocal(); ++i) value[r][i] = 1000 * r + i;
  }
  const int nstages = plans[0].num_stages();
  for (int s = 0; s < nstages; ++s) {
    std::map<std::pair<int, int>, std::deque<std::vector<int>>> in_flight;
    for (int r = 0; r < p.nranks(); ++r) {
      EXPECT_EQ(plans[r].num_stages(), nstages);
      for (int m = plans[r].stage_first_message(s);
           m < plans[r].stage_first_message(s) + plans[r].stage_num_messages(s); ++m) {
        const ops::Message msg = plans[r].message(m);
        if (msg.kind != ops::MessageKind::kSend) continue;
        std::vector<int> rows;
        for (int32_t i : msg.indices) rows.push_back(value[r][i]);
        in_flight[{r, msg.peer}].push_back(rows);
      }
    }
    for (int r = 0; r < p.nranks(); ++r) {
      for (int m = plans[r].stage_first_message(s);
           m < plans[r].stage_first_message(s) + plans[r].stage_num_messages(s); ++m) {
        const ops::Message msg = plans[r].message(m);
        if (msg.kind != ops::MessageKind::kRecv) continue;
        auto& queue = in_flight[{msg.peer, r}];
        if (queue.empty() || static_cast<int>(queue.front().size()) != msg.count) {
          ADD_FAILURE() << "stage " << s << ": rank " << r << " expects " << msg.count << " rows from rank "
                        << msg.peer;
          return value;
        }
        std::copy(queue.front().begin(), queue.front().end(), value[r].begin() + msg.first_row);
        queue.pop_front();
      }
    }
    for (const auto& [ranks, queue] : in_flight) {
      EXPECT_TRUE(queue.empty()) << "stage " << s << ": rank " << ranks.first << " sent rank " << ranks.second
                                 << " a message it does not receive";
    }
  }
  return value;
}

// A random pattern of `nranks` ranks and 6 swaps (3-D): each ordered pair of ranks exchanges 0, 1 or 2
// messages per swap (a rank appears twice in a tiled swap through periodic images), self copies,
// messages without rows, ranks without sends or receives in a swap (non-periodic boundaries), and
// sends of ghost rows received in earlier swaps.
Pattern RandomPattern(std::mt19937& rng, int nranks) {
  std::uniform_real_distribution<double> u(0, 1);
  Pattern p;
  for (int r = 0; r < nranks; ++r) p.nlocal.push_back(static_cast<int>(rng() % 5));
  std::vector<int> filled = p.nlocal;
  for (int k = 0; k < 6; ++k) {
    std::vector<Message> swap;
    for (int from = 0; from < nranks; ++from) {
      for (int to = 0; to < nranks; ++to) {
        const int copies = u(rng) < 0.35 ? (from != to && u(rng) < 0.3 ? 2 : 1) : 0;
        for (int c = 0; c < copies; ++c) {
          std::vector<int> rows(filled[from]);
          for (int i = 0; i < filled[from]; ++i) rows[i] = i;
          std::shuffle(rows.begin(), rows.end(), rng);
          rows.resize(std::min<size_t>(rows.size(), rng() % 4));
          swap.push_back({from, to, rows});
        }
      }
    }
    std::shuffle(swap.begin(), swap.end(), rng);
    for (const Message& m : swap) filled[m.to] += static_cast<int>(m.rows.size());
    p.swaps.push_back(std::move(swap));
  }
  p.Finish();
  return p;
}

void ExpectPlansFillLikeLammps(const Pattern& p, const Discovered& d, const std::string& label) {
  ASSERT_EQ(static_cast<int>(d.plans.size()), p.nranks()) << label << ": " << d.error;
  const auto expected = p.Fill();
  const auto got = RunPlans(p, d.plans);
  for (int r = 0; r < p.nranks(); ++r) EXPECT_EQ(got[r], expected[r]) << label << ", rank " << r;
}

TEST(SwapPatternTest, BrickTwoRanksWithMultiHopAndEmptySwaps) {
  // Brick: one send and one receive per swap (a swap moving nothing still calls both). Swap 2 forwards
  // ghosts of swaps 0 and 1, swap 3 moves nothing: stage k is swap k, in one round.
  Pattern p;
  p.nlocal = {3, 2};
  p.swaps = {
      {{0, 1, {0, 1}}, {1, 0, {1}}},
      {{0, 1, {2}}, {1, 0, {0}}},
      {{0, 1, {3, 4}}, {1, 0, {2, 3}}},
      {{0, 1, {}}, {1, 0, {}}},
  };
  p.Finish();
  const Discovered d = Discover(p, 1);
  ExpectPlansFillLikeLammps(p, d, "brick");
  EXPECT_EQ(d.rounds, 1);
  EXPECT_EQ(d.num_stages, 4);
  const ops::PlanView plan = *ops::PlanView::Parse(d.plans[0]);
  EXPECT_TRUE(plan.forwards_ghosts());
  EXPECT_EQ(plan.stage_num_messages(3), 0);  // the empty swap keeps its (empty) stage
  const ops::Message send = plan.message(plan.stage_first_message(2));
  EXPECT_EQ(send.kind, ops::MessageKind::kSend);
  EXPECT_EQ(std::vector<int32_t>(send.indices.begin(), send.indices.end()), (std::vector<int32_t>{3, 4}));
}

TEST(SwapPatternTest, SelfSwapsOfOneRank) {
  Pattern p;
  p.nlocal = {2};
  p.swaps = {{{0, 0, {0}}}, {{0, 0, {1}}}};
  p.Finish();
  const Discovered d = Discover(p, 1);
  ASSERT_EQ(d.plans.size(), 1u) << d.error;
  absl::StatusOr<std::vector<int64_t>> owners = ops::SelfPlanOwners(*ops::PlanView::Parse(d.plans[0]));
  ASSERT_TRUE(owners.ok()) << owners.status();
  EXPECT_EQ(*owners, (std::vector<int64_t>{0, 1, 0, 1}));
}

TEST(SwapPatternTest, TiledSwapsWithSeveralPeersArrivingInAnyOrder) {
  // Three ranks, two swaps: rank 0 sends to 1 twice (two periodic images) and to 2, copies to itself,
  // and forwards in swap 1 a ghost it received from rank 2 in swap 0.
  Pattern p;
  p.nlocal = {3, 2, 2};
  p.swaps = {
      {{0, 1, {0}}, {2, 0, {1}}, {0, 2, {1, 2}}, {0, 1, {2}}, {1, 0, {0, 1}}, {0, 0, {0}}, {2, 1, {0}}},
      {{0, 2, {3}}, {1, 2, {2, 3}}, {2, 0, {0}}},
  };
  p.Finish();
  for (unsigned seed = 0; seed < 20; ++seed) {
    const Discovered d = Discover(p, seed);
    ExpectPlansFillLikeLammps(p, d, "seed " + std::to_string(seed));
    EXPECT_EQ(d.rounds, 1);  // every rank sends and receives in every swap: the calls show the swaps
    const ops::PlanView plan = *ops::PlanView::Parse(d.plans[0]);
    EXPECT_EQ(plan.stage_num_messages(0), 7);  // 4 sends (one to itself), 3 receives
  }
}

TEST(SwapPatternTest, SwapsWithoutSendsOrReceivesNeedMoreRounds) {
  // y non-periodic, rank 0 at the bottom: in swap 2 (down) it only receives, in swap 3 (up) it only
  // sends, so its calls do not show where swaps 3 and 4 part; its peer's stage in swap 4 tells it.
  Pattern p;
  p.nlocal = {2, 2};
  p.swaps = {
      {{0, 0, {0}}, {1, 1, {0}}},  // x: periodic self copies
      {{0, 0, {1}}, {1, 1, {1}}},
      {{1, 0, {0}}},  // y down: only rank 1 sends
      {{0, 1, {1}}},  // y up: only rank 0 sends
      {{0, 1, {0, 4}}, {1, 0, {0, 4}}},
      {{0, 0, {1}}, {1, 1, {1}}},
  };
  p.Finish();
  const Discovered d = Discover(p, 3);
  ExpectPlansFillLikeLammps(p, d, "open y");
  EXPECT_EQ(d.rounds, 2);
}

TEST(SwapPatternTest, RandomPatterns) {
  std::mt19937 rng(20240611);
  int max_rounds = 0;
  for (int trial = 0; trial < 300; ++trial) {
    const int nranks = 1 + trial % 6;
    const Pattern p = RandomPattern(rng, nranks);
    const Discovered d = Discover(p, trial);
    ExpectPlansFillLikeLammps(p, d, "trial " + std::to_string(trial));
    max_rounds = std::max(max_rounds, d.rounds);
    if (HasFailure()) return;
  }
  EXPECT_LE(max_rounds, SwapPattern::kMaxRounds);
  std::printf("random patterns: at most %d discovery rounds\n", max_rounds);
}

TEST(SwapPatternTest, GhostRowsOutOfOrderAreAnError) {
  // Ghost rows that do not follow each other: LAMMPS never does this; the plan validator says so.
  Pattern p;
  p.nlocal = {3, 1};
  p.swaps = {{{1, 0, {0}}, {0, 1, {0}}}};
  p.Finish();
  p.swaps[0][0].first = 4;  // rank 0's ghosts start at 3
  const Discovered d = Discover(p, 1);
  EXPECT_TRUE(d.plans.empty());
  EXPECT_NE(d.error.find("swap pattern"), std::string::npos) << d.error;
}

TEST(SwapPatternTest, ASendWithoutAnswerIsAnError) {
  SwapPattern pattern;
  std::vector<int> rows = {0};
  std::vector<double> buf(SwapPattern::kWordsPerRow);
  pattern.Begin();
  pattern.BeginForward();
  pattern.PackForward(1, rows.data(), 0, buf.data());
  pattern.BeginReverse();  // no reverse calls
  pattern.EndRound();
  absl::StatusOr<std::vector<int32_t>> plan = pattern.BuildPlan(5, 0, 2, 1, 0, pattern.num_stages());
  ASSERT_FALSE(plan.ok());
  EXPECT_NE(plan.status().message().find("no answer"), std::string::npos) << plan.status();
}

}  // namespace
}  // namespace deepmd::lammps
