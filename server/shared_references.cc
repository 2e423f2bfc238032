#include "server/shared_references.h"

#include <cstring>
#include <iostream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "server/enhance_request_handler.h"

namespace fsrst {
namespace {

// The stored value: magic, count, reference size, then count x size x size
// float32 luma, as the model's encode_references takes it. Little-endian
// hosts only (x86-64, arm64), like the model files.
constexpr char kMagic[4] = {'F', 'S', 'R', '1'};
constexpr size_t kHeaderBytes = sizeof(kMagic) + 2 * sizeof(uint32_t);

std::string EncodeValue(absl::Span<const float> luma, int count, int size) {
  std::string value(kHeaderBytes + luma.size() * sizeof(float), '\0');
  char* out = value.data();
  std::memcpy(out, kMagic, sizeof(kMagic));
  const uint32_t header[2] = {static_cast<uint32_t>(count), static_cast<uint32_t>(size)};
  std::memcpy(out + sizeof(kMagic), header, sizeof(header));
  std::memcpy(out + kHeaderBytes, luma.data(), luma.size() * sizeof(float));
  return value;
}

// The luma of a stored value, checked against this model's reference size and
// count limit.
absl::StatusOr<std::vector<float>> DecodeValue(const std::string& value,
                                               const ModelMetadata& model, int* count) {
  uint32_t header[2] = {0, 0};
  if (value.size() < kHeaderBytes || std::memcmp(value.data(), kMagic, sizeof(kMagic)) != 0) {
    return absl::DataLossError("the reference store's value is not stored references");
  }
  std::memcpy(header, value.data() + sizeof(kMagic), sizeof(header));
  const int64_t n = header[0];
  const int64_t size = header[1];
  if (size != model.reference_size || n < 1 || n > model.max_references) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the reference store holds ", n, " references of ", size, "x", size,
        "; this server's model takes 1..", model.max_references, " of ", model.reference_size,
        "x", model.reference_size, ": register the identity again"));
  }
  const size_t floats = static_cast<size_t>(n * size * size);
  if (value.size() != kHeaderBytes + floats * sizeof(float)) {
    return absl::DataLossError("the reference store's value has the wrong length");
  }
  std::vector<float> luma(floats);
  std::memcpy(luma.data(), value.data() + kHeaderBytes, floats * sizeof(float));
  *count = static_cast<int>(n);
  return luma;
}

absl::Status ReadThroughError(const std::string& identity_id, const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kNotFound:
      return IdentityNotFound(identity_id);
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kResourceExhausted:
      // Never NOT_FOUND: that would send the caller to re-register into a
      // store that may well still hold the identity.
      return absl::UnavailableError(absl::StrCat(
          "identity_id \"", identity_id,
          "\" is not cached on this replica and cannot be read from the shared store now: ",
          status.message(), "; retry (registering again would not help)"));
    default:
      return absl::Status(status.code(), absl::StrCat("identity_id \"", identity_id, "\": ",
                                                      status.message()));
  }
}

}  // namespace

SharedReferences::SharedReferences(std::unique_ptr<ReferenceStore> store, ReferenceCache* cache,
                                   ModelRunner* runner, DynamicBatcher* batcher,
                                   WorkerPool* store_pool, ServerMetrics* metrics,
                                   SharedReferencesOptions options)
    : store_(std::move(store)),
      cache_(cache),
      runner_(runner),
      batcher_(batcher),
      pool_(store_pool),
      metrics_(metrics),
      options_(options),
      model_version_(
          absl::StrCat(runner->metadata().name, "@", runner->metadata().version)) {}

SharedReferences::~SharedReferences() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (validator_.joinable()) validator_.join();
  store_.reset();  // joins the subscriber, which uses mu_ and known_
}

void SharedReferences::Start() {
  InvalidationHandlers handlers;
  handlers.on_invalidate = [this](const StoreKey& key) { OnInvalidate(key); };
  handlers.on_resubscribed = [this] {
    absl::MutexLock lock(&mu_);
    validate_now_ = true;
  };
  store_->Subscribe(std::move(handlers));
  validator_ = std::thread([this] { ValidateLoop(); });
}

absl::StatusOr<std::string> SharedReferences::Persist(const std::string& tenant,
                                                      const std::string& identity_id,
                                                      absl::Span<const float> luma, int count) {
  return store_->Put(StoreKey{tenant, identity_id},
                     EncodeValue(luma, count, runner_->metadata().reference_size), options_.ttl);
}

absl::StatusOr<std::string> SharedReferences::Persist(const std::string& tenant,
                                                      const std::string& identity_id,
                                                      absl::Span<const float> luma, int count,
                                                      const ReferenceFeatures& features) {
  absl::StatusOr<std::string> bytes = runner_->SerializeFeatures(features);
  if (!bytes.ok()) {
    std::cerr << "fsrst store: storing the references of identity_id \"" << identity_id
              << "\" without features: " << bytes.status().message() << std::endl;
    return Persist(tenant, identity_id, luma, count);
  }
  const VersionFeatures stored{model_version_, *std::move(bytes)};
  return store_->Put(StoreKey{tenant, identity_id},
                     EncodeValue(luma, count, runner_->metadata().reference_size), &stored,
                     options_.ttl);
}

