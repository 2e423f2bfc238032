// fsrst_server: the FSRST face super-resolution gRPC service.
//
//   fsrst_server --model=model/weights/fsrst_x4.pt [--port=50051] [--metrics_port=9464]
//
// SIGTERM or SIGINT: report NOT_SERVING, refuse new work with UNAVAILABLE,
// finish what is queued within --drain_timeout_s, answer what is still queued
// then with UNAVAILABLE (without computing it), exit 0. During start-up (model
// load and warm-up, when every call is refused and nothing is accepted) a
// signal ends the process at once, exit 0: a pod stopped while it warms up on a
// busy node must not wait minutes for a warm-up nobody will use.

#include <signal.h>

#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "server/fsrst_server.h"

namespace {
const fsrst::ServerConfig kDefaults;
}  // namespace

ABSL_FLAG(std::string, model, "model/weights/fsrst_x4.pt",
          "TorchScript FSRST file (model/fsrst/export.py); sizes come from its metadata");
ABSL_FLAG(std::string, device, kDefaults.device,
          "where the model runs: auto (CUDA when LibTorch has it), cpu, cuda or cuda:N");
ABSL_FLAG(int, model_instances, kDefaults.model_instances,
          "model calls that run side by side, sharing one copy of the weights; 0 = auto: one "
          "per core on CPU (or cores / --model_threads), 1 on CUDA");
ABSL_FLAG(int, model_threads, kDefaults.model_threads,
          "intra-op CPU threads of each model call; 0 = auto: cores / --model_instances "
          "(1 when both are auto on CPU)");
ABSL_FLAG(int, model_nice, kDefaults.model_nice,
          "how much lower the model threads' CPU priority is than the gRPC threads' (nice "
          "increment 0..19): when the model saturates the cores, refusals, health checks and "
          "new frames are still handled at once");
ABSL_FLAG(std::string, host, kDefaults.host,
          "address the gRPC port binds (and the metrics port, unless --metrics_host is set)");
ABSL_FLAG(int, port, kDefaults.port, "gRPC port; 0 picks a free one (printed at start)");
ABSL_FLAG(std::string, metrics_host, kDefaults.metrics_host,
          "address the metrics port binds, e.g. a private network's; empty: --host");
ABSL_FLAG(int, metrics_port, kDefaults.metrics_port,
          "Prometheus /metrics port; 0 picks a free one, -1 disables");
ABSL_FLAG(int, metrics_threads, kDefaults.metrics_threads,
          "HTTP worker threads of the metrics port: each slow or idle connection holds one "
          "until --metrics_request_timeout_ms");
ABSL_FLAG(int64_t, metrics_request_timeout_ms, kDefaults.metrics_request_timeout_ms,
          "a connection to the metrics port that has not sent a whole request within this is "
          "closed");
ABSL_FLAG(int, max_batch_size, kDefaults.max_batch_size,
          "most frames per model call (frames of any identities share a batch)");
ABSL_FLAG(int64_t, max_queue_delay_us, kDefaults.max_queue_delay_us,
          "longest a partial batch waits for more frames, from its oldest frame; it waits only "
          "while more frames are expected (fewer queued than the last batch carried)");
ABSL_FLAG(int, max_queue_size, kDefaults.max_queue_size,
          "most frames waiting for the model; beyond it RESOURCE_EXHAUSTED at once");
ABSL_FLAG(int, max_pending_registrations, kDefaults.max_pending_registrations,
          "RegisterReferences calls accepted and not yet answered (decoding, waiting for the "
          "model or encoding); beyond it RESOURCE_EXHAUSTED at once");
ABSL_FLAG(int, decode_threads, kDefaults.decode_threads,
          "threads that decode and normalise reference images, at the model's lower priority, "
          "off the gRPC threads");
ABSL_FLAG(int, max_queued_decodes, kDefaults.max_queued_decodes,
          "reference decodes waiting for a decode thread; beyond it RESOURCE_EXHAUSTED");
ABSL_FLAG(int64_t, cache_bytes, kDefaults.cache_bytes,
          "byte budget of cached reference features on the model's device (LRU eviction)");
ABSL_FLAG(int64_t, identity_ttl_s, kDefaults.identity_ttl_s,
          "an identity not used for this many seconds is dropped from the cache");
ABSL_FLAG(int, max_stream_frames_in_flight, kDefaults.max_stream_frames_in_flight,
          "per EnhanceStream: frames read but not yet answered; further reads wait");
ABSL_FLAG(int64_t, max_message_bytes, kDefaults.max_message_bytes,
          "largest request message accepted (gRPC max receive size)");
ABSL_FLAG(int64_t, max_image_pixels, kDefaults.max_image_pixels,
          "largest image accepted, checked from its header before decoding");
ABSL_FLAG(int, default_jpeg_quality, kDefaults.default_jpeg_quality,
          "quality of JPEG answers when the request does not say");
