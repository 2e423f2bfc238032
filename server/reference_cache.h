#ifndef FSRST_SERVER_REFERENCE_CACHE_H_
#define FSRST_SERVER_REFERENCE_CACHE_H_

#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "batching/identity_usage.h"
#include "model/reference_features.h"

namespace fsrst {

struct ReferenceCacheOptions {
  int64_t capacity_bytes = int64_t{512} << 20;  // budget for features; LRU entries beyond it are evicted
  absl::Duration idle_ttl = absl::Minutes(30);  // an entry not looked up for this long expires
  // The clock; tests inject a fake one. Must be thread-safe.
  std::function<absl::Time()> now = [] { return absl::Now(); };
};

// One cached identity as GetIdentity reports it.
struct CachedIdentity {
  int reference_count = 0;
  int64_t feature_bytes = 0;
  std::shared_ptr<IdentityUsage> usage;  // of the registration now cached; never null
};

// Counters and levels, for the metrics.
struct ReferenceCacheStats {
  int64_t entries = 0;    // identities currently cached (pinned or not)
  int64_t bytes = 0;      // bytes charged: cached entries plus replaced/erased ones still pinned
  int64_t hits = 0;       // lookups that found the identity
  int64_t misses = 0;     // lookups that did not
  int64_t evictions = 0;  // entries removed for capacity
  int64_t expirations = 0;  // entries removed for idle TTL
};

// Identity id -> that identity's encoded reference features, with a byte
// budget, LRU eviction and an idle TTL (after LevelDB's Cache contract).
//
// Lookup returns the features as a shared_ptr that pins the entry: a pinned
// entry is never evicted or expired, and its bytes stay charged until the last
// copy of every handle to it is destroyed, even if the identity was replaced
// or erased meanwhile (frames in flight keep the features they started with).
// Insert replaces an identity's entry atomically. When an insert brings the
// charge over capacity, least recently used unpinned entries are evicted,
// never the one just inserted; if only pinned entries remain, the cache stays
// over budget until they are released (then the excess is evicted).
// Recency and idle time count from an entry's last Insert or Lookup, or from
// the release of its last pin, since it was in use until then.
//
// Thread-safe. The cache must outlive every handle it returned.
class ReferenceCache {
 public:
  explicit ReferenceCache(ReferenceCacheOptions options);
  ~ReferenceCache();

  ReferenceCache(const ReferenceCache&) = delete;
  ReferenceCache& operator=(const ReferenceCache&) = delete;

  // Caches `features` under `key`, replacing any earlier entry of that key.
  // The charge is features->byte_size(). Returns the features of the entry it
  // replaced (null if none), so the caller can undo the insert with Restore.
  // REQUIRES: features != nullptr.
  std::shared_ptr<const ReferenceFeatures> Insert(const std::string& key,
                                                  std::shared_ptr<const ReferenceFeatures> features);

  // Undoes an Insert whose success could not be delivered to its caller: if
  // `key` still holds the entry Insert made for `inserted`, puts `previous`
  // (what that Insert returned) back in its place as a fresh entry, or, when
  // `previous` is null, removes the key. Returns whether it changed anything;
  // false when the key was replaced, erased, evicted or expired since, and is
  // then left as it is. Handles pinning `inserted` keep its features alive.
  bool Restore(const std::string& key, const ReferenceFeatures* inserted,
               std::shared_ptr<const ReferenceFeatures> previous);

  // The features of `key`, pinned, and marks it most recently used; null if
  // the key is unknown, evicted or expired (expired entries are removed here).
  std::shared_ptr<const ReferenceFeatures> Lookup(const std::string& key);
  // Lookup, and the usage counters of the entry it found (null when it found
  // none), read under the same lock so they belong to the same registration.
  std::shared_ptr<const ReferenceFeatures> Lookup(const std::string& key,
                                                  std::shared_ptr<IdentityUsage>* usage);
  // Lookup that counts no hit and no miss, and otherwise pins, marks used and
  // expires alike: for a read-through checking for a load that finished
  // meanwhile, whose caller already counted its own miss (a frame's Lookup)
  // or is not a use (GetIdentity's Describe). One frame is one lookup in the
  // stats.
  std::shared_ptr<const ReferenceFeatures> LookupAgain(const std::string& key);

  // The usage counters of `key` if it still holds `features` (e.g. just
  // inserted by a read-through), else null. Not a use.
  std::shared_ptr<IdentityUsage> UsageOf(const std::string& key,
                                         const ReferenceFeatures* features) const;

  // What `key` holds, without counting as a use; nullopt if it is not cached
  // or has been idle past the TTL (what Lookup would not find either).
  std::optional<CachedIdentity> Describe(const std::string& key) const;

  // Removes `key`; returns whether it was cached. Its bytes are released once
  // no handle pins it.
  bool Erase(const std::string& key);

  // When `key` was last used (see above), without counting as a use; a pinned
  // entry is in use now. nullopt if `key` is not cached.
  std::optional<absl::Time> LastUse(const std::string& key) const;

  // Removes every unpinned entry idle longer than the TTL; returns how many.
  // Call periodically; Lookup also expires the entry it finds stale.
  int ExpireIdle();

  ReferenceCacheStats stats() const;

 private:
  struct Entry;
  // Lists of entries; an entry moves between them by splice, without allocating.
  using EntryList = std::list<Entry*>;

  // Lookup and LookupAgain; `counted` says whether it counts a hit or miss.
  std::shared_ptr<const ReferenceFeatures> PinnedLookup(const std::string& key,
                                                        std::shared_ptr<IdentityUsage>* usage,
                                                        bool counted);

  // Publishes `owned` under its key, replacing (and returning the features of)
  // any earlier entry, and evicts for capacity.
  std::shared_ptr<const ReferenceFeatures> InsertLocked(std::unique_ptr<Entry> owned)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Takes `entry` out of the table and the entry count. Frees it now if
  // unpinned; a pinned one stays on in_use_, charged, until its last Release.
  void RemoveLocked(Entry* entry) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // RemoveLocked for an entry whose table slot the caller has already erased.
  void DetachLocked(Entry* entry) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Uncharges and deletes an unpinned entry, taking it off `list`.
  void FreeLocked(Entry* entry, EntryList& list) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Evicts least recently used unpinned entries while over capacity, but not
  // `keep` (the entry just inserted: a registration is never undone by itself).
  void EvictLocked(const Entry* keep) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Drops one pin; called by the handle's deleter.
  void Release(Entry* entry) ABSL_LOCKS_EXCLUDED(mu_);

  const ReferenceCacheOptions options_;
  mutable absl::Mutex mu_;
  // The keys view Entry::key, so that each key is stored once.
  absl::flat_hash_map<absl::string_view, Entry*> table_ ABSL_GUARDED_BY(mu_);
  // Every live entry is on exactly one of these two lists.
  // Cached and unpinned, least recently used first. With a clock that does not
  // go back this is also oldest last_use first, which ExpireIdle relies on.
  EntryList lru_ ABSL_GUARDED_BY(mu_);
  // Pinned: cached, or replaced/erased and waiting for their last Release.
  EntryList in_use_ ABSL_GUARDED_BY(mu_);
  ReferenceCacheStats stats_ ABSL_GUARDED_BY(mu_);
};

}  // namespace fsrst

#endif  // FSRST_SERVER_REFERENCE_CACHE_H_
