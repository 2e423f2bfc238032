#include "server/reference_cache.h"

#include <utility>

namespace fsrst {

struct ReferenceCache::Entry {
  std::string key;
  std::shared_ptr<const ReferenceFeatures> features;
  int64_t charge = 0;
  absl::Time last_use;
  int pins = 0;
  bool in_table = false;     // reachable by key
  LruList::iterator lru_it;  // valid iff in_table && pins == 0
};

ReferenceCache::ReferenceCache(ReferenceCacheOptions options) : options_(std::move(options)) {}

ReferenceCache::~ReferenceCache() {
  absl::MutexLock lock(&mu_);
  // REQUIRES (header): no handle outlives the cache, so every entry is unpinned.
  for (auto& [key, entry] : table_) delete entry;
}

void ReferenceCache::Insert(const std::string& key,
                            std::shared_ptr<const ReferenceFeatures> features) {
  auto* entry = new Entry;
  entry->key = key;
  entry->charge = features->byte_size();
  entry->features = std::move(features);
  absl::MutexLock lock(&mu_);
  entry->last_use = options_.now();
  auto [it, inserted] = table_.try_emplace(key, entry);
  if (!inserted) {
    RemoveLocked(it->second);
    table_[key] = entry;  // RemoveLocked erased the old slot
  }
  entry->in_table = true;
  entry->lru_it = lru_.insert(lru_.end(), entry);
  stats_.entries += 1;
  stats_.bytes += entry->charge;
  EvictLocked(entry);
}

std::shared_ptr<const ReferenceFeatures> ReferenceCache::Lookup(const std::string& key) {
  Entry* entry = nullptr;
  {
    absl::MutexLock lock(&mu_);
    auto it = table_.find(key);
    if (it == table_.end()) {
      ++stats_.misses;
      return nullptr;
    }
    entry = it->second;
    const absl::Time now = options_.now();
    if (entry->pins == 0 && now - entry->last_use > options_.idle_ttl) {
      RemoveLocked(entry);
      ++stats_.expirations;
      ++stats_.misses;
      return nullptr;
    }
    ++stats_.hits;
    entry->last_use = now;
    if (entry->pins++ == 0) lru_.erase(entry->lru_it);
  }
  // The aliasing handle: shares nothing with entry->features' count, and its
  // deleter unpins the entry.
  return std::shared_ptr<const ReferenceFeatures>(entry->features.get(),
                                                  [this, entry](const ReferenceFeatures*) {
                                                    Release(entry);
                                                  });
}

void ReferenceCache::Release(Entry* entry) {
  absl::MutexLock lock(&mu_);
  if (--entry->pins > 0) return;
  if (entry->in_table) {
    // Most recently used: it was in use until now. Keeps the list ordered by last_use.
    entry->last_use = options_.now();
    entry->lru_it = lru_.insert(lru_.end(), entry);
    EvictLocked(nullptr);
  } else {
    stats_.bytes -= entry->charge;
    delete entry;
  }
}

bool ReferenceCache::Erase(const std::string& key) {
  absl::MutexLock lock(&mu_);
  auto it = table_.find(key);
  if (it == table_.end()) return false;
  RemoveLocked(it->second);
  return true;
}

int ReferenceCache::ExpireIdle() {
  absl::MutexLock lock(&mu_);
  const absl::Time now = options_.now();
  int expired = 0;
  // The LRU list holds exactly the unpinned entries, oldest use first.
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
  entry->in_table = false;
  stats_.entries -= 1;
  if (entry->pins == 0) {
    lru_.erase(entry->lru_it);
    stats_.bytes -= entry->charge;
    delete entry;
  }
}

void ReferenceCache::EvictLocked(const Entry* keep) {
  while (stats_.bytes > options_.capacity_bytes && !lru_.empty() && lru_.front() != keep) {
    RemoveLocked(lru_.front());
    ++stats_.evictions;
  }
}

}  // namespace fsrst
