// Graceful stop for the daemons (ferry-operator, ferry-agent): SIGTERM and
// SIGINT are blocked in the calling thread, and so in every thread it
// starts afterwards, and taken by one sigwait thread that requests `stop`.
// Stopping then runs as ordinary code (informers, work queues, the Lease
// release), never inside a signal handler. Call before any other thread
// starts.
#pragma once

#include <stop_token>

namespace ferry::process {

void stop_on_signals(const std::stop_source& stop);

}  // namespace ferry::process
