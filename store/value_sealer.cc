#include "store/value_sealer.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include <fstream>
#include <iterator>
#include <memory>

#include "absl/strings/str_cat.h"

namespace fsrst {
namespace {

struct CipherContextFree {
  void operator()(EVP_CIPHER_CTX* context) const { EVP_CIPHER_CTX_free(context); }
};
using CipherContext = std::unique_ptr<EVP_CIPHER_CTX, CipherContextFree>;

const unsigned char* Bytes(absl::string_view s) {
  return reinterpret_cast<const unsigned char*>(s.data());
}

}  // namespace

absl::StatusOr<ValueSealer> ValueSealer::FromKey(absl::string_view key) {
  if (key.size() != kKeyBytes) {
    return absl::InvalidArgumentError(absl::StrCat("the encryption key must be exactly ",
                                                   kKeyBytes, " raw bytes; got ", key.size()));
  }
  ValueSealer sealer;
  std::copy(key.begin(), key.end(), sealer.key_.begin());
  return sealer;
}

absl::StatusOr<ValueSealer> ValueSealer::FromKeyFile(const std::string& path,
                                                     absl::string_view flag) {
  std::ifstream file(path, std::ios::binary);
  if (!file) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", flag, "=", path, ": cannot open the key file"));
  }
  // At most one byte more than a key: enough to tell a wrong length.
  std::string key(kKeyBytes + 1, '\0');
  file.read(key.data(), static_cast<std::streamsize>(key.size()));
  key.resize(static_cast<size_t>(file.gcount()));
  absl::StatusOr<ValueSealer> sealer = FromKey(key);
  OPENSSL_cleanse(key.data(), key.size());
  if (!sealer.ok()) {
    const std::string held = key.size() > static_cast<size_t>(kKeyBytes)
                                 ? absl::StrCat("more than ", kKeyBytes, " bytes")
                                 : absl::StrCat(key.size(), " bytes");
    return absl::InvalidArgumentError(absl::StrCat(
        "--", flag, "=", path, ": expected a file of exactly ", kKeyBytes,
        " random bytes (e.g. head -c 32 /dev/urandom > key); it holds ", held));
  }
  return sealer;
}

ValueSealer::~ValueSealer() { OPENSSL_cleanse(key_.data(), key_.size()); }

absl::StatusOr<std::string> ValueSealer::Seal(absl::string_view plaintext,
                                              absl::string_view associated_data) const {
  std::string sealed(kOverheadBytes + plaintext.size(), '\0');
  auto* out = reinterpret_cast<unsigned char*>(sealed.data());
  out[0] = kVersion;
  unsigned char* nonce = out + 1;
  unsigned char* ciphertext = nonce + kNonceBytes;
  unsigned char* tag = ciphertext + plaintext.size();
  if (RAND_bytes(nonce, kNonceBytes) != 1) {
    return absl::InternalError("AES-256-GCM: no random nonce (RAND_bytes failed)");
  }
  CipherContext context(EVP_CIPHER_CTX_new());
  int length = 0;
  if (context == nullptr ||
      EVP_EncryptInit_ex(context.get(), EVP_aes_256_gcm(), nullptr, key_.data(), nonce) != 1 ||
      EVP_EncryptUpdate(context.get(), nullptr, &length, Bytes(associated_data),
                        static_cast<int>(associated_data.size())) != 1 ||
      EVP_EncryptUpdate(context.get(), ciphertext, &length, Bytes(plaintext),
                        static_cast<int>(plaintext.size())) != 1 ||
      EVP_EncryptFinal_ex(context.get(), ciphertext + length, &length) != 1 ||
      EVP_CIPHER_CTX_ctrl(context.get(), EVP_CTRL_GCM_GET_TAG, kTagBytes, tag) != 1) {
    return absl::InternalError("AES-256-GCM: libcrypto failed to seal a value");
  }
  return sealed;
}

absl::StatusOr<std::string> ValueSealer::Open(absl::string_view sealed,
                                              absl::string_view associated_data) const {
  if (sealed.size() < static_cast<size_t>(kOverheadBytes)) {
    return absl::DataLossError(absl::StrCat("sealed value: expected at least ", kOverheadBytes,
                                            " bytes, got ", sealed.size()));
  }
  if (static_cast<uint8_t>(sealed[0]) != kVersion) {
    return absl::DataLossError(absl::StrCat("sealed value: expected version ", kVersion,
                                            ", got ", static_cast<int>(
                                                static_cast<uint8_t>(sealed[0]))));
  }
  const unsigned char* nonce = Bytes(sealed) + 1;
  const unsigned char* ciphertext = nonce + kNonceBytes;
  const size_t ciphertext_size = sealed.size() - kOverheadBytes;
  // EVP_CIPHER_CTX_ctrl takes the expected tag through a non-const pointer.
  unsigned char tag[kTagBytes];
  std::copy(ciphertext + ciphertext_size, ciphertext + ciphertext_size + kTagBytes, tag);
  std::string plaintext(ciphertext_size, '\0');
  auto* out = reinterpret_cast<unsigned char*>(plaintext.data());
  CipherContext context(EVP_CIPHER_CTX_new());
  int length = 0;
  if (context == nullptr ||
      EVP_DecryptInit_ex(context.get(), EVP_aes_256_gcm(), nullptr, key_.data(), nonce) != 1 ||
      EVP_DecryptUpdate(context.get(), nullptr, &length, Bytes(associated_data),
                        static_cast<int>(associated_data.size())) != 1 ||
      EVP_DecryptUpdate(context.get(), out, &length, ciphertext,
                        static_cast<int>(ciphertext_size)) != 1 ||
      EVP_CIPHER_CTX_ctrl(context.get(), EVP_CTRL_GCM_SET_TAG, kTagBytes, tag) != 1 ||
      EVP_DecryptFinal_ex(context.get(), out + length, &length) != 1) {
    OPENSSL_cleanse(plaintext.data(), plaintext.size());
    return absl::DataLossError(
        "sealed value does not authenticate: another encryption key, a value stored under "
        "another key, or tampered");
  }
  return plaintext;
}

}  // namespace fsrst
