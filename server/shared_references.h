#ifndef FSRST_SERVER_SHARED_REFERENCES_H_
#define FSRST_SERVER_SHARED_REFERENCES_H_

#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "batching/dynamic_batcher.h"
#include "batching/worker_pool.h"
#include "model/model_runner.h"
#include "server/reference_cache.h"
#include "server/server_metrics.h"
#include "store/reference_store.h"

namespace fsrst {

struct SharedReferencesOptions {
  absl::Duration ttl = absl::Minutes(30);  // store expiry after the last use (--identity_ttl_s)
  // A local copy is checked against the store at least this often, so a
  // replica that missed an invalidation stops serving a deleted or replaced
  // identity within this plus one store round trip.
  absl::Duration revalidate_period = absl::Seconds(5);
};

// The fleet-wide side of the reference cache (--reference_store): makes the
// in-process ReferenceCache a cache of the shared store.
//  - Persist: a registration's normalised references, and their features
//    under this model's name and version, go to the store (sealed) before it
//    is answered OK.
//  - ReadThrough: a local miss loads the identity's features of THIS model
//    version from the store on the store pool and caches them: no encode.
//    When the store has none (another model version registered it, or it was
//    registered before features were stored) or they are refused (corrupt,
//    another shape), it loads the references instead, encodes them with this
//    replica's model as a batcher job (so a replica of another model version
//    serves it too), caches the features and writes them back to the store
//    for the next replica of this version, unless the identity was registered
//    again meanwhile. Concurrent misses of one identity share one load,
//    and a miss that reaches ReadThrough after that load has cached the
//    identity is answered from the cache.
//  - Delete: deletes from the store (which tells every other replica) and
//    from the local cache.
//  - Invalidations from other replicas drop the local copy; a background
//    thread validates every local copy against the store each
//    revalidate_period (pushing back the store's expiry of the identities
//    used since), so a missed message costs at most that period.
// While the store is unreachable, cached identities keep being served and
// validation is skipped (nothing can be deleted then either).
//
// Thread-safe. Owns the store; the cache, runner, batcher, pool and metrics
// are not owned and must outlive this object. The store pool runs the
// blocking store calls: never call Persist or Delete on a gRPC thread.
class SharedReferences {
 public:
  SharedReferences(std::unique_ptr<ReferenceStore> store, ReferenceCache* cache,
                   ModelRunner* runner, DynamicBatcher* batcher, WorkerPool* store_pool,
                   ServerMetrics* metrics, SharedReferencesOptions options);
  // Stops the validation thread and the store's subscriber.
  ~SharedReferences();

  SharedReferences(const SharedReferences&) = delete;
  SharedReferences& operator=(const SharedReferences&) = delete;

  // Subscribes to invalidations and starts validating. Call once.
  void Start();

  // Blocking: stores `count` normalised references (`luma`, count x R x R)
  // of `tenant`'s `identity_id`. Returns the generation to pass to
  // Remember, or UNAVAILABLE (store unreachable, message says so).
  absl::StatusOr<std::string> Persist(const std::string& tenant, const std::string& identity_id,
                                      absl::Span<const float> luma, int count);
  // Persist, with `features` (this runner's encoding of `luma`) stored beside
  // the references for every replica of this model version. If the features
  // cannot be serialised, the references are stored alone (a read-through
  // then encodes them).
  absl::StatusOr<std::string> Persist(const std::string& tenant, const std::string& identity_id,
                                      absl::Span<const float> luma, int count,
                                      const ReferenceFeatures& features);
  // Records that the local cache is about to hold `generation` of the
  // identity (call before inserting it, so validation checks that one). A
  // read-through of it in flight is not cached: it read an older value.
  void Remember(const std::string& tenant, const std::string& identity_id,
                const std::string& generation);

  using FeaturesCallback =
      std::function<void(absl::StatusOr<std::shared_ptr<const ReferenceFeatures>>)>;
  // Loads a locally missing identity from the store, encodes it and caches
  // it; then calls `done` (on a batcher or store thread) with the features,
  // or with the cached features at once, on the caller's thread, when the
  // cache holds the identity by now (a load finished since the caller's
  // miss; call it with no lock held that `done` takes); or with
  // NOT_FOUND (the store does not hold it either: the usual message to
  // register again), UNAVAILABLE (store unreachable, or the queues refused:
  // retry, do not re-register), DATA_LOSS (another encryption key) or
  // FAILED_PRECONDITION (stored references of another size). Never blocks.
  // Metrics tell which way it went: fsrst_reference_stored_features_used_total
  // (no encode) or fsrst_reference_reencodes_total.
  void ReadThrough(const std::string& tenant, const std::string& identity_id,
                   FeaturesCallback done);

  // Blocking: deletes the identity from the store (telling every replica)
  // and from the local cache. Returns whether either held it, or
  // UNAVAILABLE, and then nothing was deleted.
  absl::StatusOr<bool> Delete(const std::string& tenant, const std::string& identity_id);

  // One validation pass now (the thread runs it every period); returns how
  // many local copies it dropped, or the store's error (nothing dropped).
  absl::StatusOr<int> Revalidate();

  // Runs `job` on the store pool (see WorkerPool::Submit).
  absl::Status Submit(std::unique_ptr<JobTask>* job) { return pool_->Submit(job); }

  std::string address() const { return store_->address(); }
  // This replica's model as the store keys its features: "<name>@<version>".
  const std::string& model_version() const { return model_version_; }

 private:
  struct Known {
    StoreKey key;
    std::string generation;
  };
  struct Load {
    std::vector<FeaturesCallback> waiters;
    bool invalidated = false;  // dropped while loading: answer, but do not cache
  };

  // Loads and hands the encode to the batcher; on the store pool.
  void RunLoad(const std::string& cache_key, const StoreKey& key);
  // Loads the references and hands their encode to the batcher; on the store pool.
  void LoadReferences(const std::string& cache_key, const StoreKey& key);
  // Caches `features` of `generation` unless the load was invalidated.
  void CacheLoaded(const std::string& cache_key, const StoreKey& key,
                   const std::string& generation,
                   const std::shared_ptr<const ReferenceFeatures>& features);
  // Stores this model version's `features` of `generation` for the next
  // replica; on the store pool (queued from a model thread, never blocking it).
  void WriteBack(const StoreKey& key, const std::string& generation,
                 std::shared_ptr<const ReferenceFeatures> features);
  // Answers every waiter of `cache_key`'s load.
  void FinishLoad(const std::string& cache_key,
                  const absl::StatusOr<std::shared_ptr<const ReferenceFeatures>>& result);
  void OnInvalidate(const StoreKey& key);
  void ValidateLoop();

  // Reset first in the destructor: its subscriber thread calls OnInvalidate.
  std::unique_ptr<ReferenceStore> store_;
  ReferenceCache* const cache_;
  ModelRunner* const runner_;
  DynamicBatcher* const batcher_;
  WorkerPool* const pool_;
  ServerMetrics* const metrics_;
  const SharedReferencesOptions options_;
  const std::string model_version_;

  absl::Mutex mu_;
  // Local copies that came from (or went to) the store, by cache key.
  absl::flat_hash_map<std::string, Known> known_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, Load> loads_ ABSL_GUARDED_BY(mu_);
  bool validate_now_ ABSL_GUARDED_BY(mu_) = false;  // set on resubscribe
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  absl::Time last_validation_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();

  std::thread validator_;
};

}  // namespace fsrst

#endif  // FSRST_SERVER_SHARED_REFERENCES_H_
