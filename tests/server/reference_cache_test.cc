#include "server/reference_cache.h"

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/common/fake_clock.h"

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
  if (clock != nullptr) options.now = clock->AsFunction();
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

// A read-through's second look belongs to a frame whose Lookup already counted
// its miss: it pins and expires like Lookup, but one frame stays one lookup.
TEST(ReferenceCache, LookupAgainFindsAndExpiresButCountsNoHitOrMiss) {
  FakeClock clock;
  ReferenceCache cache(Options(1000, &clock));
  EXPECT_EQ(cache.LookupAgain("a"), nullptr);
  cache.Insert("a", Features(10));
  {
    auto pinned = cache.LookupAgain("a");
    ASSERT_NE(pinned, nullptr);
    clock.Advance(absl::Seconds(61));
    EXPECT_EQ(cache.LastUse("a"), clock.Now());  // pinned: in use now, not idle
  }
  clock.Advance(absl::Seconds(61));               // idle past the TTL since its release
  EXPECT_EQ(cache.LookupAgain("a"), nullptr);
  const ReferenceCacheStats s = cache.stats();
  EXPECT_EQ(s.hits, 0);
  EXPECT_EQ(s.misses, 0);
  EXPECT_EQ(s.expirations, 1);
  EXPECT_EQ(s.entries, 0);
}

TEST(ReferenceCache, LastUseIsInsertOrReleaseAndIsNotAUse) {
  FakeClock clock;
  ReferenceCache cache(Options(1000, &clock));
  EXPECT_EQ(cache.LastUse("a"), std::nullopt);
  cache.Insert("a", Features(10));
  const absl::Time inserted = clock.Now();
  clock.Advance(absl::Seconds(5));
  EXPECT_EQ(cache.LastUse("a"), inserted);
  EXPECT_EQ(cache.stats().hits, 0);  // asking is not a use
  {
    auto pinned = cache.Lookup("a");
    clock.Advance(absl::Seconds(5));
    EXPECT_EQ(cache.LastUse("a"), clock.Now());  // pinned: in use now
  }
  const absl::Time released = clock.Now();
  clock.Advance(absl::Seconds(5));
  EXPECT_EQ(cache.LastUse("a"), released);
}

// Restore undoes a registration whose OK never reached its caller (issue 19,
// defect 2: store iff the caller is answered OK).
TEST(ReferenceCacheRestore, PutsBackWhatTheInsertReplaced) {
  ReferenceCache cache(Options(1000));
  std::shared_ptr<const ReferenceFeatures> old_features = Features(10);
  EXPECT_EQ(cache.Insert("a", old_features), nullptr);
  std::shared_ptr<const ReferenceFeatures> new_features = Features(20);
  std::shared_ptr<const ReferenceFeatures> replaced = cache.Insert("a", new_features);
  EXPECT_EQ(replaced, old_features);
  EXPECT_TRUE(cache.Restore("a", new_features.get(), std::move(replaced)));
  EXPECT_EQ(cache.Lookup("a").get(), old_features.get());
  EXPECT_EQ(cache.stats().entries, 1);
  EXPECT_EQ(cache.stats().bytes, 10);
}

TEST(ReferenceCacheRestore, RemovesAKeyThatDidNotExistBefore) {
  ReferenceCache cache(Options(1000));
  std::shared_ptr<const ReferenceFeatures> features = Features(10);
  EXPECT_EQ(cache.Insert("a", features), nullptr);
  EXPECT_TRUE(cache.Restore("a", features.get(), nullptr));
  EXPECT_EQ(cache.Lookup("a"), nullptr);
  EXPECT_EQ(cache.stats().entries, 0);
  EXPECT_EQ(cache.stats().bytes, 0);
}

TEST(ReferenceCacheRestore, LeavesAKeyThatChangedSinceAlone) {
  ReferenceCache cache(Options(1000));
  std::shared_ptr<const ReferenceFeatures> mine = Features(10);
  cache.Insert("a", mine);
  std::shared_ptr<const ReferenceFeatures> theirs = Features(30);
  cache.Insert("a", theirs);  // another registration of the same identity won
  EXPECT_FALSE(cache.Restore("a", mine.get(), nullptr));
  EXPECT_EQ(cache.Lookup("a").get(), theirs.get());
  cache.Insert("b", Features(10));
  ASSERT_TRUE(cache.Erase("b"));  // deleted meanwhile: stays deleted
  EXPECT_FALSE(cache.Restore("b", mine.get(), Features(5)));
  EXPECT_EQ(cache.Lookup("b"), nullptr);
}

