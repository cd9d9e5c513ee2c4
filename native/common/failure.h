// Failure: an errno-style error recorded on the worker thread and turned into a Node-style Error
// (code, errno, syscall, path, dest) on the main thread. Worker threads must never touch N-API.
#pragma once
#include <napi.h>
#include <cerrno>
#include <string>

namespace gd {

struct Failure {
  int err = 0;               // positive errno; 0 = no failure
  std::string syscall;       // e.g. "mount", "ioctl(DM_TABLE_LOAD)"
  std::string path;          // primary path the call acted on, if any
  std::string dest;          // second path (rename, link, mount target), if any
  std::string detail;        // extra context appended to the message (e.g. a DM target name)

  bool failed() const { return err != 0; }

  // Records errno (or an explicit error) and returns false so callers can `return f.Set(...)`.
  bool Set(int e, const std::string& sys, const std::string& p = std::string(),
           const std::string& d = std::string()) {
    err = e > 0 ? e : EIO;
    syscall = sys;
    path = p;
    dest = d;
    return false;
  }
  bool Errno(const std::string& sys, const std::string& p = std::string(),
             const std::string& d = std::string()) {
    return Set(errno, sys, p, d);
  }
};

// Builds the JS Error: message "<CODE>: <strerror>, <syscall> '<path>' -> '<dest>'" like Node's fs errors.
Napi::Error MakeError(Napi::Env env, const Failure& f);

// Symbolic errno name ("EBUSY"); "E<number>" when glibc has no name.
std::string ErrnoName(int err);

}  // namespace gd
