#!/usr/bin/env bash
# Builds //deepmd/ops from a tiny outer workspace that vendors this repository under another name
# (as a larger monorepo would), then runs a program that uses the ops. Proves that no label assumes
# this repository is the main workspace.
set -euo pipefail
# The real source tree, found through the runfiles symlink of its WORKSPACE file.
source_root=$(dirname "$(readlink -f "$1")")
outer="${TEST_TMPDIR:-$(mktemp -d)}/outer"
mkdir -p "$outer"
cat > "$outer/WORKSPACE" <<WS
workspace(name = "some_monorepo")
local_repository(name = "vendored_deepmd", path = "$source_root")
load("@vendored_deepmd//third_party:repositories.bzl", "deepmd_gnn_dependencies")
deepmd_gnn_dependencies()
WS
cat > "$outer/BUILD.bazel" <<'BUILD'
cc_binary(
    name = "consumer",
    srcs = ["consumer.cc"],
    deps = [
        "@vendored_deepmd//deepmd/ops",
        "@vendored_deepmd//deepmd/ops:plan",
    ],
)
BUILD
cat > "$outer/consumer.cc" <<'CC'
#include <cstdio>
#include "deepmd/ops/ops.h"
#include "deepmd/ops/plan.h"
int main() {
  deepmd::ops::PlanBuilder builder(deepmd::ops::kNoCommunicator, 0, 1, 2, 1);
  builder.BeginStage().Send(0, std::vector<int32_t>{1}).Receive(0, 1, 2);
  const at::Tensor x = at::tensor({1.0, 2.0, 0.0}).reshape({3, 1});
  const at::Tensor y = deepmd::ops::ExchangeGhosts(deepmd::ops::PlanTensor(*builder.Build()), x);
  const bool ok = y[2][0].item<double>() == 2.0;
  std::printf("vendored ops: ghost row = %g (%s)\n", y[2][0].item<double>(), ok ? "ok" : "WRONG");
  return ok ? 0 : 1;
}
CC
cd "$outer"
# A separate output base (kept between runs in the user's cache) and the shared disk cache.
bazel --batch --output_user_root="$HOME/.cache/deepmd-gnn-vendoring-test" build \
  --disk_cache="$HOME/.cache/deepmd-gnn-bazel-disk" --compilation_mode=opt --cxxopt=-std=c++17 //:consumer
./bazel-bin/consumer
echo "1 passed, 0 failed"