ABSL_FLAG(std::string, tls_cert, "",
          "PEM certificate chain of the gRPC port; with --tls_key the port speaks only TLS");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert");
ABSL_FLAG(std::string, tls_client_ca, "",
          "PEM CA certificate(s); when set, clients must present a certificate it signed (mTLS)");
ABSL_FLAG(std::string, api_keys_file, "",
          "file of `<key> <tenant>` lines (# comments); when set, every FaceSuperResolution call "
          "needs `authorization: Bearer <key>` and identities are per tenant; empty: open");
ABSL_FLAG(int64_t, drain_timeout_s, kDefaults.drain_timeout_s,
          "on SIGTERM/SIGINT, how long queued work may take to finish; then what is still "
          "queued is answered UNAVAILABLE and the process exits");
ABSL_FLAG(std::string, reference_store, kDefaults.reference_store,
          "redis://host:port of the shared reference store: registrations are written through "
          "and any replica reads a missing identity from it (docs/store.md); empty: identities "
          "live in this process only");
ABSL_FLAG(std::string, reference_store_key_file, kDefaults.reference_store_key_file,
          "file of exactly 32 random bytes (head -c 32 /dev/urandom): the AES-256-GCM key that "
          "encrypts and authenticates every stored value; required with --reference_store");
ABSL_FLAG(std::string, reference_store_password_file, kDefaults.reference_store_password_file,
          "file holding the Redis AUTH password (a trailing newline is ignored); empty: none");
ABSL_FLAG(std::string, reference_store_key_prefix, kDefaults.reference_store_key_prefix,
          "prefix of every key and of the invalidation channel in Redis (fleets sharing one "
          "Redis use different prefixes)");
ABSL_FLAG(int64_t, reference_store_connect_timeout_ms,
          kDefaults.reference_store_connect_timeout_ms,
          "a connect to the store that takes longer counts as the store being down");
ABSL_FLAG(int64_t, reference_store_timeout_ms, kDefaults.reference_store_timeout_ms,
          "a store reply that takes longer counts as the store being down (UNAVAILABLE)");
ABSL_FLAG(int64_t, reference_store_revalidate_s, kDefaults.reference_store_revalidate_s,
          "each cached identity is checked against the store this often: a replica that missed "
          "a deletion message stops serving the identity within this (plus one round trip)");
ABSL_FLAG(int, reference_store_threads, kDefaults.reference_store_threads,
          "threads that make the blocking store calls, off the gRPC threads");
ABSL_FLAG(int, max_queued_store_calls, kDefaults.max_queued_store_calls,
          "store calls (write-throughs, read-throughs, deletes) waiting for a store thread; "
          "beyond it UNAVAILABLE");

