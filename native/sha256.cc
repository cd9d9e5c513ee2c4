// createSha256: SHA-256 of a byte stream computed on the libuv pool, chunk after chunk in order.
//
// A layer's diffID is the hash of its whole uncompressed tar; computed on the main thread it took a fifth of an
// apply's time there, while the thread pool has cores to spare. Updates are queued (SerialQueue), so they run in
// submission order on one pool thread and never block the main thread; each chunk Buffer is referenced until it
// has been hashed.
//
// The digest comes from the OpenSSL linked into node (node exports its OpenSSL symbols for addons; a node using
// a shared libcrypto has them loaded too). The symbols are weak references: an addon loaded into a node without
// them still loads, and createSha256 then fails with ERR_NATIVE_MISSING so callers use node:crypto instead.
#include <napi.h>

#include <cerrno>
#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "common/failure.h"
#include "modules.h"
#include "serial-queue.h"

extern "C" {
// Declared here rather than taken from <openssl/evp.h>: these six functions have had the same signatures since
// OpenSSL 1.1, and the headers of the node being built against are not always on the include path.
struct evp_md_ctx_st;
struct evp_md_st;
struct engine_st;
evp_md_ctx_st* EVP_MD_CTX_new(void) __attribute__((weak));
void EVP_MD_CTX_free(evp_md_ctx_st* ctx) __attribute__((weak));
const evp_md_st* EVP_sha256(void) __attribute__((weak));
int EVP_DigestInit_ex(evp_md_ctx_st* ctx, const evp_md_st* type, engine_st* impl) __attribute__((weak));
int EVP_DigestUpdate(evp_md_ctx_st* ctx, const void* d, size_t cnt) __attribute__((weak));
int EVP_DigestFinal_ex(evp_md_ctx_st* ctx, unsigned char* md, unsigned int* s) __attribute__((weak));
}

namespace gd {
namespace {

bool HaveEvp() {
  return EVP_MD_CTX_new != nullptr && EVP_MD_CTX_free != nullptr && EVP_sha256 != nullptr &&
         EVP_DigestInit_ex != nullptr && EVP_DigestUpdate != nullptr && EVP_DigestFinal_ex != nullptr;
}

// Touched only by the queue's jobs (one at a time) after creation on the main thread.
struct HashState {
  evp_md_ctx_st* ctx = nullptr;
  bool failed = false;
  ~HashState() {
    if (ctx != nullptr) EVP_MD_CTX_free(ctx);
  }
};

struct HashCtx {
  std::shared_ptr<HashState> state;
  std::shared_ptr<SerialQueue> queue;
  bool finished = false;  // digest() was called
};

class UpdateJob : public SerialQueue::Job {
 public:
  UpdateJob(Napi::Env env, std::shared_ptr<HashState> s, Napi::Value chunk, const unsigned char* p, size_t n)
      : state_(std::move(s)), deferred_(Napi::Promise::Deferred::New(env)), ref_(Napi::Persistent(chunk)), p_(p),
        n_(n) {}
  Napi::Promise Promise() { return deferred_.Promise(); }
  void Run() override {
    if (!state_->failed && n_ > 0 && EVP_DigestUpdate(state_->ctx, p_, n_) != 1) state_->failed = true;
    failed_ = state_->failed;
  }
  void Crashed(int) override { failed_ = state_->failed = true; }
  void Done(Napi::Env env) override {
    ref_.Reset();
    if (failed_) {
      Failure f;
      f.Set(EIO, "EVP_DigestUpdate");
      deferred_.Reject(MakeError(env, f).Value());
    } else {
      deferred_.Resolve(env.Undefined());
    }
  }

