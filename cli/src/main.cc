// skiffctl: kubectl's verbs for a Skiff cluster.
#include <csignal>

#include "skiff/cli/cli.h"

int main(int argc, char** argv) {
  std::signal(SIGPIPE, SIG_IGN);
  std::vector<std::string> args(argv + 1, argv + argc);
  skiff::cli::Environment env;
  env.dial = skiff::cli::DialGrpc;
  return skiff::cli::Run(args, env);
}
