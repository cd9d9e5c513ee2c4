// RunAsync: the one way native calls leave the event loop. `work` runs on a libuv pool thread and may only
// use plain C++ data captured by value; `convert` runs back on the main thread and builds the JS result.
#pragma once
#include <napi.h>

#include <functional>
#include <utility>

#include "failure.h"

namespace gd {

struct Unit {};  // result type of calls that resolve to undefined

template <typename R>
class PromiseWorker : public Napi::AsyncWorker {
 public:
  using Work = std::function<R(Failure&)>;
  using Convert = std::function<Napi::Value(Napi::Env, R&)>;

  PromiseWorker(Napi::Env env, const char* name, Work work, Convert convert)
      : Napi::AsyncWorker(env, name), deferred_(Napi::Promise::Deferred::New(env)),
        work_(std::move(work)), convert_(std::move(convert)) {}

  Napi::Promise Promise() { return deferred_.Promise(); }

 protected:
  void Execute() override {
    try {
      result_ = work_(failure_);
    } catch (const std::bad_alloc&) {
      failure_.Set(ENOMEM, "allocate");
    } catch (const std::exception& e) {
      failure_.Set(EIO, "native");
      failure_.detail = e.what();
    }
  }
  void OnOK() override {
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    if (failure_.failed()) {
      deferred_.Reject(MakeError(env, failure_).Value());
      return;
    }
    try {
      deferred_.Resolve(convert_(env, result_));
    } catch (const Napi::Error& e) {
      deferred_.Reject(e.Value());
    }
  }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  Work work_;
  Convert convert_;
  Failure failure_;
  R result_{};
};

template <typename R>
Napi::Promise RunAsync(Napi::Env env, const char* name, typename PromiseWorker<R>::Work work,
                       typename PromiseWorker<R>::Convert convert) {
  auto* w = new PromiseWorker<R>(env, name, std::move(work), std::move(convert));
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

// For calls that resolve to undefined.
inline Napi::Promise RunVoid(Napi::Env env, const char* name, std::function<void(Failure&)> work) {
  return RunAsync<Unit>(
      env, name,
      [work = std::move(work)](Failure& f) {
        work(f);
        return Unit{};
      },
      [](Napi::Env e, Unit&) { return e.Undefined(); });
}

}  // namespace gd