 private:
  std::shared_ptr<HashState> state_;
  Napi::Promise::Deferred deferred_;
  Napi::Reference<Napi::Value> ref_;
  const unsigned char* p_;
  size_t n_;
  bool failed_ = false;
};

class DigestJob : public SerialQueue::Job {
 public:
  DigestJob(Napi::Env env, std::shared_ptr<HashState> s)
      : state_(std::move(s)), deferred_(Napi::Promise::Deferred::New(env)) {}
  Napi::Promise Promise() { return deferred_.Promise(); }
  void Run() override {
    unsigned char md[64];
    unsigned int len = 0;
    if (state_->failed || EVP_DigestFinal_ex(state_->ctx, md, &len) != 1 || len != 32) {
      state_->failed = true;
      return;
    }
    static const char kHex[] = "0123456789abcdef";
    hex_.reserve(64);
    for (unsigned i = 0; i < len; i++) {
      hex_.push_back(kHex[md[i] >> 4]);
      hex_.push_back(kHex[md[i] & 15]);
    }
  }
  void Crashed(int) override { state_->failed = true; }
  void Done(Napi::Env env) override {
    if (hex_.empty()) {
      Failure f;
      f.Set(EIO, "EVP_DigestFinal_ex");
      deferred_.Reject(MakeError(env, f).Value());
    } else {
      deferred_.Resolve(Napi::String::New(env, hex_));
    }
  }

 private:
  std::shared_ptr<HashState> state_;
  Napi::Promise::Deferred deferred_;
  std::string hex_;
};

Napi::Value Update(const Napi::CallbackInfo& info, HashCtx& ctx) {
  Napi::Env env = info.Env();
  if (ctx.finished) throw Napi::Error::New(env, "sha256: update after digest");
  Napi::Value v = info[0];
  if (!v.IsTypedArray()) throw Napi::TypeError::New(env, "chunk must be a Buffer");
  napi_typedarray_type t;
  size_t n;
  void* p;
  napi_value ab;
  size_t off;
  if (napi_get_typedarray_info(env, v, &t, &n, &p, &ab, &off) != napi_ok || t != napi_uint8_array ||
      (n > 0 && p == nullptr))
    throw Napi::TypeError::New(env, "chunk must be a Buffer");
  auto job = std::make_unique<UpdateJob>(env, ctx.state, v, static_cast<const unsigned char*>(p), n);
  Napi::Promise promise = job->Promise();
  ctx.queue->Push(env, std::move(job));
  return promise;
}

Napi::Value Digest(const Napi::CallbackInfo& info, HashCtx& ctx) {
  Napi::Env env = info.Env();
  if (ctx.finished) throw Napi::Error::New(env, "sha256: digest already taken");
  ctx.finished = true;
  auto job = std::make_unique<DigestJob>(env, ctx.state);
  Napi::Promise promise = job->Promise();
  ctx.queue->Push(env, std::move(job));
  return promise;
}

Napi::Value CreateSha256(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto d = Napi::Promise::Deferred::New(env);
  if (!HaveEvp()) {
    Napi::Error e = Napi::Error::New(env, "native function createSha256 is not available: node exports no OpenSSL");
    e.Set("code", Napi::String::New(env, "ERR_NATIVE_MISSING"));
    d.Reject(e.Value());
    return d.Promise();
  }
  auto ctx = std::make_shared<HashCtx>();
  ctx->state = std::make_shared<HashState>();
  ctx->state->ctx = EVP_MD_CTX_new();
  if (ctx->state->ctx == nullptr || EVP_DigestInit_ex(ctx->state->ctx, EVP_sha256(), nullptr) != 1) {
    Failure f;
    f.Set(ENOMEM, "EVP_DigestInit_ex");
    d.Reject(MakeError(env, f).Value());
    return d.Promise();
  }
  ctx->queue = SerialQueue::Create("sha256");
  Napi::Object o = Napi::Object::New(env);
  o.Set("update", Napi::Function::New(
                      env, [ctx](const Napi::CallbackInfo& i) { return Update(i, *ctx); }, "update"));
  o.Set("digest", Napi::Function::New(
                      env, [ctx](const Napi::CallbackInfo& i) { return Digest(i, *ctx); }, "digest"));
  d.Resolve(o);
  return d.Promise();
}

}  // namespace

void RegisterSha256(Napi::Env env, Napi::Object exports) {
  exports.Set("createSha256", Napi::Function::New(env, CreateSha256, "createSha256"));
}

}  // namespace gd
