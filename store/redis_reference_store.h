#ifndef FSRST_STORE_REDIS_REFERENCE_STORE_H_
#define FSRST_STORE_REDIS_REFERENCE_STORE_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "store/reference_store.h"
#include "store/value_sealer.h"

struct redisContext;

namespace fsrst {

struct RedisStoreOptions {
  std::string url;             // redis://host:port (no user, path or query)
  std::string password;        // Redis AUTH; empty: none. Never logged.
  std::string key_prefix = "fsrst:";  // every key and the channel start with it
  int64_t connect_timeout_ms = 500;   // a connect that takes longer: UNAVAILABLE
  int64_t command_timeout_ms = 500;   // a reply that takes longer: UNAVAILABLE
  int max_idle_connections = 8;       // kept open between calls; more are opened on demand
  StoreObserver observer;             // may be empty
};

// The host and port of a redis://host:port URL, or INVALID_ARGUMENT naming
// `flag` and the expected form.
struct RedisAddress {
  std::string host;
  int port = 6379;
};
absl::StatusOr<RedisAddress> ParseRedisUrl(absl::string_view url, absl::string_view flag);

// ReferenceStore on Redis through hiredis. Each identity is one hash,
//   <prefix>ref:<tenant>/<identity_id>
//     { g: generation, v: sealed value, f:<model_version>: sealed features, ... }
// with a PEXPIRE of the ttl, so one DEL (Put, Delete) or one expiry removes
// the features of every model version with the references, and one PEXPIRE
// refreshes them all: no key listing anywhere. Put and Delete publish
// "<instance> <tenant>/<id>" on <prefix>invalidate in the same MULTI/EXEC,
// and the subscriber ignores its own instance's messages. PutFeatures is one
// server-side script that writes only while the hash holds the generation.
// Values are sealed (AES-256-GCM) with the tenant, identity and kind as
// associated data (features also with the model version and the generation),
// so Redis holds no plaintext and a value moved to another key, version or
// generation does not open.
//
// Connections: a pool of at most max_idle_connections idle ones; a call takes
// one (or connects), and a connection that failed is closed, so the next call
// reconnects: recovery after a Redis restart needs nothing but time. Every
// connect, read and write is bounded by the timeouts.
//
// Thread-safe (see ReferenceStore). The destructor stops the subscriber.
class RedisReferenceStore final : public ReferenceStore {
 public:
  // Checks the options; does not connect (Redis may come up later).
  static absl::StatusOr<std::unique_ptr<RedisReferenceStore>> Create(RedisStoreOptions options,
                                                                     ValueSealer sealer);
  ~RedisReferenceStore() override;

  RedisReferenceStore(const RedisReferenceStore&) = delete;
  RedisReferenceStore& operator=(const RedisReferenceStore&) = delete;

  using ReferenceStore::Put;
  absl::StatusOr<std::string> Put(const StoreKey& key, absl::string_view value,
                                  const VersionFeatures* features, absl::Duration ttl) override;
  absl::StatusOr<StoredValue> Get(const StoreKey& key, absl::Duration ttl) override;
  absl::StatusOr<StoredValue> GetFeatures(const StoreKey& key, absl::string_view model_version,
                                          absl::Duration ttl) override;
  absl::StatusOr<bool> PutFeatures(const StoreKey& key, absl::string_view generation,
                                   const VersionFeatures& features, absl::Duration ttl) override;
  absl::StatusOr<bool> Delete(const StoreKey& key) override;
  absl::StatusOr<std::vector<std::string>> Generations(absl::Span<const GenerationProbe> probes,
                                                       absl::Duration ttl) override;
  void Subscribe(InvalidationHandlers handlers) override;
  std::string address() const override;

  // The Redis key of `key` (tests read it with redis-cli).
  std::string RedisKey(const StoreKey& key) const;
  // The associated data a value of `key` is sealed under.
  static std::string AssociatedData(const StoreKey& key);
  // The hash field of `model_version`'s features ("f:<model_version>").
  static std::string FeaturesField(absl::string_view model_version);
  // The associated data features of `model_version` for `generation` of
  // `key` are sealed under.
  static std::string FeaturesAssociatedData(const StoreKey& key, absl::string_view model_version,
                                            absl::string_view generation);

 private:
  struct ContextFree {
    void operator()(redisContext* context) const;
  };
  using Connection = std::unique_ptr<redisContext, ContextFree>;
  struct ReplyFree {
    void operator()(void* reply) const;
  };

  RedisReferenceStore(RedisStoreOptions options, RedisAddress address, ValueSealer sealer);

  // A connected (and authenticated) context, or UNAVAILABLE.
  absl::StatusOr<Connection> Connect() const;
  // A pooled connection (*pooled = true) or a new one.
  absl::StatusOr<Connection> Acquire(bool* pooled);
  void Release(Connection connection);
  // Sends `commands` in one round trip and returns their replies, in order.
  // UNAVAILABLE (and the connection dropped) on any I/O error or timeout. A
  // pooled connection that Redis closed meanwhile (it restarted, or dropped
  // idle clients) is not an outage: the pool is emptied and the commands are
  // sent once more on a new connection. A timeout is never retried.
  class Replies;
  absl::StatusOr<Replies> Pipeline(const std::vector<std::vector<std::string>>& commands);
  // One try of Pipeline on `connection`; *closed tells a connection found
  // closed by Redis from a timeout or a refusal.
  absl::StatusOr<Replies> PipelineOn(Connection connection,
                                     const std::vector<std::vector<std::string>>& commands,
                                     bool* closed);
  absl::Status Unavailable(absl::string_view what, absl::string_view cause) const;
  std::string InvalidationMessage(const StoreKey& key) const;
  void Observe(StoreOperation operation, absl::StatusCode code, absl::Time start) const;
  void SubscriberLoop(InvalidationHandlers handlers);

  const RedisStoreOptions options_;
  const RedisAddress address_;
  const ValueSealer sealer_;
  const std::string instance_id_;  // random; tells this instance's messages apart
  const std::string channel_;

  absl::Mutex mu_;
  std::vector<Connection> idle_ ABSL_GUARDED_BY(mu_);

  absl::Notification stop_;
  std::thread subscriber_;
};

}  // namespace fsrst

#endif  // FSRST_STORE_REDIS_REFERENCE_STORE_H_
