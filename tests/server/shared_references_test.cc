#include "server/shared_references.h"

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/batch_runner.h"
#include "server/enhance_request_handler.h"
#include "store/redis_reference_store.h"
#include "tests/server/service_test_util.h"
#include "tests/store/redis_server.h"

namespace fsrst {
namespace {

using ::fsrst::testing::EnhanceWith;
using ::fsrst::testing::RedisServer;
using ::fsrst::testing::TestConfig;
using ::testing::HasSubstr;

const std::string kKey(32, 'k');
using FeaturesOr = absl::StatusOr<std::shared_ptr<const ReferenceFeatures>>;

// Polls `done` until true or 60 s pass; the bound only stops a broken test.
template <typename F>
bool Eventually(F done) {
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  while (absl::Now() < deadline) {
    if (done()) return true;
    absl::SleepFor(absl::Milliseconds(5));
  }
  return done();
}

// One replica's side of the store, on the real small model, a real batcher and a real
// redis-server; the validation thread is not started unless a test calls Start().
class SharedReferencesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ModelRunnerOptions model_options;
    model_options.device = "cpu";
    model_options.num_threads = 1;
    auto runner = ModelRunner::Load(TestConfig().model_path, model_options);
    ASSERT_TRUE(runner.ok()) << runner.status();
    runner_ = *std::move(runner);
    metrics_ = std::make_unique<ServerMetrics>("m", "v", "cpu", false, 1, 1, 8,
                                               MetricSources{});
    cache_ = std::make_unique<ReferenceCache>(ReferenceCacheOptions{});
    DynamicBatcherOptions batcher_options;
    batcher_ = std::make_unique<DynamicBatcher>(batcher_options,
                                                MakeBatchFunction(runner_.get(), metrics_.get()));
    pool_ = std::make_unique<WorkerPool>(WorkerPoolOptions{});
    shared_ = std::make_unique<SharedReferences>(
        MakeStore([this](StoreOperation operation, absl::StatusCode code, absl::Duration) {
          if (operation == StoreOperation::kGet) gets_.fetch_add(1);
          // OK calls, whether they stored or (rightly) refused.
          if (operation == StoreOperation::kPutFeatures && code == absl::StatusCode::kOk) {
            put_features_.fetch_add(1);
          }
        }, &store_),
        cache_.get(), runner_.get(), batcher_.get(), pool_.get(), metrics_.get(),
        SharedReferencesOptions{absl::Minutes(10), absl::Hours(1)});
    model_version_ = runner_->metadata().name + "@" + runner_->metadata().version;
  }

  void TearDown() override {
    pool_->Stop();
    batcher_->Stop();
  }

  // A store on redis_; `raw` (when given) keeps a pointer to it.
  std::unique_ptr<RedisReferenceStore> MakeStore(StoreObserver observer = nullptr,
                                                 RedisReferenceStore** raw = nullptr) {
    RedisStoreOptions options;
    options.url = redis_.url();
    options.observer = std::move(observer);
    auto store = *RedisReferenceStore::Create(options, *ValueSealer::FromKey(kKey));
    if (raw != nullptr) *raw = store.get();
    return store;
  }

  std::vector<float> Luma(int count, float value) {
    return std::vector<float>(static_cast<size_t>(count) * 128 * 128, value);
  }

  // ReadThrough, waiting for its answer.
  FeaturesOr ReadThroughAndWait(const std::string& identity) {
    absl::Notification done;
    FeaturesOr result;
    shared_->ReadThrough("", identity, [&](FeaturesOr features) {
      result = std::move(features);
      done.Notify();
    });
    done.WaitForNotification();
    return result;
  }

  std::vector<float> RandomLuma(int count, uint32_t seed) {
    return testing::UnitLuma(runner_->metadata(), count, seed);
  }

  std::shared_ptr<const ReferenceFeatures> Encode(const std::vector<float>& luma, int count) {
    FeaturesOr features = runner_->EncodeReferences(luma, count);
    EXPECT_TRUE(features.ok()) << features.status();
    return features.ok() ? *features : nullptr;
  }