void SharedReferences::Remember(const std::string& tenant, const std::string& identity_id,
                                const std::string& generation) {
  const std::string cache_key = ReferenceCacheKey(tenant, identity_id);
  absl::MutexLock lock(&mu_);
  known_[cache_key] = Known{{tenant, identity_id}, generation};
  auto it = loads_.find(cache_key);
  if (it != loads_.end()) it->second.invalidated = true;
}

void SharedReferences::ReadThrough(const std::string& tenant, const std::string& identity_id,
                                   FeaturesCallback done) {
  std::string cache_key = ReferenceCacheKey(tenant, identity_id);
  std::shared_ptr<const ReferenceFeatures> cached;
  {
    absl::MutexLock lock(&mu_);
    auto it = loads_.find(cache_key);
    if (it != loads_.end()) {
      it->second.waiters.push_back(std::move(done));
      return;
    }
    // The caller's miss may be older than a load that finished since (it
    // cached under mu_ before leaving loads_): that copy is current, so a
    // frame that raced it does not read the store again. The caller counted
    // its miss; this second look counts nothing.
    cached = cache_->LookupAgain(cache_key);
    if (cached == nullptr) loads_[cache_key].waiters.push_back(std::move(done));
  }
  if (cached != nullptr) return done(std::move(cached));
  auto job = std::make_unique<JobTask>();
  // No deadline or cancellation: the load serves every frame that waits for
  // it, and each frame's own deadline is checked by the batcher.
  job->run = [this, cache_key, key = StoreKey{tenant, identity_id}](absl::Status status) {
    if (!status.ok()) return FinishLoad(cache_key, ReadThroughError(key.identity_id, status));
    RunLoad(cache_key, key);
  };
  const absl::Status submitted = pool_->Submit(&job);
  if (!submitted.ok()) FinishLoad(cache_key, ReadThroughError(identity_id, submitted));
}

void SharedReferences::RunLoad(const std::string& cache_key, const StoreKey& key) {
  absl::StatusOr<StoredValue> stored = store_->GetFeatures(key, model_version_, options_.ttl);
  if (stored.ok() && !stored->value.empty()) {
    absl::StatusOr<std::shared_ptr<const ReferenceFeatures>> features =
        runner_->DeserializeFeatures(stored->value);
    if (features.ok()) {
      metrics_->RecordStoredFeaturesUsed();
      CacheLoaded(cache_key, key, stored->generation, *features);
      return FinishLoad(cache_key, features);
    }
    stored = features.status();
  }
  if (!stored.ok()) {
    // Only bad features fall back to the references (which may well be
    // fine); NOT_FOUND and UNAVAILABLE hold for the references too.
    if (stored.status().code() != absl::StatusCode::kDataLoss &&
        stored.status().code() != absl::StatusCode::kFailedPrecondition) {
      return FinishLoad(cache_key, ReadThroughError(key.identity_id, stored.status()));
    }
    metrics_->RecordStoredFeaturesRefused();
    std::cerr << "fsrst store: the stored " << model_version_ << " features of identity_id \""
              << key.identity_id << "\" were refused, encoding its references instead: "
              << stored.status().message() << std::endl;
  }
  LoadReferences(cache_key, key);
}

void SharedReferences::CacheLoaded(const std::string& cache_key, const StoreKey& key,
                                   const std::string& generation,
                                   const std::shared_ptr<const ReferenceFeatures>& features) {
  absl::MutexLock lock(&mu_);
  auto it = loads_.find(cache_key);
  if (it != loads_.end() && !it->second.invalidated) {
    known_[cache_key] = Known{key, generation};
    cache_->Insert(cache_key, features);
  }
}

void SharedReferences::WriteBack(const StoreKey& key, const std::string& generation,
                                 std::shared_ptr<const ReferenceFeatures> features) {
  auto job = std::make_unique<JobTask>();
  job->run = [this, key, generation, features = std::move(features)](absl::Status status) {
    if (!status.ok()) return;  // shutting down: the next replica encodes again
    absl::StatusOr<std::string> bytes = runner_->SerializeFeatures(*features);
    if (!bytes.ok()) return;
    // False: registered again or deleted meanwhile, and rightly not stored.
    // UNAVAILABLE: the next replica encodes again. Either way nothing to do.
    store_->PutFeatures(key, generation, VersionFeatures{model_version_, *std::move(bytes)},
                        options_.ttl)
        .IgnoreError();
  };
  // A full store queue drops the write-back: it is an optimisation only.
  pool_->Submit(&job).IgnoreError();
}

