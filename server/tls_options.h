#ifndef FSRST_SERVER_TLS_OPTIONS_H_
#define FSRST_SERVER_TLS_OPTIONS_H_

#include <memory>
#include <string>

#include <grpcpp/security/server_credentials.h>

#include "absl/status/statusor.h"

namespace fsrst {

// The PEM files the gRPC port serves TLS with (--tls_cert, --tls_key,
// --tls_client_ca). All empty: plaintext.
struct TlsFiles {
  std::string cert_path;       // server certificate chain (PEM); set together with key_path
  std::string key_path;        // its private key (PEM)
  std::string client_ca_path;  // when set: mTLS, clients must present a cert this CA signed
};

// Credentials for the gRPC port: insecure when `files` is all empty, else
// TLS (and with client_ca_path, mutual TLS that requires and verifies the
// client's certificate). The files are read once, here. INVALID_ARGUMENT or
// NOT_FOUND naming the flag for a missing, unreadable or non-PEM file, or for
// a key without a certificate (or the reverse), or a client CA without both.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const TlsFiles& files);

}  // namespace fsrst

#endif  // FSRST_SERVER_TLS_OPTIONS_H_