  // A registration on another replica of this model version: references and features.
  std::string RegisterElsewhere(const std::string& identity, const std::vector<float>& luma,
                                int count) {
    absl::StatusOr<std::string> generation =
        shared_->Persist("", identity, luma, count, *Encode(luma, count));
    EXPECT_TRUE(generation.ok()) << generation.status();
    return generation.ok() ? *generation : "";
  }

  // A counter without labels, as Prometheus would scrape it (-1 when not exported).
  double Counter(const std::string& name) {
    return testing::MetricSample(metrics_->SerializeText(), name);
  }

  std::string FeaturesField() const { return "f:" + model_version_; }

  // Occupies the batcher's one worker until the returned notification is notified.
  std::unique_ptr<absl::Notification> BlockBatcher() {
    auto release = std::make_unique<absl::Notification>();
    absl::Notification running;
    absl::Notification* r = release.get();
    EXPECT_TRUE(batcher_->RunExclusive([&running, r] {
      running.Notify();
      r->WaitForNotification();
    }).ok());
    running.WaitForNotification();
    return release;
  }

  RedisServer redis_;
  std::unique_ptr<ModelRunner> runner_;
  std::unique_ptr<ServerMetrics> metrics_;
  std::unique_ptr<ReferenceCache> cache_;
  std::unique_ptr<DynamicBatcher> batcher_;
  std::unique_ptr<WorkerPool> pool_;
  std::atomic<int> gets_{0};
  std::atomic<int> put_features_{0};
  RedisReferenceStore* store_ = nullptr;  // owned by shared_
  std::unique_ptr<SharedReferences> shared_;
  std::string model_version_;
};

// Features per model version in the store (issue 20): the same fixture, named apart.
class SharedFeaturesTest : public SharedReferencesTest {};

TEST_F(SharedReferencesTest, ConcurrentMissesShareOneLoadAndTheFeaturesAreCached) {
  ASSERT_TRUE(shared_->Persist("", "alice", Luma(2, 0.5f), 2).ok());
  auto release = BlockBatcher();
  constexpr int kWaiters = 5;
  std::atomic<int> answered{0};
  std::vector<FeaturesOr> results(kWaiters);
  for (int i = 0; i < kWaiters; ++i) {
    shared_->ReadThrough("", "alice", [&, i](FeaturesOr features) {
      results[i] = std::move(features);
      answered.fetch_add(1);
    });
  }
  // The one load has read the store and waits for the model with its encode.
  ASSERT_TRUE(Eventually([&] { return batcher_->job_queue_size() == 1; }));
  release->Notify();
  ASSERT_TRUE(Eventually([&] { return answered.load() == kWaiters; }));
  for (const FeaturesOr& result : results) {
    ASSERT_TRUE(result.ok()) << result.status();
    EXPECT_EQ(result->get(), results[0]->get());
    EXPECT_EQ((*result)->count(), 2);
  }
  EXPECT_EQ(gets_.load(), 1);
  EXPECT_EQ(cache_->Lookup("alice").get(), results[0]->get());
}

// A frame that missed the cache while a load of its identity was finishing reaches
// ReadThrough after that load cached the features: it is served from the cache, with no
// second store read (a stream's frames raced a read-through this way, CI of stop 28).
TEST_F(SharedFeaturesTest, AMissThatArrivesAfterTheLoadCachedItIsServedFromTheCache) {
  std::atomic<int> feature_reads{0};
  shared_ = std::make_unique<SharedReferences>(
      MakeStore([&](StoreOperation operation, absl::StatusCode, absl::Duration) {
        if (operation == StoreOperation::kGetFeatures) feature_reads.fetch_add(1);
      }),
      cache_.get(), runner_.get(), batcher_.get(), pool_.get(), metrics_.get(),
      SharedReferencesOptions{absl::Minutes(10), absl::Hours(1)});
  RegisterElsewhere("alice", RandomLuma(3, 4), 3);
  // Each frame looks the cache up once, as the handlers do, then reads through. The
  // second frame's lookup happens before the first frame's load is done.
  ASSERT_EQ(cache_->Lookup("alice"), nullptr);
  ASSERT_EQ(cache_->Lookup("alice"), nullptr);
  FeaturesOr loaded = ReadThroughAndWait("alice");
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ASSERT_EQ(feature_reads.load(), 1);
  FeaturesOr late = ReadThroughAndWait("alice");
  ASSERT_TRUE(late.ok()) << late.status();
  EXPECT_EQ(late->get(), loaded->get());
  EXPECT_EQ(feature_reads.load(), 1);
  EXPECT_EQ(Counter("fsrst_reference_stored_features_used_total"), 1);
  // Two frames, two lookups, two misses: the read-throughs' own looks count nothing.
  EXPECT_EQ(cache_->stats().misses, 2);
  EXPECT_EQ(cache_->stats().hits, 0);
  // Once the copy is gone, a miss loads again.
  ASSERT_TRUE(cache_->Erase("alice"));
  ASSERT_TRUE(ReadThroughAndWait("alice").ok());
  EXPECT_EQ(feature_reads.load(), 2);
}

