#ifndef FSRST_SERVER_SERVER_CONFIG_H_
#define FSRST_SERVER_SERVER_CONFIG_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"

namespace fsrst {

// Everything fsrst_server can be told; the flags in fsrst_server_main.cc mirror
// it, field for field (the flag is --<field name>). A plain value type.
struct ServerConfig {
  std::string model_path;                 // TorchScript file from model/fsrst/export.py
  std::string device = "auto";            // auto | cpu | cuda | cuda:N
  int model_instances = 0;                // model calls side by side; 0 = auto (1 per core on CPU)
  int model_threads = 0;                  // intra-op CPU threads per call; 0 = auto
  int model_nice = 5;                     // nice increment of the model's and decoders' threads
  std::string host = "0.0.0.0";           // address the gRPC port binds
  int port = 50051;                       // gRPC; 0 picks a free port
  std::string metrics_host;               // address the metrics port binds; empty = `host`
  int metrics_port = 9464;                // Prometheus /metrics; 0 picks one, -1 disables
  int metrics_threads = 4;                // HTTP workers of /metrics: idle sockets hold one each
  int64_t metrics_request_timeout_ms = 2000;  // a scrape request must arrive whole within this
  int max_batch_size = 8;                 // frames per model call; CPU gains little beyond 8
  int64_t max_queue_delay_us = 2000;      // a partial batch waits at most this for more frames
  int max_queue_size = 128;               // queued frames beyond this: RESOURCE_EXHAUSTED
  // Registrations accepted and not yet answered (decoding, waiting for the
  // model or encoding); beyond it RESOURCE_EXHAUSTED. Each holds its request
  // and, once decoded, 64 KiB of luma per reference.
  int max_pending_registrations = 32;
  int decode_threads = 1;                 // threads that decode reference images
  int max_queued_decodes = 64;            // decodes waiting for a decode thread; beyond: refused
  int64_t cache_bytes = int64_t{1} << 30;  // reference-feature budget (36 KiB per 3 references)
  int64_t identity_ttl_s = 1800;          // an identity unused this long is dropped
  int max_stream_frames_in_flight = 16;   // per stream: frames read but not yet answered
  int64_t max_message_bytes = 8 << 20;    // largest request accepted (gRPC's limit is an int)
  int64_t max_image_pixels = 4096 * 4096;  // largest decoded image (checked from the header)
  int default_jpeg_quality = 95;          // JPEG answers when the request says 0
  int64_t drain_timeout_s = 20;           // on shutdown, how long queued work may take
  std::string tls_cert;                   // PEM certificate chain; with tls_key: TLS on the gRPC port
  std::string tls_key;                    // PEM private key of tls_cert
  std::string tls_client_ca;              // PEM CA; set: mTLS, client certificates required
  std::string api_keys_file;              // `<key> <tenant>` lines; empty: open, single tenant
  // The shared reference store (docs/store.md). Empty: identities live in
  // this process only (the embedded default).
  std::string reference_store;            // redis://host:port
  std::string reference_store_key_file;   // 32 random bytes; required with reference_store
  std::string reference_store_password_file;  // Redis AUTH password; empty: none
  std::string reference_store_key_prefix = "fsrst:";  // namespace of keys and channel in Redis
  int64_t reference_store_connect_timeout_ms = 500;  // a connect taking longer: store down
  int64_t reference_store_timeout_ms = 500;  // a reply taking longer: store down
  // A local copy is validated against the store this often, which bounds how
  // long a replica that missed an invalidation serves a deleted identity.
  int64_t reference_store_revalidate_s = 5;
  int reference_store_threads = 2;        // threads that make the blocking store calls
  int max_queued_store_calls = 64;        // store calls waiting for a thread; beyond: refused
};

// Checks every numeric setting against its allowed range. The first one out
// of range is INVALID_ARGUMENT "--<flag>=<value>: expected <min>..<max>", so a
// typo stops the start instead of serving something that refuses every call.
// Thread-safe (pure function).
absl::Status ValidateServerConfig(const ServerConfig& config);

}  // namespace fsrst

#endif  // FSRST_SERVER_SERVER_CONFIG_H_