int main(int argc, char** argv) {
  // --help names the file that defines each flag; the build's absolute path
  // would be noise (and tells nothing a user can act on).
  absl::FlagsUsageConfig usage_config;
  usage_config.normalize_filename = [](absl::string_view file) {
    const size_t slash = file.rfind('/');
    return std::string(slash == absl::string_view::npos ? file : file.substr(slash + 1));
  };
  absl::SetFlagsUsageConfig(usage_config);
  absl::SetProgramUsageMessage(
      "reference-based face super-resolution (FSRST) over gRPC.\n"
      "  fsrst_server --model=model/weights/fsrst_x4.pt --port=50051 --metrics_port=9464");
  absl::ParseCommandLine(argc, argv);

  // Signals are taken by sigwait below, never by a handler on a random thread:
  // block them before any thread starts, so every thread inherits the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  fsrst::ServerConfig config;
  config.model_path = absl::GetFlag(FLAGS_model);
  config.device = absl::GetFlag(FLAGS_device);
  config.model_instances = absl::GetFlag(FLAGS_model_instances);
  config.model_threads = absl::GetFlag(FLAGS_model_threads);
  config.model_nice = absl::GetFlag(FLAGS_model_nice);
  config.host = absl::GetFlag(FLAGS_host);
  config.port = absl::GetFlag(FLAGS_port);
  config.metrics_host = absl::GetFlag(FLAGS_metrics_host);
  config.metrics_port = absl::GetFlag(FLAGS_metrics_port);
  config.metrics_threads = absl::GetFlag(FLAGS_metrics_threads);
  config.metrics_request_timeout_ms = absl::GetFlag(FLAGS_metrics_request_timeout_ms);
  config.max_batch_size = absl::GetFlag(FLAGS_max_batch_size);
  config.max_queue_delay_us = absl::GetFlag(FLAGS_max_queue_delay_us);
  config.max_queue_size = absl::GetFlag(FLAGS_max_queue_size);
  config.max_pending_registrations = absl::GetFlag(FLAGS_max_pending_registrations);
  config.decode_threads = absl::GetFlag(FLAGS_decode_threads);
  config.max_queued_decodes = absl::GetFlag(FLAGS_max_queued_decodes);
  config.cache_bytes = absl::GetFlag(FLAGS_cache_bytes);
  config.identity_ttl_s = absl::GetFlag(FLAGS_identity_ttl_s);
  config.max_stream_frames_in_flight = absl::GetFlag(FLAGS_max_stream_frames_in_flight);
  config.max_message_bytes = absl::GetFlag(FLAGS_max_message_bytes);
  config.max_image_pixels = absl::GetFlag(FLAGS_max_image_pixels);
  config.default_jpeg_quality = absl::GetFlag(FLAGS_default_jpeg_quality);
  config.tls_cert = absl::GetFlag(FLAGS_tls_cert);
  config.tls_key = absl::GetFlag(FLAGS_tls_key);
  config.tls_client_ca = absl::GetFlag(FLAGS_tls_client_ca);
  config.api_keys_file = absl::GetFlag(FLAGS_api_keys_file);
  config.drain_timeout_s = absl::GetFlag(FLAGS_drain_timeout_s);
  config.reference_store = absl::GetFlag(FLAGS_reference_store);
  config.reference_store_key_file = absl::GetFlag(FLAGS_reference_store_key_file);
  config.reference_store_password_file = absl::GetFlag(FLAGS_reference_store_password_file);
  config.reference_store_key_prefix = absl::GetFlag(FLAGS_reference_store_key_prefix);
  config.reference_store_connect_timeout_ms =
      absl::GetFlag(FLAGS_reference_store_connect_timeout_ms);
  config.reference_store_timeout_ms = absl::GetFlag(FLAGS_reference_store_timeout_ms);
  config.reference_store_revalidate_s = absl::GetFlag(FLAGS_reference_store_revalidate_s);
  config.reference_store_threads = absl::GetFlag(FLAGS_reference_store_threads);
  config.max_queued_store_calls = absl::GetFlag(FLAGS_max_queued_store_calls);

  // The one thread that takes SIGTERM/SIGINT. Before start-up has finished it
  // ends the process (nothing to drain); after, it tells main to drain.
  absl::Mutex start_mu;
  bool started = false;  // guarded by start_mu
  absl::Notification signalled;
  int signal_number = 0;
  std::thread signal_thread([&] {
    sigwait(&signals, &signal_number);
    absl::MutexLock lock(&start_mu);
    if (!started) {
      std::cerr << "fsrst_server: signal " << signal_number
                << " during start-up: nothing accepted yet, exiting" << std::endl;
      std::_Exit(0);  // the model may be mid warm-up on another thread: skip destructors
    }
    signalled.Notify();
  });
  signal_thread.detach();

  std::cerr << "fsrst_server: loading " << config.model_path << std::endl;
  absl::StatusOr<std::unique_ptr<fsrst::FsrstServer>> server = fsrst::FsrstServer::Start(config);
  {
    absl::MutexLock lock(&start_mu);
    started = true;
  }
  if (!server.ok()) {
    std::cerr << "fsrst_server: cannot start: " << server.status() << std::endl;
    return 1;
  }
  const fsrst::ModelMetadata& model = (*server)->model();
  std::cerr << "fsrst_server: SERVING " << model.name << " (version " << model.version
            << (model.trained ? "" : ", UNTRAINED random weights") << ") on " << config.host
            << ":" << (*server)->port() << ", metrics on port " << (*server)->metrics_port()
            << "; " << (*server)->model_parallelism().instances << " model instance(s) x "
            << (*server)->model_parallelism().threads << " thread(s)" << std::endl;
  // Which protections are on, never the keys themselves.
  std::cerr << "fsrst_server: gRPC port "
            << (config.tls_cert.empty() ? "plaintext"
                : config.tls_client_ca.empty() ? "TLS"
                                               : "mutual TLS (client certificates required)")
            << ", "
            << (config.api_keys_file.empty() ? "no API keys (open, single tenant)"
                                             : "API keys required (per-tenant identities)")
            << std::endl;
  // Where identities live; the key and password are never printed.
  std::cerr << "fsrst_server: identities "
            << (config.reference_store.empty()
                    ? std::string("in this process only (no --reference_store)")
                    : "shared through " + config.reference_store +
                          " (values AES-256-GCM sealed; deletions reach every replica within " +
                          std::to_string(config.reference_store_revalidate_s) + " s)")
            << std::endl;

  signalled.WaitForNotification();
  std::cerr << "fsrst_server: signal " << signal_number << ": draining" << std::endl;
  const bool drained =
      (*server)->Shutdown(absl::Seconds(config.drain_timeout_s));
  std::cerr << "fsrst_server: " << (drained ? "drained, exiting" : "drain timed out, exiting")
            << std::endl;
  server->reset();
  return 0;
}
