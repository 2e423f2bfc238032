#include "server/reference_cache.h"

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "gmock/gmock.h"
#include "tests/common/fake_clock.h"
#include "gtest/gtest.h"

namespace fsrst {
namespace {

class FakeFeatures : public ReferenceFeatures {
 public:
  FakeFeatures(int64_t bytes, std::atomic<int>* destroyed = nullptr)
      : bytes_(bytes), destroyed_(destroyed) {}
  ~FakeFeatures() override {
    if (destroyed_ != nullptr) ++*destroyed_;
  }
  int count() const override { return 1; }
  int64_t byte_size() const override { return bytes_; }

 private:
  const int64_t bytes_;
  std::atomic<int>* const destroyed_;
};

std::shared_ptr<const ReferenceFeatures> Features(int64_t bytes,
                                                  std::atomic<int>* destroyed = nullptr) {
  return std::make_shared<FakeFeatures>(bytes, destroyed);
}

using ::fsrst::testing::FakeClock;

ReferenceCacheOptions Options(int64_t capacity, FakeClock* clock = nullptr) {
  ReferenceCacheOptions options;
  options.capacity_bytes = capacity;
  options.idle_ttl = absl::Seconds(60);
  if (clock != nullptr) options.now = [clock] { return clock->Now(); };
  return options;
}

TEST(ReferenceCache, LookupCountsHitsAndMisses) {
  ReferenceCache cache(Options(1000));
  cache.Insert("a", Features(10));
  EXPECT_NE(cache.Lookup("a"), nullptr);
  EXPECT_EQ(cache.Lookup("b"), nullptr);
  const ReferenceCacheStats s = cache.stats();
  EXPECT_EQ(s.hits, 1);
  EXPECT_EQ(s.misses, 1);
  EXPECT_EQ(s.entries, 1);
  EXPECT_EQ(s.bytes, 10);
}

TEST(ReferenceCache, EvictsTheLeastRecentlyUsed) {
  ReferenceCache cache(Options(300));
  cache.Insert("a", Features(100));
  cache.Insert("b", Features(100));
  cache.Insert("c", Features(100));
  cache.Lookup("a");  // a is now more recent than b
  cache.Insert("d", Features(100));
  EXPECT_NE(cache.Lookup("a"), nullptr);
  EXPECT_EQ(cache.Lookup("b"), nullptr);
  EXPECT_NE(cache.Lookup("c"), nullptr);
  EXPECT_NE(cache.Lookup("d"), nullptr);
  EXPECT_EQ(cache.stats().evictions, 1);
  EXPECT_EQ(cache.stats().bytes, 300);
  EXPECT_EQ(cache.stats().entries, 3);
}

TEST(ReferenceCache, ReplaceAndEraseKeepBytesExact) {
  ReferenceCache cache(Options(1000));
  cache.Insert("a", Features(100));
  cache.Insert("a", Features(40));
  EXPECT_EQ(cache.stats().bytes, 40);
  EXPECT_EQ(cache.stats().entries, 1);
  EXPECT_TRUE(cache.Erase("a"));
  EXPECT_FALSE(cache.Erase("a"));
  EXPECT_EQ(cache.stats().bytes, 0);
  EXPECT_EQ(cache.stats().entries, 0);
}

TEST(ReferenceCache, PinnedEntrySurvivesPressureThenExcessIsEvicted) {
  ReferenceCache cache(Options(200));
  cache.Insert("a", Features(100));
  auto pinned = cache.Lookup("a");
  cache.Insert("b", Features(100));
  cache.Insert("c", Features(100));  // over budget: b (unpinned, LRU) goes, a stays
  EXPECT_EQ(cache.stats().evictions, 1);
  EXPECT_EQ(cache.Lookup("b"), nullptr);
  cache.Insert("d", Features(150));  // c goes; a is pinned and d just inserted: over budget
  EXPECT_EQ(cache.stats().bytes, 250);
  EXPECT_EQ(cache.stats().evictions, 2);
  EXPECT_NE(pinned, nullptr);
  pinned.reset();  // a was used until now, so d is the least recently used and goes
  EXPECT_EQ(cache.stats().bytes, 100);
  EXPECT_EQ(cache.stats().evictions, 3);
  EXPECT_NE(cache.Lookup("a"), nullptr);
  EXPECT_EQ(cache.Lookup("d"), nullptr);
}

TEST(ReferenceCache, ReplaceWhilePinnedKeepsTheOldFeaturesAlive) {
  std::atomic<int> destroyed{0};
  ReferenceCache cache(Options(1000));
  cache.Insert("a", Features(100, &destroyed));
  auto old_handle = cache.Lookup("a");
  const ReferenceFeatures* old_features = old_handle.get();
  cache.Insert("a", Features(30));
  EXPECT_EQ(cache.stats().bytes, 130);  // both charged until the old pin goes
  EXPECT_EQ(cache.stats().entries, 1);
  EXPECT_EQ(destroyed.load(), 0);
  EXPECT_EQ(old_handle->byte_size(), 100);
  EXPECT_NE(cache.Lookup("a").get(), old_features);
  old_handle.reset();
  EXPECT_EQ(cache.stats().bytes, 30);
  EXPECT_EQ(destroyed.load(), 1);
}

TEST(ReferenceCache, EraseWhilePinnedReleasesBytesOnUnpin) {
  std::atomic<int> destroyed{0};
  ReferenceCache cache(Options(1000));
  cache.Insert("a", Features(100, &destroyed));
  auto handle = cache.Lookup("a");
  auto copy = handle;
  EXPECT_TRUE(cache.Erase("a"));
  EXPECT_EQ(cache.Lookup("a"), nullptr);
  EXPECT_EQ(cache.stats().bytes, 100);
  handle.reset();
  EXPECT_EQ(cache.stats().bytes, 100);  // a copy still pins it
  copy.reset();
  EXPECT_EQ(cache.stats().bytes, 0);
  EXPECT_EQ(destroyed.load(), 1);
}

TEST(ReferenceCache, IdleEntriesExpireAfterTheTtl) {
  FakeClock clock;
  ReferenceCache cache(Options(1000, &clock));
  cache.Insert("a", Features(10));
  cache.Insert("b", Features(10));
  cache.Insert("c", Features(10));
  clock.Advance(absl::Seconds(30));
  cache.Lookup("c");
  auto pinned = cache.Lookup("b");
  clock.Advance(absl::Seconds(31));  // a idle 61 s, b pinned, c idle 31 s
  EXPECT_EQ(cache.ExpireIdle(), 1);
  EXPECT_EQ(cache.stats().expirations, 1);
  EXPECT_EQ(cache.stats().entries, 2);
  clock.Advance(absl::Seconds(30));  // c idle 61 s: a Lookup expires it and misses
  EXPECT_EQ(cache.Lookup("c"), nullptr);
  EXPECT_EQ(cache.stats().expirations, 2);
  pinned.reset();  // b was in use until now: not idle
  EXPECT_EQ(cache.ExpireIdle(), 0);
  EXPECT_EQ(cache.stats().bytes, 10);
}

TEST(ReferenceCache, FeaturesAreFreedWhenLastHolderGoes) {
  std::atomic<int> destroyed{0};
  {
    ReferenceCache cache(Options(1000));
    cache.Insert("a", Features(10, &destroyed));
    { auto handle = cache.Lookup("a"); }
    EXPECT_EQ(destroyed.load(), 0);
  }
  EXPECT_EQ(destroyed.load(), 1);
}

TEST(ReferenceCache, ConcurrentUseKeepsAccountingConsistent) {
  ReferenceCache cache(Options(50 * 10));
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&cache, t] {
      for (int i = 0; i < 2000; ++i) {
        const std::string key = "id" + std::to_string((i * 7 + t) % 80);
        if (i % 5 == 0) {
          cache.Erase(key);
        } else if (i % 3 == 0) {
          cache.Insert(key, Features(10));
        } else {
          auto handle = cache.Lookup(key);
          if (handle) {
            EXPECT_EQ(handle->byte_size(), 10);
          }
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  const ReferenceCacheStats s = cache.stats();
  EXPECT_EQ(s.bytes, s.entries * 10);
  EXPECT_LE(s.bytes, 500);
}

}  // namespace
}  // namespace fsrst
