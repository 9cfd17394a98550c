// The CRIU proxy tells ferry-runc that CRIU waits for the verification's
// verdict, so that the verification's late worker (store::LateStart) takes
// the core CRIU leaves, and not before: while CRIU restores, one more
// hashing thread only slows it (bench/results/engine.md, session 18).
//
// The proxy is ferry-runc's grandchild, under runc, which passes on its
// environment but none of ferry-runc's descriptors; so the signal is a FIFO
// in the container's work directory, named in the proxy's environment.
// ferry-runc holds its read end open (non-blocking) from before runc
// starts; the proxy opens the write end without blocking and writes one
// byte. No reader (ferry-runc is done, or gone) is not an error.
#pragma once

#include <memory>
#include <string>

#include "posix/unique_fd.h"
#include "status/status.h"
#include "store/hashing.h"

namespace ferry::runtime {

class CriuWaitingFifo final : public store::LateStart {
 public:
  // Makes the FIFO at `path` (replacing whatever a previous attempt left
  // there) and opens its read end. The FIFO is removed with this object: a
  // FIFO left behind would block whoever opens it to read, as a file.
  static Result<std::unique_ptr<CriuWaitingFifo>> create(const std::string& path);
  ~CriuWaitingFifo() override;
  CriuWaitingFifo(const CriuWaitingFifo&) = delete;
  CriuWaitingFifo& operator=(const CriuWaitingFifo&) = delete;

  // True once the proxy wrote to the FIFO; false once close() was called.
  bool wait() override;
  void close() override;

 private:
  CriuWaitingFifo(std::string path, posix::UniqueFd fifo, posix::UniqueFd closed)
      : path_(std::move(path)), fifo_(std::move(fifo)), closed_(std::move(closed)) {}
  std::string path_;
  posix::UniqueFd fifo_;
  posix::UniqueFd closed_;  // an eventfd, readable once close() was called
};

// The proxy's side: says that CRIU waits. False when no one reads the FIFO
// (yet, or any more); the proxy asks again while it waits.
bool tell_criu_waiting(const std::string& path);

}  // namespace ferry::runtime