TEST_F(SharedReferencesTest, MissingEverywhereIsTheUsualNotFound) {
  FeaturesOr result = ReadThroughAndWait("nobody");
  EXPECT_EQ(result.status(), IdentityNotFound("nobody"));
}

TEST_F(SharedReferencesTest, StoreDownIsUnavailableNeverNotFound) {
  redis_.Kill();
  FeaturesOr result = ReadThroughAndWait("alice");
  EXPECT_EQ(result.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(result.status().message(), HasSubstr("is unreachable"));
  EXPECT_THAT(result.status().message(), HasSubstr("registering again would not help"));
  EXPECT_EQ(shared_->Persist("", "alice", Luma(1, 0.5f), 1).status().code(),
            absl::StatusCode::kUnavailable);
  EXPECT_EQ(shared_->Delete("", "alice").status().code(), absl::StatusCode::kUnavailable);
}

// Defect found in review: a read-through that read the store before a registration on the
// same replica finished after it, and cached the older references over the new ones (the
// store and every other replica then held the new ones, so validation never noticed).
TEST_F(SharedReferencesTest, AReadThroughOlderThanARegistrationDoesNotReplaceIt) {
  ASSERT_TRUE(shared_->Persist("", "alice", Luma(1, 0.2f), 1).ok());
  auto release = BlockBatcher();
  absl::Notification loaded;
  FeaturesOr old_features;
  shared_->ReadThrough("", "alice", [&](FeaturesOr features) {
    old_features = std::move(features);
    loaded.Notify();
  });
  ASSERT_TRUE(Eventually([&] { return batcher_->job_queue_size() == 1; }));
  // A registration of new references on this replica, as RegisterReferencesReactor does it.
  absl::StatusOr<std::string> generation = shared_->Persist("", "alice", Luma(2, 0.8f), 2);
  ASSERT_TRUE(generation.ok()) << generation.status();
  auto registered = runner_->EncodeReferences(Luma(2, 0.8f), 2);
  ASSERT_TRUE(registered.ok()) << registered.status();
  shared_->Remember("", "alice", *generation);
  cache_->Insert("alice", *registered);
  release->Notify();
  loaded.WaitForNotification();
  ASSERT_TRUE(old_features.ok()) << old_features.status();
  EXPECT_EQ(cache_->Lookup("alice").get(), registered->get());
  EXPECT_EQ(cache_->Lookup("alice")->count(), 2);
}

TEST_F(SharedReferencesTest, InvalidationFromAnotherReplicaDropsTheLocalCopy) {
  shared_->Start();
  auto other = MakeStore();
  ASSERT_TRUE(shared_->Persist("", "alice", Luma(1, 0.5f), 1).ok());
  ASSERT_TRUE(ReadThroughAndWait("alice").ok());
  ASSERT_TRUE(cache_->LastUse("alice").has_value());
  ASSERT_TRUE(*other->Delete(StoreKey{"", "alice"}));
  EXPECT_TRUE(Eventually([&] { return !cache_->LastUse("alice").has_value(); }));
}

TEST_F(SharedReferencesTest, RevalidateDropsDeletedAndReplacedCopiesAndKeepsCurrentOnes) {
  for (const char* identity : {"deleted", "replaced", "current"}) {
    ASSERT_TRUE(shared_->Persist("", identity, Luma(1, 0.5f), 1).ok());
    ASSERT_TRUE(ReadThroughAndWait(identity).ok());
  }
  auto store = MakeStore();
  // Behind the replica's back: no invalidation message is published.
  ASSERT_EQ(redis_.Command({"DEL", store->RedisKey({"", "deleted"})}), "1");
  ASSERT_EQ(redis_.Command({"HSET", store->RedisKey({"", "replaced"}), "g", "another"}), "0");
  absl::StatusOr<int> dropped = shared_->Revalidate();
  ASSERT_TRUE(dropped.ok()) << dropped.status();
  EXPECT_EQ(*dropped, 2);
  EXPECT_FALSE(cache_->LastUse("deleted").has_value());
  EXPECT_FALSE(cache_->LastUse("replaced").has_value());
  EXPECT_TRUE(cache_->LastUse("current").has_value());
  EXPECT_EQ(*shared_->Revalidate(), 0);
}

TEST_F(SharedReferencesTest, RevalidateWithTheStoreDownKeepsServing) {
  ASSERT_TRUE(shared_->Persist("", "alice", Luma(1, 0.5f), 1).ok());
  ASSERT_TRUE(ReadThroughAndWait("alice").ok());
  redis_.Kill();
  EXPECT_EQ(shared_->Revalidate().status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(cache_->Lookup("alice"), nullptr);
}

TEST_F(SharedReferencesTest, StoredReferencesOfAnotherSizeAreAClearError) {
  auto store = MakeStore();
  std::string value = "FSR1";
  const uint32_t header[2] = {1, 64};
  value.append(reinterpret_cast<const char*>(header), sizeof(header));
  value.append(64 * 64 * sizeof(float), '\0');
  ASSERT_TRUE(store->Put(StoreKey{"", "alice"}, value, absl::Minutes(1)).ok());
  FeaturesOr result = ReadThroughAndWait("alice");
  EXPECT_EQ(result.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(result.status().message(), HasSubstr("1 references of 64x64"));
  EXPECT_THAT(result.status().message(), HasSubstr("of 128x128"));
}

TEST_F(SharedFeaturesTest, AReadThroughUsesThisVersionsStoredFeaturesWithoutEncoding) {
  const std::vector<float> luma = RandomLuma(3, 1);
  RegisterElsewhere("alice", luma, 3);
  FeaturesOr features = ReadThroughAndWait("alice");
  ASSERT_TRUE(features.ok()) << features.status();
  EXPECT_EQ((*features)->count(), 3);
  EXPECT_EQ(Counter("fsrst_reference_stored_features_used_total"), 1);
  EXPECT_EQ(Counter("fsrst_reference_reencodes_total"), 0);
  EXPECT_EQ(gets_.load(), 0);  // the references were never read
  EXPECT_EQ(cache_->Lookup("alice").get(), features->get());
  // The features served are the registration's: the same image.
  EXPECT_EQ(EnhanceWith(*runner_, **features), EnhanceWith(*runner_, *Encode(luma, 3)));
}

TEST_F(SharedFeaturesTest, WithoutThisVersionsFeaturesItEncodesOnceAndWritesThemBack) {
  const std::vector<float> luma = RandomLuma(2, 2);
  // Registered by a replica of another model version: references only, for this version.
  ASSERT_TRUE(shared_->Persist("", "bob", luma, 2).ok());
  ASSERT_EQ(redis_.Command({"HEXISTS", store_->RedisKey({"", "bob"}), FeaturesField()}), "0");
  FeaturesOr first = ReadThroughAndWait("bob");
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(Counter("fsrst_reference_reencodes_total"), 1);
  EXPECT_EQ(Counter("fsrst_reference_stored_features_used_total"), 0);
  ASSERT_TRUE(Eventually([&] { return put_features_.load() == 1; }));
  EXPECT_EQ(redis_.Command({"HEXISTS", store_->RedisKey({"", "bob"}), FeaturesField()}), "1");
  // The next replica of this version (here: this one after losing its copy) uses them.
  ASSERT_TRUE(cache_->Erase("bob"));
  FeaturesOr second = ReadThroughAndWait("bob");
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(Counter("fsrst_reference_reencodes_total"), 1);
  EXPECT_EQ(Counter("fsrst_reference_stored_features_used_total"), 1);
  EXPECT_EQ(gets_.load(), 1);
  EXPECT_EQ(EnhanceWith(*runner_, **second), EnhanceWith(*runner_, **first));
}

TEST_F(SharedFeaturesTest, RefusedStoredFeaturesFallBackToEncodingAndAreReplaced) {
  const std::vector<float> luma = RandomLuma(2, 3);
  const std::string generation = RegisterElsewhere("carol", luma, 2);
  const StoreKey key{"", "carol"};
  const std::string redis_key = store_->RedisKey(key);
  // Validly sealed, but features of another shape (two references' bytes cut to one).
  std::string bytes = *runner_->SerializeFeatures(*Encode(luma, 2));
  std::string truncated = bytes.substr(0, bytes.size() - 100);
  std::string sealed = *ValueSealer::FromKey(kKey)->Seal(
      truncated, RedisReferenceStore::FeaturesAssociatedData(key, model_version_, generation));
  ASSERT_EQ(redis_.Command({"HSET", redis_key, FeaturesField(), sealed}), "0");
  FeaturesOr features = ReadThroughAndWait("carol");
  ASSERT_TRUE(features.ok()) << features.status();
  EXPECT_EQ((*features)->count(), 2);
  EXPECT_EQ(Counter("fsrst_reference_stored_features_refused_total"), 1);
  EXPECT_EQ(Counter("fsrst_reference_reencodes_total"), 1);
  EXPECT_EQ(EnhanceWith(*runner_, **features), EnhanceWith(*runner_, *Encode(luma, 2)));
  // The write-back replaced them with good ones.
  ASSERT_TRUE(Eventually([&] { return put_features_.load() == 1; }));
  EXPECT_EQ(store_->GetFeatures(key, model_version_, absl::Minutes(1))->value, bytes);

  // Tampered sealed bytes (they do not authenticate): refused the same way.
  std::string raw = redis_.Command({"HGET", redis_key, FeaturesField()});
  raw[raw.size() / 2] = static_cast<char>(raw[raw.size() / 2] ^ 0x01);
  ASSERT_EQ(redis_.Command({"HSET", redis_key, FeaturesField(), raw}), "0");
  ASSERT_TRUE(cache_->Erase("carol"));
  features = ReadThroughAndWait("carol");
  ASSERT_TRUE(features.ok()) << features.status();
  EXPECT_EQ(Counter("fsrst_reference_stored_features_refused_total"), 2);
  EXPECT_EQ(Counter("fsrst_reference_reencodes_total"), 2);
}

// The race the conditional write-back exists for: a replica encodes references that are
// replaced (registered again elsewhere) before its write-back; its features must not land
// beside the new references, or the next replica would serve the old face.
TEST_F(SharedFeaturesTest, AWriteBackOfReplacedReferencesIsNotStored) {
  ASSERT_TRUE(shared_->Persist("", "dave", RandomLuma(1, 4), 1).ok());  // references only
  auto release = std::make_unique<absl::Notification>();
  absl::Notification running;
  ASSERT_TRUE(batcher_
                  ->RunExclusive([&running, r = release.get()] {
                    running.Notify();
                    r->WaitForNotification();
                  })
                  .ok());
  running.WaitForNotification();
  absl::Notification loaded;
  shared_->ReadThrough("", "dave", [&](FeaturesOr) { loaded.Notify(); });
  // The load has read the old references and waits for the model with their encode.
  ASSERT_TRUE(Eventually([&] { return batcher_->job_queue_size() == 1; }));
  // Registered again elsewhere, by a replica of another version (references only).
  ASSERT_TRUE(
      store_->Put({"", "dave"}, std::string("FSR1") + std::string(8, '\0'), absl::Minutes(1)).ok());
  release->Notify();
  loaded.WaitForNotification();
  // The write-back ran (an OK store call whose answer was "not stored"); then look.
  ASSERT_TRUE(Eventually([&] { return put_features_.load() == 1; }));
  EXPECT_EQ(redis_.Command({"HEXISTS", store_->RedisKey({"", "dave"}), FeaturesField()}), "0");
}

}  // namespace
}  // namespace fsrst
