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

// A validation probe: does `key` still hold `generation`? With `touch`, its
// expiry is also pushed back (the identity was used since the last probe).
struct GenerationProbe {
  StoreKey key;
  bool touch = false;
};

// The store's operations, as metrics see them.
enum class StoreOperation { kPut, kGet, kDelete, kValidate };
inline constexpr int kNumStoreOperations = 4;
// "put", "get", "delete", "validate".
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
// references), with expiry, and invalidation messages to every other
// instance subscribed to the same store. Knows nothing of gRPC or models.
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

  // Stores `value` under `key`, replacing what it held, to expire `ttl` after
  // its last Put, Get or touch, and tells every other subscribed instance to
  // drop its copy. Returns the new generation. OK only once stored.
  virtual absl::StatusOr<std::string> Put(const StoreKey& key, absl::string_view value,
                                          absl::Duration ttl) = 0;

  // The value under `key` (and its expiry pushed back to `ttl`), or NOT_FOUND
  // if it has none (never stored, deleted or expired).
  virtual absl::StatusOr<StoredValue> Get(const StoreKey& key, absl::Duration ttl) = 0;

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
