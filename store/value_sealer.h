#ifndef FSRST_STORE_VALUE_SEALER_H_
#define FSRST_STORE_VALUE_SEALER_H_

#include <array>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace fsrst {

// Encrypts and authenticates values at rest with AES-256-GCM (OpenSSL
// libcrypto). A sealed value is
//   version byte (1) | 12-byte random nonce | ciphertext | 16-byte tag
// and opens only with the same key AND the same associated data: callers pass
// what the value is (its key in the store), so a value copied under another
// key, a tampered value or a wrong key all fail to open (DATA_LOSS), never
// yield other plaintext.
//
// The key is held in this object only; it is never logged or put in a status
// message. Thread-safe: Seal and Open are const and keep no state between
// calls (each call makes its own cipher context). Copyable only by Load.
class ValueSealer {
 public:
  static constexpr int kKeyBytes = 32;
  static constexpr int kNonceBytes = 12;
  static constexpr int kTagBytes = 16;
  static constexpr uint8_t kVersion = 1;
  // What sealing adds to a plaintext.
  static constexpr int kOverheadBytes = 1 + kNonceBytes + kTagBytes;

  // A sealer of exactly kKeyBytes raw key bytes; else INVALID_ARGUMENT that
  // gives the length, never the bytes.
  static absl::StatusOr<ValueSealer> FromKey(absl::string_view key);
  // FromKey of the whole content of `path` (e.g. `head -c 32 /dev/urandom`).
  // Errors name the path and `flag` (the flag that gave it), never the content.
  static absl::StatusOr<ValueSealer> FromKeyFile(const std::string& path, absl::string_view flag);

  ValueSealer(ValueSealer&&) = default;
  ValueSealer& operator=(ValueSealer&&) = default;
  ValueSealer(const ValueSealer&) = delete;
  ValueSealer& operator=(const ValueSealer&) = delete;
  ~ValueSealer();  // wipes the key

  // `plaintext` sealed under `associated_data`. INTERNAL only if libcrypto fails.
  absl::StatusOr<std::string> Seal(absl::string_view plaintext,
                                   absl::string_view associated_data) const;

  // The plaintext of `sealed`, or DATA_LOSS when it was not sealed by this key
  // under `associated_data` (wrong key, other key's value, tampered, truncated
  // or of an unknown version).
  absl::StatusOr<std::string> Open(absl::string_view sealed,
                                   absl::string_view associated_data) const;

 private:
  ValueSealer() = default;
  std::array<unsigned char, kKeyBytes> key_{};
};

}  // namespace fsrst

#endif  // FSRST_STORE_VALUE_SEALER_H_
