#include "server/enhance_stream_reactor.h"

#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "server/status_util.h"

namespace fsrst {

EnhanceStreamReactor::EnhanceStreamReactor(grpc::CallbackServerContext* context,
                                           const EnhanceRequestHandler* handler,
                                           WorkerPool* decoder, ServerMetrics* metrics,
                                           int max_in_flight,
                                           std::function<absl::Status()> accepting,
                                           std::string tenant)
    : context_(context),
      handler_(handler),
      decoder_(decoder),
      metrics_(metrics),
      max_in_flight_(max_in_flight),
      accepting_(std::move(accepting)),
      tenant_(std::move(tenant)),
      start_(absl::Now()) {
  metrics_->StreamOpened();
  Advance();
}

void EnhanceStreamReactor::OnReadDone(bool ok) {
  Slot* slot = nullptr;
  {
    absl::MutexLock lock(&mu_);
    if (!ok) {
      reading_ = false;
      reads_done_ = true;
    } else {
      slots_.emplace_back();
      slot = &slots_.back();  // deque: stays put while others are added or the front removed
      slot->response.set_sequence_number(request_.sequence_number());
    }
  }
  if (slot != nullptr) {
    // reading_ stays true until Submit has copied everything out of request_ (or it was moved
    // to the decode pool): a frame of this stream that finishes meanwhile calls Advance() from
    // a batcher thread, and a read started then would deserialize the next frame into request_
    // while this one is being decoded. It also keeps the call open, so `this` stays valid.
    absl::Status status = accepting_();
    if (status.ok()) {
      status = request_.references_size() > 0 ? SubmitToDecoder(slot) : Submit(slot, request_);
    }
    if (!status.ok()) Complete(slot, status);
    absl::MutexLock lock(&mu_);
    reading_ = false;
  }
  Advance();
}

absl::Status EnhanceStreamReactor::Submit(Slot* slot, const v1::EnhanceRequest& request) {
  ResponseFormat format;
  absl::StatusOr<std::unique_ptr<FrameTask>> task =
      handler_->Prepare(request, tenant_, ToAbslTime(context_->deadline()), &format);
  if (!task.ok()) return task.status();
  (*task)->is_cancelled = [this] { return cancelled_.load(std::memory_order_relaxed); };
  (*task)->done = [this, slot, format](absl::Status status, FrameTask& finished) {
    metrics_->RecordFrameDone(status.code());
    if (status.ok()) status = handler_->BuildResponse(finished, format, &slot->response);
    Complete(slot, status);
  };
  return handler_->Submit(&*task, request, tenant_);
}

absl::Status EnhanceStreamReactor::SubmitToDecoder(Slot* slot) {
  // Moving a message swaps its fields: the reference bytes are not copied.
  auto request = std::make_shared<v1::EnhanceRequest>(std::move(request_));
  auto job = std::make_unique<JobTask>();
  job->deadline = ToAbslTime(context_->deadline());
  job->is_cancelled = [this] { return cancelled_.load(std::memory_order_relaxed); };
  // On a decode thread. The slot is not ready until this completes it (here or from the
  // batcher), so the call stays open and `this` valid until then.
  job->run = [this, slot, request](absl::Status status) {
    if (status.ok()) status = Submit(slot, *request);
    if (!status.ok()) Complete(slot, status);
  };
  const absl::Status status = decoder_->Submit(&job);
  if (status.ok()) return status;
  return absl::Status(status.code(),
                      absl::StrCat("EnhanceStream: reference decoding: ", status.message()));
}

void EnhanceStreamReactor::Complete(Slot* slot, const absl::Status& status) {
  metrics_->RecordStreamFrame(status.code());
  AdvanceAfter(slot, status);
}

void EnhanceStreamReactor::Advance() { AdvanceAfter(nullptr, absl::OkStatus()); }

void EnhanceStreamReactor::AdvanceAfter(Slot* completed, const absl::Status& status) {
  bool start_read = false;
  const v1::EnhanceResponse* write = nullptr;
  bool finish = false;
  {
    absl::MutexLock lock(&mu_);
    if (completed != nullptr) {
      if (!status.ok()) {
        completed->response.clear_image();
        v1::FrameError* error = completed->response.mutable_error();
        error->set_code(static_cast<int>(status.code()));
        error->set_message(std::string(status.message()));
      }
      completed->ready = true;
    }
    if (finished_) return;
    const bool cancelled = cancelled_.load(std::memory_order_relaxed);
    if (cancelled) {
      // Nobody will read the answers: drop the finished ones without writing.
      while (!writing_ && !slots_.empty() && slots_.front().ready) slots_.pop_front();
    } else if (!writing_ && !slots_.empty() && slots_.front().ready) {
      writing_ = true;
      write = &slots_.front().response;
    }
    if (!cancelled && !reading_ && !reads_done_ &&
        static_cast<int>(slots_.size()) < max_in_flight_) {
      reading_ = true;
      start_read = true;
    }
    if ((reads_done_ || cancelled) && !reading_ && !writing_ && slots_.empty()) {
      finished_ = true;
      finish = true;
    }
  }
  // gRPC operations outside the lock; after Finish, `this` may be deleted at any time.
  if (write != nullptr) StartWrite(write);
  if (start_read) StartRead(&request_);
  if (finish) {
    Finish(cancelled_.load() ? grpc::Status::CANCELLED : grpc::Status::OK);
  }
}

void EnhanceStreamReactor::OnWriteDone(bool ok) {
  {
    absl::MutexLock lock(&mu_);
    writing_ = false;
    slots_.pop_front();
  }
  if (!ok) cancelled_.store(true);
  Advance();
}

void EnhanceStreamReactor::OnCancel() {
  cancelled_.store(true);
  Advance();
}

void EnhanceStreamReactor::OnDone() {
  metrics_->StreamClosed();
  metrics_->RecordRequest(Rpc::kEnhanceStream,
                          cancelled_.load() ? absl::StatusCode::kCancelled : absl::StatusCode::kOk,
                          absl::Now() - start_);
  delete this;
}

}  // namespace fsrst