TEST(ReferenceCacheRestore, FramesInFlightKeepTheFeaturesTheyPinned) {
  ReferenceCache cache(Options(1000));
  std::atomic<int> destroyed{0};
  std::shared_ptr<const ReferenceFeatures> features = Features(10, &destroyed);
  cache.Insert("a", features);
  std::shared_ptr<const ReferenceFeatures> pinned = cache.Lookup("a");
  const ReferenceFeatures* raw = features.get();
  features.reset();
  EXPECT_TRUE(cache.Restore("a", raw, nullptr));
  EXPECT_EQ(cache.Lookup("a"), nullptr);
  EXPECT_EQ(destroyed.load(), 0);
  EXPECT_EQ(cache.stats().bytes, 10);  // still charged while pinned
  pinned.reset();
  EXPECT_EQ(destroyed.load(), 1);
  EXPECT_EQ(cache.stats().bytes, 0);
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

TEST(ReferenceCache, ReplacingMakesTheEntryMostRecentlyUsed) {
  ReferenceCache cache(Options(300));
  cache.Insert("a", Features(100));
  cache.Insert("b", Features(100));
  cache.Insert("c", Features(100));
  cache.Insert("a", Features(100));  // a is now more recent than b
  cache.Insert("d", Features(100));
  EXPECT_EQ(cache.Lookup("b"), nullptr);
  EXPECT_NE(cache.Lookup("a"), nullptr);
  EXPECT_NE(cache.Lookup("c"), nullptr);
  EXPECT_NE(cache.Lookup("d"), nullptr);
  EXPECT_EQ(cache.stats().evictions, 1);
  EXPECT_EQ(cache.stats().entries, 3);
  EXPECT_EQ(cache.stats().bytes, 300);
}

TEST(ReferenceCache, EvictsAsManyAsTheNewEntryNeeds) {
  ReferenceCache cache(Options(300));
  cache.Insert("a", Features(50));
  cache.Insert("b", Features(100));
  cache.Insert("c", Features(150));
  cache.Insert("d", Features(140));  // 440: a and b go (290), c stays
  EXPECT_EQ(cache.stats().evictions, 2);
  EXPECT_EQ(cache.stats().entries, 2);
  EXPECT_EQ(cache.stats().bytes, 290);
  EXPECT_EQ(cache.Lookup("a"), nullptr);
  EXPECT_EQ(cache.Lookup("b"), nullptr);
  EXPECT_NE(cache.Lookup("c"), nullptr);
  EXPECT_NE(cache.Lookup("d"), nullptr);
}

TEST(ReferenceCache, AnEntryLargerThanTheCapacityLastsUntilItsFirstUseEnds) {
  ReferenceCache cache(Options(100));
  cache.Insert("a", Features(40));
  cache.Insert("big", Features(250));  // a goes; big is never evicted by its own insert
  EXPECT_EQ(cache.stats().entries, 1);
  EXPECT_EQ(cache.stats().bytes, 250);
  EXPECT_EQ(cache.stats().evictions, 1);
  auto handle = cache.Lookup("big");
  ASSERT_NE(handle, nullptr);
  EXPECT_EQ(cache.stats().bytes, 250);
  handle.reset();  // unpinned and over budget on its own: the excess goes
  EXPECT_EQ(cache.stats().entries, 0);
  EXPECT_EQ(cache.stats().bytes, 0);
  EXPECT_EQ(cache.stats().evictions, 2);
  EXPECT_EQ(cache.Lookup("big"), nullptr);
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

TEST(ReferenceCache, EachLookupIsAPinOfItsOwn) {
  std::atomic<int> destroyed{0};
  ReferenceCache cache(Options(1000));
  cache.Insert("a", Features(100, &destroyed));
  auto first = cache.Lookup("a");
  auto second = cache.Lookup("a");
  EXPECT_EQ(first.get(), second.get());
  cache.Insert("a", Features(30));
  first.reset();
  EXPECT_EQ(cache.stats().bytes, 130);
  EXPECT_EQ(destroyed.load(), 0);
  second.reset();
  EXPECT_EQ(cache.stats().bytes, 30);
  EXPECT_EQ(destroyed.load(), 1);
}

TEST(ReferenceCache, ReinsertAfterEraseWhilePinnedChargesBothUntilRelease) {
  std::atomic<int> destroyed{0};
  ReferenceCache cache(Options(1000));
  cache.Insert("a", Features(100, &destroyed));
  auto old_handle = cache.Lookup("a");
  EXPECT_TRUE(cache.Erase("a"));
  cache.Insert("a", Features(20));
  EXPECT_EQ(cache.stats().entries, 1);
  EXPECT_EQ(cache.stats().bytes, 120);
  old_handle.reset();
  EXPECT_EQ(destroyed.load(), 1);
  EXPECT_EQ(cache.stats().entries, 1);
  EXPECT_EQ(cache.stats().bytes, 20);
  auto handle = cache.Lookup("a");
  ASSERT_NE(handle, nullptr);
  EXPECT_EQ(handle->byte_size(), 20);
}

TEST(ReferenceCache, ReplacedPinnedBytesCountAgainstTheCapacity) {
  ReferenceCache cache(Options(200));
  cache.Insert("a", Features(100));
  auto pinned = cache.Lookup("a");
  cache.Insert("a", Features(100));  // 200: the old a is still charged
  cache.Insert("b", Features(50));   // 250: the new a (LRU, unpinned) goes
  EXPECT_EQ(cache.stats().evictions, 1);
  EXPECT_EQ(cache.stats().entries, 1);
  EXPECT_EQ(cache.stats().bytes, 150);
  pinned.reset();
  EXPECT_EQ(cache.stats().bytes, 50);
  EXPECT_EQ(cache.stats().evictions, 1);
  EXPECT_EQ(cache.Lookup("a"), nullptr);
  EXPECT_NE(cache.Lookup("b"), nullptr);
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
  EXPECT_EQ(cache.stats().misses, 1);
  EXPECT_EQ(cache.stats().entries, 1);
  pinned.reset();  // b was in use until now: not idle
  EXPECT_EQ(cache.ExpireIdle(), 0);
  EXPECT_EQ(cache.stats().bytes, 10);
  clock.Advance(absl::Seconds(61));
  EXPECT_EQ(cache.ExpireIdle(), 1);
  EXPECT_EQ(cache.stats().expirations, 3);
  EXPECT_EQ(cache.stats().entries, 0);
  EXPECT_EQ(cache.stats().bytes, 0);
}

TEST(ReferenceCache, ExpiresOnlyWhenIdleLongerThanTheTtl) {
  FakeClock clock;
  ReferenceCache cache(Options(1000, &clock));
  cache.Insert("a", Features(10));
  cache.Insert("b", Features(10));
  clock.Advance(absl::Seconds(60));
  EXPECT_EQ(cache.ExpireIdle(), 0);
  EXPECT_NE(cache.Lookup("b"), nullptr);  // exactly the TTL: still a hit, and b is fresh again
  clock.Advance(absl::Nanoseconds(1));
  EXPECT_EQ(cache.ExpireIdle(), 1);
  EXPECT_EQ(cache.Lookup("a"), nullptr);
  EXPECT_NE(cache.Lookup("b"), nullptr);
  EXPECT_EQ(cache.stats().expirations, 1);
}

TEST(ReferenceCache, PinnedStaleEntryIsStillFound) {
  FakeClock clock;
  ReferenceCache cache(Options(1000, &clock));
  cache.Insert("a", Features(10));
  auto pinned = cache.Lookup("a");
  clock.Advance(absl::Minutes(5));
  EXPECT_EQ(cache.ExpireIdle(), 0);
  auto again = cache.Lookup("a");
  EXPECT_EQ(again.get(), pinned.get());
  EXPECT_EQ(cache.stats().hits, 2);
  EXPECT_EQ(cache.stats().expirations, 0);
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

TEST(ReferenceCache, FeaturesHeldByTheCallerOutliveTheEntry) {
  std::atomic<int> destroyed{0};
  ReferenceCache cache(Options(1000));
  auto features = Features(10, &destroyed);
  cache.Insert("a", features);
  EXPECT_TRUE(cache.Erase("a"));
  EXPECT_EQ(destroyed.load(), 0);
  EXPECT_EQ(features->byte_size(), 10);
  features.reset();
  EXPECT_EQ(destroyed.load(), 1);
}

TEST(ReferenceCache, ConcurrentUseKeepsAccountingConsistent) {
  constexpr int kKeys = 80;
  constexpr int64_t kCapacity = 500;
  std::atomic<int> destroyed{0};
  std::atomic<int> created{0};
  std::atomic<int64_t> lookups{0};
  {
    ReferenceCache cache(Options(kCapacity));
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
      threads.emplace_back([&, t] {
        std::vector<std::shared_ptr<const ReferenceFeatures>> held;  // pins across calls
        for (int i = 0; i < 2000; ++i) {
          const std::string key = "id" + std::to_string((i * 7 + t) % kKeys);
          if (i % 5 == 0) {
            cache.Erase(key);
          } else if (i % 3 == 0) {
            ++created;
            cache.Insert(key, Features(1 + (i * 13 + t) % 40, &destroyed));
          } else {
            ++lookups;
            auto handle = cache.Lookup(key);
            if (handle) {
              EXPECT_GE(handle->byte_size(), 1);
              EXPECT_LE(handle->byte_size(), 40);
              if (i % 4 == 1) held.push_back(std::move(handle));
            }
            if (held.size() > 3) held.erase(held.begin());
          }
        }
      });
    }
    for (auto& t : threads) t.join();
    const ReferenceCacheStats s = cache.stats();
    EXPECT_EQ(s.hits + s.misses, lookups.load());
    EXPECT_LE(s.bytes, kCapacity);  // no pins left, so no excess
    // The charge is exactly the sum of what is cached.
    int64_t cached_bytes = 0;
    int64_t cached_entries = 0;
    for (int k = 0; k < kKeys; ++k) {
      if (auto handle = cache.Lookup("id" + std::to_string(k))) {
        cached_bytes += handle->byte_size();
        ++cached_entries;
      }
    }
    EXPECT_EQ(s.bytes, cached_bytes);
    EXPECT_EQ(s.entries, cached_entries);
    EXPECT_EQ(cache.stats().bytes, cached_bytes);
    EXPECT_EQ(created.load() - destroyed.load(), cached_entries);
  }
  EXPECT_EQ(destroyed.load(), created.load());
}

}  // namespace
}  // namespace fsrst
