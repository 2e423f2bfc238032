#include "server/server_config.h"

#include <cstdint>
#include <limits>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "store/redis_reference_store.h"

namespace fsrst {
namespace {

struct Range {
  const char* flag;
  int64_t value;
  int64_t min;
  int64_t max;
};

}  // namespace

absl::Status ValidateServerConfig(const ServerConfig& c) {
  constexpr int64_t kIntMax = std::numeric_limits<int>::max();
  constexpr int64_t kInt64Max = std::numeric_limits<int64_t>::max();
  // The upper bounds keep each setting within what the code below it can
  // represent and what a 2-core to 64-core host can use; the lower bounds
  // rule out values that would refuse or fail every call.
  const Range ranges[] = {
      {"model_instances", c.model_instances, 0, 256},
      {"model_threads", c.model_threads, 0, 256},
      {"model_nice", c.model_nice, 0, 19},
      {"port", c.port, 0, 65535},
      {"metrics_port", c.metrics_port, -1, 65535},
      {"metrics_threads", c.metrics_threads, 1, 64},
      {"metrics_request_timeout_ms", c.metrics_request_timeout_ms, 100, 60000},
      {"max_batch_size", c.max_batch_size, 1, 256},
      {"max_queue_delay_us", c.max_queue_delay_us, 0, 10'000'000},
      {"max_queue_size", c.max_queue_size, 1, 1'000'000},
      {"max_pending_registrations", c.max_pending_registrations, 1, 100'000},
      {"decode_threads", c.decode_threads, 1, 256},
      {"max_queued_decodes", c.max_queued_decodes, 1, 100'000},
      {"cache_bytes", c.cache_bytes, 0, kInt64Max},
      {"identity_ttl_s", c.identity_ttl_s, 1, 10 * 366 * 86400},
      {"max_stream_frames_in_flight", c.max_stream_frames_in_flight, 1, 4096},
      // gRPC takes the limit as an int; below 4 KiB not even a 32x32 RGB8 frame fits.
      {"max_message_bytes", c.max_message_bytes, 4096, kIntMax},
      // 65500 x 65500 is JPEG's own limit; 2^28 pixels decode to 768 MiB of RGB.
      {"max_image_pixels", c.max_image_pixels, 1, int64_t{1} << 28},
      {"default_jpeg_quality", c.default_jpeg_quality, 1, 100},
      {"drain_timeout_s", c.drain_timeout_s, 0, 3600},
      {"reference_store_connect_timeout_ms", c.reference_store_connect_timeout_ms, 1, 60000},
      {"reference_store_timeout_ms", c.reference_store_timeout_ms, 1, 60000},
      {"reference_store_revalidate_s", c.reference_store_revalidate_s, 1, 3600},
      {"reference_store_threads", c.reference_store_threads, 1, 256},
      {"max_queued_store_calls", c.max_queued_store_calls, 1, 100'000},
  };
  for (const Range& r : ranges) {
    if (r.value < r.min || r.value > r.max) {
      return absl::InvalidArgumentError(
          absl::StrCat("--", r.flag, "=", r.value, ": expected ", r.min, "..", r.max));
    }
  }
  if (c.reference_store.empty()) {
    for (const auto& [flag, value] :
         {std::pair<const char*, const std::string*>{"reference_store_key_file",
                                                      &c.reference_store_key_file},
          {"reference_store_password_file", &c.reference_store_password_file}}) {
      if (!value->empty()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "--", flag, "=", *value, ": only meaningful with --reference_store=redis://host:port"));
      }
    }
  } else {
    absl::StatusOr<RedisAddress> address = ParseRedisUrl(c.reference_store, "reference_store");
    if (!address.ok()) return address.status();
    if (c.reference_store_key_file.empty()) {
      return absl::InvalidArgumentError(
          "--reference_store_key_file: expected a file of 32 random bytes (head -c 32 "
          "/dev/urandom > key) with --reference_store: values are encrypted at rest, and a "
          "store without a key is refused");
    }
    if (c.reference_store_key_prefix.size() > 64 ||
        c.reference_store_key_prefix.find_first_of(" \t\r\n") != std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--reference_store_key_prefix=", c.reference_store_key_prefix,
          ": expected at most 64 characters without whitespace"));
    }
  }
  return absl::OkStatus();
}

}  // namespace fsrst
