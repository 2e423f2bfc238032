#ifndef FSRST_STORE_REFERENCE_STORE_H_
#define FSRST_STORE_REFERENCE_STORE_H_

#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "absl/types/span.h"

namespace fsrst {

// Which identity a stored value belongs to. The tenant ("" for a server
// without API keys) is part of every key, so one tenant's identity is never
// another's, in the store as in the in-process cache.
struct StoreKey {
  std::string tenant;
  std::string identity_id;
};

// One stored value and its generation: a random id that changes on every
// Put, so a replica can tell "still the value I hold" from "replaced".
struct StoredValue {
  std::string value;
  std::string generation;
};

// One model version's encoded features of an identity, stored beside its
// references so that another replica of the same model version need not
// encode them again. The store treats the bytes as opaque.
struct VersionFeatures {
  std::string model_version;  // the model's name and version, e.g. "fsrst_x4@20083"
  std::string bytes;          // e.g. ModelRunner::SerializeFeatures
};

// A validation probe: does `key` still hold `generation`? With `touch`, its
// expiry is also pushed back (the identity was used since the last probe).
struct GenerationProbe {
  StoreKey key;
  bool touch = false;
};

// The store's operations, as metrics see them.
enum class StoreOperation { kPut, kGet, kDelete, kValidate, kGetFeatures, kPutFeatures };
inline constexpr int kNumStoreOperations = 6;
// "put", "get", "delete", "validate", "get_features", "put_features".
const char* StoreOperationName(StoreOperation operation);

// Called after every store operation with its outcome and duration (for
// metrics). Must be thread-safe and cheap.
using StoreObserver =
    std::function<void(StoreOperation operation, absl::StatusCode code, absl::Duration duration)>;

// What the store tells a subscriber.
struct InvalidationHandlers {
  // Another instance replaced or deleted `key`: drop any copy of it.
  std::function<void(const StoreKey& key)> on_invalidate;
  // The subscription is (re)established: messages may have been missed while
  // it was down, so every copy should be validated now.
  std::function<void()> on_resubscribed;
};

// Fleet-wide storage of one value per identity (an identity's normalised
// references) and, beside it, the features of each model version that
// encoded it, with expiry, and invalidation messages to every other instance
// subscribed to the same store. Knows nothing of gRPC or models. The features
// belong to the value's generation: a Put (re-registration), a Delete or the
// expiry removes the features of every model version with it.
//
// Error contract, every method: UNAVAILABLE when the store cannot be reached
// or does not answer within its timeouts (the message says so, and names the
// store's address, never a secret); DATA_LOSS when a stored value does not
// authenticate (see ValueSealer). A later call after the store comes back
// works without any action by the caller.
//
// Thread-safe: every method may be called from any thread concurrently. The
// methods block for at most the implementation's timeouts: never call them on
// a gRPC thread.
class ReferenceStore {
 public:
  virtual ~ReferenceStore() = default;

  // Stores `value` under `key`, replacing what it held (and the features of
  // every model version), with `features` (may be null) beside it, to expire
  // `ttl` after its last Put, Get or touch, and tells every other subscribed
  // instance to drop its copy. Returns the new generation. OK only once stored.
  virtual absl::StatusOr<std::string> Put(const StoreKey& key, absl::string_view value,
                                          const VersionFeatures* features,
                                          absl::Duration ttl) = 0;
  // Put without features.
  absl::StatusOr<std::string> Put(const StoreKey& key, absl::string_view value,
                                  absl::Duration ttl) {
    return Put(key, value, nullptr, ttl);
  }

  // The value under `key` (and its expiry pushed back to `ttl`), or NOT_FOUND
  // if it has none (never stored, deleted or expired).
  virtual absl::StatusOr<StoredValue> Get(const StoreKey& key, absl::Duration ttl) = 0;

  // The features of `model_version` under `key` and the generation they
  // belong to (the expiry pushed back to `ttl`): value empty when the identity
  // is stored without features of that version; NOT_FOUND when the identity
  // is not stored at all; DATA_LOSS when the features do not authenticate
  // (the identity may still be read with Get).
  virtual absl::StatusOr<StoredValue> GetFeatures(const StoreKey& key,
                                                  absl::string_view model_version,
                                                  absl::Duration ttl) = 0;

  // Adds `features` to `key`'s value if it still holds `generation` (read by
  // Get), replacing earlier features of that model version, and pushes its
  // expiry back to `ttl`. Returns false, and stores nothing, when the value
  // was replaced, deleted or expired since: features of older references
  // never land beside newer ones. Tells no other instance: their copies stay
  // valid.
  virtual absl::StatusOr<bool> PutFeatures(const StoreKey& key, absl::string_view generation,
                                           const VersionFeatures& features,
                                           absl::Duration ttl) = 0;

  // Deletes `key` and tells every other subscribed instance to drop its
  // copy. Returns whether it held a value.
  virtual absl::StatusOr<bool> Delete(const StoreKey& key) = 0;

  // The current generation of each probe's key, in order ("" for a key that
  // holds nothing), touching those that ask for it, in one round trip.
  virtual absl::StatusOr<std::vector<std::string>> Generations(
      absl::Span<const GenerationProbe> probes, absl::Duration ttl) = 0;

  // Starts delivering invalidations from other instances to `handlers`, on a
  // thread of the store's, reconnecting by itself until the store is
  // destroyed. Call at most once; the handlers must be thread-safe and
  // outlive the store.
  virtual void Subscribe(InvalidationHandlers handlers) = 0;

  // Where the store is, for logs and messages ("redis://host:port").
  virtual std::string address() const = 0;
};

}  // namespace fsrst

#endif  // FSRST_STORE_REFERENCE_STORE_H_
