#ifndef FSRST_CLIENTS_CPP_FSRST_CLIENT_H_
#define FSRST_CLIENTS_CPP_FSRST_CLIENT_H_

// The C++ client of fsrst_server (service fsrst.v1.FaceSuperResolution).
//
// FsrstClient keeps every identity's references on the client side, so the
// server's reference cache is invisible to its callers: when the server
// answers NOT_FOUND for an identity this client registered (the server
// restarted, evicted or expired it, or the call reached another replica), the
// client registers the kept references again and retries the frame once.
//
//   FsrstClient client(grpc::CreateChannel("localhost:50051", creds));
//   client.RegisterReferences("alice", {ref0, ref1, ref2});
//   absl::StatusOr<v1::EnhanceResponse> answer = client.Enhance("alice", frame);
//
//   auto stream = client.OpenStream("alice");        // video: one frame pipe
//   (*stream)->Send(frame, 0); ... (*stream)->Receive(&response); ... (*stream)->Close();
//
// Every call carries the metadata `x-fsrst-identity: <identity_id>` (when the
// identity is not empty), so a load balancer can keep an identity on the
// replica that caches it, a deadline of CallOptions::timeout, and the API key
// of ClientOptions (`authorization: Bearer <key>`) when one is set. For TLS,
// build the channel with MakeChannelCredentials(ChannelSecurity{...}).
//
// Rolling updates are invisible to callers: a call refused or cut because its
// server drains or went away (UNAVAILABLE, e.g. "the server is shutting down;
// retry on another replica", or a stream reset by a proxy) is made again as a
// new call, which a proxy routes to a live replica, within the deadline and
// ClientOptions' bounds; a stream is reopened and its unanswered frames are
// written again in order (see FrameStream). Other errors come back at once.
//
// Errors are absl::Status with the server's canonical code and message
// (grpc::StatusCode and absl::StatusCode share their numbers).

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "fsrst/v1/fsrst.grpc.pb.h"
#include "grpc/health/v1/health.grpc.pb.h"

namespace fsrst {

// How one call is made. The defaults suit interactive unary calls; give a
// stream a timeout that covers all of its frames.
struct CallOptions {
  // Deadline of the call, counted from when the method is entered. For Enhance
  // it covers the re-registration and the retry too; for a stream it covers
  // the whole stream. absl::InfiniteDuration() sets no deadline.
  absl::Duration timeout = absl::Seconds(30);
  // Encoding of enhanced images; UNSPECIFIED answers in the frame's encoding.
  v1::Encoding output_encoding = v1::ENCODING_UNSPECIFIED;
  // Quality 1..100 of JPEG answers; 0 = the server's default (95).
  uint32_t jpeg_quality = 0;
  // Per-frame queue budget in the server (EnhanceRequest.timeout_ms); a frame
  // not started within it is dropped with DEADLINE_EXCEEDED. 0 = none.
  uint32_t frame_timeout_ms = 0;
  // Wait (within the deadline) for an unreachable server instead of failing
  // with UNAVAILABLE at once (gRPC wait_for_ready).
  bool wait_for_ready = false;
};

// How the client proves who it is and how it retries. Thread-compatible plain data.
struct ClientOptions {
  // Sent on every call as `authorization: Bearer <api_key>` (servers started
  // with --api_keys_file require it); empty: no key.
  std::string api_key;
  // Tries of one unary call refused or cut because its server went away
  // (UNAVAILABLE, reset stream); 1 = no retry. Each try is a new call.
  int max_attempts = 10;
  // Reopens of a stream in a row with no frame answered in between.
  int max_stream_reopens = 10;
  // The wait before retry n is min(initial_backoff * 2^(n-1), max_backoff),
  // drawn in [half, all] of that so a replica's callers do not return in step:
  // with these defaults up to about 9 s in all, so a drain or a restarted
  // replica's warm-up fits in it. A wait that would pass the deadline is not
  // taken: the last error is returned instead.
  absl::Duration initial_backoff = absl::Milliseconds(50);
  absl::Duration max_backoff = absl::Seconds(2);
};

// TLS for the channel to a server started with --tls_cert/--tls_key.
struct ChannelSecurity {
  std::string tls_ca_path;    // PEM CA that signed the server's certificate; empty: plaintext
  std::string tls_cert_path;  // PEM client certificate, for servers with --tls_client_ca (mTLS)
  std::string tls_key_path;   // PEM private key of tls_cert_path
};

// The server's rule for identity ids (common/identity_id.h: [A-Za-z0-9._:@-],
// 1 to 128 bytes): INVALID_ARGUMENT with the server's own message when
// `identity_id` breaks it.
absl::Status CheckIdentityId(const std::string& identity_id);

// Whether a call that failed with `status` was refused or cut because its
// server is going away or unreachable (not because of what it sent): another
// try may reach another replica.
bool IsRetryable(const absl::Status& status);

// Channel credentials for `security`: insecure when it is all empty, else TLS
// (with a client certificate when tls_cert_path is set). The files are read
// here; NOT_FOUND or INVALID_ARGUMENT naming the field when one is missing or
// a certificate comes without its key (or the reverse, or without a CA).
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> MakeChannelCredentials(
    const ChannelSecurity& security);

class FrameStream;

// A client of one fsrst_server (or of a load-balanced set of replicas).
//
// Thread-safe: every method may be called concurrently from any thread.
// Registrations of one identity, its re-registrations and its deletion are
// serialised in the client, so the references a server ends up with are the
// last ones RegisterReferences accepted.
class FsrstClient {
 public:
  // REQUIRES: channel != nullptr. Shares ownership of the channel.
  explicit FsrstClient(std::shared_ptr<grpc::ChannelInterface> channel,
                       ClientOptions client_options = {});
  ~FsrstClient();