void SharedReferences::LoadReferences(const std::string& cache_key, const StoreKey& key) {
  absl::StatusOr<StoredValue> stored = store_->Get(key, options_.ttl);
  if (!stored.ok()) return FinishLoad(cache_key, ReadThroughError(key.identity_id, stored.status()));
  auto count = std::make_shared<int>(0);
  absl::StatusOr<std::vector<float>> luma = DecodeValue(stored->value, runner_->metadata(), &*count);
  if (!luma.ok()) return FinishLoad(cache_key, ReadThroughError(key.identity_id, luma.status()));
  auto job = std::make_unique<JobTask>();
  job->run = [this, cache_key, key, count, generation = std::move(stored->generation),
              luma = *std::move(luma)](absl::Status status) {
    if (!status.ok()) return FinishLoad(cache_key, ReadThroughError(key.identity_id, status));
    const absl::Time start = absl::Now();
    absl::StatusOr<std::shared_ptr<const ReferenceFeatures>> features =
        runner_->EncodeReferences(luma, *count);
    metrics_->RecordReferenceEncode(absl::Now() - start);
    if (!features.ok()) return FinishLoad(cache_key, features.status());
    metrics_->RecordReencode();
    CacheLoaded(cache_key, key, generation, *features);
    FinishLoad(cache_key, features);
    WriteBack(key, generation, *features);
  };
  const absl::Status enqueued = batcher_->EnqueueJob(&job);
  if (!enqueued.ok()) FinishLoad(cache_key, ReadThroughError(key.identity_id, enqueued));
}

void SharedReferences::FinishLoad(
    const std::string& cache_key,
    const absl::StatusOr<std::shared_ptr<const ReferenceFeatures>>& result) {
  std::vector<FeaturesCallback> waiters;
  {
    absl::MutexLock lock(&mu_);
    auto it = loads_.find(cache_key);
    if (it == loads_.end()) return;
    waiters = std::move(it->second.waiters);
    loads_.erase(it);
  }
  metrics_->RecordReadThrough(result.status().code());
  for (FeaturesCallback& waiter : waiters) waiter(result);
}

absl::StatusOr<bool> SharedReferences::Delete(const std::string& tenant,
                                              const std::string& identity_id) {
  absl::StatusOr<bool> deleted = store_->Delete(StoreKey{tenant, identity_id});
  if (!deleted.ok()) return deleted.status();
  const std::string cache_key = ReferenceCacheKey(tenant, identity_id);
  {
    absl::MutexLock lock(&mu_);
    known_.erase(cache_key);
    auto it = loads_.find(cache_key);
    if (it != loads_.end()) it->second.invalidated = true;
  }
  const bool erased = cache_->Erase(cache_key);
  return *deleted || erased;
}

void SharedReferences::OnInvalidate(const StoreKey& key) {
  metrics_->RecordInvalidationReceived();
  const std::string cache_key = ReferenceCacheKey(key.tenant, key.identity_id);
  absl::MutexLock lock(&mu_);
  known_.erase(cache_key);
  auto it = loads_.find(cache_key);
  if (it != loads_.end()) it->second.invalidated = true;
  // Under mu_, so a load finishing now cannot insert after this erase.
  cache_->Erase(cache_key);
}

absl::StatusOr<int> SharedReferences::Revalidate() {
  std::vector<std::string> cache_keys;
  std::vector<std::string> generations;
  std::vector<GenerationProbe> probes;
  absl::Time since;
  const absl::Time now = absl::Now();
  {
    absl::MutexLock lock(&mu_);
    since = last_validation_;
    last_validation_ = now;
    for (auto it = known_.begin(); it != known_.end();) {
      // The cache may have evicted or expired it meanwhile: nothing to check.
      std::optional<absl::Time> last_use = cache_->LastUse(it->first);
      if (!last_use.has_value()) {
        known_.erase(it++);
        continue;
      }
      cache_keys.push_back(it->first);
      generations.push_back(it->second.generation);
      probes.push_back(GenerationProbe{it->second.key, *last_use >= since});
      ++it;
    }
  }
  absl::StatusOr<std::vector<std::string>> current = store_->Generations(probes, options_.ttl);
  if (!current.ok()) {
    absl::MutexLock lock(&mu_);
    last_validation_ = since;  // the uses since then still need their touch
    return current.status();
  }
  int dropped = 0;
  absl::MutexLock lock(&mu_);
  for (size_t i = 0; i < cache_keys.size(); ++i) {
    if ((*current)[i] == generations[i]) continue;
    auto it = known_.find(cache_keys[i]);
    // Re-registered here since the snapshot: that one is current.
    if (it == known_.end() || it->second.generation != generations[i]) continue;
    known_.erase(it);
    if (cache_->Erase(cache_keys[i])) ++dropped;
  }
  if (dropped > 0) metrics_->RecordRevalidationDrops(dropped);
  return dropped;
}

void SharedReferences::ValidateLoop() {
  absl::Time next = absl::Now() + options_.revalidate_period;
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      const auto wake = [this, &next]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
        return stopping_ || validate_now_ || absl::Now() >= next;
      };
      // Short waits: the condition also depends on the clock.
      while (!mu_.AwaitWithTimeout(absl::Condition(&wake), absl::Milliseconds(100))) {
      }
      if (stopping_) return;
      validate_now_ = false;
    }
    next = absl::Now() + options_.revalidate_period;
    Revalidate().IgnoreError();  // unreachable: keep serving, try again next period
  }
}

}  // namespace fsrst
