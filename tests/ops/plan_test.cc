// The plan builder and validator (deepmd/ops/plan.h): round trips and every kind of rejection.
#include "deepmd/ops/plan.h"

#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace deepmd::ops {
namespace {

using ::testing::HasSubstr;

std::vector<int32_t> BuildOrDie(const PlanBuilder& builder) {
  absl::StatusOr<std::vector<int32_t>> words = builder.Build();
  EXPECT_TRUE(words.ok()) << words.status();
  return words.ok() ? *words : std::vector<int32_t>{};
}

TEST(PlanBuilderTest, RoundTripsThroughPlanView) {
  PlanBuilder builder(/*communicator=*/5, /*rank=*/1, /*size=*/3, /*nlocal=*/4, /*nghost=*/5);
  builder.BeginStage().Send(0, std::vector<int32_t>{3, 1}).Receive(2, 2, 4);
  builder.BeginStage()
      .Send(2, std::vector<int32_t>{5, 0, 4})
      .Receive(1, 1, 6)
      .Send(1, std::vector<int32_t>{2})
      .Receive(0, 2, 7);
  const std::vector<int32_t> words = BuildOrDie(builder);
  absl::StatusOr<PlanView> plan = PlanView::Parse(words);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->communicator(), 5);
  EXPECT_TRUE(plan->uses_mpi());
  EXPECT_EQ(plan->rank(), 1);
  EXPECT_EQ(plan->size(), 3);
  EXPECT_EQ(plan->nrows(), 9);
  ASSERT_EQ(plan->num_stages(), 2);
  EXPECT_EQ(plan->num_messages(), 6);
  EXPECT_EQ(plan->stage_first_message(1), 2);
  EXPECT_EQ(plan->stage_num_messages(1), 4);
  const Message send = plan->message(2);
  EXPECT_EQ(send.kind, MessageKind::kSend);
  EXPECT_EQ(send.peer, 2);
  EXPECT_THAT(std::vector<int32_t>(send.indices.begin(), send.indices.end()), ::testing::ElementsAre(5, 0, 4));
  const Message recv = plan->message(5);
  EXPECT_EQ(recv.kind, MessageKind::kRecv);
  EXPECT_EQ(recv.first_row, 7);
  EXPECT_EQ(recv.count, 2);
  EXPECT_TRUE(plan->is_self(plan->message(3)));
  EXPECT_EQ(plan->max_remote_send_rows_in_stage(0), 2);
  EXPECT_EQ(plan->max_remote_send_rows_in_stage(1), 3);  // the self send does not need scratch
  EXPECT_EQ(plan->max_remote_send_rows_per_stage(), 3);
}

TEST(PlanBuilderTest, EmptyPlansAreValid) {
  EXPECT_TRUE(PlanBuilder(kNoCommunicator, 0, 1, 0, 0).Build().ok());
  PlanBuilder empty_stages(kNoCommunicator, 0, 1, 0, 0);
  empty_stages.BeginStage().Send(0, {}).Receive(0, 0, 0);
  EXPECT_TRUE(empty_stages.Build().ok());
}

TEST(PlanBuilderTest, RejectsMisuse) {
  PlanBuilder builder(kNoCommunicator, 0, 1, 1, 0);
  builder.Send(0, std::vector<int32_t>{0});
  EXPECT_THAT(std::string(builder.Build().status().message()), HasSubstr("Send before BeginStage"));
}

struct Rejection {
  const char* name;
  std::vector<int32_t> (*make)();
  const char* fragment;
};

std::vector<int32_t> Valid() {
  PlanBuilder builder(kNoCommunicator, 0, 1, 2, 2);
  builder.BeginStage().Send(0, std::vector<int32_t>{1}).Receive(0, 1, 2);
  builder.BeginStage().Send(0, std::vector<int32_t>{2}).Receive(0, 1, 3);
  return *builder.Build();
}

