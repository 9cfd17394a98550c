// The few fields of CRIU's RPC messages (CRIU's images/rpc.proto) that
// ferry-runc's CRIU proxy reads or writes: a message's type, the script
// name of a notification, and the answer to one. Protobuf's wire format
// decoded by hand, because those three fields are all the proxy needs and
// it must pass every message on byte for byte.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "status/status.h"

namespace ferry::runtime::criu_rpc {

// criu_req_type values.
inline constexpr int kRestore = 2;
inline constexpr int kNotify = 6;

struct Message {
  int type = 0;               // field 1 of criu_req and criu_resp
  std::string notify_script;  // criu_resp.notify.script (field 5, then 1)
};

// Decodes a criu_resp (or the type of a criu_req), skipping every other
// field. A message cut short after its type (a peeked prefix) still gives
// its type.
Result<Message> decode(std::string_view bytes);

// The descriptor numbers of a criu_req's options that CRIU opens in its
// client's process, through /proc/<client pid>/fd/<n> (criu/cr-service.c):
// images_dir_fd (unless -1), work_dir_fd, status_fd. CRIU takes its
// client's pid from the socket's peer credentials.
Result<std::vector<int>> client_fds(std::string_view request);

// criu_req{type: NOTIFY, notify_success: success}: the client's answer to a
// notification; false makes CRIU abort (on post-restore: kill the restored
// tasks).
std::string encode_notify_answer(bool success);

}  // namespace ferry::runtime::criu_rpc
