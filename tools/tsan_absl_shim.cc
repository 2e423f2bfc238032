// LD_PRELOADed by tools/tsan.sh. Debian's Abseil is built without
// ThreadSanitizer, so TSan cannot see the happens-before edges that
// absl::Mutex and absl::Notification create and reports every access to
// ABSL_GUARDED_BY state as a race. This library interposes the out-of-line
// entry points our code calls, forwards each to the real one, and tells TSan
// about the edge: release before giving a mutex up (Unlock, and Await, which
// may wait unlocked), acquire after holding it again. absl evaluates an
// Await/LockWhen condition inside the library with the mutex held, in the
// waiter or in the thread that unlocks (after that thread's
// release), so each evaluation is wrapped in its own acquire ... release.
// Lock-order (deadlock) detection is not modelled; data races in our code
// still are.
#include <dlfcn.h>

#include <cstdio>
#include <cstdlib>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"

extern "C" void __tsan_acquire(void* addr);
extern "C" void __tsan_release(void* addr);

namespace {

template <typename Fn>
Fn Real(const char* mangled) {
  void* symbol = dlsym(RTLD_NEXT, mangled);
  if (symbol == nullptr) {
    std::fprintf(stderr, "tsan_absl_shim: %s not found\n", mangled);
    std::abort();
  }
  return reinterpret_cast<Fn>(symbol);
}

// A condition evaluated as a critical section of `mu`: absl runs it with mu held.
struct AcquiringCondition {
  absl::Mutex* mu;
  const absl::Condition* cond;
  static bool Eval(AcquiringCondition* self) {
    __tsan_acquire(self->mu);
    const bool result = self->cond->Eval();
    __tsan_release(self->mu);
    return result;
  }
};

}  // namespace

namespace absl {
ABSL_NAMESPACE_BEGIN

void Mutex::Lock() {
  static const auto real = Real<void (*)(Mutex*)>("_ZN4absl7debian35Mutex4LockEv");
  real(this);
  __tsan_acquire(this);
}

bool Mutex::TryLock() {
  static const auto real = Real<bool (*)(Mutex*)>("_ZN4absl7debian35Mutex7TryLockEv");
  const bool locked = real(this);
  if (locked) __tsan_acquire(this);
  return locked;
}

void Mutex::LockWhen(const Condition& cond) {
  static const auto real =
      Real<void (*)(Mutex*, const Condition&)>("_ZN4absl7debian35Mutex8LockWhenERKNS0_9ConditionE");
  AcquiringCondition wrapped{this, &cond};
  real(this, Condition(&AcquiringCondition::Eval, &wrapped));
  __tsan_acquire(this);
}

void Mutex::Unlock() {
  static const auto real = Real<void (*)(Mutex*)>("_ZN4absl7debian35Mutex6UnlockEv");
  __tsan_release(this);
  real(this);
}

void Mutex::Await(const Condition& cond) {
  static const auto real =
      Real<void (*)(Mutex*, const Condition&)>("_ZN4absl7debian35Mutex5AwaitERKNS0_9ConditionE");
  __tsan_release(this);
  AcquiringCondition wrapped{this, &cond};
  real(this, Condition(&AcquiringCondition::Eval, &wrapped));
  __tsan_acquire(this);
}

bool Mutex::AwaitWithTimeout(const Condition& cond, absl::Duration timeout) {
  static const auto real = Real<bool (*)(Mutex*, const Condition&, absl::Duration)>(
      "_ZN4absl7debian35Mutex16AwaitWithTimeoutERKNS0_9ConditionENS0_8DurationE");
  __tsan_release(this);
  AcquiringCondition wrapped{this, &cond};
  const bool result = real(this, Condition(&AcquiringCondition::Eval, &wrapped), timeout);
  __tsan_acquire(this);
  return result;
}

void Notification::Notify() {
  static const auto real = Real<void (*)(Notification*)>("_ZN4absl7debian312Notification6NotifyEv");
  __tsan_release(this);
  real(this);
}

void Notification::WaitForNotification() const {
  static const auto real =
      Real<void (*)(const Notification*)>("_ZNK4absl7debian312Notification19WaitForNotificationEv");
  real(this);
  __tsan_acquire(const_cast<Notification*>(this));
}

bool Notification::WaitForNotificationWithTimeout(absl::Duration timeout) const {
  static const auto real = Real<bool (*)(const Notification*, absl::Duration)>(
      "_ZNK4absl7debian312Notification30WaitForNotificationWithTimeoutENS0_8DurationE");
  const bool notified = real(this, timeout);
  if (notified) __tsan_acquire(const_cast<Notification*>(this));
  return notified;
}

ABSL_NAMESPACE_END
}  // namespace absl
