// createSha256: SHA-256 of a byte stream computed on the libuv pool, chunk after chunk in order.
//
// A layer's diffID is the hash of its whole uncompressed tar; computed on the main thread it took a fifth of an
// apply's time there, while the thread pool has cores to spare. Updates are queued (SerialQueue), so they run in
// submission order on one pool thread and never block the main thread; each chunk Buffer is referenced until it
// has been hashed.
//
// An update can also carry CRC-64 ranges: byte ranges of the chunk that are file bodies of the tar being hashed,
// for the per-file checksums of Docker's tar-split record. They are computed by the same job, on bytes that are
// in cache anyway, instead of a second pass over the stream on the main thread.
//
// The digest comes from the OpenSSL linked into node (node exports its OpenSSL symbols for addons; a node using
// a shared libcrypto has them loaded too). The symbols are weak references: an addon loaded into a node without
// them still loads, and createSha256 then fails with ERR_NATIVE_MISSING so callers use node:crypto instead.
#include <napi.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/failure.h"
#include "crc64.h"
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
  uint64_t crc = 0;  // CRC-64 of the file body being summed (ranges may continue it across chunks)
  ~HashState() {
    if (ctx != nullptr) EVP_MD_CTX_free(ctx);
  }
};

struct HashCtx {
  std::shared_ptr<HashState> state;
  std::shared_ptr<SerialQueue> queue;
  bool finished = false;  // digest() was called
};

// Flags of a CRC range (third word of each triple).
constexpr uint32_t kCrcStart = 1;  // the range begins a file body: start from 0
constexpr uint32_t kCrcEnd = 2;    // the range ends a file body: its CRC goes into the result

class UpdateJob : public SerialQueue::Job {
 public:
  UpdateJob(Napi::Env env, std::shared_ptr<HashState> s, Napi::Value chunk, const unsigned char* p, size_t n,
            std::vector<uint32_t> ranges, bool wantCrcs)
      : state_(std::move(s)), deferred_(Napi::Promise::Deferred::New(env)), ref_(Napi::Persistent(chunk)), p_(p),
        n_(n), ranges_(std::move(ranges)), wantCrcs_(wantCrcs) {}
  Napi::Promise Promise() { return deferred_.Promise(); }
  void Run() override {
    if (!state_->failed && n_ > 0 && EVP_DigestUpdate(state_->ctx, p_, n_) != 1) state_->failed = true;
    // Ranges were checked against the chunk's length on the main thread.
    for (size_t i = 0; !state_->failed && i + 2 < ranges_.size(); i += 3) {
      const uint32_t flags = ranges_[i + 2];
      if (flags & kCrcStart) state_->crc = 0;
      state_->crc = Crc64Iso::Update(state_->crc, p_ + ranges_[i], ranges_[i + 1]);
      if (flags & kCrcEnd) crcs_.push_back(state_->crc);
    }
    failed_ = state_->failed;
  }
  void Crashed(int) override { failed_ = state_->failed = true; }
  void Done(Napi::Env env) override {
    ref_.Reset();
    if (failed_) {
      Failure f;
      f.Set(EIO, "EVP_DigestUpdate");
      deferred_.Reject(MakeError(env, f).Value());
    } else if (!wantCrcs_) {
      deferred_.Resolve(env.Undefined());
    } else {
      // 8 bytes per finished body, big-endian (as tar-split stores them).
      Napi::Buffer<unsigned char> out = Napi::Buffer<unsigned char>::New(env, crcs_.size() * 8);
      for (size_t i = 0; i < crcs_.size(); i++) {
        for (int b = 0; b < 8; b++) out.Data()[i * 8 + b] = static_cast<unsigned char>(crcs_[i] >> (56 - 8 * b));
      }
      deferred_.Resolve(out);
    }
  }

 private:
  std::shared_ptr<HashState> state_;
  Napi::Promise::Deferred deferred_;
  Napi::Reference<Napi::Value> ref_;
  const unsigned char* p_;
  size_t n_;
  std::vector<uint32_t> ranges_;
  bool wantCrcs_;
  std::vector<uint64_t> crcs_;
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
  // Optional CRC ranges: a Uint32Array of (offset, length, flags) triples inside the chunk.
  std::vector<uint32_t> ranges;
  bool wantCrcs = false;
  if (info.Length() > 1 && !info[1].IsUndefined() && !info[1].IsNull()) {
    Napi::Value r = info[1];
    napi_typedarray_type rt;
    size_t rn;
    void* rp;
    napi_value rab;
    size_t roff;
    if (!r.IsTypedArray() || napi_get_typedarray_info(env, r, &rt, &rn, &rp, &rab, &roff) != napi_ok ||
        rt != napi_uint32_array || rn % 3 != 0 || (rn > 0 && rp == nullptr))
      throw Napi::TypeError::New(env, "crc ranges must be a Uint32Array of (offset, length, flags) triples");
    const uint32_t* w = static_cast<const uint32_t*>(rp);
    for (size_t i = 0; i < rn; i += 3) {
      if (static_cast<uint64_t>(w[i]) + w[i + 1] > n || w[i + 2] > (kCrcStart | kCrcEnd))
        throw Napi::RangeError::New(env, "crc range outside the chunk or with unknown flags");
    }
    ranges.assign(w, w + rn);
    wantCrcs = true;
  }
  auto job = std::make_unique<UpdateJob>(env, ctx.state, v, static_cast<const unsigned char*>(p), n,
                                         std::move(ranges), wantCrcs);
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
