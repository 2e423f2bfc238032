#include "model/model_runner.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/model/model_test_util.h"

namespace fsrst {
namespace {

using ::fsrst::testing::ModelWithoutWeightsMethodPath;
using ::fsrst::testing::Pattern;
using ::fsrst::testing::SourceDir;
using ::fsrst::testing::UnitLuma;
using ::fsrst::testing::WeightsPath;
using ::testing::HasSubstr;

class ModelRunnerTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    ModelRunnerOptions options;
    options.device = "cpu";
    options.num_threads = 1;
    auto runner = ModelRunner::Load(WeightsPath(GetParam()), options);
    ASSERT_TRUE(runner.ok()) << runner.status();
    runner_ = *std::move(runner);
  }

  std::vector<uint8_t> Run(const std::vector<uint8_t>& frame, const ReferenceFeatures* refs) {
    std::vector<uint8_t> out(runner_->metadata().output_bytes());
    FrameInput input;
    input.frame_rgb = frame.data();
    input.references = refs;
    input.output_rgb = out.data();
    EXPECT_TRUE(runner_->Enhance({&input, 1}).ok());
    return out;
  }

  std::unique_ptr<ModelRunner> runner_;
};

TEST_P(ModelRunnerTest, ReadsMetadataFromTheFile) {
  const ModelMetadata& m = runner_->metadata();
  EXPECT_EQ(m.name, GetParam());
  EXPECT_EQ(m.lr_size, 32);
  EXPECT_EQ(m.scale, 4);
  EXPECT_EQ(m.reference_size, 128);
  // Both shipped weights are calls models: 16 feature channels (the paper has 3).
  EXPECT_THAT(m.feature_shape, ::testing::ElementsAre(16, 32, 32));
  EXPECT_EQ(m.max_references, 8);
  // Both shipped files have the aggregation's learned keys and values (816 parameters each).
  EXPECT_EQ(m.parameters, GetParam() == "fsrst_x4" ? 2596683 : 902667);
  EXPECT_EQ(runner_->device_name(), "cpu");
}

TEST_P(ModelRunnerTest, EncodesReferencesOnce) {
  const ModelMetadata& m = runner_->metadata();
  auto features = runner_->EncodeReferences(UnitLuma(m, 3, 1), 3);
  ASSERT_TRUE(features.ok()) << features.status();
  EXPECT_EQ((*features)->count(), 3);
  EXPECT_EQ((*features)->byte_size(), 3 * 16 * 32 * 32 * 4);
}

