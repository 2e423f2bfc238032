#include "server/reference_cache.h"

#include <cassert>
#include <memory>
#include <utility>

namespace fsrst {

struct ReferenceCache::Entry {
  // Set before the entry is published, then constant.
  std::string key;  // table_'s key views it
  std::shared_ptr<const ReferenceFeatures> features;
  // Counters of this registration (a Restore starts them anew).
  std::shared_ptr<IdentityUsage> usage;
  int64_t charge = 0;
  // Guarded by the cache's mu_.
  absl::Time last_use;  // while unpinned: its Insert or its last Release
  int pins = 0;
  bool in_table = true;
  EntryList::iterator node;  // on lru_ iff in_table && pins == 0, else on in_use_
};

ReferenceCache::ReferenceCache(ReferenceCacheOptions options) : options_(std::move(options)) {}

ReferenceCache::~ReferenceCache() {
  absl::MutexLock lock(&mu_);
  assert(in_use_.empty() && "REQUIRES: the cache outlives every handle");
  table_.clear();  // before the keys it views go
  for (Entry* entry : lru_) delete entry;
}

std::shared_ptr<const ReferenceFeatures> ReferenceCache::Insert(
    const std::string& key, std::shared_ptr<const ReferenceFeatures> features) {
  // Allocate and copy the key before taking the lock.
  auto owned = std::make_unique<Entry>();
  owned->key = key;
  owned->charge = features->byte_size();
  owned->usage = std::make_shared<IdentityUsage>(features->count(), options_.now());
  owned->features = std::move(features);
  absl::MutexLock lock(&mu_);
  return InsertLocked(std::move(owned));
}

bool ReferenceCache::Restore(const std::string& key, const ReferenceFeatures* inserted,
                             std::shared_ptr<const ReferenceFeatures> previous) {
  std::unique_ptr<Entry> owned;
  if (previous != nullptr) {
    owned = std::make_unique<Entry>();
    owned->key = key;
    owned->charge = previous->byte_size();
    owned->usage = std::make_shared<IdentityUsage>(previous->count(), options_.now());
    owned->features = std::move(previous);
  }
  absl::MutexLock lock(&mu_);
  auto it = table_.find(key);
  if (it == table_.end() || it->second->features.get() != inserted) return false;
  if (owned != nullptr) {
    InsertLocked(std::move(owned));
  } else {
    Entry* entry = it->second;
    table_.erase(it);
    DetachLocked(entry);
  }
  return true;
}

std::shared_ptr<const ReferenceFeatures> ReferenceCache::InsertLocked(
    std::unique_ptr<Entry> owned) {
  EntryList node{owned.get()};
  std::shared_ptr<const ReferenceFeatures> replaced;
  owned->last_use = options_.now();
  auto [it, inserted] = table_.try_emplace(owned->key, owned.get());
  if (!inserted) {
    // The slot's key views the old entry's key, which may outlive the slot
    // (pinned) or not: the slot is rebuilt around the new entry's key.
    Entry* old = it->second;
    replaced = old->features;
    table_.erase(it);
    DetachLocked(old);
    table_.emplace(owned->key, owned.get());
  }
  Entry* entry = owned.release();
  entry->node = node.begin();
  lru_.splice(lru_.end(), node);
  stats_.entries += 1;
  stats_.bytes += entry->charge;
  EvictLocked(entry);
  return replaced;
}

std::optional<absl::Time> ReferenceCache::LastUse(const std::string& key) const {
  absl::MutexLock lock(&mu_);
  auto it = table_.find(key);
  if (it == table_.end()) return std::nullopt;
  return it->second->pins > 0 ? options_.now() : it->second->last_use;
}

std::shared_ptr<const ReferenceFeatures> ReferenceCache::Lookup(const std::string& key) {
  return Lookup(key, nullptr);
}

std::shared_ptr<IdentityUsage> ReferenceCache::UsageOf(const std::string& key,
                                                       const ReferenceFeatures* features) const {
  absl::MutexLock lock(&mu_);
  auto it = table_.find(key);
  if (it == table_.end() || it->second->features.get() != features) return nullptr;
  return it->second->usage;
}

std::optional<CachedIdentity> ReferenceCache::Describe(const std::string& key) const {
  absl::MutexLock lock(&mu_);
  auto it = table_.find(key);
  if (it == table_.end()) return std::nullopt;
  const Entry* entry = it->second;
  if (entry->pins == 0 && options_.now() - entry->last_use > options_.idle_ttl) {
    return std::nullopt;
  }
  return CachedIdentity{entry->features->count(), entry->charge, entry->usage};
}

std::shared_ptr<const ReferenceFeatures> ReferenceCache::Lookup(
    const std::string& key, std::shared_ptr<IdentityUsage>* usage) {
  return PinnedLookup(key, usage, /*counted=*/true);
}

std::shared_ptr<const ReferenceFeatures> ReferenceCache::LookupAgain(const std::string& key) {
  return PinnedLookup(key, nullptr, /*counted=*/false);
}

std::shared_ptr<const ReferenceFeatures> ReferenceCache::PinnedLookup(
    const std::string& key, std::shared_ptr<IdentityUsage>* usage, bool counted) {
  if (usage != nullptr) usage->reset();
  Entry* entry = nullptr;
  {
    absl::MutexLock lock(&mu_);
    auto it = table_.find(key);
    if (it == table_.end()) {
      if (counted) ++stats_.misses;
      return nullptr;
    }
    entry = it->second;
    const absl::Time now = options_.now();
    if (entry->pins == 0 && now - entry->last_use > options_.idle_ttl) {
      table_.erase(it);
      DetachLocked(entry);
      ++stats_.expirations;
      if (counted) ++stats_.misses;
      return nullptr;
    }
    if (counted) ++stats_.hits;
    if (usage != nullptr) *usage = entry->usage;
    if (entry->pins++ == 0) in_use_.splice(in_use_.end(), lru_, entry->node);
  }
  // The pin keeps `entry`, and with it entry->features, alive until the
  // deleter runs. Should the control block's allocation throw, shared_ptr
  // calls the deleter itself, so the pin is not leaked.
  return std::shared_ptr<const ReferenceFeatures>(
      entry->features.get(), [this, entry](const ReferenceFeatures*) { Release(entry); });
}

void ReferenceCache::Release(Entry* entry) {
  absl::MutexLock lock(&mu_);
  if (--entry->pins > 0) return;
  if (entry->in_table) {
    entry->last_use = options_.now();
    lru_.splice(lru_.end(), in_use_, entry->node);
    EvictLocked(nullptr);  // the excess that pins held over budget
  } else {
    FreeLocked(entry, in_use_);
  }
}

bool ReferenceCache::Erase(const std::string& key) {
  absl::MutexLock lock(&mu_);
  auto it = table_.find(key);
  if (it == table_.end()) return false;
  Entry* entry = it->second;
  table_.erase(it);
  DetachLocked(entry);
  return true;
}

int ReferenceCache::ExpireIdle() {
  absl::MutexLock lock(&mu_);
  const absl::Time now = options_.now();
  int expired = 0;
  while (!lru_.empty() && now - lru_.front()->last_use > options_.idle_ttl) {
    RemoveLocked(lru_.front());
    ++expired;
  }
  stats_.expirations += expired;
  return expired;
}

ReferenceCacheStats ReferenceCache::stats() const {
  absl::MutexLock lock(&mu_);
  return stats_;
}

void ReferenceCache::RemoveLocked(Entry* entry) {
  table_.erase(entry->key);
  DetachLocked(entry);
}

void ReferenceCache::DetachLocked(Entry* entry) {
  entry->in_table = false;
  stats_.entries -= 1;
  if (entry->pins == 0) FreeLocked(entry, lru_);
}

void ReferenceCache::FreeLocked(Entry* entry, EntryList& list) {
  list.erase(entry->node);
  stats_.bytes -= entry->charge;
  delete entry;
}

void ReferenceCache::EvictLocked(const Entry* keep) {
  while (stats_.bytes > options_.capacity_bytes && !lru_.empty() && lru_.front() != keep) {
    RemoveLocked(lru_.front());
    ++stats_.evictions;
  }
}

}  // namespace fsrst
