#include "agent/kernel/inspector.hpp"

namespace portlens {

LiveTable LiveInspector::inspect(const NetnsRef& ns, const SocketTracker* tracker) {
  LiveTable live{namespaces_.take(ns), ns};
  if (tracker != nullptr) {
    tracker->attribute(live.snapshot.table);
  }
  owners_.scan();  // a command's one look: always fresh
  owners_.attribute(live.snapshot.table);
  return live;
}

}  // namespace portlens
