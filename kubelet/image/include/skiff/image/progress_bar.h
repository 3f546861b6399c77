// A one-line progress bar for an image pull on a terminal, fed by
// PullOptions::progress (which is called from several download threads):
//   busybox:1.36 [=========>          ] 3/8 layers  21.4 MB / 47.0 MB  45%
// Redrawn in place (\r) at most every `interval`, finished with a newline.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>

#include "skiff/image/store.h"

namespace skiff::image {

class ProgressBar {
 public:
  ProgressBar(int fd, std::string ref, std::chrono::milliseconds interval = std::chrono::milliseconds(100));

  // Thread-safe; suitable as PullOptions::progress through Callback().
  void Update(const PullProgress& p);
  std::function<void(const PullProgress&)> Callback() {
    return [this](const PullProgress& p) { Update(p); };
  }
  // Draws the final state and ends the line (once; only if anything was drawn).
  void Finish();

  // The line itself (no \r), `width` columns for the bar.
  static std::string Render(const std::string& ref, int layers_done, int layers, int64_t done, int64_t total,
                            int width = 30);

 private:
  void DrawLocked(bool force);

  int fd_;
  std::string ref_;
  std::chrono::milliseconds interval_;
  std::mutex mu_;
  struct Layer {
    int64_t done = 0, total = 0;
    bool complete = false;
  };
  std::map<std::string, Layer> layers_;
  std::chrono::steady_clock::time_point last_draw_{};
  bool drawn_ = false;
  bool finished_ = false;
};

}  // namespace skiff::image