TEST_P(ModelRunnerTest, RejectsWrongReferenceCounts) {
  const ModelMetadata& m = runner_->metadata();
  EXPECT_EQ(runner_->EncodeReferences({}, 0).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(runner_->EncodeReferences(UnitLuma(m, 9, 1), 9).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(runner_->EncodeReferences(UnitLuma(m, 2, 1), 3).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_P(ModelRunnerTest, MixedBatchEqualsEachFrameAlone) {
  const ModelMetadata& m = runner_->metadata();
  auto two = runner_->EncodeReferences(UnitLuma(m, 2, 1), 2);
  auto three = runner_->EncodeReferences(UnitLuma(m, 3, 2), 3);
  ASSERT_TRUE(two.ok() && three.ok());
  std::vector<std::vector<uint8_t>> frames = {Pattern(m.frame_bytes(), 10),
                                              Pattern(m.frame_bytes(), 11),
                                              Pattern(m.frame_bytes(), 12)};
  const ReferenceFeatures* refs[] = {two->get(), nullptr, three->get()};
  std::vector<std::vector<uint8_t>> outputs(3, std::vector<uint8_t>(m.output_bytes()));
  std::vector<FrameInput> batch(3);
  for (int i = 0; i < 3; ++i) {
    batch[i].frame_rgb = frames[i].data();
    batch[i].references = refs[i];
    batch[i].output_rgb = outputs[i].data();
  }
  ASSERT_TRUE(runner_->Enhance(batch).ok());
  for (int i = 0; i < 3; ++i) {
    std::vector<uint8_t> alone = Run(frames[i], refs[i]);
    int max_diff = 0;
    for (size_t j = 0; j < alone.size(); ++j) {
      max_diff = std::max(max_diff, std::abs(int{alone[j]} - int{outputs[i][j]}));
    }
    EXPECT_LE(max_diff, 1) << "frame " << i;
  }
  // References matter: frame 0 with and without its references differ.
  EXPECT_NE(Run(frames[0], nullptr), outputs[0]);
}

TEST_P(ModelRunnerTest, InlineReferencesEqualCachedOnes) {
  const ModelMetadata& m = runner_->metadata();
  std::vector<float> luma = UnitLuma(m, 3, 5);
  auto cached = runner_->EncodeReferences(luma, 3);
  ASSERT_TRUE(cached.ok());
  std::vector<uint8_t> frame = Pattern(m.frame_bytes(), 20);
  std::vector<uint8_t> out(m.output_bytes());
  FrameInput input;
  input.frame_rgb = frame.data();
  input.reference_luma = luma;
  input.reference_luma_count = 3;
  input.output_rgb = out.data();
  ASSERT_TRUE(runner_->Enhance({&input, 1}).ok());
  EXPECT_EQ(out, Run(frame, cached->get()));
}

TEST_P(ModelRunnerTest, WarmsUpEveryBatchSize) { EXPECT_TRUE(runner_->Warmup(3).ok()); }

// Model instances share one module: calls from several threads at once give
// exactly what the same calls give one after another.
TEST_P(ModelRunnerTest, ConcurrentCallsEqualSequentialOnes) {
  const ModelMetadata& m = runner_->metadata();
  constexpr int kThreads = 3;
  constexpr int kRounds = 4;
  std::vector<std::vector<uint8_t>> frames;
  std::vector<std::vector<float>> luma;
  std::vector<std::vector<uint8_t>> expected;
  for (int t = 0; t < kThreads; ++t) {
    frames.push_back(Pattern(m.frame_bytes(), 30 + t));
    luma.push_back(UnitLuma(m, 2, 40 + t));
    auto refs = runner_->EncodeReferences(luma[t], 2);
    ASSERT_TRUE(refs.ok());
    expected.push_back(Run(frames[t], refs->get()));
  }
  std::vector<int> mismatches(kThreads, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < kRounds; ++round) {
        // Encoding runs concurrently with other threads' forwards too.
        auto refs = runner_->EncodeReferences(luma[t], 2);
        std::vector<uint8_t> out(m.output_bytes());
        FrameInput input;
        input.frame_rgb = frames[t].data();
        input.references = refs.ok() ? refs->get() : nullptr;
        input.output_rgb = out.data();
        if (!refs.ok() || !runner_->Enhance({&input, 1}).ok() || out != expected[t]) {
          ++mismatches[t];
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_THAT(mismatches, ::testing::Each(0));
}

INSTANTIATE_TEST_SUITE_P(ShippedModels, ModelRunnerTest,
                         ::testing::Values("fsrst_x4", "fsrst_x4_small"));

// One line of tests/model/testdata/*_weights.txt: what the Python model gives.
struct PythonWeights {
  int frame_seed = 0;
  int reference_seed = 0;
  int count = 0;
  std::vector<float> weights;
};

std::vector<PythonWeights> ReadPythonWeights(const std::string& variant) {
  std::ifstream in(SourceDir() + "/tests/model/testdata/" + variant + "_weights.txt");
  std::vector<PythonWeights> cases;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream fields(line);
    PythonWeights c;
    fields >> c.frame_seed >> c.reference_seed >> c.count;
    float w;
    while (fields >> w) c.weights.push_back(w);
    cases.push_back(c);
  }
  return cases;
}

std::unique_ptr<ModelRunner> LoadPathOnCpu(const std::string& path, bool reference_weights) {
  ModelRunnerOptions options;
  options.device = "cpu";
  options.num_threads = 1;
  options.reference_weights = reference_weights;
  auto runner = ModelRunner::Load(path, options);
  EXPECT_TRUE(runner.ok()) << runner.status();
  return runner.ok() ? *std::move(runner) : nullptr;
}

std::unique_ptr<ModelRunner> LoadOnCpu(const std::string& variant, bool reference_weights) {
  return LoadPathOnCpu(WeightsPath(variant), reference_weights);
}

TEST(ModelRunnerWeights, DetectsForwardWithWeights) {
  for (const char* variant : {"fsrst_x4", "fsrst_x4_small"}) {
    EXPECT_TRUE(LoadOnCpu(variant, true)->has_reference_weights()) << variant;
    EXPECT_FALSE(LoadOnCpu(variant, false)->has_reference_weights()) << variant;
  }
  // A model exported before the method: it serves images and reports no weights.
  EXPECT_FALSE(LoadPathOnCpu(ModelWithoutWeightsMethodPath(), true)->has_reference_weights());
}

// The cases of make_reference_weights_fixture.py run as one padded batch
// (counts 2, 0, 3: max_k 3): each frame's real slots carry the Python model's
// weights for that frame alone, in registration order, padded slots are not
// written, and the images are byte for byte those of forward.
TEST(ModelRunnerWeights, BatchWeightsEqualThePythonModelsAndImagesEqualForward) {
  std::unique_ptr<ModelRunner> runner = LoadOnCpu("fsrst_x4_small", true);
  std::unique_ptr<ModelRunner> images_only = LoadOnCpu("fsrst_x4_small", false);
  ASSERT_TRUE(runner && images_only);
  const ModelMetadata& m = runner->metadata();
  const std::vector<PythonWeights> cases = ReadPythonWeights("fsrst_x4_small");
  ASSERT_EQ(cases.size(), 3u) << "regenerate with make_reference_weights_fixture.py";

  constexpr float kUnwritten = -7.0f;
  const int n = static_cast<int>(cases.size());
  std::vector<std::vector<uint8_t>> frames(n), outputs(n), expected(n);
  std::vector<std::vector<float>> weights(n, std::vector<float>(m.max_references, kUnwritten));
  std::vector<std::shared_ptr<const ReferenceFeatures>> refs(n), refs_plain(n);
  std::vector<FrameInput> batch(n), plain(n);
  for (int i = 0; i < n; ++i) {
    frames[i] = Pattern(m.frame_bytes(), cases[i].frame_seed);
    outputs[i].resize(m.output_bytes());
    expected[i].resize(m.output_bytes());
    if (cases[i].count > 0) {
      const std::vector<float> luma = UnitLuma(m, cases[i].count, cases[i].reference_seed);
      auto encoded = runner->EncodeReferences(luma, cases[i].count);
      auto encoded_plain = images_only->EncodeReferences(luma, cases[i].count);
      ASSERT_TRUE(encoded.ok() && encoded_plain.ok());
      refs[i] = *encoded;
      refs_plain[i] = *encoded_plain;
    }
    batch[i] = {frames[i].data(), refs[i].get(), {}, 0, outputs[i].data(), weights[i].data()};
    plain[i] = {frames[i].data(), refs_plain[i].get(), {}, 0, expected[i].data(), nullptr};
  }
  ASSERT_TRUE(runner->Enhance(batch).ok());
  ASSERT_TRUE(images_only->Enhance(plain).ok());
  for (int i = 0; i < n; ++i) {
    SCOPED_TRACE(i);
    const int k = cases[i].count;
    ASSERT_EQ(static_cast<int>(cases[i].weights.size()), k);
    for (int j = 0; j < k; ++j) {
      // Python's weights of one frame differ by ~2e-4: a swapped order fails.
      EXPECT_NEAR(weights[i][j], cases[i].weights[j], 2e-5) << "slot " << j;
    }
    for (int j = k; j < m.max_references; ++j) EXPECT_EQ(weights[i][j], kUnwritten);
    EXPECT_EQ(outputs[i], expected[i]);
  }
}

TEST(ModelRunnerWeights, InlineReferencesGetWeightsToo) {
  std::unique_ptr<ModelRunner> runner = LoadOnCpu("fsrst_x4_small", true);
  ASSERT_TRUE(runner);
  const ModelMetadata& m = runner->metadata();
  const PythonWeights c = ReadPythonWeights("fsrst_x4_small").at(2);
  const std::vector<float> luma = UnitLuma(m, c.count, c.reference_seed);
  const std::vector<uint8_t> frame = Pattern(m.frame_bytes(), c.frame_seed);
  std::vector<uint8_t> out(m.output_bytes());
  std::vector<float> weights(c.count, -1.0f);
  FrameInput input;
  input.frame_rgb = frame.data();
  input.reference_luma = luma;
  input.reference_luma_count = c.count;
  input.output_rgb = out.data();
  input.reference_weights = weights.data();
  ASSERT_TRUE(runner->Enhance({&input, 1}).ok());
  ASSERT_EQ(c.weights.size(), weights.size());
  for (size_t j = 0; j < weights.size(); ++j) EXPECT_NEAR(weights[j], c.weights[j], 2e-5);
}

TEST(ModelRunnerWeights, AModelWithoutTheMethodWritesNoWeights) {
  std::unique_ptr<ModelRunner> runner = LoadPathOnCpu(ModelWithoutWeightsMethodPath(), true);
  ASSERT_TRUE(runner);
  const ModelMetadata& m = runner->metadata();
  auto refs = runner->EncodeReferences(UnitLuma(m, 2, 1), 2);
  ASSERT_TRUE(refs.ok());
  const std::vector<uint8_t> frame = Pattern(m.frame_bytes(), 10);
  std::vector<uint8_t> out(m.output_bytes());
  std::vector<float> weights(2, -1.0f);
  FrameInput input;
  input.frame_rgb = frame.data();
  input.references = refs->get();
  input.output_rgb = out.data();
  input.reference_weights = weights.data();
  ASSERT_TRUE(runner->Enhance({&input, 1}).ok());
  EXPECT_THAT(weights, ::testing::Each(-1.0f));
}

TEST(ModelParallelismRule, AutoOnCpuIsOneSingleThreadedInstancePerCore) {
  const ModelParallelism p = ResolveModelParallelism(0, 0, /*on_cuda=*/false, /*cores=*/4);
  EXPECT_EQ(p.instances, 4);
  EXPECT_EQ(p.threads, 1);
}

TEST(ModelParallelismRule, AGivenValueIsKeptAndTheOtherSharesTheCores) {
  ModelParallelism p = ResolveModelParallelism(2, 0, false, 8);
  EXPECT_EQ(p.instances, 2);
  EXPECT_EQ(p.threads, 4);
  p = ResolveModelParallelism(0, 2, false, 8);
  EXPECT_EQ(p.instances, 4);
  EXPECT_EQ(p.threads, 2);
  p = ResolveModelParallelism(0, 16, false, 8);  // more threads than cores: still one instance
  EXPECT_EQ(p.instances, 1);
  EXPECT_EQ(p.threads, 16);
  p = ResolveModelParallelism(3, 5, false, 8);
  EXPECT_EQ(p.instances, 3);
  EXPECT_EQ(p.threads, 5);
}

TEST(ModelParallelismRule, AutoOnCudaIsOneInstanceWithEveryCore) {
  const ModelParallelism p = ResolveModelParallelism(0, 0, /*on_cuda=*/true, 8);
  EXPECT_EQ(p.instances, 1);
  EXPECT_EQ(p.threads, 8);
}

TEST(ModelParallelismRule, UnknownCoreCountCountsAsOne) {
  const ModelParallelism p = ResolveModelParallelism(0, 0, false, 0);
  EXPECT_EQ(p.instances, 1);
  EXPECT_EQ(p.threads, 1);
}

TEST(ModelRunnerLoad, MissingFileIsNotFound) {
  auto runner = ModelRunner::Load("/nonexistent/model.pt", {});
  EXPECT_EQ(runner.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(runner.status().message(), HasSubstr("/nonexistent/model.pt"));
}

TEST(ModelRunnerLoad, CorruptFileIsInvalidArgument) {
  std::string path = ::testing::TempDir() + "/corrupt_XXXXXX";  // unique: runs may overlap
  const int fd = mkstemp(path.data());
  ASSERT_GE(fd, 0);
  close(fd);
  std::ofstream(path) << "this is not a TorchScript archive";
  auto runner = ModelRunner::Load(path, {});
  std::remove(path.c_str());
  EXPECT_EQ(runner.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(runner.status().message(), HasSubstr("not a loadable TorchScript file"));
}

TEST(ModelRunnerLoad, UnknownDeviceIsInvalidArgument) {
  ModelRunnerOptions options;
  options.device = "tpu";
  auto runner = ModelRunner::Load(WeightsPath("fsrst_x4_small"), options);
  EXPECT_EQ(runner.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(runner.status().message(), HasSubstr("expected auto, cpu, cuda or cuda:N"));
}

TEST(ModelMetadataParse, NamesTheBadKey) {
  auto m = ParseModelMetadata(R"({"name": "x", "lr_size": 32, "scale": 0})");
  EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(m.status().message(), HasSubstr("\"scale\" must be a positive integer"));
  EXPECT_EQ(ParseModelMetadata("not json").status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace fsrst