std::vector<int32_t> With(int index, int32_t value) {
  std::vector<int32_t> w = Valid();
  w[index] = value;
  return w;
}

void PrintTo(const Rejection& r, std::ostream* os) { *os << r.name; }

class PlanRejectionTest : public ::testing::TestWithParam<Rejection> {};

TEST_P(PlanRejectionTest, NamesTheBadField) {
  const std::vector<int32_t> words = GetParam().make();
  absl::StatusOr<PlanView> plan = PlanView::Parse(words);
  ASSERT_FALSE(plan.ok());
  EXPECT_THAT(std::string(plan.status().message()), HasSubstr(GetParam().fragment));
  EXPECT_THAT(std::string(plan.status().message()), HasSubstr("invalid ghost-exchange plan"));
}

constexpr int kFirstMessage = kHeaderWords + 2 * kStageWords;

INSTANTIATE_TEST_SUITE_P(
    AllFields, PlanRejectionTest,
    ::testing::Values(Rejection{"Short",
                                [] {
                                  return std::vector<int32_t>{kPlanMagic, 1};
                                },
                                "fewer than the 10-word header"},
                      Rejection{"Magic", [] { return With(kMagic, 1); }, "magic is 1"},
                      Rejection{"Version", [] { return With(kVersion, 9); }, "version is 9"},
                      Rejection{"Length", [] { return With(kLength, 3); }, "length is 3"},
                      Rejection{"Rank", [] { return With(kRank, 1); }, "rank 1 / size 1"},
                      Rejection{"Size", [] { return With(kSize, 0); }, "size 0"},
                      Rejection{"NoCommManyRanks",
                                [] {
                                  auto w = With(kSize, 2);
                                  return w;
                                },
                                "communicator is none"},
                      Rejection{"NLocal", [] { return With(kNLocal, -2); }, "nlocal is -2"},
                      Rejection{"NGhost", [] { return With(kNGhost, 3); }, "receives fill 2 ghost rows; nghost is 3"},
                      Rejection{"NStages", [] { return With(kNStages, 40); }, "40 stages"},
                      Rejection{"NMessages", [] { return With(kNMessages, 3); },
                                "stage 1 lists messages [2, 4); expected to start at 2 and end by 3"},
                      Rejection{"StageFirst", [] { return With(kHeaderWords + 2, 1); },
                                "stage 1 lists messages [1, 3)"},
                      Rejection{"Kind", [] { return With(kFirstMessage, 4); }, "kind is 4"},
                      Rejection{"Peer", [] { return With(kFirstMessage + 1, 1); }, "peer rank 1 is outside [0, 1)"},
                      Rejection{"Count", [] { return With(kFirstMessage + 2, -1); }, "count is -1"},
                      Rejection{"IndexArea", [] { return With(kFirstMessage + 3, 2); }, "outside the index area"},
                      Rejection{"RecvOrder", [] { return With(kFirstMessage + 7, 3); }, "receive lands at row 3"},
                      Rejection{"SendUnfilledGhost",
                                [] {
                                  auto w = Valid();
                                  w[w.size() - 2] = 3;
                                  return w;
                                },
                                "sends row 3, but only rows [0, 2)"},
                      Rejection{"SelfCounts", [] { return With(kFirstMessage + 6, 0); }, "self send"}),
    [](const ::testing::TestParamInfo<Rejection>& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace deepmd::ops

namespace deepmd::ops {
namespace {

// Compaction against a direct computation: drop rows, then every surviving ghost must still copy the
// surviving row it copied before (checked by simulating both plans on row labels).
std::vector<int32_t> Simulate(const PlanView& plan, std::vector<int32_t> labels) {
  for (int32_t s = 0; s < plan.num_stages(); ++s) {
    const int32_t first = plan.stage_first_message(s);
    std::vector<int32_t> stage_values;
    for (int32_t m = first; m < first + plan.stage_num_messages(s); ++m) {
      const Message msg = plan.message(m);
      if (msg.kind == MessageKind::kSend) {
        for (int32_t r : msg.indices) stage_values.push_back(labels[r]);
      }
    }
    size_t next = 0;
    for (int32_t m = first; m < first + plan.stage_num_messages(s); ++m) {
      const Message msg = plan.message(m);
      if (msg.kind == MessageKind::kRecv) {
        for (int32_t i = 0; i < msg.count; ++i) labels[msg.first_row + i] = stage_values[next++];
      }
    }
  }
  return labels;
}

TEST(CompactPlanTest, DropsRowsConsistently) {
  // 4 owned rows, 6 ghosts over three self stages, ghosts of ghosts included.
  PlanBuilder builder(kNoCommunicator, 0, 1, 4, 6);
  builder.BeginStage().Send(0, std::vector<int32_t>{0, 1, 3}).Receive(0, 3, 4);
  builder.BeginStage().Send(0, std::vector<int32_t>{4, 2}).Receive(0, 2, 7);
  builder.BeginStage().Send(0, std::vector<int32_t>{7}).Receive(0, 1, 9);
  const std::vector<int32_t> words = *builder.Build();
  const PlanView plan = *PlanView::Parse(words);
  std::vector<int32_t> labels(10, -1);
  for (int i = 0; i < 4; ++i) labels[i] = 100 + i;
  const std::vector<int32_t> full = Simulate(plan, labels);
  ASSERT_EQ(full, (std::vector<int32_t>{100, 101, 102, 103, 100, 101, 103, 100, 102, 100}));

  // Drop owned row 1 (a NULL atom) and, consistently, its image (row 5).
  const std::vector<int32_t> new_row = {0, -1, 1, 2, 3, -1, 4, 5, 6, 7};
  absl::StatusOr<std::vector<int32_t>> compact = CompactPlan(plan, new_row);
  ASSERT_TRUE(compact.ok()) << compact.status();
  const PlanView small = *PlanView::Parse(*compact);
  EXPECT_EQ(small.nlocal(), 3);
  EXPECT_EQ(small.nghost(), 5);
  std::vector<int32_t> small_labels(8, -1);
  small_labels[0] = 100, small_labels[1] = 102, small_labels[2] = 103;
  const std::vector<int32_t> got = Simulate(small, small_labels);
  for (int r = 0; r < 10; ++r) {
    if (new_row[r] >= 0) {
      EXPECT_EQ(got[new_row[r]], full[r]) << "row " << r;
    }
  }
  EXPECT_FALSE(CompactPlan(plan, std::vector<int32_t>(3, 0)).ok());
}

TEST(SelfPlanOwnersTest, FollowsImagesOfImages) {
  PlanBuilder builder(kNoCommunicator, 0, 1, 4, 6);
  builder.BeginStage().Send(0, std::vector<int32_t>{0, 1, 3}).Receive(0, 3, 4);
  builder.BeginStage().Send(0, std::vector<int32_t>{4, 2}).Receive(0, 2, 7);
  builder.BeginStage().Send(0, std::vector<int32_t>{7}).Receive(0, 1, 9);
  const std::vector<int32_t> words = *builder.Build();
  absl::StatusOr<std::vector<int64_t>> owners = SelfPlanOwners(*PlanView::Parse(words));
  ASSERT_TRUE(owners.ok());
  EXPECT_EQ(*owners, (std::vector<int64_t>{0, 1, 2, 3, 0, 1, 3, 0, 2, 0}));
  PlanBuilder remote(3, 0, 2, 1, 1);
  remote.BeginStage().Send(1, std::vector<int32_t>{0}).Receive(1, 1, 1);
  const std::vector<int32_t> remote_words = *remote.Build();
  EXPECT_FALSE(SelfPlanOwners(*PlanView::Parse(remote_words)).ok());
}

}  // namespace
}  // namespace deepmd::ops