  FsrstClient(const FsrstClient&) = delete;
  FsrstClient& operator=(const FsrstClient&) = delete;

  // Registers `references` (1 to the server's max_references images of the
  // person) under `identity_id` on the server and, when the server accepts
  // them, keeps them in the client for re-registration, replacing any kept
  // earlier. On failure the client keeps what it had (nothing, or the
  // earlier references) and returns the server's error, e.g.
  // INVALID_ARGUMENT naming the bad references[i].
  absl::StatusOr<v1::RegisterReferencesResponse> RegisterReferences(
      const std::string& identity_id, std::vector<v1::Image> references,
      const CallOptions& options = {});

  // Enhances one low-resolution frame of `identity_id` (empty: no references,
  // the model's single-image fallback). If the server answers NOT_FOUND and
  // this client keeps references for the identity, they are registered again
  // and the frame is sent once more, all within options.timeout; a second
  // NOT_FOUND, or the re-registration's error, is returned as is.
  absl::StatusOr<v1::EnhanceResponse> Enhance(const std::string& identity_id, v1::Image frame,
                                              const CallOptions& options = {});

  // Opens an EnhanceStream call for frames of `identity_id`; see FrameStream.
  // INVALID_ARGUMENT (CheckIdentityId) for an id the server would refuse.
  // REQUIRES: this client outlives the stream.
  absl::StatusOr<std::unique_ptr<FrameStream>> OpenStream(const std::string& identity_id,
                                                          const CallOptions& options = {});

  // Forgets the identity's references in this client and drops them from the
  // server. Returns the server's status, except that the server's NOT_FOUND
  // becomes OK when this client had references for the identity (the server
  // had already lost them, which is what was asked).
  absl::Status DeleteReferences(const std::string& identity_id, const CallOptions& options = {});

  // The model and limits the server runs with.
  absl::StatusOr<v1::GetServerInfoResponse> GetServerInfo(const CallOptions& options = {});

  // What the server holds for `identity_id` and has served with it: reference
  // count, feature bytes, registered and last-used times, frames served and
  // each reference's mean weight. NOT_FOUND if the server does not hold it
  // (not re-registered: this only reads). Each EnhanceResponse carries the
  // frame's own weights (reference_weights).
  absl::StatusOr<v1::GetIdentityResponse> GetIdentity(const std::string& identity_id,
                                                      const CallOptions& options = {});

  // grpc.health.v1 Check of `service` ("" = the whole server). Not retried: a
  // probe reports the server's state now.
  absl::StatusOr<grpc::health::v1::HealthCheckResponse::ServingStatus> Health(
      const std::string& service = "", const CallOptions& options = {});

  // Whether this client keeps references for `identity_id`.
  bool HasReferences(const std::string& identity_id) const;

  // Unary calls made again after a refusal or a lost connection, so far.
  uint64_t calls_retried() const { return calls_retried_.load(); }

  // The metadata key every identity-bound call carries.
  static constexpr char kIdentityMetadataKey[] = "x-fsrst-identity";

 private:
  friend class FrameStream;

  // Runs `attempt` (one call on a fresh ClientContext) again while it fails
  // retryably, at most max_attempts times, never waiting past `deadline`.
  template <typename Attempt>
  absl::Status Retrying(absl::Time deadline, Attempt attempt);

  // The wait before retry number `retry` (1, 2, ...).
  absl::Duration Backoff(int retry) const;

  // One identity's kept references.
  struct Identity {
    // Serialises the identity's registrations (held across the server call).
    absl::Mutex mu;
    // Empty when the identity was deleted or never accepted.
    std::vector<v1::Image> references ABSL_GUARDED_BY(mu);
    // Bumped (under mu) by every accepted registration; read without mu to
    // snapshot what a frame was sent against.
    std::atomic<uint64_t> generation{0};
  };

  std::shared_ptr<Identity> FindIdentity(const std::string& identity_id) const
      ABSL_LOCKS_EXCLUDED(mu_);
  // The identity's registration count, 0 if the client keeps nothing for it.
  uint64_t Generation(const std::string& identity_id) const ABSL_LOCKS_EXCLUDED(mu_);

