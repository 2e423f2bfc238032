#include "store/redis_reference_store.h"

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/synchronization/mutex.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/store/redis_server.h"

namespace fsrst {
namespace {

using ::fsrst::testing::RedisServer;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

const std::string kKey(32, 'k');
const absl::Duration kTtl = absl::Seconds(100);

std::unique_ptr<RedisReferenceStore> MakeStore(const RedisServer& redis,
                                               const std::string& key = kKey,
                                               const std::string& password = "") {
  RedisStoreOptions options;
  options.url = redis.url();
  options.password = password;
  options.key_prefix = "test:";
  options.command_timeout_ms = 300;
  absl::StatusOr<std::unique_ptr<RedisReferenceStore>> store =
      RedisReferenceStore::Create(options, *ValueSealer::FromKey(key));
  EXPECT_TRUE(store.ok()) << store.status();
  return *std::move(store);
}

// A plaintext that cannot appear by chance: 4 KiB of a repeated marker.
std::string Plaintext() {
  std::string s;
  while (s.size() < 4096) s += "LUMA-PLAINTEXT-";
  return s;
}

// Polls `done` until true or 20 s pass; the bound only stops a broken test.
template <typename F>
bool Eventually(F done) {
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  while (absl::Now() < deadline) {
    if (done()) return true;
    absl::SleepFor(absl::Milliseconds(5));
  }
  return done();
}

TEST(ParseRedisUrl, AcceptsHostAndPortOnly) {
  absl::StatusOr<RedisAddress> a = ParseRedisUrl("redis://redis.default:6380", "f");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->host, "redis.default");
  EXPECT_EQ(a->port, 6380);
  EXPECT_EQ(ParseRedisUrl("redis://h", "f")->port, 6379);
  for (const char* bad : {"h:6379", "http://h:1", "redis://:1", "redis://h:0", "redis://h:70000",
                          "redis://h:x", "redis://u:p@h:1", "redis://h:1/0"}) {
    absl::StatusOr<RedisAddress> parsed = ParseRedisUrl(bad, "reference_store");
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(parsed.status().message(), HasSubstr("--reference_store=")) << bad;
    EXPECT_THAT(parsed.status().message(), HasSubstr("expected redis://host:port")) << bad;
  }
}

TEST(RedisReferenceStore, PutThenGetReturnsTheValueAndItsGeneration) {
  RedisServer redis;
  auto store = MakeStore(redis);
  const StoreKey key{"tenantA", "alice"};
  absl::StatusOr<std::string> generation = store->Put(key, Plaintext(), kTtl);
  ASSERT_TRUE(generation.ok()) << generation.status();
  absl::StatusOr<StoredValue> got = store->Get(key, kTtl);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->value, Plaintext());
  EXPECT_EQ(got->generation, *generation);
  // A second Put is a new generation.
  EXPECT_NE(*store->Put(key, "other", kTtl), *generation);
  EXPECT_EQ(store->Get(key, kTtl)->value, "other");
}

