// SerialQueue: jobs that must run one after another, in submission order, off the main thread, with each job's
// completion delivered on the main thread in the same order.
//
// Used for streams of work where a round trip to JavaScript between two steps would leave the thread idle (the
// batches of one layer apply, the chunks of one hash): while jobs are queued, one libuv pool thread takes them
// back to back, and finished jobs are handed to the main thread as they complete (Napi::AsyncProgressQueueWorker's
// thread-safe channel) without stopping that thread. When the queue runs dry the thread is given back to the pool;
// the next Push starts a new worker.
//
// Rules for jobs: Run() executes on the pool thread and must not touch N-API; Done() executes on the main thread.
// Jobs are always destroyed on the main thread (after Done), so they may own napi references.
#pragma once
#include <napi.h>

#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <new>
#include <utility>

namespace gd {

class SerialQueue : public std::enable_shared_from_this<SerialQueue> {
 public:
  class Job {
   public:
    virtual ~Job() = default;
    // Pool thread. An exception escaping it is reported through Crashed() instead.
    virtual void Run() = 0;
    // Main thread, after Run(), in submission order.
    virtual void Done(Napi::Env env) = 0;
    // Pool thread: Run() threw (err: ENOMEM for bad_alloc, else EIO).
    virtual void Crashed(int err) = 0;
  };

  static std::shared_ptr<SerialQueue> Create(const char* name) {
    return std::shared_ptr<SerialQueue>(new SerialQueue(name));
  }

  // Main thread. Queues `job`; starts a pool worker when none is running.
  void Push(Napi::Env env, std::unique_ptr<Job> job) {
    bool start = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      todo_.push_back(std::move(job));
      if (!running_) {
        running_ = true;
        start = true;
      }
    }
    if (!start) more_.notify_one();
    if (start) {
      auto* w = new Worker(env, name_, shared_from_this());
      w->Queue();
    }
  }

 private:
  explicit SerialQueue(const char* name) : name_(name) {}

  // Main thread: completes finished jobs in order.
  void Deliver(Napi::Env env) {
    for (;;) {
      std::unique_ptr<Job> j;
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (done_.empty()) return;
        j = std::move(done_.front());
        done_.pop_front();
      }
      Napi::HandleScope scope(env);
      try {
        j->Done(env);
      } catch (const Napi::Error&) {
        // Done() settles its own promise; an exception here could only come from building a result, and the
        // job's promise is then left to its own error handling. Nothing else may be skipped because of it.
      }
    }
  }

  // Pool thread: runs jobs while there are any.
  void Drain(const std::function<void()>& signal) {
    for (;;) {
      std::unique_ptr<Job> j;
      {
        std::unique_lock<std::mutex> lock(mu_);
        // A stream's next job usually follows within microseconds (the main thread reads the next chunk):
        // waiting a moment for it is far cheaper than ending this worker and starting another one.
        if (todo_.empty()) more_.wait_for(lock, kLinger, [this] { return !todo_.empty(); });
        if (todo_.empty()) {
          running_ = false;
          return;
        }
        j = std::move(todo_.front());
        todo_.pop_front();
      }
      try {
        j->Run();
      } catch (const std::bad_alloc&) {
        j->Crashed(ENOMEM);
      } catch (...) {
        j->Crashed(EIO);
      }
      {
        std::lock_guard<std::mutex> lock(mu_);
        done_.push_back(std::move(j));
      }
      signal();
    }
  }

  class Worker : public Napi::AsyncProgressQueueWorker<char> {
   public:
    Worker(Napi::Env env, const char* name, std::shared_ptr<SerialQueue> q)
        : Napi::AsyncProgressQueueWorker<char>(env, name), q_(std::move(q)) {}

   protected:
    void Execute(const ExecutionProgress& progress) override {
      q_->Drain([&progress] { progress.Signal(); });
    }
    void OnProgress(const char*, size_t) override { q_->Deliver(Env()); }
    void OnOK() override { q_->Deliver(Env()); }
    void OnError(const Napi::Error&) override { q_->Deliver(Env()); }

   private:
    std::shared_ptr<SerialQueue> q_;
  };

  static constexpr std::chrono::milliseconds kLinger{2};

  const char* name_;
  std::mutex mu_;
  std::condition_variable more_;
  std::deque<std::unique_ptr<Job>> todo_;
  std::deque<std::unique_ptr<Job>> done_;
  bool running_ = false;
};

}  // namespace gd
