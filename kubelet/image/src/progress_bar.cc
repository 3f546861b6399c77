#include "skiff/image/progress_bar.h"

#include <unistd.h>

#include <cstdio>

namespace skiff::image {
namespace {

std::string Megabytes(int64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1f MB", static_cast<double>(bytes) / 1e6);
  return buf;
}

}  // namespace

ProgressBar::ProgressBar(int fd, std::string ref, std::chrono::milliseconds interval)
    : fd_(fd), ref_(std::move(ref)), interval_(interval) {}

std::string ProgressBar::Render(const std::string& ref, int layers_done, int layers, int64_t done, int64_t total,
                                int width) {
  const int pct = total > 0 ? static_cast<int>(done * 100 / total) : (layers > 0 && layers_done == layers ? 100 : 0);
  const int fill = width * pct / 100;
  std::string bar(width, ' ');
  for (int i = 0; i < fill; ++i) bar[i] = '=';
  if (fill < width && fill > 0) bar[fill] = '>';
  char tail[96];
  std::snprintf(tail, sizeof(tail), "] %d/%d layers  %s / %s  %3d%%", layers_done, layers, Megabytes(done).c_str(),
                Megabytes(total).c_str(), pct);
  // Appends, not operator+: GCC 12 at -O3 warns falsely (-Wrestrict) on the latter.
  std::string line = ref;
  line.append(" [").append(bar).append(tail);
  return line;
}

void ProgressBar::Update(const PullProgress& p) {
  std::lock_guard<std::mutex> lock(mu_);
  if (finished_) return;
  Layer& l = layers_[p.digest];
  l.done = p.done_bytes;
  l.total = p.total_bytes;
  l.complete = l.complete || p.complete;
  DrawLocked(p.complete);
}

void ProgressBar::DrawLocked(bool force) {
  auto now = std::chrono::steady_clock::now();
  if (!force && drawn_ && now - last_draw_ < interval_) return;
  last_draw_ = now;
  int done_layers = 0;
  int64_t done = 0, total = 0;
  for (const auto& [digest, l] : layers_) {
    done_layers += l.complete;
    done += l.done;
    total += l.total;
  }
  // \r back to the start, the line, then erase whatever a longer line left.
  std::string line(1, '\r');
  line.append(Render(ref_, done_layers, static_cast<int>(layers_.size()), done, total)).append("\x1b[K");
  if (write(fd_, line.data(), line.size()) < 0) return;  // a closed terminal: nothing to tell
  drawn_ = true;
}

void ProgressBar::Finish() {
  std::lock_guard<std::mutex> lock(mu_);
  if (finished_) return;
  finished_ = true;
  if (!drawn_) return;
  DrawLocked(true);
  if (write(fd_, "\n", 1) < 0) return;
}

}  // namespace skiff::image