TEST(RedisReferenceStore, UnknownIdentityIsNotFound) {
  RedisServer redis;
  auto store = MakeStore(redis);
  absl::StatusOr<StoredValue> got = store->Get({"", "nobody"}, kTtl);
  EXPECT_EQ(got.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(got.status().message(), HasSubstr("\"nobody\""));
}

TEST(RedisReferenceStore, RedisHoldsOnlySealedBytes) {
  RedisServer redis;
  auto store = MakeStore(redis);
  const StoreKey key{"tenantA", "alice"};
  ASSERT_TRUE(store->Put(key, Plaintext(), kTtl).ok());
  const std::string raw = redis.Command({"HGET", store->RedisKey(key), "v"});
  EXPECT_EQ(raw.size(), Plaintext().size() + ValueSealer::kOverheadBytes);
  EXPECT_THAT(raw, Not(HasSubstr("LUMA-PLAINTEXT")));
  EXPECT_EQ(*ValueSealer::FromKey(kKey)->Open(raw, RedisReferenceStore::AssociatedData(key)),
            Plaintext());
  // And a whole dump of the keyspace holds none of it either.
  const std::string dump = redis.Command({"DUMP", store->RedisKey(key)});
  EXPECT_THAT(dump, Not(HasSubstr("LUMA-PLAINTEXT")));
}

TEST(RedisReferenceStore, ValueMovedToAnotherIdentityOrTenantDoesNotOpen) {
  RedisServer redis;
  auto store = MakeStore(redis);
  const StoreKey alice{"tenantA", "alice"};
  ASSERT_TRUE(store->Put(alice, Plaintext(), kTtl).ok());
  const std::string raw = redis.Command({"HGET", store->RedisKey(alice), "v"});
  for (const StoreKey& other : {StoreKey{"tenantA", "mallory"}, StoreKey{"tenantB", "alice"},
                                StoreKey{"", "alice"}}) {
    ASSERT_EQ(redis.Command({"HSET", store->RedisKey(other), "g", "x", "v", raw}), "2");
    absl::StatusOr<StoredValue> got = store->Get(other, kTtl);
    EXPECT_EQ(got.status().code(), absl::StatusCode::kDataLoss)
        << other.tenant << "/" << other.identity_id;
    EXPECT_THAT(got.status().message(), HasSubstr("--reference_store_key_file"));
  }
}

TEST(RedisReferenceStore, TamperedValueDoesNotOpen) {
  RedisServer redis;
  auto store = MakeStore(redis);
  const StoreKey key{"", "alice"};
  ASSERT_TRUE(store->Put(key, Plaintext(), kTtl).ok());
  std::string raw = redis.Command({"HGET", store->RedisKey(key), "v"});
  raw[raw.size() / 2] = static_cast<char>(raw[raw.size() / 2] ^ 0x40);
  ASSERT_EQ(redis.Command({"HSET", store->RedisKey(key), "v", raw}), "0");
  EXPECT_EQ(store->Get(key, kTtl).status().code(), absl::StatusCode::kDataLoss);
}

TEST(RedisReferenceStore, AnotherEncryptionKeyDoesNotOpen) {
  RedisServer redis;
  const StoreKey key{"", "alice"};
  ASSERT_TRUE(MakeStore(redis)->Put(key, Plaintext(), kTtl).ok());
  EXPECT_EQ(MakeStore(redis, std::string(32, 'x'))->Get(key, kTtl).status().code(),
            absl::StatusCode::kDataLoss);
}

TEST(RedisReferenceStore, PutSetsTheTtlAndGetPushesItBack) {
  RedisServer redis;
  auto store = MakeStore(redis);
  const StoreKey key{"", "alice"};
  ASSERT_TRUE(store->Put(key, "v", absl::Seconds(50)).ok());
  int64_t pttl = 0;
  ASSERT_TRUE(absl::SimpleAtoi(redis.Command({"PTTL", store->RedisKey(key)}), &pttl));
  EXPECT_GT(pttl, 40'000);
  EXPECT_LE(pttl, 50'000);
  ASSERT_TRUE(store->Get(key, absl::Seconds(500)).ok());
  ASSERT_TRUE(absl::SimpleAtoi(redis.Command({"PTTL", store->RedisKey(key)}), &pttl));
  EXPECT_GT(pttl, 400'000);
}

TEST(RedisReferenceStore, ExpiredIdentityIsNotFound) {
  RedisServer redis;
  auto store = MakeStore(redis);
  const StoreKey key{"", "alice"};
  ASSERT_TRUE(store->Put(key, "v", absl::Milliseconds(50)).ok());
  EXPECT_TRUE(Eventually([&] { return redis.Command({"EXISTS", store->RedisKey(key)}) == "0"; }));
  EXPECT_EQ(store->Get(key, kTtl).status().code(), absl::StatusCode::kNotFound);
}

TEST(RedisReferenceStore, DeleteRemovesAndSaysWhetherItHeldAValue) {
  RedisServer redis;
  auto store = MakeStore(redis);
  const StoreKey key{"", "alice"};
  ASSERT_TRUE(store->Put(key, "v", kTtl).ok());
  EXPECT_EQ(*store->Delete(key), true);
  EXPECT_EQ(redis.Command({"EXISTS", store->RedisKey(key)}), "0");
  EXPECT_EQ(*store->Delete(key), false);
  EXPECT_EQ(store->Get(key, kTtl).status().code(), absl::StatusCode::kNotFound);
}

TEST(RedisReferenceStore, GenerationsTellCurrentReplacedAndGoneAndTouch) {
  RedisServer redis;
  auto store = MakeStore(redis);
  const StoreKey a{"", "a"}, b{"", "b"}, gone{"", "gone"};
  const std::string ga = *store->Put(a, "v", absl::Seconds(50));
  const std::string gb = *store->Put(b, "v", absl::Seconds(50));
  absl::StatusOr<std::vector<std::string>> generations =
      store->Generations({{a, true}, {b, false}, {gone, true}}, absl::Seconds(500));
  ASSERT_TRUE(generations.ok()) << generations.status();
  EXPECT_THAT(*generations, ElementsAre(ga, gb, ""));
  int64_t pttl_a = 0, pttl_b = 0;
  ASSERT_TRUE(absl::SimpleAtoi(redis.Command({"PTTL", store->RedisKey(a)}), &pttl_a));
  ASSERT_TRUE(absl::SimpleAtoi(redis.Command({"PTTL", store->RedisKey(b)}), &pttl_b));
  EXPECT_GT(pttl_a, 400'000);  // touched
  EXPECT_LE(pttl_b, 50'000);   // only probed
  EXPECT_EQ(redis.Command({"EXISTS", store->RedisKey(gone)}), "0");  // a touch creates nothing
}

// Features of a model version: a marker that cannot appear by chance, distinct per version.
VersionFeatures Features(const std::string& model_version) {
  std::string bytes;
  while (bytes.size() < 2048) bytes += "FEATURE-PLAINTEXT-" + model_version + "-";
  return VersionFeatures{model_version, bytes};
}

TEST(RedisReferenceStore, PutWithFeaturesKeepsThemPerModelVersion) {
  RedisServer redis;
  auto store = MakeStore(redis);
  const StoreKey key{"tenantA", "alice"};
  const VersionFeatures small = Features("fsrst_x4_small@22030");
  absl::StatusOr<std::string> generation = store->Put(key, Plaintext(), &small, kTtl);
  ASSERT_TRUE(generation.ok()) << generation.status();
  absl::StatusOr<StoredValue> got = store->GetFeatures(key, small.model_version, kTtl);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->value, small.bytes);
  EXPECT_EQ(got->generation, *generation);
  // Another version (or another version number of the same model) has none yet: an empty
  // value, and the generation to write them back under.
  for (const char* other : {"fsrst_x4@20083", "fsrst_x4_small@22031"}) {
    got = store->GetFeatures(key, other, kTtl);
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(got->value, "") << other;
    EXPECT_EQ(got->generation, *generation);
  }
  // The references are untouched by the features beside them.
  EXPECT_EQ(store->Get(key, kTtl)->value, Plaintext());
  // An identity that is not stored at all is NOT_FOUND, whatever the version.
  EXPECT_EQ(store->GetFeatures({"tenantA", "nobody"}, small.model_version, kTtl).status().code(),
            absl::StatusCode::kNotFound);
}

TEST(RedisReferenceStore, PutFeaturesWritesOnlyBesideTheGenerationItRead) {
  RedisServer redis;
  auto store = MakeStore(redis);
  const StoreKey key{"", "alice"};
  const VersionFeatures x4 = Features("fsrst_x4@20083");
  const VersionFeatures small = Features("fsrst_x4_small@22030");
  const std::string first = *store->Put(key, "refs-1", &small, kTtl);
  ASSERT_EQ(*store->PutFeatures(key, first, x4, kTtl), true);
  EXPECT_EQ(store->GetFeatures(key, x4.model_version, kTtl)->value, x4.bytes);
  EXPECT_EQ(store->GetFeatures(key, small.model_version, kTtl)->value, small.bytes);
  // Registered again: the features of EVERY version of the old references are gone, and a
  // replica that encoded the old references cannot put its features beside the new ones.
  const std::string second = *store->Put(key, "refs-2", kTtl);
  EXPECT_EQ(store->GetFeatures(key, x4.model_version, kTtl)->value, "");
  EXPECT_EQ(store->GetFeatures(key, small.model_version, kTtl)->value, "");
  EXPECT_EQ(*store->PutFeatures(key, first, x4, kTtl), false);
  EXPECT_EQ(redis.Command({"HEXISTS", store->RedisKey(key), "f:fsrst_x4@20083"}), "0");
  EXPECT_EQ(*store->PutFeatures(key, second, x4, kTtl), true);
  EXPECT_EQ(store->GetFeatures(key, x4.model_version, kTtl)->value, x4.bytes);
  // Deleted (or expired): a late write-back recreates nothing.
  ASSERT_TRUE(*store->Delete(key));
  EXPECT_EQ(*store->PutFeatures(key, second, x4, kTtl), false);
  EXPECT_EQ(redis.Command({"EXISTS", store->RedisKey(key)}), "0");
}

TEST(RedisReferenceStore, DeleteAndExpiryRemoveTheFeaturesOfEveryVersion) {
  RedisServer redis;
  auto store = MakeStore(redis);
  const StoreKey key{"", "alice"};
  const VersionFeatures small = Features("fsrst_x4_small@22030");
  std::string generation = *store->Put(key, "refs", &small, kTtl);
  ASSERT_TRUE(*store->PutFeatures(key, generation, Features("fsrst_x4@20083"), kTtl));
  ASSERT_EQ(redis.Command({"HLEN", store->RedisKey(key)}), "4");  // g, v and two versions
  ASSERT_TRUE(*store->Delete(key));
  EXPECT_EQ(redis.Command({"EXISTS", store->RedisKey(key)}), "0");
  EXPECT_EQ(store->GetFeatures(key, small.model_version, kTtl).status().code(),
            absl::StatusCode::kNotFound);
  // Expiry: one key per identity, so one PEXPIRE covers every version, and every read or
  // write-back of features pushes it back.
  generation = *store->Put(key, "refs", &small, absl::Seconds(50));
  ASSERT_TRUE(
      *store->PutFeatures(key, generation, Features("fsrst_x4@20083"), absl::Seconds(500)));
  int64_t pttl = 0;
  ASSERT_TRUE(absl::SimpleAtoi(redis.Command({"PTTL", store->RedisKey(key)}), &pttl));
  EXPECT_GT(pttl, 400'000);
  ASSERT_TRUE(store->GetFeatures(key, small.model_version, absl::Seconds(5000)).ok());
  ASSERT_TRUE(absl::SimpleAtoi(redis.Command({"PTTL", store->RedisKey(key)}), &pttl));
  EXPECT_GT(pttl, 4'000'000);
  ASSERT_TRUE(store->GetFeatures(key, small.model_version, absl::Milliseconds(50)).ok());
  EXPECT_TRUE(Eventually([&] { return redis.Command({"EXISTS", store->RedisKey(key)}) == "0"; }));
}

TEST(RedisReferenceStore, FeaturesAreSealedAndOpenOnlyForTheirVersionAndGeneration) {
  RedisServer redis;
  auto store = MakeStore(redis);
  const StoreKey key{"tenantA", "alice"};
  const VersionFeatures small = Features("fsrst_x4_small@22030");
  const std::string generation = *store->Put(key, Plaintext(), &small, kTtl);
  const std::string raw =
      redis.Command({"HGET", store->RedisKey(key), "f:fsrst_x4_small@22030"});
  EXPECT_EQ(raw.size(), small.bytes.size() + ValueSealer::kOverheadBytes);
  EXPECT_THAT(raw, Not(HasSubstr("FEATURE-PLAINTEXT")));
  EXPECT_THAT(redis.Command({"DUMP", store->RedisKey(key)}), Not(HasSubstr("FEATURE-PLAINTEXT")));
  EXPECT_EQ(*ValueSealer::FromKey(kKey)->Open(
                raw, RedisReferenceStore::FeaturesAssociatedData(key, small.model_version,
                                                                 generation)),
            small.bytes);
  // Copied to another version's field: refused, and the references still read.
  ASSERT_EQ(redis.Command({"HSET", store->RedisKey(key), "f:fsrst_x4@20083", raw}), "1");
  absl::StatusOr<StoredValue> got = store->GetFeatures(key, "fsrst_x4@20083", kTtl);
  EXPECT_EQ(got.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(got.status().message(), HasSubstr("fsrst_x4@20083 features"));
  EXPECT_EQ(store->Get(key, kTtl)->value, Plaintext());
  // Kept under another generation (the identity was registered again, a stale copy put
  // back behind the fleet's back): refused.
  ASSERT_EQ(redis.Command({"HSET", store->RedisKey(key), "g", "another"}), "0");
  EXPECT_EQ(store->GetFeatures(key, small.model_version, kTtl).status().code(),
            absl::StatusCode::kDataLoss);
  // Copied to another identity: refused.
  const StoreKey mallory{"tenantA", "mallory"};
  ASSERT_EQ(redis.Command({"HSET", store->RedisKey(mallory), "g", generation,
                           "f:fsrst_x4_small@22030", raw}),
            "2");
  EXPECT_EQ(store->GetFeatures(mallory, small.model_version, kTtl).status().code(),
            absl::StatusCode::kDataLoss);
}

TEST(RedisReferenceStore, FeatureCallsWithRedisDownAreUnavailable) {
  RedisServer redis;
  auto store = MakeStore(redis);
  const StoreKey key{"", "alice"};
  const std::string generation = *store->Put(key, "refs", kTtl);
  redis.Kill();
  const VersionFeatures small = Features("fsrst_x4_small@22030");
  EXPECT_EQ(store->GetFeatures(key, small.model_version, kTtl).status().code(),
            absl::StatusCode::kUnavailable);
  EXPECT_EQ(store->PutFeatures(key, generation, small, kTtl).status().code(),
            absl::StatusCode::kUnavailable);
  EXPECT_EQ(store->Put(key, "refs", &small, kTtl).status().code(),
            absl::StatusCode::kUnavailable);
}

// Collects what a subscriber hears.
struct Heard {
  absl::Mutex mu;
  std::vector<std::string> keys ABSL_GUARDED_BY(mu);
  std::atomic<int> subscribed{0};

  InvalidationHandlers Handlers() {
    InvalidationHandlers handlers;
    handlers.on_invalidate = [this](const StoreKey& key) {
      absl::MutexLock lock(&mu);
      keys.push_back(key.tenant + "/" + key.identity_id);
    };
    handlers.on_resubscribed = [this] { subscribed.fetch_add(1); };
    return handlers;
  }
  std::vector<std::string> Keys() {
    absl::MutexLock lock(&mu);
    return keys;
  }
};

TEST(RedisReferenceStore, PutAndDeleteInvalidateOtherInstancesNotTheirOwn) {
  RedisServer redis;
  auto a = MakeStore(redis);
  auto b = MakeStore(redis);
  Heard heard_by_b;
  b->Subscribe(heard_by_b.Handlers());
  ASSERT_TRUE(Eventually([&] { return heard_by_b.subscribed.load() == 1; }));
  ASSERT_TRUE(b->Put({"t", "own"}, "v", kTtl).ok());  // b's own: not delivered to b
  ASSERT_TRUE(a->Put({"t", "alice"}, "v", kTtl).ok());
  ASSERT_TRUE(a->Delete({"", "bob"}).ok());
  ASSERT_TRUE(Eventually([&] { return heard_by_b.Keys().size() >= 2; }));
  // Messages are delivered in order, so b's own (sent first) would be first.
  EXPECT_THAT(heard_by_b.Keys(), ElementsAre("t/alice", "/bob"));
}

TEST(RedisReferenceStore, DownIsUnavailableAndRecoversWithoutAnyAction) {
  RedisServer redis;
  auto store = MakeStore(redis);
  Heard heard;
  store->Subscribe(heard.Handlers());
  ASSERT_TRUE(Eventually([&] { return heard.subscribed.load() == 1; }));
  const StoreKey key{"", "alice"};
  ASSERT_TRUE(store->Put(key, "v", kTtl).ok());  // leaves a pooled connection behind
  redis.Kill();
  for (absl::Status status : {store->Put(key, "v", kTtl).status(), store->Get(key, kTtl).status(),
                              store->Delete(key).status(),
                              store->Generations({{key, false}}, kTtl).status()}) {
    EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
    EXPECT_THAT(status.message(), HasSubstr("the reference store " + redis.url() +
                                            " is unreachable"));
  }
  redis.Start();  // empty: no persistence
  EXPECT_EQ(store->Get(key, kTtl).status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(store->Put(key, "v", kTtl).ok());
  // The subscriber came back by itself and says so (messages may have been missed).
  EXPECT_TRUE(Eventually([&] { return heard.subscribed.load() == 2; }));
}

// Connections pooled before a Redis restart are dead afterwards: the first call after the
// restart must not fail on one of them (it would answer a registration UNAVAILABLE although
// Redis is back).
TEST(RedisReferenceStore, FirstCallAfterARedisRestartSucceeds) {
  RedisServer redis;
  auto store = MakeStore(redis);
  const StoreKey key{"", "alice"};
  // Several calls at once leave several connections in the pool.
  std::vector<std::thread> callers;
  for (int i = 0; i < 4; ++i) {
    callers.emplace_back([&] { EXPECT_TRUE(store->Put(key, "v", kTtl).ok()); });
  }
  for (std::thread& caller : callers) caller.join();
  redis.Kill();
  redis.Start();
  for (int i = 0; i < 4; ++i) {
    absl::StatusOr<std::string> put = store->Put(key, "v", kTtl);
    EXPECT_TRUE(put.ok()) << "call " << i << ": " << put.status();
  }
}

TEST(RedisReferenceStore, StoreThatDoesNotAnswerTimesOut) {
  RedisServer redis;
  auto store = MakeStore(redis);  // 300 ms command timeout
  const StoreKey key{"", "alice"};
  ASSERT_TRUE(store->Put(key, "v", kTtl).ok());
  redis.Pause();
  const absl::Time start = absl::Now();
  absl::Status status = store->Get(key, kTtl).status();
  const absl::Duration took = absl::Now() - start;
  redis.Resume();
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
  EXPECT_THAT(status.message(), HasSubstr("no reply within 300 ms"));
  EXPECT_LT(took, absl::Seconds(10));  // bounded, not hung (the bound is loose for loaded CI)
  EXPECT_TRUE(store->Get(key, kTtl).ok());
}

TEST(RedisReferenceStore, PasswordIsSentAndAWrongOneIsUnavailableWithoutTheSecret) {
  RedisServer redis("s3cret-pass");
  const StoreKey key{"", "alice"};
  EXPECT_TRUE(MakeStore(redis, kKey, "s3cret-pass")->Put(key, "v", kTtl).ok());
  absl::Status wrong = MakeStore(redis, kKey, "wrong-pass")->Put(key, "v", kTtl).status();
  EXPECT_EQ(wrong.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(wrong.message(), HasSubstr("AUTH refused"));
  EXPECT_THAT(wrong.message(), Not(HasSubstr("wrong-pass")));
  EXPECT_EQ(MakeStore(redis)->Put(key, "v", kTtl).status().code(),
            absl::StatusCode::kUnavailable);  // none at all: NOAUTH
}

}  // namespace
}  // namespace fsrst
