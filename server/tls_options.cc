#include "server/tls_options.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include <grpcpp/security/server_credentials.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace fsrst {
namespace {

// The text of a PEM file holding a block whose type ends in `type_suffix`
// ("CERTIFICATE", "PRIVATE KEY"); `flag` names it in errors.
absl::StatusOr<std::string> ReadPem(const std::string& path, absl::string_view flag,
                                    absl::string_view type_suffix) {
  std::ifstream file(path, std::ios::binary);
  if (!file) {
    return absl::NotFoundError(
        absl::StrCat(flag, ": cannot open ", path, ": ", std::strerror(errno)));
  }
  std::stringstream text;
  text << file.rdbuf();
  std::string pem = text.str();
  if (!absl::StrContains(pem, "-----BEGIN ") ||
      !absl::StrContains(pem, absl::StrCat(type_suffix, "-----"))) {
    return absl::InvalidArgumentError(absl::StrCat(
        flag, ": expected a PEM file with a \"-----BEGIN ...", type_suffix, "-----\" block: ",
        path));
  }
  return pem;
}

}  // namespace

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const TlsFiles& files) {
  if (files.cert_path.empty() && files.key_path.empty() && files.client_ca_path.empty()) {
    return grpc::InsecureServerCredentials();
  }
  if (files.cert_path.empty() || files.key_path.empty()) {
    return absl::InvalidArgumentError(
        "--tls_cert and --tls_key: expected both (TLS) or neither (plaintext); "
        "--tls_client_ca needs both too");
  }
  absl::StatusOr<std::string> cert = ReadPem(files.cert_path, "--tls_cert", "CERTIFICATE");
  if (!cert.ok()) return cert.status();
  absl::StatusOr<std::string> key = ReadPem(files.key_path, "--tls_key", "PRIVATE KEY");
  if (!key.ok()) return key.status();

  grpc::SslServerCredentialsOptions options;
  options.pem_key_cert_pairs.push_back({*std::move(key), *std::move(cert)});
  if (files.client_ca_path.empty()) {
    options.client_certificate_request = GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE;
  } else {
    absl::StatusOr<std::string> ca =
        ReadPem(files.client_ca_path, "--tls_client_ca", "CERTIFICATE");
    if (!ca.ok()) return ca.status();
    options.pem_root_certs = *std::move(ca);
    options.client_certificate_request =
        GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
  }
  return grpc::SslServerCredentials(options);
}

}  // namespace fsrst
