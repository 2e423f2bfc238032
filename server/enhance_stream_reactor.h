#ifndef FSRST_SERVER_ENHANCE_STREAM_REACTOR_H_
#define FSRST_SERVER_ENHANCE_STREAM_REACTOR_H_

#include <atomic>
#include <deque>
#include <functional>
#include <memory>
#include <string>

#include <grpcpp/grpcpp.h>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "batching/worker_pool.h"
#include "fsrst/v1/fsrst.grpc.pb.h"
#include "server/enhance_request_handler.h"
#include "server/server_metrics.h"

namespace fsrst {

// One EnhanceStream call: reads frames, hands each to the batcher, and writes
// the answers back in request order, each carrying its sequence number. A bad
// or late frame gets a FrameError in its own response and the stream goes on.
// At most `max_in_flight` frames are read and not yet answered; further reads
// wait (backpressure to the caller).
//
// Never blocks a gRPC thread: reads, batcher hand-offs and writes are all
// asynchronous; the batcher's thread completes frames. A frame with inline
// references (up to 8 large images to decode) is prepared on the decode pool
// instead, which then hands it to the batcher; a full decode queue answers
// that frame alone with RESOURCE_EXHAUSTED. Its slot is taken when it is read,
// so it counts against max_in_flight and is answered in its place. Owns
// itself: created by the service, deleted in OnDone, which gRPC calls only
// after Finish, and Finish is only called once every frame read has been
// answered or dropped, so no decode job or batcher task can outlive the
// reactor.
class EnhanceStreamReactor final
    : public grpc::ServerBidiReactor<v1::EnhanceRequest, v1::EnhanceResponse> {
 public:
  // `accepting` tells whether the service takes new frames (false while
  // draining). Identities are looked up in `tenant`'s namespace. Frames with
  // inline references are decoded on `decoder` (not owned; must outlive the
  // call, and answer every job it accepts, as WorkerPool does).
  EnhanceStreamReactor(grpc::CallbackServerContext* context, const EnhanceRequestHandler* handler,
                       WorkerPool* decoder, ServerMetrics* metrics, int max_in_flight,
                       std::function<absl::Status()> accepting, std::string tenant);

  void OnReadDone(bool ok) override;
  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override;

 private:
  struct Slot {
    v1::EnhanceResponse response;
    bool ready = false;
  };

  // Prepares (decodes) the frame in `request` for `slot` and hands it to the
  // batcher, whose thread completes the slot. Otherwise returns the error to
  // answer the slot with.
  absl::Status Submit(Slot* slot, const v1::EnhanceRequest& request);
  // Hands the frame in request_, which has inline references, to the decode
  // pool, which then Submits it and completes the slot if that fails.
  // Otherwise returns the error to answer the slot with. Leaves request_
  // empty (moved, not copied).
  absl::Status SubmitToDecoder(Slot* slot);
  // A frame finished (on a batcher or decode thread, or inline for errors):
  // answers it with `status` as a FrameError unless OK, then Advance()s in
  // the same critical section. Once the slot is ready another thread may
  // write it and finish the call, so after this the caller must not touch
  // the reactor unless something else (reading_) keeps the call open.
  void Complete(Slot* slot, const absl::Status& status) ABSL_LOCKS_EXCLUDED(mu_);
  // Decides the next gRPC operations under mu_, runs them after unlocking.
  void Advance() ABSL_LOCKS_EXCLUDED(mu_);
  // Advance() that first marks `completed` (if not null) ready with `status`.
  void AdvanceAfter(Slot* completed, const absl::Status& status) ABSL_LOCKS_EXCLUDED(mu_);

  grpc::CallbackServerContext* const context_;
  const EnhanceRequestHandler* const handler_;
  WorkerPool* const decoder_;
  ServerMetrics* const metrics_;
  const int max_in_flight_;
  const std::function<absl::Status()> accepting_;
  const std::string tenant_;
  const absl::Time start_;

  // The read buffer: gRPC fills it between StartRead and OnReadDone, then OnReadDone reads it
  // until Submit returns (or moves it out for the decode pool). reading_ covers both, so no
  // new read starts while it is in use.
  v1::EnhanceRequest request_;
  std::atomic<bool> cancelled_{false};

  absl::Mutex mu_;
  std::deque<Slot> slots_ ABSL_GUARDED_BY(mu_);  // read, not yet written; front is next out
  bool reading_ ABSL_GUARDED_BY(mu_) = false;  // a read is pending or request_ is being used
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool reads_done_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace fsrst

#endif  // FSRST_SERVER_ENHANCE_STREAM_REACTOR_H_