  // After a NOT_FOUND for a frame sent at `seen_generation`: registers the
  // kept references again unless another caller already did since. true: the
  // server has them now, send the frame again; false: the client keeps none
  // for the identity; an error: the registration's.
  absl::StatusOr<bool> Reregister(const std::string& identity_id, uint64_t seen_generation,
                                  absl::Time deadline, const CallOptions& options);

  // A context with the identity's metadata, the deadline and wait_for_ready.
  void PrepareContext(grpc::ClientContext* context, const std::string& identity_id,
                      absl::Time deadline, const CallOptions& options) const;

  v1::EnhanceRequest MakeEnhanceRequest(const std::string& identity_id, v1::Image frame,
                                        const CallOptions& options) const;

  const std::shared_ptr<grpc::ChannelInterface> channel_;
  const ClientOptions client_options_;
  const std::unique_ptr<v1::FaceSuperResolution::Stub> stub_;
  const std::unique_ptr<grpc::health::v1::Health::Stub> health_stub_;

  std::atomic<uint64_t> calls_retried_{0};

  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, std::shared_ptr<Identity>> identities_ ABSL_GUARDED_BY(mu_);
};

// One EnhanceStream call: a pipe of frames of one identity, answered in the
// order they were sent.
//
// Send queues a frame and returns at once (the caller decides how many frames
// to keep in flight; the client reads answers as they come and buffers them).
// Receive blocks for the answer to the oldest frame not yet received. A frame
// the server could not enhance is answered with its FrameError set (the
// stream goes on). When the answer is FrameError NOT_FOUND and the client
// keeps references for the identity, the stream registers them again (once
// for all the frames that met the same loss) and writes the frame again on
// the same call; a frame is written again at most once per call.
//
// When the call is refused or cut because its server goes away (a draining
// replica answers a frame UNAVAILABLE; the call ends UNAVAILABLE or reset),
// the stream cancels it, opens a new call after a backoff, and writes every
// frame not yet answered again, in Send order; through an identity-hashing
// proxy the new call reaches another replica, whose NOT_FOUND re-registers
// the identity there. A frame answered NOT_FOUND again after its
// re-registration also reopens (the registration and the call reached
// different replicas), unless the reopens are spent: then that NOT_FOUND is
// its answer. At most ClientOptions::max_stream_reopens reopens in a row with
// no frame answered in between, within the stream's deadline; then Receive
// and Close return the error that lost the last call.
//
// How order is kept: the server answers in the order frames reach it, so each
// answer belongs to the oldest frame still on the wire (checked with an
// internal sequence number; the caller's is restored). Frames are delivered
// from a queue in Send order: a frame written again goes to the tail of the
// wire but keeps its place in that queue, and answers of later frames wait
// behind it until its own arrives. For the same reason the stream half-closes
// only after Close() and once every frame has its final answer.
//
// Thread-safe: Send, Receive and Close may be called from different threads
// (typically one sender and one receiver). Destroying an unclosed stream
// cancels its calls; the destructor waits for gRPC to finish with them and
// for a re-registration under way (at most 30 s or the stream's deadline).
// REQUIRES: the FsrstClient that opened it outlives it.
class FrameStream {
 public:
  ~FrameStream();

  FrameStream(const FrameStream&) = delete;
  FrameStream& operator=(const FrameStream&) = delete;

  // Queues `frame`; its answer carries `sequence_number`. FAILED_PRECONDITION
  // after Close(); the call's error once the call has ended.
  absl::Status Send(v1::Image frame, uint64_t sequence_number);

  // Blocks for the answer to the oldest frame sent and not yet received and
  // moves it to *response (check response->has_error()). OUT_OF_RANGE when
  // the stream is closed and every frame has been received;
  // FAILED_PRECONDITION when no frame is waiting and the stream is open (it
  // would block forever); the call's error (e.g. DEADLINE_EXCEEDED,
  // UNAVAILABLE) when the call ended before that frame was answered.
  // REQUIRES: response != nullptr.
  absl::Status Receive(v1::EnhanceResponse* response);

  // No more frames: waits until every frame sent has its final answer and the
  // server has ended the call, and returns the call's status. Answers not yet
  // received stay available to Receive. Idempotent.
  absl::Status Close();

  // Frames written a second time after a NOT_FOUND on the same call, so far.
  uint64_t frames_resent() const;

  // Calls opened again after a refusal or a cut, so far.
  uint64_t reopens() const;

 private:
  friend class FsrstClient;
  class Call;
  class Impl;

  explicit FrameStream(std::unique_ptr<Impl> impl);

  std::unique_ptr<Impl> impl_;
};

}  // namespace fsrst

#endif  // FSRST_CLIENTS_CPP_FSRST_CLIENT_H_
